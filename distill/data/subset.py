"""``python -m distill.data.subset ARCHIVE DEST PER_CLASS [PREFIX]``: a few real images per class from an archive
(benchmark scripts use it; see :func:`distill.data.archive.extract_subset`)."""

from __future__ import annotations

import sys

from .archive import extract_subset


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or not argv[2].isdigit():
        print("usage: python -m distill.data.subset ARCHIVE DEST PER_CLASS [PREFIX]", file=sys.stderr)
        return 2
    dest = extract_subset(argv[0], argv[1], int(argv[2]), *(argv[3:4] or ["train"]))
    print(f"extracted {sum(1 for p in dest.rglob('*') if p.is_file())} images to {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
