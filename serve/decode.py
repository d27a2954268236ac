"""The decode pool: uploads are decoded and preprocessed off the event loop, in arrival order, by a bounded
number of threads sized to the CPUs the process may really use (:func:`distill.cpus.usable_cpus`).

Why a pool of its own rather than anyio's default thread limiter (40 threads): 32 concurrent 12-megapixel uploads
would each start a decode at once, time-sliced against one another and the inference thread on a 2-core box,
so every request finished late and peak memory held 32 decoded photos. Here at most ``threads`` decodes run; the
rest wait in the executor's FIFO queue (bounded by ``max_pending``; beyond it :class:`serve.batching.QueueFull`,
answered 503 + ``Retry-After``), so requests leave the pool in the order they arrived and the slowest one waits
about as long as the median one. The event loop only awaits, so it keeps accepting connections meanwhile.

Results are handed back in the same order (a FIFO hand-off to the batch queue): with several threads a job that
started later can finish first (a smaller photo), and if it were submitted first, batches would no longer follow
arrival order. Each job's result waits until every job submitted before it has been handed back (or failed or
been cancelled); the wait is at most the rest of one earlier decode.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

from .batching import QueueFull

T = TypeVar("T")


class DecodePool:
    def __init__(self, threads: int, max_pending: int) -> None:
        if threads < 1 or max_pending < 1:
            raise ValueError("threads and max_pending must be >= 1")
        self.threads = threads
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serve-decode")
        self._pending = 0  # touched on the event loop only
        self._last: Optional[asyncio.Future[None]] = None  # set once the latest job has been handed back

    @property
    def pending(self) -> int:
        """Jobs submitted and not returned (queued, running, or done and waiting for an earlier one to return)."""
        return self._pending

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a decode thread, after every job submitted before it has started (FIFO), and
        return after every job submitted before it has returned (FIFO hand-off)."""
        if self._pending >= self.max_pending:
            raise QueueFull(f"decode queue full ({self._pending} uploads waiting, limit {self.max_pending})")
        loop = asyncio.get_running_loop()
        before, mine = self._last, loop.create_future()
        self._last = mine
        self._pending += 1
        try:
            result = await loop.run_in_executor(self._pool, fn, *args)
            if before is not None and not before.done():
                await asyncio.shield(before)  # shielded: our own cancellation must not cancel the earlier job
            return result
        finally:
            self._pending -= 1
            if before is None or before.done():
                mine.set_result(None)
            else:  # cancelled (or failed) while an earlier job is still out: hand back after it, in order
                before.add_done_callback(lambda _f: mine.done() or mine.set_result(None))

    def close(self) -> None:
        """Let running and queued decodes finish; take no new ones."""
        self._pool.shutdown(wait=False, cancel_futures=False)
