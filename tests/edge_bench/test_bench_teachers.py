"""edge_bench's own teacher-export helper (used only when export's teacher export is unavailable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.errors import ConfigError


@pytest.mark.slow
@pytest.mark.realdata
def test_cifar_resnet_teacher_artifact_loads(resnet20_weights: Path, tmp_path: Path, real_jpegs: list[Path]):
    from edge_bench.teachers import export_teacher_artifact
    from export.runtime import load_artifact

    info = export_teacher_artifact("cifar_resnet", "cifar_resnet20", tmp_path / "r20.onnx", weights=str(resnet20_weights))
    assert info["parity_top1_agreement"] == 1.0 and info["parity_max_abs_prob_diff"] < 1e-4
    art = load_artifact(tmp_path / "r20.onnx")
    assert art.meta.kind == "teacher" and art.classify(real_jpegs[:4]).shape == (4, 10)


def test_unknown_teacher_kind(tmp_path: Path):
    from edge_bench.teachers import export_teacher_artifact

    with pytest.raises(ConfigError, match="unknown teacher kind"):
        export_teacher_artifact("mystery", "x", tmp_path / "x.onnx")
