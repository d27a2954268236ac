"""`distill serve --workers N`: the supervisor hands every connection to the worker with the fewest open ones.

The balancing rule and the supervisor's bookkeeping are checked in-process, on socket pairs standing in for the
workers; real processes check the whole path: 32 keep-alive connections land 16/16, a killed worker is replaced
and takes the next connections, a boot failure is one line, a killed supervisor takes its workers with it.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid

import psutil
import pytest
from serve_helpers import (REPO, metric_value, multipart, start_on_port_zero, wait_process_ready,
                           worker_that_exits)

from serve.workers import MSG_CLOSED, MSG_CONN, MSG_READY, Supervisor, WorkerBootError, pick_worker


# -- the rule ---------------------------------------------------------------------------------------------------
def test_pick_worker_takes_the_fewest_open_connections() -> None:
    assert pick_worker([3, 1, 2], [True, True, True]) == 1
    assert pick_worker([3, 1, 2], [True, False, True]) == 2  # a dead worker is never picked
    assert pick_worker([0, 0], [False, False]) is None


def test_pick_worker_breaks_ties_round_robin_from_start() -> None:
    assert [pick_worker([1, 1, 1], [True] * 3, start) for start in range(4)] == [0, 1, 2, 0]
    assert pick_worker([2, 1, 1], [True] * 3, start=0) == 1  # the count first, then the rotation


# -- the supervisor's bookkeeping, on socket pairs instead of processes -----------------------------------------
def _supervisor_with_fake_workers(n: int) -> tuple[Supervisor, list[socket.socket]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    sup = Supervisor(listener, n, {})
    ends = []
    for w in sup.slots:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.setblocking(False)
        theirs.setblocking(False)
        w.channel, w.ready = mine, True
        ends.append(theirs)
    return sup, ends


def _handed(end: socket.socket) -> int:
    """How many connections the supervisor has passed to this worker end (and close them)."""
    got = 0
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(end, 16, 8)
        except BlockingIOError:
            return got
        assert msg == MSG_CONN and len(fds) == 1
        os.close(fds[0])
        got += 1


def _connection() -> socket.socket:
    a, b = socket.socketpair()
    b.close()
    return a


def test_dispatch_alternates_then_follows_reported_closes() -> None:
    sup, ends = _supervisor_with_fake_workers(2)
    for _ in range(6):
        sup._dispatch(_connection())
    assert [_handed(e) for e in ends] == [3, 3]
    for _ in range(2):
        ends[0].send(MSG_CLOSED)  # worker 0 has seen two of its connections close
    sup._read(sup.slots[0])
    assert [w.open for w in sup.slots] == [1, 3]
    for _ in range(3):
        sup._dispatch(_connection())
    assert [_handed(e) for e in ends] == [2, 1]  # two to worker 0 (1 -> 3 open), then the tie goes round robin
    assert [w.open for w in sup.slots] == [3, 4]


def test_dispatch_prefers_ready_workers_and_skips_a_dead_one() -> None:
    sup, ends = _supervisor_with_fake_workers(3)
    sup.slots[1].ready = False  # booting (a replacement): connections go to the ready ones
    ends[2].close()  # worker 2 died: its channel's peer is gone
    for _ in range(4):
        sup._dispatch(_connection())
    assert _handed(ends[0]) == 4 and _handed(ends[1]) == 0
    assert sup.slots[2].channel is None  # found dead on the first send, never tried again
    ends[1].send(MSG_READY)
    sup._read(sup.slots[1])
    sup._dispatch(_connection())
    assert _handed(ends[1]) == 1 and sup.slots[1].ready


def test_dispatch_skips_a_full_channel_for_that_connection() -> None:
    sup, ends = _supervisor_with_fake_workers(2)
    sup.slots[0].channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[union-attr]
    filler = _connection()
    filled = 0
    while True:  # fill worker 0's channel: it stopped reading
        try:
            socket.send_fds(sup.slots[0].channel, [MSG_CONN], [filler.fileno()])  # type: ignore[arg-type]
        except BlockingIOError:
            break
        filled += 1
    sup._dispatch(_connection())  # worker 0 has the fewest (a tie, first) but cannot take it
    assert _handed(ends[1]) == 1
    assert _handed(ends[0]) == filled and sup.slots[0].channel is not None  # kept: full is not dead


# -- real processes ---------------------------------------------------------------------------------------------
def _serve_cmd(artifact, *extra: str) -> list[str]:
    return [sys.executable, "-m", "serve", "--model", str(artifact), "--port", "0", "--warmup", "0",
            "--no-access-log", "--log-level", "info", *extra]


def _worker_procs(proc: subprocess.Popen) -> list[psutil.Process]:
    return [c for c in psutil.Process(proc.pid).children() if "spawn" in " ".join(c.cmdline())
            and "resource_tracker" not in " ".join(c.cmdline())]


def _held(worker: psutil.Process, port: int) -> int:
    return sum(1 for c in worker.net_connections(kind="tcp") if c.status == "ESTABLISHED" and c.laddr.port == port)


def _wait_for_line(lines: list[str], proc: subprocess.Popen, pattern: str, count: int) -> None:
    """Wait until ``count`` output lines match: the supervisor logs each worker's ready message itself, so after
    it the supervisor's own state is known (no sleeping and hoping)."""
    import time

    rx = re.compile(pattern)
    deadline = time.monotonic() + 120
    while sum(1 for ln in list(lines) if rx.search(ln)) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {count} x {pattern!r}: " + "".join(lines))
        time.sleep(0.05)


def _keepalive(port: int, n: int) -> list[http.client.HTTPConnection]:
    conns = []
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.connect()
        conns.append(c)
    for c in conns:  # answered: every one has been adopted by a worker
        c.request("GET", "/health/live")
        r = c.getresponse()
        r.read()
        assert r.status == 200
    return conns


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_keepalive_connections_are_spread_evenly_and_a_killed_worker_is_replaced(tiny_artifact, tmp_path) -> None:
    """32 connections opened at once: 16/16 (the kernel's own spread was 9/23 to 1/31). A SIGKILLed worker is
    replaced, and the new one takes the next connections (the survivor still holds its 16)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    proc, port, lines = start_on_port_zero(_serve_cmd(tiny_artifact, "--workers", "2"), env)
    try:
        _wait_for_line(lines, proc, r"server worker \d \(pid \d+\) ready", 2)
        conns = _keepalive(port, 32)
        workers = _worker_procs(proc)
        assert sorted(_held(w, port) for w in workers) == [16, 16]

        victim, survivor = workers
        victim.kill()  # its 16 connections die with it; the survivor's 16 stay open
        _wait_for_line(lines, proc, r"server worker \d \(pid \d+\) exited with code -9; starting a new one", 1)
        _wait_for_line(lines, proc, r"server worker \d \(pid \d+\) ready", 3)
        replacement = [w for w in _worker_procs(proc) if w.pid not in {victim.pid, survivor.pid}]
        assert len(replacement) == 1
        more = _keepalive(port, 8)
        assert (_held(replacement[0], port), _held(survivor, port)) == (8, 16)
        for c in conns + more:
            c.close()
    finally:
        rc = _stop(proc)
    assert rc == 0, "".join(lines)


def test_a_worker_that_cannot_boot_stops_the_server() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    sup = Supervisor(listener, 2, {}, target=worker_that_exits)
    with pytest.raises(WorkerBootError, match=r"server worker \d exited with code 3 before it was ready"):
        sup.run()
    assert all(w.process is None and w.channel is None for w in sup.slots)
    assert listener.fileno() == -1  # closed: the port is free again


def test_workers_exit_when_the_supervisor_is_killed(tiny_artifact, tmp_path) -> None:
    """A SIGKILLed supervisor cannot stop its workers; each sees its channel's end of file and shuts down."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    proc, port, lines = start_on_port_zero(_serve_cmd(tiny_artifact, "--workers", "2"), env)
    try:
        _wait_for_line(lines, proc, r"server worker \d \(pid \d+\) ready", 2)
        workers = _worker_procs(proc)
        assert len(workers) == 2
        proc.kill()
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, [w.cmdline() for w in alive]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_workers_serve_one_port_and_stop_cleanly(tiny_artifact, real_jpegs, tmp_path):
    """`--workers 2`: two server processes behind one port, each with the model, the summed /metrics counting
    every request whichever worker answers the scrape, and SIGTERM stopping all of them with exit 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    proc, port, lines = start_on_port_zero(_serve_cmd(tiny_artifact, "--workers", "2"), env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_process_ready(base, proc, lines, tries=600)
        workers = _worker_procs(proc)
        assert len(workers) == 2, [c.cmdline() for c in psutil.Process(proc.pid).children()]
        body, ctype = multipart(real_jpegs[0].read_bytes(), boundary=uuid.uuid4().hex)
        for _ in range(12):  # a new connection each: handed to either worker
            req = urllib.request.Request(base + "/v1/classify", data=body, method="POST",
                                         headers={"Content-Type": ctype})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
        metrics_dirs = [p for p in tmp_path.iterdir() if p.name.startswith("distill-serve-metrics-")]
        assert len(metrics_dirs) == 1
        for _ in range(4):
            with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
                text = r.read().decode()
            assert metric_value(text, r'distill_serve_requests_total\{method="POST",route="/v1/classify",status="200"\}') == 12
    finally:
        rc = _stop(proc)
    assert rc == 0, "".join(lines)
    assert not any(p.name.startswith("distill-serve-metrics-") for p in tmp_path.iterdir())  # removed at exit
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_request_is_counted_before_its_response_leaves() -> None:
    """With several workers a client may scrape /metrics (answered by another worker) the moment it has its answer,
    so the request must be counted when its response starts, not after its body went out (otherwise
    test_workers_serve_one_port_and_stop_cleanly can see 11 of 12 on a loaded machine)."""
    import asyncio

    from serve.app import ServeMiddleware
    from serve.metrics import ServeMetrics

    metrics = ServeMetrics()
    name = r'distill_serve_requests_total\{method="GET",route="unmatched",status="200"\}'

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    counted_at_start: list[float] = []

    async def send(message) -> None:
        if message["type"] == "http.response.start":  # the first byte the client could see
            counted_at_start.append(metric_value(metrics.render().decode(), name))

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    asyncio.run(ServeMiddleware(app, max_body=1000, metrics=metrics)(scope, receive, send))
    assert counted_at_start == [1.0]
    assert metric_value(metrics.render().decode(), name) == 1.0  # once, not again at the end
