"""Aggregate finished run directories into the results table (mean and std over seeds), torch-free.

What counts as a method's accuracy: the head a deployed model would use. For DHO that is the blend whose
alpha/beta were selected on validation (probability and logit blends both shown); for baselines the single head.
Selection happens on ``val``; the numbers to quote are on ``test`` (never selected on).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigError

METHOD_ORDER = ("ce", "kd", "ce+kd", "dho")
_METHOD_RANK = {m: i for i, m in enumerate(METHOD_ORDER)}  # unknown methods sort last


@dataclass
class RunRow:
    """One finished run, reduced to the numbers the table needs."""

    path: Path
    method: str
    seed: int
    labeled: int
    steps: int
    arch: str
    scores: dict[str, float]  # column -> test accuracy
    val_scores: dict[str, float]
    teacher_val: float | None
    teacher_test: float | None
    grad_conflict_mean: float | None
    s_per_step: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def _scores(split: dict[str, Any], method: str) -> dict[str, float]:
    if method == "dho" and "acc_ce" in split:
        return {"h_ce": split["acc_ce"], "h_kd": split["acc_kd"], "blend_prob": split["acc_blend_prob"],
                "blend_logit": split["acc_blend_logit"], "final": split["acc_blend_prob"]}
    # single-head baselines: one number, whatever the head is called
    value = next((v for k, v in split.items() if k.startswith("acc") and v is not None), None)
    if value is None:
        raise ConfigError("no accuracy recorded")
    return {"final": value}


def load_run(run_dir: Path) -> RunRow:
    summary_path = run_dir / "summary.json"
    try:
        s = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} has no summary.json (unfinished run?)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{summary_path} is not valid JSON: {e}") from None
    cfg_seed = _read_seed(run_dir)
    teacher = s.get("teacher") or {}
    try:
        val_scores = _scores(s.get("val") or {}, s["method"])
    except ConfigError:
        raise ConfigError(f"{summary_path} records no validation accuracy") from None
    # a run without a test split (data.test_fraction=0) is reported on val, and the table says so
    on_test = bool(s.get("test"))
    return RunRow(
        path=run_dir, method=s["method"], seed=cfg_seed, labeled=s["data"]["labeled"], steps=s["steps"],
        arch=s["student"]["arch"], scores=_scores(s["test"], s["method"]) if on_test else dict(val_scores),
        val_scores=val_scores, teacher_val=teacher.get("val_acc"), teacher_test=teacher.get("test_acc"),
        grad_conflict_mean=s.get("grad_conflict_mean"), s_per_step=s.get("s_per_step"),
        extra={"completed": s.get("completed", True), "blend": s.get("blend"), "scored_on": "test" if on_test else "val"},
    )


def _read_seed(run_dir: Path) -> int:
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return int(cfg.get("seed", 0))


def find_runs(paths: Iterable[Path]) -> list[RunRow]:
    rows = []
    for p in paths:
        candidates = [p] if (p / "summary.json").exists() else sorted(d for d in p.iterdir() if (d / "summary.json").exists()) if p.is_dir() else []
        rows += [load_run(d) for d in candidates]
    if not rows:
        raise ConfigError("no finished run directories (with summary.json) found")
    return rows


def _fmt(values: list[float]) -> str:
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.2f}"
    return f"{statistics.mean(pct):.2f} ± {statistics.stdev(pct):.2f}"


def markdown_table(rows: list[RunRow]) -> str:
    """Test accuracy per (labels, method), mean ± std over seeds, with per-seed values and the teacher row."""
    lines = ["| labeled | method | seeds | test top-1 (%) | per seed | DHO heads h_ce / h_kd / logit blend (%) | grad cos (mean) |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, int, int, str], list[RunRow]] = {}
    for r in rows:  # only runs with the same student, budget and labels are averaged together
        groups.setdefault((r.arch, r.steps, r.labeled, r.method), []).append(r)
    for (_, _, labeled, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][:3], _METHOD_RANK.get(kv[0][3], 99))):
        rs.sort(key=lambda r: r.seed)
        finals = [r.scores["final"] for r in rs]
        on_val = [r for r in rs if r.extra.get("scored_on") == "val"]
        # no test split: say so instead of crashing or passing val accuracy off as test
        label = f"{method} (val: {len(on_val)} run(s) without a test split)" if on_val else method
        heads = ""
        if method == "dho" and "h_ce" in rs[0].scores:
            heads = " / ".join(_fmt([r.scores[k] for r in rs]) for k in ("h_ce", "h_kd", "blend_logit"))
        gc = [r.grad_conflict_mean for r in rs if r.grad_conflict_mean is not None]
        lines.append(f"| {labeled} | {label} | {','.join(str(r.seed) for r in rs)} | {_fmt(finals)} | "
                     f"{', '.join(f'{100 * f:.2f}' for f in finals)} | {heads} | {statistics.mean(gc):.3f} |"
                     if gc else
                     f"| {labeled} | {label} | {','.join(str(r.seed) for r in rs)} | {_fmt(finals)} | "
                     f"{', '.join(f'{100 * f:.2f}' for f in finals)} | {heads} | |")
    teachers = {(r.teacher_val, r.teacher_test) for r in rows if r.teacher_val is not None or r.teacher_test is not None}
    for tv, tt in sorted(teachers, key=lambda t: (t[1] or -1.0, t[0] or -1.0)):
        test = f"{100 * tt:.2f}" if tt is not None and tt == tt else "-"
        val = f"(val {100 * tv:.2f})" if tv is not None and tv == tv else ""
        lines.append(f"| - | teacher | - | {test} | {val} | | |")
    return "\n".join(lines)


def paired_differences(rows: list[RunRow], method: str = "dho") -> str:
    """``method`` minus each other method, seed by seed (same seed: same initialisation, batch order and
    augmentation), as a markdown table. Pairing removes the seed-to-seed spread the methods share, so it
    separates smaller differences than comparing two means does. Empty when no seed is shared."""
    by_key: dict[tuple[str, int, int], dict[str, dict[int, float]]] = {}
    for r in rows:
        by_key.setdefault((r.arch, r.steps, r.labeled), {}).setdefault(r.method, {})[r.seed] = r.scores["final"]
    lines = [f"| labeled | {method} minus | seeds | difference (points) | per seed | {method} ahead |",
             "|---|---|---|---|---|---|"]
    for (_, _, labeled), methods in sorted(by_key.items()):
        ours = methods.get(method)
        if not ours:
            continue
        for other in sorted((m for m in methods if m != method), key=lambda m: _METHOD_RANK.get(m, 99)):
            seeds = sorted(set(ours) & set(methods[other]))
            if not seeds:
                continue
            diffs = [100 * (ours[s] - methods[other][s]) for s in seeds]
            spread = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
            lines.append(f"| {labeled} | {other} | {','.join(map(str, seeds))} | {statistics.mean(diffs):+.2f}{spread} | "
                         f"{', '.join(f'{d:+.2f}' for d in diffs)} | {sum(d > 0 for d in diffs)} of {len(diffs)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def grad_conflict_series(run_dir: Path) -> list[tuple[int, float]]:
    """(step, cosine) pairs from a run's metrics.jsonl."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "grad_conflict":
            out.append((int(rec["step"]), float(rec["cosine"])))
    return out


def _moving_average(values: tuple[float, ...], k: int) -> list[float]:
    k = max(1, min(k, len(values)))
    return [sum(values[max(0, i - k + 1): i + 1]) / len(values[max(0, i - k + 1): i + 1]) for i in range(len(values))]


def plot_grad_conflict(rows: list[RunRow], out_png: Path, smooth: int = 5) -> Path:
    """The CE/KD backbone-gradient cosine of every run that logged it: one panel per label budget (the curves of
    different budgets are not comparable), one colour per method, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    colours = {"dho": "tab:blue", "ce+kd": "tab:red"}
    series = {id(r): grad_conflict_series(r.path) for r in rows}
    budgets = sorted({r.labeled for r in rows if series[id(r)]}) or [0]
    fig, axes = plt.subplots(1, len(budgets), figsize=(7 * len(budgets), 4), sharey=True, squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for r in sorted(rows, key=lambda r: (_METHOD_RANK.get(r.method, len(METHOD_ORDER)), r.seed)):
            if r.labeled != budget or not series[id(r)]:
                continue
            steps, cos = zip(*series[id(r)])
            ax.plot(steps, _moving_average(cos, smooth), color=colours.get(r.method, "tab:gray"), alpha=0.8,
                    label=f"{r.method} (seed {r.seed})")
        if not ax.lines:
            ax.text(0.5, 0.5, "no run logged the gradient-conflict diagnostic", ha="center", transform=ax.transAxes)
        else:
            ax.set_title(f"{budget} labeled images")
            ax.legend(fontsize=7)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel(f"cos(grad CE, grad KD) on backbone (moving avg {smooth})")
    fig.suptitle("Gradient conflict: DHO (separate heads) vs single-head CE+KD")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out_png


# -------------------------------------------------------------------- per-class accuracy and confusion matrix


def confusion_matrix(pred: Sequence[int], labels: Sequence[int], num_classes: int) -> list[list[int]]:
    """``m[true][predicted]`` counts."""
    m = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(pred, labels):
        m[int(t)][int(p)] += 1
    return m


def per_class_accuracy(matrix: list[list[int]], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per true class: images, correct, accuracy (None for a class with no images) and its most common mistake."""
    out = []
    for i, row in enumerate(matrix):
        n = sum(row)
        wrong = [(c, j) for j, c in enumerate(row) if j != i and c]
        top = max(wrong) if wrong else None
        out.append({"class": class_names[i], "images": n, "correct": row[i], "accuracy": row[i] / n if n else None,
                    "most_confused_with": class_names[top[1]] if top else None})
    return out


def write_confusion_png(matrix: list[list[int]], class_names: Sequence[str], out_png: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true classes down, predictions across) with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    n = len(class_names)
    rates = [[c / max(1, sum(row)) for c in row] for row in matrix]
    side = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i][j]:
                    ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=6,
                            color="white" if rates[i][j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(out_png)
