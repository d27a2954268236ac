"""Micro-batching: requests share inference calls, a full queue answers 503, shutdown drains, readiness."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import GatedArtifact, running

from serve.batching import BatcherClosed, MicroBatcher, QueueFull


def _echo(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)[:, :2].astype(np.float32)


def _rows(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None].repeat(2, axis=1)


# -- the batcher alone ------------------------------------------------------------------------------------
def test_batcher_coalesces_and_returns_each_submitter_its_rows():
    sizes: list[int] = []

    def run(x):
        sizes.append(x.shape[0])
        time.sleep(0.01)
        return _echo(x)

    async def main():
        b = MicroBatcher(run, max_batch=8, max_wait_ms=50, adaptive_wait=False)
        await b.start()
        results = await asyncio.gather(*(b.submit(_rows(1 + i % 2, start=10 * i)) for i in range(12)))
        await b.close()
        return results

    results = asyncio.run(main())
    for i, r in enumerate(results):
        assert np.array_equal(r.output, _rows(1 + i % 2, start=10 * i))  # its own rows, in order
    assert sum(sizes) == 18 and max(sizes) <= 8 and len(sizes) < 12


def test_batching_disabled_runs_one_submission_per_call():
    sizes: list[int] = []

    async def main():
        b = MicroBatcher(lambda x: (sizes.append(x.shape[0]), _echo(x))[1], max_batch=1, max_wait_ms=50)
        await b.start()
        await asyncio.gather(*(b.submit(_rows(1)) for _ in range(6)))
        await b.close()

    asyncio.run(main())
    assert sizes == [1] * 6


def test_oversized_submission_runs_alone_in_chunks():
    sizes: list[int] = []

    async def main():
        b = MicroBatcher(lambda x: (sizes.append(x.shape[0]), _echo(x))[1], max_batch=4, max_wait_ms=0)
        await b.start()
        r = await b.submit(_rows(10))
        await b.close()
        return r

    r = asyncio.run(main())
    assert np.array_equal(r.output, _rows(10)) and sizes == [4, 4, 2]


def test_queue_full_and_closed_are_refused_and_shutdown_drains():
    gate = threading.Event()

    def run(x):
        gate.wait(10)
        return _echo(x)

    async def main():
        b = MicroBatcher(run, max_batch=2, max_wait_ms=0, queue_size=3)
        await b.start()
        first = asyncio.create_task(b.submit(_rows(2)))  # taken by the worker, blocks on the gate
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(b.submit(_rows(1, start=i))) for i in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit(_rows(1))
        closing = asyncio.create_task(b.close(timeout=10))
        await asyncio.sleep(0.01)
        with pytest.raises(BatcherClosed):
            await b.submit(_rows(1))
        gate.set()  # in-flight and queued work still completes
        await closing
        return await first, [await q for q in queued]

    first, queued = asyncio.run(main())
    assert first.output.shape == (2, 2) and [q.output[0, 0] for q in queued] == [0, 1, 2]


def test_inference_error_reaches_every_waiter_and_the_batcher_survives():
    calls = {"n": 0}

    def run(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return _echo(x)

    async def main():
        b = MicroBatcher(run, max_batch=4, max_wait_ms=0)
        await b.start()
        with pytest.raises(RuntimeError):
            await b.submit(_rows(1))
        ok = await b.submit(_rows(1))
        await b.close()
        return ok

    assert asyncio.run(main()).output.shape == (1, 2)


def test_adaptive_wait_runs_a_lone_request_at_once_and_stops_waiting_when_an_arrival_gives_up():
    """max_wait is long (2 s); a batch waits only while an announced request may still submit."""

    async def main():
        b = MicroBatcher(_echo, max_batch=8, max_wait_ms=2000)
        await b.start()
        t0 = time.perf_counter()
        await b.submit(_rows(1))  # nobody else announced: no waiting
        lone = time.perf_counter() - t0
        with b.incoming():  # announced, then gives up (a bad upload) without submitting
            t1 = time.perf_counter()
            waiting = asyncio.create_task(b.submit(_rows(1)))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # held for the announced request
        await waiting
        after_give_up = time.perf_counter() - t1
        with b.incoming() as arrival:  # announced and submits: both share one call
            first = asyncio.create_task(b.submit(_rows(1)))
            await asyncio.sleep(0.02)
            second = await b.submit(_rows(1, start=5), arrival)
        await first
        await b.close()
        return lone, after_give_up, second.batch_size

    lone, after_give_up, shared = asyncio.run(main())
    assert lone < 0.5 and after_give_up < 1.0 and shared == 2


def test_close_without_start_and_submit_after_close():
    async def main():
        b = MicroBatcher(_echo, max_batch=2)
        await b.close()  # never started: nothing to drain
        with pytest.raises(BatcherClosed):
            await b.submit(_rows(1))
        await b.start()
        await b.close()
        with pytest.raises(BatcherClosed):
            await b.submit(_rows(1))
        with pytest.raises(ValueError):
            await b.submit(np.zeros((0, 2), np.float32))

    asyncio.run(main())


# -- through the app ------------------------------------------------------------------------------------
def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


@pytest.mark.parametrize("max_batch", [8, 1])
def test_concurrent_requests_share_batches(make_app, real_jpegs, max_batch):
    app = make_app(max_batch=max_batch, max_wait_ms=100)
    n = 16

    async def main():
        async with running(app) as c:
            files = [{"file": (p.name, p.read_bytes(), "image/jpeg")} for p in real_jpegs[:n]]
            rs = await asyncio.gather(*(c.post("/v1/classify", files=f) for f in files))
            return rs, (await c.get("/metrics")).text

    rs, metrics = asyncio.run(main())
    assert all(r.status_code == 200 for r in rs)
    batches = _metric(metrics, "distill_serve_batch_size_count")
    images = _metric(metrics, "distill_serve_batch_size_sum")
    sizes = [r.json()["timing"]["batch_size"] for r in rs]
    assert images == n
    if max_batch == 1:
        assert batches == n and set(sizes) == {1}
    else:
        assert batches < n and max(sizes) > 1, (batches, sizes)  # requests really shared inference calls
        assert max(sizes) <= max_batch
    assert _metric(metrics, "distill_serve_queue_depth") == 0


def test_readiness_waits_for_warmup(make_app, artifact, jpeg):
    gated = GatedArtifact(artifact)
    app = make_app(art=gated, warmup=1)
    with TestClient(app) as c:
        r = c.get("/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading" and "retry-after" in r.headers
        assert c.get("/health/live").status_code == 200
        r = c.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")})
        assert r.status_code == 503 and "retry-after" in r.headers
        gated.gate.set()
        for _ in range(500):
            if c.get("/health/ready").status_code == 200:
                break
            time.sleep(0.01)
        assert c.get("/health/ready").json() == {"status": "ok", "ready": True, "detail": None}
        assert c.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")}).status_code == 200


def test_queue_full_is_503_with_retry_after_and_shutdown_drains_in_flight(make_app, artifact, real_jpegs):
    gated = GatedArtifact(artifact)
    app = make_app(art=gated, warmup=0, max_batch=1, max_wait_ms=0, queue_size=2, retry_after_s=3)

    async def main():
        async with running(app) as c:
            post = lambda p: c.post("/v1/classify", files={"file": (p.name, p.read_bytes(), "image/jpeg")})  # noqa: E731
            batcher = app.state.serve.batcher

            async def until(cond) -> None:
                for _ in range(1000):
                    if cond() or any(h.done() for h in held):
                        return
                    await asyncio.sleep(0.01)

            held = [asyncio.create_task(post(real_jpegs[0]))]
            try:
                await until(lambda: batcher._running_batch)  # the first is in the (gated) worker
                held += [asyncio.create_task(post(p)) for p in real_jpegs[1:3]]
                await until(lambda: batcher.queue_depth == 2)  # two more fill the queue
                state = [(h.done(), h.result().status_code if h.done() else None) for h in held]
                assert app.state.serve.batcher.queue_depth == 2, state
                busy = await post(real_jpegs[3])
                ready_before = (await c.get("/health/ready")).status_code
            finally:
                threading.Timer(0.2, gated.gate.set).start()
        # the lifespan has ended (shutdown) while requests were held: they must have completed
        return busy, ready_before, [await h for h in held]

    busy, ready_before, held = asyncio.run(main())
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3" and "busy" in busy.json()["detail"]
    assert ready_before == 200
    assert [r.status_code for r in held] == [200, 200, 200]
