"""Edge-CPU emulation on a bigger host: intra-op thread limits plus core pinning (``os.sched_setaffinity``).

This is an *emulation*: it reproduces the core count, not the edge CPU's per-core speed, caches, memory
bandwidth or thermal limits. Every output that ran under it carries ``emulation`` with that caveat.
"""

from __future__ import annotations

import os
from typing import Any

from distill.errors import ConfigError

#: Profile name -> (board, CPU cores the board has).
PROFILES: dict[str, tuple[str, int]] = {
    "rpi5": ("Raspberry Pi 5 (4x Cortex-A76)", 4),
    "orin-nano": ("Jetson Orin Nano (6x Cortex-A78AE)", 6),
}

CAVEAT = ("emulation: thread limit and core pinning only; per-core speed, caches, memory bandwidth and "
          "thermal limits of the board are not reproduced")


def usable_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def resolve_emulation(name: str | None) -> dict[str, Any] | None:
    """Validate a profile name and plan it (threads and cores) without applying anything."""
    if not name or name == "none":
        return None
    if name not in PROFILES:
        raise ConfigError(f"unknown --emulate profile {name!r}; choose from {', '.join(PROFILES)}")
    board, cores = PROFILES[name]
    have = usable_cores()
    pinned = have[:cores]
    notes = [CAVEAT]
    if len(have) < cores:
        notes.append(f"host has only {len(have)} usable cores, fewer than the {cores} of {board}: pinned to all "
                     f"{len(have)} and intra-op threads capped at {len(have)}; this under-states the board's "
                     f"parallelism")
    return {
        "profile": name,
        "board": board,
        "target_cores": cores,
        "intra_op_threads": min(cores, len(have)),
        "pinned_cores": pinned,
        "pinning": hasattr(os, "sched_setaffinity"),
        "degraded": len(have) < cores,
        "label": f"emulation:{name}",
        "notes": notes,
    }


def apply_emulation(plan: dict[str, Any] | None) -> None:
    """Pin this process to the planned cores (where the OS supports it) and cap torch's threads."""
    if not plan:
        return
    if plan["pinning"]:
        try:
            os.sched_setaffinity(0, set(plan["pinned_cores"]))
        except OSError as e:  # pragma: no cover - containers may forbid it
            plan["pinning"] = False
            plan["notes"].append(f"core pinning failed ({e.strerror}); thread limit only")
    else:  # pragma: no cover - macOS / Windows
        plan["notes"].append("os.sched_setaffinity is not available on this OS: thread limit only, no pinning")
    os.environ["OMP_NUM_THREADS"] = str(plan["intra_op_threads"])
