"""Benchmark: one distillation epoch that runs the teacher on every batch vs one that reads the teacher store.

Both epochs do the same student work (DHO loss, forward + backward + AdamW step on the same images, the
same augmentation, the same loader); they differ only in where the teacher outputs come from: the teacher's
forward pass on the un-augmented image (decoded a second time at the teacher's resolution), or
``TeacherStore.lookup`` on the memory-mapped store that ``distill cache-teacher`` wrote. The store is built
first and its throughput is reported too.

    python -m distill.scale.bench_cache --data DIR --teacher ViT-B-32 --images 256 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset


class _TwoViews(Dataset):
    """(student view, teacher view, label, digest) or, without a teacher transform, (student view, label, digest)."""

    def __init__(self, samples: Sequence[Any], student_tf: Any, teacher_tf: Any | None) -> None:
        self.samples, self.student_tf, self.teacher_tf = list(samples), student_tf, teacher_tf

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        s = self.samples[i]
        data = Path(s.path).read_bytes()
        if self.teacher_tf is None:
            return self.student_tf(data), s.label, s.digest
        return self.student_tf(data), self.teacher_tf(data), s.label, s.digest


def _epoch(student: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
           teacher_outputs: Any) -> tuple[float, int]:
    """One pass; ``teacher_outputs(batch) -> (x, y, teacher logits)``. Returns (seconds, images)."""
    from ..losses import method_loss

    student.train()
    n, t0 = 0, time.perf_counter()
    for batch in loader:
        x, y, t = teacher_outputs(batch)
        heads = student(x)
        loss = method_loss("dho", heads, y, t).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += len(x)
    return time.perf_counter() - t0, n


def run(data: Path, teacher_name: str, teacher_weights: str | None, student_arch: str, image_size: int,
        images: int, batch_size: int, workers: int, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    from ..data import (create_eval_transform, create_train_transform, list_image_folder, resolve_dataset_root,
                        stratified_subset, verify_samples)
    from ..models import create_student
    from ..preprocess import PreprocessSpec
    from ..teachers import TeacherConfig, create_teacher
    from .cache_teacher import cache_teacher, samples_image_set
    from .teacher_store import open_teacher_store

    torch.manual_seed(seed)
    root = resolve_dataset_root(data, cache_dir=out_dir / "cache")
    names, samples = list_image_folder(root)
    samples = stratified_subset(samples, names, images, seed)
    samples, _ = verify_samples(samples, root, out_dir / "cache", progress=False)
    teacher = create_teacher(TeacherConfig(name=teacher_name, weights=teacher_weights, templates="single"), names)

    # 1. the store (what `distill cache-teacher` does), timed
    t0 = time.perf_counter()
    report = cache_teacher(teacher, samples_image_set(samples, names, part_size=max(batch_size, len(samples) // 4)),
                           out_dir / "store", batch_size=batch_size, device="cpu", num_workers=workers,
                           rank=0, world_size=1, progress=False)
    cache_s = time.perf_counter() - t0
    store = open_teacher_store(out_dir / "store")

    spec = PreprocessSpec.for_size(image_size)
    student_tf = create_train_transform(spec)
    teacher_tf = create_eval_transform(teacher.preprocess)

    def fresh_student() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        s = create_student(student_arch, len(names), "dho", input_size=image_size)
        return s, torch.optim.AdamW(s.parameters(), lr=1e-3)

    def loader(with_teacher: bool) -> DataLoader:
        return DataLoader(_TwoViews(samples, student_tf, teacher_tf if with_teacher else None), batch_size=batch_size,
                          shuffle=True, num_workers=workers, drop_last=False,
                          generator=torch.Generator().manual_seed(seed))

    def from_teacher(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, xt, y, _ = batch
        return xs, y, teacher.logits(xt)

    def from_store(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, y, digests = batch
        return xs, y, torch.from_numpy(store.lookup(digests))

    # warm-up (allocator, lazy inits) on one batch each, then one timed epoch each
    student, opt = fresh_student()
    _epoch(student, opt, [next(iter(loader(False)))], from_store)  # type: ignore[arg-type]
    with torch.no_grad():
        teacher.logits(torch.zeros(2, 3, teacher.preprocess.size, teacher.preprocess.size))
    student, opt = fresh_student()
    teacher_s, n_t = _epoch(student, opt, loader(True), from_teacher)
    student, opt = fresh_student()
    cached_s, n_c = _epoch(student, opt, loader(False), from_store)
    return {
        "images": n_t, "batch_size": batch_size, "workers": workers,
        "teacher": {"name": teacher_name, "weights": teacher_weights, "input_size": teacher.preprocess.size,
                    "params": sum(p.numel() for p in teacher.parameters())},
        "student": {"arch": student_arch, "input_size": image_size,
                    "params": sum(p.numel() for p in student.parameters())},
        "cache_build": {"seconds": cache_s, "images_per_s": report.images_computed / cache_s,
                        "teacher_images_per_s": report.images_per_s, "rows": report.rows},
        "epoch_with_teacher": {"seconds": teacher_s, "images": n_t, "images_per_s": n_t / teacher_s},
        "epoch_cached": {"seconds": cached_s, "images": n_c, "images_per_s": n_c / cached_s},
        "speedup": teacher_s / cached_s,
        "hardware": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                     "load_average_1m": os.getloadavg()[0]},
        "torch": torch.__version__,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="ImageFolder (or archive of one).")
    ap.add_argument("--teacher", default="ViT-B-32", help="Teacher name (open_clip, timm or cifar_resnetN).")
    ap.add_argument("--teacher-weights", default=None, help="Weights file / tag; none = random (latency only).")
    ap.add_argument("--student", default="cifar_resnet20")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads.")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-teacher-cache"))
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import shutil

    shutil.rmtree(args.out / "store", ignore_errors=True)
    res = run(args.data, args.teacher, args.teacher_weights, args.student, args.image_size, args.images,
              args.batch_size, args.workers, args.out)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
