"""Head logits and accuracies of a student on a sample list (validation, test, ``distill eval``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..blend import accuracy, blend_scores
from ..data.scan import Sample
from ..preprocess import PreprocessSpec

#: Eval images are decoded once and kept in memory when they fit in this many bytes (CIFAR val: 61 MB).
_IMAGE_CACHE_BYTES = 512 * 2**20


class EvalSet:
    """A split's preprocessed images (decoded once when small enough) and labels."""

    def __init__(self, samples: Sequence[Sample], spec: PreprocessSpec, batch_size: int = 256, num_workers: int = 0):
        from ..data import ImageDataset, create_eval_transform

        self.samples = list(samples)
        self.labels = torch.tensor([s.label for s in self.samples], dtype=torch.long)
        self.dataset = ImageDataset(self.samples, create_eval_transform(spec))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._images: torch.Tensor | None = None
        self._cacheable = len(self.samples) * 3 * spec.size * spec.size * 4 <= _IMAGE_CACHE_BYTES

    def __len__(self) -> int:
        return len(self.samples)

    def batches(self):
        if self._images is not None:
            for i in range(0, len(self), self.batch_size):
                yield self._images[i:i + self.batch_size]
            return
        from torch.utils.data import DataLoader

        chunks = []
        # own generator: iterating a DataLoader would otherwise draw a seed from (and so shift) the global RNG
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                            generator=torch.Generator().manual_seed(0))
        for x, _, _ in loader:
            if self._cacheable:
                chunks.append(x)
            yield x
        if self._cacheable and chunks:
            self._images = torch.cat(chunks)


@torch.no_grad()
def head_logits(student: torch.nn.Module, data: EvalSet, device: torch.device, autocast=None) -> dict[str, torch.Tensor]:
    """``{head: (N, C) float32 CPU logits}`` for every head of the student (eval mode, restored afterwards)."""
    import contextlib

    was_training = student.training
    student.eval()
    out: dict[str, list[torch.Tensor]] = {}
    try:
        for x in data.batches():
            with autocast() if autocast else contextlib.nullcontext():
                heads = student(x.to(device, non_blocking=True))
            for name, logits in heads.items():
                out.setdefault(name, []).append(logits.float().cpu())
    finally:
        student.train(was_training)
    if not out:
        return {}
    return {name: torch.cat(chunks) for name, chunks in out.items()}


def head_metrics(logits: dict[str, torch.Tensor], labels: torch.Tensor, quick_blend: bool = True) -> dict[str, Any]:
    """Accuracy of each head and, for two-head students, of the probability blend at alpha = beta = 0.5."""
    acc: dict[str, Any] = {f"acc_{name}": accuracy(h, labels) for name, h in logits.items()}
    if quick_blend and "ce" in logits and "kd" in logits:
        acc["acc_blend05"] = accuracy(blend_scores("prob", logits["ce"], logits["kd"], 0.5, 0.5), labels)
    return acc
