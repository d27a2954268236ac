"""The OpenVINO/NNCF tests, run in a pytest process of their own when the session holds other tests too.

OpenVINO/NNCF and the rest of the suite in one process died with SIGSEGV (tests/conftest.py says when); the
tests marked ``openvino_process`` are then deselected from this session and run here, in a child pytest, whose
failures fail this test with their output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(1200)
def test_openvino_tests_pass_in_their_own_process(request: pytest.FixtureRequest) -> None:
    files, env_name = getattr(request.config, "distill_openvino_isolated", ([], ""))
    if not files:
        pytest.skip("no OpenVINO test was left to a child process in this session (they ran in-process or not at all)")
    env = {**os.environ, env_name: "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1150)
    assert r.returncode == 0, f"OpenVINO tests failed (exit {r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
