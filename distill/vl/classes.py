"""Class lists for open-vocabulary students (torch-free): label files and the seen/unseen split.

Every bad input is a one-line :class:`~distill.errors.DistillError`: a labels file with empty lines or repeated
names, unknown class names, unseen classes overlapping the seen ones, nothing left to train on.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError


def _short(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def read_labels_file(path: str | Path) -> list[str]:
    """Class names, one per line. Unlike teacher class-name files this is strict: an empty line (other than a
    final newline) or a repeated name is an error, because a label set's row order is its class index."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"labels file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"labels file {p} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    lines = [ln.rstrip("\r") for ln in lines]
    if not lines:
        raise ConfigError(f"labels file {p} is empty")
    empty = [i + 1 for i, ln in enumerate(lines) if not ln.strip()]
    if empty:
        raise ConfigError(f"labels file {p} has an empty line (line {empty[0]}); one class name per line")
    names = [ln.strip() for ln in lines]
    return check_unique(names, f"labels file {p}")


def check_unique(names: Sequence[str], what: str) -> list[str]:
    seen: set[str] = set()
    dup = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dup:
        raise ConfigError(f"{what} repeats class name(s): {_short(sorted(set(dup)))}")
    return list(names)


def split_classes(
    class_names: Sequence[str], unseen: Sequence[str] | None = None, *, seen: Sequence[str] | None = None,
    fraction: float = 0.5, seed: int = 0,
) -> tuple[list[str], list[str]]:
    """(seen, unseen) class names, each in dataset order.

    ``unseen`` given: those classes are held out (``seen`` optionally given too: it must not overlap and
    defaults to the rest). Otherwise a seeded ``fraction`` of the classes (at least one, never all).
    """
    names = list(class_names)
    known = set(names)
    if unseen is not None:
        unseen = [u.strip() for u in unseen]
        if any(not u for u in unseen):
            raise ConfigError("unseen classes: empty class name in the list")
        check_unique(unseen, "unseen classes")
        bad = [u for u in unseen if u not in known]
        if bad:
            raise DataError(f"unknown unseen class(es) {_short(bad)}; the dataset has {_short(names, 12)}")
        if seen is not None:
            bad = [s for s in seen if s not in known]
            if bad:
                raise DataError(f"unknown seen class(es) {_short(bad)}; the dataset has {_short(names, 12)}")
            both = [s for s in seen if s in set(unseen)]
            if both:
                raise ConfigError(f"class(es) {_short(both)} are both seen and unseen")
            seen_set = set(seen)
        else:
            seen_set = known - set(unseen)
        unseen_set = set(unseen)
    else:
        if len(names) < 2:
            raise DataError("a seen/unseen split needs at least 2 classes")
        k = min(len(names) - 1, max(1, round(len(names) * fraction)))
        rng = np.random.default_rng([seed, zlib.crc32("\0".join(names).encode())])
        unseen_set = {names[i] for i in rng.choice(len(names), size=k, replace=False)}
        seen_set = known - unseen_set
    if not seen_set:
        raise ConfigError("every class is unseen: nothing left to train on")
    if not unseen_set:
        raise ConfigError("no unseen classes: pass --unseen-classes or a vl.unseen_fraction")
    return [n for n in names if n in seen_set], [n for n in names if n in unseen_set]
