"""The numpy blend (distill/blend.py) against the torch one it replaced: same results, and the search's speed.

    git show 28c6527:distill/blend.py > /tmp/old_blend.py     # the last torch version
    PYTHONPATH=$PWD python scripts/experiments/blend_equivalence.py /tmp/old_blend.py

Prints the number of random cases whose search result or quick-blend accuracy differ (0 expected) and, side by
side in one process, the time of two old and two new end-of-run searches at two sizes, with the load average.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import torch

import distill.blend as new


def _old(path: str):
    spec = importlib.util.spec_from_file_location("old_blend", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def equivalence(old) -> tuple[int, int]:
    searches = accs = 0
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        n, c = [(500, 10), (300, 100), (2000, 10), (64, 3)][seed % 4]
        ce, kd = torch.randn(n, c, generator=g) * (1 + seed % 5), torch.randn(n, c, generator=g) * 3
        if seed % 7 == 0:
            ce, kd = ce.round(), kd.round()  # many exact ties
        y = torch.randint(0, c, (n,), generator=g)
        h = n // 2
        searches += old.search_blends(ce[:h], kd[:h], y[:h], ce[h:], kd[h:], y[h:]) != \
            new.search_blends(ce[:h], kd[:h], y[:h], ce[h:], kd[h:], y[h:])
        for a in (0.5, 0.3):
            accs += old.accuracy(old.blend_scores("prob", ce, kd, a, 0.5), y) != \
                new.accuracy(new.blend_scores("prob", ce, kd, a, 0.5), y)
    return searches, accs


def speed(old) -> None:
    for n, c in ((5000, 10), (2000, 1000)):
        g = torch.Generator().manual_seed(0)
        ce, kd, y = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)
        t: dict[str, list[float]] = {"old": [], "new": []}
        for name in ("old", "new", "old", "new"):
            t0 = time.perf_counter()
            (old if name == "old" else new).search_blends(ce, kd, y)
            t[name].append(time.perf_counter() - t0)
        print(f"n={n} C={c}: old {t['old'][0]:.2f}/{t['old'][1]:.2f} s, new {t['new'][0]:.2f}/{t['new'][1]:.2f} s, "
              f"new/old {sum(t['new']) / sum(t['old']):.2f}")
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")


if __name__ == "__main__":
    old = _old(sys.argv[1])
    print("differing searches, differing accuracies:", *equivalence(old))
    speed(old)
