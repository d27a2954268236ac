"""`distill bench load` / `abtest` (edge_bench.loadtest): photo sets incl. 12 MP upscaled at run time, the
keep-alive client, the side-by-side summary, and a real run against `python -m serve` on the tiny artifact."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from PIL import Image

from distill.errors import ConfigError
from edge_bench.loadtest import (Level, ServerSpec, build_request, parse_server, photo_sets, read_response,
                                 summarize, upscale_to_phone)


def test_photo_sets_keep_native_bytes_and_upscale_to_12mp(clothing_small_dir: Path):
    files = sorted(clothing_small_dir.rglob("*.jpg"))[:3]
    sets = photo_sets(files, ["native", "12mp"], max_12mp=2)
    assert [b for _, b in sets["native"]] == [f.read_bytes() for f in files]
    assert len(sets["12mp"]) == 2
    for (_, data), f in zip(sets["12mp"], files):
        with Image.open(io.BytesIO(data)) as im, Image.open(f) as src:
            assert im.format == "JPEG" and im.width * im.height == 4032 * 3024
            assert (im.width > im.height) == (src.width > src.height)  # its own orientation
    from distill.errors import ConfigError

    with pytest.raises(ConfigError):
        photo_sets(files, ["huge"])


def test_upscale_honours_exif_orientation(clothing_small_dir: Path):
    src = Image.open(sorted(clothing_small_dir.rglob("*.jpg"))[0]).convert("RGB").resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    src.save(buf, "JPEG", exif=exif)
    assert Image.open(io.BytesIO(upscale_to_phone(buf.getvalue()))).size == (3024, 4032)  # displayed portrait


def test_build_request_and_read_response_roundtrip():
    req = build_request("h", 1, "/v1/classify", "a.jpg", b"\xff\xd8data")
    head, body = req.split(b"\r\n\r\n", 1)
    assert b"Content-Length: %d" % len(body) in head and b'name="file"; filename="a.jpg"' in body

    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 413 Too Large\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\n\r\n")
        reader.feed_eof()
        return await read_response(reader), await read_response(reader)

    assert asyncio.run(main()) == ((413, b"no"), (200, b""))


def _level(server: str, rnd: int, rps: float, p50: float, p99: float) -> Level:
    return Level(server=server, photos="native", concurrency=32, round=rnd, requests=100, errors=0, seconds=1.0,
                 throughput_rps=rps, latency={"n": 100, "p50_ms": p50, "p99_ms": p99}, mean_batch=None,
                 server_preprocess_ms=1.0, server_inference_ms=0.3, server_cpu_ms_per_request=None,
                 rss_before_mb=100.0, rss_peak_mb=130.0)


def test_summary_compares_servers_round_by_round():
    levels = [_level("ours", 0, 150, 10, 15), _level("litserve", 0, 100, 20, 60),
              _level("ours", 1, 120, 12, 20), _level("litserve", 1, 60, 25, 75)]
    rows = {r["server"]: r for r in summarize(levels, ["ours", "litserve"])}  # reference: the first server
    assert rows["ours"]["throughput_vs_reference"] == [1.0, 1.0]
    assert rows["litserve"]["throughput_vs_reference"] == [0.67, 0.5]  # each round against the same round
    assert rows["ours"]["rps"] == [120, 150] and rows["ours"]["p99_over_p50"] == [1.5, 1.67]
    assert rows["ours"]["rss_growth_mb"] == [30.0, 30.0]


def test_the_runs_figure_is_the_median_round():
    """One slow round (the VM's speed drifts) moves neither the median ratio nor the median tail."""
    levels = [_level("ours", 0, 150, 10, 15), _level("litserve", 0, 100, 20, 60),
              _level("ours", 1, 90, 12, 40), _level("litserve", 1, 100, 25, 75),   # a slow round for ours
              _level("ours", 2, 170, 10, 17), _level("litserve", 2, 100, 22, 66)]
    rows = {r["server"]: r for r in summarize(levels, ["ours", "litserve"], "litserve")}
    assert rows["ours"]["throughput_vs_reference"] == [1.5, 0.9, 1.7]
    assert rows["ours"]["throughput_vs_reference_median"] == 1.5
    assert rows["ours"]["p99_over_p50_median"] == 1.7 and rows["litserve"]["p99_over_p50_median"] == 3.0


def test_summary_ratios_are_to_the_reference_not_to_whichever_server_comes_first():
    levels = [_level("ours", 0, 150, 10, 15), _level("ours-w2", 0, 200, 10, 15), _level("litserve", 0, 100, 20, 60)]
    rows = {r["server"]: r for r in summarize(levels, ["ours", "ours-w2", "litserve"], "litserve")}
    assert [rows[n]["throughput_vs_reference"] for n in ("ours", "ours-w2", "litserve")] == [[1.5], [2.0], [1.0]]
    with pytest.raises(ConfigError, match="reference server 'triton' is not one of ours, ours-w2, litserve"):
        summarize(levels, ["ours", "ours-w2", "litserve"], "triton")


def test_only_the_server_being_measured_runs(tmp_path, monkeypatch):
    """An idle server is not free (LitServe polls at ~20% of a core): every other server is paused meanwhile."""
    from edge_bench import loadtest

    class Proc:
        def __init__(self, pid: int) -> None:
            self.pid = pid

    running: set[int] = set()
    seen: list[tuple[str, set[int]]] = []
    pids = {"ours": 101, "ours-w2": 102, "litserve": 103}
    monkeypatch.setattr(loadtest, "start_ready", lambda spec, model: (Proc(pids[spec.name]), 9000 + pids[spec.name]))
    monkeypatch.setattr(loadtest, "stop_server", lambda proc: running.discard(proc.pid))
    monkeypatch.setattr(loadtest, "pause_server", lambda proc: running.discard(proc.pid))
    monkeypatch.setattr(loadtest, "resume_server", lambda proc: running.add(proc.pid))

    warmups: list[tuple[int, int, int]] = []

    def run_level(host, port, reqs, c, n, *, server=None, pid=None, **kw):  # noqa: ANN001, ANN003
        seen.append((server or "warm-up", set(running)))
        if server is None:
            warmups.append((next(iter(running)), c, n))
        return _level(server or "warm-up", kw.get("round_", 0), 100.0, 10, 12)

    monkeypatch.setattr(loadtest, "run_level", run_level)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    specs = [ServerSpec(n, "serve", []) for n in pids]
    res = loadtest.run_load(model, {"native": [("a.jpg", b"1")]}, specs, levels=[1, 32], requests=10, rounds=2,
                            reference="litserve")
    measured = [(name, run) for name, run in seen if name != "warm-up"]
    assert len(measured) == 2 * 2 * 3 and len(seen) == len(measured) + 3 * 2
    # every server warmed up at every level it is measured at, at least 4 requests a connection
    assert warmups == [(pid, c, n) for pid in pids.values() for c, n in ((1, 64), (32, 128))]
    assert all(run == {pids[name]} for name, run in measured)  # the measured server alone
    assert all(len(run) == 1 for _, run in seen)  # warm-ups too
    assert not running and res["reference"] == "litserve"


def test_a_paused_server_is_stopped_and_resumed_for_real(tmp_path):
    from edge_bench import loadtest

    proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"],
                            start_new_session=True)

    def state() -> str:
        return psutil.Process(proc.pid).status()

    def wait_for(pred) -> bool:  # noqa: ANN001 - signal delivery is asynchronous: bounded wait for the state
        import time
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:
            if pred():
                return True
            time.sleep(0.01)
        return False

    try:
        with loadtest.running(proc):
            assert wait_for(lambda: state() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING))
        assert wait_for(lambda: state() == psutil.STATUS_STOPPED)  # paused after the block
    finally:
        loadtest.stop_server(proc, timeout=10)  # resumes first: a stopped process would not act on SIGTERM
    assert proc.returncode is not None and not loadtest._group_alive(proc.pid)


def test_parse_server():
    assert parse_server("ours=--max-batch 16 --threads 1") == ServerSpec("ours", "serve", ["--max-batch", "16", "--threads", "1"])
    assert parse_server("litserve").kind == "litserve"
    from distill.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_server("=--max-batch 4")


def test_bench_load_runs_our_server_on_native_and_12mp_photos(tiny_artifact, clothing_small_dir, tmp_path, bench_cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted(clothing_small_dir.rglob("*.jpg"))[:4]:
        (photos / f.name).write_bytes(f.read_bytes())
    res = bench_cli.invoke("load", "--model", str(tiny_artifact), "--images", str(photos), "--sizes", "native,12mp",
                           "--concurrency", "1,4", "--requests", "12", "--rounds", "1",
                           "--server", "ours=--max-batch 4 --max-wait-ms 2 --threads 1 --warmup 0",
                           "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "out/results.json").read_text())
    assert {(lv["photos"], lv["concurrency"]) for lv in rep["levels"]} == {("native", 1), ("native", 4),
                                                                           ("12mp", 1), ("12mp", 4)}
    for lv in rep["levels"]:
        assert lv["errors"] == 0 and lv["latency"]["n"] == 12
        assert lv["server_preprocess_ms"] > 0 and lv["server_inference_ms"] > 0
        assert lv["server_total_ms"] >= lv["server_inference_ms"]
        assert lv["rss_peak_mb"] >= lv["rss_before_mb"] > 0


def test_bench_load_bad_input_is_one_error_line(tmp_path, bench_cli, tiny_artifact, clothing_small_dir):
    res = bench_cli.invoke("load", "--model", str(tmp_path / "missing.onnx"), "--images", str(clothing_small_dir),
                           "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "artifact not found" in res.output
    res = bench_cli.invoke("load", "--model", str(tiny_artifact), "--images", str(clothing_small_dir),
                           "--peer", "triton", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "only peer is litserve" in res.output
    res = bench_cli.invoke("load", "--model", str(tiny_artifact), "--images", str(clothing_small_dir),
                           "--reference", "triton", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "--reference 'triton' is not a server of this run: ours" in res.output


def test_a_port_taken_after_it_was_chosen_is_retried_on_another(tiny_artifact, monkeypatch):
    """free_port() cannot rule out another process binding the port first: the server is started again elsewhere."""
    import socket

    from edge_bench import loadtest

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        ports = iter([taken])
        real_free_port = loadtest.free_port
        monkeypatch.setattr(loadtest, "free_port", lambda: next(ports, None) or real_free_port())
        proc, port = loadtest.start_ready(ServerSpec("ours", "serve", ["--threads", "1", "--warmup", "0"]),
                                          tiny_artifact)
    try:
        assert port != taken and proc.poll() is None
        assert os.getpgid(proc.pid) == proc.pid  # its own process group, which stop_server ends whole
    finally:
        loadtest.stop_server(proc)


def test_stop_server_ends_what_the_server_forked(tmp_path):
    """A server whose helpers outlive its own exit (LitServe's did, and kept polling a core) leaves nothing."""
    from edge_bench import loadtest

    leader = ("import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
              "print(c.pid, flush=True); c.wait()")
    proc = subprocess.Popen([sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    loadtest.stop_server(proc, timeout=10)
    assert proc.returncode is not None
    assert not loadtest._group_alive(proc.pid)
    with contextlib.suppress(psutil.NoSuchProcess):  # gone, or a zombie awaiting its reaper
        assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_peak_rss_is_never_below_the_level_start(monkeypatch):
    """A level too short for the sampling thread, whose server returns memory meanwhile (the 12 MP level before it
    grew the heap), reported a peak under its start RSS: the start and the end are samples too."""
    from edge_bench import loadtest

    readings = iter([120.0, 110.0])
    sampler = loadtest.RssSampler(pid=1, every_s=3600)  # the thread never gets to sample
    monkeypatch.setattr(sampler, "read_mb", lambda: next(readings))
    with sampler:
        assert sampler.start_mb == 120.0
    assert sampler.peak_mb == 120.0

    readings = iter([100.0, 130.0])  # grew by the end: the exit sample counts
    sampler = loadtest.RssSampler(pid=1, every_s=3600)
    monkeypatch.setattr(sampler, "read_mb", lambda: next(readings))
    with sampler:
        pass
    assert (sampler.start_mb, sampler.peak_mb) == (100.0, 130.0)


def test_an_unknown_reference_is_refused_before_any_server_starts(tmp_path, monkeypatch):
    from edge_bench import loadtest

    def never(*a, **kw):  # noqa: ANN002, ANN003
        raise AssertionError("a server was started")

    monkeypatch.setattr(loadtest, "start_ready", never)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ConfigError, match="reference server 'triton' is not one of ours"):
        loadtest.run_load(model, {"native": [("a.jpg", b"1")]}, [ServerSpec("ours", "serve", [])], levels=[1],
                          requests=1, reference="triton")
