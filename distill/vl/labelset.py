"""Label sets: the class-embedding matrix an embedding student classifies with, as a replaceable file (torch-free).

An exported embedding student outputs a unit embedding; its classifier is ``softmax(cos(e, E_c) / tau)`` over the
rows of a label set, shipped next to the artifact as ``<model>.labels.npz``. Replacing that file (``distill export
labels``) changes the classes without re-exporting or retraining the model.

File layout (``numpy.savez``, no pickles)::

    names       (C,)   unicode   class names, row order = class index
    embeddings  (C, D) float32   L2-normalised class embeddings
    meta        ()     unicode   JSON: {"format", "tau", "embed_dim", "teacher": {"identity", "name", "kind",
                                  "adapter", "embed_dim"}, "source": how the rows were made}

A label set fits a model when the embedding sizes match and both come from the same teacher embedding space
(``teacher.identity``, see :attr:`distill.vl.vlm.VisionLanguageTeacher.identity`); otherwise a one-line
:class:`LabelSetError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError

LABELSET_FORMAT = 1
LABELS_SUFFIX = ".labels.npz"


class LabelSetError(ConfigError):
    """A label set that is unreadable or does not fit the model."""


def labels_path_for(artifact: str | Path) -> Path:
    """``model.onnx`` -> ``model.labels.npz`` (the default place of an artifact's label set)."""
    p = Path(artifact)
    return p.with_name(p.stem + LABELS_SUFFIX) if p.suffix else p.with_name(p.name + LABELS_SUFFIX)


@dataclass
class LabelSet:
    names: list[str]
    embeddings: np.ndarray
    tau: float = 0.07
    teacher: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .classes import check_unique

        self.names = [str(n) for n in self.names]
        if not self.names:
            raise LabelSetError("a label set needs at least one class")
        check_unique(self.names, "label set")
        e = np.asarray(self.embeddings, dtype=np.float32)
        if e.ndim != 2 or e.shape[0] != len(self.names):
            raise LabelSetError(f"label set embeddings have shape {e.shape}, expected ({len(self.names)}, D)")
        if not np.isfinite(e).all():
            raise LabelSetError("label set embeddings contain NaN or infinite values")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        if (norms == 0).any():
            raise LabelSetError("label set has an all-zero class embedding")
        self.embeddings = (e / norms).astype(np.float32)
        if not (self.tau > 0):
            raise LabelSetError(f"label set tau must be > 0, got {self.tau}")

    @property
    def embed_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    # ---------------------------------------------------------------- file
    def save(self, path: str | Path) -> Path:
        from ..io import atomic_path

        meta = {"format": LABELSET_FORMAT, "tau": float(self.tau), "embed_dim": self.embed_dim,
                "num_classes": len(self.names), "teacher": self.teacher, "source": self.source}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, names=np.array(self.names, dtype=np.str_), embeddings=self.embeddings,
                     meta=np.array(json.dumps(meta, default=str)))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "LabelSet":
        p = Path(path)
        if not p.is_file():
            raise LabelSetError(f"label set not found: {p}")
        return cls._read(p, str(p))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "upload") -> "LabelSet":
        """A label set from the bytes of a ``.labels.npz`` file (e.g. an HTTP upload)."""
        import io

        return cls._read(io.BytesIO(data), source)

    @classmethod
    def _read(cls, f: Any, p: str) -> "LabelSet":
        try:
            with np.load(f, allow_pickle=False) as z:
                names, emb, meta = z["names"].tolist(), z["embeddings"], json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, EOFError, AttributeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise LabelSetError(f"{p} is not a label set (.labels.npz): {first}") from None
        if not isinstance(meta, dict) or int(meta.get("format", 0)) > LABELSET_FORMAT:
            raise LabelSetError(f"{p} has label-set format {meta.get('format') if isinstance(meta, dict) else '?'}; "
                                f"this tool reads up to {LABELSET_FORMAT}")
        return cls(names=list(names), embeddings=emb, tau=float(meta.get("tau", 0.07)),
                   teacher=dict(meta.get("teacher") or {}), source=dict(meta.get("source") or {}))

    # ---------------------------------------------------------------- use
    def check_fits(self, embed_dim: int, teacher_identity: str | None = None, what: str = "the model") -> None:
        """Raise :class:`LabelSetError` unless this label set can classify ``embed_dim``-d embeddings of
        ``teacher_identity``'s space (an unknown identity on either side is not checked)."""
        if self.embed_dim != int(embed_dim):
            raise LabelSetError(f"label set embedding size {self.embed_dim} does not match {what}'s "
                                f"embedding size {embed_dim}")
        mine = self.teacher.get("identity")
        if teacher_identity and mine and mine != teacher_identity:
            raise LabelSetError(f"label set was made with teacher {self.teacher.get('name', '?')} "
                                f"({mine[:12]}), {what} was distilled from another teacher ({teacher_identity[:12]})")

    def logits(self, emb: np.ndarray) -> np.ndarray:
        """cos(e, E_c) / tau, (N, C) float32 (``emb`` rows are normalised here)."""
        e = np.asarray(emb, dtype=np.float32)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return (e @ self.embeddings.T / self.tau).astype(np.float32)

    def probs(self, emb: np.ndarray) -> np.ndarray:
        z = self.logits(emb)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def subset(self, names: Sequence[str]) -> "LabelSet":
        idx = [self.names.index(n) for n in names]
        return LabelSet(list(names), self.embeddings[idx], self.tau, dict(self.teacher), dict(self.source))


def labelset_from_checkpoint(ckpt: dict[str, Any]) -> LabelSet:
    """The label set stored in an embedding checkpoint (all dataset classes, seen and unseen)."""
    entry = ckpt.get("embedding")
    if not isinstance(entry, dict):
        raise LabelSetError("checkpoint has no class embeddings (not a vl-distill embedding student)")
    emb = entry["class_embeddings"]
    emb = emb.detach().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb)
    return LabelSet(list(entry["class_names"]), emb, float(entry.get("tau", 0.07)), dict(entry.get("teacher") or {}),
                    {"from": "checkpoint", "seen": entry.get("seen"), "unseen": entry.get("unseen")})
