"""Trained classifiers as teachers: the CIFAR ResNets of ../shared/models, any timm model + weights file, and a
checkpoint written by ``distill train`` (``kind="distill"``: it brings its own architecture, classes and
preprocessing, so it runs exactly as it was trained and evaluated)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ModelError
from ..preprocess import PreprocessSpec
from .base import Teacher, file_digest, read_class_names
from .config import TeacherConfig

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_NAME = re.compile(r"^cifar_resnet(\d+)$")


def _require_weights(cfg: TeacherConfig) -> Path:
    if not cfg.weights:
        raise ModelError(f"teacher {cfg.name!r} needs a weights file (--teacher-weights)")
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"teacher weights file not found: {path}")
    return path


class CifarResNetTeacher(Teacher):
    """ResNet-20/56 for 32x32 CIFAR images; inputs scaled to [0, 1] and ImageNet-normalised (models README)."""

    kind = "cifar_resnet"

    def __init__(self, cfg: TeacherConfig, dataset_class_names: Sequence[str] | None = None) -> None:
        from ..models import create_cifar_resnet_classifier

        m = _CIFAR_NAME.match(cfg.name)
        if not m or (int(m.group(1)) - 2) % 6:
            raise ModelError(f"unknown CIFAR ResNet {cfg.name!r}; use cifar_resnet<6n+2>, e.g. cifar_resnet56")
        weights = _require_weights(cfg)
        names = read_class_names(cfg.class_names_file) if cfg.class_names_file else CIFAR10_CLASSES
        try:
            net = create_cifar_resnet_classifier(int(m.group(1)), num_classes=len(names), weights=weights)
        except (ModelError, CheckpointError):
            raise
        except Exception as e:  # noqa: BLE001 - torch.load raises many types for bad files
            raise CheckpointError(f"cannot read teacher weights {weights}: {str(e).splitlines()[0][:160]}") from None
        spec = PreprocessSpec(size=32, resize_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        super().__init__(cfg.name, names, spec, {"weights": file_digest(weights), "weights_file": str(weights)})
        self.net = net.eval()

    def _native_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 64-d penultimate feature."""
        return self.net.forward_features(x).float()


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read teacher weights {path}: {str(e).splitlines()[0][:160]}") from None
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def describe_key_mismatch(model: nn.Module, state: dict[str, Any], limit: int = 3) -> str:
    """Which keys do not fit (first few missing, unexpected, shape-mismatched): what a cut-off torch error hides."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:limit])}{more}")
    return "; ".join(parts) or "keys match but loading failed"


def is_distill_checkpoint(path: str | Path) -> bool:
    """Cheap sniff (no tensor is read): a torch zip whose pickle names the distill checkpoint keys."""
    p = Path(path).expanduser()
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None or z.getinfo(pkl).file_size > 64 * 2**20:
                return False
            head = z.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return False
    return all(k in head for k in (b"student", b"class_names", b"preprocess", b"method"))


def timm_preprocess(model: torch.nn.Module) -> PreprocessSpec:
    """timm's resolved data config (input size, crop_pct, interpolation, mean/std) as our PreprocessSpec."""
    from ..models.timm_backbone import timm_preprocess as resolve

    return resolve(model=model)


class TimmTeacher(Teacher):
    """Any timm architecture with a local weights file; classes from ``class_names_file`` or the dataset."""

    kind = "timm"

    def __init__(self, cfg: TeacherConfig, dataset_class_names: Sequence[str] | None = None) -> None:
        import timm

        name = cfg.name.removeprefix("timm/")
        if not timm.is_model(name):
            raise ModelError(f"unknown timm model {name!r}")
        weights = _require_weights(cfg)
        if is_distill_checkpoint(weights):
            raise ModelError(f"{weights} is a `distill train` checkpoint, not a timm state dict: use --teacher-kind "
                             "distill (or auto), which also brings its class names and input size")
        if cfg.class_names_file:
            names = read_class_names(cfg.class_names_file)
        elif dataset_class_names is not None:
            names = list(dataset_class_names)  # trusted: the weights' outputs follow the dataset's folder order
        else:
            raise ModelError("a timm teacher needs --class-names-file (the names of its outputs, in order)")
        net = timm.create_model(name, pretrained=False, num_classes=len(names))
        state = _load_state(weights)
        try:
            net.load_state_dict(state)
        except RuntimeError:
            raise ModelError(f"{weights} does not fit timm model {name} with {len(names)} classes "
                             f"({describe_key_mismatch(net, state)}); pass the architecture the weights were saved "
                             "from (--teacher NAME) and its class list (--class-names-file)") from None
        super().__init__(name, names, timm_preprocess(net),
                         {"weights": file_digest(weights), "weights_file": str(weights),
                          "class_names_source": "file" if cfg.class_names_file else "dataset"})
        self.net = net.eval()

    def _native_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits feature."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True).float()


class DistillTeacher(Teacher):
    """A ``distill train`` checkpoint (e.g. a ``--method ce`` run) as a teacher: same network, classes and eval
    preprocessing as ``distill eval`` uses, so its held-out accuracy here is exactly the one ``distill eval`` prints.

    The teacher's output is its single head, or for a two-head DHO student the stored logit blend (one linear
    map of the heads, so still logits); before the blend search it is the ``ce`` head.
    """

    kind = "distill"

    def __init__(self, cfg: TeacherConfig, dataset_class_names: Sequence[str] | None = None) -> None:
        from ..checkpoint import load_checkpoint, preprocess_from_checkpoint, student_from_checkpoint

        weights = _require_weights(cfg)
        ckpt = load_checkpoint(weights)
        if ckpt.get("embedding") is not None:
            raise ModelError(f"{weights} is an open-vocabulary (vl-distill) checkpoint; a distill teacher must be a "
                             "classifier run (dho, ce, kd or ce+kd)")
        student, ckpt = student_from_checkpoint(ckpt)
        heads = student.head_names
        blend = (ckpt.get("blend") or {}).get("logit") if "ce" in heads and "kd" in heads else None
        if len(heads) == 1:
            self.output = f"head {heads[0]}"
        elif blend:
            self.output = f"logit blend alpha={float(blend['alpha']):g} beta={float(blend['beta']):g}"
        else:
            self.output = "head ce"
        self._blend = (float(blend["alpha"]), float(blend["beta"])) if blend else None
        super().__init__(student.spec.arch, list(ckpt["class_names"]), preprocess_from_checkpoint(ckpt),
                         {"weights": file_digest(weights), "weights_file": str(weights), "output": self.output,
                          "method": ckpt.get("method")})
        self.net = student.eval()

    def _native_logits(self, x: torch.Tensor) -> torch.Tensor:
        from ..blend import logit_blend

        heads = self.net(x)
        if len(heads) == 1:
            return next(iter(heads.values()))
        if self._blend is not None:
            return logit_blend(heads["ce"], heads["kd"], *self._blend)
        return heads["ce"]

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """The student's pooled feature."""
        return self.net.features(x).float()
