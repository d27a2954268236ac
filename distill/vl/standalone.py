"""A plain vl-distill training loop for the CIFAR experiment while ``distill train --method vl-distill`` is being
wired into the shared loop (same VLTask, losses, data streams, AdamW + warm-up/cosine; no resume, no plots).

    python -m distill.vl.standalone --config configs/cifar10_vl.yaml --seed 0 --out runs/vl/full_s0 \
        [--set vl.w_mse=0 ...]

Writes ``summary.json`` (student and teacher metrics) and ``best.pt`` (selected on seen-class val accuracy) in the
checkpoint format, with the ``embedding`` entry.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ..checkpoint import save_checkpoint
from ..config import parse_set_options, read_yaml, _set_dotted
from ..data import DataConfig, ImageDataset, build_splits, create_train_transform, infinite_loader
from ..io import atomic_write_json
from ..preprocess import PreprocessSpec
from ..teachers import TeacherConfig, create_teacher
from ..teachers.prompts import load_descriptions
from .config import VLConfig
from .model import create_embedding_student, embed
from .task import VLTask


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--no-progress", action="store_true")  # accepted for command-line parity with distill train
    args = ap.parse_args()
    raw = read_yaml(args.config)
    for k, v in parse_set_options(args.set).items():
        _set_dotted(raw, k, v)
    seed = args.seed if args.seed is not None else int(raw.get("seed", 0))
    out = Path(args.out)
    torch.set_num_threads(int(raw.get("threads") or 1))
    torch.manual_seed(seed)

    data_cfg, teacher_cfg, vl_cfg = DataConfig(**raw["data"]), TeacherConfig(**raw["teacher"]), VLConfig(**raw.get("vl", {}))
    arch, size = raw["student"]["arch"], int(raw["student"].get("size", 32))
    steps, bs = int(raw["steps"]), int(raw["batch_labeled"])
    lr, wd, warm = float(raw.get("lr", 1e-3)), float(raw.get("weight_decay", 0.01)), float(raw.get("warmup_fraction", 0.03))
    eval_every = int(raw.get("eval_every") or 100)
    spec = PreprocessSpec.for_size(size, 1.0)

    t0 = time.time()
    splits = build_splits(data_cfg, progress=False)
    teacher = create_teacher(teacher_cfg, splits.class_names)
    task = VLTask(vl_cfg, splits, teacher, load_descriptions(teacher_cfg.descriptions), cache_dir=data_cfg.cache_dir,
                  device="cpu", progress=False)
    del teacher
    student = create_embedding_student(arch, task.embed_dim)
    decay = [p for p in student.parameters() if p.dim() >= 2]
    no_decay = [p for p in student.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    loader = iter(infinite_loader(ImageDataset(task.data.labeled, create_train_transform(spec)), bs, seed=seed))
    log, best, best_step, train_s = [], -1.0, 0, 0.0
    student.train()
    for step in range(steps):
        ts = time.perf_counter()
        w = int(warm * steps)
        cur = lr * (step + 1) / w if step < w else 0.5 * lr * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))
        for g in opt.param_groups:
            g["lr"] = cur
        x, y, idx = next(loader)
        terms = task.loss(embed(student, x), y, idx)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()
        train_s += time.perf_counter() - ts
        if (step + 1) % 20 == 0:
            rec = {"step": step + 1, "loss": float(terms.total), **{k: float(v) for k, v in terms.parts.items()},
                   "vlprox_kept": terms.vlprox_kept, "s_per_step": train_s / (step + 1)}
            log.append(rec)
            print(json.dumps(rec), flush=True)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            val = task.validate(student, spec, "cpu")
            print(json.dumps({"step": step + 1, "val": val}), flush=True)
            if val["acc_seen"] > best:
                best, best_step = val["acc_seen"], step + 1
                save_checkpoint(out / "best.pt", {
                    "student": student.spec.model_dump(mode="json"), "model": student.state_dict(),
                    "class_names": list(splits.class_names), "preprocess": spec.model_dump(mode="json"),
                    "method": "vl-distill", "blend": None, "teacher": task.teacher_desc,
                    "data": splits.as_checkpoint_data(), "config": raw | {"seed": seed}, "epoch": 0, "step": step + 1,
                    "embedding": task.checkpoint_entry()})
    from ..checkpoint import load_checkpoint

    student.load_state_dict(load_checkpoint(out / "best.pt")["model"])
    test = task.final_metrics(student, spec, "cpu")
    summary = {"method": "vl-distill", "seed": seed, "weights": vl_cfg.loss_weights(), "tau": vl_cfg.tau,
               "steps": steps, "batch": bs, "best_step": best_step, "val_seen_acc": best, "test": test,
               "teacher": task.teacher_metrics, "split": task.data.describe(),
               "train_time_s": train_s, "s_per_step": train_s / steps, "wall_time_s": time.time() - t0,
               "hardware": "2-core CPU shared with other jobs, 1 torch thread", "log": log}
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps({"test": test, "best_step": best_step}), flush=True)


if __name__ == "__main__":
    main()
