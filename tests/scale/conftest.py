"""Fixtures for the scale-out tests: shards written from the real CIFAR JPEGs and a small real teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)  # shared 2-core CI machine: oversubscribed OpenMP threads are 5x slower


@pytest.fixture(scope="session")
def shards_dir(cifar_small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 300 real CIFAR JPEGs of ``cifar_small_dir`` as 5 WebDataset-style shards (64 images each, last 44)."""
    from distill.data import list_image_folder, verify_samples
    from distill.data.shards import write_shards

    names, samples = list_image_folder(cifar_small_dir)
    samples, _ = verify_samples(samples, cifar_small_dir, tmp_path_factory.mktemp("scan"), progress=False)
    out = tmp_path_factory.mktemp("shards")
    write_shards(samples, out, names, root=cifar_small_dir, shard_size=64)
    return out
