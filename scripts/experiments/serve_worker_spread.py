"""How keep-alive connections spread over `distill serve --workers N`: open C connections at once, count each
worker's established ones, close them, repeat. With uvicorn's shared-socket workers the kernel's spread was uneven
(docs/results.md 15); with the supervisor of serve/workers.py it is even (docs/results.md 16).

    python scripts/experiments/serve_worker_spread.py MODEL [WORKERS] [CONNECTIONS] [TRIALS]
"""
import asyncio
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from edge_bench.loadtest import ServerSpec, start_ready, stop_server  # noqa: E402

model = Path(sys.argv[1])
workers, n, trials = (int(sys.argv[i]) if len(sys.argv) > i else d for i, d in ((2, 2), (3, 32), (4, 3)))
proc, port = start_ready(ServerSpec("w", "serve", ["--workers", str(workers)]), model)


async def main() -> None:
    for trial in range(trials):
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
        await asyncio.sleep(0.5)  # let every worker's loop accept what it was handed
        counts = []
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                k = sum(1 for c in p.net_connections() if c.status == "ESTABLISHED" and c.laddr.port == port)
            except psutil.Error:
                continue
            if k:
                counts.append(k)
        print(f"trial {trial}: connections per worker {sorted(counts)}")
        for _, w in conns:
            w.close()
        await asyncio.sleep(0.5)


try:
    asyncio.run(main())
finally:
    stop_server(proc)
