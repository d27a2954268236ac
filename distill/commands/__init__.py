"""Built-in commands of ``distill`` (train, eval, teacher-eval). Each module keeps heavy imports inside functions
so ``distill --help`` stays fast and torch-free."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from . import evaluate, teacher, train

    train.register(app)
    evaluate.register(app)
    teacher.register(app)
