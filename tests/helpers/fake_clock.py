"""A fake clock for tests of anything that takes an injected ``clock`` (and ``sleep``): time moves only when the
test (or a fake model, :meth:`FakeClock.model`) advances it, so durations, counts and percentiles are exact."""

from __future__ import annotations

import threading
from typing import Callable


class FakeClock:
    """``clock()`` reads it, ``sleep(dt)`` and the fake model advance it; ``calls`` records each model call.

    Reading it ``max_reads`` times fails the test: a loop that waits for time that never passes fails instead of
    hanging. Thread-safe (a server's warm-up thread may advance it)."""

    def __init__(self, start: float = 0.0, max_reads: int = 200_000) -> None:
        self.t = start
        self.calls: list[tuple[float, object]] = []  # (start time, input)
        self._reads_left = max_reads
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._reads_left -= 1
            assert self._reads_left > 0, "the fake clock was read too often without the run ending"
            return self.t

    def sleep(self, dt: float) -> None:
        assert dt >= 0
        with self._lock:
            self.t += dt

    def model(self, service: Callable[[object], float] | float) -> Callable[[object], object]:
        """A fake model: each call takes ``service`` seconds (or ``service(x)``) of fake time and returns its input."""
        def fn(x: object) -> object:
            with self._lock:
                self.calls.append((self.t, x))
                self.t += service(x) if callable(service) else service
            return x
        return fn
