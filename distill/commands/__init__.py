"""Built-in commands of ``distill`` (train, eval, teacher-eval). Each module keeps heavy imports inside functions
so ``distill --help`` stays fast and torch-free."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from . import cache_teacher, evaluate, make_shards, report, teacher, train

    train.register(app)
    evaluate.register(app)
    teacher.register(app)
    cache_teacher.register(app)
    make_shards.register(app)
    report.register(app)
