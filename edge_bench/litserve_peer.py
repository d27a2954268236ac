"""A LitServe server over the same artifact and preprocessing as ``distill serve``: the peer that
``distill bench load --peer litserve`` measures side by side with ours (same photos, same client, interleaved).

    python -m edge_bench.litserve_peer --model model.onnx --port 8001 --max-batch 16 --max-wait-ms 5 --threads 1

``POST /v1/classify`` takes a multipart ``file`` part like ours and answers top-5 JSON. Decoding and preprocessing
are :meth:`export.runtime.Artifact.prepare` (the one implementation, DCT scaling included), inference is
``Artifact.run`` on LitServe's dynamic batches, so the comparison measures the servers, not the models.
LitServe is an optional dependency (the ``bench`` extra); without it the command says so and exits 2.
"""

import argparse
import sys
from pathlib import Path
from typing import Any


try:
    import litserve as ls
except ImportError:  # optional: main() says so
    ls = None


if ls is not None:
    import numpy as np
    from fastapi import Request

    class ArtifactAPI(ls.LitAPI):  # module level: LitServe pickles it into its worker process
        """decode_request = Artifact.prepare, predict = Artifact.run on LitServe's batches."""

        model: str = ""
        threads: int | None = None

        def setup(self, device: str) -> None:
            from export.runtime import load_artifact

            self.art = load_artifact(self.model, intra_op_threads=self.threads, allow_spinning=False)

        def decode_request(self, request: Request) -> np.ndarray:  # the form, parsed by LitServe
            part = request["file"]
            data = part.file.read() if hasattr(part, "file") else bytes(part)
            return self.art.prepare([data])[0]

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.art.run(x if x.ndim == len(self.art.input_shape) + 1 else x[None])

        def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
            return list(output)

        def encode_response(self, probs: np.ndarray) -> dict[str, Any]:
            top = self.art.top_k(np.asarray(probs)[None], 5)[0]
            return {"results": [{"predictions": [{"index": p.index, "label": p.label, "score": p.score}
                                                 for p in top]}]}


def create_peer(model: Path, max_batch: int, max_wait_ms: float, threads: int | None) -> Any:
    api = ArtifactAPI(max_batch_size=max_batch, batch_timeout=max_wait_ms / 1000.0, api_path="/v1/classify")
    api.model, api.threads = str(model), threads
    return ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, healthcheck_path="/health/ready")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_bench.litserve_peer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if ls is None:
        print("error: the LitServe peer needs litserve (pip install 'distill-toolchain[bench]')", file=sys.stderr)
        return 2
    if not args.model.is_file():
        print(f"error: artifact not found: {args.model}", file=sys.stderr)
        return 2
    server = create_peer(args.model, args.max_batch, args.max_wait_ms, args.threads)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False,
               num_api_servers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
