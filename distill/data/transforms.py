"""Image -> tensor transforms. Evaluation calls the shared :func:`distill.preprocess.preprocess_image`, so the
tensors a student is validated on are bit-identical to what the exported runtime feeds it.

Transforms are picklable classes (not closures) so DataLoader workers can use them under any start method.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..preprocess import ImageSource, PreprocessSpec, load_image, normalize_uint8, preprocess_image, train_decode_side

Transform = Callable[[ImageSource], torch.Tensor]


class EvalTransform:
    """Deterministic: decode, resize, center-crop, normalise, exactly as the export runtime does."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def __call__(self, image: ImageSource) -> torch.Tensor:
        return torch.from_numpy(preprocess_image(image, self.spec))

    def __repr__(self) -> str:
        return f"EvalTransform({self.spec!r})"


class TrainTransform:
    """Random resized crop (scale 0.5-1 as in DHO) + horizontal flip, then the spec's normalisation.

    Randomness comes from torch's generator, which DataLoader seeds per worker from the loader's generator.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
    ) -> None:
        from torchvision.transforms import InterpolationMode, v2

        self.spec = spec
        self.hflip = hflip
        mode = InterpolationMode[spec.interpolation.upper()]
        self.crop = v2.RandomResizedCrop(spec.size, scale=scale, ratio=ratio, interpolation=mode, antialias=True)
        # a large JPEG is DCT-scaled only as far as the smallest random crop keeps its full resolution
        self.decode_side: int | None = train_decode_side(spec.size, scale, ratio)

    def __call__(self, image: ImageSource) -> torch.Tensor:
        img = self.crop(load_image(image, min_side=self.decode_side))
        if self.hflip and torch.rand(()) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)[None]
        return torch.from_numpy(normalize_uint8(arr, self.spec)[0])

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.spec.size}, crop={self.crop!r}, hflip={self.hflip})"


def create_eval_transform(spec: PreprocessSpec) -> Transform:
    return EvalTransform(spec)


def create_train_transform(spec: PreprocessSpec, scale: tuple[float, float] = (0.5, 1.0), hflip: bool = True) -> Transform:
    return TrainTransform(spec, scale=scale, hflip=hflip)
