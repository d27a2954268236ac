"""Accuracy against batch-1 p90 latency, one point per (model, backend, variant), Pareto front highlighted.

The latency is SingleStream's p90 (Offline at batch 1 when SingleStream did not run).

A point is on the front when no other point is both at least as fast and at least as accurate (and better in
one). Written atomically as PNG; nothing is drawn (None is returned) when no accuracy was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.io import atomic_path


def plot_points(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Points (label, latency_ms, top1) and the labels left out for lack of accuracy."""
    pts: list[dict[str, Any]] = []
    missing: list[str] = []
    rows = [r for r in report["results"] if r.get("status") == "ok"]
    single = {(r["model"], r["backend"], r["variant"]) for r in rows if r.get("scenario") == "SingleStream"}
    for r in rows:
        key = (r["model"], r["backend"], r["variant"])
        is_ss = r.get("scenario") == "SingleStream"
        is_off1 = r.get("scenario") == "Offline" and r.get("batch_size") == 1 and key not in single
        if not (is_ss or is_off1):
            continue
        label = f"{r['model']} · {r['backend']}" + (f" · {r['variant']}" if r.get("variant") not in (None, "artifact") else "")
        if r.get("top1") is None:
            missing.append(label)
            continue
        pts.append({"label": label, "latency_ms": r["p90_ms"], "top1": r["top1"] * 100})
    return pts, missing


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated points (lower latency, higher accuracy), sorted by latency."""
    front = []
    for p in points:
        dominated = any(q["latency_ms"] <= p["latency_ms"] and q["top1"] >= p["top1"]
                        and (q["latency_ms"] < p["latency_ms"] or q["top1"] > p["top1"]) for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: p["latency_ms"])


_OFFSETS = [(8, 6), (8, -14), (-8, 6), (-8, -14), (8, 18), (-8, 18), (8, -26), (-8, -26), (0, 30), (0, -38)]


def _place_labels(fig: Any, ax: Any, pts: list[dict[str, Any]], on_front: set[int]) -> None:
    """Greedy placement: each label takes the first offset whose box overlaps no label or marker placed so far."""
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    markers = [tuple(ax.transData.transform((p["latency_ms"], p["top1"]))) for p in pts]
    frame = ax.get_window_extent(renderer)
    for p in sorted(pts, key=lambda p: (id(p) not in on_front, p["latency_ms"])):
        best = None
        for dx, dy in _OFFSETS:
            t = ax.annotate(p["label"], (p["latency_ms"], p["top1"]), xytext=(dx, dy), textcoords="offset points",
                            fontsize=8, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                            fontweight="bold" if id(p) in on_front else "normal",
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
            box = t.get_window_extent(renderer).expanded(1.05, 1.15)
            own = tuple(ax.transData.transform((p["latency_ms"], p["top1"])))
            clash = (any(box.overlaps(b) for b in placed)
                     or any(box.contains(mx, my) for mx, my in markers if (mx, my) != own)
                     or not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1))
            if not clash:
                best = t
                break
            t.remove()
        if best is None:  # crowded: keep the first position
            dx, dy = _OFFSETS[0]
            best = ax.annotate(p["label"], (p["latency_ms"], p["top1"]), xytext=(dx, dy), textcoords="offset points",
                               fontsize=8, fontweight="bold" if id(p) in on_front else "normal")
        placed.append(best.get_window_extent(renderer))
        best.arrow_patch = None
        ax.annotate("", (p["latency_ms"], p["top1"]), xytext=best.xyann, textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6, "shrinkA": 0, "shrinkB": 4})


def plot_pareto(report: dict[str, Any], path: str | Path) -> Path | None:
    pts, missing = plot_points(report)
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(pts)
    on_front = {id(p) for p in front}
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=130)
    others = [p for p in pts if id(p) not in on_front]
    ax.scatter([p["latency_ms"] for p in others], [p["top1"] for p in others], s=45, color="#9aa5b1",
               label="dominated", zorder=2)
    ax.scatter([p["latency_ms"] for p in front], [p["top1"] for p in front], s=80, color="#d1495b",
               edgecolor="black", label="Pareto front", zorder=3)
    ax.step([p["latency_ms"] for p in front], [p["top1"] for p in front], where="post", color="#d1495b",
            linewidth=1.5, alpha=0.7, zorder=1)
    lats = [p["latency_ms"] for p in pts]
    if min(lats) > 0 and max(lats) / min(lats) > 10:
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        from matplotlib.ticker import LogLocator

        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel("SingleStream p90 latency (ms, batch 1) - lower is better")
    ax.set_ylabel("top-1 accuracy (%) - higher is better")
    env = report.get("environment", {})
    title = f"Accuracy vs latency on {env.get('cpu') or 'this machine'}"
    if env.get("gpu"):
        title += f" / {env['gpu']}"
    emu = report.get("emulation")
    if emu:
        title = f"EMULATION {emu['profile']} ({emu['intra_op_threads']} threads, pinned) - " + title
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if missing:
        fig.text(0.01, 0.01, "not plotted (no accuracy): " + "; ".join(missing), fontsize=7, color="#555555")
    fig.tight_layout()
    _place_labels(fig, ax, pts, on_front)  # after the layout: placement works in display coordinates
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
