"""The bare training step: the ceiling ``distill train`` is measured against.

The same student (``create_student``), the same DHO loss and AdamW step, the same batch (labeled + unlabeled
halves), the same autocast precision as ``distill train`` -- but synthetic tensors already on the device and no
data loading, logging, validation or checkpoints. ``distill train``'s ``images_per_s`` (summary.json) divided by
this loop's is the harness efficiency the issue targets (>= 70% on GPU).

    python -m distill.scale.bench_train --arch resnet18 --image-size 224 --batch-size 128 --amp bf16 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any, Sequence

import torch


def bare_loop(arch: str, image_size: int, batch_half: int, num_classes: int = 10, amp: str = "auto",
              steps: int = 20, warmup: int = 5, device: str = "auto", method: str = "dho",
              channels_last: bool = False) -> dict[str, Any]:
    """Images/s of forward + loss + backward + AdamW step on synthetic data (both halves: 2 * batch_half)."""
    from ..losses import method_loss
    from ..models import create_student
    from ..teachers import resolve_device

    dev = resolve_device(device)
    use_amp = {"auto": "bf16" if dev.type == "cuda" else "off"}.get(amp, amp)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(use_amp)
    torch.manual_seed(0)
    student = create_student(arch, num_classes, method, input_size=image_size).to(dev)
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, foreach=dev.type == "cuda")
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp == "fp16")
    n = 2 * batch_half
    x = torch.randn(n, 3, image_size, image_size, device=dev)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_half,), device=dev)
    t = torch.randn(n, num_classes, device=dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            heads = student(x)
        out_l = {k: v[:batch_half] for k, v in heads.items()}
        out_u = {k: v[batch_half:] for k, v in heads.items()}
        loss = method_loss(method, out_l, y, t[:batch_half], out_u, t[batch_half:]).total
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    student.train()
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    secs = time.perf_counter() - t0
    return {
        "arch": arch, "image_size": image_size, "batch": n, "amp": use_amp, "steps": steps, "seconds": secs,
        "images_per_s": n * steps / secs, "s_per_step": secs / steps, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "params": sum(p.numel() for p in student.parameters()), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "load_average_1m": os.getloadavg()[0],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="Bare forward/backward/step loop of a student (no data pipeline).")
    ap.add_argument("--arch", required=True, help="Student arch, as distill train --student.")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64, help="Images per half (labeled = unlabeled), as distill train.")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--method", default="dho")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="Also write the result to this file.")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = bare_loop(args.arch, args.image_size, args.batch_size, args.num_classes, args.amp, args.steps,
                    args.warmup, args.device, args.method)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return res


if __name__ == "__main__":
    main()
