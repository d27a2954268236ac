"""``distill teacher-eval``: a teacher's top-1 and mean per-class accuracy on a labeled folder or archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..cli_base import console, setup_logging


def _load_samples(data: Path, subdir: str | None, split: str, limit: int | None, seed: int, val_fraction: float,
                  test_fraction: float, cache_dir: Path | None) -> tuple[Path, list[str], list[Any], list[Any]]:
    from ..data import (
        DataConfig, build_splits, default_cache_dir, list_image_folder, resolve_dataset_root, stratified_subset,
        verify_samples,
    )
    from ..errors import ConfigError

    if split == "all":
        cache_dir = cache_dir or default_cache_dir()
        root = resolve_dataset_root(data, subdir, cache_dir)
        names, samples = list_image_folder(root)
        if limit:
            samples = stratified_subset(samples, names, limit, seed)
        kept, skipped = verify_samples(samples, root, cache_dir)
        return root, names, kept, skipped
    if split not in ("val", "test"):
        raise ConfigError(f"--split must be all, val or test, got {split!r}")
    kw: dict[str, Any] = {"cache_dir": cache_dir} if cache_dir else {}
    splits = build_splits(DataConfig(root=data, subdir=subdir, seed=seed, val_fraction=val_fraction,
                                     test_fraction=test_fraction, shots=1, max_images=limit, **kw))
    return splits.root, splits.class_names, splits.split(split), splits.skipped


def teacher_eval(
    data: Path = typer.Option(..., "--data", help="Labeled ImageFolder directory or .tar/.tar.gz archive of one."),
    subdir: Optional[str] = typer.Option(None, "--subdir", help="Folder inside --data, e.g. validation."),
    teacher_kind: str = typer.Option("auto", "--teacher-kind", help="auto, cifar_resnet, timm or open_clip."),
    teacher: str = typer.Option("cifar_resnet56", "--teacher", help="Model name (or open_clip config .json)."),
    teacher_weights: Optional[str] = typer.Option(None, "--teacher-weights", help="Weights file or open_clip tag."),
    templates: str = typer.Option("simple", "--templates", help="single, simple, openai or a template file."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="YAML/JSON: class -> description."),
    class_names_file: Optional[Path] = typer.Option(None, "--class-names-file", help="Teacher output names, one a line."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate at most N images (stratified)."),
    split: str = typer.Option("all", "--split", help="all images, or the val/test split a training run carves."),
    seed: int = typer.Option(0, "--seed", help="Split seed (with --split val/test, as in training)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction"),
    test_fraction: float = typer.Option(0.1, "--test-fraction"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Default: $DISTILL_CACHE_DIR or ~/.cache/distill."),
    use_cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse/store teacher outputs on disk."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Report a teacher's top-1 and mean per-class accuracy on a labeled directory."""
    setup_logging()
    import torch
    from pydantic import ValidationError

    from ..errors import ConfigError, DataError
    from ..teachers import TeacherConfig, create_teacher, teacher_logits_for

    try:
        tcfg = TeacherConfig(kind=teacher_kind, name=teacher, weights=teacher_weights, templates=templates,  # type: ignore[arg-type]
                             descriptions=descriptions, class_names_file=class_names_file, device=device,
                             batch_size=batch_size)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"invalid teacher option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    root, names, samples, skipped = _load_samples(data, subdir, split, limit, seed, val_fraction, test_fraction, cache_dir)
    if not samples:
        raise DataError(f"no readable images to evaluate in {root}")
    model = create_teacher(tcfg, names)
    logits, info = teacher_logits_for(model, samples, cache_dir, batch_size, device, use_cache)
    labels = torch.tensor([s.label for s in samples])
    correct = logits.argmax(1) == labels
    per_class = {}
    for c, name in enumerate(names):
        mask = labels == c
        n = int(mask.sum())
        per_class[name] = {"n": n, "acc": float(correct[mask].float().mean()) if n else None}
    accs = [v["acc"] for v in per_class.values() if v["acc"] is not None]
    report: dict[str, Any] = {
        "data": str(data), "root": str(root), "split": split, "images": len(samples), "skipped": len(skipped),
        "teacher": model.describe(), "top1": float(correct.float().mean()),
        "mean_per_class": float(sum(accs) / len(accs)), "per_class": per_class, "cache": info.as_dict(),
    }
    if model.kind == "cifar_resnet":
        report["note"] = ("the shared CIFAR ResNets were trained on the CIFAR-10 training images: accuracy on "
                          "(splits of) them is optimistic (about 83% on unseen JPEGs)")
    _print_table(report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))


def _print_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"teacher {report['teacher']['name']} on {Path(report['data']).name} ({report['split']})")
    t.add_column("class")
    t.add_column("images", justify="right")
    t.add_column("accuracy", justify="right")
    for name, v in report["per_class"].items():
        t.add_row(name, str(v["n"]), "-" if v["acc"] is None else f"{100 * v['acc']:.2f}%")
    t.add_section()
    t.add_row("top-1", str(report["images"]), f"{100 * report['top1']:.2f}%")
    t.add_row("mean per-class", "", f"{100 * report['mean_per_class']:.2f}%")
    console.print(t)
    cache = report["cache"]
    console.print(f"skipped images: {report['skipped']}; teacher cache: "
                  f"{'used' if cache['used_cache'] else 'off'} ({cache['hits']} hits, {cache['computed']} computed)")
    if "note" in report:
        console.print(f"[yellow]note:[/] {report['note']}")


def register(app: typer.Typer) -> None:
    app.command("teacher-eval")(teacher_eval)
