"""``distill eval``: accuracy of a checkpoint's heads and of both blends (with its stored alpha/beta)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..cli_base import console


def _samples(ckpt: dict[str, Any], data: Path | None, split: str | None, cache_dir: Path | None) -> tuple[str, list[Any], int]:
    """(description, samples, skipped): the checkpoint's stored split, or every image of a labeled folder."""
    from ..data import Sample, list_image_folder, resolve_dataset_root, verify_samples
    from ..data.config import default_cache_dir
    from ..errors import ConfigError, DataError

    cache = cache_dir or default_cache_dir()
    class_names = list(ckpt["class_names"])
    if data is not None and split is None:  # a whole labeled folder
        root = resolve_dataset_root(data, None, cache)
        names, samples = list_image_folder(root)
        if names != class_names:
            raise DataError(f"class folders of {data} do not match the checkpoint's classes "
                            f"({', '.join(names[:5])}... vs {', '.join(class_names[:5])}...)")
        kept, skipped = verify_samples(samples, root, cache)
        return f"all of {data}", kept, len(skipped)
    split = split or "val"
    if split not in ("val", "test"):
        raise ConfigError(f"--split must be val or test, got {split!r}")
    stored = (ckpt.get("data") or {}).get(split) or []
    if not stored:
        raise DataError(f"the checkpoint stores no {split} split; pass --data DIR to evaluate a labeled folder")
    if data is not None:
        subdir = ((ckpt.get("config") or {}).get("data") or {}).get("subdir")
        root = resolve_dataset_root(data, subdir, cache)
    else:
        root = Path(ckpt["data"]["root"])
    samples = [Sample(root / rel, int(label)) for rel, label in stored]
    missing = [s for s in samples if not s.path.exists()]
    if missing:
        raise DataError(f"{len(missing)} of {len(samples)} {split} images are missing under {root} "
                        f"(e.g. {missing[0].path}); pass --data with the training data")
    kept, skipped = verify_samples(samples, root, None, progress=False)
    return f"{split} split ({root})", kept, len(skipped)


def eval_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="best.pt or last.pt of a run."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labeled folder/archive: with --split, where the stored "
                                                             "split lives; alone, evaluate all of its images."),
    split: Optional[str] = typer.Option(None, "--split", help="val or test (the checkpoint's stored split)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where archives are extracted."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    confusion_png: Optional[Path] = typer.Option(None, "--confusion-png", help="Write the deployed model's confusion "
                                                                               "matrix (PNG) here."),
) -> None:
    """Accuracy of h_ce, h_kd and both blends (stored alpha/beta) of a checkpoint on a split or folder."""
    import torch

    from ..blend import accuracy, blend_scores
    from ..checkpoint import load_checkpoint, preprocess_from_checkpoint, student_from_checkpoint
    from ..train._runtime import pick_device
    from ..train.evaluate import EvalSet, head_logits

    ckpt = load_checkpoint(checkpoint)
    student, ckpt = student_from_checkpoint(ckpt)
    what, samples, skipped = _samples(ckpt, data, split, cache_dir)
    dev = pick_device(device)
    student.to(dev)
    ev = EvalSet(samples, preprocess_from_checkpoint(ckpt), batch_size)
    logits = head_logits(student, ev, dev)
    if ckpt.get("embedding") is not None:  # vl-distill: classify through the stored class embeddings (cos / tau)
        from ..vl.labelset import labelset_from_checkpoint

        labelset = labelset_from_checkpoint(ckpt)
        logits = {"embed": torch.from_numpy(labelset.logits(logits["embed"].numpy()))}
        class_names = list(labelset.names)
    else:
        class_names = [str(n) for n in ckpt["class_names"]]
    rows: list[dict[str, Any]] = [{"model": f"h_{h}", "accuracy": accuracy(v, ev.labels), "alpha": None, "beta": None}
                                  for h, v in logits.items()]
    blend = ckpt.get("blend")
    if blend and "ce" in logits and "kd" in logits:
        for kind in ("prob", "logit"):
            if kind in blend:
                a, b = float(blend[kind]["alpha"]), float(blend[kind]["beta"])
                acc = accuracy(blend_scores(kind, logits["ce"], logits["kd"], a, b), ev.labels)
                rows.append({"model": f"{kind} blend", "accuracy": acc, "alpha": a, "beta": b})
    # per class, for the model a deployment uses: the better blend (prob on ties), else the single head
    scores = {r["model"]: r for r in rows}
    blends = [r for r in rows if r["model"].endswith("blend")]
    deployed = max(blends, key=lambda r: (r["accuracy"], r["model"] == "prob blend"))["model"] if blends else rows[0]["model"]
    if deployed.endswith("blend"):
        kind = deployed.split()[0]
        dep_scores = blend_scores(kind, logits["ce"], logits["kd"], scores[deployed]["alpha"], scores[deployed]["beta"])
    else:
        dep_scores = logits[deployed.removeprefix("h_")]
    from ..report import confusion_matrix, per_class_accuracy, write_confusion_png

    if len(class_names) != dep_scores.shape[1]:  # e.g. a label set of other size: index the columns
        class_names = [str(i) for i in range(dep_scores.shape[1])]

    matrix = confusion_matrix(dep_scores.argmax(-1).tolist(), ev.labels.tolist(), len(class_names))
    per_class = per_class_accuracy(matrix, class_names)
    if confusion_png is not None:
        write_confusion_png(matrix, class_names, confusion_png, title=f"{checkpoint.name} ({deployed}) on {what}")
    report = {"checkpoint": str(checkpoint), "method": ckpt.get("method"), "evaluated": what, "images": len(ev),
              "skipped": skipped, "results": rows, "per_class": {"model": deployed, "classes": per_class,
                                                                  "confusion": matrix}, "torch": torch.__version__}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{checkpoint} on {what}: {len(ev)} images" + (f", {skipped} skipped" if skipped else ""))
    table.add_column("model")
    table.add_column("accuracy %", justify="right")
    table.add_column("alpha", justify="right")
    table.add_column("beta", justify="right")
    for r in rows:
        table.add_row(r["model"], f"{100 * r['accuracy']:.2f}",
                      "" if r["alpha"] is None else f"{r['alpha']:.2f}", "" if r["beta"] is None else f"{r['beta']:.2f}")
    console.print(table)
    pc = Table(title=f"per class ({deployed})" + (f"; confusion matrix: {confusion_png}" if confusion_png else ""))
    for col in ("class", "images", "accuracy %", "most confused with"):
        pc.add_column(col, justify="left" if col in ("class", "most confused with") else "right")
    for c in per_class:
        pc.add_row(c["class"], str(c["images"]), "-" if c["accuracy"] is None else f"{100 * c['accuracy']:.2f}",
                   c["most_confused_with"] or "")
    console.print(pc)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
