"""The results table groups runs by loss combination (both summary layouts)."""

from __future__ import annotations

import json
from pathlib import Path

from distill.vl.report import table


def test_table_groups_by_losses(tmp_path: Path) -> None:
    teacher = {"seen_acc": 0.92, "unseen_zeroshot": 0.96, "unseen_5shot": 0.96, "all_acc": 0.89}
    for name, w, acc in [("a0", {"cls": 1.0, "mse": 0.0, "imcst": 0.0, "vlprox": 0.0}, 0.5),
                         ("a1", {"cls": 1.0, "mse": 0.0, "imcst": 0.0, "vlprox": 0.0}, 0.7),
                         ("b0", {"cls": 1.0, "mse": 1.0, "imcst": 1.0, "vlprox": 1.0}, 0.8)]:
        (tmp_path / name).mkdir()
        test = {"seen_acc": acc, "unseen_zeroshot": acc / 2, "unseen_5shot": acc / 3, "all_acc": acc / 4}
        summary = ({"weights": w, "test": test, "teacher": teacher} if name != "b0" else
                   {"test": test, "teacher": {"val_acc": 0.9}, "vl": {"weights": w, "teacher": teacher}})
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    out = table([tmp_path / n for n in ("a0", "a1", "b0")])
    assert "| student: L_cls | 2 | 60.0 +- 10.0 | 30.0 +- 5.0 |" in out
    assert "| student: L_cls + L_im-cst + L_vlprox + L_mse | 1 | 80.0 |" in out
    assert "| 92.0 | 96.0 | 96.0 | 89.0 |" in out
