"""Map-style datasets over :class:`~distill.data.scan.Sample` lists; items carry their index so the training
loop can look up cached teacher outputs (``teacher_logits[index]``) for the un-augmented image.

Small images (CIFAR's 32 px JPEGs) are decoded once into a memory-mapped ``(N, H, W, 3)`` uint8 array in the
cache (:func:`decoded_images`) and augmented as tensors (:class:`ArrayImageDataset`), instead of decoding the
same JPEG again at every step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import file_lock
from .scan import Sample
from .transforms import Transform

log = logging.getLogger(__name__)

#: Bump when the decoded array's content would change for the same images (decoder, layout).
DECODED_FORMAT = 1
#: Images larger than this (either side) are not decoded into an array: it would not fit the point of it.
MAX_DECODED_SIDE = 64


class ImageDataset(Dataset):
    """``dataset[i] -> (image_tensor, label, i)``; label is -1 for unlabeled samples."""

    def __init__(self, samples: Sequence[Sample], transform: Transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        s = self.samples[index]
        return self.transform(s.path), s.label, index

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)


class ArrayImageDataset(Dataset):
    """``dataset[i] -> (transform(images[i]), label, i)`` over decoded ``(N, H, W, 3)`` uint8 images."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: Callable[[np.ndarray], torch.Tensor]):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.transform = images, transform
        self._labels = [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.images[index]), self._labels[index], index

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self._labels, dtype=torch.long)


def decoded_key(samples: Sequence[Sample]) -> str:
    """Content key of a sample list: the images' sha256 digests in order (paths and mtimes do not matter)."""
    from ..io import sha256_file

    h = hashlib.sha256(f"decoded-v{DECODED_FORMAT}\n".encode())
    for s in samples:
        h.update((s.digest or sha256_file(s.path)).encode() + b"\n")
    return h.hexdigest()[:32]


def decoded_images(samples: Sequence[Sample], cache_dir: str | Path, max_side: int = MAX_DECODED_SIDE,
                   chunk: int = 2048, progress: Callable[[int, int], None] | None = None) -> np.ndarray | None:
    """The samples decoded (:func:`distill.preprocess.load_image`, the JPEG path's decoder) into a read-only
    memory-mapped ``(N, H, W, 3)`` uint8 array under ``cache_dir/decoded/<content key>.npy``.

    Built once: written to ``.partial`` in chunks (a killed build resumes from its last finished chunk), then
    renamed into place atomically; concurrent runs wait on a lock and reuse it. None when the images differ in
    size or are larger than ``max_side`` (such data stays on the per-image path)."""
    if not samples:
        return None
    root = Path(cache_dir) / "decoded"
    key = decoded_key(samples)
    final, partial, state, skip = (root / f"{key}{suffix}" for suffix in (".npy", ".npy.partial", ".json", ".skip"))
    if final.exists():
        return np.load(final, mmap_mode="r")
    if skip.exists():
        return None
    lock = root / f"{key}.lock"
    with file_lock(lock, on_wait=lambda: log.warning("another run is decoding these images (%s): waiting to reuse "
                                                     "them", lock)):
        if final.exists():  # another run finished it while we waited
            return np.load(final, mmap_mode="r")
        return _build(samples, final, partial, state, skip, max_side, chunk, progress)


def _build(samples: Sequence[Sample], final: Path, partial: Path, state: Path, skip: Path, max_side: int,
           chunk: int, progress: Callable[[int, int], None] | None) -> np.ndarray | None:
    from ..io import atomic_write_json, atomic_write_text
    from ..preprocess import load_image

    def decode(s: Sample) -> np.ndarray:
        return np.asarray(load_image(s.path).convert("RGB"), dtype=np.uint8)

    first = decode(samples[0])
    h, w = first.shape[:2]
    done = 0
    if partial.exists() and state.exists():
        meta = json.loads(state.read_text())
        if meta.get("shape") == [len(samples), h, w, 3]:
            done = int(meta.get("done", 0))
    if done == 0 or not partial.exists():
        if max(h, w) > max_side:
            atomic_write_text(skip, f"images of {w}x{h} px: larger than {max_side} px\n")
            return None
        arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(samples), h, w, 3))
        done = 0
    else:
        arr = np.load(partial, mmap_mode="r+")
    for lo in range(done, len(samples), chunk):
        for i in range(lo, min(lo + chunk, len(samples))):
            img = first if i == 0 else decode(samples[i])
            if img.shape != (h, w, 3):
                del arr
                partial.unlink(missing_ok=True)
                state.unlink(missing_ok=True)
                atomic_write_text(skip, f"image sizes differ: {samples[i].path} is {img.shape[1]}x{img.shape[0]}, "
                                        f"the first {w}x{h}\n")
                return None
            arr[i] = img
        arr.flush()
        atomic_write_json(state, {"shape": [len(samples), h, w, 3], "done": min(lo + chunk, len(samples))})
        if progress is not None:
            progress(min(lo + chunk, len(samples)), len(samples))
    del arr
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, final)
    state.unlink(missing_ok=True)
    return np.load(final, mmap_mode="r")


def create_train_dataset(samples: Sequence[Sample], spec: Any, cache_dir: str | Path | None, *, augment: bool = True,
                         scale: tuple[float, float] = (0.5, 1.0), hflip: bool = True) -> Dataset:
    """The training dataset of a stream: decoded once into the cache when the images are small and uniform
    (augmented as tensors, the same crops and flips as the per-image path), else decoded per item."""
    from .transforms import ArrayTrainTransform, create_eval_transform, create_train_transform

    if augment and cache_dir is not None and spec.interpolation == "bilinear":
        images = decoded_images(samples, cache_dir)
        if images is not None:
            return ArrayImageDataset(images, [s.label for s in samples],
                                     ArrayTrainTransform(spec, scale=scale, hflip=hflip))
    tf = create_train_transform(spec, scale=scale, hflip=hflip) if augment else create_eval_transform(spec)
    return ImageDataset(samples, tf)
