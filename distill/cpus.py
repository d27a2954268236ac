"""How many CPUs this process may really use (torch-free): the affinity mask, capped by the cgroup CPU quota.

``os.cpu_count()`` is the host's core count. In a container or a Kubernetes pod with ``resources.limits.cpu: 2``
on a 64-core node it is 64, and sizing thread pools from it oversubscribes the two CPUs the kernel will actually
grant (every pool thread time-sliced against the others). The usable count is the smaller of the CPUs in the
affinity mask (``taskset``, ``cpuset``) and the quota ``cpu.max`` (cgroup v2) / ``cpu.cfs_quota_us`` (v1)
allows, rounded up, over the process's cgroup and every cgroup above it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (the host's count where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _quota(text: str) -> Optional[float]:
    """CPUs allowed by one ``cpu.max`` line (``"200000 100000"`` -> 2.0, ``"max 100000"`` -> None)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_dirs(root: Path) -> list[tuple[str, Path]]:
    """(version, directory) of this process's cgroups, the process's own first, then every parent up to the root."""
    out: list[tuple[str, Path]] = []
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hid == "0" and controllers == "":
            version, base = "v2", root / "sys/fs/cgroup"
        elif "cpu" in controllers.split(","):
            version = "v1"
            base = next((root / "sys/fs/cgroup" / n for n in ("cpu,cpuacct", "cpu", "cpuacct,cpu")
                         if (root / "sys/fs/cgroup" / n).is_dir()), root / "sys/fs/cgroup/cpu")
        else:
            continue
        rel = Path(path.strip().lstrip("/"))
        for parent in [rel, *rel.parents]:
            out.append((version, base / parent))
    return out


def cgroup_cpu_limit(root: Path = Path("/")) -> Optional[float]:
    """The tightest CPU quota over this process's cgroups, in CPUs (None: no quota)."""
    limits: list[float] = []
    for version, d in _cgroup_dirs(root):
        try:
            if version == "v2":
                q = _quota((d / "cpu.max").read_text())
            else:
                q = _quota((d / "cpu.cfs_quota_us").read_text().strip() + " " +
                           (d / "cpu.cfs_period_us").read_text().strip())
        except OSError:
            continue
        if q is not None:
            limits.append(q)
    return min(limits) if limits else None


def usable_cpus(root: Path = Path("/")) -> int:
    """The CPUs this process may really use: affinity, capped by the cgroup quota (rounded up), at least 1."""
    n = affinity_cpus()
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return n
