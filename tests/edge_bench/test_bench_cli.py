"""``distill bench`` end to end on the tiny models: reports, skipped backends, bad inputs, compare, overhead."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from edge_bench._version import SCHEMA_VERSION


def _report(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


def test_run_writes_all_reports_atomically(bench_run: Path):
    names = sorted(p.name for p in bench_run.iterdir())
    assert names == ["results.csv", "results.json", "results.md", "results.png",  # no temp files left behind
                     "results_confusion_ckpt_torch-cpu_eager-fp32.png", "results_confusion_student_ort-cpu_fp32.png"]
    assert (bench_run / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = _report(bench_run)
    assert rep["schema_version"] == SCHEMA_VERSION and rep["tool"] == "edge_bench"
    env = rep["environment"]
    for key in ("cpu", "cpu_logical_cores", "gpu", "driver", "cuda", "torch", "onnxruntime", "tensorrt", "threads",
                "emulation"):
        assert key in env
    assert rep["inputs"] == "8 real images"


def test_scenarios_on_artifact_and_checkpoint(bench_run: Path):
    rows = [r for r in _report(bench_run)["results"] if r["status"] == "ok"]
    got = {(r["model"], r["backend"], r["scenario"], r["batch_size"]) for r in rows}
    for model, backend in (("student", "ort-cpu"), ("ckpt", "torch-cpu")):
        assert {(model, backend, "SingleStream", 1), (model, backend, "Offline", 1), (model, backend, "Offline", 4),
                (model, backend, "Server", 1)} <= got
    for r in rows:
        assert r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["ci_lo_ms"] <= r["ci_hi_ms"]
        assert r["spread_lo_ms"] <= r["ci_lo_ms"] and r["spread_hi_ms"] >= r["ci_hi_ms"]
        assert 0.0 <= r["top1"] <= 1.0 and r["acc_n"] == 50 and r["mean_class_acc"] is not None
        assert r["size_mb"] > 0 and r["params"] > 1000 and r["load_s"] >= 0 and r["first_inference_ms"] > 0
        assert r["rss_mb"] > 0 and r["process_peak_rss_mb"] > 0
    ss = {r["model"]: r for r in rows if r["scenario"] == "SingleStream"}
    assert ss["student"]["n"] == 20 and ss["ckpt"]["variant"] == "eager-fp32"
    srv = [r for r in rows if r["scenario"] == "Server"]
    assert all(r["target_qps"] == 100 and r["bound_ms"] == 500 and "bound_met" in r for r in srv)


def test_unavailable_backends_are_skipped_with_reasons(bench_run: Path):
    import onnxruntime as ort
    import torch

    rep = _report(bench_run)
    skipped = {(r["model"], r["backend"]): r["reason"] for r in rep["results"] if r["status"] == "skipped"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "CUDAExecutionProvider not available in onnxruntime" in skipped[("student", "ort-cuda")]
        assert "TensorrtExecutionProvider" in skipped[("student", "ort-tensorrt")]
    if not torch.cuda.is_available():
        assert "CUDA not available" in skipped[("ckpt", "torch-cuda")]
    assert all(reason for reason in skipped.values())
    if skipped:
        assert "| skipped |" in (bench_run / "results.md").read_text()


def test_csv_and_markdown(bench_run: Path):
    rows = list(csv.DictReader((bench_run / "results.csv").open()))
    assert rows and {"model", "backend", "scenario", "p90_ms", "top1", "status", "reason", "emulation"} <= set(rows[0])
    assert len(rows) == len(_report(bench_run)["results"])
    md = (bench_run / "results.md").read_text()
    assert "| model | backend | variant | scenario |" in md and "SingleStream" in md and "Offline" in md


def test_per_class_accuracy_and_confusion_matrix(bench_run: Path):
    """Each model scored on --data gets distill eval's per-class table and confusion matrix: in results.json, as a
    table in results.md and the terminal, and as one PNG per model; the matrix adds up to the scored images and its
    diagonal to top-1."""
    from rich.console import Console

    from edge_bench.report import print_table

    rep = _report(bench_run)
    measured = [m for m in rep["models"] if m.get("accuracy")]
    assert {(m["model"], m["backend"]) for m in measured} == {("student", "ort-cpu"), ("ckpt", "torch-cpu")}
    for m in measured:
        acc = m["accuracy"]
        matrix, classes = acc["confusion"]["matrix"], acc["confusion"]["classes"]
        assert sum(map(sum, matrix)) == acc["n"] == 50
        assert sum(matrix[i][i] for i in range(len(acc["per_class"]))) == round(acc["top1"] * 50)
        assert [c["class"] for c in acc["per_class"]] == classes[:len(acc["per_class"])]
        assert sum(c["images"] for c in acc["per_class"]) == 50 and len(acc["per_class"]) == 10
        assert acc["mean_class_acc"] == pytest.approx(sum(c["accuracy"] for c in acc["per_class"]) / 10)
    for png in ("results_confusion_student_ort-cpu_fp32.png", "results_confusion_ckpt_torch-cpu_eager-fp32.png"):
        assert (bench_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (bench_run / "results.md").read_text()
    assert "| class | images | student · ort-cpu · fp32 % | ckpt · torch-cpu · eager-fp32 % |" in md
    airplane = next(ln for ln in md.splitlines() if ln.startswith("| airplane | 5 |"))
    student = next(c for c in measured[0]["accuracy"]["per_class"] if c["class"] == "airplane")
    assert f"{100 * student['accuracy']:.2f}" in airplane
    console = Console(record=True, width=200)
    print_table(rep, console)
    text = console.export_text()
    assert "per-class accuracy" in text and "airplane" in text and "student · ort-cpu · fp32 %" in text


def test_per_class_counts_predictions_outside_the_labeled_classes():
    """A model with more classes than the labeled folders: the table covers the folders' classes, and a prediction
    of any other class lands in one '(another class)' column instead of being dropped or crashing."""
    from edge_bench.accuracy import OTHER_CLASS, evaluate

    names = ["a", "b", "c", "d"]
    samples = [(Path(f"{c}{i}.jpg"), c) for c in ("b", "d") for i in range(2)]
    # b0 -> b, b1 -> d (confused), d0 -> d, d1 -> a (a class with no folder)
    picks = {"b0.jpg": 1, "b1.jpg": 3, "d0.jpg": 3, "d1.jpg": 0}
    predict = lambda paths: [[1.0 if j == picks[p.name] else 0.0 for j in range(4)] for p in paths]  # noqa: E731
    acc = evaluate(predict, samples, names, batch_size=3)
    assert acc["confusion"] == {"classes": ["b", "d", OTHER_CLASS], "matrix": [[1, 1, 0], [0, 1, 1], [0, 0, 0]]}
    assert [(c["class"], c["images"], c["accuracy"], c["most_confused_with"]) for c in acc["per_class"]] == [
        ("b", 2, 0.5, "d"), ("d", 2, 0.5, OTHER_CLASS)]
    assert acc["top1"] == 0.5 and acc["mean_class_acc"] == 0.5 and acc["classes"] == 2


def test_compare_reports(bench_run: Path, tmp_path: Path, bench_cli):
    rep = _report(bench_run)
    slower = json.loads(json.dumps(rep))
    for r in slower["results"]:
        if r.get("p50_ms"):
            for k in [k for k in r if k.endswith("_ms") and isinstance(r[k], float)]:
                r[k] = r[k] * 3 + 1000
            r["throughput_ips"] = r["throughput_ips"] / 3
    slower["environment"]["onnxruntime"] = "9.9.9"
    b = tmp_path / "b.json"
    b.write_text(json.dumps(slower))
    res = bench_cli.invoke("compare", str(bench_run / "results.json"), str(b), "--json", "--out", str(tmp_path / "cmp.md"))
    assert res.exit_code == 0, res.output
    cmp = json.loads(res.stdout[res.stdout.index("{"):])
    ok_rows = [r for r in cmp["rows"] if r["status_a"] == "ok"]
    assert ok_rows and all(r["outside_spread"] and r["verdict"].startswith("slower") for r in ok_rows)
    assert ["onnxruntime", rep["environment"]["onnxruntime"], "9.9.9"] in cmp["environment_changes"]
    assert "slower" in (tmp_path / "cmp.md").read_text()
    same = bench_cli.invoke("compare", str(bench_run / "results.json"), str(bench_run / "results.json"), "--json")
    rows = json.loads(same.stdout[same.stdout.index("{"):])["rows"]
    assert all(r["verdict"] in ("within spread", "skipped in both") for r in rows)
    gate = bench_cli.invoke("compare", str(bench_run / "results.json"), str(b), "--fail-on-slower", "10")
    assert gate.exit_code == 1


def test_emulation_is_labelled_everywhere(tiny_artifact: Path, tmp_path: Path, bench_cli):
    res = bench_cli.run("run", "-m", str(tiny_artifact), "--backends", "ort-cpu", "--scenarios", "single-stream",
                        "--count", "10", "--warmup", "1", "--emulate", "rpi5", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    rep = _report(tmp_path)
    assert rep["emulation"]["label"] == "emulation:rpi5" and rep["environment"]["emulation"]["profile"] == "rpi5"
    assert all(r["emulation"] == "emulation:rpi5" for r in rep["results"])
    assert "EMULATION (rpi5" in (tmp_path / "results.md").read_text()
    assert "emulation:rpi5" in (tmp_path / "results.csv").read_text()
    assert "EMULATION" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "-m", "/nonexistent/model.onnx"], "model not found"),
    (["run", "-c", "/nonexistent/best.pt"], "checkpoint not found"),
    (["run", "-m", "{art}", "--backends", "ort-gpu"], "unknown backend 'ort-gpu'"),
    (["run", "-m", "{art}", "--scenarios", "multistream"], "unknown scenario 'multistream'"),
    (["run", "-m", "{art}", "--images", "{empty}"], "no images"),
    (["run", "-m", "{art}", "--emulate", "pi-zero"], "unknown --emulate"),
    (["run"], "nothing to benchmark"),
    (["run", "-m", "s={art}", "--reference", "teacher"], "--reference 'teacher' is not one of the models' labels (s)"),
    (["compare", "{empty}/a.json", "{empty}/b.json"], "report not found"),
    (["http", "--url", "ftp://x", "--images", "{empty}"], "--url must start with http"),
])
def test_bad_inputs_exit_2_with_one_error_line(args, message, tiny_artifact: Path, tmp_path: Path, bench_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(art=tiny_artifact, empty=empty) for a in args]
    if args[0] == "run":
        argv += ["--out", str(tmp_path / "o")]
    res = bench_cli.run(*argv, timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_overhead_command(tiny_artifact: Path, tmp_path: Path, bench_cli):
    res = bench_cli.invoke("overhead", "-m", str(tiny_artifact), "--iterations", "200", "--rounds", "3",
                           "--repeats", "2", "--duration", "0.3", "--out", str(tmp_path / "ov.json"))
    assert res.exit_code == 0, res.output
    ov = json.loads((tmp_path / "ov.json").read_text())
    assert ov["overhead"]["rounds"] == 3 and "overhead_pct" in ov["overhead"]
    assert 0 <= ov["overhead"]["bookkeeping_ns"] < 20_000
    rep = ov["repeatability"]
    assert rep["repeats"] == 2 and isinstance(rep["agree_ci"], bool) and isinstance(rep["agree_spread"], bool)
    assert all(r["spread_lo_ms"] <= r["ci_lo_ms"] <= r["p50_ms"] <= r["ci_hi_ms"] <= r["spread_hi_ms"]
               for r in rep["runs"])


def test_backends_command(bench_cli):
    res = bench_cli.invoke("backends")
    assert res.exit_code == 0 and "ort-cpu" in res.stdout and "available" in res.stdout


@pytest.mark.slow
def test_torch_compile_checkpoint(tiny_checkpoint: Path, tmp_path: Path, bench_cli):
    res = bench_cli.invoke("run", "-c", str(tiny_checkpoint), "--backends", "torch-cpu", "--torch-modes", "compile",
                           "--scenarios", "single-stream", "--count", "20", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    rows = [r for r in _report(tmp_path)["results"] if r["status"] == "ok"]
    assert rows and rows[0]["variant"] == "compile-fp32"


def test_accuracy_on_checkpoint_split(tiny_checkpoint: Path, tiny_artifact: Path, tmp_path: Path, bench_cli):
    """--split CKPT:val scores on the validation split the checkpoint records (the tiny one has 100 images)."""
    res = bench_cli.invoke("run", "-m", str(tiny_artifact), "--backends", "ort-cpu", "--scenarios", "single-stream",
                           "--count", "5", "--warmup", "1", "--split", f"{tiny_checkpoint}:val", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    row = [r for r in _report(tmp_path)["results"] if r["status"] == "ok"][0]
    assert row["acc_n"] == 100 and row["top1"] is not None
