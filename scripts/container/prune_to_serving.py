"""Prune a copy of the source tree to the serving code before the image installs it.

``serve/`` is kept whole; of ``distill/`` and ``export/`` only the files listed in ``serving_files.txt`` (what
serve imports) stay; ``edge_bench/`` and anything else go. Run by the Dockerfile's builder stage on ``/src``::

    python scripts/container/prune_to_serving.py /src
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serving_files(listing: Path = HERE / "serving_files.txt") -> set[str]:
    return {ln.strip() for ln in listing.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def prune(root: Path, keep: set[str]) -> list[str]:
    """Delete the product files under ``root`` that serving does not need; returns what was removed."""
    removed = []
    for pkg in ("distill", "export"):
        for path in sorted((root / pkg).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and path.suffix == ".py" and rel not in keep:
                path.unlink()
                removed.append(rel)
        for d in sorted((p for p in (root / pkg).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(d.rglob("*.py")):
                shutil.rmtree(d)
    for extra in ("edge_bench", "tests", "scripts/experiments"):
        if (root / extra).exists():
            shutil.rmtree(root / extra)
            removed.append(extra + "/")
    missing = sorted(f for f in keep if not (root / f).is_file())
    if missing:
        raise SystemExit(f"error: serving files missing from {root}: {', '.join(missing)}")
    return removed


if __name__ == "__main__":
    removed = prune(Path(sys.argv[1]), serving_files())
    print(f"serving code only: removed {len(removed)} training/export/benchmark files")
