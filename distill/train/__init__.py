"""Training: ``TrainConfig`` (torch-free) and ``train(cfg, resume=False)``, the loop in :mod:`distill.train.loop`."""

from __future__ import annotations

from typing import Any

from .config import StudentConfig, TrainConfig


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run or resume one training run; see :func:`distill.train.loop.train`."""
    from .loop import train as _train

    return _train(cfg, resume=resume)


__all__ = ["StudentConfig", "TrainConfig", "train"]
