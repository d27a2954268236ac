"""``distill bench compare A.json B.json``: what changed between two runs, and is it outside the spread?

Rows are matched on (model, backend, variant, scenario, batch size). For latency the change is called real
("outside spread") only when the two runs' reported spreads (95% CI of the median joined with the range of
block medians, see :mod:`edge_bench.stats`) do not overlap; throughput follows the same rows. Accuracy changes are shown as points. Environment differences (CPU, versions, threads, emulation) are
listed first, because they explain most changes.
"""

from __future__ import annotations

from typing import Any

from .stats import intervals_overlap

ENV_KEYS = ("cpu", "cpu_logical_cores", "cpu_affinity", "gpu", "driver", "cuda", "torch", "onnxruntime", "tensorrt",
            "numpy", "python", "host")


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r.get("model"), r.get("backend"), r.get("variant"), r.get("scenario"), r.get("batch_size"))


def _spread(r: dict[str, Any]) -> tuple[Any, Any]:
    """The reported spread of the median (older reports without it: the bootstrap CI)."""
    if r.get("spread_lo_ms") is not None:
        return r["spread_lo_ms"], r["spread_hi_ms"]
    return r.get("ci_lo_ms"), r.get("ci_hi_ms")


def _pct(a: float | None, b: float | None) -> float | None:
    if a in (None, 0) or b is None:
        return None
    return (b - a) / a * 100.0


def environment_changes(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    ea, eb = a.get("environment", {}), b.get("environment", {})
    out = [(k, ea.get(k), eb.get(k)) for k in ENV_KEYS if ea.get(k) != eb.get(k)]
    ta, tb = ea.get("threads") or {}, eb.get("threads") or {}
    for k in sorted(set(ta) | set(tb)):
        if ta.get(k) != tb.get(k):
            out.append((f"threads.{k}", ta.get(k), tb.get(k)))
    pa = (a.get("emulation") or {}).get("profile")
    pb = (b.get("emulation") or {}).get("profile")
    if pa != pb:
        out.append(("emulation", pa, pb))
    return out


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    ra = {_key(r): r for r in a["results"] if r.get("scenario")}
    rb = {_key(r): r for r in b["results"] if r.get("scenario")}
    rows: list[dict[str, Any]] = []
    for k in [k for k in ra if k in rb]:
        x, y = ra[k], rb[k]
        row: dict[str, Any] = {"model": k[0], "backend": k[1], "variant": k[2], "scenario": k[3], "batch_size": k[4],
                               "status_a": x.get("status"), "status_b": y.get("status")}
        if x.get("status") == "ok" and y.get("status") == "ok":
            row.update(
                p50_a=x.get("p50_ms"), p50_b=y.get("p50_ms"), p50_change_pct=_pct(x.get("p50_ms"), y.get("p50_ms")),
                p90_a=x.get("p90_ms"), p90_b=y.get("p90_ms"), p90_change_pct=_pct(x.get("p90_ms"), y.get("p90_ms")),
                throughput_a=x.get("throughput_ips"), throughput_b=y.get("throughput_ips"),
                throughput_change_pct=_pct(x.get("throughput_ips"), y.get("throughput_ips")),
                top1_change_points=(None if x.get("top1") is None or y.get("top1") is None
                                    else (y["top1"] - x["top1"]) * 100),
            )
            ca, cb = _spread(x), _spread(y)
            if None not in ca and None not in cb:
                row["outside_spread"] = not intervals_overlap(ca, cb)  # type: ignore[arg-type]
            else:
                row["outside_spread"] = None
            if k[3] == "Server":
                row["bound_met_a"], row["bound_met_b"] = x.get("bound_met"), y.get("bound_met")
            row["verdict"] = verdict(row)
        else:
            row["verdict"] = "status changed" if x.get("status") != y.get("status") else f"{y.get('status')} in both"
        rows.append(row)
    return {
        "a": {"created": a.get("created"), "command": a.get("command")},
        "b": {"created": b.get("created"), "command": b.get("command")},
        "environment_changes": environment_changes(a, b),
        "rows": rows,
        "only_in_a": [list(k) for k in ra if k not in rb],
        "only_in_b": [list(k) for k in rb if k not in ra],
    }


def verdict(row: dict[str, Any]) -> str:
    ch = row.get("p50_change_pct")
    if ch is None:
        return "n/a"
    if row.get("outside_spread") is False:
        return "within spread"
    return ("slower" if ch > 0 else "faster") + f" ({ch:+.1f}%)"


def _f(v: Any, fmt: str = ".3f") -> str:
    return "" if v is None else format(v, fmt)


def to_markdown(cmp: dict[str, Any]) -> str:
    out = [f"Comparing A ({cmp['a']['created']}) -> B ({cmp['b']['created']})", ""]
    if cmp["environment_changes"]:
        out.append("Environment changes: " + "; ".join(f"{k}: {a} -> {b}" for k, a, b in cmp["environment_changes"]))
        out.append("")
    out += ["| model | backend | variant | scenario | batch | p50 A ms | p50 B ms | p50 change | img/s change | "
            "top-1 change (pts) | outside spread | verdict |", "|" + "---|" * 12]
    for r in cmp["rows"]:
        out.append(f"| {r['model']} | {r['backend']} | {r['variant']} | {r['scenario']} | {r.get('batch_size') or ''} | "
                   f"{_f(r.get('p50_a'))} | {_f(r.get('p50_b'))} | {_f(r.get('p50_change_pct'), '+.1f')}% | "
                   f"{_f(r.get('throughput_change_pct'), '+.1f')}% | {_f(r.get('top1_change_points'), '+.2f')} | "
                   f"{'' if r.get('outside_spread') is None else ('yes' if r['outside_spread'] else 'no')} | "
                   f"{r['verdict']} |")
    for name in ("only_in_a", "only_in_b"):
        if cmp[name]:
            out.append(f"\n{name.replace('_', ' ')}: " + "; ".join(" / ".join(str(x) for x in k if x is not None)
                                                                  for k in cmp[name]))
    return "\n".join(out) + "\n"


def print_comparison(cmp: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    for k, a, b in cmp["environment_changes"]:
        console.print(f"[yellow]environment[/] {k}: {a} -> {b}", highlight=False)
    t = Table(title="edge_bench compare (A -> B)", header_style="bold")
    for h in ("model", "backend", "variant", "scenario", "batch", "p50 A", "p50 B", "p50 Δ%", "img/s Δ%",
              "top-1 Δpts", "outside spread", "verdict"):
        t.add_column(h, justify="left" if h in ("model", "backend", "variant", "scenario", "verdict") else "right")
    for r in cmp["rows"]:
        v = r["verdict"]
        style = "red" if v.startswith("slower") else "green" if v.startswith("faster") else ""
        t.add_row(str(r["model"]), str(r["backend"]), str(r["variant"]), str(r["scenario"]),
                  str(r.get("batch_size") or ""), _f(r.get("p50_a")), _f(r.get("p50_b")),
                  _f(r.get("p50_change_pct"), "+.1f"), _f(r.get("throughput_change_pct"), "+.1f"),
                  _f(r.get("top1_change_points"), "+.2f"),
                  "" if r.get("outside_spread") is None else ("yes" if r["outside_spread"] else "no"),
                  f"[{style}]{v}[/]" if style else v)
    console.print(t)
    for name in ("only_in_a", "only_in_b"):
        for k in cmp[name]:
            console.print(f"[dim]{name.replace('_', ' ')}: {' / '.join(str(x) for x in k if x is not None)}[/]")
