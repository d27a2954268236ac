"""`distill serve` / `python -m serve`: a bad model is one error line and a non-zero exit; a real server
process serves, then drains and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import typer
from serve_helpers import metric_value, multipart, start_on_port_zero, wait_process_ready
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


def test_real_server_process_serves_and_drains_on_sigterm(tiny_artifact, real_jpegs):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_SERVE_MAX_WAIT_MS": "1"}
    proc, port, lines = start_on_port_zero(
        [sys.executable, "-m", "serve", "--model", str(tiny_artifact), "--port", "0", "--threads", "1",
         "--no-access-log", "--log-level", "info"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_process_ready(base, proc, lines, tries=300)
        body, ctype = multipart(real_jpegs[0].read_bytes(), boundary=uuid.uuid4().hex)
        req = urllib.request.Request(base + "/classify?top_k=3", data=body, method="POST",
                                     headers={"Content-Type": ctype})
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


def test_workers_with_a_model_repository_is_one_line(distill_like, tmp_path):
    result = CliRunner().invoke(distill_like, ["serve", "--model-repository", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers applies to --model" in _one_error_line(result.output)


def test_bad_workers_is_one_line(distill_like, tiny_artifact):
    result = CliRunner().invoke(distill_like, ["serve", "--model", str(tiny_artifact), "--workers", "0"])
    assert result.exit_code == 2
    assert "workers" in _one_error_line(result.output)


def test_worker_settings_travel_through_the_environment(tiny_artifact, monkeypatch):
    """The CLI hands its options to worker processes as DISTILL_SERVE_* variables; a worker's settings, read
    from the environment alone, must equal the parent's (lists, bools and paths included)."""
    from serve.settings import ServeSettings

    overrides = {"model": tiny_artifact, "max_batch": 8, "max_wait_ms": 2.5, "adaptive_wait": False,
                 "providers": ["CPUExecutionProvider"], "access_log": False, "workers": 3, "cors_origins": ["*"]}
    parent = ServeSettings(**overrides)
    for k in list(os.environ):
        if k.startswith("DISTILL_SERVE_"):
            monkeypatch.delenv(k)
    for k, v in parent.to_env(overrides).items():
        monkeypatch.setenv(k, v)
    assert ServeSettings() == parent


def test_workers_share_the_cpus(monkeypatch):
    import serve.settings as ss

    monkeypatch.setattr(ss, "usable_cpus", lambda: 8)
    assert ss.ServeSettings(workers=1).ort_threads() == 8
    assert ss.ServeSettings(workers=2).ort_threads() == 4 and ss.ServeSettings(workers=2).decode_pool_threads() == 4
    assert ss.ServeSettings(workers=3).ort_threads() == 2  # 8 // 3: never more threads than CPUs
    assert ss.ServeSettings(workers=16).ort_threads() == 1
    assert ss.ServeSettings(workers=2, intra_op_threads=3).ort_threads() == 3  # an explicit setting wins


_METRICS_CHILD = r"""
import sys
from serve.metrics import ServeMetrics
m = ServeMetrics()
assert m.multiprocess
for _ in range(int(sys.argv[1])):
    m.requests.labels("/v1/classify", "POST", "200").inc()
m.in_flight.inc(int(sys.argv[2]))
m.ready.set(int(sys.argv[3]))
if sys.argv[4] == "stop":
    m.close()
"""


def test_metrics_are_summed_over_worker_processes(tmp_path):
    """Each worker writes its metrics under PROMETHEUS_MULTIPROC_DIR; any worker's /metrics reports the sum.
    Three real processes: two workers alive (3 and 4 requests, 1 and 2 in flight, one not ready yet), one that
    stopped (5 requests, its in-flight gauge leaves the sum); a fourth renders."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for args in (["3", "1", "1", "live"], ["4", "2", "0", "live"], ["5", "7", "1", "stop"]):
        subprocess.run([sys.executable, "-c", _METRICS_CHILD, *args], env=env, check=True, timeout=60)
    render = subprocess.run([sys.executable, "-c", "from serve.metrics import ServeMetrics; import sys; "
                             "sys.stdout.write(ServeMetrics().render().decode())"],
                            env=env, check=True, timeout=60, capture_output=True, text=True).stdout
    assert metric_value(render, r'distill_serve_requests_total\{method="POST",route="/v1/classify",status="200"\}') == 12
    assert metric_value(render, "distill_serve_requests_in_flight") == 3  # livesum: the stopped worker's 7 left
    assert metric_value(render, "distill_serve_ready") == 0  # livemin: one worker is not ready yet
