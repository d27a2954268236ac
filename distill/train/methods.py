"""Training methods behind one interface: what a method computes from a batch, which heads it has, how it is
validated. The loop (:mod:`distill.train.loop`) calls only this interface, so it has no method branches.

=============  ========  ==========================================  ===========================
method         heads     loss per step (:mod:`distill.losses`)       selects ``best.pt`` by
=============  ========  ==========================================  ===========================
``dho``        ce, kd    lambda CE(ce) + (1 - lambda) KD(kd)          val ``acc_blend05``
``ce``         ce        CE                                          val ``acc_ce``
``kd``         kd        KD                                          val ``acc_kd``
``ce+kd``      shared    lambda CE + (1 - lambda) KD, one head        val ``acc_shared``
``vl-distill`` embed     :func:`distill.vl.losses.vl_loss`            val ``acc_seen``
=============  ========  ==========================================  ===========================
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch

from ..blend import search_blends
from ..data.scan import Sample
from ..losses import KD_HEAD, LossTerms, method_loss
from ..models import HEADS_BY_METHOD
from ..preprocess import PreprocessSpec
from .evaluate import EvalSet, head_logits, head_metrics

#: Validation metric that picks ``best.pt``, per method.
SELECT_METRIC = {"dho": "acc_blend05", "ce": "acc_ce", "kd": "acc_kd", "ce+kd": "acc_shared", "vl-distill": "acc_seen"}

#: ``teacher_logits(samples) -> (N, C) float32 CPU``, computed once at set-up (cached on disk).
TeacherLogits = Callable[[Sequence[Sample]], torch.Tensor]


class Batch(NamedTuple):
    """One training step's input: the labeled rows, then the unlabeled rows, in one tensor ``x``."""

    x: torch.Tensor                 # (n_labeled + n_unlabeled, 3, H, W) on the device
    n_labeled: int
    labels: torch.Tensor            # (n_labeled,) on the device
    idx_l: torch.Tensor             # rows of ``method.labeled``
    idx_u: torch.Tensor | None      # rows of ``method.unlabeled`` (an in-memory pool), or None
    teacher_u: torch.Tensor | None  # teacher logits of a streamed pool's rows, or None


class StepLoss(NamedTuple):
    """``terms`` is backpropagated; ``extra`` is an optional metrics row ``(event, fields)`` for log steps."""

    terms: LossTerms
    extra: Callable[[], tuple[str, dict[str, Any]]] | None = None


class TrainMethod:
    """The interface. ``labeled``/``unlabeled`` are the sample lists the two training streams draw from."""

    name: str
    heads: tuple[str, ...]
    labeled: list[Sample]
    unlabeled: list[Sample]
    #: the unlabeled stream's rows need teacher targets from :meth:`attach_teacher` (False: the method has its own)
    needs_unlabeled_logits: bool = True
    #: the method draws an unlabeled batch every step (when there is a pool)
    trains_on_unlabeled: bool = True

    @property
    def select_metric(self) -> str:
        return SELECT_METRIC[self.name]

    def attach_teacher(self, teacher_logits: TeacherLogits, use_unlabeled: bool, device: torch.device) -> None:
        """Compute (once) the teacher targets of the training streams."""

    def create_student(self, arch: str, num_classes: int, weights: Any, input_size: int | None = None) -> torch.nn.Module:
        """The student, built for ``input_size`` px inputs (a ViT's position embeddings depend on it)."""
        raise NotImplementedError

    def loss(self, heads: dict[str, torch.Tensor], batch: Batch) -> StepLoss:
        raise NotImplementedError

    def validate(self, student: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, Any]:
        raise NotImplementedError

    def final_metrics(self, student: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, Any]:
        """``{"val": {...}, "test": {...}}`` and, for two-head students, the searched ``"blend"``."""
        raise NotImplementedError

    def checkpoint_entries(self) -> dict[str, Any]:
        return {}

    def summary_entry(self) -> dict[str, Any] | None:
        return None


class LogitsMethod(TrainMethod):
    """DHO and the baselines: heads of class logits, targets = labels and the teacher's logits."""

    def __init__(self, name: str, labeled: Sequence[Sample], unlabeled: Sequence[Sample], val_set: EvalSet,
                 test_set: EvalSet, lambda_: float, temperature: float) -> None:
        self.name, self.heads = name, HEADS_BY_METHOD[name]
        self.labeled, self.unlabeled = list(labeled), list(unlabeled)
        self.val_set, self.test_set = val_set, test_set
        self.lambda_, self.T = lambda_, temperature
        self.uses_teacher = name in KD_HEAD
        self.needs_unlabeled_logits = self.trains_on_unlabeled = self.uses_teacher
        self.t_lab: torch.Tensor | None = None
        self.t_unl: torch.Tensor | None = None

    def attach_teacher(self, teacher_logits: TeacherLogits, use_unlabeled: bool, device: torch.device) -> None:
        t_lab = teacher_logits(self.labeled) if self.uses_teacher else None
        t_unl = teacher_logits(self.unlabeled) if use_unlabeled else None
        self.t_lab = t_lab.to(device) if t_lab is not None else None
        self.t_unl = t_unl.to(device) if t_unl is not None else None

    def create_student(self, arch: str, num_classes: int, weights: Any, input_size: int | None = None) -> torch.nn.Module:
        from ..models import create_student

        return create_student(arch, num_classes, self.name, weights=weights, input_size=input_size)

    def loss(self, heads: dict[str, torch.Tensor], batch: Batch) -> StepLoss:
        n_l, dev = batch.n_labeled, batch.x.device
        out_l = {k: v[:n_l] for k, v in heads.items()}
        has_u = batch.idx_u is not None or batch.teacher_u is not None
        out_u = {k: v[n_l:] for k, v in heads.items()} if has_u else None
        t_u = None
        if batch.teacher_u is not None:
            t_u = batch.teacher_u.to(dev, non_blocking=True)
        elif batch.idx_u is not None and self.t_unl is not None:
            t_u = self.t_unl[batch.idx_u.to(dev)]
        t_l = self.t_lab[batch.idx_l.to(dev)] if self.t_lab is not None else None
        return StepLoss(method_loss(self.name, out_l, batch.labels, t_l, out_u, t_u, lambda_=self.lambda_, T=self.T))

    def validate(self, student: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, Any]:
        return head_metrics(head_logits(student, self.val_set, device, autocast), self.val_set.labels)

    def final_metrics(self, student: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, Any]:
        val_set, test_set = self.val_set, self.test_set
        lv = head_logits(student, val_set, device, autocast)
        lt = head_logits(student, test_set, device, autocast) if len(test_set) else {}
        res: dict[str, Any] = {
            "val": {f"acc_{h}": _acc(v, val_set.labels) for h, v in lv.items()},
            "test": {f"acc_{h}": _acc(v, test_set.labels) for h, v in lt.items()} if lt else {},
        }
        if "ce" in lv and "kd" in lv:  # two heads: the alpha/beta blend is searched on val, reported on test
            blend = search_blends(lv["ce"], lv["kd"], val_set.labels,
                                  lt.get("ce"), lt.get("kd"), test_set.labels if lt else None)
            res["blend"] = blend
            for kind in ("prob", "logit"):
                res["val"][f"acc_blend_{kind}"] = blend[kind]["val_acc"]
                if lt:
                    res["test"][f"acc_blend_{kind}"] = blend[kind]["test_acc"]
                res[f"blend_{kind}"] = {"alpha": blend[kind]["alpha"], "beta": blend[kind]["beta"]}
        return res


class VLMethod(TrainMethod):
    """Open-vocabulary distillation: one embedding head, targets = the teacher's image and class embeddings
    (:class:`distill.vl.VLTask` computes them at set-up)."""

    name = "vl-distill"
    needs_unlabeled_logits = False

    def __init__(self, task: Any, spec: PreprocessSpec) -> None:
        from ..vl.model import EMBED_HEAD

        self.task, self.spec, self.heads = task, spec, (EMBED_HEAD,)
        self.labeled, self.unlabeled = task.data.labeled, task.data.unlabeled

    def create_student(self, arch: str, num_classes: int, weights: Any, input_size: int | None = None) -> torch.nn.Module:
        from ..vl import create_embedding_student

        return create_embedding_student(arch, self.task.embed_dim, weights=weights, input_size=input_size)

    def loss(self, heads: dict[str, torch.Tensor], batch: Batch) -> StepLoss:
        s_emb = torch.nn.functional.normalize(heads[self.heads[0]].float(), dim=-1)
        vt = self.task.loss(s_emb, batch.labels, batch.idx_l, batch.idx_u)

        def extra() -> tuple[str, dict[str, Any]]:  # this step's unweighted vl terms
            return "vl_loss", {"vlprox_kept": vt.vlprox_kept, **{k: float(v.detach()) for k, v in vt.parts.items()}}

        return StepLoss(LossTerms(vt.total, None, None), extra)

    def validate(self, student: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, Any]:
        return self.task.validate(student, self.spec, device)

    def final_metrics(self, student: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, Any]:
        return {"val": self.task.validate(student, self.spec, device),
                "test": self.task.final_metrics(student, self.spec, device)}

    def checkpoint_entries(self) -> dict[str, Any]:
        return {"embedding": self.task.checkpoint_entry()}  # class embeddings, seen/unseen names, tau

    def summary_entry(self) -> dict[str, Any] | None:
        t = self.task
        return {"teacher": t.teacher_metrics, "split": t.data.describe(), "weights": t.cfg.loss_weights(),
                "tau": t.cfg.tau}


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    from ..blend import accuracy

    return accuracy(logits, labels)


def create_method(cfg: Any, splits: Any, teacher: Any, spec: PreprocessSpec, device: torch.device) -> TrainMethod:
    """The run's method; for vl-distill this runs the teacher's embedding passes (cached)."""
    if cfg.method == "vl-distill":
        from ..teachers.prompts import load_descriptions
        from ..vl import VLTask

        task = VLTask(cfg.vl, splits, teacher, load_descriptions(cfg.teacher.descriptions),
                      cache_dir=cfg.data.cache_dir, batch_size=cfg.teacher_batch_size, device=device,
                      use_cache=cfg.teacher_cache, num_workers=cfg.data.num_workers, progress=cfg.progress,
                      eval_batch_size=cfg.eval_batch_size)
        return VLMethod(task, spec)
    workers = cfg.data.num_workers
    return LogitsMethod(cfg.method, splits.labeled, splits.unlabeled,
                        EvalSet(splits.val, spec, cfg.eval_batch_size, workers),
                        EvalSet(splits.test, spec, cfg.eval_batch_size, workers), cfg.lambda_, cfg.temperature)


__all__ = ["Batch", "LogitsMethod", "SELECT_METRIC", "StepLoss", "TrainMethod", "VLMethod", "create_method"]
