"""Listing ImageFolders (with the folder rule of :mod:`distill.data.archive`) and verifying that every image
decodes, once.

Verification reads and fully decodes each file through :func:`distill.preprocess.load_image`; its result
(content sha256, or the reason it failed) is cached per root in ``cache_dir/scans/`` keyed by each file's
relative path, size and mtime, so a 50,000-image folder is verified once and a changed file is re-checked.
Unreadable images are skipped, logged and returned as :class:`SkippedImage` for the run summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DataError
from ..io import atomic_write_json
from ..preprocess import ImageDecodeError, ImageTooLargeError, load_image
from .archive import find_images, list_class_folders, require_images

log = logging.getLogger(__name__)
_SCAN_FORMAT = 1
_MAX_LOGGED = 10


@dataclass(frozen=True)
class Sample:
    """One image: its path, class index (``-1`` = unlabeled) and content sha256 (``None`` if not verified)."""

    path: Path
    label: int
    digest: str | None = None


@dataclass(frozen=True)
class SkippedImage:
    path: Path
    reason: str


def list_image_folder(root: Path, class_names: Sequence[str] | None = None) -> tuple[list[str], list[Sample]]:
    """All images of an ImageFolder (unverified), labels by sorted class folder; an empty class is an error."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    names = list(class_names) if class_names is not None else list_class_folders(root)
    if not names:
        raise DataError(f"no class folders in {root} (expected root/<class>/<image>)")
    samples: list[Sample] = []
    for label, name in enumerate(names):
        files = find_images(root / name)
        if not files:
            raise DataError(f"class {name!r} has no images in {root / name}")
        samples.extend(Sample(p, label) for p in files)
    return names, samples


def list_unlabeled_folder(root: Path) -> list[Sample]:
    """Every image below ``root`` in any layout, with label -1."""
    return [Sample(p, -1) for p in require_images(root, DataError, "unlabeled image folder")]


def _check_one(path: Path) -> tuple[str | None, str | None]:
    """(sha256, None) when the file decodes, (None, reason) when it does not."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    try:
        load_image(data)
    except (ImageDecodeError, ImageTooLargeError) as e:
        return None, str(e).splitlines()[0][:200]
    return hashlib.sha256(data).hexdigest(), None


def _cache_file(cache_dir: Path, root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir / "scans" / f"{root.name}-{key}.json"


def _load_entries(path: Path) -> dict[str, list]:
    try:
        obj = json.loads(path.read_text())
        if obj.get("format") == _SCAN_FORMAT and isinstance(obj.get("entries"), dict):
            return obj["entries"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def verify_samples(
    samples: Sequence[Sample],
    root: Path,
    cache_dir: Path | None,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[list[Sample], list[SkippedImage]]:
    """Keep the samples that decode (with their content digest); skip and report the others.

    Results are cached under ``cache_dir`` (``None`` disables the cache) keyed by path relative to ``root``,
    size and mtime, so only new or changed files are decoded again.
    """
    root = Path(root)
    cache_path = _cache_file(Path(cache_dir), root) if cache_dir is not None else None
    entries = _load_entries(cache_path) if cache_path else {}
    results: dict[int, tuple[str | None, str | None]] = {}
    todo: list[tuple[int, str, os.stat_result]] = []
    for i, s in enumerate(samples):
        rel = _rel(s.path, root)
        try:
            st = s.path.stat()
        except OSError as e:
            results[i] = (None, f"unreadable: {e.strerror or e}")
            continue
        hit = entries.get(rel)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            results[i] = (hit[2], hit[3])
        else:
            todo.append((i, rel, st))
    if todo:
        paths = [samples[i].path for i, _, _ in todo]
        for (i, rel, st), res in zip(todo, _run_checks(paths, num_workers, progress)):
            results[i] = res
            entries[rel] = [st.st_size, st.st_mtime_ns, res[0], res[1]]
        if cache_path is not None:
            try:
                atomic_write_json(cache_path, {"format": _SCAN_FORMAT, "root": str(root.resolve()), "entries": entries})
            except OSError as e:  # a read-only cache must not stop training
                log.warning("cannot write scan cache %s: %s", cache_path, e)
    kept: list[Sample] = []
    skipped: list[SkippedImage] = []
    for i, s in enumerate(samples):
        digest, reason = results[i]
        if digest is None:
            skipped.append(SkippedImage(s.path, reason or "unknown error"))
        else:
            kept.append(Sample(s.path, s.label, digest))
    for sk in skipped[:_MAX_LOGGED]:
        log.warning("skipping unreadable image %s: %s", sk.path, sk.reason)
    if len(skipped) > _MAX_LOGGED:
        log.warning("skipped %d unreadable images in total", len(skipped))
    return kept, skipped


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path.resolve())


def _run_checks(paths: Sequence[Path], num_workers: int, progress: bool) -> Iterable[tuple[str | None, str | None]]:
    threads = max(1, num_workers)
    show = progress and len(paths) >= 2000
    if not show:
        if threads == 1:
            return [_check_one(p) for p in paths]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(_check_one, paths, chunksize=64))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..cli_base import console

    out: list[tuple[str | None, str | None]] = []
    with Progress(TextColumn("verifying images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("verify", total=len(paths))
        with ThreadPoolExecutor(threads) as pool:
            for res in pool.map(_check_one, paths, chunksize=64):
                out.append(res)
                bar.advance(task)
    return out
