"""Where the CPU goes at concurrency C (a diagnosis, not a benchmark): per-thread server CPU per request, the client's CPU,
the machine's idle share and the server's timing medians (docs/results.md 14).

    python scripts/experiments/serve_cpu_breakdown.py MODEL PHOTO serve|litserve REQUESTS CONCURRENCY
    SARGS="--workers 2 --max-batch 16" python scripts/experiments/serve_cpu_breakdown.py ...   # other server options
"""
import asyncio, sys, time, os, subprocess, psutil
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from edge_bench.loadtest import build_request, _drive, start_ready, stop_server, ServerSpec
from pathlib import Path

model, photo, kind = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
n, c = int(sys.argv[4]), int(sys.argv[5])
args = os.environ.get("SARGS", "--max-batch 16 --max-wait-ms 5 --threads 1").split()
spec = ServerSpec("x", kind, args if kind == "serve" else [])
proc, port = start_ready(spec, model)
def stat():
    v = open("/proc/stat").readline().split()[1:]
    v = list(map(int, v)); return sum(v), v[3] + v[4]
try:
    req = build_request("127.0.0.1", port, "/v1/classify", "a.jpg", open(photo, "rb").read())
    asyncio.run(_drive("127.0.0.1", port, [req], 8, 200))
    p = psutil.Process(proc.pid)
    procs = [p, *p.children(recursive=True)]
    def threads():
        out = {}
        for q in procs:
            for t in q.threads():
                out[(q.pid, t.id)] = t.user_time + t.system_time
        return out
    th0 = threads(); s0 = stat(); me0 = time.process_time(); t0 = time.perf_counter()
    lat, tim, st, err = asyncio.run(_drive("127.0.0.1", port, [req], c, n))
    wall = time.perf_counter() - t0; me1 = time.process_time(); s1 = stat(); th1 = threads()
    names = {}
    for q in procs:
        for t in q.threads():
            try:
                names[(q.pid, t.id)] = open(f"/proc/{q.pid}/task/{t.id}/comm").read().strip()
            except OSError:
                names[(q.pid, t.id)] = "?"
    tot, idle = s1[0] - s0[0], s1[1] - s0[1]
    print(f"{kind} c={c}: {n/wall:.1f} req/s, statuses {st}; client CPU {1e3*(me1-me0)/n:.3f} ms/req; machine idle {100*idle/tot:.1f}%")
    srv = 0
    for k, v in sorted(th1.items(), key=lambda kv: -(kv[1] - th0.get(kv[0], 0))):
        d = v - th0.get(k, 0); srv += d
        if d > 0.01: print(f"   thread {k} {names.get(k)}: {1e3*d/n:.3f} ms/req")
    print(f"   server total {1e3*srv/n:.3f} ms/req")
finally:
    stop_server(proc)
import statistics
if tim:
    for key in tim[0]:
        vals = [t[key] for t in tim]
        print(f"   timing {key}: median {statistics.median(vals):.3f} p90 {sorted(vals)[int(0.9*len(vals))]:.3f}")
