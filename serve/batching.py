"""Dynamic micro-batching: concurrent requests share one inference call.

Requests submit their already-preprocessed images (an ``(n, ...)`` array) with :meth:`MicroBatcher.submit`.
One collector task on the event loop coalesces queued submissions until ``max_batch`` images are gathered
or the oldest one has waited ``max_wait_ms``; the batch is then run by a single worker thread (inference
never runs on the event loop) and each submitter gets its own rows back.

* ``max_batch=1`` disables batching (every request is its own inference call, still off the loop).
* ``adaptive_wait`` (default): the collector waits for a batch to fill only while other requests are
  announced (being received or decoded, see :meth:`MicroBatcher.incoming`); a lone request is dispatched at
  once, so batching adds no latency at low load, while under load batches form from the queue that builds
  up during the previous inference call.
* The queue is bounded in images (``queue_size``); a submission that does not fit raises :class:`QueueFull`
  (the route answers 503 with ``Retry-After``). :meth:`close` stops accepting work and drains what is queued.
* A submission with more images than ``max_batch`` is run alone, in chunks of ``max_batch``.
* :func:`choose_batch_limit` picks the largest batch worth running from timings (auto batch sizing, done at
  warm-up by :meth:`serve.state.ServeState.warm_up`); :meth:`MicroBatcher.set_max_batch` applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

log = logging.getLogger("serve.batching")

RunFn = Callable[[np.ndarray], np.ndarray]


class QueueFull(RuntimeError):
    """The bounded queue cannot take the submission now (answer 503 + Retry-After)."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


@dataclass
class BatchResult:
    """What a submitter gets back: its rows of the output plus where the time went."""

    output: np.ndarray
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def queue_depth(self, images: int) -> None: ...

    def batch(self, size: int, requests: int, seconds: float) -> None: ...

    def rejected(self, reason: str) -> None: ...


class Arrival:
    """A request announced to the batcher (see :meth:`MicroBatcher.incoming`); ``done()`` is idempotent."""

    __slots__ = ("_batcher",)

    def __init__(self, batcher: "MicroBatcher") -> None:
        self._batcher: Optional[MicroBatcher] = batcher
        batcher._incoming += 1

    def done(self) -> None:
        if self._batcher is not None:
            self._batcher._incoming -= 1
            self._batcher = None


class MicroBatcher:
    def __init__(
        self,
        run: RunFn,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        adaptive_wait: bool = True,
        observer: Optional[BatchObserver] = None,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_ms >= 0")
        self._run = run
        self.max_batch = max_batch
        self.configured_max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.adaptive_wait = adaptive_wait
        self._obs = observer or BatchObserver()
        self._items: deque[_Item] = deque()
        self._pending_images = 0
        self._incoming = 0
        self._wakeup: Optional[asyncio.Event] = None
        self._idle: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closing = False
        self._running_batch = False
        self.batches = 0
        self.images = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-infer")
        self._task = asyncio.create_task(self._collect(), name="serve-batcher")

    async def close(self, timeout: Optional[float] = 30.0) -> None:
        """Stop taking work, let queued and running batches finish (up to ``timeout``), stop the worker."""
        self._closing = True
        if self._task is None:
            return
        assert self._idle is not None and self._wakeup is not None
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._drained(), timeout)
        except asyncio.TimeoutError:
            log.warning("batcher: %d queued images not drained within %.1fs", self._pending_images, timeout or 0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for item in self._items:
            if not item.future.done():
                item.future.set_exception(BatcherClosed("server is shutting down"))
        self._items.clear()
        self._pending_images = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = None

    async def _drained(self) -> None:
        assert self._idle is not None
        while self._items or self._running_batch:
            self._idle.clear()
            await self._idle.wait()

    def set_max_batch(self, n: int) -> None:
        """Lower (or restore) the batch limit, e.g. after auto batch sizing; at most the configured ``max_batch``."""
        self.max_batch = max(1, min(int(n), self.configured_max_batch))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._closing

    @property
    def queue_depth(self) -> int:
        return self._pending_images

    # -- submitting --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def incoming(self) -> Iterator["Arrival"]:
        """Announce a request that is being received/decoded and will probably submit soon (adaptive wait).

        Pass the yielded :class:`Arrival` to :meth:`submit`, which ends the announcement as it enqueues.
        """
        arrival = Arrival(self)
        try:
            yield arrival
        finally:
            arrival.done()

    def run_sync(self, x: np.ndarray) -> np.ndarray:
        """Run ``x`` directly (warm-up); not batched."""
        return self._run(x)

    async def submit(self, x: np.ndarray, arrival: Optional["Arrival"] = None) -> BatchResult:
        if arrival is not None:
            arrival.done()
        if self._closing or self._task is None:
            self._obs.rejected("closed")
            raise BatcherClosed("server is not accepting work")
        n = int(x.shape[0])
        if n == 0:
            raise ValueError("empty submission")
        if self._pending_images + n > self.queue_size:
            self._obs.rejected("queue_full")
            raise QueueFull(f"queue full ({self._pending_images} images waiting, limit {self.queue_size})")
        item = _Item(x, asyncio.get_running_loop().create_future())
        self._items.append(item)
        self._pending_images += n
        self._obs.queue_depth(self._pending_images)
        assert self._wakeup is not None
        self._wakeup.set()
        return await item.future

    # -- the collector -----------------------------------------------------------------------------------
    async def _wait(self, timeout: float) -> bool:
        assert self._wakeup is not None
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _pop(self) -> _Item:
        item = self._items.popleft()
        self._pending_images -= item.n
        return item

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None and self._idle is not None
        while True:
            while not self._items:
                self._idle.set()
                if self._closing:
                    await asyncio.sleep(3600)  # close() cancels us
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = [self._pop()]
            n = batch[0].n
            deadline = batch[0].enqueued + self.max_wait
            while n < self.max_batch:
                if self._items:
                    if n + self._items[0].n > self.max_batch:
                        break
                    item = self._pop()
                    batch.append(item)
                    n += item.n
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._closing:
                    break
                if self.adaptive_wait and self._incoming == 0:
                    break
                if not await self._wait(remaining):
                    break
            self._obs.queue_depth(self._pending_images)
            live = [it for it in batch if not it.future.done()]  # a cancelled request drops out
            if live:
                self._running_batch = True
                try:
                    await self._execute(loop, live)
                finally:
                    self._running_batch = False

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch], axis=0)
        n = int(x.shape[0])
        started = time.perf_counter()
        try:
            out = await loop.run_in_executor(self._executor, self._run_chunked, x)
        except Exception as e:  # noqa: BLE001 - handed to every waiter, the route turns it into a 500
            log.exception("inference failed for a batch of %d images", n)
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        elapsed = time.perf_counter() - started
        self.batches += 1
        self.images += n
        self._obs.batch(n, len(batch), elapsed)
        row = 0
        for it in batch:
            rows = out[row : row + it.n]
            row += it.n
            if not it.future.done():
                it.future.set_result(
                    BatchResult(rows, (started - it.enqueued) * 1e3, elapsed * 1e3, n)
                )

    def _run_chunked(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] <= self.max_batch:
            return self._run(x)
        return np.concatenate([self._run(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)])


def batch_sizes_to_try(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to and including ``max_batch``."""
    sizes, n = [], 1
    while n < max_batch:
        sizes.append(n)
        n *= 2
    return sizes + [max_batch]


def choose_batch_limit(ms_per_image: dict[int, float], tolerance: float = 0.10, per_call_ms: float = 0.0) -> int:
    """The smallest batch size whose per-image time is within ``tolerance`` of the best measured one.

    ``per_call_ms``: the server's own cost per inference call (thread hand-off, futures, GIL), spread over the
    images of the call like the model's own per-call overhead.

    Batching only pays where the per-image cost shrinks with the batch (per-call overhead, a GPU, intra-op
    parallelism a single image cannot use). Where it does not (a small CNN already saturating a CPU core at batch
    1), larger batches only mean longer uninterrupted inference calls, later answers and, on a shared CPU, calls
    the kernel time-slices with every other runnable thread: small calls are then never slower.
    """
    if not ms_per_image:
        raise ValueError("no timings")
    cost = {n: t + per_call_ms / n for n, t in ms_per_image.items()}
    best = min(cost.values())
    return min(n for n, t in cost.items() if t <= best * (1.0 + tolerance))


def time_batch_sizes(run: RunFn, make_batch: Callable[[int], np.ndarray], sizes: list[int],
                     budget_s: float = 2.0) -> dict[int, float]:
    """Per-image wall milliseconds of ``run`` at each batch size: the minimum over a few calls (robust to other
    load on the machine), within about ``budget_s`` in all."""
    out: dict[int, float] = {}
    per_size = budget_s / max(1, len(sizes))
    for n in sizes:
        x = make_batch(n)
        run(x)  # first call at a new shape allocates
        best = float("inf")
        t_end = time.perf_counter() + per_size
        for i in range(50):
            t0 = time.perf_counter()
            run(x)
            best = min(best, time.perf_counter() - t0)
            if i >= 2 and time.perf_counter() > t_end:
                break
        out[n] = best * 1e3 / n
    return out
