"""What decoding at the model's size (DCT scaling, :mod:`distill.preprocess`) costs and saves: ``distill bench decode``.

On labeled photos (``DIR/<class>/<image>``, e.g. the clothing validation split) at their own size and upscaled to
12 MP at run time, with one artifact:

* accuracy: top-1 with the fast (DCT-scaled) decode against the full decode, and how often the two agree;
* speed: server-side preprocessing (``preprocess_images`` of one encoded photo, what ``Artifact.prepare`` runs)
  fast against full, timed alternately photo by photo (side by side: the same background load), medians and ratio;
* the training loader: images/s of the training transform on the 12 MP photos, decoding to the smallest scale that
  keeps ``DCT_MARGIN`` times the random crop's full resolution, against a full decode (needs torch; skipped without it).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from distill.errors import DataError

from .accuracy import labeled_images
from .loadtest import upscale_to_phone


def _labeled(data: Path, class_names: list[str], limit_per_class: Optional[int]) -> tuple[list[Path], np.ndarray]:
    pairs = labeled_images(data, limit_per_class)
    unknown = sorted({c for _, c in pairs} - set(class_names))
    if unknown:
        raise DataError(f"class folders {unknown} are not classes of the model ({', '.join(class_names)})")
    return [p for p, _ in pairs], np.array([class_names.index(c) for _, c in pairs])


def _alternate(fast: Callable[[], Any], full: Callable[[], Any], out: dict[str, list[float]]) -> tuple[Any, Any]:
    t0 = time.perf_counter()
    a = fast()
    t1 = time.perf_counter()
    b = full()
    out["fast"].append(t1 - t0)
    out["full"].append(time.perf_counter() - t1)
    return a, b


def decode_bench(model: Path, data: Path, *, limit_per_class: Optional[int] = None, max_12mp: int = 60,
                 train_images: int = 20) -> dict[str, Any]:
    from distill.preprocess import preprocess_images
    from export.runtime import load_artifact

    art = load_artifact(model)
    spec, kind = art.meta.preprocess, art.meta.input_kind
    files, labels = _labeled(data, list(art.meta.class_names), limit_per_class)
    encoded = {"native": [f.read_bytes() for f in files]}
    step = max(1, len(files) // max_12mp) if max_12mp else 0
    idx12 = list(range(0, len(files), step))[:max_12mp] if max_12mp else []
    encoded["12mp"] = [upscale_to_phone(encoded["native"][i]) for i in idx12]
    label_sets = {"native": labels, "12mp": labels[idx12]}
    out: dict[str, Any] = {"model": str(model), "data": str(data), "preprocess": spec.model_dump(mode="json"),
                           "sets": {}}
    for name, blobs in encoded.items():
        if not blobs:
            continue
        times: dict[str, list[float]] = {"fast": [], "full": []}
        xf, xr = [], []
        for b in blobs:
            a, r = _alternate(lambda: preprocess_images([b], spec, output=kind),
                              lambda: preprocess_images([b], spec, output=kind, dct_scaling=False), times)
            xf.append(a)
            xr.append(r)
        pf = np.concatenate([art.run(np.concatenate(xf[i:i + 32])) for i in range(0, len(xf), 32)]).argmax(1)
        pr = np.concatenate([art.run(np.concatenate(xr[i:i + 32])) for i in range(0, len(xr), 32)]).argmax(1)
        y = label_sets[name]
        fast_ms, full_ms = statistics.median(times["fast"]) * 1e3, statistics.median(times["full"]) * 1e3
        out["sets"][name] = {
            "images": len(blobs), "top1_fast": float((pf == y).mean()), "top1_full": float((pr == y).mean()),
            "top1_delta_points": float(((pf == y).mean() - (pr == y).mean()) * 100),
            "agreement": float((pf == pr).mean()),
            "preprocess_fast_ms_p50": round(fast_ms, 3), "preprocess_full_ms_p50": round(full_ms, 3),
            "speedup": round(full_ms / fast_ms, 2) if fast_ms > 0 else None,
        }
    out["train_loader"] = _train_loader(spec, encoded["12mp"][:train_images])
    return out


def _train_loader(spec: Any, blobs: list[bytes]) -> dict[str, Any]:
    """Images/s of the training transform on 12 MP photos: scaled decode against full decode, alternately."""
    if not blobs:
        return {"status": "skipped", "reason": "no 12 MP photos"}
    try:
        from distill.data.transforms import TrainTransform
    except ImportError as e:  # torch/torchvision not installed (a serving-only environment)
        return {"status": "skipped", "reason": f"needs the training extra: {e}"}
    fast = TrainTransform(spec)
    full = TrainTransform(spec)
    full.decode_side = None  # the transform as it was: every photo decoded in full
    times: dict[str, list[float]] = {"fast": [], "full": []}
    for b in blobs:
        _alternate(lambda: fast(b), lambda: full(b), times)
    f, r = sum(times["fast"]), sum(times["full"])
    return {"status": "ok", "images": len(blobs), "decode_side": fast.decode_side,
            "images_per_s_scaled": round(len(blobs) / f, 2), "images_per_s_full": round(len(blobs) / r, 2),
            "speedup": round(r / f, 2)}
