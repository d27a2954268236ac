"""TensorRT: sidecar compatibility check, version-aware precision plan, build flow (fake tensorrt), missing TRT."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

import export.tensorrt as ets
from distill.errors import DependencyError
from export.cli import app
from export.errors import ArtifactError, ExportError
from export.runtime import load_artifact

AVAILABLE, REASON = ets.tensorrt_available()
SIDECAR = {"format": 1, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
           "precision": "fp16", "onnx": {"path": "model.fp16.onnx"}, "artifact": {}}


def test_compat_check_accepts_the_same_machine():
    ets.check_engine_compat(SIDECAR, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")


@pytest.mark.parametrize("kw,match", [
    ({"tensorrt_version": "11.1.0", "gpu_name": "Orin", "compute_capability": "8.7"}, "TensorRT 10.3.0 \\(here 11.1.0\\)"),
    ({"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
     "compute capability 8.7 \\(here 9.0\\).*GPU Orin"),
])
def test_compat_check_refuses_another_gpu_or_version(kw, match):
    with pytest.raises(ArtifactError, match=match) as e:
        ets.check_engine_compat(SIDECAR, engine="model.engine", **kw)
    assert "rebuild it here" in str(e.value) and "model.fp16.onnx" in str(e.value)


def test_engine_without_sidecar_is_refused(tmp_path: Path):
    eng = tmp_path / "model.engine"
    eng.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="sidecar .* not found"):
        load_artifact(eng)
    ets.sidecar_path(eng).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_artifact(eng)
    ets.sidecar_path(eng).write_text(json.dumps({"tensorrt_version": "10.3.0"}))
    with pytest.raises(ArtifactError, match="lacks"):
        load_artifact(eng)


def test_foreign_engine_is_refused_with_a_clear_message(tmp_path: Path, tiny_artifact: Path, monkeypatch):
    """A sidecar from another GPU: load_artifact fails on the compatibility check (before touching the engine)."""
    from export.metadata import read_metadata

    eng = tmp_path / "model.engine"
    eng.write_bytes(b"\x00" * 64)
    ets.sidecar_path(eng).write_text(json.dumps(SIDECAR | {"artifact": read_metadata(tiny_artifact).to_json_dict()}))
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    import export.engine  # the runtime side (loading) lives apart from the builder

    monkeypatch.setattr(export.engine, "gpu_info", lambda device=0: {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"})
    with pytest.raises(ArtifactError, match="built for compute capability 8.7 \\(here 8.0\\)"):
        load_artifact(eng)


@pytest.mark.parametrize("version,req,onnx_prec,st,flags", [
    ("10.3.0", "fp32", "fp32", False, []),
    ("10.3.0", "fp16", "fp32", False, ["FP16"]),
    ("10.3.0", "fp16", "fp16", True, []),
    ("10.3.0", "int8", "int8", False, ["INT8", "FP16"]),
    ("11.1.0", "fp32", "fp32", True, []),
    ("11.1.0", "fp16", "fp16", True, []),
    ("11.1.0", "int8", "int8", True, []),
])
def test_precision_plan_per_tensorrt_version(version, req, onnx_prec, st, flags):
    strongly, got_flags, desc = ets.plan_build(version, req, onnx_prec, {"FP16", "INT8"})
    assert (strongly, got_flags) == (st, flags) and version in desc


@pytest.mark.parametrize("version,req,onnx_prec,match", [
    ("11.1.0", "fp16", "fp32", "strongly typed .* fp16 ONNX"),
    ("11.1.0", "int8", "fp32", "Q/DQ int8 ONNX"),
    ("10.3.0", "int8", "fp32", "Q/DQ int8 ONNX"),
    ("10.3.0", "fp32", "int8", "--precision int8"),
    ("10.3.0", "bf16", "fp32", "unknown --precision"),
])
def test_precision_plan_refuses_impossible_requests(version, req, onnx_prec, match):
    with pytest.raises(ExportError, match=match):
        ets.plan_build(version, req, onnx_prec, {"FP16", "INT8"})


def _fake_tensorrt(version: str, calls: dict) -> types.ModuleType:
    """Enough of the TensorRT Python API to drive build_engine without a GPU."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Enum:
        def __init__(self, **members):
            self.__members__ = members
            for k, v in members.items():
                setattr(self, k, v)

    class ILogger:
        Severity = types.SimpleNamespace(ERROR=1, INTERNAL_ERROR=0)

        def __init__(self):
            pass

    class Tensor:
        name, shape = "input", (-1, 3, 32, 32)

    class Network:
        def get_input(self, i):
            return Tensor()

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return True

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls["profile"] = (name, mn, opt, mx)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            calls.setdefault("flags", []).append(flag)

        def add_optimization_profile(self, p):
            pass

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"ENGINE"

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, Parser
    trt.BuilderFlag = Enum(FP16="FP16", INT8="INT8") if version.startswith("10") else Enum()
    trt.NetworkDefinitionCreationFlag = Enum(STRONGLY_TYPED=5)
    trt.MemoryPoolType = Enum(WORKSPACE="WORKSPACE")
    return trt


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_build_flow_with_fake_tensorrt(version, tiny_artifact: Path, tmp_path: Path, monkeypatch):
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version, calls))
    monkeypatch.setattr(ets, "gpu_info", lambda device=0: {"name": "FakeGPU", "compute_capability": "8.9"})
    out = tmp_path / "m.engine"
    info = ets.build_engine(tiny_artifact, out, precision="fp32", min_batch=1, opt_batch=4, max_batch=16)
    assert out.read_bytes() == b"ENGINE"
    side = json.loads(ets.sidecar_path(out).read_text())
    assert side["tensorrt_version"] == version and side["gpu_name"] == "FakeGPU" and side["compute_capability"] == "8.9"
    assert side["precision"] == "fp32" and side["artifact"]["class_names"][0] == "airplane"
    assert side["profile"] == {"input": "input", "min": 1, "opt": 4, "max": 16, "shape": [3, 32, 32]}
    assert calls["profile"] == ("input", (1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))
    assert calls["network_flags"] == (1 << 5 if version.startswith("11") else 0)
    assert version in info["build_path"]
    if version.startswith("11"):  # strongly typed: fp16 must come from the ONNX
        with pytest.raises(ExportError, match="strongly typed"):
            ets.build_engine(tiny_artifact, out, precision="fp16")
    else:
        ets.build_engine(tiny_artifact, out, precision="fp16")
        assert calls["flags"] == ["FP16"]


def test_cpu_int8_onnx_is_refused_with_the_way_out(tiny_artifact: Path, tmp_path: Path):
    """The default int8 variant (uint8 activations) cannot become a TensorRT engine: say which file can."""
    from export.metadata import read_metadata, write_metadata

    model = onnx.load(str(tiny_artifact))
    meta = read_metadata(tiny_artifact).model_copy(update={"precision": "int8", "quantization": "cpu"})
    onnx.save(write_metadata(model, meta), tmp_path / "m.int8.onnx")
    with pytest.raises(ExportError, match="--quantize int8-trt"):
        ets.build_engine(tmp_path / "m.int8.onnx", tmp_path / "m.engine", precision="int8")
    assert not (tmp_path / "m.engine").exists()


def test_bad_batch_profile(tiny_artifact: Path, tmp_path: Path):
    with pytest.raises(ExportError, match="min-batch"):
        ets.build_engine(tiny_artifact, tmp_path / "m.engine", min_batch=8, opt_batch=4, max_batch=16)


@pytest.mark.skipif(AVAILABLE, reason="TensorRT is installed here")
def test_missing_tensorrt_exits_2(tiny_artifact: Path, tmp_path: Path):
    res = CliRunner().invoke(app, ["tensorrt", "--onnx", str(tiny_artifact), "--precision", "fp32", "-o",
                                   str(tmp_path / "m.engine")])
    assert res.exit_code == 2
    assert "TensorRT is not installed" in res.output and "pip install tensorrt" in res.output
    assert not list(tmp_path.iterdir())
    with pytest.raises(DependencyError):
        ets.import_tensorrt()


@pytest.mark.tensorrt
@pytest.mark.skipif(not AVAILABLE, reason=f"TensorRT unavailable: {REASON}")
def test_real_engine_round_trip(tiny_artifact: Path, tmp_path: Path, real_jpegs):  # pragma: no cover - needs a GPU
    import numpy as np

    out = tmp_path / "m.engine"
    ets.build_engine(tiny_artifact, out, precision="fp32", min_batch=1, opt_batch=4, max_batch=8)
    art = load_artifact(out)
    assert art.backend == "tensorrt"
    ref = load_artifact(tiny_artifact).classify(real_jpegs)
    np.testing.assert_allclose(art.classify(real_jpegs), ref, atol=1e-3)
