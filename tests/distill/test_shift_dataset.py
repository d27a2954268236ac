"""distill.data.shift: the weak-teacher control's data (a pixel-shifted ImageFolder copy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.data import shift as mod


def _folder(root: Path) -> Path:
    for cls, value in (("cat", 10), ("dog", 200)):
        (root / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), (value, value, value)).save(root / "train" / cls / "0.jpg", quality=100)
    return root


def test_invert_keeps_layout_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _folder(tmp_path / "src")
    dst = tmp_path / "out" / "train"
    mod.main([str(src), str(dst), "--subdir", "train", "--shift", "invert"])
    files = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.png"))
    assert files == ["cat/0.png", "dog/0.png"]
    assert abs(int(np.asarray(Image.open(dst / "cat" / "0.png"))[0, 0, 0]) - 245) <= 2
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(".")]  # the temporary folder is gone
    mod.main([str(src), str(dst), "--shift", "gray"])  # an existing output is kept, not overwritten
    assert "kept as it is" in capsys.readouterr().out
    assert abs(int(np.asarray(Image.open(dst / "cat" / "0.png"))[0, 0, 0]) - 245) <= 2


def test_bad_source_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="error: dataset not found"):
        mod.main([str(tmp_path / "missing"), str(tmp_path / "out"), "--shift", "invert"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="error: no class folders with images"):
        mod.main([str(tmp_path / "empty"), str(tmp_path / "out"), "--shift", "invert"])
    assert not (tmp_path / "out").exists()
