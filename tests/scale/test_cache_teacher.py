"""``distill cache-teacher``: sharded across ranks, resumable, merged into a store that training memory-maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import Sample, list_image_folder, verify_samples
from distill.errors import ConfigError, DataError
from distill.scale import cache_teacher as ct
from distill.scale import open_teacher_store
from distill.teachers import teacher_logits_for

REPO = Path(__file__).resolve().parents[2]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def small_folder(cifar_small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 real images per class (60), as an ImageFolder."""
    root = tmp_path_factory.mktemp("small")
    for cls in CIFAR_CLASSES:
        (root / cls).mkdir()
        for p in sorted((cifar_small_dir / cls).glob("*.jpg"))[:6]:
            (root / cls / p.name).write_bytes(p.read_bytes())
    return root


@pytest.fixture(scope="module")
def samples(small_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    _, s = list_image_folder(small_folder)
    kept, _ = verify_samples(s, small_folder, tmp_path_factory.mktemp("scan"), progress=False)
    return kept


@pytest.fixture(scope="module")
def reference(resnet20_teacher, samples: list[Sample]) -> torch.Tensor:
    logits, _ = teacher_logits_for(resnet20_teacher, samples, None, 32, "cpu", use_cache=False, progress=False)
    return logits


def test_store_matches_the_teacher_and_looks_up_by_content(resnet20_teacher, small_folder: Path, samples, reference,
                                                           tmp_path: Path) -> None:
    image_set = ct.folder_image_set(small_folder, part_size=16)
    assert len(image_set.parts) == 4 and image_set.class_names == CIFAR_CLASSES
    rep = ct.cache_teacher(resnet20_teacher, image_set, tmp_path / "st", batch_size=16, device="cpu", rank=0,
                           world_size=1, progress=False)
    assert rep.merged and rep.rows == 60 and rep.parts_computed == 4 and rep.images_computed == 60
    store = open_teacher_store(tmp_path / "st")
    assert isinstance(store.values, np.memmap) and isinstance(store.digests, np.memmap)
    assert len(store) == 60 and store.dim == 10 and store.output == "logits"
    assert store.class_names == CIFAR_CLASSES and store.identity == resnet20_teacher.identity
    assert (np.sort(store.digests) == store.digests).all()
    digests = [s.digest for s in samples]
    got = store.lookup(digests)
    assert got.dtype == np.float32 and np.allclose(got, reference.numpy(), atol=1e-4)
    assert np.array_equal(store.lookup(digests[::-1]), got[::-1])  # row i belongs to digests[i], in any order
    assert store.contains([digests[0], "0" * 64]).tolist() == [True, False]
    with pytest.raises(KeyError, match="1 of 2 images are not in the teacher store"):
        store.lookup([digests[0], "f" * 64])


def test_manual_sharding_two_ranks_merge_when_the_last_part_is_done(resnet20_teacher, small_folder: Path,
                                                                     samples, reference, tmp_path: Path) -> None:
    image_set = ct.folder_image_set(small_folder, part_size=16)
    r1 = ct.cache_teacher(resnet20_teacher, image_set, tmp_path, batch_size=16, device="cpu", rank=1, world_size=2,
                          progress=False)
    assert r1.parts_mine == 2 and r1.parts_computed == 2 and not r1.merged
    with pytest.raises(DataError, match="not complete"):
        open_teacher_store(tmp_path)
    r0 = ct.cache_teacher(resnet20_teacher, image_set, tmp_path, batch_size=16, device="cpu", rank=0, world_size=2,
                          progress=False)
    assert r0.merged and r0.rows == 60
    assert np.allclose(open_teacher_store(tmp_path).lookup([s.digest for s in samples]), reference.numpy(), atol=1e-4)


def test_a_killed_run_resumes_and_skips_finished_parts(resnet20_teacher, small_folder: Path, samples, reference,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image_set = ct.folder_image_set(small_folder, part_size=16)
    real_run_part = ct._run_part
    calls: list[str] = []

    def dies_on_third_part(*args, **kw):
        part = args[2]
        calls.append(part.name)
        if len(calls) == 3:  # killed after writing values, before the completion marker
            (args[3] / f"{part.name}.values.npy").write_bytes(b"half-written")
            raise KeyboardInterrupt
        return real_run_part(*args, **kw)

    monkeypatch.setattr(ct, "_run_part", dies_on_third_part)
    with pytest.raises(KeyboardInterrupt):
        ct.cache_teacher(resnet20_teacher, image_set, tmp_path, batch_size=16, device="cpu", progress=False)
    monkeypatch.setattr(ct, "_run_part", real_run_part)
    done = sorted(p.name for p in (tmp_path / "parts").glob("*.done.json"))
    assert done == ["part-000000.done.json", "part-000001.done.json"]
    rep = ct.cache_teacher(resnet20_teacher, image_set, tmp_path, batch_size=16, device="cpu", progress=False)
    assert rep.parts_done_before == 2 and rep.parts_computed == 2 and rep.images_computed == 60 - 32
    assert rep.merged and rep.rows == 60
    assert np.allclose(open_teacher_store(tmp_path).lookup([s.digest for s in samples]), reference.numpy(), atol=1e-4)
    again = ct.cache_teacher(resnet20_teacher, image_set, tmp_path, batch_size=16, device="cpu", progress=False)
    assert again.parts_computed == 0 and not again.merged and again.rows == 60  # nothing to do


def test_changed_images_invalidate_only_their_part(resnet20_teacher, small_folder: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "f"
    shutil.copytree(small_folder, folder)
    ct.cache_teacher(resnet20_teacher, ct.folder_image_set(folder, part_size=16), tmp_path / "s", batch_size=16,
                     device="cpu", progress=False)
    victim = sorted((folder / "truck").glob("*.jpg"))[-1]  # last in sorted order: the last part
    victim.write_bytes((folder / "cat" / sorted(p.name for p in (folder / "cat").glob("*.jpg"))[0]).read_bytes())
    rep = ct.cache_teacher(resnet20_teacher, ct.folder_image_set(folder, part_size=16), tmp_path / "s", batch_size=16,
                           device="cpu", progress=False)
    assert rep.parts_computed == 1 and rep.parts_done_before == 3 and rep.rows == 59  # the copy is one image


def test_shards_and_folder_give_the_same_store(resnet20_teacher, shards_dir: Path, cifar_small_dir: Path,
                                               tmp_path: Path) -> None:
    rep = ct.cache_teacher(resnet20_teacher, ct.shard_image_set(shards_dir), tmp_path / "sh", batch_size=64,
                           device="cpu", progress=False)
    assert rep.rows == 300 and rep.parts_total == 5
    from_shards = open_teacher_store(tmp_path / "sh")
    _, all_samples = list_image_folder(cifar_small_dir)
    some = all_samples[::25]
    some, _ = verify_samples(some, cifar_small_dir, None, progress=False)
    ref, _ = teacher_logits_for(resnet20_teacher, some, None, 64, "cpu", use_cache=False, progress=False)
    assert np.allclose(from_shards.lookup([s.digest for s in some]), ref.numpy(), atol=1e-4)


def test_embeddings_in_float16(resnet20_teacher, small_folder: Path, samples, tmp_path: Path) -> None:
    from distill.teachers import teacher_embeddings_for

    ct.cache_teacher(resnet20_teacher, ct.folder_image_set(small_folder, limit=20), tmp_path, output="embeddings",
                     dtype="float16", batch_size=20, device="cpu", progress=False)
    store = open_teacher_store(tmp_path)
    assert store.values.dtype == np.float16 and store.dim == 64 and store.output == "embeddings"
    first = sorted(samples, key=lambda s: s.path.relative_to(small_folder).as_posix())[:20]
    ref, _ = teacher_embeddings_for(resnet20_teacher, first, None, 20, "cpu", use_cache=False, progress=False)
    assert np.allclose(store.lookup([s.digest for s in first]), ref.numpy(), rtol=2e-3, atol=2e-3)


def test_store_of_another_teacher_or_output_is_refused(resnet20_teacher, resnet20_weights: Path, small_folder: Path,
                                                       tmp_path: Path) -> None:
    from distill.teachers import TeacherConfig, create_teacher

    image_set = ct.folder_image_set(small_folder, limit=8)
    ct.cache_teacher(resnet20_teacher, image_set, tmp_path, batch_size=8, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="holds output 'logits', not 'embeddings'"):
        ct.cache_teacher(resnet20_teacher, image_set, tmp_path, output="embeddings", device="cpu", progress=False)
    other = create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(resnet20_weights),
                                         templates="single"), CIFAR_CLASSES[::-1])
    with pytest.raises(ConfigError, match="made by another teacher"):
        ct.cache_teacher(other, image_set, tmp_path, device="cpu", progress=False)


def test_bad_stores_and_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_teacher_store(tmp_path / "missing")
    with pytest.raises(DataError, match="not a teacher store"):
        open_teacher_store(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": 1, "complete": True, "rows": 3}))
    with pytest.raises(DataError, match="unreadable"):
        open_teacher_store(tmp_path)
    with pytest.raises(ConfigError, match="rank 2 is not within world size 2"):
        ct.rank_and_world(2, 2)


def test_cli_errors(tmp_path: Path, small_folder: Path, shards_dir: Path, resnet20_weights: Path) -> None:
    from typer.testing import CliRunner

    from distill.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["cache-teacher", "--teacher-weights", str(resnet20_weights)])
    assert res.exit_code == 2 and "exactly one of --data" in res.output
    res = runner.invoke(app, ["cache-teacher", "--data", str(small_folder / "cat"), "--teacher", "cifar_resnet20",
                              "--teacher-weights", str(resnet20_weights), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no class names" in res.output
    res = runner.invoke(app, ["cache-teacher", "--shards", str(tmp_path / "none-*.tar")])
    assert res.exit_code == 2 and "no shards found" in res.output
    res = runner.invoke(app, ["cache-teacher", "--data", str(small_folder), "--teacher", "cifar_resnet20",
                              "--teacher-weights", str(resnet20_weights), "--output", "probs", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "--output must be one of" in res.output


def test_torchrun_two_processes_rank0_waits_and_merges(small_folder: Path, samples, reference, resnet20_weights: Path,
                                                       tmp_path: Path) -> None:
    """The real launcher: ``torchrun --nproc-per-node=2 -m distill cache-teacher`` (CPU)."""
    out = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTILL_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=0",
           "-m", "distill", "cache-teacher", "--data", str(small_folder), "--teacher", "cifar_resnet20",
           "--teacher-weights", str(resnet20_weights), "--part-size", "10", "--batch-size", "10", "--device", "cpu",
           "--out", str(out), "--no-progress", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(chunk) for chunk in _json_objects(proc.stdout)]
    by_rank = {r["rank"]: r for r in reports}
    assert set(by_rank) == {0, 1} and all(r["world_size"] == 2 and r["parts_mine"] == 3 for r in reports)
    assert by_rank[0]["merged"] and by_rank[0]["rows"] == 60
    assert np.allclose(open_teacher_store(out).lookup([s.digest for s in samples]), reference.numpy(), atol=1e-4)


def _json_objects(text: str) -> list[str]:
    """Split concatenated pretty-printed JSON objects (two ranks share stdout)."""
    out, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and start is not None:
                out.append(text[start:i + 1])
    return out


def test_prompt_names_keep_the_dataset_class_ids(cifar_small_dir: Path, tmp_path: Path, tiny_clip_config: Path) -> None:
    """ImageNet-style folders (n01440764, ...) + human prompt names: the store is keyed by the folder ids,
    so a training run over the same folders accepts it."""
    import shutil

    from typer.testing import CliRunner

    from distill.cli import app
    from distill.scale.teacher_store import StoreTeacher

    ids = {name: f"n{i:08d}" for i, name in enumerate(sorted(p.name for p in cifar_small_dir.iterdir()))}
    folder = tmp_path / "ids"
    for name, cid in ids.items():
        (folder / cid).mkdir(parents=True)
        for jpg in sorted((cifar_small_dir / name).glob("*.jpg"))[:2]:
            shutil.copy(jpg, folder / cid / jpg.name)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(ids) + "\n")  # human names, in the folders' (sorted id) order
    config = tiny_clip_config
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["cache-teacher", "--data", str(folder), "--teacher-kind", "open_clip",
                                   "--teacher", str(config), "--prompt-names", str(prompts), "--templates", "single",
                                   "--device", "cpu", "--no-progress", "--out", str(store)])
    assert res.exit_code == 0, res.output
    teacher = StoreTeacher(store, sorted(ids.values()))
    assert teacher.store.class_names == sorted(ids.values())
