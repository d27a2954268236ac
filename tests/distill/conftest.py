"""Fixtures shared by the distill tests: the real ``distill`` app run in-process, its error handling included
(what a user types, without a subprocess's interpreter start-up)."""

from __future__ import annotations

from typing import Callable

import pytest


def _main(args: list[str]) -> int:
    from distill.cli import app

    with pytest.raises(SystemExit) as exc:
        app(args=args, prog_name="distill")
    code = exc.value.code
    return 0 if code is None else int(code)


@pytest.fixture(scope="session")
def distill_main() -> Callable[[list[str]], int]:
    """``distill_main(args) -> exit code``, output not captured: for module-scoped fixtures that build a run."""
    return _main


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """``run_cli(args) -> (exit code, stdout, stderr)`` of ``distill ARGS``."""

    def run(args: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()  # only this command's output
        code = _main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
