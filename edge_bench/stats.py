"""Latency statistics: percentiles, interquartile range and a bootstrap confidence interval of the median.

Two spreads come with every latency result:

- ``ci_lo_ms``/``ci_hi_ms``: the 95% bootstrap CI of the median (sampling noise of this run);
- ``drift_lo_ms``/``drift_hi_ms``: the lowest and highest median of 5 consecutive blocks of the run (slow drift:
  other processes, frequency scaling, caches), which a bootstrap of independent samples cannot see.

``spread_lo_ms``/``spread_hi_ms`` is their union: the interval ``compare`` and ``overhead`` use to decide whether
two runs differ (a change is called real only when the two runs' spreads do not overlap). The IQR is reported too.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: Resamples for the bootstrap CI of the median (seeded: the same samples give the same interval).
BOOTSTRAP_RESAMPLES = 1000
_MAX_BOOTSTRAP_SAMPLES = 5000


def bootstrap_median_ci(samples: Sequence[float] | np.ndarray, level: float = 0.95,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the median (samples beyond 5,000 are thinned evenly to keep it fast)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    if x.size > _MAX_BOOTSTRAP_SAMPLES:
        x = np.sort(x)[np.linspace(0, x.size - 1, _MAX_BOOTSTRAP_SAMPLES).astype(int)]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    meds = np.median(x[idx], axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def latency_summary(latencies_s: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Milliseconds: n, mean, min, max, p50, p90, p99, IQR and the 95% CI of the median."""
    x = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if x.size == 0:
        return {"n": 0}
    p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    lo, hi = bootstrap_median_ci(x)
    dlo, dhi = block_median_range(x)
    return {
        "n": int(x.size),
        "mean_ms": float(x.mean()),
        "min_ms": float(x.min()),
        "max_ms": float(x.max()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "iqr_ms": float(p75 - p25),
        "ci_lo_ms": lo,
        "ci_hi_ms": hi,
        "drift_lo_ms": dlo,
        "drift_hi_ms": dhi,
        "spread_lo_ms": min(lo, dlo),
        "spread_hi_ms": max(hi, dhi),
    }


def block_median_range(x: np.ndarray, blocks: int = 5) -> tuple[float, float]:
    """(min, max) of the medians of ``blocks`` consecutive chunks (just the median when there are too few)."""
    if x.size < 5 * blocks:
        m = float(np.median(x))
        return m, m
    meds = [float(np.median(c)) for c in np.array_split(x, blocks)]
    return min(meds), max(meds)


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return not (a[1] < b[0] or b[1] < a[0])
