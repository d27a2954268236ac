"""Compute a teacher's outputs for a whole image set, sharded across ranks, resumable, then merge one store.

The image set (a folder, an archive of one, or WebDataset-style shards) is cut into *parts*: fixed-size chunks of
the sorted file list for folders, one part per ``.tar`` shard for shards. Part ``i`` belongs to rank
``i % world_size``. A rank runs the teacher on its parts, writing ``parts/<part>.{digests,values}.npy`` and then,
atomically, the completion marker ``parts/<part>.done.json`` (holding a fingerprint of the part's inputs). A
killed or re-run job skips parts whose marker matches, so only unfinished parts are computed again.

When every part is complete, the parts are merged into the memory-mappable ``digests.npy`` (sorted) and
``values.npy`` (see :mod:`distill.scale.teacher_store`). Under ``torchrun`` rank 0 waits for the other ranks and
merges; with manual ``--rank/--world-size`` sharding, whichever rank finds every part complete merges (the merge
is atomic and idempotent, so a repeated merge is harmless).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..io import atomic_path, atomic_write_json
from .teacher_store import DIGESTS_NAME, META_NAME, STORE_FORMAT, VALUES_NAME, read_meta

log = logging.getLogger(__name__)

OUTPUTS = ("logits", "embeddings")
DTYPES = ("float32", "float16")


# ---------------------------------------------------------------------------------------------- image sets


@dataclass(frozen=True)
class Part:
    """A unit of work: ``load()`` returns image sources (paths or bytes); ``key`` fingerprints the inputs."""

    name: str
    key: str
    load: Callable[[], list[Path | bytes]]
    size_hint: int


@dataclass
class ImageSet:
    class_names: list[str]
    parts: list[Part]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(p.size_hint for p in self.parts)


def _fingerprint(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


def _paths_loader(paths: list[Path]) -> Callable[[], list[Path | bytes]]:
    return lambda: list(paths)


def folder_image_set(path: str | Path, *, part_size: int = 10_000, subdir: str | None = None,
                     class_names: Sequence[str] | None = None, limit: int | None = None,
                     cache_dir: str | Path | None = None) -> ImageSet:
    """An ImageFolder (class names from its folders) or any folder of images, or a .tar/.tar.gz of either."""
    from ..data.archive import is_image_folder, resolve_dataset_root, resolve_image_dir
    from ..data.scan import list_image_folder, list_unlabeled_folder

    if part_size <= 0:
        raise ConfigError(f"--part-size must be positive, got {part_size}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"image set not found: {p}")
    base = resolve_image_dir(p, cache_dir)
    if subdir or is_image_folder(base) or any(is_image_folder(d) for d in base.iterdir() if d.is_dir()):
        try:
            root = resolve_dataset_root(p, subdir, cache_dir)
            names, samples = list_image_folder(root)
        except DataError:
            if subdir:
                raise
            root, names, samples = base, [], list_unlabeled_folder(base)
    else:
        root, names, samples = base, [], list_unlabeled_folder(base)
    if class_names:
        names = list(class_names)
    files = sorted((s.path for s in samples), key=lambda q: q.relative_to(root).as_posix())
    if limit:
        files = files[:limit]
    parts: list[Part] = []
    for i, start in enumerate(range(0, len(files), part_size)):
        chunk = files[start:start + part_size]
        lines = []
        for f in chunk:
            st = f.stat()
            lines.append(f"{f.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}")
        parts.append(Part(f"part-{i:06d}", _fingerprint(lines), _paths_loader(chunk), len(chunk)))
    return ImageSet(names, parts, {"kind": "folder", "root": str(root), "images": len(files)})


def samples_image_set(samples: Sequence[Any], class_names: Sequence[str], *, part_size: int = 10_000,
                      source: dict[str, Any] | None = None) -> ImageSet:
    """Exactly these :class:`~distill.data.Sample` s (e.g. a run's splits), in the given order, cut into parts."""
    if part_size <= 0:
        raise ConfigError(f"part size must be positive, got {part_size}")
    paths = [Path(s.path) for s in samples]
    parts = []
    for i, start in enumerate(range(0, len(paths), part_size)):
        chunk = paths[start:start + part_size]
        lines = [f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in chunk]
        parts.append(Part(f"part-{i:06d}", _fingerprint(lines), _paths_loader(chunk), len(chunk)))
    return ImageSet(list(class_names), parts, source or {"kind": "samples", "images": len(paths)})


def _shard_loader(path: Path) -> Callable[[], list[Path | bytes]]:
    def load() -> list[Path | bytes]:
        from ..data.shards import iter_shard

        return [rec.data for rec in iter_shard(path)]

    return load


def shard_image_set(spec: str | Path, *, class_names: Sequence[str] | None = None,
                    limit: int | None = None) -> ImageSet:
    """WebDataset-style shards (directory, file, glob or ``{000000..000009}`` pattern): one part per shard."""
    from ..data.shards import read_shard_index, resolve_shards

    shards = resolve_shards(spec)
    if limit:
        shards = shards[:limit]
    index = read_shard_index(shards) or {}
    counts = {s["name"]: int(s["count"]) for s in index.get("shards", [])}
    names = list(class_names) if class_names else list(index.get("class_names") or [])
    stems = [s.name.split(".")[0] for s in shards]
    unique = len(set(stems)) == len(stems)  # shards of several folders (a glob): name parts after the folder too
    parts = []
    for s, stem in zip(shards, stems):
        st = s.stat()
        parts.append(Part(stem if unique else f"{s.parent.name}-{stem}",
                          _fingerprint([f"{s.name}|{st.st_size}|{st.st_mtime_ns}"]), _shard_loader(s),
                          counts.get(s.name, 0)))
    return ImageSet(names, parts, {"kind": "shards", "shards": [str(s) for s in shards]})


# ---------------------------------------------------------------------------------------------- ranks


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int, bool]:
    """(rank, world size, launched by torchrun); explicit values win over ``RANK``/``WORLD_SIZE``."""
    from .distributed import launch_env

    env = launch_env(rank, world_size)
    return env.rank, env.world_size, env.by_torchrun and rank is None


def default_device(name: str = "auto") -> Any:
    """``auto`` under torchrun: ``cuda:$LOCAL_RANK`` when CUDA is there (one GPU per process)."""
    import torch

    from ..teachers import resolve_device
    from .distributed import launch_env

    local = launch_env().local_rank
    if name == "auto" and torch.cuda.is_available() and local is not None:
        return torch.device("cuda", local)
    return resolve_device(name)


def default_store_path(teacher: Any, output: str, cache_dir: str | Path | None = None) -> Path:
    from ..data.config import default_cache_dir

    return Path(cache_dir or default_cache_dir()).expanduser() / "teacher_stores" / teacher.identity[:32] / output


# ---------------------------------------------------------------------------------------------- the teacher pass


class _DecodeItems:
    """Map-style dataset: source -> (preprocessed image, sha256 of its bytes, "" or why it was skipped).

    A module-level class (not a closure) so DataLoader workers can pickle it under any start method."""

    def __init__(self, sources: list[Path | bytes], spec: Any) -> None:
        self.sources, self.spec = sources, spec

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[Any, str, str]:
        import torch

        from ..preprocess import ImageDecodeError, ImageTooLargeError, preprocess_image

        src, size = self.sources[i], self.spec.size
        try:
            data = src.read_bytes() if isinstance(src, Path) else src
        except OSError as e:
            return torch.zeros(3, size, size), "", f"{src}: unreadable: {e.strerror or e}"
        digest = hashlib.sha256(data).hexdigest()
        try:
            return torch.from_numpy(preprocess_image(data, self.spec)), digest, ""
        except (ImageDecodeError, ImageTooLargeError) as e:
            where = src if isinstance(src, Path) else f"image {digest[:12]}"
            return torch.zeros(3, size, size), digest, f"{where}: {str(e).splitlines()[0][:160]}"


@dataclass
class CacheReport:
    store: Path
    output: str
    rank: int
    world_size: int
    parts_total: int
    parts_mine: int
    parts_done_before: int
    parts_computed: int
    images_computed: int = 0
    images_skipped: int = 0
    teacher_seconds: float = 0.0
    merged: bool = False
    rows: int | None = None
    waited_seconds: float = 0.0

    @property
    def images_per_s(self) -> float | None:
        return self.images_computed / self.teacher_seconds if self.teacher_seconds else None

    def as_dict(self) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        return d | {"images_per_s": self.images_per_s}


def _marker(parts_dir: Path, part: Part) -> Path:
    return parts_dir / f"{part.name}.done.json"


def part_is_done(parts_dir: Path, part: Part) -> bool:
    m = _marker(parts_dir, part)
    try:
        import json

        info = json.loads(m.read_text())
    except (OSError, ValueError):
        return False
    return info.get("key") == part.key and (parts_dir / f"{part.name}.values.npy").is_file()


def _run_part(teacher: Any, fn: Callable[[Any], Any], part: Part, parts_dir: Path, *, batch_size: int,
              device: Any, num_workers: int, amp: str, dtype: str, on_batch: Callable[[int], None]) -> tuple[int, int, float]:
    """Teacher outputs of one part -> ``parts/<part>.*``; returns (images computed, images skipped, seconds)."""
    import torch
    from torch.utils.data import DataLoader

    sources = part.load()
    loader = DataLoader(_DecodeItems(sources, teacher.preprocess),  # type: ignore[arg-type]
                        batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    digests: list[str] = []
    values: list[np.ndarray] = []
    skipped = 0
    seconds = 0.0
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if amp in ("bf16", "fp16") else torch.autocast(device.type, enabled=False))
    for x, dg, reasons in loader:
        ok = [i for i, r in enumerate(reasons) if not r]
        for r in reasons:
            if r:
                log.warning("skipping unreadable image %s", r)
        skipped += len(reasons) - len(ok)
        if ok:
            t0 = time.perf_counter()
            with torch.inference_mode(), autocast:
                out = fn(x[ok].to(device, non_blocking=True))
            values.append(out.float().cpu().numpy().astype(dtype))
            seconds += time.perf_counter() - t0
            digests.extend(dg[i] for i in ok)
        on_batch(len(reasons))
    dim = values[0].shape[1] if values else 0
    vals = np.concatenate(values) if values else np.zeros((0, dim), dtype=dtype)
    with atomic_path(parts_dir / f"{part.name}.values.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, vals)
    with atomic_path(parts_dir / f"{part.name}.digests.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.array([d.encode() for d in digests], dtype="S64"))
    atomic_write_json(_marker(parts_dir, part), {"key": part.key, "rows": len(digests), "skipped": skipped,
                                                 "teacher_seconds": seconds, "dim": dim})
    return len(digests), skipped, seconds


def _store_meta(teacher: Any, image_set: ImageSet, output: str, dtype: str) -> dict[str, Any]:
    return {"format": STORE_FORMAT, "output": output, "dtype": dtype, "class_names": list(teacher.class_names),
            "teacher": teacher.describe(), "source": image_set.source, "parts_total": len(image_set.parts),
            "parts_done": 0, "rows": 0, "dim": None, "complete": False}


def _check_meta(store: Path, want: dict[str, Any]) -> None:
    have = read_meta(store)
    if have is None:
        atomic_write_json(store / META_NAME, want)
        return
    for key in ("output", "dtype"):
        if have.get(key) != want[key]:
            raise ConfigError(f"teacher store {store} holds {key} {have.get(key)!r}, not {want[key]!r}; "
                              "choose another --out")
    if (have.get("teacher") or {}).get("identity") != want["teacher"]["identity"]:
        raise ConfigError(f"teacher store {store} was made by another teacher "
                          f"({(have.get('teacher') or {}).get('name')}, identity "
                          f"{str((have.get('teacher') or {}).get('identity'))[:12]}); choose another --out")


def merge_parts(store: Path, parts: Sequence[Part], meta: dict[str, Any], chunk: int = 65536) -> int:
    """Merge every part into sorted, de-duplicated ``digests.npy``/``values.npy``; returns the row count."""
    from numpy.lib.format import open_memmap

    parts_dir = store / "parts"
    digs = [np.load(parts_dir / f"{p.name}.digests.npy") for p in parts]
    vals = [np.load(parts_dir / f"{p.name}.values.npy", mmap_mode="r") for p in parts]
    dims = {v.shape[1] for v in vals if len(v)}
    if len(dims) > 1:
        raise DataError(f"teacher store {store}: parts disagree on the output size ({sorted(dims)})")
    dim = dims.pop() if dims else 0
    all_d = np.concatenate(digs) if digs else np.zeros((0,), "S64")
    part_id = np.concatenate([np.full(len(d), i, np.int32) for i, d in enumerate(digs)]) if digs else np.zeros(0, np.int32)
    row_id = np.concatenate([np.arange(len(d), dtype=np.int64) for d in digs]) if digs else np.zeros(0, np.int64)
    order = np.argsort(all_d, kind="stable")
    sorted_d = all_d[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = sorted_d[1:] != sorted_d[:-1]  # the same image twice (copies): keep the first
    order, sorted_d = order[keep], sorted_d[keep]
    n = len(order)
    with atomic_path(store / VALUES_NAME) as tmp:
        out = open_memmap(tmp, mode="w+", dtype=np.dtype(meta["dtype"]), shape=(n, dim))
        for start in range(0, n, chunk):
            idx = order[start:start + chunk]
            p_of, r_of = part_id[idx], row_id[idx]
            block = np.empty((len(idx), dim), dtype=out.dtype)
            for p in np.unique(p_of):
                m = p_of == p
                block[m] = vals[p][r_of[m]]
            out[start:start + len(idx)] = block
        out.flush()
        del out
    with atomic_path(store / DIGESTS_NAME) as tmp, open(tmp, "wb") as f:
        np.save(f, sorted_d)
    atomic_write_json(store / META_NAME, meta | {"rows": n, "dim": dim, "parts_done": len(parts),
                                                 "complete": True, "merged_at": time.time()})
    return n


def cache_teacher(
    teacher: Any,
    image_set: ImageSet,
    store: str | Path,
    *,
    output: str = "logits",
    dtype: str = "float32",
    batch_size: int = 256,
    device: str | Any = "auto",
    num_workers: int = 0,
    amp: str = "off",
    rank: int | None = None,
    world_size: int | None = None,
    wait: bool | None = None,
    wait_timeout: float = 7 * 24 * 3600,
    poll_seconds: float = 5.0,
    progress: bool = True,
) -> CacheReport:
    """Run this rank's parts of ``image_set`` through ``teacher`` into ``store``; merge when all are complete.

    ``wait`` (default: rank 0 under torchrun with more than one process) makes this rank wait until every part
    is complete, then merge; other ranks merge only if they happen to finish last.
    """
    if output not in OUTPUTS:
        raise ConfigError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if amp not in ("off", "bf16", "fp16"):
        raise ConfigError(f"--amp must be off, bf16 or fp16, got {amp!r}")
    if not image_set.parts:
        raise DataError("no images to run the teacher on")
    r, w, by_torchrun = rank_and_world(rank, world_size)
    wait = (r == 0 and w > 1 and by_torchrun) if wait is None else wait
    store = Path(store).expanduser()
    parts_dir = store / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    meta = _store_meta(teacher, image_set, output, dtype)
    _check_meta(store, meta)
    dev = default_device(device) if isinstance(device, str) else device
    fn = teacher.logits if output == "logits" else teacher.image_embeddings

    mine = [p for i, p in enumerate(image_set.parts) if i % w == r]
    todo = [p for p in mine if not part_is_done(parts_dir, p)]
    report = CacheReport(store, output, r, w, len(image_set.parts), len(mine), len(mine) - len(todo), len(todo))
    if todo:
        teacher.to(dev).eval()
        _run_parts(teacher, fn, todo, parts_dir, report, batch_size=batch_size, device=dev,
                   num_workers=num_workers, amp=amp, dtype=dtype, progress=progress and r == 0)

    t_wait = time.perf_counter()
    deadline = t_wait + wait_timeout
    while True:
        pending = [p for p in image_set.parts if not part_is_done(parts_dir, p)]
        if not pending or not wait or time.perf_counter() > deadline:
            break
        time.sleep(poll_seconds)
    report.waited_seconds = time.perf_counter() - t_wait
    if pending:
        if wait:
            raise DataError(f"timed out waiting for {len(pending)} parts of {store} (first: {pending[0].name})")
        log.info("rank %d done; %d parts of other ranks still pending, not merging", r, len(pending))
        return report
    current = read_meta(store) or {}
    if current.get("complete") and current.get("parts_total") == len(image_set.parts) and not todo \
            and (store / VALUES_NAME).is_file() and current.get("source") == image_set.source:
        report.rows = int(current.get("rows", 0))  # already merged and nothing new: leave it as is
        return report
    report.rows = merge_parts(store, image_set.parts, meta)
    report.merged = True
    return report


def _run_parts(teacher: Any, fn: Callable[[Any], Any], todo: list[Part], parts_dir: Path, report: CacheReport,
               **kw: Any) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..cli_base import console

    progress = kw.pop("progress")
    total = sum(p.size_hint for p in todo) or None
    with Progress(TextColumn(f"teacher {report.output} (rank {report.rank}/{report.world_size})"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True,
                  disable=not progress) as bar:
        task = bar.add_task("cache", total=total)
        for part in todo:
            n, skipped, secs = _run_part(teacher, fn, part, parts_dir, on_batch=lambda k: bar.advance(task, k), **kw)
            report.images_computed += n
            report.images_skipped += skipped
            report.teacher_seconds += secs


__all__ = ["CacheReport", "ImageSet", "OUTPUTS", "Part", "cache_teacher", "default_store_path", "folder_image_set",
           "merge_parts", "part_is_done", "rank_and_world", "samples_image_set", "shard_image_set"]
