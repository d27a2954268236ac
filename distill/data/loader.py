"""The training streams and the evaluation loader: one home for how batches are drawn.

DHO draws each step half labeled, half unlabeled (e.g. 64 + 64). The training loop builds one endless stream per
half and pulls one batch from each per step::

    lab = seeded_stream(ImageDataset(splits.labeled, train_tf), 64, stream_seed(seed, 0), start_batch=step)
    unl = seeded_stream(ImageDataset(splits.unlabeled, train_tf), 64, stream_seed(seed, 1), start_batch=step)
    xl, yl, il = next(lab)        # il: row indices into splits.labeled (teacher logits are looked up by row)

Reproducibility: every random choice of a stream (which images, which crop, which flip) is a pure function of
(seed, stream position). The index order is a seeded reshuffle per pass (pass ``p`` uses ``seed + p``), and each
position has its own augmentation seed, so ``start_batch`` resumes exactly the batches an uninterrupted run would
draw, whatever the number of workers or processes.
"""

from __future__ import annotations

from typing import Any, Iterator

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


def stream_seed(seed: int, stream: int) -> int:
    """Seed of training stream ``stream`` (0 = labeled, 1 = unlabeled) of a run with seed ``seed``."""
    return (seed + 1) * 1_000_003_000 + stream * 500_000_000


def item_seed(stream_seed: int, position: int) -> int:
    """Augmentation seed of the item at ``position`` of a stream (independent of batches, workers, resumes)."""
    return (stream_seed * 6364136223846793005 + position * 1442695040888963407 + 1) % (2**63 - 1)


class PositionSampler(Sampler):
    """Endless ``(index, augmentation seed)`` pairs: the index order of :class:`InfiniteSampler` and a seed per
    stream position, so crops and flips do not depend on workers or on where a run resumed."""

    def __init__(self, size: int, seed: int, start: int) -> None:
        self.inner = InfiniteSampler(size, seed=seed, start=start)
        self.seed, self.start = seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, idx in enumerate(self.inner, start=self.start):
            yield idx, item_seed(self.seed, pos)


class SeededItems(Dataset):
    """Calls the wrapped dataset with torch's RNG seeded per item (and restores the caller's RNG state)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        # only the CPU generator: transforms run on the CPU, and torch.manual_seed (which also seeds every
        # accelerator) costs ~0.4 ms an item, more than decoding and augmenting a CIFAR image; same numbers drawn
        index, seed = key
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            gen.set_state(state)


def seeded_stream(dataset: Dataset, batch_size: int, seed: int, start_batch: int = 0, *, num_workers: int = 0,
                  pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
    """Endless ``(x, y, index)`` batches of ``batch_size`` (global) from position ``start_batch * batch_size``;
    with ``world_size > 1`` each rank gets its contiguous slice of every global batch."""
    sampler: Sampler = PositionSampler(len(dataset), seed, start_batch * batch_size)  # type: ignore[arg-type]
    if world_size > 1:
        from ..scale.distributed import RankSliceSampler

        sampler = RankSliceSampler(sampler, batch_size, rank, world_size)
        batch_size //= world_size
    loader = DataLoader(SeededItems(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory,
                        prefetch_factor=4 if num_workers else None, generator=torch.Generator().manual_seed(seed))
    return iter(loader)


def shard_stream(pool: Any, teacher: Any, *, num_workers: int = 0, pin_memory: bool = False) -> Iterator[Any]:
    """Endless ``(x, teacher_logits)`` batches of a streamed pool (:class:`distill.data.shards.ShardStream`), the
    teacher's logits looked up in its store by each image's content digest."""
    loader = DataLoader(pool, batch_size=pool.batch_size, num_workers=num_workers, persistent_workers=num_workers > 0,
                        pin_memory=pin_memory, prefetch_factor=4 if num_workers else None)
    for x, digests, where in loader:
        yield x, teacher.logits_for_digests(list(digests), list(where))


def eval_loader(dataset: Dataset, batch_size: int, *, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Sequential, un-shuffled batches (validation, test, teacher passes)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)
