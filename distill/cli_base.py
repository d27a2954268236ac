"""The Typer flavour every command group uses: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from .errors import DistillError

#: Progress bars and tables go to stderr so stdout stays machine-readable (JSON reports, paths).
console = Console(stderr=True)


class DistillGroup(TyperGroup):
    """Root group that turns a :class:`DistillError` raised by any (sub)command into one line and an exit code.

    Handling it here (not only in ``__call__``) means ``typer.testing.CliRunner`` sees the same exit code.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DistillError as e:
            _print_error(str(e))
            raise typer.Exit(e.exit_code) from None


class DistillTyper(typer.Typer):
    """A Typer app whose user errors print ``error: <message>`` and exit with the error's ``exit_code`` (2)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", DistillGroup)
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("pretty_exceptions_show_locals", False)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except DistillError as e:  # raised outside a command (e.g. a callback of a single-command app)
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)


def setup_logging(level: int = logging.WARNING) -> None:
    """Show warnings (skipped images, cache problems) on stderr through rich, unless logging is already configured
    (a host application's or a test's handlers win). The one logging setup of the ``distill`` commands."""
    if not logging.getLogger().handlers:
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(message)s",
                            handlers=[RichHandler(console=console, show_time=False, show_path=False)])


def _print_error(message: str) -> None:
    line = " ".join(str(message).split())
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(line)}")
    sys.stderr.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clean error line and exit (the only way commands report user errors)."""
    _print_error(message)
    raise SystemExit(code)
