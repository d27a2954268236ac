"""MLPerf-style scenarios over any ``run(batch)`` callable: SingleStream, Offline and Server.

Each scenario warms up first, then runs for a fixed ``count`` of queries or for ``duration`` seconds, and never
runs past ``deadline`` (an absolute ``clock()`` value: the hard bound of the whole benchmark). The
timed region is the call alone: inputs are prepared once beforehand (decode and preprocessing are measured
separately), so the numbers compare models and backends, not JPEG decoders.

- SingleStream: one query of batch 1 at a time; p50/p90/p99 latency (MLPerf's metric is p90).
- Offline: throughput (images/s) for each batch size of a sweep.
- Server: queries arrive as a Poisson process at ``target_qps``; a single worker takes what has arrived (up to
  ``max_batch`` at once) and runs it. A query's latency counts from its arrival, so queueing is included; the
  result says whether p99 stayed under ``bound_ms`` and which rate was really achieved. Arrival times are
  drawn up front from a seeded generator, so a run is reproducible and bounded: an overloaded run gets as long
  again as the arrival span to drain its queue, and queries not finished by then (or by the deadline) are
  counted as ``unfinished`` (and fail the bound).

Every runner takes ``clock`` (default ``time.perf_counter``; ``deadline`` is on its scale) and the Server scenario
``sleep``, so tests drive them with a fake clock and a fake model that advances it: exact counts, schedules and
percentiles, never wall time.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from .stats import latency_summary

RunFn = Callable[[Any], Any]
BatchFn = Callable[[int], Any]
#: A monotonic clock in seconds (``time.perf_counter``, or a test's fake one).
Clock = Callable[[], float]
Sleep = Callable[[float], None]

SCENARIOS = ("single-stream", "offline", "server")
MLPERF_NAMES = {"single-stream": "SingleStream", "offline": "Offline", "server": "Server", "http": "HTTP"}
DEFAULT_BATCH_SWEEP = (1, 8, 32, 128)


def _stop_at(start: float, duration: float | None, deadline: float) -> float:
    return min(deadline, start + duration) if duration else deadline


def warm_up(fn: RunFn, inputs: Sequence[Any], count: int, deadline: float,
            clock: Clock = time.perf_counter) -> int:
    done = 0
    while done < count and clock() < deadline:
        fn(inputs[done % len(inputs)])
        done += 1
    return done


def single_stream(fn: RunFn, inputs: Sequence[Any], *, warmup: int = 10, count: int | None = None,
                  duration: float | None = 5.0, deadline: float,
                  clock: Clock = time.perf_counter) -> dict[str, Any]:
    """Batch-1 queries back to back; ``inputs`` are single-image batches, cycled."""
    if not inputs:
        raise ValueError("single_stream needs at least one input")
    warm_up(fn, inputs, warmup, deadline, clock)
    n_in = len(inputs)
    limit = count if count else 1 << 62
    lat: list[float] = []
    append = lat.append
    start = clock()
    stop = _stop_at(start, None if count else duration, deadline)
    i = 0
    while i < limit:
        x = inputs[i % n_in]
        t0 = clock()
        fn(x)
        t1 = clock()
        append(t1 - t0)
        i += 1
        if t1 >= stop:
            break
    wall = clock() - start
    out = latency_summary(lat)
    out.update(batch_size=1, duration_s=wall, throughput_ips=len(lat) / wall if wall > 0 else None,
               truncated=bool(count and len(lat) < count), _window=(start, start + wall))
    return out


def offline(fn: RunFn, make_batch: BatchFn, *, batch_sizes: Sequence[int] = DEFAULT_BATCH_SWEEP,
            warmup: int = 2, count: int | None = None, duration: float | None = 5.0,
            deadline: float, min_iterations: int = 3, clock: Clock = time.perf_counter) -> list[dict[str, Any]]:
    """Throughput per batch size; ``duration`` is shared evenly by the sizes of the sweep."""
    results: list[dict[str, Any]] = []
    per_size = (duration / len(batch_sizes)) if duration else None
    for b in batch_sizes:
        if clock() >= deadline:
            results.append({"batch_size": b, "status": "skipped", "reason": "time budget (--max-seconds) exhausted"})
            continue
        x = make_batch(b)
        warm_up(fn, [x], warmup, deadline, clock)
        lat: list[float] = []
        start = clock()
        stop = _stop_at(start, per_size, deadline)
        while True:
            t0 = clock()
            fn(x)
            t1 = clock()
            lat.append(t1 - t0)
            if count:
                if len(lat) >= count or t1 >= deadline:
                    break
            elif (t1 >= stop and len(lat) >= min_iterations) or t1 >= deadline:
                break
        wall = clock() - start
        row = latency_summary(lat)
        row.update(batch_size=b, duration_s=wall, throughput_ips=b * len(lat) / wall if wall > 0 else None,
                   truncated=bool(count and len(lat) < count), _window=(start, start + wall))
        results.append(row)
    return results


def poisson_arrivals(qps: float, n: int, seed: int = 0) -> np.ndarray:
    """``n`` arrival times (seconds from 0) of a Poisson process at rate ``qps``."""
    if qps <= 0:
        raise ValueError("target QPS must be positive")
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1.0 / qps, size=n))


def server(fn: RunFn, make_batch: BatchFn, *, target_qps: float, bound_ms: float, max_batch: int = 1,
           warmup: int = 10, count: int | None = None, duration: float | None = 5.0, deadline: float,
           seed: int = 0, clock: Clock = time.perf_counter, sleep: Sleep = time.sleep) -> dict[str, Any]:
    """Poisson arrivals at ``target_qps`` served by one worker (dynamic batching up to ``max_batch``)."""
    one = make_batch(1)
    warm_up(fn, [one], warmup, deadline, clock)
    batches = {1: one}
    now0 = clock()
    budget = max(0.0, deadline - now0)
    span = min(duration, budget) if (duration and not count) else budget
    n = int(count) if count else max(1, int(np.ceil(target_qps * span)))
    arrivals = poisson_arrivals(target_qps, n, seed)
    if not count:
        arrivals = arrivals[arrivals <= span] if (arrivals <= span).any() else arrivals[:1]
    n = arrivals.size
    latencies: list[float] = []
    batch_hist: dict[int, int] = {}
    i = 0
    t_start = clock()
    # Overload must not run on until the global deadline: after the last arrival, allow as long again to drain.
    stop = min(deadline, t_start + 2.0 * float(arrivals[-1]) + 1.0)
    while i < n:
        now = clock() - t_start
        if t_start + now >= stop:
            break
        if arrivals[i] > now:
            sleep(min(arrivals[i] - now, max(0.0, stop - clock())))
            continue
        j = i + 1
        while j < n and j - i < max_batch and arrivals[j] <= now:
            j += 1
        b = j - i
        if b not in batches:
            batches[b] = make_batch(b)
        fn(batches[b])
        done = clock() - t_start
        latencies.extend(done - arrivals[i:j])
        batch_hist[b] = batch_hist.get(b, 0) + 1
        i = j
    wall = (clock() - t_start)
    unfinished = int(n - i)
    out = latency_summary(latencies)
    achieved = len(latencies) / wall if wall > 0 else 0.0
    p99 = out.get("p99_ms")
    out.update(
        batch_size=1,
        target_qps=float(target_qps),
        achieved_qps=achieved,
        offered=int(n),
        completed=len(latencies),
        unfinished=unfinished,
        bound_ms=float(bound_ms),
        bound_met=bool(p99 is not None and p99 <= bound_ms and unfinished == 0),
        max_batch=int(max_batch),
        batches=batch_hist,
        duration_s=wall,
        throughput_ips=achieved,
        _window=(t_start, t_start + wall),
    )
    return out
