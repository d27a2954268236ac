"""Shared fixtures: real images from ../shared (skipped when absent) and tiny models so unit tests stay fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# helpers shared by test folders (fake_clock.py); a folder of its own, so nothing in it shadows a real package
if str(Path(__file__).parent / "helpers") not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
SHARED = Path(os.environ.get("DISTILL_SHARED_DIR", REPO.parent / "shared"))
CIFAR_TAR = SHARED / "data" / "cifar10-train-jpeg.tar.gz"
CLOTHING_TAR = SHARED / "data" / "clothing-small-trainval.tar"
RESNET56 = SHARED / "models" / "resnet56-4bfd9763.th"
RESNET20 = SHARED / "models" / "resnet20-12fca82f.th"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared real data not found at {path} (set DISTILL_SHARED_DIR)")
    return path


def _extract_subset(tar_path: Path, dest: Path, per_class: int, prefix: str) -> Path:
    from distill.data.archive import extract_subset

    return extract_subset(tar_path, dest, per_class, prefix)


#: A randomly initialised open_clip model small enough for unit tests (no downloads): the CLIP path's test double.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An open_clip model-config JSON that ``--teacher``/``TeacherConfig.name`` accept as a model name."""
    import json

    path = tmp_path_factory.mktemp("oc") / "distill-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def cifar_tar() -> Path:
    return _require(CIFAR_TAR)


@pytest.fixture(scope="session")
def resnet56_weights() -> Path:
    return _require(RESNET56)


@pytest.fixture(scope="session")
def resnet20_weights() -> Path:
    return _require(RESNET20)


@pytest.fixture(scope="session")
def resnet20_teacher(resnet20_weights: Path):
    """The real CIFAR ResNet-20 teacher (shared weights), built once per session."""
    from distill.teachers import TeacherConfig, create_teacher

    return create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(resnet20_weights)), CIFAR_CLASSES)


@pytest.fixture(scope="session")
def cifar_small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageFolder of 30 real CIFAR-10 JPEGs per class (300 images)."""
    tar = _require(CIFAR_TAR)
    return _extract_subset(tar, tmp_path_factory.mktemp("cifar_small"), per_class=30, prefix="train")


@pytest.fixture(scope="session")
def clothing_small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageFolder of 4 real clothing photos per class (realistic sizes, for serving and export calibration)."""
    tar = _require(CLOTHING_TAR)
    return _extract_subset(tar, tmp_path_factory.mktemp("clothing_small"), per_class=4, prefix="train")


@pytest.fixture(scope="session")
def real_jpegs(cifar_small_dir: Path) -> list[Path]:
    return sorted(cifar_small_dir.rglob("*.jpg"))[:16]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, cifar_small_dir: Path) -> Path:
    """A random-weight DHO student (cifar_resnet8, 10 CIFAR classes) saved in the real checkpoint format."""
    import torch

    from distill.checkpoint import save_checkpoint
    from distill.models import create_student
    from distill.preprocess import PreprocessSpec

    torch.manual_seed(0)
    student = create_student("cifar_resnet8", num_classes=10, method="dho")
    val = sorted(cifar_small_dir.rglob("*.jpg"))[::3]
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {
        "student": student.spec.model_dump(),
        "model": student.state_dict(),
        "class_names": CIFAR_CLASSES,
        "preprocess": PreprocessSpec().model_dump(),
        "method": "dho",
        "blend": {
            "prob": {"alpha": 0.5, "beta": 1.0, "val_acc": 0.1},
            "logit": {"alpha": 0.5, "beta": 1.0, "val_acc": 0.1},
            "heads_val_acc": {"ce": 0.1, "kd": 0.1},
        },
        "teacher": {"kind": "cifar_resnet", "name": "cifar_resnet56", "identity": "test"},
        "data": {
            "root": str(cifar_small_dir),
            "val": [[str(p.relative_to(cifar_small_dir)), CIFAR_CLASSES.index(p.parent.name)] for p in val],
            "test": [],
        },
        "config": {},
        "epoch": 0,
        "step": 0,
    })
    return path


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The tiny checkpoint exported to a folded, verified fp32 ONNX artifact through export's Python API."""
    from export import export_onnx

    out = tmp_path_factory.mktemp("artifact") / "tiny.onnx"
    export_onnx(tiny_checkpoint, out, fold_heads=True)
    return out


@pytest.fixture(scope="session")
def png_claiming():
    """``png_claiming(w, h)``: a tiny PNG whose header claims ``w`` x ``h`` pixels (CRC fixed up: only the size lies)."""
    import io
    import struct
    import zlib

    from PIL import Image

    def make(width: int, height: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, "PNG")
        data = bytearray(buf.getvalue())
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        return bytes(data)

    return make


#: Set in the child pytest process that runs the OpenVINO tests (see pytest_collection_modifyitems).
OPENVINO_SUBPROCESS_ENV = "DISTILL_OPENVINO_SUBPROCESS"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow (long real-data runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that load OpenVINO/NNCF run in a pytest process of their own (tests/test_openvino_isolated.py starts
    # it) whenever the session holds other tests too: OpenVINO/NNCF and the rest of the suite in one process died
    # with SIGSEGV, reproducibly, either way round (`pytest tests/export/test_export_openvino.py
    # tests/scale/test_shard_training.py`: a `distill train` with DataLoader workers after OpenVINO). No product
    # command loads OpenVINO and trains in one process.
    isolated = [i for i in items if i.get_closest_marker("openvino_process") is not None]
    if isolated and len(isolated) < len(items) and os.environ.get(OPENVINO_SUBPROCESS_ENV) != "1":
        config.hook.pytest_deselected(items=isolated)
        items[:] = [i for i in items if i.get_closest_marker("openvino_process") is None]
        # read by tests/test_openvino_isolated.py: which files its child process runs, and how it knows it is one
        config.distill_openvino_isolated = (sorted({str(i.path) for i in isolated}), OPENVINO_SUBPROCESS_ENV)
    if config.getoption("--runslow") or os.environ.get("DISTILL_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow real-data run: use --runslow or DISTILL_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
