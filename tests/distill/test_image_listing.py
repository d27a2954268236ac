"""One image-folder rule: training, export and the benchmarks see the same classes and the same files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from distill.data.archive import find_images, labeled_images, list_class_folders
from distill.data.scan import list_image_folder
from distill.errors import DataError


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """cat/ and dog/ (dog with a nested folder), a hidden .cache/ full of images, a hidden file and a text file."""
    def img(p: Path) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (10, 20, 30)).save(p)

    for rel in ("cat/a.png", "cat/b.jpg", "dog/c.png", "dog/deeper/d.png", ".cache/e.png", "cat/.f.png"):
        img(tmp_path / rel)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_hidden_folders_and_files_are_left_out_everywhere(tree: Path):
    from edge_bench.accuracy import labeled_images as bench_labeled
    from export.verify import list_folder

    assert list_class_folders(tree) == ["cat", "dog", "empty"]
    bench = bench_labeled(tree)
    assert sorted({c for _, c in bench}) == ["cat", "dog"]      # no ".cache" class; "empty" has no images
    assert [p.relative_to(tree).as_posix() for p, _ in bench] == ["cat/a.png", "cat/b.jpg", "dog/c.png",
                                                                 "dog/deeper/d.png"]
    with pytest.raises(DataError, match="'empty' has no images"):
        list_image_folder(tree)
    (tree / "empty").rmdir()
    names, samples = list_image_folder(tree)
    assert names == ["cat", "dog"]
    assert [(s.path, names[s.label]) for s in samples] == bench == labeled_images(tree)
    files, labels = list_folder(tree / "dog", None)
    assert files == find_images(tree / "dog")


def test_limit_per_class(tree: Path):
    assert [c for _, c in labeled_images(tree, limit_per_class=1)] == ["cat", "dog"]
