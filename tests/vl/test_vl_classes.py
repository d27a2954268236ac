"""Label files and the seen/unseen class split: every bad input is a one-line DistillError."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.errors import ConfigError, DataError, DistillError
from distill.vl import VLConfig, read_labels_file, split_classes

from distill.teachers.classifiers import CIFAR10_CLASSES as CIFAR


def test_labels_file_ok_and_bad(tmp_path: Path) -> None:
    ok = tmp_path / "ok.txt"
    ok.write_text("cat\ndog\nred panda\n")
    assert read_labels_file(ok) == ["cat", "dog", "red panda"]
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"cat\r\ndog\r\n")
    assert read_labels_file(crlf) == ["cat", "dog"]
    for name, text, msg in [("dup.txt", "cat\ndog\ncat\n", "repeats class name"),
                            ("blank.txt", "cat\n\ndog\n", "empty line \\(line 2\\)"),
                            ("spaces.txt", "cat\n   \n", "empty line"),
                            ("trailing.txt", "cat\ndog\n\n", "empty line \\(line 3\\)"),
                            ("empty.txt", "", "is empty")]:
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ConfigError, match=msg) as e:
            read_labels_file(p)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="not found"):
        read_labels_file(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        read_labels_file(bad)


def test_split_explicit_and_seeded() -> None:
    seen, unseen = split_classes(CIFAR, ["cat", "airplane"])
    assert unseen == ["airplane", "cat"] and seen == [c for c in CIFAR if c not in ("cat", "airplane")]
    a = split_classes(CIFAR, None, fraction=0.5, seed=0)
    assert a == split_classes(CIFAR, None, fraction=0.5, seed=0)
    assert len(a[0]) == 5 and len(a[1]) == 5 and not set(a[0]) & set(a[1])
    assert split_classes(CIFAR, None, seed=1) != a  # another seed, another split (for these 10 names)
    assert len(split_classes(["a", "b"], None, fraction=0.9)[1]) == 1  # never all classes


def test_split_errors() -> None:
    with pytest.raises(DataError, match="unknown unseen class.*zebra"):
        split_classes(CIFAR, ["zebra"])
    with pytest.raises(ConfigError, match="both seen and unseen"):
        split_classes(CIFAR, ["cat", "dog"], seen=["airplane", "cat"])
    with pytest.raises(ConfigError, match="every class is unseen"):
        split_classes(CIFAR, CIFAR)
    with pytest.raises(ConfigError, match="repeats"):
        split_classes(CIFAR, ["cat", "cat"])
    with pytest.raises(ConfigError, match="empty class name"):
        split_classes(CIFAR, ["cat", ""])
    with pytest.raises(DataError, match="at least 2 classes"):
        split_classes(["only"], None)
    for err in (ConfigError, DataError):
        assert issubclass(err, DistillError)


def test_config_accepts_comma_list() -> None:
    assert VLConfig(unseen_classes="cat, dog").unseen_classes == ["cat", "dog"]
    assert VLConfig().loss_weights() == {"cls": 1.0, "mse": 1.0, "imcst": 1.0, "vlprox": 1.0}
    assert VLConfig().tau == 0.07
