"""A map-style dataset over :class:`~distill.data.scan.Sample` lists; items carry their index so the training
loop can look up cached teacher outputs (``teacher_logits[index]``) for the un-augmented image."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from .scan import Sample
from .transforms import Transform


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
