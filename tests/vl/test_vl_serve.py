"""Serving an embedding student: classify through its label set; POST /v1/labels swaps it without re-export."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from distill.teachers.classifiers import CIFAR10_CLASSES as CIFAR  # noqa: E402
from distill.vl.labelset import LabelSet  # noqa: E402

TOKEN = "s3cret"


def _ready(c: TestClient) -> None:
    t0 = time.time()
    while time.time() - t0 < 20:
        if c.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def _npz(ls: LabelSet, tmp: Path, name: str) -> bytes:
    return ls.save(tmp / name).read_bytes()


@pytest.fixture()
def client(vl_artifact: Path):
    from export.runtime import load_artifact
    from serve.app import create_app
    from serve.settings import ServeSettings

    app = create_app(ServeSettings(model=vl_artifact, warmup=1, admin_token=TOKEN, max_wait_ms=1),
                     artifact=load_artifact(vl_artifact))
    with TestClient(app, raise_server_exceptions=False) as c:
        _ready(c)
        yield c


def test_classify_and_replace_labels(client: TestClient, vl_artifact: Path, real_jpegs: list[Path],
                                     tmp_path: Path) -> None:
    jpeg = real_jpegs[0].read_bytes()
    info = client.get("/v1/model").json()
    assert info["kind"] == "embedding" and info["classes"] == CIFAR and info["labels"]["num_classes"] == 10
    assert info["labels"]["source"].endswith("vl.labels.npz") and info["labels"]["embed_dim"] == 64
    r = client.post("/v1/classify?top_k=3", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text
    preds = r.json()["results"][0]["predictions"]
    assert len(preds) == 3 and all(p["label"] in CIFAR for p in preds)

    full = LabelSet.load(vl_artifact.with_name("vl.labels.npz"))
    new = full.subset(["ship", "frog", "cat"])
    r = client.post("/v1/labels", files={"file": ("new.labels.npz", _npz(new, tmp_path, "n.labels.npz"))},
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["num_classes"] == 3 and r.json()["source"] == "upload"
    assert client.get("/v1/model").json()["classes"] == ["ship", "frog", "cat"]
    assert client.get("/v1/labels").json()["num_classes"] == 3
    r = client.post("/v1/classify?top_k=3", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 200
    got = {p["label"]: p["score"] for p in r.json()["results"][0]["predictions"]}
    assert set(got) == {"ship", "frog", "cat"} and abs(sum(got.values()) - 1) < 1e-4
    # the same scores as the runtime applying that label set to the embedding
    from export.runtime import load_artifact

    art = load_artifact(vl_artifact, labels=new)
    want = art.classify([jpeg])[0]
    assert all(abs(got[n] - float(want[i])) < 1e-5 for i, n in enumerate(new.names))
    assert client.post("/v1/classify?top_k=4", files={"file": ("a.jpg", jpeg, "image/jpeg")}).status_code == 422
    # raw octet-stream body works too
    r = client.post("/v1/labels", content=_npz(full, tmp_path, "f.labels.npz"),
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and client.get("/v1/model").json()["num_classes"] == 10


def test_replace_labels_errors(client: TestClient, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.post("/v1/labels", files={"file": ("x.npz", b"junk")}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = client.post("/v1/labels", files={"file": ("x.npz", b"junk")})
    assert r.status_code == 401
    r = client.post("/v1/labels", files={"file": ("x.npz", b"junk")}, headers=auth)
    assert r.status_code == 400 and "not a label set" in r.json()["detail"]
    wrong = LabelSet(["a", "b"], np.eye(2, 32))
    r = client.post("/v1/labels", files={"file": ("w.npz", _npz(wrong, tmp_path, "w.labels.npz"))}, headers=auth)
    assert r.status_code == 422 and "embedding size 32 does not match" in r.json()["detail"]
    other = LabelSet(["a", "b"], np.eye(2, 64), teacher={"identity": "different", "name": "x"})
    r = client.post("/v1/labels", files={"file": ("o.npz", _npz(other, tmp_path, "o.labels.npz"))}, headers=auth)
    assert r.status_code == 422 and "another teacher" in r.json()["detail"]
    r = client.post("/v1/labels", content=b"", headers=auth)
    assert r.status_code == 422
    assert client.get("/v1/model").json()["num_classes"] == 10  # nothing changed


def test_labels_endpoint_disabled_or_not_applicable(vl_artifact: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    from export.runtime import load_artifact
    from serve.app import create_app
    from serve.settings import ServeSettings

    app = create_app(ServeSettings(model=vl_artifact, warmup=0), artifact=load_artifact(vl_artifact))
    with TestClient(app, raise_server_exceptions=False) as c:
        _ready(c)
        r = c.post("/v1/labels", content=b"x", headers={"Authorization": "Bearer any"})
        assert r.status_code == 403 and "DISTILL_SERVE_ADMIN_TOKEN" in r.json()["detail"]
    app = create_app(ServeSettings(model=tiny_artifact, warmup=0, admin_token=TOKEN),
                     artifact=load_artifact(tiny_artifact))
    with TestClient(app, raise_server_exceptions=False) as c:
        _ready(c)
        ls = LabelSet(["a"], np.ones((1, 64)))
        r = c.post("/v1/labels", content=_npz(ls, tmp_path, "a.labels.npz"), headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409 and "fixed classes" in r.json()["detail"]
        assert c.get("/v1/labels").status_code == 404
    # a label set chosen in the settings (DISTILL_SERVE_LABELS) at start-up
    sub = LabelSet.load(vl_artifact.with_name("vl.labels.npz")).subset(["dog", "cat"])
    path = sub.save(tmp_path / "two.labels.npz")
    app = create_app(ServeSettings(model=vl_artifact, warmup=0, labels=path))
    with TestClient(app, raise_server_exceptions=False) as c:
        _ready(c)
        assert c.get("/v1/model").json()["classes"] == ["dog", "cat"]
        assert c.get("/v1/labels").json()["source"] == str(path)


def test_replace_labels_refused_with_several_workers(vl_artifact: Path, tmp_path: Path) -> None:
    """With --workers N each process holds its own label set: a swap would change the one worker that took the
    request, so the server refuses it (409, with the way out) and keeps serving the set it has."""
    from export.runtime import load_artifact
    from serve.app import create_app
    from serve.settings import ServeSettings

    app = create_app(ServeSettings(model=vl_artifact, warmup=0, admin_token=TOKEN, workers=2),
                     artifact=load_artifact(vl_artifact))
    full = LabelSet.load(vl_artifact.with_name("vl.labels.npz"))
    with TestClient(app, raise_server_exceptions=False) as c:
        _ready(c)
        r = c.post("/v1/labels", files={"file": ("n.npz", _npz(full.subset(["ship", "cat"]), tmp_path, "n.labels.npz"))},
                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409, r.text
        assert "single server process" in r.json()["detail"] and "--workers 1" in r.json()["detail"]
        assert c.get("/v1/labels").json()["num_classes"] == 10
