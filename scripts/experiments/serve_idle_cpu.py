"""What an idle server costs (docs/results.md 15): start each server alone, let it settle, then add up the CPU time
of its whole process tree over a quiet interval. An idle server that polls takes CPU from whatever runs beside it.

    python scripts/experiments/serve_idle_cpu.py MODEL [SECONDS]
"""
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from edge_bench.loadtest import ServerSpec, start_ready, stop_server  # noqa: E402

model = Path(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0


def tree_cpu(pid: int) -> tuple[float, int]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs), len(procs)


for spec in (ServerSpec("litserve", "litserve", []), ServerSpec("ours-w2", "serve", ["--workers", "2"]),
             ServerSpec("ours", "serve", [])):
    proc, _ = start_ready(spec, model)
    try:
        time.sleep(3)  # past start-up and warm-up
        c0, n = tree_cpu(proc.pid)
        time.sleep(seconds)
        c1, _ = tree_cpu(proc.pid)
        print(f"{spec.name}: {100 * (c1 - c0) / seconds:.1f}% of one core while idle ({n} processes)")
    finally:
        stop_server(proc)
