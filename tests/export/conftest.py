"""Fixtures for export tests: checkpoint variants derived from the shared tiny DHO checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

@pytest.fixture(scope="session")
def make_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Write a modified copy of the tiny checkpoint: ``make_checkpoint("name", method="ce", blend=None, ...)``."""
    import torch

    from distill.checkpoint import load_checkpoint, save_checkpoint
    from distill.models import create_student

    base = load_checkpoint(tiny_checkpoint)
    folder = tmp_path_factory.mktemp("ckpts")

    def make(name: str, method: str | None = None, **updates: Any) -> Path:
        ckpt = dict(base)
        if method is not None:
            torch.manual_seed(1)
            student = create_student("cifar_resnet8", num_classes=10, method=method)
            ckpt.update(student=student.spec.model_dump(), model=student.state_dict(), method=method)
        ckpt.update(updates)
        path = folder / f"{name}.pt"
        save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "kind")})
        return path

    return make
