"""The training loop, top to bottom (nanoGPT spirit): :func:`setup` (data, teacher outputs, student, optimiser,
streams), then :func:`train_step` per step (one labeled + one unlabeled batch -> forward -> method loss ->
backward -> update), :func:`evaluate` and :func:`save` at their intervals, and :func:`finish` (the alpha/beta
blend search, the final metrics, ``summary.json``). What differs between DHO, the baselines and vl-distill lives
behind :class:`distill.train.methods.TrainMethod`; signals and test hooks live in :mod:`distill.train.hooks`.

Reproducibility: every random choice of the data streams is a pure function of (seed, stream position)
(:mod:`distill.data.loader`), so a run resumed from ``last.pt`` at any step draws exactly the batches an
uninterrupted run would; the global torch/numpy/python RNG states travel in ``last.pt`` too.

Distributed (``torchrun --nproc-per-node=N -m distill train``): batch sizes are global; each rank takes its slice
of every global batch of the same streams, DDP averages gradients, and rank 0 alone validates, logs and writes
files (:mod:`distill.scale.distributed`). Checkpoints hold global state only, so a run resumes on any number of
processes that divides the batch sizes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..blend import accuracy
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import dump_config
from ..errors import CheckpointError, ConfigError, ModelError
from ..io import atomic_write_json, check_writable
from ..scale.distributed import NullLog, init_distributed
from ._runtime import (forward_flops, hardware_info, peak_tflops, pick_device, pick_precision, rng_state,
                       seed_everything, set_rng_state)
from .config import TrainConfig
from .hooks import KILL_ENV, InterruptGuard, StepHook, TrainingInterrupted, hooks_from_env
from .methods import SELECT_METRIC, Batch, StepLoss, TrainMethod, create_method
from .progress import Progress, Window
from .report import MetricsLog, write_plots
from .tracking import Tracker, create_tracker, final_metrics, flat_hparams

#: Config keys that may differ between a run and its resumption (everything else must match).
_RESUME_FREE = {"max_steps", "progress", "progress_every", "plots", "device", "threads", "out_dir",
                "eval_batch_size", "teacher_batch_size", "teacher_cache", "amp", "teacher_store", "channels_last",
                "decoded_cache", "tensorboard", "mlflow_uri", "mlflow_experiment"}


@dataclass
class Run:
    """Everything :func:`setup` builds once; the loop advances ``step`` and the progress fields."""

    cfg: TrainConfig
    out: Path
    ctx: Any
    device: torch.device
    precision: Any
    splits: Any
    spec: Any
    method: TrainMethod
    teacher_desc: dict[str, Any] | None  # None: a supervised run (--method ce) without a teacher
    teacher_acc: tuple[float | None, float | None]  # (val, test) on the run's own splits; None without one
    cache_infos: list[Any]
    student: torch.nn.Module = None  # type: ignore[assignment]
    model: torch.nn.Module = None  # type: ignore[assignment]  # DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer = None  # type: ignore[assignment]
    scaler: Any = None
    pool: Any = None  # a streamed unlabeled pool (data.unlabeled_shards)
    steps_per_epoch: int = 1
    total: int = 0
    stop_at: int = 0
    metrics: Any = None
    tracker: Any = None  # TensorBoard / MLflow (distill.train.tracking), fed every metrics row
    lab_iter: Iterator[Any] | None = None
    unl_iter: Iterator[Any] | None = None
    flops_per_image: float | None = None
    peak: float | None = None
    init_from: Any = None  # the teacher's network while the student is built from it (student.init=teacher)
    init_blocks: list[int] | None = None  # the teacher blocks of each stage the student started from
    wall_start: float = field(default_factory=time.time)
    step: int = 0
    best_val: float = -1.0
    best_step: int = -1
    train_time: float = 0.0
    images_seen: int = 0
    last_saved: int = -1
    uses_unlabeled: bool = False
    shard_teacher: Any = None  # the store that holds a streamed pool's teacher logits
    setup_s: float | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


def train(cfg: TrainConfig, resume: bool = False, hooks: Iterable[StepHook] | None = None) -> dict[str, Any]:
    """Run (or resume) one training run in ``cfg.out_dir``; returns the summary (also in ``summary.json``).

    ``hooks`` are called after every step with the number of steps done (default: the test hooks the
    environment asks for, :func:`distill.train.hooks.hooks_from_env`)."""
    hooks = list(hooks_from_env() if hooks is None else hooks)
    run = setup(cfg, resume)
    cfg, window = run.cfg, Window()
    progress = Progress(cfg.progress and run.ctx.is_main, run.total, run.step, cfg.progress_every or
                        max(cfg.log_every, run.total // 50))
    with progress, InterruptGuard(enabled=not run.ctx.enabled) as guard:
        run.setup_s = time.time() - run.wall_start
        if progress.enabled:
            progress.say(f"set-up took {run.setup_s:.1f} s (data, teacher outputs, student) before step {run.step + 1}")
        run.student.train()
        for step in range(run.step, run.stop_at):
            loss = train_step(run, step, window, progress)
            after_step(run, loss, window, progress)
            for hook in hooks:
                hook(run.step)
            if guard.signum:
                raise interrupted(run, guard.name, guard.signum)
    return finish(run)


# ==================================================================== set-up


def setup(cfg: TrainConfig, resume: bool) -> Run:
    """Data splits, teacher outputs, method, student, optimiser, budget, resumed state and the data streams."""
    wall_start = time.time()
    out = Path(cfg.out_dir)
    resume_ckpt = _open_run_dir(out, cfg, resume)
    seed_everything(cfg.seed, cfg.deterministic, cfg.threads)
    ctx = init_distributed(cfg.device)  # single process unless torchrun started several (WORLD_SIZE > 1)
    device = ctx.device or pick_device(cfg.device)
    ctx.check_divisible(batch_labeled=cfg.batch_labeled, batch_unlabeled=cfg.batch_unlabeled)  # global batch sizes
    precision = pick_precision(cfg.amp, device)

    from ..data import build_splits

    with ctx.rank0_first():  # rank 0 verifies the images; the others read its scan cache
        splits = build_splits(cfg.data, progress=cfg.progress and ctx.is_main)
    if ctx.is_main:
        dump_config(cfg, out / "config.yaml")
        atomic_write_json(out / "split.json", splits.manifest())
    run = _setup_teacher_and_method(cfg, out, ctx, device, precision, splits)
    run.wall_start = wall_start
    run.memory_format = _memory_format(cfg.channels_last, device, precision)
    _setup_student(run)
    _setup_budget(run)
    run.tracker = create_tracker(cfg, out) if ctx.is_main else Tracker()  # TensorBoard (+ MLflow with --mlflow-uri)
    run.metrics = (MetricsLog(out / "metrics.jsonl", on_write=run.tracker.log_row) if ctx.is_main
                   else NullLog(out / f".no-metrics-rank{ctx.rank}"))
    if resume_ckpt is not None:
        _restore(run, resume_ckpt)
    else:
        run.metrics.path.unlink(missing_ok=True)
        record(run, "setup", step=0, method=cfg.method, device=str(device), precision=precision.name,
               counts=splits.counts(), steps_per_epoch=run.steps_per_epoch, total_steps=run.total,
               teacher_val_acc=run.teacher_acc[0], teacher_test_acc=run.teacher_acc[1],
               student_params=sum(p.numel() for p in run.student.parameters()),
               student_init={"from": "teacher", "blocks": run.init_blocks} if run.init_blocks else "random")
    _setup_streams(run)
    run.flops_per_image = forward_flops(run.student, torch.zeros(1, 3, run.spec.size, run.spec.size, device=device))
    run.peak = peak_tflops(device)
    return run


def _open_run_dir(out: Path, cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite a run or resume a different one."""
    last_path = out / "last.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        if not last_path.exists():
            raise CheckpointError(f"cannot resume: no last.pt in {out}")
        ckpt = load_checkpoint(last_path)
        _check_resumable(ckpt.get("config") or {}, cfg)
    elif last_path.exists():
        raise ConfigError(f"{out} already holds a run (last.pt): pass --resume to continue it, or choose another --out")
    check_writable(last_path)
    return ckpt


def _setup_teacher_and_method(cfg: TrainConfig, out: Path, ctx: Any, device: torch.device, precision: Any,
                              splits: Any) -> Run:
    """The teacher's outputs, computed (or read from the cache) once; training never runs the teacher."""
    from ..teachers import create_teacher, teacher_logits_for

    ctx.wait_for_main()  # the other ranks start once rank 0 has filled the teacher cache
    if cfg.teacher_store:  # written by `distill cache-teacher`: memory-mapped, the teacher is never built
        from ..scale.teacher_store import StoreTeacher

        teacher: Any = StoreTeacher(cfg.teacher_store, splits.class_names)
    elif cfg.teacher is None:  # supervised only (--method ce without a teacher): nothing to distill or compare
        teacher = None
    else:
        teacher = create_teacher(cfg.teacher, splits.class_names)
    teacher_desc = teacher.describe() if teacher is not None else None
    cache_infos: list[Any] = []

    def teacher_logits(samples: list[Any]) -> torch.Tensor | None:
        if teacher is None:
            return None
        if not samples:
            return torch.zeros(0, splits.num_classes)
        if cfg.teacher_store:
            logits, info = teacher.logits_for(samples)
        else:
            logits, info = teacher_logits_for(teacher, samples, cfg.data.cache_dir, cfg.teacher_batch_size, device,
                                              use_cache=cfg.teacher_cache, num_workers=cfg.data.num_workers,
                                              progress=cfg.progress and ctx.is_main)
        cache_infos.append(info)
        return logits.float().cpu()

    spec = cfg.student.preprocess_spec()
    method = create_method(cfg, splits, teacher, spec, device)
    cache_infos += getattr(getattr(method, "task", None), "cache_infos", [])
    # data.unlabeled_shards: the pool is streamed, its teacher logits looked up in the store batch by batch
    streamed = bool(cfg.data.unlabeled_shards and method.needs_unlabeled_logits and cfg.batch_unlabeled)
    uses_unlabeled = (method.trains_on_unlabeled and (len(method.unlabeled) > 0 or streamed)
                      and cfg.batch_unlabeled > 0)
    method.attach_teacher(teacher_logits, uses_unlabeled and not streamed, device)
    t_val, t_test = teacher_logits(splits.val), teacher_logits(splits.test)
    ctx.release_others()
    y_val = torch.tensor([s.label for s in splits.val])
    y_test = torch.tensor([s.label for s in splits.test])
    teacher_acc = tuple(accuracy(t, y) if t is not None and len(y) else None  # None: no teacher, or an empty split
                        for t, y in ((t_val, y_val), (t_test, y_test)))
    run = Run(cfg, out, ctx, device, precision, splits, spec, method, teacher_desc, teacher_acc, cache_infos)
    run.uses_unlabeled, run.shard_teacher = uses_unlabeled, teacher if streamed else None
    if cfg.student.init == "teacher":
        run.init_from = _teacher_network(teacher, cfg)
    del teacher  # training never runs the teacher: its outputs are all in memory now
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return run


def _teacher_network(teacher: Any, cfg: TrainConfig) -> Any:
    """The CIFAR ResNet a ``student.init=teacher`` student starts from; any other teacher is a one-line error."""
    from ..models import CifarResNet

    net = getattr(teacher, "net", None)
    if not isinstance(net, CifarResNet):
        raise ModelError("student.init=teacher needs a cifar_resnet teacher built from its weights, got a "
                         f"{type(teacher).__name__}"
                         + (" (teacher_store: pass the teacher's weights instead)" if cfg.teacher_store else ""))
    return net


def _setup_student(run: Run) -> None:
    cfg = run.cfg
    torch.manual_seed(cfg.seed)  # the init must not depend on how much RNG the data/teacher setup consumed
    run.student = run.method.create_student(cfg.student.arch, run.splits.num_classes, cfg.student.weights,
                                            run.spec.size)
    if run.init_from is not None:
        _init_from_teacher(run)
    run.student = run.student.to(run.device)
    if run.memory_format is torch.channels_last:
        run.student = run.student.to(memory_format=torch.channels_last)
    run.model = run.ctx.wrap(run.student, run.device)  # DDP when distributed (forward/backward); `student` for state
    run.optimizer = _adamw(run.student, cfg.lr, cfg.weight_decay, run.device)
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.precision.needs_scaler)


def _init_from_teacher(run: Run) -> None:
    from ..models import CifarResNet, backbone_module, load_backbone_state
    from ..models.teacher_init import backbone_state_from_teacher

    net = backbone_module(run.student.backbone)
    if not isinstance(net, CifarResNet):
        raise ModelError(f"student.init=teacher needs a cifar_resnet student, not {run.cfg.student.arch}")
    state, picks = backbone_state_from_teacher(run.init_from, net)
    load_backbone_state(run.student.backbone, state, "the teacher")
    run.init_from, run.init_blocks = None, picks


def _setup_budget(run: Run) -> None:
    """An epoch is one pass over the unlabeled pool the method draws from (the labeled set when it draws none).

    A supervised run (``ce``) never draws from the pool: with --labeled-fraction 0.8 its pool is a few rounding
    leftovers, and an epoch of one step made it validate and checkpoint after every step."""
    cfg, m = run.cfg, run.method
    pooled = bool(m.unlabeled and cfg.batch_unlabeled and m.trains_on_unlabeled)
    epoch_pool = len(m.unlabeled) if pooled else len(m.labeled)
    epoch_batch = cfg.batch_unlabeled if pooled else cfg.batch_labeled
    if run.shard_teacher is not None:    # a streamed pool: the counts in its shards.json
        from ..data import create_eval_transform
        from ..data.shards import ShardStream
        from ..data.loader import stream_seed

        ctx = run.ctx
        run.pool = ShardStream(cfg.data.unlabeled_shards, create_eval_transform(run.spec),
                               batch_size=cfg.batch_unlabeled // ctx.world_size, seed=stream_seed(cfg.seed, 1),
                               shuffle_buffer=cfg.data.shuffle_buffer, num_workers=cfg.data.num_workers,
                               rank=ctx.rank, world_size=ctx.world_size)
        epoch_pool, epoch_batch = run.pool.num_images, cfg.batch_unlabeled
    run.steps_per_epoch = max(1, math.ceil(epoch_pool / epoch_batch))
    run.total = cfg.total_steps(run.steps_per_epoch)
    run.stop_at = min(run.total, cfg.max_steps) if cfg.max_steps else run.total


def _restore(run: Run, ckpt: dict[str, Any]) -> None:
    run.student.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if "scaler" in ckpt and ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    run.step = run.last_saved = int(ckpt["step"])
    prog = ckpt.get("progress", {})
    run.best_val, run.best_step = prog.get("best_val", -1.0), prog.get("best_step", -1)
    run.train_time, run.images_seen = prog.get("train_time", 0.0), prog.get("images_seen", 0)
    run.metrics.truncate_after(run.step)
    record(run, "resume", step=run.step)


def _setup_streams(run: Run) -> None:
    """The labeled and unlabeled streams, positioned at ``run.step`` (see :mod:`distill.data.loader`)."""
    from ..data import create_eval_transform, create_train_dataset, create_train_transform
    from ..data.loader import seeded_stream, shard_stream, stream_seed

    cfg, ctx, m = run.cfg, run.ctx, run.method
    opts = dict(num_workers=cfg.data.num_workers, pin_memory=run.device.type == "cuda",
                rank=ctx.rank, world_size=ctx.world_size if ctx.enabled else 1)
    cache = cfg.data.cache_dir if cfg.decoded_cache else None

    def dataset(samples: list[Any]) -> Any:  # small images: decoded once into the cache (rank 0 first)
        with ctx.rank0_first():
            return create_train_dataset(samples, run.spec, cache, augment=cfg.augment, scale=cfg.crop_scale,
                                        hflip=cfg.hflip)

    run.lab_iter = seeded_stream(dataset(m.labeled), cfg.batch_labeled, stream_seed(cfg.seed, 0), run.step, **opts)
    if run.pool is not None:  # resumes at the step's position (see ShardStream for when that is exact)
        run.pool.transform = (create_train_transform(run.spec, scale=cfg.crop_scale, hflip=cfg.hflip) if cfg.augment
                              else create_eval_transform(run.spec))
        run.pool.start_step = run.step
        run.unl_iter = ((x, None, t) for x, t in shard_stream(run.pool, run.shard_teacher,
                                                               num_workers=opts["num_workers"],
                                                               pin_memory=opts["pin_memory"]))
    elif run.uses_unlabeled:
        stream = seeded_stream(dataset(m.unlabeled), cfg.batch_unlabeled, stream_seed(cfg.seed, 1), run.step, **opts)
        run.unl_iter = ((x, i, None) for x, _, i in stream)


# ==================================================================== one step


def next_batch(run: Run) -> Batch:
    """The next labeled batch and (if the method draws one) unlabeled batch, concatenated on the device."""
    xl, yl, il = next(run.lab_iter)  # type: ignore[arg-type]
    xs, idx_u, t_u = [xl], None, None
    if run.unl_iter is not None:
        xu, idx_u, t_u = next(run.unl_iter)
        xs.append(xu)
    x = torch.cat(xs).to(run.device, non_blocking=True).contiguous(memory_format=run.memory_format)
    return Batch(x, xl.shape[0], yl.to(run.device, non_blocking=True), il, idx_u, t_u)


def train_step(run: Run, step: int, window: Window, progress: Progress) -> StepLoss:
    """One optimisation step; its time is data + forward + backward + update (not eval or checkpoints)."""
    cfg, t_step = run.cfg, time.perf_counter()
    lr = cfg.lr_at(step, run.total)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batch = next_batch(run)
    with run.precision.autocast():
        heads = run.model(batch.x)  # {head: (n_l + n_u, C)} from one backbone pass over both halves
    loss = run.method.loss(heads, batch)
    terms = loss.terms
    if cfg.grad_conflict_every and step % cfg.grad_conflict_every == 0 and terms.ce is not None \
            and terms.kd is not None and run.ctx.is_main:  # distributed: on rank 0's slice of the batch
        cos, g_ce, g_kd = _grad_cosine(terms.ce, terms.kd, [p for p in run.student.backbone.parameters()
                                                            if p.requires_grad])
        record(run, "grad_conflict", step=step, cosine=cos, grad_norm_ce=g_ce, grad_norm_kd=g_kd)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms.total).backward()
    if cfg.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.student.parameters(), cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()

    # bookkeeping (one host sync per step: the loss value)
    run.step = step + 1
    terms = run.ctx.mean_terms(terms)  # distributed: averaged over ranks = the global batch's loss
    loss_value = float(terms.total.detach())
    dt = time.perf_counter() - t_step
    run.train_time += dt
    n_images = batch.x.shape[0] * run.ctx.world_size
    run.images_seen += n_images
    window.add(loss_value, terms, n_images, dt)
    progress.update(run.step, loss_value, n_images / max(dt, 1e-9), lr)
    return StepLoss(terms, loss.extra)


def after_step(run: Run, loss: StepLoss, window: Window, progress: Progress) -> None:
    """The log row, validation (and ``best.pt``) and ``last.pt`` at their intervals."""
    cfg, done, last = run.cfg, run.step, run.step == run.stop_at
    if done % cfg.log_every == 0 or last:
        rec = window.flush()
        if run.flops_per_image:
            rec["tflops"] = 3 * run.flops_per_image * rec["images_per_s"] / 1e12  # fwd + bwd ~ 3x fwd
            if run.peak:
                rec["mfu"] = rec["tflops"] / run.peak
        record(run, "train", step=done, epoch=done / run.steps_per_epoch, lr=cfg.lr_at(done - 1, run.total), **rec)
        if loss.extra is not None:
            event, fields = loss.extra()
            record(run, event, step=done, **fields)
    if (done % (cfg.eval_every or run.steps_per_epoch) == 0 or last) and run.ctx.is_main:
        evaluate(run, progress)
    if (done % (cfg.checkpoint_every or run.steps_per_epoch) == 0 or last) and run.ctx.is_main:
        save(run, run.last_path, checkpoint(run, done, resumable=True))


def evaluate(run: Run, progress: Progress) -> dict[str, Any]:
    """Validation metrics at the current step; a new best (by the method's metric) writes ``best.pt``."""
    done, m = run.step, run.method
    val = m.validate(run.student, run.device, run.precision.autocast)
    record(run, "val", step=done, epoch=done / run.steps_per_epoch, **val)
    progress.note(val, m.select_metric)
    score = val[m.select_metric]
    if score > run.best_val:
        run.best_val, run.best_step = score, done
        save(run, run.best_path, checkpoint(run, done, resumable=False, val_metrics=val))
    return val


def interrupted(run: Run, name: str, signum: int) -> TrainingInterrupted:
    """After a signal: a resumable ``last.pt`` at the step just finished, and the one line that says so."""
    if run.ctx.is_main and run.last_saved != run.step:
        save(run, run.last_path, checkpoint(run, run.step, resumable=True))
    if run.tracker is not None:
        run.tracker.close()  # flush TensorBoard / MLflow: the rows so far are kept, the resumed run appends
    return TrainingInterrupted(f"interrupted by {name} after step {run.step}/{run.total}: resumable checkpoint "
                               f"{run.last_path}; continue with `distill train --resume --out {run.out}`", signum)


# ==================================================================== metrics rows and checkpoints (one of each)


def record(run: Run, event: str, **fields: Any) -> None:
    """Write one metrics row (``metrics.jsonl``; rank 0 only)."""
    run.metrics.write(event, **fields)


def checkpoint(run: Run, step: int, resumable: bool, state: dict[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
    """A checkpoint in the documented format (see distill.checkpoint); ``resumable`` adds optimiser & RNG."""
    cfg = run.cfg
    ckpt = {
        "student": run.student.spec.model_dump(mode="json"), "model": state or _cpu_state(run.student),
        "class_names": list(run.splits.class_names), "preprocess": run.spec.model_dump(mode="json"),
        "method": cfg.method, "blend": None, "teacher": run.teacher_desc, "data": run.splits.as_checkpoint_data(),
        "config": cfg.model_dump(mode="json"), "epoch": step / run.steps_per_epoch, "step": step, **extra,
        **run.method.checkpoint_entries(),
    }
    if resumable:
        ckpt.update(optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(), rng=rng_state(),
                    scheduler={"kind": cfg.schedule, "step": step, "total": run.total,
                               "lr": cfg.lr_at(step, run.total)},
                    progress={"best_val": run.best_val, "best_step": run.best_step, "train_time": run.train_time,
                              "images_seen": run.images_seen})
    return ckpt


def save(run: Run, path: Path, ckpt: dict[str, Any]) -> None:
    """Write a checkpoint atomically (the one place the loop saves one)."""
    save_checkpoint(path, ckpt)
    if path == run.last_path:
        run.last_saved = int(ckpt["step"])


# ==================================================================== the end


def finish(run: Run) -> dict[str, Any]:
    """Final metrics of ``best.pt`` and ``last.pt`` (blend searched on val, reported on test) and the summary."""
    ctx, steps_done = run.ctx, run.step
    if not ctx.is_main:  # rank 0 alone does the final evaluation and writes the summary
        ctx.close()
        return {"rank": ctx.rank, "world_size": ctx.world_size, "steps": steps_done,
                "completed": steps_done >= run.total}
    final: dict[str, Any] = {}
    last_state = _cpu_state(run.student)
    last_ckpt = (load_checkpoint(run.last_path) if run.last_path.exists()
                 else checkpoint(run, steps_done, resumable=True, state=last_state))
    if not run.best_path.exists():  # e.g. resumed after the end: keep the contract that best.pt exists
        save(run, run.best_path, checkpoint(run, steps_done, resumable=False, state=last_state))
    best_ckpt = load_checkpoint(run.best_path)
    for tag, ckpt in (("best", best_ckpt), ("last", last_ckpt)):
        if tag == "last" and best_ckpt["step"] == last_ckpt["step"]:
            final["last"] = final["best"]
        else:
            run.student.load_state_dict(ckpt["model"])
            final[tag] = run.method.final_metrics(run.student, run.device, run.precision.autocast)
        ckpt["blend"] = final[tag].get("blend")
        ckpt["final_metrics"] = {k: v for k, v in final[tag].items() if k != "blend"}
        save(run, run.best_path if tag == "best" else run.last_path, ckpt)
    run.student.load_state_dict(last_state)
    summary = _summary(run, final, best_ckpt["step"], last_ckpt["step"])
    record(run, "final", step=steps_done, val=summary["val"], test=summary["test"], completed=summary["completed"])
    atomic_write_json(run.out / "summary.json", summary)
    if run.cfg.plots:
        write_plots(run.metrics.read(), run.out, title=f"({run.cfg.method}, {run.cfg.student.arch})")
    run.tracker.log_final(flat_hparams(run.cfg.model_dump(mode="json")), final_metrics(summary))
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "split.json", "best.pt", "loss.png", "accuracy.png"):
        run.tracker.log_artifact(run.out / name)
    run.tracker.close()
    ctx.close()
    return summary


def _summary(run: Run, final: dict[str, Any], best_step: int, last_step: int) -> dict[str, Any]:
    cfg, steps_done, infos = run.cfg, run.step, run.cache_infos
    records = run.metrics.read()
    return {
        "method": cfg.method,
        "completed": steps_done >= run.total,
        "steps": steps_done,
        "total_steps": run.total,
        "steps_per_epoch": run.steps_per_epoch,
        "epochs": steps_done / run.steps_per_epoch,
        "best_step": best_step,
        "selected_by": f"val {run.method.select_metric}",
        "val": final["best"]["val"],
        "test": final["best"]["test"],
        "blend": final["best"].get("blend"),
        "last": {k: final["last"][k] for k in ("val", "test")} | {"step": last_step},
        "teacher": {"val_acc": run.teacher_acc[0], "test_acc": run.teacher_acc[1], **(run.teacher_desc or {})},
        "vl": run.method.summary_entry(),
        "teacher_cache": {
            "enabled": cfg.teacher_cache,
            "used": any(bool(getattr(i, "used_cache", False)) for i in infos),
            "all_from_cache": bool(infos) and all(int(getattr(i, "computed", 1)) == 0 for i in infos),
            "hits": sum(int(getattr(i, "hits", 0)) for i in infos),
            "computed": sum(int(getattr(i, "computed", 0)) for i in infos),
            "waited_s": sum(float(getattr(i, "waited_s", 0.0)) for i in infos),  # for a concurrent run's outputs
        },
        "data": run.splits.counts() | {"root": str(run.splits.root), "fingerprint": run.splits.fingerprint()}
        | ({"unlabeled_shards": cfg.data.unlabeled_shards, "unlabeled_streamed": run.pool.num_images}
           if run.pool else {}),
        "skipped_images": len(run.splits.skipped),
        "student": run.student.spec.model_dump(mode="json") | {"params": sum(p.numel() for p in run.student.parameters())},
        "precision": run.precision.name,
        "wall_time_s": time.time() - run.wall_start,
        "setup_time_s": run.setup_s,
        "train_time_s": run.train_time,
        "images_per_s": run.images_seen / run.train_time if run.train_time else None,
        "s_per_step": run.train_time / steps_done if steps_done else None,
        "hardware": hardware_info(run.device) | {"processes": run.ctx.world_size},
        "grad_conflict_mean": _mean(r["cosine"] for r in records if r.get("event") == "grad_conflict"),
    }


# ==================================================================== helpers (kept out of the loop's way)


def _adamw(student: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; like nanoGPT, weight decay only on matrices/kernels, not on biases and norm parameters."""
    decay = [p for p in student.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in student.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), foreach=device.type == "cuda")


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy in the default (NCHW) layout, whatever memory format training used."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _memory_format(setting: str | bool, device: torch.device, precision: Any) -> torch.memory_format:
    """``auto``: channels_last for bf16 on a CPU (measured faster there, docs/results.md issue 18), else NCHW."""
    on = setting is True or (setting == "auto" and device.type == "cpu" and precision.name == "bf16")
    return torch.channels_last if on else torch.contiguous_format


def _grad_cosine(ce: torch.Tensor, kd: torch.Tensor, params: list[torch.nn.Parameter]) -> tuple[float, float, float]:
    """Cosine similarity of the backbone gradients of the CE and KD terms (and their norms)."""
    g1 = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(kd, params, retain_graph=True, allow_unused=True)
    v1 = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float() for g, p in zip(g1, params)])
    v2 = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float() for g, p in zip(g2, params)])
    cos = torch.nn.functional.cosine_similarity(v1, v2, dim=0, eps=1e-12)
    return float(cos), float(v1.norm()), float(v2.norm())


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Resuming with a different method, data or schedule would silently mix two runs: refuse."""
    now = cfg.model_dump(mode="json")
    for key in sorted(set(saved) | set(now)):
        if key in _RESUME_FREE:
            continue
        a, b = saved.get(key), now.get(key)
        if key == "data" and isinstance(a, dict) and isinstance(b, dict):
            a = {k: v for k, v in a.items() if k not in ("num_workers", "cache_dir")}
            b = {k: v for k, v in b.items() if k not in ("num_workers", "cache_dir")}
            # a field added since the run started (e.g. unlabeled_shards) is fine at its default
            b = {k: v for k, v in b.items() if k in a or v != getattr(type(cfg.data).model_fields.get(k), "default", v)}
        if key == "teacher" and isinstance(a, dict) and isinstance(b, dict):
            a = {k: v for k, v in a.items() if k not in ("device", "batch_size")}
            b = {k: v for k, v in b.items() if k not in ("device", "batch_size")}
        if a != b:
            raise ConfigError(f"cannot resume: config '{key}' differs from the saved run ({a!r} vs {b!r})")


def _mean(values: Any) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


__all__ = ["KILL_ENV", "Run", "SELECT_METRIC", "TrainingInterrupted", "evaluate", "finish", "record", "save", "setup",
           "train", "train_step"]
