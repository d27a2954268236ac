"""Distributed data parallel training with ``torchrun``: the few pieces the training loop needs.

``torchrun`` (or the Kubeflow operator / Slurm through it) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous; :func:`init_distributed` joins the process group (NCCL on CUDA, gloo on CPU) and picks
``cuda:$LOCAL_RANK``. Without ``WORLD_SIZE > 1`` everything here is a no-op, so the single-process path is the
same code.

Global batch semantics: ``batch_labeled`` / ``batch_unlabeled`` in the config are GLOBAL sizes. Every rank walks
the same seeded stream of (image index, augmentation seed) positions and keeps its own contiguous slice of each
global batch (:class:`RankSliceSampler`), so the union of the ranks' batches is exactly the single-process batch,
augmentations included; DDP averages the per-rank mean-loss gradients, which equals the gradient of the global
mean loss. A checkpoint therefore holds only global state (step, model, optimiser, RNG), and a run resumes on any
number of processes that divides the global batch.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import Sampler

from ..errors import ConfigError


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher says about this process: the one place ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are read."""

    rank: int
    world_size: int
    local_rank: int | None      # None when the launcher did not set LOCAL_RANK
    by_torchrun: bool           # torchrun (elastic) started this process


def launch_env(rank: int | None = None, world_size: int | None = None) -> LaunchEnv:
    """This process's rank and world size: explicit values win over torchrun's environment, default (0, 1)."""
    env = os.environ
    r = rank if rank is not None else int(env.get("RANK", 0))
    w = world_size if world_size is not None else int(env.get("WORLD_SIZE", 1))
    if w < 1 or not 0 <= r < w:
        raise ConfigError(f"rank {r} is not within world size {w}")
    local = int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None
    return LaunchEnv(r, w, local, "TORCHELASTIC_RUN_ID" in env or "LOCAL_WORLD_SIZE" in env)


@dataclass
class DistContext:
    """Where this process stands: rank, world size, its device (``None``: let the caller pick)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def wait_for_main(self) -> None:
        """Ranks other than 0 wait here until rank 0 calls :meth:`release_others` (after filling a cache)."""
        if not self.is_main:
            self.barrier()

    def release_others(self) -> None:
        if self.is_main:
            self.barrier()

    @contextlib.contextmanager
    def rank0_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (filling caches: image scans, teacher logits); the others then hit them."""
        self.wait_for_main()
        yield
        self.release_others()

    def check_divisible(self, **global_batches: int) -> None:
        """Batch sizes are global: each must split evenly over the processes."""
        for name, size in global_batches.items():
            if size % self.world_size:
                raise ConfigError(f"{name} = {size} is a global batch size and must be divisible by the "
                                  f"{self.world_size} processes")

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DDP around ``model`` (BatchNorm -> SyncBatchNorm on CUDA, so batch statistics are the global batch's).

        PyTorch's SyncBatchNorm runs on GPUs only: on CPU (gloo) BatchNorm statistics stay per rank, so a BN
        model's 2-process CPU run differs slightly from its 1-process run (a BN-free model matches exactly)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DDP(model, device_ids=[device.index], output_device=device.index)
        return DDP(model)

    def mean_terms(self, terms: Any) -> Any:
        """Loss terms (a NamedTuple of scalar tensors or None) averaged over ranks, detached: for logging."""
        fields = [k for k, v in terms._asdict().items() if v is not None]
        vals = torch.stack([getattr(terms, k).detach().float() for k in fields])
        if self.enabled:
            torch.distributed.all_reduce(vals)
            vals /= self.world_size
        return terms._replace(**dict(zip(fields, vals.unbind())))

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(device_name: str = "auto", timeout_minutes: float = 120) -> DistContext:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``; otherwise a single-process context.

    ``timeout_minutes`` bounds how long ranks wait in a collective while rank 0 validates or checkpoints.
    """
    env = launch_env()
    if env.world_size <= 1:
        return DistContext()
    world, rank, local = env.world_size, env.rank, env.local_rank or 0
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda:")
    if use_cuda:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                                             **({"device_id": device} if backend == "nccl" else {}))
    return DistContext(rank, world, local, device, backend)


class RankSliceSampler(Sampler):
    """This rank's contiguous slice of every global batch of ``inner`` (a sampler of the single-process order)."""

    def __init__(self, inner: Sampler, global_batch: int, rank: int, world_size: int) -> None:
        if global_batch % world_size:
            raise ConfigError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.inner, self.global_batch, self.rank, self.world_size = inner, global_batch, rank, world_size

    def __iter__(self) -> Iterator[Any]:
        per = self.global_batch // self.world_size
        lo = self.rank * per
        it = iter(self.inner)
        while True:
            chunk = list(itertools.islice(it, self.global_batch))
            if len(chunk) < self.global_batch:
                return
            yield from chunk[lo:lo + per]


class NullLog:
    """``MetricsLog`` stand-in on ranks other than 0: only rank 0 writes ``metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def write(self, event: str, **fields: Any) -> None:
        pass

    def read(self) -> list[dict[str, Any]]:
        return []

    def truncate_after(self, step: int) -> None:
        pass


__all__ = ["DistContext", "NullLog", "RankSliceSampler", "init_distributed"]
