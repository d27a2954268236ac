"""Where a request's time goes and whether arrival order holds, per request (the diagnostic of docs/results.md 9b).

    python scripts/experiments/serve_order_trace.py serve MODEL PORT OUT.json   # our server, instrumented; Ctrl-C ends
    python scripts/experiments/serve_order_trace.py analyze OUT.json            # segments, GC pauses, rank displacement

Drive the server with the load tool's client meanwhile (e.g. ``edge_bench.loadtest._drive``, c=32). Timestamps per
POST: t0 receipt, t1 body parsed, t2 decode requested, t3/t4 decode start/end (pool thread), t5 back on the loop,
t6 submitted to the batcher, t7 result, t9 response sent. Not part of the package: it monkeypatches serve internals.
"""
import sys

if __name__ == "__main__" and sys.argv[1:2] == ["analyze"]:
    sys.argv = sys.argv[1:]

    import json, numpy as np
    d = json.load(open(sys.argv[1]))
    r = [x for x in d["recs"] if "t9" in x and "t7" in x]
    g = np.array([x[1] for x in d["gc"]])*1e3; gen = np.array([x[0] for x in d["gc"]])
    for k in (0,1,2):
        if (gen==k).any(): print(f"gc gen{k}: {int((gen==k).sum())} collections, max {g[gen==k].max():.1f} ms, total {g[gen==k].sum():.0f} ms")
    r.sort(key=lambda x: x["t0"])
    r = r[64:]  # warm-up
    tot = np.array([x["t9"]-x["t0"] for x in r])*1e3
    p50, p99 = np.percentile(tot, [50, 99])
    print(f"n={len(r)} server total p50 {p50:.1f} p99 {p99:.1f} ratio {p99/p50:.2f}")
    seg = {"read(t0-t1)": ("t0","t1"), "predecode(t1-t2)": ("t1","t2"), "poolwait(t2-t3)": ("t2","t3"), "decode(t3-t4)": ("t3","t4"),
           "back(t4-t5)": ("t4","t5"), "t5-t6": ("t5","t6"), "batch(t6-t7)": ("t6","t7"), "respond(t7-t9)": ("t7","t9")}
    idx = np.argsort(tot)
    slow = idx[-max(3, len(r)//50):]
    for k,(a,b) in seg.items():
        v = np.array([x[b]-x[a] for x in r])*1e3
        print(f"{k:18s} p50 {np.median(v):7.1f}  p99 {np.percentile(v,99):7.1f}  slowest2%: {np.mean(v[slow]):7.1f}")
    # order: arrival rank vs decode start rank, vs submit rank, vs finish rank
    def inv(key):
        order = np.argsort([x[key] for x in r]); ranks = np.empty(len(r)); ranks[order] = np.arange(len(r))
        return np.mean(np.abs(ranks - np.arange(len(r))))
    for k in ("t1","t2","t3","t6","t7","t9"):
        print("mean rank displacement vs arrival", k, round(inv(k),2))
    sys.exit(0)

import contextvars, json, sys, time, atexit, signal
import uvicorn
from serve import app as app_mod, routes, decode, batching
from serve.settings import ServeSettings

P = time.perf_counter
cur = contextvars.ContextVar("rec", default=None)
recs = []

orig_call = app_mod.ServeMiddleware.__call__
async def call(self, scope, receive, send):
    if scope["type"] != "http" or scope.get("method") != "POST":
        return await orig_call(self, scope, receive, send)
    rec = {"t0": P()}; recs.append(rec); cur.set(rec)
    try:
        await orig_call(self, scope, receive, send)
    finally:
        rec["t9"] = P()
app_mod.ServeMiddleware.__call__ = call

orig_read = routes._read_uploads
async def read(request, state):
    r = await orig_read(request, state)
    rec = cur.get()
    if rec is not None: rec["t1"] = P()
    return r
routes._read_uploads = read

orig_run = decode.DecodePool.run
async def run(self, fn, *args):
    rec = cur.get()
    rec["t2"] = P()
    def wrapped(*a):
        rec["t3"] = P(); out = fn(*a); rec["t4"] = P(); return out
    out = await orig_run(self, wrapped, *args)
    rec["t5"] = P()
    return out
decode.DecodePool.run = run

orig_submit = batching.MicroBatcher.submit
async def submit(self, x, arrival=None):
    rec = cur.get(); rec["t6"] = P()
    r = await orig_submit(self, x, arrival)
    rec["t7"] = P(); rec["bs"] = r.batch_size; rec["q"] = r.queue_ms
    return r
batching.MicroBatcher.submit = submit

model, port, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = ServeSettings(model=model, max_batch=16, max_wait_ms=5, intra_op_threads=1, queue_size=4096)
app = app_mod.create_app(s)
import gc
gcs = []
_g = {}
def gccb(phase, info):
    if phase == "start": _g["t"] = P()
    else: gcs.append((info["generation"], P() - _g["t"], _g["t"]))
gc.callbacks.append(gccb)
def dump(*_):
    json.dump({"recs": recs, "gc": gcs}, open(out, "w"))
atexit.register(dump)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
