"""Micro-batching: requests share inference calls, a full queue answers 503, shutdown drains, readiness."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import Gate, GatedArtifact, multipart, running, until, wait_ready

from serve.batching import BatcherClosed, MicroBatcher, QueueFull, batch_wait_s


def _echo(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)[:, :2].astype(np.float32)


def _rows(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None].repeat(2, axis=1)


# -- the wait decision (pure) ------------------------------------------------------------------------------
def test_batch_wait_is_a_pure_function_of_clock_deadline_and_announcements():
    # adaptive: wait only while someone announced may still join, and never past the deadline
    assert batch_wait_s(10.0, 10.5, announced=0, adaptive=True) == 0.0
    assert batch_wait_s(10.0, 10.5, announced=2, adaptive=True) == pytest.approx(0.5)
    assert batch_wait_s(10.6, 10.5, announced=2, adaptive=True) == 0.0
    # fixed wait: up to the deadline whether or not anyone announced
    assert batch_wait_s(10.0, 10.5, announced=0, adaptive=False) == pytest.approx(0.5)
    assert batch_wait_s(11.0, 10.5, announced=0, adaptive=False) == 0.0
    # shutting down: never wait
    assert batch_wait_s(10.0, 10.5, announced=3, adaptive=False, closing=True) == 0.0


# -- the batcher alone (order controlled with a gated run function, never by sleeping) ----------------------
def test_batcher_coalesces_in_arrival_order_and_returns_each_submitter_its_rows():
    run = Gate(_echo)
    sizes = [1 + i % 2 for i in range(12)]

    async def main():
        b = MicroBatcher(run, max_batch=8, max_wait_ms=50, adaptive_wait=False)
        await b.start()
        first = asyncio.create_task(b.submit(_rows(sizes[0], start=0)))
        await until(run.entered.is_set, "the first call to be running")  # held inside the model
        rest = [asyncio.create_task(b.submit(_rows(n, start=10 * i))) for i, n in enumerate(sizes) if i]
        await until(lambda: b.queue_depth == sum(sizes[1:]), "the rest to be queued")
        run.gate.set()
        results = [await first] + [await t for t in rest]
        await b.close()
        return results

    results = asyncio.run(main())
    for i, r in enumerate(results):
        assert np.array_equal(r.output, _rows(sizes[i], start=10 * i))  # its own rows, in order
    # FIFO coalescing: 2+1+2+1+2 = 8, then 1+2+1+2+1 = 7 (the next 2 would pass 8), then the last 2
    assert run.calls == [1, 8, 7, 2]
    assert [r.batch_size for r in results] == [1] + [8] * 5 + [7] * 5 + [2]


def test_batching_disabled_runs_one_submission_per_call():
    run = Gate(_echo)

    async def main():
        b = MicroBatcher(run, max_batch=1, max_wait_ms=50)
        await b.start()
        tasks = [asyncio.create_task(b.submit(_rows(1))) for _ in range(6)]
        await until(lambda: run.entered.is_set() and b.queue_depth == 5, "five queued behind the first")
        run.gate.set()
        await asyncio.gather(*tasks)
        await b.close()

    asyncio.run(main())
    assert run.calls == [1] * 6


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
    run = Gate(_echo)

    async def main():
        b = MicroBatcher(run, max_batch=2, max_wait_ms=0, queue_size=3)
        await b.start()
        first = asyncio.create_task(b.submit(_rows(2)))  # taken by the worker, blocks on the gate
        await until(run.entered.is_set, "the first batch to be running")
        queued = [asyncio.create_task(b.submit(_rows(1, start=i))) for i in range(3)]
        await until(lambda: b.queue_depth == 3, "three queued")
        with pytest.raises(QueueFull):
            await b.submit(_rows(1))
        closing = asyncio.create_task(b.close(timeout=10))
        await until(lambda: not b.running, "the batcher to stop taking work")
        with pytest.raises(BatcherClosed):
            await b.submit(_rows(1))
        run.gate.set()  # in-flight and queued work still completes
        await closing
        return await first, [await q for q in queued]

    first, queued = asyncio.run(main())
    assert first.output.shape == (2, 2) and [q.output[0, 0] for q in queued] == [0, 1, 2]
    assert run.calls == [2, 2, 1]


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


def test_adaptive_wait_runs_a_lone_request_at_once_and_holds_a_batch_only_for_announced_requests():
    """max_wait is ten minutes: a test that finishes at all shows no request waited for it."""

    async def main():
        b = MicroBatcher(_echo, max_batch=8, max_wait_ms=600_000)
        await b.start()
        lone = await asyncio.wait_for(b.submit(_rows(1)), 20)  # nobody else announced: no waiting
        with b.incoming():  # announced, then gives up (a bad upload) without submitting
            waiting = asyncio.create_task(b.submit(_rows(1)))
            await until(lambda: b.filling, "the batch to be held open for the announced request")
            assert not waiting.done()
        gave_up = await asyncio.wait_for(waiting, 20)  # withdrawn: the held batch runs at once
        with b.incoming() as arrival:  # announced and submits: both share one call
            first = asyncio.create_task(b.submit(_rows(1)))
            await until(lambda: b.filling, "the batch to be held open")
            second = await asyncio.wait_for(b.submit(_rows(1, start=5), arrival), 20)
        await first
        assert b.announced == 0
        await b.close()
        return lone.batch_size, gave_up.batch_size, second.batch_size

    assert asyncio.run(main()) == (1, 1, 2)


def test_the_injected_clock_times_queue_and_inference():
    now = [100.0]

    def run(x):
        now[0] += 0.25  # the model "takes" 250 ms of the injected clock
        return _echo(x)

    async def main():
        b = MicroBatcher(run, max_batch=4, max_wait_ms=0, clock=lambda: now[0])
        await b.start()
        r = await b.submit(_rows(1))
        await b.close()
        return r

    r = asyncio.run(main())
    assert r.inference_ms == pytest.approx(250.0) and r.queue_ms == pytest.approx(0.0)


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
def test_concurrent_requests_share_batches(make_app, artifact, real_jpegs, max_batch):
    """The first request's inference call is held; 15 more queue behind it; released, they run in exact batches."""
    gated = GatedArtifact(artifact)
    app = make_app(art=gated, warmup=0, max_batch=max_batch, max_wait_ms=1000)
    n = 16

    async def main():
        async with running(app) as c:
            batcher = app.state.serve.batcher
            files = [{"file": (p.name, p.read_bytes(), "image/jpeg")} for p in real_jpegs[:n]]
            first = asyncio.create_task(c.post("/v1/classify", files=files[0]))
            await until(gated.entered.is_set, "the first inference call")
            rest = [asyncio.create_task(c.post("/v1/classify", files=f)) for f in files[1:]]
            await until(lambda: batcher.queue_depth == n - 1, "15 requests queued")
            gated.gate.set()
            rs = [await first] + [await t for t in rest]
            return rs, (await c.get("/metrics")).text

    rs, metrics = asyncio.run(main())
    assert all(r.status_code == 200 for r in rs)
    sizes = [r.json()["timing"]["batch_size"] for r in rs]
    want = [1, 8, 7] if max_batch == 8 else [1] * n
    assert gated.calls == want
    assert sorted(sizes) == sorted(k for k in want for _ in range(k))
    assert _metric(metrics, "distill_serve_batch_size_count") == len(want)
    assert _metric(metrics, "distill_serve_batch_size_sum") == n
    assert _metric(metrics, "distill_serve_queue_depth") == 0


async def _asgi_post(app, body: bytes, ctype: str, released: asyncio.Event) -> list[dict]:
    """POST /v1/classify straight through ASGI with the body held back until ``released`` (a slow upload)."""
    sent: list[dict] = []
    delivered = False

    async def receive():
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the client never disconnects
        await released.wait()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 1), "server": ("test", 80),
             "headers": [(b"host", b"test"), (b"content-type", ctype.encode()),
                         (b"content-length", str(len(body)).encode())]}
    await app(scope, receive, send)
    return sent


def test_an_upload_is_announced_before_its_body_arrives_and_joins_the_open_batch(make_app, real_jpegs):
    """Request B's body is held back; A's batch waits for B (announced at its headers) and both share one call."""
    app = make_app(warmup=0, max_batch=8, max_wait_ms=1000)

    async def main():
        async with running(app) as c:
            batcher = app.state.serve.batcher
            batcher._clock = lambda: 0.0  # frozen: the batch deadline never passes, only B's arrival ends the wait
            body, ctype = multipart(real_jpegs[1].read_bytes())
            released = asyncio.Event()
            b = asyncio.create_task(_asgi_post(app, body, ctype, released))
            await until(lambda: batcher.announced == 1, "B announced before its body")
            a = asyncio.create_task(c.post("/v1/classify", files={"file": ("a.jpg", real_jpegs[0].read_bytes(),
                                                                           "image/jpeg")}))
            await until(lambda: batcher.filling, "A's batch held open for B")
            assert not a.done()
            released.set()
            ra, sent_b = await a, await b
            return ra, sent_b, batcher.announced

    ra, sent_b, announced = asyncio.run(main())
    import json

    assert ra.status_code == 200 and sent_b[0]["status"] == 200
    body_b = json.loads(b"".join(m.get("body", b"") for m in sent_b[1:]))
    assert ra.json()["timing"]["batch_size"] == 2 and body_b["timing"]["batch_size"] == 2
    assert announced == 0  # every announcement ended with its request


def test_a_rejected_upload_withdraws_its_announcement(make_app):
    app = make_app(warmup=0)

    async def main():
        async with running(app) as c:
            r = await c.post("/v1/classify", files={"file": ("a.jpg", b"not an image", "image/jpeg")})
            return r, app.state.serve.batcher.announced

    r, announced = asyncio.run(main())
    assert r.status_code == 400 and announced == 0


def test_the_heap_is_frozen_by_the_time_the_server_is_ready(make_app, artifact):
    """Start-up objects are out of the collector's reach (no long full-collection pauses under load)."""
    import gc

    gc.unfreeze()
    gated = GatedArtifact(artifact)
    app = make_app(art=gated, warmup=1)
    with TestClient(app) as c:
        assert c.get("/health/ready").status_code == 503 and gc.get_freeze_count() == 0  # still warming up
        gated.gate.set()
        wait_ready(c)
        assert gc.get_freeze_count() > 0


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


def _open_when(cond, gate: threading.Event, timeout: float = 20.0) -> None:
    """From another thread: set ``gate`` as soon as ``cond()`` holds (or after ``timeout``, so nothing hangs)."""
    t_end = time.monotonic() + timeout
    while not cond() and time.monotonic() < t_end:
        time.sleep(0.001)
    gate.set()


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
                # open the gate once shutdown has begun (an event, not a timer): draining finishes what was held
                threading.Thread(target=_open_when, args=(lambda: app.state.serve.status == "draining", gated.gate),
                                 daemon=True).start()
        # the lifespan has ended (shutdown) while requests were held: they must have completed
        return busy, ready_before, [await h for h in held]

    busy, ready_before, held = asyncio.run(main())
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3" and "busy" in busy.json()["detail"]
    assert ready_before == 200
    assert [r.status_code for r in held] == [200, 200, 200]
