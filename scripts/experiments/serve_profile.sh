#!/usr/bin/env bash
# Where one server process's CPU goes under load (docs/results.md 15): start `distill serve` with SARGS, drive
# it at concurrency 32 with the bench client, record one worker (the first when there are several) with py-spy
# for 12 s at 250 Hz, then aggregate the stacks by function (inclusive and self share of the samples).
#
#   SARGS="--workers 2 --max-batch 16 --max-wait-ms 5" bash scripts/experiments/serve_profile.sh MODEL PHOTO OUT.txt
#
# Needs py-spy (pip install py-spy) and permission to trace (root, or ptrace_scope 0).
set -euo pipefail
MODEL=$1 PHOTO=$2 OUT=$3
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-18123}
$PY -m distill serve --model "$MODEL" --port "$PORT" --no-access-log --log-level warning ${SARGS:-} > /dev/null 2>&1 &
SRV=$!
trap 'kill $SRV 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "localhost:$PORT/health/ready" > /dev/null && break; sleep 1; done
$PY - "$PORT" "$PHOTO" <<'PYEOF' &
import asyncio, sys
sys.path.insert(0, ".")
from edge_bench.loadtest import _drive, build_request
port, photo = int(sys.argv[1]), sys.argv[2]
req = build_request("127.0.0.1", port, "/v1/classify", "a.jpg", open(photo, "rb").read())
asyncio.run(_drive("127.0.0.1", port, [req], 32, 25000))
PYEOF
CLIENT=$!
sleep 3
WORKER=$(pgrep -P "$SRV" -f spawn_main | head -1 || true)
py-spy record -p "${WORKER:-$SRV}" -r 250 -d 12 --threads -f raw -o "$OUT" --nonblocking > /dev/null 2>&1
kill $CLIENT 2>/dev/null || true
$PY - "$OUT" <<'PYEOF'
import collections, sys
def key(frame):
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].split('/')[-1]})" if where else frame
incl, own, threads, total = collections.Counter(), collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    n, frames = int(n), stack.split(";")
    threads[frames[0]] += n
    total += n
    for k in {key(f) for f in frames[1:]}:
        incl[k] += n
    own[key(frames[-1])] += n
print(f"{total} samples")
for t, n in threads.most_common():
    print(f"  {100 * n / total:5.1f}% {t}")
for title, c in (("inclusive", incl), ("self", own)):
    print(f"--- {title}")
    for k, n in c.most_common(40):
        print(f"{100 * n / total:6.1f}% {k}")
PYEOF
