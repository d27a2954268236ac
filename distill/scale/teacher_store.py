"""The teacher-output store: teacher logits or embeddings for a whole image set, memory-mapped by training.

Layout of a store directory (written by ``distill cache-teacher``, see :mod:`distill.scale.cache_teacher`)::

    meta.json              format, output ("logits" | "embeddings"), dim, dtype, rows, class_names, teacher
                           (its ``describe()``: kind, name, identity, preprocess), parts merged, complete
    digests.npy            (rows,) |S64, image-content sha256 (hex), SORTED, unique
    values.npy             (rows, dim) float16/float32, row i belongs to digests[i]
    parts/<part>.digests.npy, parts/<part>.values.npy, parts/<part>.done.json
                           per-part results of the ranks; ``.done.json`` is the completion marker

Both ``.npy`` files are plain NumPy arrays, opened with ``mmap_mode="r"``: every DataLoader worker and every
rank on a node shares the page cache instead of holding a copy. ``lookup`` is a vectorised binary search in
the sorted digests, so no per-image Python dictionary is built for a million-image store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError

STORE_FORMAT = 1
META_NAME = "meta.json"
DIGESTS_NAME = "digests.npy"
VALUES_NAME = "values.npy"


def as_digest_array(digests: Iterable[str | bytes]) -> np.ndarray:
    """Hex sha256 strings (or bytes) -> ``|S64`` array, the store's key dtype."""
    return np.array([d.encode() if isinstance(d, str) else bytes(d) for d in digests], dtype="S64")


@dataclass
class TeacherStore:
    """A merged store opened read-only (memory-mapped). ``values[i]`` is the teacher output for ``digests[i]``."""

    path: Path
    meta: dict[str, Any]
    digests: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.digests.shape[0])

    @property
    def output(self) -> str:
        return str(self.meta["output"])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [])

    @property
    def teacher(self) -> dict[str, Any]:
        return dict(self.meta.get("teacher") or {})

    @property
    def identity(self) -> str:
        return str(self.teacher.get("identity", ""))

    def rows(self, digests: Sequence[str | bytes] | np.ndarray, *, missing_ok: bool = False) -> np.ndarray:
        """Row of each digest (``-1`` where absent when ``missing_ok``; otherwise absence is a :class:`KeyError`)."""
        keys = digests if isinstance(digests, np.ndarray) and digests.dtype == np.dtype("S64") else as_digest_array(digests)
        if len(self) == 0:
            pos = np.full(len(keys), -1, dtype=np.int64)
        else:
            pos = np.searchsorted(self.digests, keys).astype(np.int64)
            inside = pos < len(self)
            found = np.zeros(len(keys), dtype=bool)
            found[inside] = self.digests[pos[inside]] == keys[inside]
            pos[~found] = -1
        if not missing_ok and (pos < 0).any():
            bad = keys[pos < 0]
            raise KeyError(f"{len(bad)} of {len(keys)} images are not in the teacher store {self.path} "
                           f"(first digest {bad[0].decode()}); run distill cache-teacher on them")
        return pos

    def contains(self, digests: Sequence[str | bytes] | np.ndarray) -> np.ndarray:
        return self.rows(digests, missing_ok=True) >= 0

    def lookup(self, digests: Sequence[str | bytes] | np.ndarray) -> np.ndarray:
        """(len(digests), dim) float32 teacher outputs in the order of ``digests``; unknown digests: KeyError."""
        pos = self.rows(digests)
        if len(pos) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort(pos, kind="stable")  # ascending reads are kinder to a memory map
        out = np.empty((len(pos), self.dim), dtype=np.float32)
        out[order] = self.values[pos[order]]
        return out


def read_meta(path: str | Path) -> dict[str, Any] | None:
    p = Path(path) / META_NAME
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataError(f"teacher store metadata {p} is unreadable: {e}") from None


def open_teacher_store(path: str | Path) -> TeacherStore:
    """Open a merged store read-only; a missing, unmerged or inconsistent store is a :class:`DataError`."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"teacher store not found: {root}")
    meta = read_meta(root)
    if meta is None:
        raise DataError(f"{root} is not a teacher store (no {META_NAME}); create one with distill cache-teacher")
    if meta.get("format") != STORE_FORMAT:
        raise DataError(f"teacher store {root} has format {meta.get('format')!r}, this version reads {STORE_FORMAT}")
    if not meta.get("complete"):
        done, total = meta.get("parts_done", "?"), meta.get("parts_total", "?")
        raise DataError(f"teacher store {root} is not complete ({done} of {total} parts merged); "
                        "finish it with distill cache-teacher (it resumes)")
    try:
        digests = np.load(root / DIGESTS_NAME, mmap_mode="r")
        values = np.load(root / VALUES_NAME, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"teacher store {root} is unreadable: {e}") from None
    if digests.dtype != np.dtype("S64") or values.ndim != 2 or len(digests) != len(values) \
            or len(digests) != meta.get("rows"):
        raise DataError(f"teacher store {root} is inconsistent: {len(digests)} digests, values {values.shape}, "
                        f"meta rows {meta.get('rows')} (re-run distill cache-teacher to merge it again)")
    return TeacherStore(root, meta, digests, values)


class StoreTeacher:
    """What the training loop needs from a teacher (``describe``, ``logits_for``), served from a store.

    The teacher itself is never built: a ViT-L/14 teacher costs no GPU memory and no start-up time in training.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str]) -> None:
        self.store = open_teacher_store(path)
        if self.store.output != "logits":
            raise DataError(f"teacher store {self.store.path} holds {self.store.output}, training needs logits")
        have, want = self.store.class_names, list(class_names)
        if sorted(have) != sorted(want):
            raise DataError(f"the teacher store's classes ({', '.join(have[:8])}, ... {len(have)}) do not match "
                            f"the dataset's ({', '.join(want[:8])}, ... {len(want)})")
        self._columns = None if have == want else np.array([have.index(n) for n in want])

    def describe(self) -> dict[str, Any]:
        return self.store.teacher | {"store": str(self.store.path)}

    def logits_for(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        """(N, C) float32 tensor for ``samples`` (row i = samples[i]) and a CacheInfo (all hits)."""
        import torch

        from ..io import sha256_file
        from ..teachers.cache import CacheInfo

        digests = [s.digest or sha256_file(s.path) for s in samples]
        try:
            values = self.store.lookup(digests)
        except KeyError as e:
            raise DataError(str(e.args[0])) from None
        if self._columns is not None:
            values = values[:, self._columns]
        return torch.from_numpy(np.ascontiguousarray(values)), CacheInfo(True, len(samples), 0, self.store.path)

    def logits_for_digests(self, digests: Sequence[str], names: Sequence[str] | None = None) -> Any:
        """(N, C) float32 tensor for images given by content digest (a streamed batch); ``names`` label errors."""
        import torch

        found = self.store.contains(digests)
        if not found.all():
            i = int(np.flatnonzero(~found)[0])
            raise DataError(f"image {names[i] if names else digests[i]} (sha256 {digests[i][:16]}...) is not in the "
                            f"teacher store {self.store.path} ({int((~found).sum())} of its batch of {len(digests)} "
                            "are missing): run distill cache-teacher on these shards into the store")
        values = self.store.lookup(digests)
        if self._columns is not None:
            values = values[:, self._columns]
        return torch.from_numpy(np.ascontiguousarray(values))


__all__ = ["DIGESTS_NAME", "META_NAME", "STORE_FORMAT", "StoreTeacher", "TeacherStore", "VALUES_NAME", "as_digest_array",
           "open_teacher_store", "read_meta"]
