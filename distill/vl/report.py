"""Markdown table of open-vocabulary runs (mean +- std over seeds per loss combination), plus the teacher.

    python -m distill.vl.report runs/vl/cls_s0 runs/vl/cls_s1 runs/vl/full_s0 runs/vl/full_s1

Reads each run's ``summary.json`` (written by ``distill train --method vl-distill``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = (("seen_acc", "seen acc"), ("unseen_zeroshot", "unseen zero-shot"), ("unseen_5shot", "unseen 5-shot"),
           ("all_acc", "all-10 acc"))
NAMES = {"cls": "L_cls", "mse": "L_mse", "imcst": "L_im-cst", "vlprox": "L_vlprox"}


def _load(run: Path) -> dict[str, Any]:
    s = json.loads((run / "summary.json").read_text())
    vl = s.get("vl") or {}
    weights = s.get("weights") or vl.get("weights") or {}
    teacher = s["teacher"] if "seen_acc" in s.get("teacher", {}) else vl.get("teacher", {})
    return {"run": str(run), "weights": weights, "test": s["test"], "teacher": teacher,
            "s_per_step": s.get("s_per_step"), "steps": s.get("steps"), "wall": s.get("wall_time_s")}


def _combo(weights: dict[str, float]) -> str:
    return " + ".join(NAMES[k] for k in ("cls", "imcst", "vlprox", "mse") if weights.get(k))


def _fmt(values: list[float]) -> str:
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.1f} +- {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def table(runs: list[Path]) -> str:
    rows = [_load(r) for r in runs]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_combo(r["weights"]), []).append(r)
    head = "| model | runs | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    t = rows[0]["teacher"]
    lines.append("| teacher ResNet-56 (classifier-as-VLM, cosine) | - | "
                 + " | ".join(f"{100 * t[k]:.1f}" if k in t else "-" for k, _ in COLUMNS) + " |")
    for name, g in groups.items():
        cells = [_fmt([r["test"][k] for r in g]) if all(k in r["test"] for r in g) else "-" for k, _ in COLUMNS]
        lines.append(f"| student: {name} | {len(g)} | " + " | ".join(cells) + " |")
    per_run = ["", "| run | " + " | ".join(c for _, c in COLUMNS) + " | s/step | wall s |", "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        per_run.append(f"| {r['run']} | " + " | ".join(f"{100 * r['test'][k]:.1f}" if k in r["test"] else "-"
                                                       for k, _ in COLUMNS)
                       + f" | {r['s_per_step'] or 0:.2f} | {r['wall'] or 0:.0f} |")
    return "\n".join(lines + per_run)


def main() -> None:
    print(table([Path(a) for a in sys.argv[1:]]))


if __name__ == "__main__":
    main()
