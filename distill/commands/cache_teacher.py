"""``distill cache-teacher``: teacher logits/embeddings for a whole image set, into a memory-mapped store.

Sharded across ranks (``torchrun --nproc-per-node=8 -m distill cache-teacher ...`` or ``--rank/--world-size``
for jobs launched separately), resumable (finished parts are skipped), merged into one store that
``distill train --set teacher_store=DIR`` and :func:`distill.scale.open_teacher_store` read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..cli_base import console, setup_logging


def cache_teacher_command(
    data: Optional[Path] = typer.Option(None, "--data", help="Image folder (ImageFolder or any layout) or a .tar/.tar.gz of one."),
    shards: Optional[str] = typer.Option(None, "--shards", help="WebDataset-style shards: a folder, a .tar, a glob or shard-{000000..000099}.tar."),
    subdir: Optional[str] = typer.Option(None, "--subdir", help="Folder inside --data, e.g. train."),
    class_names_file: Optional[Path] = typer.Option(None, "--class-names", help="Class ids, one a line, as training sees them (default: the folders, or shards.json)."),
    prompt_names_file: Optional[Path] = typer.Option(None, "--prompt-names", help="open_clip: the human-readable name of each class (same order) for the prompts, e.g. 'tench' for n01440764."),
    teacher_kind: str = typer.Option("auto", "--teacher-kind", help="auto, cifar_resnet, timm or open_clip."),
    teacher: str = typer.Option("cifar_resnet56", "--teacher", help="Model name (or open_clip config .json)."),
    teacher_weights: Optional[str] = typer.Option(None, "--teacher-weights", help="Weights file or open_clip tag (none: random weights)."),
    templates: str = typer.Option("simple", "--templates", help="single, simple, openai or a template file."),
    output: str = typer.Option("logits", "--output", help="logits or embeddings."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Store directory (default: cache_dir/teacher_stores/<teacher>/<output>)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, or float16 to halve the store."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="DataLoader decode workers per rank."),
    device: str = typer.Option("auto", "--device", help="auto (cuda:$LOCAL_RANK under torchrun), cpu, cuda, mps."),
    amp: str = typer.Option("off", "--amp", help="off, bf16 or fp16 autocast for the teacher (CUDA)."),
    part_size: int = typer.Option(10_000, "--part-size", min=1, help="Images per resumable part (folders)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="First N images (folders) or N shards."),
    rank: Optional[int] = typer.Option(None, "--rank", min=0, help="This process's rank (default: $RANK or 0)."),
    world_size: Optional[int] = typer.Option(None, "--world-size", min=1, help="Number of ranks (default: $WORLD_SIZE or 1)."),
    wait: Optional[bool] = typer.Option(None, "--wait/--no-wait", help="Wait for all ranks, then merge (default: rank 0 under torchrun)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Default: $DISTILL_CACHE_DIR or ~/.cache/distill."),
    no_progress: bool = typer.Option(False, "--no-progress"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Compute teacher outputs for every image of a folder or of shards into a memory-mapped store."""
    setup_logging()
    from pydantic import ValidationError

    from ..errors import ConfigError, DataError
    from ..scale.cache_teacher import cache_teacher, default_store_path, folder_image_set, shard_image_set
    from ..teachers import TeacherConfig, create_teacher, read_class_names

    if (data is None) == (shards is None):
        raise ConfigError("give exactly one of --data DIR_OR_ARCHIVE and --shards SHARDS")
    names = read_class_names(class_names_file) if class_names_file else None
    if data is not None:
        image_set = folder_image_set(data, part_size=part_size, subdir=subdir, class_names=names, limit=limit,
                                     cache_dir=cache_dir)
    else:
        image_set = shard_image_set(shards, class_names=names, limit=limit)  # type: ignore[arg-type]
    if not image_set.class_names:
        raise DataError("no class names: the images are not in class folders and the shards have none; "
                        "pass --class-names FILE (the teacher's output classes)")
    try:
        # The store is keyed by the dataset's class ids (what training compares against); prompt names only
        # change the text the teacher reads.
        tcfg = TeacherConfig(kind=teacher_kind, name=teacher, weights=teacher_weights, templates=templates,  # type: ignore[arg-type]
                             device=device, batch_size=batch_size, class_names_file=prompt_names_file)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"invalid teacher option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    import torch

    torch.manual_seed(0)  # a random-weight teacher (benchmarks) must be the same on every rank
    model = create_teacher(tcfg, image_set.class_names)
    store = out or default_store_path(model, output, cache_dir)
    report = cache_teacher(model, image_set, store, output=output, dtype=dtype, batch_size=batch_size,
                           device=device, num_workers=num_workers, amp=amp, rank=rank, world_size=world_size,
                           wait=wait, progress=not no_progress)
    ips = report.images_per_s
    console.print(f"rank {report.rank}/{report.world_size}: {report.parts_computed} parts computed, "
                  f"{report.parts_done_before} already done (of {report.parts_mine} mine, {report.parts_total} total); "
                  f"{report.images_computed} images ({'-' if ips is None else f'{ips:.1f}'} img/s in the teacher), "
                  f"{report.images_skipped} unreadable skipped; "
                  + (f"store merged: {report.rows} rows" if report.merged else
                     f"store complete: {report.rows} rows" if report.rows is not None else "store not merged yet"))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(str(store))


def register(app: typer.Typer) -> None:
    app.command("cache-teacher")(cache_teacher_command)
