"""Issue 14 targets, measured side by side in one run on one server (docs/results.md "Issue 14"):

1. the real ``tritonclient.http`` client (BYTES images, classification extension) against ``/v1/classify`` on N
   real photos: identical top-5 labels, scores within 1e-6;
2. v2 ``infer`` with one BYTES image vs ``/v1/classify`` with the same image, alternating request by request:
   median server-side time (``parameters.total_ms`` / ``timing.total_ms``) and median client round trip.

    PYTHONPATH=. python scripts/v2_parity.py --model model.onnx --images DIR [--n 200] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import httpx
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder of real photos (searched recursively)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3, help="timing passes over the images")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = ap.parse_args()

    import onnxruntime
    import tritonclient
    import tritonclient.http as httpclient

    from export.runtime import load_artifact
    from serve.app import create_app
    from serve.loopback import serve_in_thread
    from serve.settings import ServeSettings

    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
    images = [p.read_bytes() for p in paths]
    art = load_artifact(args.model, intra_op_threads=args.threads, allow_spinning=False)
    settings = ServeSettings(model=args.model, warmup=3, access_log=False, max_images_per_request=64,
                             intra_op_threads=args.threads)
    app = create_app(settings, artifact=art)
    with serve_in_thread(app) as url, httpx.Client(base_url=f"http://{url}", timeout=60) as http:
        client = httpclient.InferenceServerClient(url=url)
        name = client.get_model_metadata(art.meta.model_name or args.model.stem)["name"]
        # 1. parity, 8 images a request
        worst, labels_equal, compared = 0.0, True, 0
        for i in range(0, len(images), 8):
            chunk = images[i:i + 8]
            inp = httpclient.InferInput("image", [len(chunk)], "BYTES")
            inp.set_data_from_numpy(np.array(chunk, dtype=np.object_))
            res = client.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("probs", class_count=5)])
            r = http.post("/v1/classify", params={"top_k": 5},
                          files=[("files", (f"{j}.jpg", b, "image/jpeg")) for j, b in enumerate(chunk)])
            r.raise_for_status()
            for row, ref in zip(res.as_numpy("probs"), r.json()["results"]):
                mine = [s.decode().split(":", 2) for s in row]
                labels_equal &= [m[2] for m in mine] == [p["label"] for p in ref["predictions"]]
                worst = max(worst, max(abs(float(m[0]) - p["score"]) for m, p in zip(mine, ref["predictions"])))
                compared += 1
        # 2. timing, alternating v2 / v1 request by request on the same image
        v1_server, v2_server, v1_rt, v2_rt = [], [], [], []
        for _ in range(args.reps):
            for b in images:
                inp = httpclient.InferInput("image", [1], "BYTES")
                inp.set_data_from_numpy(np.array([b], dtype=np.object_))
                t0 = time.perf_counter()
                res = client.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("probs", class_count=5)])
                v2_rt.append((time.perf_counter() - t0) * 1e3)
                v2_server.append(res.get_response()["parameters"]["total_ms"])
                t0 = time.perf_counter()
                r = http.post("/v1/classify", params={"top_k": 5}, files={"file": ("a.jpg", b, "image/jpeg")})
                v1_rt.append((time.perf_counter() - t0) * 1e3)
                v1_server.append(r.json()["timing"]["total_ms"])
        client.close()
    med = statistics.median
    flags = set(Path("/proc/cpuinfo").read_text().split("flags\t\t:", 1)[1].split("\n", 1)[0].split()) \
        if Path("/proc/cpuinfo").exists() else set()
    model_name = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                       if ln.startswith("model name")), platform.processor())
    out = {
        "images": len(images), "compared": compared, "top5_labels_identical": bool(labels_equal),
        "max_abs_score_diff": worst,
        "median_server_ms": {"v2_bytes": round(med(v2_server), 3), "v1_classify": round(med(v1_server), 3),
                             "ratio_v2_over_v1": round(med(v2_server) / med(v1_server), 3)},
        "median_roundtrip_ms": {"v2_bytes_tritonclient": round(med(v2_rt), 3), "v1_classify_httpx": round(med(v1_rt), 3)},
        "requests_timed_each": len(v2_server),
        "cpu": model_name, "isa": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                                    "amx_tile", "amx_int8"}),
        "onnxruntime": onnxruntime.__version__, "tritonclient": tritonclient.__version__ if hasattr(tritonclient, "__version__") else "",
        "load_average": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else [],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
