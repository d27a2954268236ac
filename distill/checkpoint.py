"""The checkpoint format: the contract between ``distill`` (writer) and ``export`` (reader).

A checkpoint is a plain dict of tensors and primitives, so it loads with ``torch.load(weights_only=True)``:

==============  =========================================================================================
key             meaning
==============  =========================================================================================
format          ``CHECKPOINT_FORMAT`` (int)
kind            ``"student"``
student         :class:`~distill.models.StudentSpec` as a dict (arch, num_classes, heads, ...)
model           the student's ``state_dict``
class_names     list of class names, index order
preprocess      :class:`~distill.preprocess.PreprocessSpec` as a dict (eval-time preprocessing)
method          ``dho``, ``ce``, ``kd`` or ``ce+kd``
blend           ``{"prob": {"alpha", "beta", "val_acc"}, "logit": {...}, "heads_val_acc": {...}}`` (DHO)
                or ``None`` before the blend search
teacher         ``{"kind", "name", "identity"}``
data            ``{"root", "val": [[relpath, label], ...], "test": [[relpath, label], ...]}``
config          the resolved run config (dict)
epoch, step     progress; a resumable ``last.pt`` also has ``optimizer``, ``scheduler``, ``rng``, ``scaler``
==============  =========================================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .io import atomic_path
from .models import Student, StudentSpec, student_from_spec
from .preprocess import PreprocessSpec

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "student", "model", "class_names", "preprocess", "method")


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> Path:
    """Write atomically: a run killed mid-save leaves the previous checkpoint intact."""
    ckpt = {"format": CHECKPOINT_FORMAT, "kind": "student", **ckpt}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True`` and check it is one of ours; every failure is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a directory (pass best.pt or last.pt inside it)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zips, pickles with code, random bytes all land here
        raise CheckpointError(f"checkpoint {path} {_why_unreadable(path, e)}; expected best.pt or last.pt "
                              "written by `distill train`") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise CheckpointError(f"{path} is not a distill student checkpoint (missing {', '.join(missing)})")
    if ckpt["format"] > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {ckpt['format']}; this tool reads up to {CHECKPOINT_FORMAT}")
    return ckpt


def _why_unreadable(path: Path, error: Exception) -> str:
    """What is wrong with a file torch.load refused, in words (torch's own messages are cryptic: '(101)')."""
    import zipfile

    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return f"is truncated or damaged ({size} bytes; the zip archive torch.save writes is incomplete: an " \
                   "interrupted copy or download?)"
        if "weights only" in str(error).lower():
            return "holds Python objects besides tensors (a pickled model or another tool's file), which are not " \
                   "loaded for safety"
        return "is a damaged PyTorch archive"
    if head[:1] == b"\x80":
        return "is a plain pickle, not a torch.save archive"
    return f"is not a PyTorch checkpoint (it starts with {head!r}, not a torch.save archive)"


def student_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> tuple[Student, dict[str, Any]]:
    """Rebuild the student (eval mode) and return it with the checkpoint dict."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    try:
        student = student_from_spec(StudentSpec.model_validate(ckpt["student"]))
        student.load_state_dict(ckpt["model"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint weights do not fit its student spec: {str(e).splitlines()[0][:200]}") from None
    student.eval()
    return student, ckpt


def preprocess_from_checkpoint(ckpt: dict[str, Any]) -> PreprocessSpec:
    return PreprocessSpec.model_validate(ckpt["preprocess"])
