"""``bench run --reference``: each model against the reference on the same backend, numbers checked by hand."""

from __future__ import annotations

from edge_bench.report import reference_lines, reference_rows, to_markdown


def _row(model: str, backend: str, p50: float, size: float, top1: float, **kw) -> dict:
    return {"model": model, "backend": backend, "variant": "fp32", "scenario": "SingleStream", "batch_size": 1,
            "status": "ok", "p50_ms": p50, "size_mb": size, "top1": top1, **kw}


REPORT = {
    "schema_version": 1, "tool_version": "t", "inputs": "x", "reference": "teacher",
    "environment": {"cpu": "c", "threads": {}},
    "results": [
        _row("teacher", "ort-cpu", 5.0, 3.4, 0.89),
        _row("student", "ort-cpu", 0.5, 0.34, 0.80),
        _row("student", "torch-cpu", 1.0, 0.34, 0.80),     # the teacher did not run on torch-cpu: no row
        {**_row("student", "ort-cpu", 9.9, 0.34, 0.80), "scenario": "Offline", "batch_size": 32},  # not SingleStream
        {**_row("student", "ort-cpu", 0.1, 0.34, 0.80), "status": "error"},
    ],
}


def test_pairs_on_backend_and_divides_reference_by_model() -> None:
    rows = reference_rows(REPORT)
    assert len(rows) == 1
    r = rows[0]
    assert (r["model"], r["backend"], r["reference"]) == ("student", "ort-cpu", "teacher")
    assert r["speedup"] == 10.0 and abs(r["size_ratio"] - 10.0) < 1e-9
    assert (r["top1"], r["reference_top1"]) == (0.80, 0.89)
    line = reference_lines(REPORT)[0]
    assert "top-1 80.0% vs 89.0%" in line and "(10.0x faster)" in line and "(10.0x smaller)" in line


def test_no_reference_no_rows_and_markdown_lists_them() -> None:
    assert reference_rows({**REPORT, "reference": None}) == []
    md = to_markdown(REPORT)
    assert "Against teacher (same run, same inputs):" in md and "10.0x faster" in md
