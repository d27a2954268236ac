"""VLTask on real CIFAR images with a tiny random teacher: nothing unseen reaches training; losses and metrics run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.data import DataConfig, build_splits
from distill.errors import DataError
from distill.preprocess import PreprocessSpec
from distill.vl import VLConfig, VLTask, create_embedding_student, embed
from distill.vl.data import restrict_splits


@pytest.fixture()
def splits(cifar_small_dir: Path, tmp_path: Path):
    cfg = DataConfig(root=cifar_small_dir, labeled_fraction=0.3, val_fraction=0.2, test_fraction=0.2,
                     cache_dir=tmp_path / "cache", seed=0)
    return build_splits(cfg, progress=False)


def test_restrict_splits_keeps_unseen_out_of_training(splits) -> None:
    seen, unseen = ["airplane", "cat", "dog"], ["automobile", "bird", "deer", "frog", "horse", "ship", "truck"]
    d = restrict_splits(splits, seen, unseen, support_per_class=5)
    seen_ids = {splits.class_names.index(n) for n in seen}
    assert d.labeled and all(s.label in seen_ids for s in d.labeled)
    assert all(s.label in seen_ids for s in d.val)
    folders = {s.path.relative_to(splits.root).parts[0] for s in d.unlabeled}
    assert folders and folders <= set(seen)
    assert d.dropped_unlabeled > 0
    test_paths = {s.path for s in splits.test}
    assert d.support and all(s.label not in seen_ids and s.path not in test_paths for s in d.support)
    assert len(d.support) <= 5 * len(unseen) + len(unseen)
    assert d.counts()["test_seen"] + d.counts()["test_unseen"] == len(splits.test)


def test_vl_task_end_to_end_tiny(splits, tiny_resnet_teacher, tmp_path: Path) -> None:
    cfg = VLConfig(unseen_classes=["cat", "dog", "ship"], kshot=2, kshot_trials=2)
    task = VLTask(cfg, splits, tiny_resnet_teacher, cache_dir=tmp_path / "cache", device="cpu")
    assert task.unseen == ["cat", "dog", "ship"] and task.embed_dim == 64
    assert task.t_lab.shape == (len(task.data.labeled), 64)
    assert torch.allclose(task.t_lab.norm(dim=-1), torch.ones(len(task.t_lab)), atol=1e-5)
    tm = task.teacher_metrics
    assert {"seen_acc", "unseen_zeroshot", "unseen_2shot", "all_acc", "classifier_scoring"} <= set(tm)
    assert task.cache_infos[0].computed > 0
    again = VLTask(cfg, splits, tiny_resnet_teacher, cache_dir=tmp_path / "cache", device="cpu")
    assert all(i.computed == 0 for i in again.cache_infos)  # the second run reads the embedding cache

    torch.manual_seed(0)
    student = create_embedding_student("cifar_resnet8", task.embed_dim)
    spec = PreprocessSpec()
    from distill.data import ImageDataset, create_eval_transform

    ds = ImageDataset(task.data.labeled, create_eval_transform(spec))
    xl = torch.stack([ds[i][0] for i in range(4)])
    yl = torch.tensor([ds[i][1] for i in range(4)])
    ds_u = ImageDataset(task.data.unlabeled, create_eval_transform(spec))
    xu = torch.stack([ds_u[i][0] for i in range(3)])
    s = embed(student, torch.cat([xl, xu]))
    terms = task.loss(s, yl, torch.arange(4), torch.arange(3))
    assert set(terms.parts) == {"cls", "mse", "imcst", "vlprox"}
    terms.total.backward()
    assert student.heads["embed"].weight.grad is not None

    val = task.validate(student, spec, "cpu")
    assert 0.0 <= val["acc_seen"] <= 1.0
    m = task.final_metrics(student, spec, "cpu")
    assert {"seen_acc", "unseen_zeroshot", "unseen_2shot", "unseen_2shot_std", "all_acc"} <= set(m)
    entry = task.checkpoint_entry()
    assert entry["class_embeddings"].shape == (10, 64) and entry["tau"] == 0.07
    assert entry["unseen"] == ["cat", "dog", "ship"] and entry["teacher"]["identity"] == task.vlm.identity


def test_vl_task_unknown_unseen_class(splits, tiny_resnet_teacher, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown unseen class"):
        VLTask(VLConfig(unseen_classes=["cat", "unicorn"]), splits, tiny_resnet_teacher, cache_dir=tmp_path)
