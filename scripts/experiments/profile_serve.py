"""Where one `distill serve` worker spends its time under load (docs/results.md 18): start the server, drive it with
the load test's keep-alive client at a given concurrency, sample every thread with py-spy (``pip install py-spy``)
meanwhile, and print each thread's samples and the functions that hold the most of the event loop's thread.

    python scripts/experiments/profile_serve.py MODEL PHOTO_DIR [--concurrency 32] [--seconds 15] \
        [--server-args "--max-batch 16 --max-wait-ms 5 --threads 1"]

py-spy samples wall-clock stacks, so a thread waiting for the GIL shows the Python frame it waits in: read the
shares as where the loop's thread spends its time, not as CPU time.
"""
from __future__ import annotations

import argparse
import collections
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from edge_bench.loadtest import ServerSpec, build_request, run_level, start_ready, stop_server  # noqa: E402

_FRAME = re.compile(r" \((?:.*/)?([^/]+\.py):\d+\)")
_IDLE = ("Condition.wait (threading.py)", "_worker (thread.py)", "Event.wait (threading.py)",
         "Runner.run (runners.py)")  # the last: uvloop waiting in epoll, below Python


def aggregate(raw: Path, top: int) -> None:
    per_thread: collections.Counter[str] = collections.Counter()
    handling = 0
    below: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        frames = [_FRAME.sub(r" (\1)", f) for f in stack.split(";")]
        thread = frames[0].split(":")[-1].strip()
        if frames[-1] in _IDLE:
            continue
        per_thread[thread] += int(n)
        asgi = next((i for i, f in enumerate(frames) if f.startswith("RequestResponseCycle.run_asgi")), None)
        if thread == "MainThread" and asgi is not None:
            handling += int(n)
            for f in set(frames[asgi + 1:]):
                below[f] += int(n)
    print("busy samples per thread:", dict(per_thread))
    print(f"event loop thread: {per_thread['MainThread']} busy samples, {handling} in request handling (run_asgi)")
    for f, n in below.most_common(top):
        print(f"{n:6d} {100 * n / max(1, handling):5.1f}% of request handling  {f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--server-args", default="--max-batch 16 --max-wait-ms 5 --threads 1")
    ap.add_argument("--top", type=int, default=60)
    a = ap.parse_args()
    beside = Path(sys.executable).with_name("py-spy")
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:  # before a server is started
        sys.exit("error: py-spy not found: pip install py-spy (it is in the bench extra)")
    stop = threading.Event()
    proc, port = start_ready(ServerSpec("ours", "serve", shlex.split(a.server_args)), a.model)
    try:
        files = sorted(p for p in a.photos.iterdir() if p.is_file())
        reqs = [build_request("127.0.0.1", port, "/v1/classify", f.name, f.read_bytes()) for f in files]
        run_level("127.0.0.1", port, reqs, a.concurrency, 8 * a.concurrency)  # warm-up

        def load() -> None:
            while not stop.is_set():
                run_level("127.0.0.1", port, reqs, a.concurrency, 20 * a.concurrency)

        t = threading.Thread(target=load, daemon=True)
        t.start()
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "profile.txt"
            subprocess.run([spy, "record", "-p", str(proc.pid), "-d", str(a.seconds), "-r", "200", "-f", "raw",
                            "-o", str(raw), "--threads", "--idle"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stop.set()
            t.join()
            aggregate(raw, a.top)
    finally:
        stop.set()  # the load thread ends with its current level, whatever failed
        stop_server(proc)


if __name__ == "__main__":
    main()
