"""Report writers: JSON (the source of truth, with ``schema_version``), CSV, markdown, and a rich terminal table.

Every file is written atomically (``distill.io``): a killed run never leaves a half-written report.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable

from distill.errors import ConfigError
from distill.io import atomic_write_json, atomic_write_text

from ._version import SCHEMA_VERSION
from .auto import winner_lines

CSV_COLUMNS = [
    "model", "backend", "variant", "precision", "scenario", "batch_size", "status", "reason",
    "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "iqr_ms", "ci_lo_ms", "ci_hi_ms", "spread_lo_ms",
    "spread_hi_ms", "drift_lo_ms", "drift_hi_ms", "n",
    "throughput_ips", "duration_s", "target_qps", "achieved_qps", "bound_ms", "bound_met", "unfinished",
    "top1", "mean_class_acc", "acc_n", "size_mb", "params", "load_s", "first_inference_ms",
    "preprocess_ms_per_image", "rss_mb", "process_peak_rss_mb", "gpu_mem_mb", "power_mean_mw",
    "energy_per_image_mj", "threads", "emulation", "kind", "format", "path", "inputs",
]


def load_report(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"report not found: {p}")
    try:
        rep = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not a JSON report ({e})") from None
    if not isinstance(rep, dict) or "schema_version" not in rep or "results" not in rep:
        raise ConfigError(f"{p} is not an edge_bench report (no schema_version/results)")
    if rep["schema_version"] > SCHEMA_VERSION:
        raise ConfigError(f"{p} has schema_version {rep['schema_version']}; this tool reads up to {SCHEMA_VERSION}")
    return rep


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return ""
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _params(v: Any) -> str:
    if not v:
        return ""
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"


def to_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    extra = sorted({k for r in report["results"] for k in r} - set(CSV_COLUMNS) - {"batches"})
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + extra, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in report["results"]:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _spread_text(r: dict[str, Any]) -> str:
    """The median's reported spread (bootstrap 95% CI joined with the block-median range)."""
    lo = r.get("spread_lo_ms", r.get("ci_lo_ms"))
    hi = r.get("spread_hi_ms", r.get("ci_hi_ms"))
    return f"{_fmt(lo)}-{_fmt(hi)}" if lo is not None else ""


def table_rows(report: dict[str, Any]) -> Iterable[list[str]]:
    """Rows shared by the markdown and terminal tables (measured rows only; skips are listed separately)."""
    for r in report["results"]:
        if r.get("status") != "ok":
            continue
        thr = r.get("throughput_ips")
        if r["scenario"] == "Server":
            extra = (f"{_fmt(r.get('achieved_qps'), 1)}/{_fmt(r.get('target_qps'), 1)} QPS, bound "
                     f"{_fmt(r.get('bound_ms'), 2)} ms {'met' if r.get('bound_met') else 'missed'}")
        else:
            extra = ""
        ci = _spread_text(r)
        yield [r["model"], r["backend"], r["variant"], r["scenario"], _fmt(r.get("batch_size")),
               _fmt(r.get("p50_ms")), _fmt(r.get("p90_ms")), _fmt(r.get("p99_ms")), ci, _fmt(thr, 1),
               _fmt(r.get("top1") * 100 if r.get("top1") is not None else None, 2),
               _fmt(r.get("size_mb"), 2), _params(r.get("params")), _fmt(r.get("load_s"), 2),
               _fmt(r.get("first_inference_ms"), 1), _fmt(r.get("rss_mb"), 0), extra]


HEADERS = ["model", "backend", "variant", "scenario", "batch", "p50 ms", "p90 ms", "p99 ms", "p50 spread ms",
           "img/s", "top-1 %", "size MB", "params", "load s", "first ms", "RSS MB", "notes"]


def header_lines(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    th = env.get("threads") or {}
    lines = [
        f"CPU: {env.get('cpu')} ({env.get('cpu_logical_cores')} logical cores, affinity {len(env.get('cpu_affinity') or [])})"
        f"; GPU: {env.get('gpu') or 'none'}; torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
        f"TensorRT {env.get('tensorrt') or 'not installed'}; intra-op threads: "
        f"{th.get('requested_intra_op') or 'library default'} (torch {th.get('torch_intra_op')})",
        f"ISA: {(env.get('cpu_isa') or {}).get('class', 'unknown')} "
        f"({', '.join((env.get('cpu_isa') or {}).get('features') or []) or 'features not recorded'}); "
        f"OpenVINO {env.get('openvino') or 'not installed'}",
        f"Inputs: {report.get('inputs')}; load average at start {env.get('load_average')}, "
        f"end {env.get('load_average_end')}",
    ]
    emu = report.get("emulation")
    if emu:
        lines.insert(0, f"EMULATION ({emu['profile']}: {emu['board']}): " + "; ".join(emu["notes"]))
    if env.get("jetson"):
        j = env["jetson"]
        lines.append(f"Jetson: {j.get('board')}, power mode {j.get('power_mode')}")
    return lines


SUMMARY_HEADERS = ["model", "backend", "variant", "top-1 %", "mean/class %", "SingleStream p50 ms", "p90 ms",
                   "p99 ms", "p50 spread ms", "Offline best img/s (batch)", "size MB", "params", "load s",
                   "first ms", "RSS MB"]


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per (model, backend, variant): SingleStream latency, best Offline throughput, accuracy, size."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in report["results"]:
        if r.get("status") != "ok" or r.get("scenario") not in ("SingleStream", "Offline"):
            continue
        g = groups.setdefault((r["model"], r["backend"], r["variant"]), {"any": r})
        if r["scenario"] == "SingleStream":
            g["ss"] = r
        elif (r.get("throughput_ips") or 0) > (g.get("off", {}).get("throughput_ips") or 0):
            g["off"] = r
    rows = []
    for (model, backend, variant), g in groups.items():
        a, ss, off = g["any"], g.get("ss", {}), g.get("off")
        pct = lambda v: _fmt(v * 100 if v is not None else None, 2)  # noqa: E731
        rows.append([model, backend, variant, pct(a.get("top1")), pct(a.get("mean_class_acc")),
                     _fmt(ss.get("p50_ms")), _fmt(ss.get("p90_ms")), _fmt(ss.get("p99_ms")),
                     _spread_text(ss) if ss else "",
                     f"{_fmt(off['throughput_ips'], 1)} ({off['batch_size']})" if off else "",
                     _fmt(a.get("size_mb"), 2), _params(a.get("params")), _fmt(a.get("load_s"), 2),
                     _fmt(a.get("first_inference_ms"), 1), _fmt(a.get("rss_mb"), 0)])
    return rows


def reference_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each other model against ``report["reference"]`` on the same backend: top-1 of both, the SingleStream
    p50 speed-up (reference p50 / model p50, one run, same inputs) and how many times smaller the file is.

    Rows pair on backend only (a folded fp32 student on ort-cpu against the teacher on ort-cpu); a backend the
    reference did not run on gives no row."""
    ref = report.get("reference")
    if not ref:
        return []
    ss: dict[tuple[str, str], dict[str, Any]] = {}
    for r in report["results"]:
        if r.get("status") == "ok" and r.get("scenario") == "SingleStream" and r.get("batch_size", 1) == 1:
            ss.setdefault((r["model"], r["backend"]), r)
    ratio = lambda a, b: a / b if a and b else None  # noqa: E731
    rows = []
    for (model, backend), r in ss.items():
        base = ss.get((ref, backend))
        if model == ref or base is None:
            continue
        rows.append({"model": model, "reference": ref, "backend": backend, "top1": r.get("top1"),
                     "reference_top1": base.get("top1"), "p50_ms": r.get("p50_ms"),
                     "reference_p50_ms": base.get("p50_ms"), "speedup": ratio(base.get("p50_ms"), r.get("p50_ms")),
                     "size_mb": r.get("size_mb"), "reference_size_mb": base.get("size_mb"),
                     "size_ratio": ratio(base.get("size_mb"), r.get("size_mb"))})
    return rows


def reference_lines(report: dict[str, Any]) -> list[str]:
    """One sentence per row of :func:`reference_rows`, the line a person reads at a glance."""
    pct = lambda v: f"{v * 100:.1f}%" if v is not None else "n/a"  # noqa: E731
    num = lambda v, d: _fmt(v, d) if v is not None else "n/a"  # noqa: E731
    return [f"{r['model']} vs {r['reference']} ({r['backend']}): top-1 {pct(r['top1'])} vs {pct(r['reference_top1'])}; "
            f"SingleStream p50 {num(r['p50_ms'], 3)} vs {num(r['reference_p50_ms'], 3)} ms "
            f"({num(r['speedup'], 1)}x faster); {num(r['size_mb'], 2)} vs {num(r['reference_size_mb'], 2)} MB "
            f"({num(r['size_ratio'], 1)}x smaller)" for r in reference_rows(report)]


def to_markdown(report: dict[str, Any]) -> str:
    out = [f"<!-- edge_bench {report.get('tool_version')} schema {report['schema_version']} -->", ""]
    out += [f"- {ln}" for ln in header_lines(report)]
    summary = summary_rows(report)
    if summary:
        out += ["", "Summary (one row per model, backend and variant):", "",
                "| " + " | ".join(SUMMARY_HEADERS) + " |", "|" + "---|" * len(SUMMARY_HEADERS)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in summary]
        out += ["", "All measurements:"]
    glance = reference_lines(report)
    if glance:
        out[-1:-1] = ["", f"Against {report['reference']} (same run, same inputs):", ""] + [f"- {ln}" for ln in glance]
    auto = winner_lines(report)
    if auto:
        out += ["", f"--backends auto ({report['auto']['rule']}):", ""] + [f"- {ln}" for ln in auto]
    out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in table_rows(report):
        out.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    headers, rows = per_class_table(report)
    if rows:
        out += ["", "Per-class accuracy (%, and the class each is most confused with; confusion matrices: "
                + ", ".join(confusion_png_name(label) for label, _ in _measured(report)) + "):", "",
                "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    skipped = [r for r in report["results"] if r.get("status") in ("skipped", "error")]
    if skipped:
        out += ["", "| model | backend | variant | scenario | status | reason |", "|---|---|---|---|---|---|"]
        for r in skipped:
            out.append(f"| {r['model']} | {r['backend']} | {r.get('variant') or ''} | {r.get('scenario') or 'all'} | "
                       f"{r['status']} | {r.get('reason', '')} |")
    return "\n".join(out) + "\n"


def _measured(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(model · backend · variant, accuracy)`` of every model entry with a per-class table (reports older than
    the table have none and are left out)."""
    out = []
    for m in report.get("models") or []:
        acc = m.get("accuracy") or {}
        if m.get("status") == "ok" and acc.get("per_class"):
            variant = f" · {m['variant']}" if m.get("variant") not in (None, "artifact") else ""
            out.append((f"{m['model']} · {m['backend']}{variant}", acc))
    return out


def per_class_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the per-class accuracy table: one row per class of the labeled set, one column per
    measured (model, backend, variant), each cell the accuracy in % and the class it is most confused with."""
    measured = _measured(report)
    classes: dict[str, int] = {}
    for _, acc in measured:
        for c in acc["per_class"]:
            classes.setdefault(c["class"], c["images"])
    by = [{c["class"]: c for c in acc["per_class"]} for _, acc in measured]
    rows = []
    for name, images in classes.items():
        cells = []
        for table in by:
            c = table.get(name)
            if c is None or c["accuracy"] is None:
                cells.append("")
            else:
                cells.append(f"{100 * c['accuracy']:.2f}" + (f" ({c['most_confused_with']})" if c["most_confused_with"] else ""))
        rows.append([name, str(images), *cells])
    return ["class", "images", *(f"{label} %" for label, _ in measured)], rows


def confusion_png_name(label: str, stem: str = "results") -> str:
    """File name of one model's confusion-matrix PNG (``results_confusion_<label>.png``, a safe file name)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace(" · ", "_")).strip("_")
    return f"{stem}_confusion_{slug}.png"


TERMINAL_COLUMNS = ("model", "backend", "variant", "scenario", "batch", "p50 ms", "p90 ms", "p99 ms",
                    "p50 spread ms", "img/s", "top-1 %", "size MB", "notes")


def print_table(report: dict[str, Any], console: Any) -> None:
    """The terminal table (a subset of the markdown columns), never squeezed below 160 columns."""
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal and console.width < 160:
        console = Console(stderr=True, width=160)

    title = "edge_bench" + (f"  [bold magenta]EMULATION: {report['emulation']['profile']}[/]"
                            if report.get("emulation") else "")
    t = Table(title=title, show_lines=False, header_style="bold")
    keep = [i for i, h in enumerate(HEADERS) if h in TERMINAL_COLUMNS]
    for i in keep:
        h = HEADERS[i]
        t.add_column(h, justify="left" if h in ("model", "backend", "variant", "scenario", "notes") else "right",
                     overflow="fold")
    for row in table_rows(report):
        t.add_row(*(row[i] for i in keep))
    console.print(t)
    headers, rows = per_class_table(report)
    if rows:
        pc = Table(title="per-class accuracy % (most confused with)", header_style="bold")
        for h in headers:
            pc.add_column(h, justify="left" if h == "class" else "right", overflow="fold")
        for row in rows:
            pc.add_row(*row)
        console.print(pc)
    for ln in header_lines(report):
        console.print(f"[dim]{ln}[/]", highlight=False)
    for ln in winner_lines(report):
        console.print(f"[bold green]{ln}[/]", highlight=False)
    for ln in reference_lines(report):
        console.print(f"[bold]{ln}[/]", highlight=False)
    for r in report["results"]:
        if r.get("status") in ("skipped", "error"):
            colour = "yellow" if r["status"] == "skipped" else "red"
            console.print(f"[{colour}]{r['status']}[/] {r['model']} {r['backend']} {r.get('variant') or ''} "
                          f"{r.get('scenario') or ''}: {r.get('reason')}", highlight=False)


def write_reports(report: dict[str, Any], out_dir: str | Path, stem: str = "results") -> dict[str, Path]:
    """results.json, results.csv, results.md and, when accuracy was measured, results.png (accuracy vs latency) and
    one confusion-matrix PNG per measured model, all atomic."""
    out = Path(out_dir)
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "md": out / f"{stem}.md"}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["csv"], to_csv(report))
    atomic_write_text(paths["md"], to_markdown(report))
    from .plot import plot_pareto

    png = plot_pareto(report, out / f"{stem}.png")
    if png:
        paths["png"] = png
    from distill.report import write_confusion_png

    for label, acc in _measured(report):
        conf = acc["confusion"]
        paths[f"confusion {label}"] = write_confusion_png(
            conf["matrix"], conf["classes"], out / confusion_png_name(label, stem),
            title=f"{label} on {acc['n']} labeled images")
    return paths
