"""The training loop, written out top to bottom (nanoGPT spirit): data, teacher logits, student, optimiser,
then steps of {half labeled + half unlabeled batch -> forward -> loss -> backward -> step}, periodic
validation, atomic checkpoints, and at the end the alpha/beta blend search and the run summary.

Reproducibility: every random choice of the data streams (which images, which crop, which flip) is a pure
function of (seed, stream position), so a run resumed from ``last.pt`` at any step draws exactly the batches
an uninterrupted run would; the global torch/numpy/python RNG states travel in ``last.pt`` too.

Distributed (``torchrun --nproc-per-node=N -m distill train``): batch sizes are global; each rank takes its slice
of every global batch of the same streams, DDP averages gradients, and rank 0 alone validates, logs and writes
files (:mod:`distill.scale.distributed`). Checkpoints hold global state only, so a run resumes on any number of
processes that divides the batch sizes.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..blend import accuracy, search_blends
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import dump_config
from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_json, check_writable
from ..losses import LossTerms, method_loss
from .config import TrainConfig
from .evaluate import EvalSet, head_logits, head_metrics
from .report import MetricsLog, write_plots
from .tracking import Tracker, create_tracker, final_metrics, flat_hparams
from ._runtime import (forward_flops, hardware_info, peak_tflops, pick_device, pick_precision, rng_state,
                       seed_everything, set_rng_state)
from ..scale.distributed import NullLog, RankSliceSampler, init_distributed

#: Test hook: ``DISTILL_TEST_KILL_AT_STEP=k`` SIGKILLs the process right after step k (a real, unclean kill).
KILL_ENV = "DISTILL_TEST_KILL_AT_STEP"

#: Validation metric that picks ``best.pt``, per method.
SELECT_METRIC = {"dho": "acc_blend05", "ce": "acc_ce", "kd": "acc_kd", "ce+kd": "acc_shared", "vl-distill": "acc_seen"}

#: Config keys that may differ between a run and its resumption (everything else must match).
_RESUME_FREE = {"max_steps", "progress", "plots", "device", "threads", "out_dir", "eval_batch_size",
                "teacher_batch_size", "teacher_cache", "amp", "teacher_store", "tensorboard", "mlflow_uri",
                "mlflow_experiment"}


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) one training run in ``cfg.out_dir``; returns the summary (also in ``summary.json``)."""
    wall_start = time.time()
    out = Path(cfg.out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"

    resume_ckpt: dict[str, Any] | None = None
    if resume:
        if not last_path.exists():
            raise CheckpointError(f"cannot resume: no last.pt in {out}")
        resume_ckpt = load_checkpoint(last_path)
        _check_resumable(resume_ckpt.get("config") or {}, cfg)
    elif last_path.exists():
        raise ConfigError(f"{out} already holds a run (last.pt): pass --resume to continue it, or choose another --out")
    check_writable(last_path)

    seed_everything(cfg.seed, cfg.deterministic, cfg.threads)
    ctx = init_distributed(cfg.device)  # single process unless torchrun started several (WORLD_SIZE > 1)
    device = ctx.device or pick_device(cfg.device)
    ctx.check_divisible(batch_labeled=cfg.batch_labeled, batch_unlabeled=cfg.batch_unlabeled)  # global batch sizes
    precision = pick_precision(cfg.amp, device)

    # ---------------------------------------------------------------- data: seeded, stratified splits
    from ..data import ImageDataset, build_splits, create_eval_transform, create_train_transform

    with ctx.rank0_first():  # rank 0 verifies the images; the others read its scan cache
        splits = build_splits(cfg.data, progress=cfg.progress and ctx.is_main)
    if ctx.is_main:
        dump_config(cfg, out / "config.yaml")
        atomic_write_json(out / "split.json", splits.manifest())
    num_classes = splits.num_classes
    vl = cfg.method == "vl-distill"  # open-vocabulary: distill.vl.VLTask supplies targets, loss and metrics
    uses_kd = cfg.method not in ("ce", "vl-distill")

    # ---------------------------------------------------------------- teacher logits, computed or read from the cache once
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
            return torch.zeros(0, num_classes)
        if cfg.teacher_store:
            logits, info = teacher.logits_for(samples)
        else:
            logits, info = teacher_logits_for(teacher, samples, cfg.data.cache_dir, cfg.teacher_batch_size, device,
                                              use_cache=cfg.teacher_cache, num_workers=cfg.data.num_workers,
                                              progress=cfg.progress and ctx.is_main)
        cache_infos.append(info)
        return logits.float().cpu()

    task = None
    lab_samples, unl_samples = splits.labeled, splits.unlabeled
    if vl:  # seen classes only; teacher image embeddings of un-augmented images (cached) and class embeddings
        from ..teachers.prompts import load_descriptions
        from ..vl import VLTask

        task = VLTask(cfg.vl, splits, teacher, load_descriptions(cfg.teacher.descriptions),
                      cache_dir=cfg.data.cache_dir, batch_size=cfg.teacher_batch_size, device=device,
                      use_cache=cfg.teacher_cache, num_workers=cfg.data.num_workers, progress=cfg.progress,
                      eval_batch_size=cfg.eval_batch_size)
        cache_infos += task.cache_infos
        lab_samples, unl_samples = task.data.labeled, task.data.unlabeled
    # data.unlabeled_shards: the pool is streamed, its teacher logits looked up in the store batch by batch
    shard_teacher = teacher if cfg.data.unlabeled_shards and uses_kd and cfg.batch_unlabeled else None
    uses_unlabeled = (uses_kd or vl) and (len(unl_samples) > 0 or shard_teacher is not None) and cfg.batch_unlabeled > 0
    t_lab = teacher_logits(splits.labeled) if uses_kd else None
    t_unl = teacher_logits(splits.unlabeled) if uses_unlabeled and shard_teacher is None else None
    t_val, t_test = teacher_logits(splits.val), teacher_logits(splits.test)
    ctx.release_others()
    y_val = torch.tensor([s.label for s in splits.val])
    y_test = torch.tensor([s.label for s in splits.test])
    teacher_val_acc = accuracy(t_val, y_val) if t_val is not None and len(y_val) else None
    teacher_test_acc = accuracy(t_test, y_test) if t_test is not None and len(y_test) else None
    del teacher  # training never runs the teacher: its outputs are all in memory now
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # ---------------------------------------------------------------- student and optimiser
    from ..models import create_student

    spec = cfg.student.preprocess_spec()
    torch.manual_seed(cfg.seed)  # the init must not depend on how much RNG the data/teacher setup consumed
    if task is not None:
        from ..vl import create_embedding_student

        student = create_embedding_student(cfg.student.arch, task.embed_dim, weights=cfg.student.weights).to(device)
    else:
        student = create_student(cfg.student.arch, num_classes, cfg.method, weights=cfg.student.weights).to(device)
    model = ctx.wrap(student, device)  # DDP when distributed (forward/backward); `student` for state and eval
    optimizer = _adamw(student, cfg.lr, cfg.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    backbone_params = [p for p in student.backbone.parameters() if p.requires_grad]

    # ---------------------------------------------------------------- budget: an epoch is one pass over the unlabeled pool
    epoch_pool = len(unl_samples) if (unl_samples and cfg.batch_unlabeled) else len(lab_samples)
    epoch_batch = cfg.batch_unlabeled if (unl_samples and cfg.batch_unlabeled) else cfg.batch_labeled
    pool = None
    if shard_teacher is not None:  # a streamed pool's size is the sum of the counts in its shards.json
        from ..data.shards import ShardStream

        pool = ShardStream(cfg.data.unlabeled_shards, create_eval_transform(spec),
                           batch_size=cfg.batch_unlabeled // ctx.world_size, seed=_stream_seed(cfg.seed, 1),
                           shuffle_buffer=cfg.data.shuffle_buffer, num_workers=cfg.data.num_workers,
                           rank=ctx.rank, world_size=ctx.world_size)
        epoch_pool, epoch_batch = pool.num_images, cfg.batch_unlabeled
    steps_per_epoch = max(1, math.ceil(epoch_pool / epoch_batch))
    total = cfg.total_steps(steps_per_epoch)
    stop_at = min(total, cfg.max_steps) if cfg.max_steps else total
    eval_every = cfg.eval_every or steps_per_epoch
    ckpt_every = cfg.checkpoint_every or steps_per_epoch

    tracker = create_tracker(cfg, out) if ctx.is_main else Tracker()  # TensorBoard (+ MLflow with --mlflow-uri)
    metrics = (MetricsLog(out / "metrics.jsonl", on_write=tracker.log_row) if ctx.is_main
               else NullLog(out / f".no-metrics-rank{ctx.rank}"))
    start_step, best_val, best_step, train_time, images_seen = 0, -1.0, -1, 0.0, 0
    if resume_ckpt is not None:
        student.load_state_dict(resume_ckpt["model"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        if "scaler" in resume_ckpt and resume_ckpt["scaler"]:
            scaler.load_state_dict(resume_ckpt["scaler"])
        set_rng_state(resume_ckpt["rng"])
        start_step = int(resume_ckpt["step"])
        prog = resume_ckpt.get("progress", {})
        best_val, best_step = prog.get("best_val", -1.0), prog.get("best_step", -1)
        train_time, images_seen = prog.get("train_time", 0.0), prog.get("images_seen", 0)
        metrics.truncate_after(start_step)
        metrics.write("resume", step=start_step)
    else:
        metrics.path.unlink(missing_ok=True)
        metrics.write("setup", step=0, method=cfg.method, device=str(device), precision=precision.name,
                      counts=splits.counts(), steps_per_epoch=steps_per_epoch, total_steps=total,
                      teacher_val_acc=teacher_val_acc, teacher_test_acc=teacher_test_acc,
                      student_params=sum(p.numel() for p in student.parameters()))

    def checkpoint(step: int, model_state: dict[str, Any], resumable: bool, **extra: Any) -> dict[str, Any]:
        """A checkpoint in the documented format (see distill.checkpoint); ``resumable`` adds optimiser & RNG."""
        ckpt = {
            "student": student.spec.model_dump(mode="json"), "model": model_state,
            "class_names": list(splits.class_names), "preprocess": spec.model_dump(mode="json"),
            "method": cfg.method, "blend": None, "teacher": teacher_desc, "data": splits.as_checkpoint_data(),
            "config": cfg.model_dump(mode="json"), "epoch": step / steps_per_epoch, "step": step, **extra,
        }
        if task is not None:
            ckpt["embedding"] = task.checkpoint_entry()  # class embeddings, seen/unseen names, tau
        if resumable:
            ckpt.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rng_state(),
                        scheduler={"kind": cfg.schedule, "step": step, "total": total, "lr": cfg.lr_at(step, total)},
                        progress={"best_val": best_val, "best_step": best_step, "train_time": train_time,
                                  "images_seen": images_seen})
        return ckpt

    # ---------------------------------------------------------------- the data streams
    train_tf = (create_train_transform(spec, scale=cfg.crop_scale, hflip=cfg.hflip) if cfg.augment
                else create_eval_transform(spec))
    workers = cfg.data.num_workers
    lab_iter = _stream(ImageDataset(lab_samples, train_tf), cfg.batch_labeled, _stream_seed(cfg.seed, 0),
                       start_step, workers, device, ctx)
    unl_iter = (_stream(ImageDataset(unl_samples, train_tf), cfg.batch_unlabeled, _stream_seed(cfg.seed, 1),
                        start_step, workers, device, ctx) if uses_unlabeled and pool is None else None)
    if pool is not None:  # resumes at start_step's position (see ShardStream for when that is exact)
        pool.transform, pool.start_step = train_tf, start_step
        unl_iter = _shard_batches(pool, shard_teacher, workers, device)
    val_set = EvalSet(splits.val, spec, cfg.eval_batch_size, workers)
    test_set = EvalSet(splits.test, spec, cfg.eval_batch_size, workers)
    t_lab_dev = t_lab.to(device) if t_lab is not None else None
    t_unl_dev = t_unl.to(device) if t_unl is not None else None

    def unl_teacher(iu: torch.Tensor) -> torch.Tensor:  # in-memory rows by index, or a streamed batch's own logits
        return iu.to(device, non_blocking=True) if pool is not None else t_unl_dev[iu.to(device)]

    flops_per_image = forward_flops(student, torch.zeros(1, 3, spec.size, spec.size, device=device))
    peak = peak_tflops(device)
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)

    # ---------------------------------------------------------------- training
    student.train()
    window = _Window()
    bar = _progress_bar(cfg.progress and ctx.is_main, total, start_step)
    done = start_step
    with bar:
        for step in range(start_step, stop_at):
            t_step = time.perf_counter()  # step time = data + forward + backward + update (not eval/checkpoints)
            lr = cfg.lr_at(step, total)
            for group in optimizer.param_groups:
                group["lr"] = lr

            xl, yl, il = next(lab_iter)
            xs, n_l = [xl], xl.shape[0]
            if unl_iter is not None:
                xu, _, iu = next(unl_iter)
                xs.append(xu)
            x = torch.cat(xs).to(device, non_blocking=True)
            yl = yl.to(device, non_blocking=True)

            with precision.autocast():
                heads = model(x)  # {head: (n_l + n_u, C)} from one backbone pass over both halves
            out_l = {k: v[:n_l] for k, v in heads.items()}
            out_u = {k: v[n_l:] for k, v in heads.items()} if unl_iter is not None else None
            if task is not None:
                s_emb = torch.nn.functional.normalize(heads["embed"].float(), dim=-1)
                vt = task.loss(s_emb, yl, il, iu if unl_iter is not None else None)
                terms = LossTerms(vt.total, None, None)
            else:
                terms = method_loss(
                    cfg.method, out_l, yl,
                    t_lab_dev[il.to(device)] if t_lab_dev is not None else None,
                    out_u, unl_teacher(iu) if unl_iter is not None else None,
                    lambda_=cfg.lambda_, T=cfg.temperature,
                )

            if cfg.grad_conflict_every and step % cfg.grad_conflict_every == 0 and terms.ce is not None \
                    and terms.kd is not None and ctx.is_main:  # distributed: on rank 0's slice of the batch
                cos, g_ce, g_kd = _grad_cosine(terms.ce, terms.kd, backbone_params)
                metrics.write("grad_conflict", step=step, cosine=cos, grad_norm_ce=g_ce, grad_norm_kd=g_kd)

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()

            # -- bookkeeping (one host sync per step: the loss value for the bar)
            done = step + 1
            terms = ctx.mean_terms(terms)  # distributed: averaged over ranks = the global batch's loss
            loss_value = float(terms.total.detach())
            dt = time.perf_counter() - t_step
            train_time += dt
            n_images = x.shape[0] * ctx.world_size
            images_seen += n_images
            window.add(loss_value, terms, n_images, dt)
            bar.update(done, loss_value, n_images / max(dt, 1e-9), lr)

            if done % cfg.log_every == 0 or done == stop_at:
                rec = window.flush()
                if flops_per_image:
                    rec["tflops"] = 3 * flops_per_image * rec["images_per_s"] / 1e12  # fwd + bwd ~ 3x fwd
                    if peak:
                        rec["mfu"] = rec["tflops"] / peak
                metrics.write("train", step=done, epoch=done / steps_per_epoch, lr=lr, **rec)
                if task is not None:  # this step's unweighted vl terms
                    metrics.write("vl_loss", step=done, vlprox_kept=vt.vlprox_kept,
                                  **{k: float(v.detach()) for k, v in vt.parts.items()})

            if (done % eval_every == 0 or done == stop_at) and ctx.is_main:
                if task is not None:
                    val = task.validate(student, spec, device)
                else:
                    val = head_metrics(head_logits(student, val_set, device, precision.autocast), val_set.labels)
                metrics.write("val", step=done, epoch=done / steps_per_epoch, **val)
                bar.note(val)
                score = val[SELECT_METRIC[cfg.method]]
                if score > best_val:
                    best_val, best_step = score, done
                    save_checkpoint(best_path, checkpoint(done, _cpu_state(student), False, val_metrics=val))

            if (done % ckpt_every == 0 or done == stop_at) and ctx.is_main:
                save_checkpoint(last_path, checkpoint(done, _cpu_state(student), True))

            if kill_at and done == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    steps_done = done
    completed = steps_done >= total
    if not ctx.is_main:  # rank 0 alone does the final evaluation and writes the summary
        ctx.close()
        return {"rank": ctx.rank, "world_size": ctx.world_size, "steps": steps_done, "completed": completed}

    # ---------------------------------------------------------------- final: blend search on val, report on test
    final: dict[str, Any] = {}
    last_state = _cpu_state(student)
    last_ckpt = load_checkpoint(last_path) if last_path.exists() else checkpoint(steps_done, last_state, True)
    if not best_path.exists():  # e.g. resumed after the end: keep the contract that best.pt exists
        save_checkpoint(best_path, checkpoint(steps_done, last_state, False))
    best_ckpt = load_checkpoint(best_path)
    for tag, ckpt in (("best", best_ckpt), ("last", last_ckpt)):
        if tag == "last" and best_ckpt["step"] == last_ckpt["step"]:
            final["last"] = final["best"]
        else:
            student.load_state_dict(ckpt["model"])
            final[tag] = (_final_metrics(student, val_set, test_set, device, precision, cfg.method) if task is None
                          else {"val": task.validate(student, spec, device),
                                "test": task.final_metrics(student, spec, device)})
        ckpt["blend"] = final[tag].get("blend")
        ckpt["final_metrics"] = {k: v for k, v in final[tag].items() if k != "blend"}
        save_checkpoint(best_path if tag == "best" else last_path, ckpt)
    student.load_state_dict(last_state)

    records = metrics.read()
    info_used = [bool(getattr(i, "used_cache", False)) for i in cache_infos]
    summary = {
        "method": cfg.method,
        "completed": completed,
        "steps": steps_done,
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "epochs": steps_done / steps_per_epoch,
        "best_step": best_ckpt["step"],
        "selected_by": f"val {SELECT_METRIC[cfg.method]}",
        "val": final["best"]["val"],
        "test": final["best"]["test"],
        "blend": final["best"].get("blend"),
        "last": {k: final["last"][k] for k in ("val", "test")} | {"step": last_ckpt["step"]},
        "teacher": {"val_acc": teacher_val_acc, "test_acc": teacher_test_acc, **(teacher_desc or {})},
        "vl": None if task is None else {"teacher": task.teacher_metrics, "split": task.data.describe(),
                                         "weights": cfg.vl.loss_weights(), "tau": cfg.vl.tau},
        "teacher_cache": {
            "enabled": cfg.teacher_cache,
            "used": any(info_used),
            "all_from_cache": bool(cache_infos) and all(int(getattr(i, "computed", 1)) == 0 for i in cache_infos),
            "hits": sum(int(getattr(i, "hits", 0)) for i in cache_infos),
            "computed": sum(int(getattr(i, "computed", 0)) for i in cache_infos),
        },
        "data": splits.counts() | {"root": str(splits.root), "fingerprint": splits.fingerprint()}
        | ({"unlabeled_shards": cfg.data.unlabeled_shards, "unlabeled_streamed": pool.num_images} if pool else {}),
        "skipped_images": len(splits.skipped),
        "student": student.spec.model_dump(mode="json") | {"params": sum(p.numel() for p in student.parameters())},
        "precision": precision.name,
        "wall_time_s": time.time() - wall_start,
        "train_time_s": train_time,
        "images_per_s": images_seen / train_time if train_time else None,
        "s_per_step": train_time / steps_done if steps_done else None,
        "hardware": hardware_info(device) | {"processes": ctx.world_size},
        "grad_conflict_mean": _mean(r["cosine"] for r in records if r.get("event") == "grad_conflict"),
    }
    metrics.write("final", step=steps_done, val=summary["val"], test=summary["test"], completed=completed)
    atomic_write_json(out / "summary.json", summary)
    if cfg.plots:
        write_plots(metrics.read(), out, title=f"({cfg.method}, {cfg.student.arch})")
    tracker.log_final(flat_hparams(cfg.model_dump(mode="json")), final_metrics(summary))
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "split.json", "best.pt", "loss.png", "accuracy.png"):
        tracker.log_artifact(out / name)
    tracker.close()
    ctx.close()
    return summary


# ==================================================================== helpers (kept out of the loop's way)


def _adamw(student: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; like nanoGPT, weight decay only on matrices/kernels, not on biases and norm parameters."""
    decay = [p for p in student.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in student.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), foreach=device.type == "cuda")


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _grad_cosine(ce: torch.Tensor, kd: torch.Tensor, params: list[torch.nn.Parameter]) -> tuple[float, float, float]:
    """Cosine similarity of the backbone gradients of the CE and KD terms (and their norms)."""
    g1 = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(kd, params, retain_graph=True, allow_unused=True)
    v1 = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float() for g, p in zip(g1, params)])
    v2 = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float() for g, p in zip(g2, params)])
    cos = torch.nn.functional.cosine_similarity(v1, v2, dim=0, eps=1e-12)
    return float(cos), float(v1.norm()), float(v2.norm())


def _final_metrics(student: torch.nn.Module, val_set: EvalSet, test_set: EvalSet, device: torch.device,
                   precision: Any, method: str) -> dict[str, Any]:
    lv = head_logits(student, val_set, device, precision.autocast)
    lt = head_logits(student, test_set, device, precision.autocast) if len(test_set) else {}
    res: dict[str, Any] = {
        "val": {f"acc_{h}": accuracy(v, val_set.labels) for h, v in lv.items()},
        "test": {f"acc_{h}": accuracy(v, test_set.labels) for h, v in lt.items()} if lt else {},
    }
    if method == "dho":
        blend = search_blends(lv["ce"], lv["kd"], val_set.labels,
                              lt.get("ce"), lt.get("kd"), test_set.labels if lt else None)
        res["blend"] = blend
        for kind in ("prob", "logit"):
            res["val"][f"acc_blend_{kind}"] = blend[kind]["val_acc"]
            if lt:
                res["test"][f"acc_blend_{kind}"] = blend[kind]["test_acc"]
            res[f"blend_{kind}"] = {"alpha": blend[kind]["alpha"], "beta": blend[kind]["beta"]}
    return res


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


# -------------------------------------------------------------------- seeded data streams


def _stream_seed(seed: int, stream: int) -> int:
    return (seed + 1) * 1_000_003_000 + stream * 500_000_000


def _item_seed(stream_seed: int, position: int) -> int:
    return (stream_seed * 6364136223846793005 + position * 1442695040888963407 + 1) % (2**63 - 1)


class _PositionSampler(Sampler):
    """Endless ``(index, augmentation seed)`` pairs: the index order of :class:`distill.data.InfiniteSampler`,
    and a seed per stream position, so crops and flips do not depend on workers or on where a run resumed."""

    def __init__(self, size: int, seed: int, start: int) -> None:
        from ..data import InfiniteSampler

        self.inner = InfiniteSampler(size, seed=seed, start=start)
        self.seed, self.start = seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, idx in enumerate(self.inner, start=self.start):
            yield idx, _item_seed(self.seed, pos)


class _SeededItems(Dataset):
    """Calls the wrapped dataset with torch's RNG seeded per item (and restores the caller's RNG state)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


def _stream(dataset: Dataset, batch_size: int, seed: int, start_batch: int, workers: int,
            device: torch.device, ctx: Any = None) -> Iterator[Any]:
    """Batches of ``batch_size`` (global); distributed, each rank gets its slice of every global batch."""
    sampler: Sampler = _PositionSampler(len(dataset), seed, start_batch * batch_size)  # type: ignore[arg-type]
    if ctx is not None and ctx.enabled:
        sampler = RankSliceSampler(sampler, batch_size, ctx.rank, ctx.world_size)
        batch_size //= ctx.world_size
    loader = DataLoader(_SeededItems(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(seed))
    return iter(loader)


def _shard_batches(pool: Any, teacher: Any, workers: int, device: torch.device) -> Iterator[Any]:
    """Batches of a streamed pool: (images, None, teacher logits looked up by content digest in the store)."""
    loader = DataLoader(pool, batch_size=pool.batch_size, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    for x, digests, where in loader:
        yield x, None, teacher.logits_for_digests(list(digests), list(where))


# -------------------------------------------------------------------- progress and loss window


class _Window:
    """Averages of the loss terms and throughput between two ``train`` log events."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.ce, self.kd, self.images, self.seconds = 0, 0.0, 0.0, 0.0, 0, 0.0
        self.has_ce = self.has_kd = False

    def add(self, loss: float, terms: Any, images: int, seconds: float) -> None:
        self.n += 1
        self.loss += loss
        if terms.ce is not None:
            self.ce += float(terms.ce.detach())
            self.has_ce = True
        if terms.kd is not None:
            self.kd += float(terms.kd.detach())
            self.has_kd = True
        self.images += images
        self.seconds += seconds

    def flush(self) -> dict[str, Any]:
        n = max(self.n, 1)
        rec = {"loss": self.loss / n, "ce": self.ce / n if self.has_ce else None, "kd": self.kd / n if self.has_kd else None,
               "images_per_s": self.images / self.seconds if self.seconds else 0.0,
               "s_per_step": self.seconds / n}
        self.reset()
        return rec


class _progress_bar:
    """A rich progress bar with loss, images/s and lr (stderr); a no-op when ``enabled`` is False."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled, self.total, self.start = enabled, total, start
        self._bar: Any = None
        self._task: Any = None
        self._ips: float | None = None
        self._val = ""

    def __enter__(self) -> "_progress_bar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            from ..cli_base import console

            self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, done: int, loss: float, ips: float, lr: float) -> None:
        if self._bar is None:
            return
        self._ips = ips if self._ips is None else 0.9 * self._ips + 0.1 * ips
        info = f"loss {loss:.3f} | {self._ips:.0f} img/s | lr {lr:.1e}{self._val}"
        self._bar.update(self._task, completed=done, info=info)

    def note(self, val: dict[str, Any]) -> None:
        parts = [f"{k.removeprefix('acc_')} {v:.3f}" for k, v in val.items() if v is not None]
        self._val = " | val " + " ".join(parts)


__all__ = ["train", "KILL_ENV", "SELECT_METRIC"]
