"""`distill serve` / `python -m serve`: a bad model is one error line and a non-zero exit; a real server
process serves, then drains and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from distill.cli_base import DistillTyper

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def distill_like() -> typer.Typer:
    """A root app that mounts serve.cli.app exactly as distill.cli does (entry point group distill.commands)."""
    from serve.cli import app as serve_app

    root = DistillTyper(help="root")

    @root.callback()
    def _root() -> None:
        pass

    root.add_typer(serve_app, name="serve")
    return root


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error:") and "Traceback" not in output, output
    return lines[0]


@pytest.mark.parametrize("what", ["missing", "garbage", "foreign_onnx", "none"])
def test_bad_model_is_one_line_and_exit_2(distill_like, tmp_path, monkeypatch, what):
    monkeypatch.delenv("DISTILL_SERVE_MODEL", raising=False)
    args = ["serve"]
    if what == "missing":
        args += ["--model", str(tmp_path / "nope.onnx")]
    elif what == "garbage":
        (tmp_path / "bad.onnx").write_bytes(b"this is not a model")
        args += ["--model", str(tmp_path / "bad.onnx")]
    elif what == "foreign_onnx":  # a valid ONNX graph without distill metadata
        from onnx import TensorProto, helper, save

        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        save(helper.make_model(g), str(tmp_path / "foreign.onnx"))
        args += ["--model", str(tmp_path / "foreign.onnx")]
    result = CliRunner().invoke(distill_like, args, prog_name="distill")
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert ("model" in line) and (what == "none" or "nope.onnx" in line or "bad.onnx" in line or "foreign.onnx" in line)


def test_bad_setting_is_one_line(distill_like, tiny_artifact):
    result = CliRunner().invoke(distill_like, ["serve", "--model", str(tiny_artifact), "--max-batch", "0"])
    assert result.exit_code == 2
    assert "max_batch" in _one_error_line(result.output)


def test_bad_loop_is_one_line(distill_like, tiny_artifact):
    result = CliRunner().invoke(distill_like, ["serve", "--model", str(tiny_artifact), "--loop", "trio"])
    assert result.exit_code == 2
    assert "loop" in _one_error_line(result.output)


def test_missing_uvloop_is_one_line(distill_like, tiny_artifact, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    result = CliRunner().invoke(distill_like, ["serve", "--model", str(tiny_artifact), "--loop", "uvloop"])
    assert result.exit_code == 2
    assert "uvloop is not installed" in _one_error_line(result.output)


def test_help_when_mounted(distill_like):
    result = CliRunner().invoke(distill_like, ["serve", "--help"])
    assert result.exit_code == 0 and "--max-batch" in result.output and "--model" in result.output


def test_python_m_serve_missing_model_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "serve", "--model", str(tmp_path / "missing.onnx")],
                       capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert r.returncode == 2
    assert "artifact not found" in _one_error_line(r.stderr)


def _start_on_port_zero(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int, list[str]]:
    """Start the server on port 0 (the kernel picks a free port: no pick-then-bind race with other processes) and
    read the port it really bound from uvicorn's start-up line. Output is collected by a thread (``lines``)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines: list[str] = []
    found: "queue.Queue[int | None]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if m:
                found.put(int(m.group(1)))
        found.put(None)  # the process ended

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = found.get(timeout=120)
    except queue.Empty:
        proc.kill()
        pytest.fail("server did not start within 120 s: " + "".join(lines))
    if port is None:
        pytest.fail("server exited: " + "".join(lines))
    return proc, port, lines


def test_real_server_process_serves_and_drains_on_sigterm(tiny_artifact, real_jpegs):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_SERVE_MAX_WAIT_MS": "1"}
    proc, port, lines = _start_on_port_zero(
        [sys.executable, "-m", "serve", "--model", str(tiny_artifact), "--port", "0", "--threads", "1",
         "--no-access-log", "--log-level", "info"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("server exited: " + "".join(lines))
                time.sleep(0.1)
        boundary = uuid.uuid4().hex
        data = real_jpegs[0].read_bytes()
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(base + "/classify?top_k=3", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())
        assert len(answer["results"][0]["predictions"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, "".join(lines)
