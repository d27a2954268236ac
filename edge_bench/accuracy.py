"""Accuracy on a labeled directory (``DIR/<class name>/<image>``): top-1, per-class accuracy, confusion matrix.

Folder names are matched to the model's class names, so a directory with a subset of the classes works and a
directory of another dataset is reported as skipped (with the reason) instead of producing a wrong number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distill.data.archive import labeled_images as list_labeled
from distill.data.archive import require_images
from distill.errors import DataError


def list_images(directory: str | Path, limit: int | None = None) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted); a missing or image-less directory is an error."""
    files = require_images(directory, DataError)
    return files[:limit] if limit else files


def labeled_images(directory: str | Path, limit_per_class: int | None = None) -> list[tuple[Path, str]]:
    """``(path, class folder name)`` for every image below a class folder: the folder rule training uses
    (:func:`distill.data.archive.labeled_images`: hidden folders left out, images found recursively)."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"labeled data directory not found: {d}")
    out = list_labeled(d, limit_per_class)
    if not out:
        raise DataError(f"no labeled images found in {d} (expected {d}/<class name>/<image>)")
    return out


def checkpoint_split(spec: str) -> list[tuple[Path, str]]:
    """``CKPT[:val|:test]``: the labeled split recorded in a training checkpoint (``data.root`` + relative paths)."""
    from distill.checkpoint import load_checkpoint

    path, _, which = spec.rpartition(":") if spec.rsplit(":", 1)[-1] in ("val", "test") else (spec, "", "")
    which = which or "val"
    ckpt = load_checkpoint(path)
    data = ckpt.get("data") or {}
    items = data.get(which) or []
    if not items:
        raise DataError(f"checkpoint {path} records no {which!r} split")
    root = Path(data.get("root") or ".")
    names = ckpt["class_names"]
    out = [(root / rel, names[int(label)]) for rel, label in items]
    missing = [p for p, _ in out if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(out)} {which} images of {path} are missing under {root} "
                        f"(e.g. {missing[0]}); extract the data there or pass --data DIR")
    return out


def class_mismatch(samples: Sequence[tuple[Path, str]], class_names: Sequence[str]) -> str | None:
    """Why this labeled set cannot score this model, or None."""
    known = set(class_names)
    unknown = sorted({c for _, c in samples if c not in known})
    if unknown:
        more = f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else ""
        return f"class folders {', '.join(unknown[:3])}{more} are not among the model's {len(class_names)} classes"
    return None


OTHER_CLASS = "(another class)"


def evaluate(predict: Any, samples: Sequence[tuple[Path, str]], class_names: Sequence[str],
             batch_size: int = 64) -> dict[str, Any]:
    """``predict(paths) -> probs (N, C)``; returns top1, mean per-class accuracy, counts, and the per-class table and
    confusion matrix of :mod:`distill.report` (what ``distill eval`` reports).

    The matrix covers the classes the labeled set has (a 1000-class model scored on 10 folders gets a 10x10 table,
    not 1000x1000); predictions of any other class of the model land in one extra ``(another class)`` column.
    """
    from distill.report import confusion_matrix, per_class_accuracy

    index = {c: i for i, c in enumerate(class_names)}
    y_true = np.array([index[c] for _, c in samples])
    preds: list[np.ndarray] = []
    for i in range(0, len(samples), batch_size):
        probs = np.asarray(predict([p for p, _ in samples[i:i + batch_size]]))
        preds.append(probs.argmax(axis=1))
    y_pred = np.concatenate(preds)
    present = [int(c) for c in np.unique(y_true)]  # model order
    names = [str(class_names[c]) for c in present]
    local = {c: i for i, c in enumerate(present)}
    other = len(present)
    pred_local = [local.get(int(p), other) for p in y_pred]
    if other in pred_local:
        names.append(OTHER_CLASS)
    matrix = confusion_matrix(pred_local, [local[int(t)] for t in y_true], len(names))
    per_class = [c for c in per_class_accuracy(matrix, names) if c["images"]]
    return {
        "top1": float((y_pred == y_true).mean()),
        "mean_class_acc": float(np.mean([c["accuracy"] for c in per_class])),
        "n": int(len(samples)),
        "classes": len(per_class),
        "per_class": per_class,
        "confusion": {"classes": names, "matrix": matrix},
    }
