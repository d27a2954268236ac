"""What happens around the steps, kept out of the loop: interrupts and the test hooks.

* :class:`InterruptGuard`: SIGINT/SIGTERM during training set a flag; the loop finishes the step it is in,
  writes a resumable ``last.pt`` and stops with :class:`TrainingInterrupted` (one line, exit 130 / 143). A second
  signal falls through to the default behaviour, so a stuck run can still be stopped.
* Test hooks (``DISTILL_TEST_KILL_AT_STEP=k``: SIGKILL right after step k, a real unclean kill;
  ``DISTILL_TEST_SIGNAL_AT_STEP=k:INT|TERM``: send that signal to this process after step k), read from the
  environment by :func:`hooks_from_env` and called by the loop after every step like any other hook.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable

from ..errors import DistillError

KILL_ENV = "DISTILL_TEST_KILL_AT_STEP"
SIGNAL_ENV = "DISTILL_TEST_SIGNAL_AT_STEP"

#: ``hook(done)``, called after step ``done`` is complete (metrics and checkpoints of that step written).
StepHook = Callable[[int], None]


class TrainingInterrupted(DistillError):
    """The run stopped on a signal after writing a resumable checkpoint; exit status 128 + signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def _signal_hook(at: int, signum: int) -> StepHook:
    def hook(done: int) -> None:
        if done == at:
            os.kill(os.getpid(), signum)
    return hook


def hooks_from_env(env: dict[str, str] | None = None) -> list[StepHook]:
    """The test hooks the environment asks for (none in normal use)."""
    env = os.environ if env is None else env
    hooks: list[StepHook] = []
    kill_at = int(env.get(KILL_ENV, "0") or 0)
    if kill_at:
        hooks.append(_signal_hook(kill_at, signal.SIGKILL))
    spec = env.get(SIGNAL_ENV, "")
    if spec:
        step, _, name = spec.partition(":")
        hooks.append(_signal_hook(int(step), getattr(signal, "SIG" + (name or "INT").upper().removeprefix("SIG"))))
    return hooks


class InterruptGuard:
    """``with InterruptGuard(enabled) as guard:`` ... ``guard.signum`` is the first SIGINT/SIGTERM received (or
    None). Installs handlers only in the main thread (signal handlers cannot be set elsewhere)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        for s, prev in self._previous.items():  # a second signal: the default (or the caller's) behaviour
            signal.signal(s, prev)

    def __enter__(self) -> "InterruptGuard":
        if self.enabled:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


__all__ = ["InterruptGuard", "KILL_ENV", "SIGNAL_ENV", "StepHook", "TrainingInterrupted", "hooks_from_env"]
