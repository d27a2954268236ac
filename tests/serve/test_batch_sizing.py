"""Auto batch sizing: batch only as far as it pays (timed at warm-up), so batching on is never slower than off."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from fake_clock import FakeClock
from serve_helpers import running

from serve.batching import MicroBatcher, batch_sizes_to_try, choose_batch_limit, time_batch_sizes


def test_batch_sizes_to_try():
    assert batch_sizes_to_try(1) == [1]
    assert batch_sizes_to_try(32) == [1, 2, 4, 8, 16, 32]
    assert batch_sizes_to_try(12) == [1, 2, 4, 8, 12]


def test_choose_batch_limit():
    # per-image cost flat in the batch (a small CNN on a CPU): batching buys nothing -> batch 1
    assert choose_batch_limit({1: 1.02, 2: 1.0, 8: 0.99, 32: 0.98}) == 1
    # per-call overhead dominates (a GPU, a tiny model): the smallest size close to the best
    assert choose_batch_limit({1: 1.0, 2: 0.5, 4: 0.26, 8: 0.14, 16: 0.13}) == 8
    assert choose_batch_limit({1: 1.0, 2: 0.5, 4: 0.26, 8: 0.14, 16: 0.13}, tolerance=0.0) == 16
    # a larger batch that is slower per image (time-sliced on a busy CPU) is never chosen over a smaller one
    assert choose_batch_limit({1: 1.0, 4: 1.6, 32: 1.5}) == 1
    # the server's own per-call cost (hand-off to the inference thread) makes small batches worth it
    assert choose_batch_limit({1: 1.02, 2: 1.0, 4: 0.99, 8: 0.98, 32: 0.98}, per_call_ms=0.4) == 4
    with pytest.raises(ValueError):
        choose_batch_limit({})


def test_time_batch_sizes_measures_per_image_cost_on_an_injected_clock():
    clock = FakeClock()
    costs = {1: [5e-3, 4e-3, 6e-3], 4: [9e-3, 8e-3, 8e-3]}  # per call, after the untimed first call at a size
    left = {n: iter([1.0] + c + [1.0] * 50) for n, c in costs.items()}
    run = clock.model(lambda x: next(left[x.shape[0]]))

    # 0.01 s a size: three timed calls each (at least three, then stop once past the size's share)
    t = time_batch_sizes(run, lambda n: np.zeros((n, 1), np.float32), [1, 4], budget_s=0.02, clock=clock)
    assert t == {1: pytest.approx(4.0), 4: pytest.approx(8.0 / 4)}  # the minimum call, per image
    assert [x.shape[0] for _, x in clock.calls] == [1] * 4 + [4] * 4


def test_set_max_batch_is_clamped_to_the_configured_limit():
    b = MicroBatcher(lambda x: x, max_batch=8)
    b.set_max_batch(2)
    assert b.max_batch == 2
    b.set_max_batch(100)
    assert b.max_batch == 8
    b.set_max_batch(0)
    assert b.max_batch == 1


class CostedArtifact:
    """Wraps an artifact; ``run`` advances ``clock`` by ``per_call_ms + n * per_image_ms`` (a model with that cost,
    on the fake clock the server's auto batch sizing reads: no wall time)."""

    def __init__(self, art: Any, per_call_ms: float, per_image_ms: float) -> None:
        self._art = art
        self.per_call_ms, self.per_image_ms = per_call_ms, per_image_ms
        self.clock = FakeClock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._art, name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.clock.sleep((self.per_call_ms + batch.shape[0] * self.per_image_ms) / 1e3)
        return self._art.run(batch)


@pytest.mark.parametrize("per_call_ms, per_image_ms, want", [(0.0, 10.0, 1), (30.0, 0.0, 4)])
def test_auto_sizing_at_warmup_sets_and_reports_the_batch_limit(make_app, artifact, real_jpegs,
                                                                 per_call_ms, per_image_ms, want):
    costed = CostedArtifact(artifact, per_call_ms, per_image_ms)
    app = make_app(art=costed, batch_sizing="auto", batch_tolerance=0.25, max_batch=4, max_wait_ms=100)
    app.state.serve.clock = costed.clock

    async def main():
        async with running(app) as c:
            info = (await c.get("/v1/model")).json()["batching"]
            files = [{"file": (p.name, p.read_bytes(), "image/jpeg")} for p in real_jpegs[:8]]
            rs = await asyncio.gather(*(c.post("/v1/classify", files=f) for f in files))
            return info, rs

    info, rs = asyncio.run(main())
    assert info["batch_sizing"] == "auto" and info["max_batch"] == 4
    assert info["effective_max_batch"] == want, info
    assert set(info["ms_per_image"]) == {"1", "2", "4"}
    assert app.state.serve.batcher.max_batch == want
    assert all(r.status_code == 200 for r in rs)
    assert max(r.json()["timing"]["batch_size"] for r in rs) <= want


def test_fixed_sizing_keeps_max_batch(make_app):
    app = make_app(batch_sizing="fixed", max_batch=8)

    async def main():
        async with running(app) as c:
            return (await c.get("/v1/model")).json()["batching"]

    info = asyncio.run(main())
    assert info["effective_max_batch"] == 8 and info["ms_per_image"] is None
    assert app.state.serve.batcher.max_batch == 8


def test_server_turns_onnxruntime_spinning_off(tiny_artifact):
    """Spinning ORT pool threads burn the cores the event loop needs: the server loads with spinning off."""
    from export.runtime import load_artifact
    from serve.settings import ServeSettings
    from serve.state import ServeState

    state = ServeState(ServeSettings(model=tiny_artifact, intra_op_threads=2))
    opts = state.load()._session.sess.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2
    on = load_artifact(tiny_artifact, allow_spinning=True)._session.sess.get_session_options()
    assert on.get_session_config_entry("session.intra_op.allow_spinning") == "1"
