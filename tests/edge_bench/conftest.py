"""edge_bench fixtures: one small benchmark run shared by the report/CLI tests (bounded to a few seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m edge_bench ARGS`` in a fresh process (what a user runs; error lines come out as in a shell)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edge_bench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def invoke(*args: str):
    from edge_bench.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="session")
def bench_cli():
    """``bench_cli.run(*args)`` (subprocess) and ``bench_cli.invoke(*args)`` (in-process CliRunner)."""
    class _Cli:
        run = staticmethod(run_cli)
        invoke = staticmethod(invoke)
    return _Cli


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, tiny_checkpoint: Path,
              cifar_small_dir: Path) -> Path:
    """tiny artifact (ort) + tiny checkpoint (torch eager), all three scenarios, accuracy on 50 real images."""
    out = tmp_path_factory.mktemp("bench")
    res = invoke("run", "-m", f"student={tiny_artifact}", "-c", f"ckpt={tiny_checkpoint}",
                 "--torch-modes", "eager", "--scenarios", "single-stream,offline,server", "--count", "20",
                 "--warmup", "2", "--batch-sizes", "1,4", "--server-qps", "100", "--server-bound-ms", "500",
                 "--data", str(cifar_small_dir), "--accuracy-limit", "50", "--max-images", "8",
                 "--max-seconds", "60", "--out", str(out))
    assert res.exit_code == 0, res.output
    return out
