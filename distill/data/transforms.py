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


class ArrayTrainTransform:
    """:class:`TrainTransform` on an already decoded ``(H, W, 3)`` uint8 image, as tensors.

    It draws the same random numbers in the same order (crop box, then flip) and torch's antialiased uint8
    bilinear resize reproduces PIL's, so for the same seed it returns the same tensor as :class:`TrainTransform`
    on the JPEG (tests/distill/test_data_loading.py checks this on real images): a faster path, not a different
    augmentation. Bilinear only (the training default); other interpolations use :class:`TrainTransform`.
    """

    def __init__(self, spec: PreprocessSpec, scale: tuple[float, float] = (0.5, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True) -> None:
        if spec.interpolation != "bilinear":
            raise ValueError(f"ArrayTrainTransform reproduces bilinear resizing only, not {spec.interpolation}")
        self.spec, self.scale, self.ratio, self.hflip = spec, scale, ratio, hflip

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        from torchvision.transforms import RandomResizedCrop

        t = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W) uint8, a writable copy
        i, j, h, w = RandomResizedCrop.get_params(t, list(self.scale), list(self.ratio))  # the v2 transform's draws
        t = t[:, i:i + h, j:j + w]
        size = self.spec.size
        if (h, w) != (size, size):
            t = torch.nn.functional.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False)[0]
        if self.hflip and torch.rand(()) < 0.5:
            t = t.flip(-1)
        return torch.from_numpy(normalize_uint8(t.permute(1, 2, 0).numpy()[None], self.spec)[0])

    def __repr__(self) -> str:
        return f"ArrayTrainTransform(size={self.spec.size}, scale={self.scale}, hflip={self.hflip})"


def create_eval_transform(spec: PreprocessSpec) -> Transform:
    return EvalTransform(spec)


def create_train_transform(spec: PreprocessSpec, scale: tuple[float, float] = (0.5, 1.0), hflip: bool = True) -> Transform:
    return TrainTransform(spec, scale=scale, hflip=hflip)
