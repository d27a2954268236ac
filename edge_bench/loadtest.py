"""Loopback load test of HTTP classification servers started side by side: ``distill bench load`` and
``distill bench abtest``.

Each server (``distill serve`` with given options, or the LitServe peer of :mod:`edge_bench.litserve_peer` over
the same artifact and preprocessing) is started on 127.0.0.1 and warmed up; then, for ``rounds`` interleaved
rounds (server A, server B, A, B, ...: every server sees the same background load), each photo set and each
concurrency level gets ``requests`` closed-loop requests from a minimal keep-alive asyncio HTTP/1.1 client (so
the client costs little CPU). Photo sets: the given photos at their own size (``native``) and the same photos
upscaled at run time to a 12-megapixel phone size (``12mp``, 4032x3024 or 3024x4032, JPEG quality 90), so the
numbers show what a user uploading phone photos sees.

Per level: throughput, latency percentiles (:func:`edge_bench.stats.latency_summary`, the one percentile
implementation), errors and statuses, the server-reported ``preprocess_ms`` (decode + preprocess) apart from
``inference_ms`` and the server's ``total_ms`` (medians, where the server reports them), the mean batch size, server CPU ms per request and
the server's peak RSS (sampled every 10 ms, children included) against its RSS before the level.
The client shares the machine with the servers: say so when quoting numbers (the report records CPU and load).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from distill.errors import ConfigError, DistillError

from .stats import latency_summary

PHONE_SIZE = (4032, 3024)  # 12.2 MP, the common phone sensor size

#: Default configurations of ``distill bench abtest`` (batching on vs off).
ABTEST_CONFIGS = {
    "on": ["--max-batch", "16", "--max-wait-ms", "5", "--threads", "1"],
    "off": ["--max-batch", "1", "--max-wait-ms", "0", "--threads", "1"],
}


# -- photos -----------------------------------------------------------------------------------------------
def upscale_to_phone(data: bytes, quality: int = 90) -> bytes:
    """A photo resized (bicubic) to a 12 MP phone size in its own orientation, as JPEG bytes."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    size = PHONE_SIZE if img.width >= img.height else PHONE_SIZE[::-1]
    buf = io.BytesIO()
    img.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photo_sets(files: list[Path], sizes: list[str], max_12mp: int = 8) -> dict[str, list[tuple[str, bytes]]]:
    """``native``: the files as they are; ``12mp``: the first ``max_12mp`` upscaled at run time (never stored)."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    for s in sizes:
        if s == "native":
            out[s] = [(f.name, f.read_bytes()) for f in files]
        elif s == "12mp":
            out[s] = [(f.stem + "-12mp.jpg", upscale_to_phone(f.read_bytes())) for f in files[:max_12mp]]
        else:
            raise ConfigError(f"unknown photo size {s!r}; use native and/or 12mp")
    return out


# -- the client -------------------------------------------------------------------------------------------
def build_request(host: str, port: int, path: str, filename: str, data: bytes, ctype: str = "image/jpeg") -> bytes:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


class RssSampler:
    """Peak RSS (MB) of a process and its children, sampled in a thread while a level runs.

    Sampled once on entry (``start_mb``, the peak's floor) and once on exit as well as in between: a level too
    short for the thread to sample, or one that starts after a bigger level's memory was returned, still gets a
    peak that is the maximum over the level, never one below its own start."""

    def __init__(self, pid: Optional[int], every_s: float = 0.01) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_mb: Optional[float] = None
        self.start_mb: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def read_mb(self) -> Optional[float]:
        if self.pid is None:
            return None
        import psutil

        try:
            p = psutil.Process(self.pid)
            procs = [p, *p.children(recursive=True)]
            return sum(q.memory_info().rss for q in procs) / 2**20
        except psutil.Error:
            return None

    def _sample(self) -> Optional[float]:
        mb = self.read_mb()
        if mb is not None:
            self.peak_mb = max(self.peak_mb or 0.0, mb)
        return mb

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> "RssSampler":
        if self.pid is not None:
            self.start_mb = self._sample()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU time of the server (threads and child processes): robust to other load."""
    if pid is None:
        return None
    import psutil

    try:
        p = psutil.Process(pid)
        return sum(t.user + t.system for t in (q.cpu_times() for q in [p, *p.children(recursive=True)]))
    except psutil.Error:
        return None


@dataclass
class Level:
    server: str
    photos: str
    concurrency: int
    round: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    latency: dict[str, Any]
    mean_batch: Optional[float]
    server_preprocess_ms: Optional[float]
    server_inference_ms: Optional[float]
    server_cpu_ms_per_request: Optional[float]
    rss_before_mb: Optional[float]
    rss_peak_mb: Optional[float]
    statuses: dict[str, int] = field(default_factory=dict)
    server_total_ms: Optional[float] = None  # median server-reported total (receipt to response) per request


async def _drive(host: str, port: int, requests: list[bytes], concurrency: int, total: int
                 ) -> tuple[list[float], list[dict[str, Any]], dict[str, int], int]:
    latencies: list[float] = []
    timings: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    remaining = [total]
    errors = [0]

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                req = requests[rng.randrange(len(requests))]
                t0 = time.perf_counter()
                try:
                    writer.write(req)
                    status, body = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors[0] += 1
                    statuses["conn"] = statuses.get("conn", 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status != 200:
                    errors[0] += 1
                    continue
                try:
                    t = json.loads(body).get("timing")
                except ValueError:
                    t = None
                if t:
                    timings.append(t)
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, timings, statuses, errors[0]


def run_level(host: str, port: int, requests: list[bytes], concurrency: int, total: int, *, server: str = "",
              photos: str = "", round_: int = 0, pid: Optional[int] = None) -> Level:
    sampler = RssSampler(pid)
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    with sampler:
        rss0 = sampler.start_mb
        latencies, timings, statuses, errors = asyncio.run(_drive(host, port, requests, concurrency, total))
    seconds = time.perf_counter() - t0
    cpu1 = cpu_seconds(pid)
    ok = len(latencies) - errors

    def med(key: str) -> Optional[float]:
        vals = [t[key] for t in timings if isinstance(t.get(key), (int, float))]
        return round(statistics.median(vals), 3) if vals else None

    return Level(
        server=server, photos=photos, concurrency=concurrency, round=round_, requests=total, errors=errors,
        seconds=round(seconds, 3), throughput_rps=round(ok / seconds, 2) if seconds > 0 else 0.0,
        latency=latency_summary(latencies), mean_batch=med("batch_size"),
        server_preprocess_ms=med("preprocess_ms"), server_inference_ms=med("inference_ms"),
        server_cpu_ms_per_request=(round((cpu1 - cpu0) * 1e3 / max(1, ok), 3)
                                   if cpu0 is not None and cpu1 is not None else None),
        rss_before_mb=round(rss0, 1) if rss0 is not None else None,
        rss_peak_mb=round(sampler.peak_mb, 1) if sampler.peak_mb is not None else None, statuses=statuses,
        server_total_ms=med("total_ms"))


# -- the servers ------------------------------------------------------------------------------------------
@dataclass
class ServerSpec:
    """One server to start: ``kind`` "serve" (``python -m serve`` + ``args``) or "litserve" (the peer)."""

    name: str
    kind: str = "serve"
    args: list[str] = field(default_factory=list)


def free_port() -> int:
    """A port free now (a benchmark tool, not a test: a rare clash shows as a server that fails to start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(spec: ServerSpec, model: Path, port: int) -> subprocess.Popen:
    if spec.kind == "serve":
        cmd = [sys.executable, "-m", "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--no-access-log", "--log-level", "warning", "--queue-size", "4096", *spec.args]
    elif spec.kind == "litserve":
        cmd = [sys.executable, "-m", "edge_bench.litserve_peer", "--model", str(model), "--port", str(port),
               *spec.args]
    else:
        raise ConfigError(f"unknown server kind {spec.kind!r}; use serve or litserve")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    # its own process group: servers fork helpers (LitServe's API and inference processes, uvicorn's workers)
    # that outlive a signal to the leader alone; stop_server ends the whole group
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


class PortTaken(DistillError):
    """The server could not bind its port (another process took it after :func:`free_port` chose it)."""


def start_ready(spec: ServerSpec, model: Path, tries: int = 3) -> tuple[subprocess.Popen, int]:
    """Start a server on a free port and wait until it is ready; if the port was taken meanwhile (the race
    :func:`free_port` cannot rule out), start it again on another one."""
    for attempt in range(tries):
        port = free_port()
        proc = start_server(spec, model, port)
        try:
            wait_ready(port, proc)
            return proc, port
        except PortTaken:
            stop_server(proc)
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import urllib.request

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
            last = err[-1] if err else ""
            kind = PortTaken if any("address already in use" in line.lower() for line in err) else DistillError
            raise kind(f"server exited with {proc.returncode} during start-up: {last}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise DistillError(f"server on port {port} not ready within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the server (a graceful stop), then its whole process group: what it forked must not outlive it
    (LitServe's children kept running, and polling, after their parent had exited)."""
    resume_server(proc)  # a paused server would not act on SIGTERM until resumed
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _end_group(proc.pid, timeout)


def _end_group(pgid: int, timeout: float) -> None:
    """SIGTERM what is left of process group ``pgid``; SIGKILL it if it is still there after ``timeout`` s."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return  # nobody left
    t_end = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > t_end:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in group ``pgid``."""
    import psutil

    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                return True
        except (OSError, psutil.Error):  # gone meanwhile
            continue
    return False


# -- the run ----------------------------------------------------------------------------------------------
def run_load(model: Path, photos: dict[str, list[tuple[str, bytes]]], servers: list[ServerSpec], *,
             levels: list[int], requests: int, rounds: int = 1, warmup: int = 64, path: str = "/v1/classify",
             reference: Optional[str] = None, progress: Any = None) -> dict[str, Any]:
    """Start every server, then run ``rounds`` interleaved rounds over photo sets and levels; stop them.

    Each server is first warmed up at every photo set and level it will be measured at (``warmup`` requests, at
    least 4 per connection), so round 0 is not the first time it sees that many connections and batches that large.
    With one warm-up at concurrency 8, round 0 at concurrency 32 was the slowest round in 3 of 5 runs, up to 37%
    below the next one (docs/results.md 16 and 18).

    Only the server being measured runs: the others are paused (SIGSTOP to their process group, SIGCONT after),
    because an idle server is not free. An idle LitServe polls its queues at about a fifth of a core (measured,
    docs/results.md 15), which the server measured beside it would lose on a 2-core machine."""
    if not servers:
        raise ConfigError("no server to test")
    if not model.is_file():
        raise ConfigError(f"artifact not found: {model}")
    names = [s.name for s in servers]
    ref = resolve_reference(names, reference)  # before any server starts
    started: dict[str, tuple[subprocess.Popen, int]] = {}
    out: list[Level] = []
    try:
        for spec in servers:
            started[spec.name] = start_ready(spec, model)
            pause_server(started[spec.name][0])
        for spec in servers:
            proc, port = started[spec.name]
            with running(proc):  # warm-up: every photo set at every level, as it will be measured
                for name, imgs in photos.items():
                    reqs = [build_request("127.0.0.1", port, path, n, b) for n, b in imgs]
                    for c in levels:
                        run_level("127.0.0.1", port, reqs, c, max(warmup, 4 * c))
        for r in range(rounds):
            for name, imgs in photos.items():
                for c in levels:
                    for spec in servers:
                        proc, port = started[spec.name]
                        reqs = [build_request("127.0.0.1", port, path, n, b) for n, b in imgs]
                        with running(proc):
                            lv = run_level("127.0.0.1", port, reqs, c, requests, server=spec.name, photos=name,
                                           round_=r, pid=proc.pid)
                        out.append(lv)
                        if progress:
                            progress(lv)
    finally:
        for proc, _ in started.values():
            stop_server(proc)
    return {"levels": [lv.__dict__ for lv in out], "reference": ref, "summary": summarize(out, names, ref)}


def pause_server(proc: subprocess.Popen) -> None:
    """Freeze a server started by :func:`start_server` (its whole process group): it uses no CPU until resumed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGSTOP)


def resume_server(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def running(proc: subprocess.Popen) -> Iterator[None]:
    """The server runs inside the block and is paused again after it."""
    resume_server(proc)
    try:
        yield
    finally:
        pause_server(proc)


def resolve_reference(names: list[str], reference: Optional[str]) -> str:
    """The server the throughput ratios are to: ``reference``, which must be one of ``names``, or the first."""
    ref = reference if reference is not None else names[0]
    if ref not in names:
        raise ConfigError(f"reference server {ref!r} is not one of {', '.join(names)}")
    return ref


def summarize(levels: list[Level], names: list[str], reference: Optional[str] = None) -> list[dict[str, Any]]:
    """Per server, photo set and concurrency: the range over rounds, and the ratio of its throughput to the
    reference server's (default: the first) in the same round (side by side, same background load)."""
    ref_name = resolve_reference(names, reference)
    rows = []
    keys = sorted({(lv.photos, lv.concurrency) for lv in levels})
    for photos, c in keys:
        for name in names:
            mine = [lv for lv in levels if lv.server == name and lv.photos == photos and lv.concurrency == c]
            if not mine:
                continue
            ratios = []
            for lv in mine:
                ref = next((x for x in levels if x.server == ref_name and x.photos == photos and x.concurrency == c
                            and x.round == lv.round), None)
                if ref is not None and ref.throughput_rps > 0:
                    ratios.append(lv.throughput_rps / ref.throughput_rps)
            p50 = [lv.latency.get("p50_ms") for lv in mine if lv.latency.get("n")]
            p99 = [lv.latency.get("p99_ms") for lv in mine if lv.latency.get("n")]
            rows.append({
                "server": name, "photos": photos, "concurrency": c, "rounds": len(mine),
                "rps": [min(lv.throughput_rps for lv in mine), max(lv.throughput_rps for lv in mine)],
                "p50_ms": [min(p50), max(p50)] if p50 else None, "p99_ms": [min(p99), max(p99)] if p99 else None,
                "p99_over_p50": [round(b / a, 2) for a, b in zip(p50, p99) if a],
                "p99_over_p50_median": _median([b / a for a, b in zip(p50, p99) if a]),
                "throughput_vs_reference": [round(x, 2) for x in ratios],
                "throughput_vs_reference_median": _median(ratios),
                "errors": sum(lv.errors for lv in mine),
                "server_preprocess_ms": [lv.server_preprocess_ms for lv in mine],
                "server_inference_ms": [lv.server_inference_ms for lv in mine],
                "server_total_ms": [lv.server_total_ms for lv in mine],
                "server_cpu_ms_per_request": [lv.server_cpu_ms_per_request for lv in mine],
                "rss_growth_mb": [round(lv.rss_peak_mb - lv.rss_before_mb, 1) for lv in mine
                                  if lv.rss_peak_mb is not None and lv.rss_before_mb is not None],
            })
    return rows


def _median(values: list[float]) -> Optional[float]:
    """The run's figure for a per-round quantity: the median round, so one round the VM ran slow in does not decide
    it (every round is kept beside it)."""
    return round(statistics.median(values), 2) if values else None


def parse_server(item: str) -> ServerSpec:
    """``NAME=ARGS`` (``distill serve`` options, e.g. ``ours=--max-batch 16 --threads 1``) or ``litserve[=ARGS]``."""
    import shlex

    name, _, args = item.partition("=")
    name = name.strip()
    if not name:
        raise ConfigError(f"--server wants NAME=ARGS, got {item!r}")
    kind = "litserve" if name.startswith("litserve") else "serve"
    return ServerSpec(name, kind, shlex.split(args))
