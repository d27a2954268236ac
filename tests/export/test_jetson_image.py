"""The Jetson image (cannot run here: no Jetson, no GPU): Dockerfile parses, build arguments, and the start-up
logic that builds the TensorRT engine on the device or reuses the cached one, driven by a fake TensorRT module."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts/container" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


dockerfile_check = _load("dockerfile_check")
jetson_start = _load("jetson_start")

ORIN = {"name": "Orin", "compute_capability": "8.7"}


def test_dockerfiles_parse_and_build_args_resolve():
    rep = dockerfile_check.check(REPO / "Dockerfile.jetson", REPO)
    assert rep["problems"] == [] and rep["stages"] == ["builder", "runtime"]
    assert rep["global_args"]["L4T_TAG"] == "r36.4.0"
    assert rep["bases"] == ["nvcr.io/nvidia/l4t-jetpack:r36.4.0"] * 2
    other = dockerfile_check.check(REPO / "Dockerfile.jetson", REPO, {"L4T_TAG": "r36.3.0"})
    assert other["bases"][0] == "nvcr.io/nvidia/l4t-jetpack:r36.3.0"
    text = (REPO / "Dockerfile.jetson").read_text()
    assert "--system-site-packages" in text and "jetson_start.py" in text and "requirements-jetson.txt" in text
    # the x86/arm64 Dockerfile is the same file for both architectures
    main = dockerfile_check.check(REPO / "Dockerfile", REPO, {"BASE_IMAGE": "localhost/debian-py:bookworm-arm64"})
    assert main["problems"] == [] and main["bases"][0] == "localhost/debian-py:bookworm-arm64"


@pytest.mark.parametrize("bad,msg", [
    ("FROM ${NOPE}\n", "not declared by a global ARG"),
    ("FROM x AS a\nCOPY --from=b /x /y\n", "names no earlier stage"),
    ("FROM x\nCOPY does-not-exist /y\n", "not in the build context"),
    ("FROM x\nENTRYPOINT [\"python\", 3]\n", "exec form"),
    ("FROM x\nFROBNICATE y\n", "unknown instruction"),
    ("FROM x\nRUN echo \\\n", "past the end"),
])
def test_dockerfile_check_catches_mistakes(bad: str, msg: str, tmp_path: Path):
    p = tmp_path / "Dockerfile"
    p.write_text(bad)
    try:
        problems = dockerfile_check.check(p, tmp_path)["problems"]
    except ValueError as e:
        problems = [str(e)]
    assert any(msg in x for x in problems), problems


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    """A fake ``tensorrt`` module (version only) and a fake GPU: what jetson_start reads from the device."""
    mod = types.ModuleType("tensorrt")
    mod.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    gpu = dict(ORIN)
    import export.tensorrt as et

    monkeypatch.setattr(et, "gpu_info", lambda device=0: dict(gpu))
    return types.SimpleNamespace(module=mod, gpu=gpu)


def _fake_build(calls: list):
    """Stands in for export.tensorrt.build_engine on the device: writes an engine and its sidecar."""
    import tensorrt

    import export.tensorrt as et
    from distill.io import sha256_file

    def build(onnx, engine, precision, **kw):
        calls.append((Path(onnx).name, precision, kw))
        gpu = et.gpu_info()
        Path(engine).write_bytes(b"fake engine")
        et.sidecar_path(engine).write_text(json.dumps({
            "format": 1, "tensorrt_version": tensorrt.__version__, "gpu_name": gpu["name"],
            "compute_capability": gpu["compute_capability"], "precision": precision,
            "onnx": {"path": str(onnx), "sha256": sha256_file(onnx)}, "artifact": {}, "created": "now"}))
        return {"engine": str(engine)}

    return build


def test_first_start_builds_then_reuses_until_tensorrt_or_gpu_changes(fake_trt, tiny_artifact: Path,
                                                                       tmp_path: Path):
    cache = tmp_path / "cache"
    calls: list = []
    build = _fake_build(calls)
    version, gpu = jetson_start.environment()
    assert (version, gpu) == ("10.3.0", ORIN)
    d = jetson_start.plan(tiny_artifact, cache, "fp32", version, gpu)
    assert d.action == "build" and "no cached engine" in d.reason
    assert Path(d.engine).name.endswith(".fp32.trt10.3.0.sm87.engine")
    done = jetson_start.ensure_engine(d, build=build, max_batch=32)
    assert done["action"] == "build" and Path(d.engine).is_file() and calls[0][:2] == (tiny_artifact.name, "fp32")

    again = jetson_start.plan(tiny_artifact, cache, "fp32", version, gpu)  # second start: reuse, nothing built
    assert again.action == "reuse" and again.engine == d.engine
    assert jetson_start.ensure_engine(again, build=build)["action"] == "reuse" and len(calls) == 1

    fake_trt.module.__version__ = "10.3.1"  # a JetPack update: another engine key, built anew
    v2, _ = jetson_start.environment()
    upd = jetson_start.plan(tiny_artifact, cache, "fp32", v2, gpu)
    assert upd.action == "build" and upd.engine != d.engine

    # the same file name but a sidecar from another GPU (e.g. a copied cache volume): refused by the loader's check
    other = {"name": "Orin Nano", "compute_capability": "8.7"}
    moved = jetson_start.plan(tiny_artifact, cache, "fp32", version, other)
    Path(moved.engine).write_bytes(b"x")
    Path(moved.engine + ".json").write_text(Path(d.engine + ".json").read_text())
    assert jetson_start.plan(tiny_artifact, cache, "fp32", version, other).action == "build"
    assert "unusable" in jetson_start.plan(tiny_artifact, cache, "fp32", version, other).reason


def test_precision_picks_the_onnx_variant(fake_trt, tiny_artifact: Path, tmp_path: Path):
    import shutil

    m = tmp_path / "model.onnx"
    shutil.copy(tiny_artifact, m)
    assert jetson_start.pick_onnx(m, "fp16") == m  # TensorRT 10 builds fp16 from the fp32 ONNX
    shutil.copy(tiny_artifact, tmp_path / "model.fp16.onnx")
    assert jetson_start.pick_onnx(m, "fp16").name == "model.fp16.onnx"
    with pytest.raises(SystemExit, match="int8-trt"):
        jetson_start.pick_onnx(m, "int8")


def test_plan_cli_prints_the_decision(fake_trt, tiny_artifact: Path, tmp_path: Path, capsys):
    assert jetson_start.main(["--plan", "--model", str(tiny_artifact), "--cache", str(tmp_path),
                              "--precision", "fp32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["action"] == "build" and out["key"]["tensorrt_version"] == "10.3.0"
    assert out["key"]["gpu_name"] == "Orin"


def test_missing_model_or_tensorrt_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails like on a machine without TensorRT
    with pytest.raises(SystemExit, match="error: TensorRT is not installed"):
        jetson_start.environment()
    with pytest.raises(SystemExit, match="no ONNX artifact"):
        jetson_start.plan(tmp_path / "none.onnx", tmp_path, "fp16", "10.3.0", ORIN)


build_and_run = _load("build_and_run")


def _answer(preds):
    return {"arch": "amd64", "answer": {"results": [{"predictions": [{"label": l, "score": s} for l, s in preds]}]}}


def test_arm64_answer_is_compared_with_the_x86_one():
    x86 = _answer([("cat", 0.9), ("dog", 0.08)])
    same = _answer([("cat", 0.90005), ("dog", 0.07995)])
    assert build_and_run.compare_answers(same, x86, 1e-4) == [] and same["compare"]["labels_equal"]
    assert "scores differ" in build_and_run.compare_answers(_answer([("cat", 0.9002), ("dog", 0.08)]), x86, 1e-4)[0]
    assert "labels" in build_and_run.compare_answers(_answer([("dog", 0.5), ("cat", 0.4)]), x86, 1e-4)[0]
    assert build_and_run.compare_answers({}, x86, 1e-4) == ["no answer to compare with the reference report"]


def test_old_qemu_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch):
    import subprocess

    def fake(version):
        return lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, f"qemu-aarch64 version {version} (Debian)\n", "")

    monkeypatch.setattr(build_and_run, "sh", fake("7.2.22"))
    with pytest.raises(SystemExit, match="too old.*bookworm-backports"):
        build_and_run.check_qemu("arm64")
    monkeypatch.setattr(build_and_run, "sh", fake("10.0.2"))
    build_and_run.check_qemu("arm64")  # fine
    assert build_and_run.base_tag("arm64") == "localhost/debian-py:bookworm-arm64"
