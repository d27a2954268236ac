"""``VLTask``: what the training loop needs for ``--method vl-distill``, in one object.

    task = VLTask(cfg.vl, splits, teacher, descriptions, cache_dir=..., device=...)   # teacher passes (cached)
    s = embed(student, x)                                                            # (N, D) unit rows
    terms = task.loss(s, y, idx_labeled, idx_unlabeled)                               # VLLossTerms
    task.validate(student, spec, device) # {"acc_seen": ...} on seen-class val images (selects best.pt)
    task.final_metrics(student, spec, device)  # seen / unseen zero-shot / unseen k-shot on the test images
    task.checkpoint_entry()              # the checkpoint's "embedding" entry

The teacher runs only here, at set-up, on un-augmented images (its embeddings are cached on disk by
:func:`~distill.teachers.teacher_embeddings_for`); training never calls it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..data import Sample
from ..errors import ModelError
from ..preprocess import PreprocessSpec
from ..teachers.base import Teacher
from .classes import split_classes
from .config import VLConfig
from .data import VLData, restrict_splits
from .evaluate import open_vocab_metrics, seen_accuracy
from .losses import VLLossTerms, vl_loss
from .model import embed
from .vlm import ClassifierVLM, as_vlm, classifier_scoring_report

EMBEDDING_FORMAT = 1


class VLTask:
    def __init__(
        self, cfg: VLConfig, splits: Any, teacher: Teacher, descriptions: dict[str, str] | None = None, *,
        cache_dir: Any = None, batch_size: int = 256, device: Any = "cpu", use_cache: bool = True,
        num_workers: int = 0, progress: bool = False, eval_batch_size: int = 256,
    ) -> None:
        from ..teachers import teacher_embeddings_for

        self.cfg = cfg
        self.vlm = as_vlm(teacher)
        self.seen, self.unseen = split_classes(splits.class_names, cfg.unseen_classes,
                                               fraction=cfg.unseen_fraction, seed=cfg.split_seed)
        support_per_class = max(100, cfg.kshot * cfg.kshot_trials) if cfg.kshot else 0
        self.data: VLData = restrict_splits(splits, self.seen, self.unseen, support_per_class, seed=cfg.split_seed)
        if not self.data.labeled:
            raise ModelError("no labeled images of the seen classes to train on")
        self.class_names = list(splits.class_names)
        self.class_emb = self.vlm.class_embeddings(self.class_names, descriptions).float()  # (C, D), all classes
        self.embed_dim = int(self.class_emb.shape[1])
        self.seen_ids, self.unseen_ids = self.data.seen_ids, self.data.unseen_ids
        self.seen_emb = self.class_emb[self.seen_ids]
        lookup = torch.full((len(self.class_names) + 1,), -1, dtype=torch.long)  # last slot: label -1
        lookup[torch.as_tensor(self.seen_ids)] = torch.arange(len(self.seen_ids))
        self._seen_pos = lookup
        self.eval_batch_size, self.num_workers = eval_batch_size, num_workers
        self.cache_infos: list[Any] = []

        def t_emb(samples: Sequence[Sample]) -> torch.Tensor:
            if not samples:
                return torch.zeros(0, self.embed_dim)
            e, info = teacher_embeddings_for(teacher, samples, cache_dir, batch_size, device, use_cache,
                                             num_workers=num_workers, progress=progress)
            self.cache_infos.append(info)
            return e

        raw_lab, raw_unl = t_emb(self.data.labeled), t_emb(self.data.unlabeled)
        raw_test, raw_sup = t_emb(self.data.test), t_emb(self.data.support)
        if raw_lab.shape[1] != self.embed_dim:
            raise ModelError(f"teacher image embeddings have {raw_lab.shape[1]} dims, its class embeddings "
                             f"{self.embed_dim}")
        self.t_lab, self.t_unl = F.normalize(raw_lab, dim=-1), F.normalize(raw_unl, dim=-1)
        self.teacher_metrics = self._metrics(F.normalize(raw_test, dim=-1), F.normalize(raw_sup, dim=-1))
        if isinstance(self.vlm, ClassifierVLM):
            y = torch.tensor([s.label for s in self.data.test])
            self.teacher_metrics["classifier_scoring"] = {
                "seen": classifier_scoring_report(teacher, raw_test, y, self.seen_ids),
                "unseen": classifier_scoring_report(teacher, raw_test, y, self.unseen_ids)}
        self.teacher_desc = self.vlm.describe()
        self._image_cache: dict[int, torch.Tensor] = {}

    # ---------------------------------------------------------------- training
    def loss(self, s: torch.Tensor, y: torch.Tensor, idx_l: torch.Tensor,
             idx_u: torch.Tensor | None = None) -> VLLossTerms:
        """``s``: student unit embeddings of the labeled rows then (optionally) the unlabeled rows;
        ``y``: dataset labels of the labeled rows; ``idx_*``: row indices into ``data.labeled/unlabeled``."""
        dev = s.device
        t = self.t_lab[idx_l.cpu()]
        y_seen = self._seen_pos[y.cpu()]
        if idx_u is not None and len(idx_u):
            t = torch.cat([t, self.t_unl[idx_u.cpu()]])
            y_seen = torch.cat([y_seen, torch.full((len(idx_u),), -1, dtype=torch.long)])
        return vl_loss(s, t.to(dev), y_seen.to(dev), self.seen_emb.to(dev), self.cfg.loss_weights(),
                       self.cfg.tau, self.cfg.topk)

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def embed_samples(self, student: torch.nn.Module, samples: Sequence[Sample], spec: PreprocessSpec,
                      device: Any) -> torch.Tensor:
        """Student unit embeddings of un-augmented ``samples`` (decoded images kept in memory when small)."""
        from ..data import ImageDataset, create_eval_transform, eval_loader

        key = id(samples)
        was = student.training
        student.eval()
        try:
            x_all = self._image_cache.get(key)
            if x_all is None:
                chunks = [x for x, _, _ in eval_loader(ImageDataset(samples, create_eval_transform(spec)),
                                                       self.eval_batch_size, num_workers=self.num_workers)]
                x_all = torch.cat(chunks) if chunks else torch.zeros(0, 3, spec.size, spec.size)
                if x_all.numel() * 4 <= 512 * 2**20:
                    self._image_cache[key] = x_all
            outs = [embed(student, x_all[i:i + self.eval_batch_size].to(device)).cpu()
                    for i in range(0, len(x_all), self.eval_batch_size)]
        finally:
            student.train(was)
        return torch.cat(outs) if outs else torch.zeros(0, self.embed_dim)

    def validate(self, student: torch.nn.Module, spec: PreprocessSpec, device: Any) -> dict[str, float]:
        """Seen-class accuracy on the seen-class validation images (the model-selection metric)."""
        e = self.embed_samples(student, self.data.val, spec, device)
        y = torch.tensor([s.label for s in self.data.val])
        return {"acc_seen": seen_accuracy(e, y, self.class_emb, self.seen_ids)}  # acc_*: plotted with the val curves

    def _metrics(self, test_emb: torch.Tensor, support_emb: torch.Tensor) -> dict[str, Any]:
        y = torch.tensor([s.label for s in self.data.test])
        ys = torch.tensor([s.label for s in self.data.support]) if self.data.support else None
        k = self.cfg.kshot if ys is not None else 0
        return open_vocab_metrics(test_emb, y, self.class_emb, self.seen_ids, self.unseen_ids,
                                  support_emb if k else None, ys, k=k, trials=self.cfg.kshot_trials,
                                  seed=self.cfg.split_seed)

    def final_metrics(self, student: torch.nn.Module, spec: PreprocessSpec, device: Any) -> dict[str, Any]:
        test = self.embed_samples(student, self.data.test, spec, device)
        sup = self.embed_samples(student, self.data.support, spec, device) if self.data.support else test[:0]
        return self._metrics(test, sup)

    # ---------------------------------------------------------------- checkpoint
    def checkpoint_entry(self) -> dict[str, Any]:
        """The checkpoint's ``embedding`` entry: enough to classify with the student and to check a label set."""
        return {
            "format": EMBEDDING_FORMAT, "embed_dim": self.embed_dim, "tau": self.cfg.tau,
            "class_names": list(self.class_names), "class_embeddings": self.class_emb.clone(),
            "seen": list(self.seen), "unseen": list(self.unseen),
            "teacher": self.vlm.describe(),
        }
