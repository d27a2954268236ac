"""The ``distill`` command: built-in training commands plus plugin groups (export, serve, bench).

Plugins are discovered through the ``distill.commands`` entry-point group so that the distill package never
imports export, serve or edge_bench, and a missing optional extra explains itself instead of crashing.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from . import __version__
from .cli_base import DistillTyper, fail

app = DistillTyper(help="Distill a large teacher into a small student (DHO), export, serve and benchmark it.")


def _print_version(value: bool) -> None:
    """An eager option callback: runs while parsing, before the group asks for a command."""
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version, expose_value=True),
) -> None:
    """Distill a large teacher into a small student (DHO), export, serve and benchmark it."""


def _missing_plugin(name: str, error: Exception) -> typer.Typer:
    """Stand-in group for a plugin whose optional dependencies are not installed."""
    group = DistillTyper(help="(unavailable: optional dependencies missing)", no_args_is_help=False)

    @group.callback(invoke_without_command=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _explain() -> None:
        fail(f"'distill {name}' is unavailable: {error}. Install the matching extra, e.g. pip install 'distill-toolchain[{name}]'")

    return group


def _register_plugins(root: typer.Typer) -> None:
    for ep in sorted(entry_points(group="distill.commands"), key=lambda e: e.name):
        try:
            sub = ep.load()
        except ImportError as e:  # optional extra not installed
            sub = _missing_plugin(ep.name, e)
        root.add_typer(sub, name=ep.name)


def _register_builtin(root: typer.Typer) -> None:
    from .commands import register_all

    register_all(root)


_register_builtin(app)
_register_plugins(app)


def main() -> None:
    app(prog_name="distill")


if __name__ == "__main__":
    main()
