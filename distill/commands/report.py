"""``distill report``: the results table (mean ± std over seeds) and gradient-conflict plot from run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        runs: list[Path] = typer.Argument(..., help="Run directories, or folders holding run directories."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Write the gradient-conflict curves (PNG) here."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the markdown table to this file."),
    ) -> None:
        """Aggregate finished runs into a markdown table of test accuracy (selection on val, report on test)."""
        from ..io import atomic_write_text
        from ..report import find_runs, markdown_table, paired_differences, plot_grad_conflict

        rows = find_runs(runs)
        table = markdown_table(rows)
        paired = paired_differences(rows)
        if paired:
            table += "\n\nDHO minus each baseline, paired by seed (test top-1, percentage points):\n\n" + paired
        typer.echo(table)
        if out:
            atomic_write_text(out, table + "\n")
        if plot:
            plot_grad_conflict(rows, plot)
