"""Dataset roots: a directory is used as is; a tar archive is extracted once into the cache and reused.

Extraction is atomic (into a temporary folder, then one ``rename``), keyed by the archive's path, size and
mtime, and refuses members that would land outside the target (absolute paths, ``..``, links, devices).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import DataError
from .config import default_cache_dir

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def subfolders(path: Path) -> list[Path]:
    """Sub-directories of ``path``, sorted, hidden ones (``.name``) left out: the one folder rule, as torchvision's
    ImageFolder has it, for class folders everywhere (training, export verification, benchmarks)."""
    return sorted(d for d in Path(path).iterdir() if d.is_dir() and not d.name.startswith("."))


def list_class_folders(root: Path) -> list[str]:
    """Class names of an ImageFolder = its sorted, non-hidden sub-directory names."""
    try:
        return [d.name for d in subfolders(root)]
    except OSError as e:
        raise DataError(f"cannot read dataset folder {root}: {e.strerror or e}") from None


def labeled_images(root: str | Path, limit_per_class: int | None = None) -> list[tuple[Path, str]]:
    """``(image, class folder name)`` for the images below each class folder (recursive, sorted), at most
    ``limit_per_class`` per class; class folders without images contribute nothing."""
    out: list[tuple[Path, str]] = []
    for name in list_class_folders(Path(root)):
        out.extend((p, name) for p in find_images(Path(root) / name)[:limit_per_class])
    return out


def find_images(root: Path) -> list[Path]:
    """Image files anywhere under ``root``, sorted (what export verification and benchmarks read)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


def require_images(directory: str | Path, error: type[Exception] = DataError, what: str = "image folder") -> list[Path]:
    """:func:`find_images`, where a missing or image-less directory is an ``error`` (each caller's own type);
    ``what`` names the folder's role in the message."""
    d = Path(directory)
    if not d.is_dir():
        raise error(f"{what} not found: {d}")
    files = find_images(d)
    if not files:
        raise error(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {what} {d}")
    return files


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def is_image_folder(path: Path) -> bool:
    """True when at least one sub-directory of ``path`` holds image files directly (a class folder)."""
    try:
        subdirs = subfolders(path)
    except OSError:
        return False
    for d in subdirs:
        try:
            if any(is_image_file(f) for f in d.iterdir() if f.is_file()):
                return True
        except OSError:
            continue
    return False


def _archive_key(path: Path) -> str:
    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` resolves to a place inside ``root`` (no ``..`` or link escapes)."""
    return path.resolve().is_relative_to(root.resolve())


def _safe_members(tf: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Regular files and directories whose resolved target stays inside ``dest``; anything else is skipped."""
    dest = dest.resolve()
    keep: list[tarfile.TarInfo] = []
    for m in tf.getmembers():
        if not (m.isfile() or m.isdir()):
            log.warning("skipping archive member %s (not a regular file)", m.name)
            continue
        if m.name.startswith(("/", "\\")) or not _inside(dest, dest / m.name):
            log.warning("skipping archive member %s (outside the extraction folder)", m.name)
            continue
        keep.append(m)
    return keep


def extract_archive(archive: Path, cache_dir: Path | None = None) -> Path:
    """Extract ``archive`` into ``cache_dir/extracted/<name>-<key>`` once; later calls return the same folder."""
    archive = Path(archive).expanduser()
    cache_dir = Path(cache_dir or default_cache_dir()).expanduser()
    stem = archive.name
    for suf in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    dest = cache_dir / "extracted" / f"{stem}-{_archive_key(archive)}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(archive) as tf:
            members = _safe_members(tf, tmp)
            tf.extractall(tmp, members=members, filter="data")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not a lost race with another process: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot extract archive {archive}: {e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("extracted %s into %s", archive, dest)
    return dest


def resolve_dataset_root(path: str | Path, subdir: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The ImageFolder directory behind ``path`` (a directory or an archive of one).

    A root whose only dataset folder is e.g. ``train/`` is descended into; with several (``train/`` and
    ``validation/``) ``subdir`` picks one, ``train`` is taken when present, and otherwise it is an error.
    """
    path = Path(path).expanduser()
    base = _as_directory(path, cache_dir, "dataset")
    if subdir:
        sub = base / subdir
        if not sub.is_dir():
            have = list_class_folders(base)
            raise DataError(f"no folder {subdir!r} in {path} (it has: {', '.join(have) or 'no folders'})")
        base = sub
    return _descend(base, path)


def resolve_images_arg(path: Path | None) -> Path | None:
    """A CLI's image-folder option: a directory as given (any layout, flat folders too); an archive (.tar/.tar.gz,
    as train and eval take) extracted once into the cache and descended into its image folder (CIFAR-10's train/)."""
    if path is None or not path.is_file():
        return path
    return resolve_dataset_root(path)


def _descend(base: Path, shown: Path) -> Path:
    for _ in range(3):  # e.g. archive/<name>/train/<class>/<img>
        if is_image_folder(base):
            return base
        children = subfolders(base)
        folders = [d for d in children if is_image_folder(d)]
        if len(folders) == 1:
            base = folders[0]
            continue
        if len(folders) > 1:
            names = [d.name for d in folders]
            if "train" in names:
                log.info("using %s/train (also found: %s; pick another with subdir)", shown, ", ".join(names))
                return base / "train"
            raise DataError(f"{shown} holds several datasets ({', '.join(names)}); choose one with --subdir")
        if len(children) == 1:
            base = children[0]
            continue
        break
    if is_image_folder(base):
        return base
    raise DataError(f"no class folders with images found in {shown} (expected root/<class>/<image>)")


def resolve_image_dir(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A folder (or archive) of images in any layout, e.g. the extra unlabeled pool: no class folders needed."""
    return _as_directory(Path(path).expanduser(), cache_dir, "image folder")


def _as_directory(path: Path, cache_dir: str | Path | None, what: str) -> Path:
    """``path`` itself when it is a directory, the extracted copy when it is an archive; ``what`` names it in errors."""
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if path.is_file():
        if not is_archive(path):
            raise DataError(f"{what} {path} is neither a directory nor a .tar/.tar.gz/.tgz archive")
        return extract_archive(path, Path(cache_dir) if cache_dir else None)
    return path


def extract_subset(archive: str | Path, dest: str | Path, per_class: int, prefix: str = "train") -> Path:
    """Extract the first ``per_class`` images of every class folder under ``prefix`` from an ImageFolder archive.

    Streams the archive once, for benchmark inputs and test fixtures that need a few
    real images per class rather than the whole extracted data set.
    """
    dest = Path(dest)
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tf:
        for m in tf:
            parts = Path(m.name).parts
            if not m.isfile() or prefix not in parts or len(parts) != parts.index(prefix) + 3 or not is_image_file(Path(m.name)):
                continue
            cls = parts[parts.index(prefix) + 1]
            if counts.get(cls, 0) >= per_class:
                continue
            out = dest / cls / parts[-1]
            if not _inside(dest, out):
                log.warning("skipping archive member %s (outside the extraction folder)", m.name)
                continue
            counts[cls] = counts.get(cls, 0) + 1
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tf.extractfile(m).read())  # type: ignore[union-attr]
    if not counts:
        raise DataError(f"no images under {prefix}/<class>/ in {archive}")
    return dest

