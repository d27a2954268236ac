"""Data: dataset roots (directories or tar archives), verified ImageFolder scans, seeded stratified splits,
transforms that share the export runtime's preprocessing, and loaders for the labeled/unlabeled streams.

Typical use (see :mod:`distill.data.loader` for the training streams)::

    splits = build_splits(DataConfig(root="../shared/data/cifar10-train-jpeg.tar.gz", labeled_fraction=0.01))
    val = ImageDataset(splits.val, create_eval_transform(spec))

Importing this package (e.g. for :class:`DataConfig` in a CLI module) does not import torch: the
torch-based names (datasets, transforms, loaders) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .archive import IMAGE_EXTENSIONS, extract_archive, resolve_dataset_root, resolve_image_dir
from .config import DataConfig, default_cache_dir
from .scan import Sample, SkippedImage, list_image_folder, list_unlabeled_folder, verify_samples
from .splits import SPLIT_NAMES, DataSplits, build_splits, relpath, samples_to_json, stratified_subset

_LAZY = {
    "ImageDataset": ".dataset", "ArrayImageDataset": ".dataset", "create_train_dataset": ".dataset",
    "decoded_images": ".dataset", "ArrayTrainTransform": ".transforms",
    "InfiniteSampler": ".loader", "eval_loader": ".loader", "seeded_stream": ".loader", "shard_stream": ".loader",
    "stream_seed": ".loader",
    "EvalTransform": ".transforms", "TrainTransform": ".transforms", "Transform": ".transforms",
    "create_eval_transform": ".transforms", "create_train_transform": ".transforms",
}

__all__ = [
    "ArrayImageDataset", "ArrayTrainTransform", "create_train_dataset", "decoded_images", "IMAGE_EXTENSIONS", "SPLIT_NAMES", "DataConfig", "DataSplits", "EvalTransform", "ImageDataset", "InfiniteSampler",
    "Sample", "SkippedImage", "TrainTransform", "Transform", "build_splits", "create_eval_transform",
    "create_train_transform", "default_cache_dir", "eval_loader", "extract_archive",
    "list_image_folder", "list_unlabeled_folder", "relpath", "resolve_dataset_root", "resolve_image_dir",
    "samples_to_json", "seeded_stream", "shard_stream", "stratified_subset", "stream_seed", "verify_samples",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
