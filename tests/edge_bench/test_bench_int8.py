"""``distill bench int8``: variants built with export's quantiser, accuracy vs fp32, paired interleaved speed-ups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_bench.int8 import paired_rows, timed_median


def test_speedup_is_the_median_of_paired_ratios_not_a_ratio_of_medians():
    # round 2 is slow for everyone (load); paired ratios cancel it, the ratio of medians does not
    per_round = {"fp32": [1.0, 10.0, 1.2], "int8": [0.5, 9.0, 0.4]}
    rows = paired_rows(per_round, threads=1, batch=4)
    fp32, int8 = rows
    assert fp32["speedup_vs_fp32"] == 1.0 and fp32["model"] == "fp32"
    assert int8["speedup_vs_fp32"] == pytest.approx(2.0)            # ratios 2.0, 1.11, 3.0 -> median 2.0
    assert (int8["speedup_min"], int8["speedup_max"]) == pytest.approx((10 / 9, 3.0))
    assert int8["median_ms"] == pytest.approx(500.0) and int8["img_per_s"] == pytest.approx(8.0)


def test_timed_median_runs_until_the_time_is_spent_with_an_injected_clock():
    now = [0.0]
    durations = iter([0.1, 0.3, 0.2, 0.2, 0.9] + [0.1] * 100)
    calls = []

    def clock() -> float:
        return now[0]

    def run() -> None:
        calls.append(1)
        now[0] += next(durations)

    assert timed_median(run, 1.0, clock) == pytest.approx(0.2)  # calls 0.1 0.3 0.2 0.2 0.9: the 5th passes t=1.0
    assert len(calls) == 5


def test_int8_command_on_the_tiny_artifact(tiny_artifact: Path, cifar_small_dir: Path, tmp_path: Path, bench_cli):
    out = tmp_path / "int8"
    res = bench_cli.invoke("int8", str(tiny_artifact), "--data", str(cifar_small_dir), "--per-class", "2",
                           "--calib-per-class", "1", "--calib-skip", "2", "--configs", "cpu", "--batches", "1,3",
                           "--threads", "1", "--rounds", "2", "--seconds", "0.01", "--profile", "--out", str(out))
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "bench_int8.json").read_text())
    assert rep["accuracy"]["fp32"]["agree_fp32"] == 1.0 and rep["accuracy"]["fp32"]["n"] == 20
    assert 0.0 <= rep["accuracy"]["cpu"]["agree_fp32"] <= 1.0
    assert [(r["model"], r["batch"]) for r in rep["timing"]] == [("fp32", 1), ("cpu", 1), ("fp32", 3), ("cpu", 3)]
    assert all(r["speedup_vs_fp32"] == 1.0 for r in rep["timing"] if r["model"] == "fp32")
    assert rep["settings"]["rounds"] == 2 and rep["cpu_flags"] is not None and rep["load_before"]
    from export.metadata import read_metadata

    meta = read_metadata(out / f"{tiny_artifact.stem}.cpu.onnx")
    assert (meta.precision, meta.quantization, meta.class_names) == ("int8", "cpu", read_metadata(tiny_artifact).class_names)
    assert "| cpu | 1 | 3 |" in res.output
    prof = rep["profile"]
    assert set(prof) == {"fp32/b1", "fp32/b3", "cpu/b1", "cpu/b3"} and prof["fp32/b1"]["nodes"] > 0
    assert "Conv" in prof["fp32/b1"]["ops_us"] and any(op.startswith("QLinear") or "Integer" in op or op == "QuantizeLinear"
                                                      for op in prof["cpu/b3"]["ops_us"])
    assert not list(out.glob("prof_*.json"))  # traces are summarised, then removed


@pytest.mark.parametrize("args,msg", [
    (["--configs", "nope"], "unknown int8 configuration"),
    (["--batches", "0"], "--batches must be positive"),
    (["--spin", "maybe"], "--spin must be"),
])
def test_int8_bad_input_is_one_error_line(tiny_artifact: Path, cifar_small_dir: Path, tmp_path: Path, bench_cli, args, msg):
    res = bench_cli.invoke("int8", str(tiny_artifact), "--data", str(cifar_small_dir), "--out", str(tmp_path), *args)
    assert res.exit_code == 2 and "error:" in res.output and msg in res.output
    assert not (tmp_path / "bench_int8.json").exists()


def test_int8_refuses_a_foreign_file(tmp_path: Path, cifar_small_dir: Path, bench_cli):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    res = bench_cli.invoke("int8", str(bad), "--data", str(cifar_small_dir), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "error:" in res.output
