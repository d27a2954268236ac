#!/usr/bin/env bash
# Server CPU per request, an older commit vs the working tree, same client, alternated rounds; c=1 and c=32
# (docs/results.md 9b).  scripts/experiments/serve_cpu_ab.sh MODEL PHOTO [BASE_COMMIT]
# The base tree is `git archive`d to a temporary folder; each server runs from its own tree.
set -u
MODEL=$1; PHOTO=$2; BASE_COMMIT=${3:-cfd45c6}
HEAD_TREE=$(cd "$(dirname "$0")/../.." && pwd)
BASE_TREE=$(mktemp -d); git -C "$HEAD_TREE" archive "$BASE_COMMIT" | tar -x -C "$BASE_TREE"
DRIVE=$(mktemp --suffix=.py)
cat > "$DRIVE" <<'PYEOF'
import asyncio, sys, time
from edge_bench.loadtest import build_request, _drive, cpu_seconds
port, n, c, pid, photo = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
req = build_request("127.0.0.1", port, "/v1/classify", "a.jpg", open(photo, "rb").read())
asyncio.run(_drive("127.0.0.1", port, [req], 1, 64))
c0 = cpu_seconds(pid); t0 = time.perf_counter()
lat, tim, st, err = asyncio.run(_drive("127.0.0.1", port, [req], c, n))
c1 = cpu_seconds(pid)
print(f"server CPU {1e3*(c1-c0)/n:.3f} ms/request over {n} (c={c}), statuses {st}, wall {time.perf_counter()-t0:.1f}s, load {open('/proc/loadavg').read().split()[0]}")
PYEOF
PY=${PY:-python}
for round in 1 2 3; do
 for tree in base head; do
  if [ $tree = base ]; then T=$BASE_TREE; else T=$HEAD_TREE; fi
  if [ $tree = base ]; then off=0; else off=1; fi; port=$((18500 + round * 10 + off))
  cd $T; PYTHONPATH=$T nice -n 10 $PY -m serve --model "$MODEL" --host 127.0.0.1 --port $port --max-batch 16 --max-wait-ms 5 --threads 1 --no-access-log --log-level warning --queue-size 4096 &
  SP=$!
  for i in $(seq 100); do curl -sf http://127.0.0.1:$port/health/ready >/dev/null && break; sleep 0.2; done
  echo -n "round $round $tree c=1: "; PYTHONPATH=$HEAD_TREE nice -n 10 $PY "$DRIVE" $port 3000 1 $SP "$PHOTO"
  echo -n "round $round $tree c=32: "; PYTHONPATH=$HEAD_TREE nice -n 10 $PY "$DRIVE" $port 2000 32 $SP "$PHOTO"
  kill $SP; wait $SP; cd "$HEAD_TREE"
 done
done
rm -rf "$BASE_TREE" "$DRIVE"
