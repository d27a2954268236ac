"""The Typer flavour every command group uses: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from .errors import DistillError

#: Progress bars and tables go to stderr so stdout stays machine-readable (JSON reports, paths).
console = Console(stderr=True)


class DistillTyper(typer.Typer):
    """A Typer app that turns :class:`DistillError` into ``error: <message>`` and exit code ``exit_code``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("pretty_exceptions_show_locals", False)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except DistillError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)


def fail(message: str, code: int = 2) -> None:
    """Print one clean error line and exit (the only way commands report user errors)."""
    line = " ".join(str(message).split())
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {line}", markup=True)
    sys.stderr.flush()
    raise SystemExit(code)
