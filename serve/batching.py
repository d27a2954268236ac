"""Dynamic micro-batching: concurrent requests share one inference call.

The batcher's API, for any route (``/v1/classify``, the Open Inference Protocol routes, ...):

1. ``arrival = batcher.announce()`` as soon as a request that will probably submit arrives (the server's
   middleware does this for every POST before the body is read, see :mod:`serve.app`); it keeps a batch open
   for this request (adaptive wait). ``arrival.done()`` (idempotent) withdraws it, e.g. for a bad upload.
2. ``result = await batcher.submit(x, arrival)`` with the request's already-prepared model input, an ``(n, ...)``
   array; it ends the announcement as it enqueues and returns a :class:`BatchResult` with the request's own
   rows of the output, the queue and inference time and the size of the shared call. It raises
   :class:`QueueFull` (answer 503 + ``Retry-After``) or :class:`BatcherClosed` (shutting down).

One inference thread takes queued submissions itself, in arrival order, coalescing them until ``max_batch``
images are gathered or the oldest one has waited ``max_wait_ms``, runs the batch (never on the event loop) and
hands each submitter its own rows back through the loop. The thread picks up the next batch the moment the last
one is done: it does not wait for the busy event loop to schedule a collector, which left the model idle between
calls under load.

* ``max_batch=1`` disables batching (every request is its own inference call, still off the loop).
* ``adaptive_wait`` (default): the thread waits for a batch to fill only while other requests are announced
  (being received or decoded); a lone request is run at once, so batching adds no latency at low load, while
  under load batches form from the queue that builds up during the previous inference call. The decision is
  the pure function :func:`batch_wait_s` of the clock, the deadline and the announcements; the clock is
  injectable (``clock=``) so tests can drive it.
* The queue is bounded in images (``queue_size``); a submission that does not fit raises :class:`QueueFull`.
  :meth:`close` stops accepting work and drains what is queued.
* A submission with more images than ``max_batch`` is run alone, in chunks of ``max_batch``.
* :func:`choose_batch_limit` picks the largest batch worth running from timings (auto batch sizing, done at
  warm-up by :meth:`serve.state.ServeState.warm_up`); :meth:`MicroBatcher.set_max_batch` applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

log = logging.getLogger("serve.batching")

RunFn = Callable[[np.ndarray], np.ndarray]
Clock = Callable[[], float]


def batch_wait_s(now: float, deadline: float, *, announced: int, adaptive: bool, closing: bool = False) -> float:
    """How long the inference thread keeps an unfilled batch open (seconds; 0: run it now).

    ``deadline``: when the oldest queued image has waited ``max_wait``. With ``adaptive`` waiting, a batch is
    held only while ``announced`` requests (received or being decoded, not yet submitted) may still join it;
    a lone request runs at once. Shutting down (``closing``) never waits.
    """
    if closing or (adaptive and announced <= 0):
        return 0.0
    return max(0.0, deadline - now)


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
    enqueued: float

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


class BatchObserver:
    """Hooks for metrics; the default does nothing. Called from the inference thread too: keep them thread-safe."""

    def queue_depth(self, images: int) -> None: ...

    def batch(self, size: int, requests: int, seconds: float) -> None: ...

    def rejected(self, reason: str) -> None: ...


class Arrival:
    """A request announced to the batcher (:meth:`MicroBatcher.announce`); ``done()`` is idempotent."""

    __slots__ = ("_batcher",)

    def __init__(self, batcher: "MicroBatcher") -> None:
        self._batcher: Optional[MicroBatcher] = batcher
        with batcher._cv:
            batcher._incoming += 1

    def done(self) -> None:
        """Withdraw the announcement (the request submitted or gave up)."""
        if self._batcher is not None:
            b, self._batcher = self._batcher, None
            with b._cv:
                b._incoming -= 1
                if b._incoming == 0:
                    b._cv.notify()  # a thread waiting for this arrival to fill its batch stops waiting

    close = done  # contextlib.closing(arrival)


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
        clock: Clock = time.perf_counter,
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
        self._clock = clock
        # Shared between the event loop and the inference thread, guarded by _cv.
        self._cv = threading.Condition()
        self._items: deque[_Item] = deque()
        self._pending_images = 0
        self._incoming = 0
        self._closing = False
        self._running_batch = False
        self._filling = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self.batches = 0
        self.images = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="serve-infer", daemon=True)
        self._thread.start()

    async def close(self, timeout: Optional[float] = 30.0) -> None:
        """Stop taking work, let queued and running batches finish (up to ``timeout``), stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            log.warning("batcher: %d queued images not drained within %.1fs", self._pending_images, timeout or 0)
        with self._cv:
            left = list(self._items)
            self._items.clear()
            self._pending_images = 0
        for item in left:
            if not item.future.done():
                item.future.set_exception(BatcherClosed("server is shutting down"))
        await asyncio.sleep(0)  # results the thread handed over last are delivered before we return
        self._thread = None

    def set_max_batch(self, n: int) -> None:
        """Lower (or restore) the batch limit, e.g. after auto batch sizing; at most the configured ``max_batch``."""
        self.max_batch = max(1, min(int(n), self.configured_max_batch))

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._closing

    @property
    def queue_depth(self) -> int:
        return self._pending_images

    @property
    def announced(self) -> int:
        """Requests announced and not yet submitted (or withdrawn)."""
        return self._incoming

    @property
    def filling(self) -> bool:
        """True while the inference thread holds an unfilled batch open for announced requests."""
        return self._filling

    # -- submitting (event loop) -------------------------------------------------------------------------
    def announce(self) -> Arrival:
        """Announce a request that is being received/decoded and will probably submit soon (adaptive wait).

        Pass the :class:`Arrival` to :meth:`submit`, which ends the announcement as it enqueues; call
        ``arrival.done()`` when the request ends without submitting (idempotent, so calling it always is fine).
        """
        return Arrival(self)

    @contextlib.contextmanager
    def incoming(self) -> Iterator[Arrival]:
        """:meth:`announce` as a context manager: the announcement ends when the block does, at the latest."""
        arrival = self.announce()
        try:
            yield arrival
        finally:
            arrival.done()

    def run_sync(self, x: np.ndarray) -> np.ndarray:
        """Run ``x`` directly (warm-up); not batched."""
        return self._run(x)

    async def submit(self, x: np.ndarray, arrival: Optional["Arrival"] = None) -> BatchResult:
        n = int(x.shape[0])
        if n == 0:
            raise ValueError("empty submission")
        item = _Item(x, asyncio.get_running_loop().create_future(), self._clock())
        with self._cv:
            if self._closing or self._thread is None:
                reason = "closed"
            elif self._pending_images + n > self.queue_size:
                reason = "queue_full"
            else:
                reason = ""
                self._items.append(item)
                self._pending_images += n
                depth = self._pending_images
                self._cv.notify()
        if arrival is not None:
            arrival.done()
        if reason == "closed":
            self._obs.rejected("closed")
            raise BatcherClosed("server is not accepting work")
        if reason == "queue_full":
            self._obs.rejected("queue_full")
            raise QueueFull(f"queue full ({self._pending_images} images waiting, limit {self.queue_size})")
        self._obs.queue_depth(depth)
        return await item.future

    # -- the inference thread ----------------------------------------------------------------------------
    def _pop(self) -> _Item:
        item = self._items.popleft()
        self._pending_images -= item.n
        return item

    def _next_batch(self) -> Optional[list[_Item]]:
        """Block until there is work, then coalesce a batch (None: closing and nothing left). Holds ``_cv``."""
        with self._cv:
            self._running_batch = False
            while not self._items:
                if self._closing:
                    return None
                self._cv.wait()
            batch = [self._pop()]
            n = batch[0].n
            deadline = batch[0].enqueued + self.max_wait
            while n < self.max_batch:
                if self._items:
                    if n + self._items[0].n > self.max_batch:
                        break
                    batch.append(self._pop())
                    n += batch[-1].n
                    continue
                remaining = batch_wait_s(self._clock(), deadline, announced=self._incoming,
                                         adaptive=self.adaptive_wait, closing=self._closing)
                if remaining <= 0:
                    break
                self._filling = True
                self._cv.wait(remaining)
                self._filling = False
            self._running_batch = True
            depth = self._pending_images
        self._obs.queue_depth(depth)
        return batch

    def _work(self) -> None:
        assert self._loop is not None
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            batch = [it for it in batch if not it.future.done()]  # a cancelled request drops out
            if not batch:
                continue
            x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch], axis=0)
            started = self._clock()
            try:
                out: np.ndarray | BaseException = self._run_chunked(x)
            except Exception as e:  # noqa: BLE001 - handed to every waiter, the route turns it into a 500
                log.exception("inference failed for a batch of %d images", x.shape[0])
                out = e
            elapsed = self._clock() - started
            if not isinstance(out, BaseException):
                self._obs.batch(int(x.shape[0]), len(batch), elapsed)
            try:
                self._loop.call_soon_threadsafe(self._deliver, batch, out, started, elapsed)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _deliver(self, batch: list[_Item], out: np.ndarray | BaseException, started: float, elapsed: float) -> None:
        """On the event loop: every submitter gets its rows (or the error)."""
        if isinstance(out, BaseException):
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(out)
            return
        n = int(out.shape[0])
        self.batches += 1
        self.images += n
        row = 0
        for it in batch:
            rows = out[row : row + it.n]
            row += it.n
            if not it.future.done():
                it.future.set_result(BatchResult(rows, (started - it.enqueued) * 1e3, elapsed * 1e3, n))

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
                     budget_s: float = 2.0, clock: Clock = time.perf_counter) -> dict[int, float]:
    """Per-image wall milliseconds of ``run`` at each batch size: the minimum over a few calls (robust to other
    load on the machine), within about ``budget_s`` in all (at least 3 and at most 50 timed calls a size)."""
    out: dict[int, float] = {}
    per_size = budget_s / max(1, len(sizes))
    for n in sizes:
        x = make_batch(n)
        run(x)  # first call at a new shape allocates
        best = float("inf")
        t_end = clock() + per_size
        for i in range(50):
            t0 = clock()
            run(x)
            t1 = clock()
            best = min(best, t1 - t0)
            if i >= 2 and t1 > t_end:
                break
        out[n] = best * 1e3 / n
    return out
