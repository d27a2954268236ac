"""WebDataset-style image shards: write them from an ImageFolder, stream them as an ``IterableDataset``.

Layout (readable by the ``webdataset`` library too): ``shard-000000.tar``, ``shard-000001.tar``, ... each holding,
per image, adjacent members ``<key>.<ext>`` (the original image bytes, unchanged, so an image's content digest is
the same in the folder and in the shard), ``<key>.cls`` (the class index as text; absent for unlabeled images)
and ``<key>.json`` (``{"path": relative source path, "class": name}``). ``shards.json`` beside them records the
class names, the shards and their image counts.

Streaming: :class:`ShardDataset` splits the shard list across distributed ranks and DataLoader workers (global
worker ``rank * workers + worker`` takes every ``world_size * workers``-th shard of a per-epoch seeded shard
order), decodes each image with a transform and yields ``(image, label, digest)``; ``digest`` is the sha256 of
the image bytes, the key of the teacher-output store (:mod:`distill.scale.teacher_store`). :class:`ShardStream` is
the endless, resumable variant that ``distill train`` reads its unlabeled pool from (``data.unlabeled_shards``).
"""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
import logging
import os
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from torch.utils.data import IterableDataset

from ..errors import DataError
from ..io import atomic_path, atomic_write_json
from .archive import IMAGE_EXTENSIONS
from .scan import Sample

log = logging.getLogger(__name__)

SHARD_NAME = "shard-{:06d}.tar"
INDEX_NAME = "shards.json"
_FORMAT = 1
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


@dataclass(frozen=True)
class ShardRecord:
    """One image of a shard: its key, raw bytes, extension, label (-1 = none) and content sha256."""

    key: str
    data: bytes
    ext: str
    label: int
    meta: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# ---------------------------------------------------------------------------------------------- writing


def _add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # deterministic: same images -> same bytes
    tf.addfile(info, io.BytesIO(data))


def write_shards(
    samples: Sequence[Sample],
    out_dir: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    root: str | Path | None = None,
    shard_size: int = 1000,
    shuffle: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``samples`` into ``out_dir/shard-NNNNNN.tar`` (``shard_size`` images each) and ``shards.json``.

    Streaming readers only shuffle within a buffer, so the samples are shuffled once here (seeded) unless
    ``shuffle`` is False. Every shard is written atomically; an existing ``shards.json`` is an error (shards of
    two runs must not mix). Returns the index written to ``shards.json``.
    """
    if shard_size <= 0:
        raise DataError(f"shard size must be positive, got {shard_size}")
    if not samples:
        raise DataError("no images to write into shards")
    out = Path(out_dir)
    if (out / INDEX_NAME).exists():
        raise DataError(f"{out} already holds shards ({INDEX_NAME}); choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    order = list(samples)
    if shuffle:
        random.Random(seed).shuffle(order)
    names = list(class_names or [])
    shards: list[dict[str, Any]] = []
    for s_idx, start in enumerate(range(0, len(order), shard_size)):
        chunk = order[start:start + shard_size]
        path = out / SHARD_NAME.format(s_idx)
        with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i, s in enumerate(chunk):
                key = f"{start + i:09d}"
                ext = s.path.suffix.lower().lstrip(".") or "jpg"
                meta: dict[str, Any] = {"path": _rel(s.path, root)}
                if s.label >= 0:
                    _add_member(tf, f"{key}.cls", str(s.label).encode())
                    if names:
                        meta["class"] = names[s.label]
                _add_member(tf, f"{key}.{ext}", Path(s.path).read_bytes())
                _add_member(tf, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        shards.append({"name": path.name, "count": len(chunk)})
    index = {"format": _FORMAT, "class_names": names, "num_images": len(order), "shard_size": shard_size,
             "shuffled": shuffle, "seed": seed, "shards": shards}
    atomic_write_json(out / INDEX_NAME, index)
    return index


def _rel(path: Path, root: str | Path | None) -> str:
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return Path(path).name


# ---------------------------------------------------------------------------------------------- finding shards


def expand_braces(pattern: str) -> list[str]:
    """``shard-{000000..000009}.tar`` -> the ten names (WebDataset's brace notation, zero padding kept)."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out: list[str] = []
    for i in range(int(lo), int(hi) + 1):
        out.extend(expand_braces(pattern[:m.start()] + str(i).zfill(width) + pattern[m.end():]))
    return out


def resolve_shards(spec: str | Path) -> list[Path]:
    """Shard files from a directory (its ``*.tar``), one ``.tar`` file, a glob or a brace pattern; sorted."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith((".tar", ".tar.gz", ".tgz"))
                       and not p.name.startswith("."))
        if not files:
            raise DataError(f"no .tar shards in {path}")
        return files
    if path.is_file():
        return [path]
    names = [n for pat in expand_braces(text) for n in (sorted(glob.glob(os.path.expanduser(pat)))
                                                         if glob.has_magic(pat) else [pat])]
    missing = [n for n in names if not Path(n).is_file()]
    if not names or (missing and len(missing) == len(names)):
        raise DataError(f"no shards found for {text}")
    if missing:
        raise DataError(f"{len(missing)} of {len(names)} shards of {text} are missing (first: {missing[0]})")
    return [Path(n) for n in names]


def read_shard_index(shards: Sequence[Path]) -> dict[str, Any] | None:
    """The ``shards.json`` next to the first shard, if there is one."""
    if not shards:
        return None
    p = Path(shards[0]).parent / INDEX_NAME
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- reading


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset rule: the key is the path up to the first dot of the file name; the rest is the extension."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def iter_shard(path: str | Path) -> Iterator[ShardRecord]:
    """Records of one shard, streamed (members of a sample must be adjacent, as in WebDataset)."""
    image_exts = {e.lstrip(".") for e in IMAGE_EXTENSIONS}

    def emit(key: str, parts: dict[str, bytes]) -> ShardRecord | None:
        img_ext = next((e for e in parts if e in image_exts), None)
        if img_ext is None:
            log.warning("shard %s: sample %s has no image member; skipped", path, key)
            return None
        label = -1
        if "cls" in parts:
            try:
                label = int(parts["cls"].decode().strip())
            except ValueError:
                log.warning("shard %s: sample %s has a bad .cls; treated as unlabeled", path, key)
        meta: dict[str, Any] = {}
        if "json" in parts:
            try:
                meta = json.loads(parts["json"])
            except ValueError:
                pass
        return ShardRecord(key, parts[img_ext], img_ext, label, meta)

    key: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                k, ext = _split_key(m.name)
                if k != key:
                    if key is not None and (rec := emit(key, parts)) is not None:
                        yield rec
                    key, parts = k, {}
                f = tf.extractfile(m)
                parts[ext] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read shard {path}: {e}") from None
    if key is not None and (rec := emit(key, parts)) is not None:
        yield rec


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): explicit values, else the initialised process group, else torchrun's env, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch-free install
        pass
    from ..scale.distributed import launch_env

    env = launch_env(rank, world_size)
    return env.rank, env.world_size


def shards_for(shards: Sequence[Path], rank: int, world_size: int, worker: int = 0, num_workers: int = 1,
               seed: int = 0, epoch: int = 0, shuffle: bool = True) -> list[Path]:
    """The shards global worker ``rank * num_workers + worker`` reads in ``epoch`` (disjoint, covering all)."""
    order = list(shards)
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)  # same order on every rank and worker
    total = world_size * num_workers
    return order[rank * num_workers + worker::total]


class ShardDataset(IterableDataset):
    """Stream ``(transform(image), label, digest)`` from shards, split across ranks and DataLoader workers.

    ``rank``/``world_size`` default to the process group (or torchrun's ``RANK``/``WORLD_SIZE``). Give the
    loader ``batch_size`` and ``num_workers`` as usual; call :meth:`set_epoch` before each pass for a new shard
    order. With ``shuffle_buffer > 0`` samples are shuffled within a buffer of that many images. Images that
    do not decode are skipped with a warning. When the shard count is not a multiple of ``world_size *
    num_workers`` ranks see different numbers of images per pass: for DDP, loop over a fixed number of steps.
    """

    def __init__(self, shards: str | Path | Sequence[str | Path], transform: Callable[[bytes], Any], *,
                 shuffle: bool = True, shuffle_buffer: int = 0, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        super().__init__()
        self.shards = resolve_shards(shards) if isinstance(shards, (str, Path)) else [Path(s) for s in shards]
        if not self.shards:
            raise DataError("ShardDataset needs at least one shard")
        self.transform = transform
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        index = read_shard_index(self.shards)
        self.class_names: list[str] = list(index.get("class_names", [])) if index else []
        counts = {s["name"]: s["count"] for s in index.get("shards", [])} if index else {}
        self.num_images: int | None = (sum(counts.get(p.name, 0) for p in self.shards)
                                       if counts and all(p.name in counts for p in self.shards) else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self) -> list[Path]:
        from torch.utils.data import get_worker_info

        rank, world = dist_info(self.rank, self.world_size)
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if len(self.shards) < world * workers and worker == 0 and rank == 0:
            log.warning("%d shards for %d ranks x %d workers: some readers get no shard", len(self.shards), world,
                        workers)
        return shards_for(self.shards, rank, world, worker, workers, self.seed, self.epoch, self.shuffle)

    def _records(self) -> Iterator[ShardRecord]:
        for shard in self.my_shards():
            yield from iter_shard(shard)

    def __iter__(self) -> Iterator[tuple[Any, int, str]]:
        from ..preprocess import ImageDecodeError, ImageTooLargeError

        records: Iterator[ShardRecord] = self._records()
        if self.shuffle_buffer > 0:
            rank, _ = dist_info(self.rank, self.world_size)
            records = _buffer_shuffle(records, self.shuffle_buffer,
                                      random.Random(f"{self.seed}-{self.epoch}-{rank}-{_worker_id()}"))
        for rec in records:
            try:
                x = self.transform(rec.data)
            except (ImageDecodeError, ImageTooLargeError) as e:
                log.warning("skipping unreadable image %s in shards: %s", rec.meta.get("path", rec.key), e)
                continue
            yield x, rec.label, rec.digest


class ShardStream(IterableDataset):
    """The training loop's unlabeled pool: an endless, resumable stream of ``(image, digest, "shard:key")``.

    Reader ``rank * num_workers + role`` reads, in its own epoch ``e``, the shards :func:`shards_for` gives it for
    ``e`` (through a shuffle buffer seeded by seed, epoch and reader), then its epoch ``e + 1``, and so on: it never
    ends, so no rank of a fixed-step DDP loop waits on an exhausted one. Batch ``k`` of a DataLoader over it comes
    from worker ``k % num_workers``, so a loader started at global step ``start_step`` gives worker ``w`` the role
    ``(w + start_step) % num_workers`` and skips the ``batch_size`` items of every batch that role served before
    ``start_step``: whole epochs and (without a buffer) whole shards by the counts in ``shards.json``, without
    reading them; the rest by reading, not decoding. Every image's augmentation is seeded by (seed, reader, epoch,
    position). So a run resumed on the same number of ranks and workers continues with exactly the batches the
    uninterrupted run would have drawn, as long as every image in the shards decodes (an undecodable one is
    skipped with a warning and shifts its reader by one image after a resume). On another layout each reader
    resumes where it would be had the run used that layout from the start.
    """

    def __init__(self, shards: str | Path | Sequence[str | Path], transform: Callable[[bytes], Any], *,
                 batch_size: int, start_step: int = 0, seed: int = 0, shuffle_buffer: int = 0, num_workers: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self.shards = resolve_shards(shards) if isinstance(shards, (str, Path)) else [Path(s) for s in shards]
        index = read_shard_index(self.shards) or {}
        self.counts = {s["name"]: int(s["count"]) for s in index.get("shards", [])}
        missing = [p.name for p in self.shards if self.counts.get(p.name, 0) <= 0]
        if missing:
            raise DataError(f"shard {missing[0]} has no image count in {INDEX_NAME} beside it: a streamed pool needs "
                            "the counts (to size an epoch and to resume); write the shards with distill make-shards")
        self.rank, self.world_size = dist_info(rank, world_size)
        self.workers = max(1, num_workers)
        if len(self.shards) < self.world_size * self.workers:
            raise DataError(f"{len(self.shards)} shards cannot feed {self.world_size} ranks x {self.workers} workers: "
                            "every reader needs a shard (write smaller shards or use fewer --num-workers)")
        self.transform, self.batch_size, self.start_step = transform, batch_size, start_step
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.num_images = sum(self.counts[p.name] for p in self.shards)

    def __iter__(self) -> Iterator[tuple[Any, str, str]]:
        role = (_worker_id() + self.start_step) % self.workers
        served = max(0, -(-(self.start_step - role) // self.workers))  # batches this role gave before start_step
        skip, epoch = served * self.batch_size, 0
        while True:
            shards = shards_for(self.shards, self.rank, self.world_size, role, self.workers, self.seed, epoch)
            size = sum(self.counts[p.name] for p in shards)
            if skip < size:
                yield from self._epoch(shards, epoch, self.rank * self.workers + role, skip)
                skip = 0
            else:  # an epoch this reader finished before the resume: skipped by its count, not read
                skip -= size
            epoch += 1

    def _epoch(self, shards: list[Path], epoch: int, reader: int, skip: int) -> Iterator[tuple[Any, str, str]]:
        import torch

        from ..preprocess import ImageDecodeError, ImageTooLargeError

        start = skip
        while not self.shuffle_buffer and shards and self.counts[shards[0].name] <= skip:
            skip -= self.counts[shards[0].name]  # a whole shard already consumed: not read
            shards = shards[1:]
        records: Iterator[tuple[Path, ShardRecord]] = ((p, rec) for p in shards for rec in iter_shard(p))
        if self.shuffle_buffer:
            records = _buffer_shuffle(records, self.shuffle_buffer, random.Random(f"{self.seed}-{epoch}-{reader}"))
        for pos, (shard, rec) in enumerate(itertools.islice(records, skip, None), start=start):
            state = torch.get_rng_state()
            torch.manual_seed(int.from_bytes(hashlib.sha256(f"{self.seed}-{reader}-{epoch}-{pos}".encode()).digest()[:8],
                                             "little"))
            try:
                x = self.transform(rec.data)
            except (ImageDecodeError, ImageTooLargeError) as e:
                log.warning("skipping unreadable image %s:%s: %s", shard.name, rec.key, e)
                continue
            finally:
                torch.set_rng_state(state)
            yield x, rec.digest, f"{shard.name}:{rec.key}"


def _worker_id() -> int:
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return info.id if info is not None else 0


def _buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        buf[j], item = item, buf[j]
        yield item
    rng.shuffle(buf)
    yield from buf


__all__ = ["INDEX_NAME", "SHARD_NAME", "ShardDataset", "ShardRecord", "ShardStream", "dist_info", "expand_braces", "iter_shard",
           "read_shard_index", "resolve_shards", "shards_for", "write_shards"]
