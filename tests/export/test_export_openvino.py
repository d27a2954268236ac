"""OpenVINO IR export and runtime: parity with the ONNX artifact on real images, metadata in rt_info, the gate,
variants, the Artifact interface (serve/bench unchanged), bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ov = pytest.importorskip("openvino")

from export.errors import ArtifactError, ExportError, VerificationError  # noqa: E402
from export.openvino import export_openvino, ir_path, read_report  # noqa: E402
from export.runtime import load_artifact  # noqa: E402
from export.runtime_openvino import RT_META, RT_OPENVINO, rt_section  # noqa: E402

# OpenVINO/NNCF: in a mixed session these run in a pytest process of their own (tests/conftest.py says why).
pytestmark = pytest.mark.openvino_process

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ir_dir(tiny_artifact: Path, cifar_small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "tiny.xml"
    export_openvino(tiny_artifact, out, variants="fp16,int8,bf16", verify_dir=cifar_small_dir, max_verify_images=120,
                    max_calib_images=64, verbose=False)
    return out.parent


def test_fp32_ir_matches_onnx_on_real_jpegs(ir_dir: Path, tiny_artifact: Path, real_jpegs):
    ir = load_artifact(ir_dir / "tiny.xml")
    ref = load_artifact(tiny_artifact)
    assert ir.backend == "openvino" and ir.providers == ["OpenVINO:CPU:f32"]  # pinned, never bf16 by default
    assert ir.meta.precision == "fp32" and ir.meta.class_names == ref.meta.class_names
    assert ir.meta.preprocess == ref.meta.preprocess and ir.meta.blend == ref.meta.blend
    x = ref.prepare(real_jpegs)
    np.testing.assert_allclose(ir.run_raw(x)["logits"], ref.run_raw(x)["logits"], atol=1e-4)
    assert (ir.classify(real_jpegs).argmax(1) == ref.classify(real_jpegs).argmax(1)).all()
    assert ir.run(x[:1]).shape == (1, 10) and ir.run(x[:7]).shape == (7, 10)  # dynamic batch
    assert ir.top_k(ir.classify(real_jpegs[:2]), 3)[0][0].label in ir.class_names


def test_rt_info_carries_metadata_checksums_and_report(ir_dir: Path, tiny_artifact: Path):
    from distill.io import sha256_file

    model = ov.Core().read_model(str(ir_dir / "tiny.xml"))
    meta = rt_section(model, RT_META)
    ref = load_artifact(tiny_artifact).meta
    assert json.loads(meta["class_names"]) == ref.class_names
    assert json.loads(meta["preprocess"]) == ref.preprocess.model_dump(mode="json")
    assert meta["checkpoint_sha256"] == ref.checkpoint_sha256 and meta["blend"] == ref.blend
    info = rt_section(model, RT_OPENVINO)
    assert info["inference_precision"] == "f32"
    assert json.loads(info["source"])["sha256"] == sha256_file(tiny_artifact)
    report = read_report(ir_dir / "tiny.xml")
    assert report["passed"] and report["fp32"]["top1_agreement_onnx"] == 1.0
    assert report["fp32"]["max_abs_diff"] <= 1e-4
    assert report["onnx"]["passed"]  # the ONNX artifact's own report (fold, blend, parity with torch) travels along
    assert set(report["variants"]) == {"fp16", "int8", "bf16"}


def test_variants_are_labelled_and_load(ir_dir: Path, real_jpegs):
    fp32 = load_artifact(ir_dir / "tiny.xml").classify(real_jpegs)
    for v in ("fp16", "int8", "bf16"):
        path = ir_path(ir_dir / "tiny.xml", v)
        assert path.name == f"tiny.{v}.xml" and path.with_suffix(".bin").is_file()
        art = load_artifact(path)
        assert art.meta.precision == v
        probs = art.classify(real_jpegs)
        assert probs.shape == fp32.shape and np.isfinite(probs).all()
    assert load_artifact(ir_path(ir_dir / "tiny.xml", "int8")).meta.quantization.startswith("openvino-")
    report = read_report(ir_dir / "tiny.xml")
    want_bf16 = "bf16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    assert report["variants"]["bf16"]["inference_precision"] == want_bf16


def test_broken_fp32_parity_fails_and_writes_nothing(tiny_artifact: Path, cifar_small_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    """The gate is real: an IR whose weights differ from the ONNX artifact's is refused, nothing is written."""
    model = onnx.load(str(tiny_artifact))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w *= 1.01  # small enough to keep most top-1s: the max-abs-diff check itself must refuse it
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save(model, str(perturbed))
    real = ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: real(str(perturbed)))
    out = tmp_path / "out" / "m.xml"
    with pytest.raises(VerificationError, match="parity.*max abs diff"):
        export_openvino(tiny_artifact, out, variants="fp16", verify_dir=cifar_small_dir, max_verify_images=40,
                        verbose=False)
    assert not out.parent.exists() or sorted(p.name for p in out.parent.iterdir()) == []


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=600)


def test_cli_writes_ir_and_json(tiny_artifact: Path, cifar_small_dir: Path, tmp_path: Path):
    out = tmp_path / "cli.xml"
    r = _cli("openvino", "--onnx", str(tiny_artifact), "-o", str(out), "--verify-dir", str(cifar_small_dir),
             "--max-verify-images", "30", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(r.stdout)
    assert data["paths"] == {"fp32": str(out)} and data["report"]["passed"]
    assert out.is_file() and out.with_suffix(".bin").is_file()


def test_cli_without_openvino_says_how_to_install(tiny_artifact: Path, tmp_path: Path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "openvino.py").write_text("raise ImportError('No module named openvino')\n")
    import os

    r = _cli("openvino", "--onnx", str(tiny_artifact), "-o", str(tmp_path / "m.xml"),
             env={"PYTHONPATH": f"{shim}{os.pathsep}{REPO}"})
    assert r.returncode != 0
    assert "pip install 'distill-toolchain[openvino]'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("case", ["not_onnx", "int8_source", "unverified", "bad_variant", "bad_int8", "bad_output"])
def test_bad_input_is_one_clear_error(case: str, tiny_artifact: Path, cifar_small_dir: Path, tmp_path: Path):
    src, kw = tiny_artifact, {}
    if case == "not_onnx":
        src = tmp_path / "model.xml"
        src.write_text("<net/>")
    elif case == "int8_source":
        m = onnx.load(str(tiny_artifact))
        for p in m.metadata_props:
            if p.key == "precision":
                p.value = "int8"
        src = tmp_path / "m.int8.onnx"
        onnx.save(m, str(src))
    elif case == "unverified":
        m = onnx.load(str(tiny_artifact))
        keep = [(p.key, p.value) for p in m.metadata_props if p.key != "verification"]
        del m.metadata_props[:]
        for k, v in keep:
            m.metadata_props.add(key=k, value=v)
        src = tmp_path / "m.onnx"
        onnx.save(m, str(src))
    elif case == "bad_variant":
        kw = {"variants": "int4"}
    elif case == "bad_int8":
        kw = {"variants": "int8", "int8_source": "magic"}
    elif case == "bad_output":
        kw = {"output": tmp_path / "m.onnx"}
    out = kw.pop("output", tmp_path / "o.xml")
    with pytest.raises((ExportError, ArtifactError)):
        export_openvino(src, out, verify_dir=cifar_small_dir, max_verify_images=10, verbose=False, **kw)
    assert not out.exists()


def test_runtime_rejects_broken_irs(ir_dir: Path, tmp_path: Path):
    import shutil

    lone = tmp_path / "lone.xml"
    shutil.copy(ir_dir / "tiny.xml", lone)  # no .bin next to it
    with pytest.raises(ArtifactError, match="weights"):
        load_artifact(lone)
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<net><layers>")
    garbage.with_suffix(".bin").write_bytes(b"\0" * 8)
    with pytest.raises(ArtifactError, match="not a loadable OpenVINO IR"):
        load_artifact(garbage)
    foreign = tmp_path / "foreign.xml"  # an IR that distill did not write: no metadata
    m = ov.Core().read_model(str(ir_dir / "tiny.xml"))
    plain = ov.Model(m.outputs, m.get_parameters(), "plain")
    ov.save_model(plain, str(foreign))
    with pytest.raises(ArtifactError, match="no distill metadata"):
        load_artifact(foreign)
    with pytest.raises(ArtifactError, match="cannot run an OpenVINO IR"):
        load_artifact(ir_dir / "tiny.xml", providers=["CUDAExecutionProvider"])


def test_openvino_runtime_imports_without_torch():
    code = ("import sys, export.runtime, export.runtime_openvino; "
            "from export.runtime import load_artifact; "
            "bad = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_serve_uses_the_ir_unchanged(ir_dir: Path, real_jpegs):
    """``distill serve --model model.xml``: the service loads the IR through export.runtime, nothing else."""
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.settings import ServeSettings

    app = create_app(ServeSettings(model=ir_dir / "tiny.xml", max_wait_ms=0))
    with TestClient(app) as client:
        for _ in range(6000):  # readiness poll (model load + warm-up run in the background)
            if client.get("/health/ready").status_code == 200:
                break
            time.sleep(0.01)
        info = client.get("/v1/model").json()
        assert info["backend"] == "openvino" and info["providers"] == ["OpenVINO:CPU:f32"]
        r = client.post("/v1/classify", files={"file": ("a.jpg", real_jpegs[0].read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
    want = load_artifact(ir_dir / "tiny.xml").classify([real_jpegs[0]])[0]
    got = r.json()["results"][0]["predictions"][0]
    assert got["label"] == load_artifact(ir_dir / "tiny.xml").class_names[int(want.argmax())]
    assert got["score"] == pytest.approx(float(want.max()), abs=1e-5)


def test_nncf_int8_via_cli_keeps_json_clean(tiny_artifact: Path, cifar_small_dir: Path, tmp_path: Path):
    pytest.importorskip("nncf")
    out = tmp_path / "n.xml"
    r = _cli("openvino", "--onnx", str(tiny_artifact), "-o", str(out), "-q", "int8", "--int8", "nncf",
             "--verify-dir", str(cifar_small_dir), "--max-verify-images", "24", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(r.stdout)  # progress bars went to stderr
    assert data["report"]["variants"]["int8"]["file"] == "n.int8.xml"
    art = load_artifact(out.with_name("n.int8.xml"))
    assert art.meta.quantization == "openvino-nncf" and art.meta.precision == "int8"
    info = rt_section(ov.Core().read_model(str(out.with_name("n.int8.xml"))), RT_OPENVINO)
    assert json.loads(info["int8"])["method"] == "nncf"
