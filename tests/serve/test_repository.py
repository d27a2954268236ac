"""``distill serve --model-repository``: the layout ``distill export triton`` writes, Triton's repository
extension (index/load/unload, token-protected), and zero-downtime swaps: a new version is warm before it takes
traffic and the old one is retired only after its in-flight requests; 10 swaps under concurrency 8 lose nothing."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_helpers import GatedArtifact, running

from export.runtime import load_artifact
from export.triton import export_triton
from serve.app import create_repository_app
from serve.settings import ServeSettings

X = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)


def infer_body(x: np.ndarray = X) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def decode(r: Any) -> tuple[dict[str, Any], np.ndarray]:
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    return head, np.frombuffer(r.content[n:], "<f4").reshape(head["outputs"][0]["shape"])


@pytest.fixture(scope="module")
def variant(tiny_artifact: Path, tmp_path_factory) -> Path:
    """The tiny artifact with one class's bias raised: a second model whose every answer is told apart."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(tiny_artifact))
    bias = next(t for t in reversed(m.graph.initializer) if list(t.dims) == [10])
    arr = numpy_helper.to_array(bias).copy()
    arr[3] += 4.0
    bias.CopyFrom(numpy_helper.from_array(arr, bias.name))
    path = tmp_path_factory.mktemp("variant") / "variant.onnx"
    onnx.save(m, str(path))
    return path


def _settings(repo: Path, **kw: Any) -> ServeSettings:
    kw.setdefault("warmup", 1)
    return ServeSettings(model_repository=repo, max_batch=8, max_wait_ms=1, batch_sizing="fixed", **kw)


def test_ten_swaps_at_concurrency_8_lose_no_request(tiny_artifact: Path, variant: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sources = [tiny_artifact, variant]  # version v holds sources[(v - 1) % 2]
    export_triton(sources[0], repo, name="m")
    refs = [load_artifact(s).run(X)[0] for s in sources]
    assert not np.allclose(refs[0], refs[1], atol=1e-3)
    loaded: dict[str, GatedArtifact] = {}
    loading, load_gate = threading.Event(), threading.Event()
    load_gate.set()  # version 1 loads at start-up unhindered

    def loader(path: Path) -> GatedArtifact:  # runs in a worker thread; holds a load open until the test lets it go
        loading.set()
        assert load_gate.wait(timeout=60), "load gate never opened"
        # its next v2 batch after arm() is held in flight
        loaded[path.parent.name] = GatedArtifact(load_artifact(path), method="run_raw", once=True, timeout=60)
        return loaded[path.parent.name]

    app = create_repository_app(_settings(repo), loader=loader)
    body, headers = infer_body()
    answers: list[tuple[str, np.ndarray]] = []
    failures: list[str] = []

    async def main() -> None:
        async with running(app) as c:
            repository = app.state.repository
            stop = asyncio.Event()

            async def worker() -> None:
                while not stop.is_set():
                    r = await c.post("/v2/models/m/infer", content=body, headers=headers)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                        continue
                    head, probs = decode(r)
                    answers.append((head["model_version"], probs[0]))

            workers = [asyncio.create_task(worker()) for _ in range(8)]
            try:
                for i in range(1, 11):
                    old = loaded[str(i)]
                    await asyncio.to_thread(export_triton, sources[i % 2], repo, name="m")  # writes version i + 1
                    loading.clear()
                    load_gate.clear()
                    load = asyncio.create_task(c.post("/v2/repository/models/m/load"))
                    await asyncio.to_thread(loading.wait, 60)  # version i + 1 is being loaded ...
                    head, _ = decode(await c.post("/v2/models/m/infer", content=body, headers=headers))
                    assert head["model_version"] == str(i)  # ... and version i serves meanwhile (no downtime)
                    old.arm()
                    await asyncio.to_thread(old.entered.wait, 60)  # live traffic holds a batch in flight on version i
                    load_gate.set()
                    r = await load
                    assert r.status_code == 200, r.text
                    # the new version is warm and serving while the old one still has its batch in flight
                    assert repository.versions("m") == [str(i + 1)] and not old.released
                    head, probs = decode(await c.post("/v2/models/m/infer", content=body, headers=headers))
                    assert head["model_version"] == str(i + 1)
                    old.gate.set()
                    await repository.wait_retired()  # old version: in-flight answered, batcher stopped
                    assert old.released
            finally:  # a failure above must end the test, not hang it on a closed gate
                stop.set()
                load_gate.set()
                for held in loaded.values():
                    held.gate.set()
                await asyncio.gather(*workers)

    asyncio.run(main())
    assert failures == []
    versions = {v for v, _ in answers}
    assert versions == {str(v) for v in range(1, 12)}  # every version answered, each named
    for v, probs in answers:  # and each answer wholly from the version it names
        np.testing.assert_allclose(probs, refs[(int(v) - 1) % 2], atol=1e-5)
        assert not np.allclose(probs, refs[int(v) % 2], atol=1e-3)


def test_index_load_unload_and_a_bad_version_keeps_the_old_serving(tiny_artifact: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    export_triton(tiny_artifact, repo, name="a")
    export_triton(tiny_artifact, repo, name="b")
    app = create_repository_app(_settings(repo))
    body, headers = infer_body()

    async def main() -> None:
        async with running(app) as c:
            r = await c.post("/v2/repository/index")
            assert r.status_code == 200
            assert {(e["name"], e["version"], e["state"]) for e in r.json()} == {("a", "1", "READY"), ("b", "1", "READY")}
            assert (await c.get("/v2/models/a/versions/1/ready")).status_code == 200
            # a broken version 2: refused with the reason, version 1 keeps serving
            (repo / "a" / "2").mkdir()
            (repo / "a" / "2" / "model.onnx").write_bytes(b"not a model")
            r = await c.post("/v2/repository/models/a/load")
            assert r.status_code == 400 and "not a loadable ONNX model" in r.json()["error"]
            r = await c.post("/v2/models/a/infer", content=body, headers=headers)
            assert r.status_code == 200 and decode(r)[0]["model_version"] == "1"
            # unload: its requests are 404 from then on; load brings it back
            assert (await c.post("/v2/repository/models/b/unload")).status_code == 200
            assert (await c.post("/v2/models/b/infer", content=body, headers=headers)).status_code == 404
            idx = (await c.post("/v2/repository/index", json={"ready": True})).json()
            assert {e["name"] for e in idx} == {"a"}
            assert (await c.post("/v2/repository/models/b/load")).status_code == 200
            assert (await c.post("/v2/models/b/infer", content=body, headers=headers)).status_code == 200
            r = await c.post("/v2/repository/models/nope/load")
            assert r.status_code == 400 and "no model 'nope'" in r.json()["error"]
            assert (await c.post("/v2/repository/models/nope/unload")).status_code == 404
            r = await c.post("/v2/repository/index", content=b"{bad")
            assert r.status_code == 400 and "invalid index request" in r.json()["error"]
            assert (await c.get("/health/ready")).status_code == 200

    asyncio.run(main())


def test_repository_control_takes_the_admin_token(tiny_artifact: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    export_triton(tiny_artifact, repo, name="a")
    app = create_repository_app(_settings(repo, admin_token="adm1n"))

    async def main() -> None:
        async with running(app) as c:
            for path in ("/v2/repository/index", "/v2/repository/models/a/load", "/v2/repository/models/a/unload"):
                for auth in ({}, {"Authorization": "Bearer wrong"}):
                    r = await c.post(path, headers=auth)
                    assert r.status_code == 401 and "admin token" in r.json()["error"], (path, auth)
                    assert r.headers["www-authenticate"].startswith("Bearer")
            r = await c.post("/v2/repository/models/a/load", headers={"Authorization": "Bearer adm1n"})
            assert r.status_code == 200
            assert (await c.get("/v2/models/a")).status_code == 200  # inference needs no admin token

    asyncio.run(main())


def test_tritonclient_repository_api_on_a_real_port(tiny_artifact: Path, tmp_path: Path) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    from v2_server import serve_in_thread

    repo = tmp_path / "repo"
    export_triton(tiny_artifact, repo, name="m")
    with serve_in_thread(create_repository_app(_settings(repo))) as url:
        c = httpclient.InferenceServerClient(url=url)
        assert c.is_server_ready() and c.is_model_ready("m")
        assert [(e["name"], e["state"]) for e in c.get_model_repository_index()] == [("m", "READY")]
        export_triton(tiny_artifact, repo, name="m")
        c.load_model("m")
        assert c.get_model_metadata("m")["versions"] == ["2"]
        inp = httpclient.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        res = c.infer("m", [inp], outputs=[httpclient.InferRequestedOutput("probs", class_count=3)])
        assert res.get_response()["model_version"] == "2" and res.as_numpy("probs").shape == (1, 3)
        c.unload_model("m")
        assert not c.is_model_ready("m")
        c.close()


def test_serve_cli_model_repository_errors_are_one_line(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from serve.cli import app

    monkeypatch.delenv("DISTILL_SERVE_MODEL", raising=False)
    for args, msg in ((["--model-repository", str(tmp_path / "none")], "is not a directory"),
                      (["--model-repository", str(tmp_path), "--model", str(tmp_path / "x.onnx")], "not both")):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], r.output


def test_serve_cli_model_repository_builds_the_repository_app(tiny_artifact: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from serve.cli import app

    export_triton(tiny_artifact, tmp_path / "repo", name="m")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: seen.update(app=app_, **kw))
    monkeypatch.setattr("serve.cli._exit_zero_on_stop_signals", lambda: None)
    monkeypatch.delenv("DISTILL_SERVE_MODEL", raising=False)
    r = CliRunner().invoke(app, ["--model-repository", str(tmp_path / "repo"), "--port", "0"])
    assert r.exit_code == 0, r.output
    assert seen["app"].state.repository.root == tmp_path / "repo"
