"""The :class:`Teacher` interface every teacher kind implements.

A teacher maps images preprocessed with ``teacher.preprocess`` to logits over ``teacher.class_names`` (always in
the dataset's class order once :meth:`Teacher.align_to` ran). ``identity`` is a stable hash of everything that
changes its outputs, so cached outputs are reused exactly when they are still valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..io import sha256_file
from ..preprocess import PreprocessSpec

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime) so a 1.7 GB CLIP checkpoint is hashed once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(p)
    return _DIGESTS[key]


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line (blank lines ignored); duplicates are an error."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"class names file not found: {p}")
    names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    if not names:
        raise ConfigError(f"class names file {p} is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"class names file {p} repeats {', '.join(dup[:5])}")
    return names


def _short(names: Sequence[str], limit: int = 12) -> str:
    """Names for a one-line message (no square brackets: the CLI prints messages through rich markup)."""
    shown = ", ".join(names[:limit])
    return f"{shown}{', ...' if len(names) > limit else ''} ({len(names)} classes)"


class Teacher(nn.Module):
    """Base class: subclasses set ``kind`` and implement ``_native_logits`` (and ``image_embeddings``)."""

    kind: str = "teacher"

    def __init__(self, name: str, class_names: Sequence[str], preprocess: PreprocessSpec,
                 identity_parts: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self._native_names = list(class_names)
        self._order: list[int] | None = None
        self.preprocess = preprocess
        self._identity_parts = identity_parts

    # --- names and identity -------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Output names in output order (the dataset's order after :meth:`align_to`)."""
        if self._order is None:
            return list(self._native_names)
        return [self._native_names[i] for i in self._order]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def identity(self) -> str:
        """sha256 over kind, name, weights hash, class names (output order), prompts and preprocessing."""
        payload = {"kind": self.kind, "name": self.name, "class_names": self.class_names,
                   "preprocess": self.preprocess.model_dump(mode="json"), **self._identity_parts}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """What a checkpoint's ``teacher`` entry and a run summary record."""
        return {"kind": self.kind, "name": self.name, "identity": self.identity,
                "num_classes": self.num_classes, "preprocess": self.preprocess.model_dump(mode="json"),
                **{k: v for k, v in self._identity_parts.items() if k != "prompts"}}

    def align_to(self, dataset_class_names: Sequence[str]) -> "Teacher":
        """Make outputs follow the dataset's class order; a different set of names is a :class:`DataError`."""
        want, have = list(dataset_class_names), self._native_names
        if want == have:
            self._order = None
            return self
        if sorted(want) != sorted(have):
            raise DataError(f"class names do not match the teacher's: dataset has {_short(want)}, "
                            f"teacher has {_short(have)}")
        self._order = [have.index(n) for n in want]
        return self

    # --- outputs ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _native_logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-image feature vectors (CLIP: L2-normalised image embedding; classifiers: penultimate feature)."""
        raise NotImplementedError(f"{self.kind} teacher has no image embeddings")

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 logits in :attr:`class_names` order for ``x`` preprocessed with :attr:`preprocess`."""
        out = self._native_logits(x).float()
        if self._order is not None:
            out = out[:, torch.as_tensor(self._order, device=out.device)]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)
