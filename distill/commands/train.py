"""``distill train``: a DHO (or baseline) training run from a YAML config, ``--set key=value`` and options.

Precedence: TrainConfig defaults < ``--config`` file < ``--set`` < explicit options. With ``--resume`` and no
``--config``, the run directory's own ``config.yaml`` is the base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..cli_base import console, setup_logging

#: explicit option -> dotted config key
_OPTION_KEYS = {
    "data": "data.root", "subdir": "data.subdir", "unlabeled_dir": "data.unlabeled_dir", "val_dir": "data.val_dir",
    "unlabeled_shards": "data.unlabeled_shards",
    "labeled_fraction": "data.labeled_fraction", "shots": "data.shots", "max_images": "data.max_images",
    "num_workers": "data.num_workers", "cache_dir": "data.cache_dir",
    "teacher_kind": "teacher.kind", "teacher": "teacher.name", "teacher_weights": "teacher.weights",
    "templates": "teacher.templates",
    "student": "student.arch", "student_weights": "student.weights", "student_init": "student.init",
    "image_size": "student.size",
    "method": "method", "epochs": "epochs", "steps": "steps", "max_steps": "max_steps", "lr": "lr", "seed": "seed",
    "device": "device", "amp": "amp", "out": "out_dir", "grad_conflict_every": "grad_conflict_every",
    "eval_every": "eval_every", "threads": "threads", "unseen_classes": "vl.unseen_classes",
    "teacher_store": "teacher_store", "mlflow_uri": "mlflow_uri",
}


def build_train_config(config: Path | None, sets: list[str], options: dict[str, Any], resume: bool = False) -> Any:
    """TrainConfig from file + ``--set`` + explicit options (``None`` = not given)."""
    from ..config import load_config, parse_set_options
    from ..errors import ConfigError
    from ..train import TrainConfig

    overrides = parse_set_options(sets)
    for name, key in _OPTION_KEYS.items():
        if options.get(name) is not None:
            overrides[key] = str(options[name]) if isinstance(options[name], Path) else options[name]
    if options.get("batch_size") is not None:  # images per half: labeled and unlabeled
        overrides["batch_labeled"] = overrides["batch_unlabeled"] = options["batch_size"]
    if options.get("no_teacher_cache"):
        overrides["teacher_cache"] = False
    if options.get("no_progress"):
        overrides["progress"] = False
    base = config
    if base is None and resume:
        out = overrides.get("out_dir")
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR (or --config)")
        base = Path(out) / "config.yaml"
        if not base.exists():
            raise ConfigError(f"cannot resume: {base} not found (is {out} a run directory?)")
    if base is None and "data.root" not in overrides:
        raise ConfigError("no training data: pass --data DIR_OR_ARCHIVE or --config FILE with a data.root")
    return load_config(TrainConfig, base, overrides)


def train_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (see configs/)."),
    set_: list[str] = typer.Option([], "--set", help="Override any config field: --set lr=3e-4 --set data.shots=4."),
    data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder directory or .tar/.tar.gz of one."),
    subdir: Optional[str] = typer.Option(None, "--subdir", help="Folder inside --data, e.g. train."),
    unlabeled_dir: Optional[Path] = typer.Option(None, "--unlabeled-dir", help="Extra unlabeled images (any layout)."),
    unlabeled_shards: Optional[str] = typer.Option(None, "--unlabeled-shards",
                                                   help="Unlabeled pool streamed from shards: a folder, a glob or "
                                                        "'shard-{000000..000099}.tar' (needs --teacher-store)."),
    val_dir: Optional[Path] = typer.Option(None, "--val-dir", help="Labeled validation folder (else carved from --data)."),
    labeled_fraction: Optional[float] = typer.Option(None, "--labeled-fraction", help="Labeled share per class, e.g. 0.01."),
    shots: Optional[int] = typer.Option(None, "--shots", help="Labeled images per class (overrides the fraction)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Stratified cap on the image pool (smoke runs)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="DataLoader worker processes."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Extracted archives and teacher-logit cache."),
    teacher_kind: Optional[str] = typer.Option(None, "--teacher-kind", help="auto, cifar_resnet, timm, open_clip or distill (a `distill train` checkpoint as --teacher-weights)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher model name (e.g. cifar_resnet56, ViT-B-32)."),
    teacher_weights: Optional[str] = typer.Option(None, "--teacher-weights", help="Weights file, open_clip tag, or a run's best.pt (kind distill)."),
    templates: Optional[str] = typer.Option(None, "--templates", help="single, simple, openai or a template file."),
    teacher_store: Optional[Path] = typer.Option(None, "--teacher-store",
                                                 help="Teacher logits from `distill cache-teacher` (memory-mapped)."),
    student: Optional[str] = typer.Option(None, "--student", help="Student arch: cifar_resnet20, resnet18, ..."),
    student_weights: Optional[str] = typer.Option(None, "--student-weights", help="Backbone init: a local file, a timm pretrained name or hf-hub: id (from the local cache)."),
    student_init: Optional[str] = typer.Option(None, "--student-init", help="random, or teacher: the backbone starts from the teacher's stem and evenly spaced blocks (CIFAR ResNets of one width)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Student input size (default: the model's own: timm's pretrained config, 32 for CIFAR ResNets)."),
    method: Optional[str] = typer.Option(None, "--method", help="dho, ce (supervised, no teacher needed), kd, ce+kd or vl-distill (open-vocabulary embedding student)."),
    unseen_classes: Optional[str] = typer.Option(None, "--unseen-classes", help="vl-distill: classes held out of training, comma-separated (default: a seeded half, vl.unseen_fraction)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the unlabeled pool."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total steps (overrides --epochs)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop early after N steps (resumable)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per half-batch (labeled = unlabeled)."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed (the data split seed is data.seed)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, mps."),
    amp: Optional[str] = typer.Option(None, "--amp", help="auto, off, bf16 (CUDA, or a CPU with AMX/AVX-512 BF16), fp16 (CUDA)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    grad_conflict_every: Optional[int] = typer.Option(None, "--grad-conflict-every",
                                                      help="Log the CE/KD backbone-gradient cosine every N steps."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Validate every N steps (0: every epoch)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (1 is faster on a busy machine)."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="Also log params, metrics and the run's "
                                                                       "files to an MLflow run (file:./mlruns works offline)."),
    no_teacher_cache: bool = typer.Option(False, "--no-teacher-cache", help="Do not read/write the teacher cache."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json on stdout when done."),
) -> None:
    """Train a student from a teacher (DHO or a baseline) and write a run directory."""
    setup_logging()
    options = {k: v for k, v in locals().items() if k not in ("config", "set_", "resume", "as_json")}
    cfg = build_train_config(config, set_, options, resume=resume)

    from ..train import train

    summary = train(cfg, resume=resume)
    if summary.get("rank", 0) != 0:  # another rank of a torchrun job: rank 0 reports
        return
    _print_summary(summary, cfg.out_dir)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        typer.echo(str(Path(cfg.out_dir) / "best.pt"))


def _pct(v: Any) -> str:
    """A percentage, or '-' when there is nothing to measure (no teacher, an empty test split: never 'nan')."""
    return "-" if v is None or v != v else f"{100 * v:.2f}"


def _print_summary(summary: dict[str, Any], out_dir: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{summary['method']} - {summary['steps']}/{summary['total_steps']} steps "
                        f"(best.pt = step {summary['best_step']}), {out_dir}")
    table.add_column("model")
    table.add_column("val acc %", justify="right")
    table.add_column("test acc %", justify="right")
    table.add_column("alpha / beta", justify="right")
    for key in [*summary["val"], *(k for k in summary["test"] if k not in summary["val"])]:
        ab = ""
        kind = key.removeprefix("acc_blend_") if key.startswith("acc_blend_") else None
        if kind and summary.get("blend"):
            ab = f"{summary['blend'][kind]['alpha']:.2f} / {summary['blend'][kind]['beta']:.2f}"
        table.add_row(key.removeprefix("acc_"), _pct(summary["val"].get(key)), _pct(summary["test"].get(key)), ab)
    table.add_row("teacher", _pct(summary["teacher"]["val_acc"]), _pct(summary["teacher"]["test_acc"]), "")
    console.print(table)
    tc = summary["teacher_cache"]
    setup = summary.get("setup_time_s")
    waited = f", {tc['waited_s']:.0f} s of it waiting for another run's teacher outputs" if tc.get("waited_s") else ""
    teacher = (f"teacher cache {'on' if tc['enabled'] else 'off'} ({tc['hits']} hits, {tc['computed']} computed)"
               if summary["teacher"].get("kind") or tc["hits"] or tc["computed"] else "no teacher")
    console.print(f"{summary['s_per_step'] or 0:.3f} s/step, {summary['images_per_s'] or 0:.0f} img/s, "
                  f"wall {summary['wall_time_s']:.0f} s (set-up before step 1: {setup or 0:.1f} s{waited}); "
                  f"{teacher}; skipped images: {summary['skipped_images']}")


def config_default(dotted: str) -> Any:
    """The TrainConfig default behind a dotted key (``data.shots`` -> DataConfig's), or None when it has none."""
    import typing

    from pydantic import BaseModel

    from ..train.config import TrainConfig

    model: Any = TrainConfig
    *parents, last = dotted.split(".")
    for part in parents:
        ann = model.model_fields[part].annotation
        model = next((a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    field = model.model_fields.get(last) or next(
        (f for f in model.model_fields.values() if f.alias == last), None)
    if field is None or field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    return value.value if hasattr(value, "value") else value


def _add_defaults_to_help() -> None:
    """Options default to None (so a config file can set them); show the config's own default in --help instead."""
    import inspect

    params = inspect.signature(train_command).parameters
    for name, key in {**_OPTION_KEYS, "batch_size": "batch_labeled"}.items():
        info = params[name].default
        value = config_default(key)
        if value is not None and value != "" and "(default:" not in (info.help or ""):
            info.help = f"{info.help or ''} (default: {value})".strip()


def register(app: typer.Typer) -> None:
    _add_defaults_to_help()
    app.command("train")(train_command)
