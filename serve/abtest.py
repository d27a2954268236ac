"""Interleaved A/B load test: batching ON vs OFF (or any server configs) started side by side, measured in
alternating short rounds, reported as medians with their spread. On a shared or noisy machine a single sequential
load test can land anywhere in a wide range; alternating rounds see the same background load.

    python -m serve.abtest --model model.onnx --images imgs/ --concurrency 1,8,32 --rounds 5 --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .loadtest import build_request, free_port, load_images, run_level, server_stack, wait_ready

DEFAULT_CONFIGS = {
    "on": ["--max-batch", "32", "--max-wait-ms", "5", "--threads", "1"],
    "off": ["--max-batch", "1", "--max-wait-ms", "0", "--threads", "1"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--configs", type=json.loads, default=DEFAULT_CONFIGS,
                    help='JSON {"name": [serve CLI args]}; the first two are compared (default: on vs off)')
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=500, help="requests per config, level and round")
    ap.add_argument("--json", type=Path, default=None, help="write the raw per-round results here")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    images = load_images([args.images], 256)
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name, extra in args.configs.items():
            port = free_port()
            cmd = [sys.executable, "-m", "serve", "--model", str(args.model), "--host", "127.0.0.1", "--port", str(port),
                   "--no-access-log", "--log-level", "warning", "--queue-size", "4096", *extra]
            procs[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL), port)
        for name, (p, port) in procs.items():  # warm every server up before measuring any
            wait_ready("127.0.0.1", port, p)
            reqs = [build_request("127.0.0.1", port, "/v1/classify", n, b) for n, b in images]
            asyncio.run(run_level("127.0.0.1", port, reqs, 32, 300))
        res: dict[str, list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for c in levels:
                for name in (list(procs) if r % 2 == 0 else list(procs)[::-1]):
                    p, port = procs[name]
                    reqs = [build_request("127.0.0.1", port, "/v1/classify", n, b) for n, b in images]
                    c0 = time.process_time()
                    lr = asyncio.run(run_level("127.0.0.1", port, reqs, c, args.requests, name, p.pid))
                    res.setdefault(f"{name}@{c}", []).append({
                        "rps": lr.throughput_rps, "server_cpu_ms": lr.server_cpu_ms_per_request,
                        "client_cpu_ms": (time.process_time() - c0) * 1e3 / args.requests, "p50_ms": lr.p50_ms,
                        "p99_ms": lr.p99_ms, "mean_batch": lr.mean_batch, "errors": lr.errors})
        print(f"load average at end: {os.getloadavg()}; server stack {server_stack()}")
        names = list(procs)
        for c in levels:
            for name in names:
                v = res[f"{name}@{c}"]
                thr = sorted(x["rps"] for x in v)
                med = {k: statistics.median(x[k] for x in v) for k in v[0]}
                print(f"{name:>10} c={c:<3} req/s {med['rps']:7.1f} [{thr[0]:.0f}-{thr[-1]:.0f}]  server CPU "
                      f"{med['server_cpu_ms']:.2f} ms/req  p50 {med['p50_ms']:6.1f}  p99 {med['p99_ms']:6.1f}  "
                      f"batch {med['mean_batch']:5.2f}  errors {sum(x['errors'] for x in v)}")
            if len(names) >= 2:
                a, b = names[:2]
                ratios = sorted(x["rps"] / y["rps"] for x, y in zip(res[f"{a}@{c}"], res[f"{b}@{c}"]))
                print(f"   {a}/{b} throughput at c={c}: median {statistics.median(ratios):.2f} "
                      f"[{ratios[0]:.2f}-{ratios[-1]:.2f}]")
        if args.json:
            from distill.io import atomic_write_json

            atomic_write_json(args.json, res)
    finally:
        for p, _ in procs.values():
            p.terminate()
            p.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
