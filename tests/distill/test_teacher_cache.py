"""The teacher-output cache: keyed by image content and teacher identity; a second pass runs no teacher."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from distill.data import Sample, list_image_folder, verify_samples
from distill.teachers import TeacherConfig, create_teacher, teacher_embeddings_for, teacher_logits_for


@pytest.fixture(scope="module")
def samples(cifar_small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    _, all_samples = list_image_folder(cifar_small_dir)
    kept, _ = verify_samples(all_samples[::6], cifar_small_dir, tmp_path_factory.mktemp("scan"))
    return kept  # 50 verified samples with content digests


def test_second_call_computes_nothing_and_matches(resnet20_teacher, samples: list[Sample], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first, info1 = teacher_logits_for(resnet20_teacher, samples, tmp_path, 16, "cpu", progress=False)
    assert info1.used_cache and info1.computed == 50 and info1.hits == 0 and info1.path.is_file()
    monkeypatch.setattr(type(resnet20_teacher), "_native_logits", lambda *a: pytest.fail("teacher ran again"))
    second, info2 = teacher_logits_for(resnet20_teacher, samples, tmp_path, 16, "cpu", progress=False)
    assert info2.computed == 0 and info2.hits == 50 and torch.equal(first, second)
    rev, _ = teacher_logits_for(resnet20_teacher, samples[::-1], tmp_path, 16, "cpu", progress=False)
    assert torch.equal(rev, first.flip(0))  # row i always belongs to samples[i]


def test_cache_is_keyed_by_content_and_identity(resnet20_teacher, samples: list[Sample], tmp_path: Path) -> None:
    base, _ = teacher_logits_for(resnet20_teacher, samples[:20], tmp_path, 16, "cpu", progress=False)
    # the same bytes under another name (no digest known) hit; new images are computed
    copy = tmp_path / "copy.jpg"
    shutil.copy(samples[0].path, copy)
    mixed = [Sample(copy, 3), *samples[10:30]]
    out, info = teacher_logits_for(resnet20_teacher, mixed, tmp_path, 16, "cpu", progress=False)
    assert info.hits == 11 and info.computed == 10
    assert torch.equal(out[0], base[0]) and torch.equal(out[1:11], base[10:20])
    fresh, info_off = teacher_logits_for(resnet20_teacher, samples[:20], tmp_path, 16, "cpu", use_cache=False,
                                         progress=False)
    assert not info_off.used_cache and info_off.computed == 20 and info_off.path is None
    assert torch.allclose(fresh, base, atol=1e-5)
    reordered = create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(resnet20_teacher.describe()["weights_file"])),
                               resnet20_teacher.class_names[::-1])
    flipped, info_r = teacher_logits_for(reordered, samples[:20], tmp_path, 16, "cpu", progress=False)
    assert info_r.computed == 20 and torch.allclose(flipped, base.flip(1), atol=1e-5)


def test_embeddings_are_cached_separately(resnet20_teacher, samples: list[Sample], tmp_path: Path) -> None:
    emb, info = teacher_embeddings_for(resnet20_teacher, samples[:8], tmp_path, 8, "cpu", progress=False)
    assert emb.shape == (8, 64) and info.computed == 8 and info.path.name == "embeddings.npz"
    again, info2 = teacher_embeddings_for(resnet20_teacher, samples[:8], tmp_path, 8, "cpu", progress=False)
    assert info2.computed == 0 and torch.equal(emb, again)


def test_cpu_pass_uses_every_usable_cpu_then_restores(resnet20_teacher, samples: list[Sample], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A run training at one thread still computes its (locked, alone) teacher pass on all CPUs it may use."""
    import distill.cpus

    seen: list[int] = []
    native = type(resnet20_teacher)._native_logits
    monkeypatch.setattr(type(resnet20_teacher), "_native_logits",
                        lambda self, x: (seen.append(torch.get_num_threads()), native(self, x))[1])
    monkeypatch.setattr(distill.cpus, "usable_cpus", lambda root=None: 3)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher_logits_for(resnet20_teacher, samples[:8], tmp_path, 4, "cpu", use_cache=False, progress=False)
        assert seen == [3, 3] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
