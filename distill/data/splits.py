"""Seeded, stratified splits of an ImageFolder: test, then validation, then the labeled subset, rest unlabeled.

Per class (each class shuffled with its own generator seeded by ``seed`` and the class name, so adding a class
does not reshuffle the others): ``round(n * test_fraction)`` test images, ``round(n * val_fraction)``
validation images (none when ``val_dir`` is given), then ``shots`` or ``round(n * labeled_fraction)`` labeled
images, where ``n`` is the class's full count (1% of 50,000 CIFAR images = 500 labeled). The remainder is the
unlabeled pool, labels dropped, plus every image of ``unlabeled_dir``. With ``unlabeled_shards`` the unlabeled list
stays empty: training streams the pool from the shards (:class:`distill.data.shards.ShardStream`).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .archive import resolve_dataset_root, resolve_image_dir
from .config import DataConfig
from .scan import Sample, SkippedImage, list_class_folders, list_image_folder, list_unlabeled_folder, verify_samples

SPLIT_NAMES = ("labeled", "unlabeled", "val", "test")


def _class_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _by_class(samples: Sequence[Sample], n_classes: int) -> list[list[Sample]]:
    groups: list[list[Sample]] = [[] for _ in range(n_classes)]
    for s in samples:
        groups[s.label].append(s)
    return groups


def stratified_subset(samples: Sequence[Sample], class_names: Sequence[str], max_images: int, seed: int = 0) -> list[Sample]:
    """At most ``max_images`` samples, each class keeping its share (at least one image), seeded."""
    groups = _by_class(samples, len(class_names))
    total = sum(len(g) for g in groups)
    if max_images >= total:
        return list(samples)
    out: list[Sample] = []
    for name, group in zip(class_names, groups):
        k = min(len(group), max(1, round(max_images * len(group) / total)))
        idx = _class_rng(seed, name).permutation(len(group))[:k]
        out.extend(group[i] for i in sorted(idx))
    return out


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 else 0


@dataclass
class DataSplits:
    """The four sample lists of a run plus what was skipped; ``manifest()`` goes into the run directory."""

    root: Path
    class_names: list[str]
    labeled: list[Sample]
    unlabeled: list[Sample]
    val: list[Sample]
    test: list[Sample]
    skipped: list[SkippedImage] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[Sample]:
        if name not in SPLIT_NAMES:
            raise DataError(f"unknown split {name!r}; choose from {', '.join(SPLIT_NAMES)}")
        return list(getattr(self, name))

    def counts(self) -> dict[str, int]:
        return {n: len(getattr(self, n)) for n in SPLIT_NAMES} | {"skipped": len(self.skipped)}

    def relpath(self, path: Path) -> str:
        """Path relative to ``root`` (posix); images outside it (val_dir, unlabeled_dir) stay absolute."""
        return relpath(path, self.root)

    def fingerprint(self) -> str:
        """sha256 over every split's (relative path, label, content digest): equal iff the same data split."""
        h = hashlib.sha256()
        for name in SPLIT_NAMES:
            h.update(name.encode())
            for s in getattr(self, name):
                h.update(f"{self.relpath(s.path)}\0{s.label}\0{s.digest}\n".encode())
        return h.hexdigest()

    def manifest(self) -> dict[str, Any]:
        """JSON-ready record of the split (relative paths, labels, content digests) for the run directory."""
        return {
            "format": 1,
            "root": str(self.root),
            "source": self.source,
            "class_names": list(self.class_names),
            "counts": self.counts(),
            "fingerprint": self.fingerprint(),
            "splits": {
                name: [[self.relpath(s.path), s.label, s.digest] for s in getattr(self, name)] for name in SPLIT_NAMES
            },
            "skipped": [[str(sk.path), sk.reason] for sk in self.skipped],
        }

    def as_checkpoint_data(self) -> dict[str, Any]:
        """The checkpoint's ``data`` entry: ``{"root", "val": [[relpath, label], ...], "test": [...]}``."""
        return {
            "root": str(self.root),
            "val": [[self.relpath(s.path), s.label] for s in self.val],
            "test": [[self.relpath(s.path), s.label] for s in self.test],
            "fingerprint": self.fingerprint(),
        }


def _load_val_dir(cfg: DataConfig, class_names: list[str], progress: bool) -> tuple[list[Sample], list[SkippedImage]]:
    assert cfg.val_dir is not None
    val_root = resolve_dataset_root(cfg.val_dir, cfg.val_subdir, cfg.cache_dir)
    names = list_class_folders(val_root)
    if names != class_names:
        missing = sorted(set(class_names) - set(names))
        extra = sorted(set(names) - set(class_names))
        raise DataError(
            f"val_dir classes do not match the training classes: missing {', '.join(missing) or 'none'}; "
            f"extra {', '.join(extra) or 'none'}"
        )
    _, samples = list_image_folder(val_root, class_names)
    return verify_samples(samples, val_root, cfg.cache_dir, cfg.num_workers, progress)


def build_splits(cfg: DataConfig, progress: bool = True) -> DataSplits:
    """Resolve, verify and split the data of ``cfg``; every unusable input is a one-line :class:`DataError`."""
    root = resolve_dataset_root(cfg.root, cfg.subdir, cfg.cache_dir)
    class_names, pool = list_image_folder(root)
    if cfg.max_images:
        pool = stratified_subset(pool, class_names, cfg.max_images, cfg.seed)
    kept, skipped = verify_samples(pool, root, cfg.cache_dir, cfg.num_workers, progress)
    groups = _by_class(kept, len(class_names))
    for name, group in zip(class_names, groups):
        if not group:
            raise DataError(f"class {name!r} has no readable images in {root / name}")

    val_from_dir: list[Sample] = []
    if cfg.val_dir is not None:
        val_from_dir, val_skipped = _load_val_dir(cfg, class_names, progress)
        skipped += val_skipped

    labeled: list[Sample] = []
    unlabeled: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    for name, group in zip(class_names, groups):
        n = len(group)
        n_test = _count(n, cfg.test_fraction)
        n_val = 0 if cfg.val_dir is not None else _count(n, cfg.val_fraction)
        n_lab = cfg.shots if cfg.shots is not None else round(n * cfg.labeled_fraction)
        if cfg.shots is None:  # fractions sum to <= 1 (DataConfig checks): 0.8 + 0.1 + 0.1 of 455 is rounding
            n_lab = min(n_lab, n - n_test - n_val)
        if n_lab < 1:
            raise DataError(
                f"labeled_fraction {cfg.labeled_fraction:g} gives fewer than one labeled image for class {name!r} "
                f"({n} images); raise --labeled-fraction or use --shots"
            )
        if n_test + n_val + n_lab > n:
            raise DataError(
                f"class {name!r} has {n} readable images, too few for {n_test} test + {n_val} val + {n_lab} labeled"
            )
        order = _class_rng(cfg.seed, name).permutation(n)
        picked = [group[i] for i in order]
        test += picked[:n_test]
        val += picked[n_test:n_test + n_val]
        labeled += picked[n_test + n_val:n_test + n_val + n_lab]
        if cfg.unlabeled_shards is None:  # with shards the pool is streamed from them instead
            unlabeled += [Sample(s.path, -1, s.digest) for s in picked[n_test + n_val + n_lab:]]
    if cfg.val_dir is not None:
        val = val_from_dir
    if cfg.unlabeled_dir is not None:
        extra_root = resolve_image_dir(cfg.unlabeled_dir, cfg.cache_dir)
        extra, extra_skipped = verify_samples(list_unlabeled_folder(extra_root), extra_root, cfg.cache_dir,
                                              cfg.num_workers, progress)
        unlabeled += extra
        skipped += extra_skipped

    key = lambda s: (s.label, str(s.path))  # noqa: E731 - stable order inside each split
    source = {"root": str(cfg.root), "subdir": cfg.subdir, "val_dir": _opt(cfg.val_dir), "unlabeled_dir": _opt(cfg.unlabeled_dir),
              "unlabeled_shards": cfg.unlabeled_shards,
              "seed": cfg.seed, "labeled_fraction": cfg.labeled_fraction, "shots": cfg.shots,
              "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction, "max_images": cfg.max_images}
    return DataSplits(root=root, class_names=class_names, labeled=sorted(labeled, key=key),
                      unlabeled=sorted(unlabeled, key=lambda s: str(s.path)), val=sorted(val, key=key),
                      test=sorted(test, key=key), skipped=skipped, source=source)


def _opt(p: Path | None) -> str | None:
    return None if p is None else str(p)


def relpath(path: Path, root: Path) -> str:
    """Path relative to ``root`` (posix); a path outside it stays absolute (``root / relpath`` still works)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def samples_to_json(samples: Sequence[Sample], root: Path) -> list[list[Any]]:
    """``[[relpath, label], ...]`` for any sample list."""
    return [[relpath(s.path, root), s.label] for s in samples]
