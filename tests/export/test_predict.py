"""`distill predict`: an artifact and its checkpoint give the same top-k through the same preprocessing."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from export.predict import app


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_artifact_and_checkpoint_agree_on_a_folder(tiny_artifact: Path, tiny_checkpoint: Path, real_jpegs: list[Path],
                                                   tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in real_jpegs[:5]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    a = _invoke(str(folder), "-m", str(tiny_artifact), "-k", "3", "-o", str(tmp_path / "a.json"))
    c = _invoke(str(folder), "-m", str(tiny_checkpoint), "-k", "3", "-o", str(tmp_path / "c.json"))
    assert a.exit_code == 0 and c.exit_code == 0, (a.output, c.output)
    ra = json.loads((tmp_path / "a.json").read_text())["predictions"]
    rc = json.loads((tmp_path / "c.json").read_text())["predictions"]
    assert len(ra) == 6 and [r["path"] for r in ra] == [r["path"] for r in rc]
    bad = [r for r in ra if r["error"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.jpg") and "BytesIO" not in bad[0]["error"]
    for x, y in zip(ra, rc):
        if x["error"]:
            continue
        assert [p["label"] for p in x["predictions"]] == [p["label"] for p in y["predictions"]]
        assert abs(x["predictions"][0]["score"] - y["predictions"][0]["score"]) < 1e-4
        assert len(x["predictions"]) == 3 and x["predictions"][0]["rank"] == 1


def test_csv_output_and_bad_input(tiny_artifact: Path, real_jpegs: list[Path], tmp_path: Path) -> None:
    res = _invoke(str(real_jpegs[0]), str(real_jpegs[1]), "-m", str(tiny_artifact), "-k", "2",
                  "-o", str(tmp_path / "p.csv"))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert len(rows) == 2 and set(rows[0]) == {"path", "top1_label", "top1_score", "top2_label", "top2_score", "error"}
    assert float(rows[0]["top1_score"]) >= float(rows[0]["top2_score"])
    assert _invoke(str(tmp_path / "nope.jpg"), "-m", str(tiny_artifact)).exit_code == 2
    assert _invoke(str(real_jpegs[0]), "-m", str(tmp_path / "missing.onnx")).exit_code == 2
    res = _invoke(str(real_jpegs[0]), "-m", str(tiny_artifact), "-o", str(tmp_path / "p.txt"))
    assert res.exit_code == 2 and "use a .csv or .json" in res.output
