"""How much does the harness add, and do repeated runs agree within the spread it reports?

Overhead: rounds alternate a bare ``for _ in range(n): run(x)`` loop (one clock read before and after) with the
SingleStream harness loop on the same model and input; overhead = harness wall per query / bare wall per query
- 1, the median over rounds (alternating cancels slow drifts of a shared machine). Target: under 2%.
On a busy machine that A/B difference is buried in noise (rounds swing by +-20%), so the harness's own cost is
also measured directly: both loops around a no-op (100k calls, fastest of the rounds), whose difference is the
harness's bookkeeping per query (two clock reads, a list append, the cycling of inputs); divided by the model's
median latency it gives a noise-free bound of the overhead (``bookkeeping_pct_of_p50``).

Repeatability: ``repeats`` SingleStream runs of ``duration`` seconds each; they agree when their reported spreads
(``spread_lo_ms``..``spread_hi_ms``: the 95% CI of the median joined with the range of block medians, the interval
``compare`` uses to call a change real) share a common point. The stricter bootstrap-CI-only check is reported too.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from .scenarios import single_stream


def bare_loop(fn: Callable[[Any], Any], x: Any, n: int) -> float:
    """Seconds per call of the plainest possible timing loop."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn(x)
    return (time.perf_counter() - t0) / n


def bookkeeping_ns(rounds: int = 5, n: int = 100_000) -> dict[str, float]:
    """Per-query cost of the harness loop itself, measured around a no-op (ns; fastest of ``rounds``)."""
    def noop(x: Any) -> None:
        return None

    far = time.perf_counter() + 3600
    bare, harness = [], []
    for _ in range(rounds):
        bare.append(bare_loop(noop, 0, n))
        r = single_stream(noop, [0], warmup=0, count=n, duration=None, deadline=far)
        harness.append(r["duration_s"] / r["n"])
    return {"bare_noop_ns": min(bare) * 1e9, "harness_noop_ns": min(harness) * 1e9,
            "bookkeeping_ns": max(0.0, min(harness) - min(bare)) * 1e9}


def measure_overhead(fn: Callable[[Any], Any], x: Any, *, iterations: int = 1000, rounds: int = 5,
                     warmup: int = 20, deadline: float) -> dict[str, Any]:
    for _ in range(warmup):
        fn(x)
    per_round = []
    bare_s, harness_s, reported_s = [], [], []
    for _ in range(rounds):
        if time.perf_counter() >= deadline:
            break
        b = bare_loop(fn, x, iterations)
        h = single_stream(fn, [x], warmup=0, count=iterations, duration=None, deadline=deadline)
        hw = h["duration_s"] / h["n"]
        bare_s.append(b)
        harness_s.append(hw)
        reported_s.append(h["mean_ms"] / 1e3)
        per_round.append((hw / b - 1.0) * 100.0)
    if not per_round:
        return {"rounds": 0}
    book = bookkeeping_ns()
    model_ms = statistics.median(bare_s) * 1e3
    return {
        **book,
        "bookkeeping_pct_of_bare": book["bookkeeping_ns"] / 1e6 / model_ms * 100.0,
        "rounds": len(per_round),
        "iterations_per_round": iterations,
        "bare_ms_per_query": statistics.median(bare_s) * 1e3,
        "harness_ms_per_query": statistics.median(harness_s) * 1e3,
        "reported_mean_ms": statistics.median(reported_s) * 1e3,
        "overhead_pct": statistics.median(per_round),
        "overhead_pct_rounds": per_round,
        "overhead_pct_range": [min(per_round), max(per_round)],
        "target_pct": 2.0,
        "meets_target": statistics.median(per_round) < 2.0,
        "bookkeeping_meets_target": book["bookkeeping_ns"] / 1e6 / model_ms * 100.0 < 2.0,
    }


def measure_repeatability(fn: Callable[[Any], Any], inputs: list[Any], *, repeats: int = 3, duration: float = 3.0,
                          warmup: int = 20, deadline: float) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        if time.perf_counter() >= deadline:
            break
        r = single_stream(fn, inputs, warmup=warmup, duration=duration, deadline=deadline)
        r.pop("_window", None)
        runs.append({k: r[k] for k in ("n", "p50_ms", "p90_ms", "iqr_ms", "ci_lo_ms", "ci_hi_ms", "spread_lo_ms",
                                       "spread_hi_ms")})
    if not runs:
        return {"repeats": 0}
    lo = max(r["ci_lo_ms"] for r in runs)
    hi = min(r["ci_hi_ms"] for r in runs)
    slo = max(r["spread_lo_ms"] for r in runs)
    shi = min(r["spread_hi_ms"] for r in runs)
    meds = [r["p50_ms"] for r in runs]
    pooled = statistics.median(meds)
    iqr = statistics.median(r["iqr_ms"] for r in runs)
    return {
        "repeats": len(runs),
        "runs": runs,
        "median_spread_pct": (max(meds) - min(meds)) / pooled * 100.0,
        "agree_spread": slo <= shi,
        "agree_ci": lo <= hi,
        "agree_iqr": all(abs(m - pooled) <= iqr / 2 for m in meds),
        "criterion": "agree_spread: the runs' reported spreads (CI of the median joined with the block-median "
                     "range) share a point; agree_ci: their bootstrap CIs alone share a point; agree_iqr: every "
                     "median lies within half an IQR of the median of medians",
    }
