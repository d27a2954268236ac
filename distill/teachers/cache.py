"""Teacher outputs for un-augmented images, computed once and cached on disk.

Layout: ``cache_dir/teacher_outputs/<teacher identity>/<output>.npz`` holding ``digests`` (image-content sha256,
one per row) and ``values`` (float32 rows); ``<output>`` is ``logits`` or ``embeddings``. A store is rewritten
atomically (merged with what another process may have added meanwhile), so a killed run never leaves a broken
cache and a second run, or every later epoch, skips the teacher for images it has seen.

Concurrent runs share the work: computing missing rows happens under an exclusive lock on ``<output>.npz.lock``
(:func:`distill.io.file_lock`; released by the OS if the holder dies), and a run that had to wait re-reads the
store first, so two runs started side by side compute the teacher's outputs once and the second one reuses them
(``CacheInfo.waited_s`` says how long it waited).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.config import default_cache_dir
from ..data.scan import Sample
from ..io import atomic_path, atomic_write_json, file_lock, sha256_file
from .base import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheInfo:
    """How a teacher pass was served: ``hits`` rows from the cache, ``computed`` images run through the teacher."""

    used_cache: bool
    hits: int
    computed: int
    path: Path | None
    waited_s: float = 0.0  # for another run computing the same outputs (the lock)

    def as_dict(self) -> dict[str, object]:
        return {"used_cache": self.used_cache, "hits": self.hits, "computed": self.computed,
                "path": None if self.path is None else str(self.path), "waited_s": self.waited_s}


def store_path(teacher: Teacher, output: str, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()).expanduser() / "teacher_outputs" / teacher.identity[:32] / f"{output}.npz"


def _load_store(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["digests"], z["values"]
    except (OSError, ValueError, KeyError):
        return np.zeros((0,), "S64"), np.zeros((0, 0), np.float32)


def _save_store(path: Path, digests: np.ndarray, values: np.ndarray, teacher: Teacher) -> None:
    old_d, old_v = _load_store(path)  # merge with rows another process may have written meanwhile
    if len(old_d) and old_v.shape[1:] == values.shape[1:]:
        fresh = ~np.isin(old_d, digests)
        digests, values = np.concatenate([digests, old_d[fresh]]), np.concatenate([values, old_v[fresh]])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, digests=digests, values=values.astype(np.float32))
    meta = path.parent / "teacher.json"
    if not meta.exists():
        atomic_write_json(meta, teacher.describe())


def _run(
    teacher: Teacher, fn: Callable[[torch.Tensor], torch.Tensor], samples: Sequence[Sample], batch_size: int,
    device: torch.device, num_workers: int, progress: bool, what: str,
) -> np.ndarray:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..cli_base import console
    from ..data.dataset import ImageDataset
    from ..data.loader import eval_loader
    from ..data.transforms import EvalTransform

    loader = eval_loader(ImageDataset(samples, EvalTransform(teacher.preprocess)), batch_size,
                         num_workers=num_workers, pin_memory=device.type == "cuda")
    teacher.to(device).eval()
    outs: list[np.ndarray] = []
    start, done = time.perf_counter(), 0
    with _pass_threads(device), Progress(TextColumn(f"teacher {what}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[ips]} img/s"), TimeRemainingColumn(),
                  console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task(what, total=len(samples), ips="-")
        for x, _, _ in loader:
            outs.append(fn(x.to(device, non_blocking=True)).float().cpu().numpy())
            done += len(x)
            bar.update(task, advance=len(x), ips=f"{done / max(time.perf_counter() - start, 1e-9):.0f}")
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


@contextlib.contextmanager
def _pass_threads(device: torch.device):  # -> Iterator[None]
    """Every usable CPU for a CPU teacher pass, then the run's own thread count again.

    A run may train with one thread (two runs side by side), but the teacher pass runs under the store's lock,
    alone: at one thread, the 40,000-image CIFAR-10 pass of a ResNet-56 took minutes longer than it must."""
    if device.type != "cpu":
        yield
        return
    from ..cpus import usable_cpus

    before = torch.get_num_threads()
    torch.set_num_threads(max(before, usable_cpus()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _outputs_for(
    teacher: Teacher, samples: Sequence[Sample], output: str, fn: Callable[[torch.Tensor], torch.Tensor],
    cache_dir: str | Path | None, batch_size: int, device: str | torch.device, use_cache: bool,
    num_workers: int, progress: bool,
) -> tuple[torch.Tensor, CacheInfo]:
    from ._device import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    digests = np.array([(s.digest or sha256_file(s.path)).encode() for s in samples], dtype="S64")
    path = store_path(teacher, output, cache_dir) if use_cache else None
    cached_d, cached_v, hit_rows, todo = _lookup(path, digests)
    new_v, waited = None, 0.0
    if todo:
        with _store_lock(path) as waited:
            if waited >= 0.05:  # not for the other run's brief re-read of a store it found complete
                log.warning("teacher outputs lock acquired after %.1f s", waited)
            if path is not None:  # another run may have computed them while this one waited for the lock
                cached_d, cached_v, hit_rows, todo = _lookup(path, digests)
            new_v = _run(teacher, fn, [samples[i] for i in todo.values()], batch_size, dev, num_workers, progress,
                         output) if todo else None
            if path is not None and new_v is not None and len(todo):
                _save_store(path, np.array(list(todo), dtype="S64"), new_v, teacher)
    new_row = {d: k for k, d in enumerate(todo)}
    dim = new_v.shape[1] if new_v is not None else (cached_v.shape[1] if cached_v is not None and cached_v.ndim == 2 else 0)
    out = np.zeros((len(samples), dim), np.float32)
    for i, (d, r) in enumerate(zip(digests.tolist(), hit_rows)):
        out[i] = cached_v[r] if r is not None else new_v[new_row[d]]  # type: ignore[index]
    hits = sum(r is not None for r in hit_rows)
    return torch.from_numpy(out), CacheInfo(used_cache=use_cache, hits=hits, computed=len(todo), path=path,
                                            waited_s=waited)


def _lookup(path: Path | None, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, list[int | None],
                                                            dict[bytes, int]]:
    """(stored digests, stored values, store row per sample or None, first sample index per missing digest)."""
    cached_d, cached_v = _load_store(path) if path is not None else (np.zeros((0,), "S64"), None)
    row_of = {d: i for i, d in enumerate(cached_d.tolist())}
    hit_rows = [row_of.get(d) for d in digests.tolist()]
    todo: dict[bytes, int] = {}
    for i, (d, r) in enumerate(zip(digests.tolist(), hit_rows)):
        if r is None and d not in todo:
            todo[d] = i
    return cached_d, cached_v, hit_rows, todo


def _store_lock(path: Path | None) -> Any:
    """The inter-process lock for computing a store's missing rows (:func:`distill.io.file_lock`; no store, no lock)."""
    if path is None:
        return contextlib.nullcontext(0.0)
    lock = path.with_name(path.name + ".lock")
    return file_lock(lock, on_wait=lambda: log.warning("another run is computing these teacher outputs (%s): "
                                                       "waiting to reuse them", lock))


def teacher_logits_for(
    teacher: Teacher, samples: Sequence[Sample], cache_dir: str | Path | None = None, batch_size: int = 256,
    device: str | torch.device = "auto", use_cache: bool = True, *, num_workers: int = 0, progress: bool = True,
) -> tuple[torch.Tensor, CacheInfo]:
    """Teacher logits (N, C) float32 for un-augmented ``samples`` (row i = ``samples[i]``), cached on disk."""
    return _outputs_for(teacher, samples, "logits", teacher.logits, cache_dir, batch_size, device, use_cache,
                        num_workers, progress)


def teacher_embeddings_for(
    teacher: Teacher, samples: Sequence[Sample], cache_dir: str | Path | None = None, batch_size: int = 256,
    device: str | torch.device = "auto", use_cache: bool = True, *, num_workers: int = 0, progress: bool = True,
) -> tuple[torch.Tensor, CacheInfo]:
    """Teacher image embeddings (N, D) float32 (CLIP: normalised; classifiers: penultimate), cached like logits."""
    return _outputs_for(teacher, samples, "embeddings", teacher.image_embeddings, cache_dir, batch_size, device,
                        use_cache, num_workers, progress)
