"""Bounded loopback load test of the server: ``python -m serve.loadtest --model ARTIFACT --images DIR``.

For each batching mode (``on``: ``--max-batch``/``--max-wait-ms``; ``off``: max_batch=1) it starts the server
(``python -m serve``) on 127.0.0.1, warms it up, then runs closed-loop load at each concurrency (default 1, 8
and 32; ``--requests`` per level) with a minimal keep-alive HTTP/1.1 client (so the client costs little CPU),
and records throughput, p50/p90/p99 latency, errors, the mean batch size the server reports, and the server's
RSS (psutil) before and after at least ``--soak`` requests. It also times the bare runtime call
(``Artifact.classify`` on the same bytes, in-process) so the server overhead can be stated, and checks the
targets: 0 errors, batching at the highest concurrency >= 1.5x batching off, median overhead <= 3 ms,
RSS growth < 5%.

``--url`` points it at a running server instead (one "external" mode; RSS only with ``--pid``).
The client shares the machine with the server: say so when quoting numbers (the report records the CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


# -- the client -------------------------------------------------------------------------------------------
def build_request(host: str, port: int, path: str, filename: str, data: bytes, ctype: str = "image/jpeg") -> bytes:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


@dataclass
class LevelResult:
    mode: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    mean_batch: float
    server_cpu_ms_per_request: Optional[float] = None
    statuses: dict[str, int] = field(default_factory=dict)


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU time of the server process (all its threads): robust to other load on the machine."""
    if pid is None:
        return None
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def run_level(host: str, port: int, requests: list[bytes], concurrency: int, total: int,
                    mode: str = "", pid: Optional[int] = None) -> LevelResult:
    latencies: list[float] = []
    batches: list[int] = []
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
                    status, body = await _read_response(reader)
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
                else:
                    batches.append(json.loads(body)["timing"]["batch_size"])
        finally:
            writer.close()

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    seconds = time.perf_counter() - t0
    cpu1 = cpu_seconds(pid)
    cpu_ms = round((cpu1 - cpu0) * 1e3 / max(1, len(latencies)), 3) if cpu0 is not None and cpu1 is not None else None
    lat = sorted(latencies) or [float("nan")]

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] * 1e3

    return LevelResult(mode, concurrency, total, errors[0], round(seconds, 3), round(len(latencies) / seconds, 1),
                       round(pct(50), 3), round(pct(90), 3), round(pct(99), 3),
                       round(statistics.fmean(lat) * 1e3, 3), round(statistics.fmean(batches), 2) if batches else 0,
                       cpu_ms, statuses)


# -- the server -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(host: str, port: int, proc: Optional[subprocess.Popen], timeout: float = 120) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"error: server exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("error: server not ready in time")


def start_server(model: Path, port: int, max_batch: int, max_wait_ms: float, threads: Optional[int],
                 extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--no-access-log",
           "--log-level", "warning", "--queue-size", "4096", *extra]
    if threads:
        cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def server_batching(host: str, port: int) -> Optional[dict[str, Any]]:
    """The server's batching settings from /v1/model, with the batch limit auto sizing chose at warm-up."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/model", timeout=5) as r:
            return json.loads(r.read()).get("batching")
    except (OSError, ValueError):
        return None


def rss_mb(pid: Optional[int]) -> Optional[float]:
    if pid is None:
        return None
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 2)


# -- the bare runtime --------------------------------------------------------------------------------------
def bare_runtime(model: Path, images: list[bytes], threads: Optional[int], n: int,
                 batch_sizes: tuple[int, ...] = (1, 8, 32)) -> dict[str, Any]:
    import numpy as np

    from export.runtime import load_artifact

    art = load_artifact(model, intra_op_threads=threads, allow_spinning=False)  # as the server runs it
    for b in images[:10]:
        art.classify([b])
    t_classify, c_classify, t_run = [], [], []
    x = art.prepare([images[0]])
    for i in range(n):
        b = images[i % len(images)]
        t0, c0 = time.perf_counter(), time.process_time()
        art.classify([b])
        t_classify.append(time.perf_counter() - t0)
        c_classify.append(time.process_time() - c0)
        t0 = time.perf_counter()
        art.run(x)
        t_run.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"classify_p50_ms": round(statistics.median(t_classify) * 1e3, 3),
                           "classify_cpu_p50_ms": round(statistics.median(c_classify) * 1e3, 3),
                           "run_p50_ms": round(statistics.median(t_run) * 1e3, 3), "calls": n, "run_by_batch": {}}
    for b in batch_sizes:
        xb = np.repeat(x, b, axis=0)
        art.run(xb)
        walls, cpus = [], []
        for _ in range(max(5, 256 // b)):
            w0, c0 = time.perf_counter(), time.process_time()
            art.run(xb)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        out["run_by_batch"][str(b)] = {"wall_ms_per_image": round(statistics.median(walls) * 1e3 / b, 3),
                                       "cpu_ms_per_image": round(statistics.median(cpus) * 1e3 / b, 3)}
    return out


def server_stack() -> dict[str, Optional[str]]:
    """The uvicorn event loop and HTTP parser versions ("auto" picks uvloop/httptools when installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Optional[str]] = {}
    for pkg in ("uvicorn", "uvloop", "httptools"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def environment(threads: Optional[int]) -> dict[str, Any]:
    import numpy
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "intra_op_threads": threads,
            **server_stack(), "client": "asyncio keep-alive HTTP/1.1 on the same machine (loopback)"}


# -- the run ----------------------------------------------------------------------------------------------
def load_images(paths: list[Path], limit: int) -> list[tuple[str, bytes]]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
    if not files:
        raise SystemExit("error: no images found (give --images DIR or files)")
    random.Random(0).shuffle(files)
    return [(f.name, f.read_bytes()) for f in files[:limit]]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serve.loadtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artifact to serve (starts its own servers)")
    ap.add_argument("--url", help="an already running server instead, e.g. http://127.0.0.1:8000")
    ap.add_argument("--pid", type=int, help="with --url: the server's pid, for RSS")
    ap.add_argument("--images", type=Path, nargs="+", required=True, help="image files or directories")
    ap.add_argument("--max-images", type=int, default=256, help="distinct images to cycle through")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--modes", default="on,off", help="batching modes to run: on, off")
    ap.add_argument("--requests", type=int, default=1000, help="requests per concurrency level")
    ap.add_argument("--soak", type=int, default=5000, help="minimum requests between the two RSS readings")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (server and bare)")
    ap.add_argument("--bare-calls", type=int, default=500, help="bare runtime calls for the overhead baseline")
    ap.add_argument("--server-arg", action="append", default=[], help="extra argument for python -m serve")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    if (args.model is None) == (args.url is None):
        ap.error("give exactly one of --model or --url")

    images = load_images(args.images, args.max_images)
    levels = [int(c) for c in args.concurrency.split(",") if c]
    report: dict[str, Any] = {"environment": environment(args.threads), "images": len(images),
                              "requests_per_level": args.requests, "levels": [], "rss": {}}
    if args.model is not None:
        report["model"] = str(args.model)
        report["bare_runtime"] = bare_runtime(args.model, [b for _, b in images], args.threads, args.bare_calls,
                                              tuple(sorted({1, 8, args.max_batch})))
        print(f"bare runtime: classify p50 {report['bare_runtime']['classify_p50_ms']} ms, "
              f"run p50 {report['bare_runtime']['run_p50_ms']} ms", file=sys.stderr)
    modes = [m for m in args.modes.split(",") if m] if args.model else ["external"]

    for mode in modes:
        proc = None
        if args.model is not None:
            port = free_port()
            host = "127.0.0.1"
            mb, mw = (args.max_batch, args.max_wait_ms) if mode == "on" else (1, 0.0)
            proc = start_server(args.model, port, mb, mw, args.threads, args.server_arg)
            pid: Optional[int] = proc.pid
        else:
            u = urlsplit(args.url)
            host, port, pid = u.hostname or "127.0.0.1", u.port or 80, args.pid
        try:
            wait_ready(host, port, proc)
            report.setdefault("batching", {})[mode] = server_batching(host, port)
            print(f"{mode:>8} batching: {report['batching'][mode]}", file=sys.stderr)
            reqs = [build_request(host, port, "/v1/classify", n, b) for n, b in images]
            asyncio.run(run_level(host, port, reqs, max(levels), max(200, 4 * max(levels))))  # warm-up
            rss0 = rss_mb(pid)
            done = 0
            for c in levels:
                res = asyncio.run(run_level(host, port, reqs, c, args.requests, mode, pid))
                done += res.requests
                report["levels"].append(asdict(res))
                print(f"{mode:>8} c={c:<3} {res.throughput_rps:8.1f} req/s  p50 {res.p50_ms:7.2f} ms  "
                      f"p99 {res.p99_ms:7.2f} ms  batch {res.mean_batch:5.2f}  server CPU "
                      f"{res.server_cpu_ms_per_request} ms/req  errors {res.errors}", file=sys.stderr)
            if done < args.soak:
                soak = asyncio.run(run_level(host, port, reqs, max(levels), args.soak - done, mode, pid))
                report.setdefault("soak", []).append(asdict(soak))
                done += soak.requests
            rss1 = rss_mb(pid)
            if rss0 is not None and rss1 is not None:
                report["rss"][mode] = {"before_mb": rss0, "after_mb": rss1, "requests": done,
                                       "growth_pct": round(100 * (rss1 - rss0) / rss0, 2)}
                print(f"{mode:>8} RSS {rss0} -> {rss1} MB over {done} requests", file=sys.stderr)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    report["targets"] = targets(report, levels)
    report["environment"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


def targets(report: dict[str, Any], levels: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lv = {(r["mode"], r["concurrency"]): r for r in report["levels"]}
    errors = sum(r["errors"] for r in report["levels"]) + sum(r["errors"] for r in report.get("soak", []))
    out["errors"] = {"value": errors, "target": 0, "met": errors == 0}
    top = max(levels)
    if ("on", top) in lv and ("off", top) in lv:
        ratio = lv[("on", top)]["throughput_rps"] / max(lv[("off", top)]["throughput_rps"], 1e-9)
        out[f"batching_speedup_c{top}"] = {"value": round(ratio, 2), "target": ">= 1.5", "met": ratio >= 1.5}
        con, coff = lv[("on", top)].get("server_cpu_ms_per_request"), lv[("off", top)].get("server_cpu_ms_per_request")
        if con and coff:
            out[f"batching_cpu_efficiency_c{top}"] = {
                "value": round(coff / con, 2), "note": "server CPU ms/request off / on (insensitive to other load)"}
    bare = report.get("bare_runtime")
    if bare:
        for mode in ("off", "on"):
            if (mode, 1) in lv:
                ovh = lv[(mode, 1)]["p50_ms"] - bare["classify_p50_ms"]
                out[f"overhead_p50_ms_batching_{mode}"] = {"value": round(ovh, 3), "target": "<= 3", "met": ovh <= 3}
                cpu = lv[(mode, 1)].get("server_cpu_ms_per_request")
                if cpu is not None:
                    out[f"overhead_cpu_ms_per_request_batching_{mode}"] = {
                        "value": round(cpu - bare["classify_cpu_p50_ms"], 3),
                        "note": "server CPU per request minus bare classify CPU (insensitive to other load)"}
    for mode, r in report.get("rss", {}).items():
        out[f"rss_growth_pct_{mode}"] = {"value": r["growth_pct"], "requests": r["requests"], "target": "< 5",
                                         "met": r["growth_pct"] < 5}
    return out


if __name__ == "__main__":
    sys.exit(main())
