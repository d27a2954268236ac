"""``--backends auto``: every backend available here, then per model and precision the fastest that keeps accuracy.

The rule: among the rows of one model (its ``model_name``: a checkpoint, its ONNX and its IR artifacts are the same
model) and one precision, a candidate must have a top-1 within :data:`ACCURACY_TOLERANCE` (0.3 points) of the
best fp32 top-1 of that model in the same run; the winner is the lowest SingleStream p50 (the edge latency), or,
where no SingleStream ran, the highest Offline throughput. Candidates without accuracy (no ``--data``) cannot win:
the reason says so.
"""

from __future__ import annotations

from typing import Any

ACCURACY_TOLERANCE = 0.003
RULE = (f"fastest SingleStream p50 (else best Offline img/s) among the backends whose top-1 is within "
        f"{100 * ACCURACY_TOLERANCE:.1f} points of the model's best fp32 top-1 in this run, per model and precision")


def _candidates(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (model label, backend, variant) that ran: its precision, accuracy, p50, best Offline img/s."""
    names = {(m.get("model"), m.get("backend"), m.get("variant")): (m.get("info") or {}).get("model_name")
             for m in report.get("models", []) if m.get("status") == "ok"}
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in report.get("results", []):
        if r.get("status") != "ok" or r.get("scenario") not in ("SingleStream", "Offline"):
            continue
        key = (r["model"], r["backend"], r["variant"])
        c = out.setdefault(key, {"model": r["model"], "backend": r["backend"], "variant": r["variant"],
                                 "precision": r.get("precision") or r["variant"], "top1": r.get("top1"),
                                 "model_name": names.get(key) or r["model"], "p50_ms": None, "offline_ips": None,
                                 "offline_batch": None})
        if r["scenario"] == "SingleStream":
            c["p50_ms"] = r.get("p50_ms")
        elif (r.get("throughput_ips") or 0) > (c["offline_ips"] or 0):
            c["offline_ips"], c["offline_batch"] = r.get("throughput_ips"), r.get("batch_size")
    return list(out.values())


def select_winners(report: dict[str, Any], tolerance: float = ACCURACY_TOLERANCE) -> dict[str, Any]:
    """The ``auto`` section of a report: the rule and, per (model, precision), the winner with the full field."""
    cands = _candidates(report)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cands:
        groups.setdefault((c["model_name"], c["precision"]), []).append(c)
    winners = []
    for (model_name, precision), group in sorted(groups.items()):
        fp32 = [c["top1"] for c in cands if c["model_name"] == model_name and c["precision"] == "fp32"
                and c["top1"] is not None]
        ref = max(fp32) if fp32 else None
        eligible, excluded = [], []
        for c in group:
            if c["top1"] is None:
                excluded.append({**c, "reason": "no accuracy measured (pass --data)"})
            elif ref is None:
                excluded.append({**c, "reason": "no fp32 accuracy of this model in the run to compare with"})
            elif c["top1"] < ref - tolerance - 1e-12:
                excluded.append({**c, "reason": f"top-1 {100 * c['top1']:.2f}% is more than "
                                                f"{100 * tolerance:.1f} points below fp32 {100 * ref:.2f}%"})
            elif c["p50_ms"] is None and c["offline_ips"] is None:
                excluded.append({**c, "reason": "no SingleStream or Offline result"})
            else:
                eligible.append(c)
        by_latency = [c for c in eligible if c["p50_ms"] is not None]
        if by_latency:
            best, metric = min(by_latency, key=lambda c: c["p50_ms"]), "SingleStream p50 ms"
        elif eligible:
            best, metric = max(eligible, key=lambda c: c["offline_ips"] or 0), "Offline img/s"
        else:
            best, metric = None, None
        winners.append({"model_name": model_name, "precision": precision, "fp32_top1": ref, "metric": metric,
                        "winner": best, "candidates": eligible, "excluded": excluded,
                        "reason": None if best else "no candidate kept accuracy within the tolerance"})
    return {"rule": RULE, "tolerance_points": 100 * tolerance, "winners": winners}


def _excluded(e: dict[str, Any]) -> str:
    return f"{e['backend']} ({e['model']}: {e['reason']})"


def winner_lines(report: dict[str, Any]) -> list[str]:
    """One line per (model, precision) for the terminal and the markdown."""
    auto = report.get("auto")
    if not auto:
        return []
    lines = []
    for w in auto["winners"]:
        head = f"auto {w['model_name']} {w['precision']}: "
        b = w["winner"]
        if b is None:
            lines.append(head + f"no winner ({w['reason']}; " + "; ".join(_excluded(e) for e in w["excluded"]) + ")")
            continue
        speed = (f"p50 {b['p50_ms']:.3f} ms" if w["metric"] == "SingleStream p50 ms"
                 else f"{b['offline_ips']:.1f} img/s")
        others = [c for c in w["candidates"] if c is not b]
        vs = ", ".join(f"{c['backend']} ({c['model']}) {c['p50_ms']:.3f} ms" if c["p50_ms"] is not None else
                       f"{c['backend']} ({c['model']}) {c['offline_ips'] or 0:.1f} img/s" for c in others)
        top1 = "-" if b["top1"] is None else f"{100 * b['top1']:.2f}%"
        lines.append(head + f"{b['backend']} ({b['model']}) wins, {speed}, top-1 {top1}" + (f"; vs {vs}" if vs else "")
                     + (f"; excluded: {', '.join(_excluded(e) for e in w['excluded'])}"
                        if w["excluded"] else ""))
    return lines
