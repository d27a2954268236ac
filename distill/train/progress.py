"""What a person watching a run sees: a rich bar on a terminal, a plain line every N steps in a log (nohup, CI),
and the loss/throughput window the ``train`` metrics rows average over."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Window:
    """Averages of the loss terms and throughput between two ``train`` log events."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.ce, self.kd, self.images, self.seconds = 0, 0.0, 0.0, 0.0, 0, 0.0
        self.has_ce = self.has_kd = False

    def add(self, loss: float, terms: Any, images: int, seconds: float) -> None:
        self.n += 1
        self.loss += loss
        if terms.ce is not None:
            self.ce += float(terms.ce.detach())
            self.has_ce = True
        if terms.kd is not None:
            self.kd += float(terms.kd.detach())
            self.has_kd = True
        self.images += images
        self.seconds += seconds

    def flush(self) -> dict[str, Any]:
        n = max(self.n, 1)
        rec = {"loss": self.loss / n, "ce": self.ce / n if self.has_ce else None, "kd": self.kd / n if self.has_kd else None,
               "images_per_s": self.images / self.seconds if self.seconds else 0.0,
               "s_per_step": self.seconds / n}
        self.reset()
        return rec


def _hms(seconds: float) -> str:
    s = int(max(0.0, seconds) + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """``update`` after every step, ``note`` after every validation. On a terminal: a rich progress bar; in a
    log file: one line every ``every`` steps (``step 20/600 | loss 1.234 | val acc 41.2% | 0.153 s/step |
    0:01:27 left``); disabled: nothing."""

    def __init__(self, enabled: bool, total: int, start: int, every: int, stream: TextIO | None = None,
                 terminal: bool | None = None) -> None:
        from ..cli_base import console

        self.enabled, self.total, self.start, self.every = enabled, total, start, max(1, every)
        self.stream = stream or sys.stderr
        self.terminal = console.is_terminal if terminal is None else terminal
        self._bar: Any = None
        self._task: Any = None
        self._ips: float | None = None
        self._val = ""
        self._acc: float | None = None
        self._t0 = time.perf_counter()
        self._steps_since = 0

    def __enter__(self) -> "Progress":
        if self.enabled and self.terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            from ..cli_base import console

            self._bar = Bar(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, completed=self.start, info="")
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, done: int, loss: float, ips: float, lr: float) -> None:
        if not self.enabled:
            return
        self._steps_since += 1
        if self._bar is not None:
            self._ips = ips if self._ips is None else 0.9 * self._ips + 0.1 * ips
            info = f"loss {loss:.3f} | {self._ips:.0f} img/s | lr {lr:.1e}{self._val}"
            self._bar.update(self._task, completed=done, info=info)
        elif done % self.every == 0 or done == self.total:
            self.stream.write(self.line(done, loss, time.perf_counter() - self._t0, self._steps_since) + "\n")
            self.stream.flush()

    def line(self, done: int, loss: float, elapsed: float, steps: int) -> str:
        """One log line; s/step is ``elapsed`` over the ``steps`` this process ran (a resumed run counts its own)."""
        per = elapsed / max(1, steps)
        acc = "-" if self._acc is None else f"{100 * self._acc:.1f}%"
        return (f"step {done}/{self.total} | loss {loss:.4f} | val acc {acc} | {per:.3f} s/step | "
                f"{_hms(per * (self.total - done))} left")

    def note(self, val: dict[str, Any], selected: str | None = None) -> None:
        parts = [f"{k.removeprefix('acc_')} {v:.3f}" for k, v in val.items() if v is not None]
        self._val = " | val " + " ".join(parts)
        if selected is not None and val.get(selected) is not None:
            self._acc = float(val[selected])

    def say(self, message: str) -> None:
        """A one-off line (set-up time, interrupts), printed whatever the mode but ``enabled=False``."""
        from ..cli_base import console

        if self._bar is not None:
            console.print(message, highlight=False)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()
