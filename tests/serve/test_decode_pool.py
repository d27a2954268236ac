"""The decode pool: bounded, FIFO, off the event loop; its size and onnxruntime's come from the usable CPUs."""

from __future__ import annotations

import asyncio
import threading

import pytest
from serve_helpers import until

from serve.batching import QueueFull
from serve.decode import DecodePool
from serve.settings import ServeSettings


def test_jobs_start_in_arrival_order_and_the_queue_is_bounded():
    gate = threading.Event()
    started: list[int] = []

    def job(i: int) -> int:
        started.append(i)
        assert gate.wait(20)
        return i

    async def main():
        pool = DecodePool(threads=1, max_pending=5)
        tasks = [asyncio.create_task(pool.run(job, i)) for i in range(5)]
        await until(lambda: pool.pending == 5 and started == [0], "five jobs pending, the first running")
        with pytest.raises(QueueFull):
            await pool.run(job, 99)
        gate.set()
        out = [await t for t in tasks]
        assert pool.pending == 0
        pool.close()
        return out

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert started == [0, 1, 2, 3, 4]


def test_results_are_handed_back_in_arrival_order_even_when_a_later_job_finishes_first():
    """Two threads: job 0 is held, job 1 finishes its decode; job 1 returns only after job 0 (FIFO hand-off)."""
    gates = [threading.Event(), threading.Event()]
    finished: list[int] = []
    returned: list[int] = []

    def job(i: int) -> int:
        assert gates[i].wait(20)
        finished.append(i)
        return i

    async def call(pool: DecodePool, i: int) -> None:
        returned.append(await pool.run(job, i))

    async def main():
        pool = DecodePool(threads=2, max_pending=8)
        tasks = [asyncio.create_task(call(pool, i)) for i in range(2)]
        gates[1].set()
        await until(lambda: finished == [1], "the later job's decode to finish first")
        for _ in range(20):
            await asyncio.sleep(0)
        assert returned == [], "a later job overtook an earlier one"
        gates[0].set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        pool.close()

    asyncio.run(main())
    assert finished == [1, 0] and returned == [0, 1]


def test_a_cancelled_job_does_not_block_or_reorder_the_ones_after_it():
    gates = [threading.Event() for _ in range(3)]
    returned: list[int] = []

    def job(i: int) -> int:
        assert gates[i].wait(20)
        return i

    async def call(pool: DecodePool, i: int) -> None:
        returned.append(await pool.run(job, i))

    async def main():
        pool = DecodePool(threads=3, max_pending=8)
        tasks = [asyncio.create_task(call(pool, i)) for i in range(3)]
        await until(lambda: pool.pending == 3, "three jobs running")
        tasks[0].cancel()  # the client of job 0 went away while its decode runs
        gates[2].set()
        gates[1].set()
        await asyncio.wait_for(asyncio.gather(*tasks[1:]), 20)
        gates[0].set()
        pool.close()

    asyncio.run(main())
    assert returned == [1, 2]


def test_the_loop_keeps_running_while_decodes_block():
    gate = threading.Event()

    async def main():
        pool = DecodePool(threads=2, max_pending=8)
        held = [asyncio.create_task(pool.run(gate.wait, 20)) for _ in range(2)]
        await until(lambda: pool.pending == 2, "both decode threads busy")
        ticks = 0
        for _ in range(3):  # the loop still runs other coroutines
            await asyncio.sleep(0)
            ticks += 1
        gate.set()
        await asyncio.gather(*held)
        pool.close()
        return ticks

    assert asyncio.run(main()) == 3


def test_pool_sizes_come_from_the_usable_cpus(monkeypatch):
    import serve.settings as ss

    monkeypatch.setattr(ss, "usable_cpus", lambda: 3)
    s = ServeSettings()
    assert s.ort_threads() == 3 and s.decode_pool_threads() == 3
    s = ServeSettings(intra_op_threads=1, decode_threads=2)
    assert s.ort_threads() == 1 and s.decode_pool_threads() == 2
    with pytest.raises(ValueError):
        DecodePool(0, 1)


def test_the_server_loads_onnxruntime_with_the_usable_cpus(tiny_artifact, monkeypatch):
    import serve.settings as ss
    from serve.state import ServeState

    monkeypatch.setattr(ss, "usable_cpus", lambda: 1)
    state = ServeState(ServeSettings(model=tiny_artifact))
    assert state.load()._session.sess.get_session_options().intra_op_num_threads == 1
