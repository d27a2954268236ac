"""Loaders for the two training streams and for evaluation.

DHO draws each step half labeled, half unlabeled (e.g. 64 + 64). The training loop builds two infinite
loaders and pulls one batch from each per step::

    lab = infinite_loader(ImageDataset(splits.labeled, train_tf), 64, seed=seed, start_batch=step)
    unl = infinite_loader(ImageDataset(splits.unlabeled, train_tf), 64, seed=seed + 1, start_batch=step)
    t_lab = teacher_logits_for(teacher, splits.labeled, ...)[0]     # (N_l, C), row i = sample i
    t_unl = teacher_logits_for(teacher, splits.unlabeled, ...)[0]
    for step, ((xl, yl, il), (xu, _, iu)) in enumerate(zip(lab, unl), start=step):
        kd_targets_l, kd_targets_u = t_lab[il], t_unl[iu]

The index order is a seeded reshuffle per pass (pass ``p`` uses ``seed + p``), so ``start_batch`` resumes the
exact same index sequence after a restart; augmentation randomness is seeded per worker from ``seed``.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class InfiniteSampler(Sampler[int]):
    """Endless indices: a fresh seeded permutation for every pass; ``start`` skips already-consumed indices."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, start: int = 0) -> None:
        if size <= 0:
            raise ValueError("InfiniteSampler needs a non-empty dataset")
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.start = start

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.size)
        while True:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + epoch)
                order = torch.randperm(self.size, generator=g).tolist()
            else:
                order = list(range(self.size))
            yield from order[offset:]
            offset = 0
            epoch += 1


def infinite_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    start_batch: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader that never ends (iterate it with ``iter``/``zip``); batches may span passes."""
    sampler = InfiniteSampler(len(dataset), seed=seed, start=start_batch * batch_size)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def eval_loader(dataset: Dataset, batch_size: int, *, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Sequential, un-shuffled batches (validation, test, teacher passes)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)
