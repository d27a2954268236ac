"""``distill make-shards``: write an ImageFolder (or an archive of one, or any folder of unlabeled images) as
WebDataset-style shards ``shard-000000.tar`` ... plus ``shards.json`` (see :mod:`distill.data.shards`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..cli_base import console


def make_shards_command(
    data: Path = typer.Option(..., "--data", help="ImageFolder directory (or .tar/.tar.gz of one); with --unlabeled any folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Empty output folder for the shards."),
    subdir: Optional[str] = typer.Option(None, "--subdir", help="Folder inside --data, e.g. train."),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Images per shard."),
    unlabeled: bool = typer.Option(False, "--unlabeled", help="Images in any layout, written without labels."),
    shuffle: bool = typer.Option(True, "--shuffle/--no-shuffle", help="Shuffle images across shards (seeded)."),
    seed: int = typer.Option(0, "--seed"),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Stratified cap (labeled) or first N."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Decode every image once; unreadable ones are skipped."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="Threads for verification."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Default: $DISTILL_CACHE_DIR or ~/.cache/distill."),
    as_json: bool = typer.Option(False, "--json", help="Print shards.json on stdout."),
) -> None:
    """Write images as WebDataset-style tar shards for streaming (ShardDataset, cache-teacher --shards)."""
    from ..data import (default_cache_dir, list_image_folder, list_unlabeled_folder, resolve_dataset_root,
                        resolve_image_dir, stratified_subset, verify_samples)
    from ..data.shards import write_shards

    cache = cache_dir or default_cache_dir()
    if unlabeled:
        root = resolve_image_dir(data, cache)
        names: list[str] = []
        samples = sorted(list_unlabeled_folder(root), key=lambda s: s.path)
        if max_images:
            samples = samples[:max_images]
    else:
        root = resolve_dataset_root(data, subdir, cache)
        names, samples = list_image_folder(root)
        if max_images:
            samples = stratified_subset(samples, names, max_images, seed)
    skipped = 0
    if verify:
        samples, bad = verify_samples(samples, root, cache, num_workers=num_workers)
        skipped = len(bad)
    index = write_shards(samples, out, names, root=root, shard_size=shard_size, shuffle=shuffle, seed=seed)
    console.print(f"wrote {index['num_images']} images into {len(index['shards'])} shards in {out}"
                  f" ({skipped} unreadable skipped)")
    typer.echo(json.dumps(index, indent=2) if as_json else str(out))


def register(app: typer.Typer) -> None:
    app.command("make-shards")(make_shards_command)
