"""Scenario mechanics on a fake model (fast, deterministic where it matters)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_bench.scenarios import offline, poisson_arrivals, server, single_stream
from edge_bench.stats import bootstrap_median_ci, intervals_overlap, latency_summary


def _busy(seconds: float):
    """A fake model taking ``seconds`` of wall time (sleep: robust when the shared CPUs are saturated)."""
    def fn(x):
        time.sleep(seconds)
        return x
    return fn


def far() -> float:
    return time.perf_counter() + 60


def test_single_stream_count_and_percentiles():
    r = single_stream(_busy(0.0002), [np.zeros((1, 3))], warmup=3, count=50, deadline=far())
    assert r["n"] == 50 and r["batch_size"] == 1 and not r["truncated"]
    assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["ci_lo_ms"] <= r["p50_ms"] <= r["ci_hi_ms"]
    assert r["p50_ms"] >= 0.2


def test_single_stream_duration_and_hard_deadline():
    t0 = time.perf_counter()
    r = single_stream(_busy(0.001), [1], warmup=0, duration=0.2, deadline=far())
    assert 0.15 < time.perf_counter() - t0 < 1.0 and r["n"] > 10
    t0 = time.perf_counter()
    r = single_stream(_busy(0.001), [1], warmup=0, count=10**6, deadline=time.perf_counter() + 0.2)
    assert time.perf_counter() - t0 < 1.0 and r["truncated"]


def test_offline_sweep_throughput_and_budget():
    res = offline(_busy(0.0005), lambda b: np.zeros((b, 2)), batch_sizes=(1, 4), duration=0.2, deadline=far())
    assert [r["batch_size"] for r in res] == [1, 4]
    assert all(r["throughput_ips"] > 0 for r in res)
    # batch 4 takes the same time per call here, so it has ~4x the throughput
    assert res[1]["throughput_ips"] > 1.5 * res[0]["throughput_ips"]
    cut = offline(_busy(0.0005), lambda b: np.zeros((b, 2)), batch_sizes=(1, 2), duration=1, deadline=time.perf_counter())
    assert all(r["status"] == "skipped" and "max-seconds" in r["reason"] for r in cut)


def test_poisson_arrivals_rate():
    a = poisson_arrivals(1000.0, 20000, seed=1)
    assert np.all(np.diff(a) > 0)
    assert abs(20000 / a[-1] - 1000.0) / 1000.0 < 0.03
    with pytest.raises(ValueError):
        poisson_arrivals(0, 5)


def test_server_underloaded_meets_bound():
    r = server(_busy(0.0005), lambda b: np.zeros((b, 2)), target_qps=100, bound_ms=250, duration=0.5,
               warmup=2, deadline=far())
    assert r["bound_met"] and r["unfinished"] == 0
    assert 30 < r["achieved_qps"] < 250
    assert r["completed"] == r["offered"]


def test_server_overload_is_bounded_in_time():
    """10x more queries than the model can serve: the run still ends promptly and fails the bound."""
    t0 = time.perf_counter()
    r = server(_busy(0.005), lambda b: np.zeros((b, 2)), target_qps=2000, bound_ms=10, duration=0.3,
               warmup=0, deadline=far())
    assert time.perf_counter() - t0 < 2.0
    assert not r["bound_met"] and r["unfinished"] > 0
    assert r["achieved_qps"] < 400


def test_server_dynamic_batching():
    r = server(_busy(0.002), lambda b: np.zeros((b, 2)), target_qps=2000, bound_ms=1000, max_batch=8,
               duration=0.3, warmup=0, deadline=far())
    # one query at a time could not exceed 500 QPS; batching up to 8 serves more
    assert max(r["batches"]) > 1 and sum(b * n for b, n in r["batches"].items()) == r["completed"]
    assert r["completed"] > sum(r["batches"].values())


def test_stats_helpers():
    s = latency_summary([0.001] * 10 + [0.002] * 10)
    assert s["n"] == 20 and s["p50_ms"] == pytest.approx(1.5)
    lo, hi = bootstrap_median_ci(np.arange(100.0))
    assert lo < 49.5 < hi and bootstrap_median_ci(np.arange(100.0)) == (lo, hi)
    assert intervals_overlap((1, 2), (2, 3)) and not intervals_overlap((1, 2), (2.1, 3))
    assert latency_summary([]) == {"n": 0}
    drift = latency_summary([0.001] * 50 + [0.003] * 50)  # a slow drift half-way through the run
    assert drift["drift_lo_ms"] == pytest.approx(1.0) and drift["drift_hi_ms"] == pytest.approx(3.0)
    assert drift["spread_lo_ms"] <= drift["ci_lo_ms"] and drift["spread_hi_ms"] >= drift["ci_hi_ms"]
