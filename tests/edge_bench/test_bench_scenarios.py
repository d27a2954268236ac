"""Scenario mechanics on a fake model and a fake clock: exact counts, schedules and percentiles, never wall time.

The fake model advances the fake clock by its service time, so a "run of 0.25 s" is exactly 256 calls of 2**-10 s
(powers of two: the clock's sums are exact in floating point).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
from fake_clock import FakeClock

from edge_bench import scenarios
from edge_bench.scenarios import offline, poisson_arrivals, server, single_stream
from edge_bench.stats import bootstrap_median_ci, intervals_overlap, latency_summary

MS = 2.0 ** -10  # about a millisecond, exact in binary


@pytest.fixture(autouse=True)
def _no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scenario that sleeps for real instead of through its injected ``sleep`` fails at once."""
    def refuse(dt: float) -> None:
        raise AssertionError(f"time.sleep({dt}) called: the scenario ignored its injected sleep")
    monkeypatch.setattr(scenarios.time, "sleep", refuse)


def _rows(b: int) -> np.ndarray:
    return np.zeros((b, 2))


def test_single_stream_count_warmup_and_exact_percentiles():
    clock = FakeClock()
    cycle = [1 * MS, 2 * MS, 3 * MS, 10 * MS]
    times = iter(cycle * 100)
    r = single_stream(clock.model(lambda x: next(times)), [np.zeros((1, 3))], warmup=3, count=48,
                      deadline=60.0, clock=clock)
    assert len(clock.calls) == 3 + 48  # warm-up calls are run but not timed
    timed = (cycle * 100)[3:3 + 48]
    assert r["n"] == 48 and r["batch_size"] == 1 and not r["truncated"]
    want = latency_summary(timed)
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "min_ms", "mean_ms"):
        assert r[key] == pytest.approx(want[key], rel=1e-12), key
    assert r["duration_s"] == pytest.approx(sum(timed)) and r["throughput_ips"] == pytest.approx(48 / sum(timed))


def test_single_stream_stops_at_its_duration_and_at_the_hard_deadline():
    clock = FakeClock()
    r = single_stream(clock.model(MS), [1], warmup=0, duration=0.25, deadline=60.0, clock=clock)
    assert r["n"] == 256 and clock.t == 0.25 and not r["truncated"]  # the call that reaches 0.25 s is the last
    assert r["throughput_ips"] == pytest.approx(1024.0)

    clock = FakeClock()
    r = single_stream(clock.model(MS), [1], warmup=0, count=10**6, deadline=0.25, clock=clock)
    assert r["n"] == 256 and clock.t == 0.25 and r["truncated"]


def test_single_stream_cycles_its_inputs_in_order():
    clock = FakeClock()
    single_stream(clock.model(MS), ["a", "b", "c"], warmup=0, count=7, deadline=60.0, clock=clock)
    assert [x for _, x in clock.calls] == list("abcabca")


def test_offline_sweep_shares_the_duration_and_skips_past_the_deadline():
    clock = FakeClock()
    res = offline(clock.model(2 * MS), _rows, batch_sizes=(1, 4), warmup=2, duration=0.5, deadline=60.0, clock=clock)
    assert [r["batch_size"] for r in res] == [1, 4]
    # 0.25 s per size at 2**-9 s a call: 128 timed calls each (plus 2 warm-up calls each)
    assert [r["n"] for r in res] == [128, 128] and len(clock.calls) == 2 * (2 + 128)
    assert [r["throughput_ips"] for r in res] == [pytest.approx(512.0), pytest.approx(4 * 512.0)]
    assert [x.shape[0] for _, x in clock.calls] == [1] * 130 + [4] * 130

    clock = FakeClock()
    clock.t = 5.0
    cut = offline(clock.model(MS), _rows, batch_sizes=(1, 2), duration=1, deadline=5.0, clock=clock)
    assert all(r["status"] == "skipped" and "max-seconds" in r["reason"] for r in cut) and not clock.calls


def test_offline_with_a_count_runs_that_many_calls():
    clock = FakeClock()
    res = offline(clock.model(MS), _rows, batch_sizes=(2,), warmup=0, count=5, duration=None, deadline=60.0,
                  clock=clock, min_iterations=1)
    assert res[0]["n"] == 5 and not res[0]["truncated"] and clock.t == 5 * MS


def test_poisson_arrivals_rate():
    a = poisson_arrivals(1000.0, 20000, seed=1)
    assert np.all(np.diff(a) > 0)
    assert abs(20000 / a[-1] - 1000.0) / 1000.0 < 0.03
    assert np.array_equal(a, poisson_arrivals(1000.0, 20000, seed=1))  # seeded: reproducible
    with pytest.raises(ValueError):
        poisson_arrivals(0, 5)


def _fixed_arrivals(monkeypatch: pytest.MonkeyPatch, times: Sequence[float]) -> None:
    monkeypatch.setattr(scenarios, "poisson_arrivals", lambda qps, n, seed=0: np.asarray(times[:n], dtype=float))


def test_server_batches_what_has_arrived_and_counts_latency_from_arrival(monkeypatch):
    """A hand-made schedule: the worker takes every query that has arrived when it is free, up to max_batch."""
    _fixed_arrivals(monkeypatch, [0.0, 1e-3, 2e-3, 3e-3, 10e-3, 10e-3, 10e-3])
    clock = FakeClock()
    r = server(clock.model(4e-3), _rows, target_qps=100, bound_ms=7.5, max_batch=2, warmup=0, count=7,
               deadline=60.0, clock=clock, sleep=clock.sleep)
    # t=0: q0 alone -> 4 ms; t=4: q1,q2 (max 2) -> 8; t=8: q3 -> 12; t=12: q4,q5 -> 16; t=16: q6 -> 20
    assert [round(t * 1e3, 6) for t, _ in clock.calls] == [0, 4, 8, 12, 16]
    assert [x.shape[0] for _, x in clock.calls] == [1, 2, 1, 2, 1]
    assert r["batches"] == {1: 3, 2: 2} and r["completed"] == r["offered"] == 7 and r["unfinished"] == 0
    latencies = np.array([4, 7, 6, 9, 6, 6, 10]) * 1e-3  # finish - arrival, per query
    want = latency_summary(latencies)
    assert r["p50_ms"] == pytest.approx(want["p50_ms"]) and r["p99_ms"] == pytest.approx(want["p99_ms"])
    assert r["max_ms"] == pytest.approx(10.0) and not r["bound_met"]  # p99 9.9 ms > 7.5 ms
    assert r["achieved_qps"] == pytest.approx(7 / 20e-3)


def test_server_idles_until_the_next_arrival(monkeypatch):
    _fixed_arrivals(monkeypatch, [0.0, 0.5])
    clock = FakeClock()
    slept: list[float] = []

    def sleep(dt: float) -> None:
        slept.append(dt)
        clock.sleep(dt)

    r = server(clock.model(0.125), _rows, target_qps=4, bound_ms=150, warmup=0, count=2, deadline=60.0,
               clock=clock, sleep=sleep)
    assert slept == [0.375] and [t for t, _ in clock.calls] == [0.0, 0.5]
    assert r["bound_met"] and r["max_ms"] == 125.0 and r["batches"] == {1: 2}


def test_server_underloaded_matches_a_single_server_queue():
    """Poisson arrivals, one query at a time: each finishes at max(arrival, previous finish) + service."""
    clock = FakeClock()
    service = 2e-3
    r = server(clock.model(service), _rows, target_qps=100, bound_ms=250, duration=0.5, warmup=0, deadline=60.0,
               clock=clock, sleep=clock.sleep)
    arrivals = poisson_arrivals(100, int(np.ceil(100 * 0.5)), 0)
    arrivals = arrivals[arrivals <= 0.5]
    finish, lat = 0.0, []
    for a in arrivals:
        finish = max(a, finish) + service
        lat.append(finish - a)
    assert r["offered"] == r["completed"] == len(arrivals) and r["unfinished"] == 0 and r["bound_met"]
    assert r["p50_ms"] == pytest.approx(latency_summary(lat)["p50_ms"])
    assert r["p99_ms"] == pytest.approx(latency_summary(lat)["p99_ms"])


def test_server_overload_is_bounded_in_time():
    """10x more queries than the model can serve: the run stops once it has had as long again to drain."""
    clock = FakeClock()
    r = server(clock.model(5e-3), _rows, target_qps=2000, bound_ms=10, duration=0.3, warmup=0, deadline=60.0,
               clock=clock, sleep=clock.sleep)
    last = float(poisson_arrivals(2000, 600, 0)[r["offered"] - 1])
    stop = 2.0 * last + 1.0
    assert stop <= clock.t < stop + 5e-3  # the call that crossed the stop time is the last one
    assert r["completed"] == len(clock.calls) and r["unfinished"] == r["offered"] - r["completed"] > 0
    assert not r["bound_met"] and r["achieved_qps"] == pytest.approx(r["completed"] / clock.t)


def test_server_dynamic_batching_serves_more_than_one_at_a_time():
    clock = FakeClock()
    r = server(clock.model(2e-3), _rows, target_qps=2000, bound_ms=1000, max_batch=8, duration=0.3, warmup=0,
               deadline=60.0, clock=clock, sleep=clock.sleep)
    # one query at a time could not exceed 500 QPS; with batches of up to 8 the whole offer is served
    assert r["unfinished"] == 0 and max(r["batches"]) == 8
    assert sum(b * n for b, n in r["batches"].items()) == r["completed"] == r["offered"]
    assert sum(r["batches"].values()) == len(clock.calls)


def test_the_real_clock_is_the_default():
    r = single_stream(lambda x: x, [1], warmup=1, count=3, deadline=float("inf"))
    assert r["n"] == 3 and r["duration_s"] >= 0


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
