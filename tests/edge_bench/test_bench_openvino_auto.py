"""``ov-cpu`` beside ``ort-cpu`` in one run, ``--backends auto`` naming a winner per precision, ISA in every result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_bench.auto import ACCURACY_TOLERANCE, select_winners, winner_lines
from distill.isa import classify, parse_cpuinfo

# OpenVINO/NNCF: in a mixed session these run in a pytest process of their own (tests/conftest.py says why).
pytestmark = pytest.mark.openvino_process

X86_AMX = "flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 avx512_fp16 " \
          "amx_tile amx_int8 amx_bf16\n"
X86_AVX2 = "flags\t\t: fpu sse2 avx avx2 fma f16c\n"
ARM_PI5 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop " \
          "asimddp\n"
ARM_NEOVERSE_V1 = "Features\t: fp asimd asimddp sve i8mm bf16 fphp asimdhp\n"


@pytest.mark.parametrize("text,machine,cls,must", [
    (X86_AMX, "x86_64", "x86-amx", {"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16",
                                    "avx512_fp16"}),
    (X86_AVX2, "x86_64", "x86-avx2", {"avx2"}),
    (ARM_PI5, "aarch64", "arm-dotprod", {"neon", "dotprod", "fp16"}),
    (ARM_NEOVERSE_V1, "aarch64", "arm-i8mm", {"neon", "dotprod", "i8mm", "sve", "bf16"}),
    ("", "aarch64", "arm-neon", {"neon"}),  # NEON is mandatory on AArch64
])
def test_isa_features_and_class(text: str, machine: str, cls: str, must: set[str]):
    feats = parse_cpuinfo(text, machine)
    assert must <= set(feats)
    if machine == "x86_64" and "avx512f" not in text:
        assert not {"avx512f", "avx512_vnni", "amx_int8"} & set(feats)
    assert classify(feats, machine) == cls


def test_int8_default_follows_the_isa():
    from export.quantize import DEFAULT_INT8, INT8_CONFIGS, ISA_INT8_DEFAULTS, default_int8_config, variant_config

    assert default_int8_config("x86-avx2") == DEFAULT_INT8  # the AVX2 tuning stays where it was measured
    for isa, name in ISA_INT8_DEFAULTS.items():
        assert default_int8_config(isa) == name and name in INT8_CONFIGS
    assert variant_config("int8-trt", "x86-amx") == "tensorrt"  # TensorRT's Q/DQ never follows the CPU


def _rows(spec: list[tuple[str, str, str, str, float | None, float]]) -> dict:
    """A minimal report: (label, backend, precision, model_name, top1, p50_ms) per candidate."""
    results, models = [], []
    for label, backend, precision, name, top1, p50 in spec:
        base = {"model": label, "backend": backend, "variant": precision, "precision": precision, "top1": top1,
                "status": "ok"}
        results += [{**base, "scenario": "SingleStream", "p50_ms": p50},
                    {**base, "scenario": "Offline", "throughput_ips": 1000 / p50, "batch_size": 8}]
        models.append({**base, "info": {"model_name": name}})
    return {"results": results, "models": models}


def test_auto_picks_fastest_within_tolerance_per_precision():
    rep = _rows([
        ("s.onnx", "ort-cpu", "fp32", "stu", 0.900, 1.0),
        ("s.xml", "ov-cpu", "fp32", "stu", 0.900, 0.8),
        ("s.int8.onnx", "ort-cpu", "int8", "stu", 0.899, 0.5),
        ("s.int8.xml", "ov-cpu", "int8", "stu", 0.890, 0.3),  # fastest but 1 point down: excluded
        ("s.bf16.xml", "ov-cpu", "bf16", "stu", 0.8985, 0.4),
        ("t.onnx", "ort-cpu", "fp32", "teacher", 0.95, 3.0),
    ])
    auto = select_winners(rep)
    got = {(w["model_name"], w["precision"]): w for w in auto["winners"]}
    assert got[("stu", "fp32")]["winner"]["backend"] == "ov-cpu"
    assert got[("stu", "int8")]["winner"]["model"] == "s.int8.onnx"
    assert [e["model"] for e in got[("stu", "int8")]["excluded"]] == ["s.int8.xml"]
    assert got[("stu", "bf16")]["winner"]["backend"] == "ov-cpu"  # 0.15 points down: inside 0.3
    assert got[("teacher", "fp32")]["winner"]["model"] == "t.onnx"
    assert auto["tolerance_points"] == pytest.approx(100 * ACCURACY_TOLERANCE)
    lines = winner_lines({"auto": auto})
    assert any("stu int8: ort-cpu (s.int8.onnx) wins" in ln and "excluded: ov-cpu (s.int8.xml: top-1" in ln for ln in lines)


def test_auto_without_accuracy_names_no_winner_and_says_why():
    auto = select_winners(_rows([("s.onnx", "ort-cpu", "fp32", "stu", None, 1.0)]))
    w = auto["winners"][0]
    assert w["winner"] is None and "--data" in w["excluded"][0]["reason"]
    assert "no winner" in winner_lines({"auto": auto})[0]


@pytest.fixture(scope="module")
def ir(tiny_artifact: Path, cifar_small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("openvino")
    from export.openvino import export_openvino

    out = tmp_path_factory.mktemp("ovbench") / "tiny.xml"
    export_openvino(tiny_artifact, out, variants="bf16", verify_dir=cifar_small_dir, max_verify_images=40,
                    verbose=False)
    return out


def test_ov_cpu_beside_ort_cpu_with_auto(bench_cli, ir: Path, tiny_artifact: Path, cifar_small_dir: Path,
                                         tmp_path: Path):
    res = bench_cli.invoke("run", "-m", f"onnx={tiny_artifact}", "-m", f"ir={ir}",
                           "-m", f"irbf16={ir.with_name('tiny.bf16.xml')}", "--backends", "auto",
                           "--scenarios", "single-stream,offline", "--count", "10", "--warmup", "1",
                           "--batch-sizes", "1,4", "--data", str(cifar_small_dir), "--accuracy-limit", "30",
                           "--max-images", "4", "--max-seconds", "120", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "results.json").read_text())
    ok = {(r["model"], r["backend"]) for r in rep["results"] if r["status"] == "ok"}
    assert {("onnx", "ort-cpu"), ("ir", "ov-cpu"), ("irbf16", "ov-cpu")} <= ok
    assert not any(r["backend"] == "ov-cpu" and r["model"] == "onnx" for r in rep["results"])  # IR only
    ov_model = next(m for m in rep["models"] if m["model"] == "ir")
    assert ov_model["info"]["providers"] == ["OpenVINO:CPU:f32"] and ov_model["precision"] == "fp32"
    assert ov_model["info"]["size_bytes"] > ir.stat().st_size  # the .bin counts
    # the environment record names the ISA features in every result
    isa = rep["environment"]["cpu_isa"]
    assert isa["class"] and isinstance(isa["features"], list) and rep["environment"]["openvino"]
    winners = {w["precision"]: w for w in rep["auto"]["winners"]}
    assert winners["fp32"]["winner"]["backend"] in ("ort-cpu", "ov-cpu")
    assert {c["backend"] for c in winners["fp32"]["candidates"]} == {"ort-cpu", "ov-cpu"}
    assert "bf16" in winners
    md = (tmp_path / "results.md").read_text()
    assert "--backends auto" in md and "wins" in md and "ISA:" in md
    assert "wins" in res.output


def test_ov_cpu_unavailable_is_skipped_with_install_hint(monkeypatch: pytest.MonkeyPatch):
    import builtins

    from edge_bench.backends import backend_unavailable_reason

    real = builtins.__import__

    def no_openvino(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    reason = backend_unavailable_reason("ov-cpu")
    assert reason and "pip install 'distill-toolchain[openvino]'" in reason
