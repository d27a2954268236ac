"""``distill bench`` (also ``python -m edge_bench``): latency, throughput and accuracy of models on this device.

Commands
--------
``run``       benchmark models: ``--model`` artifacts (``.onnx``, ``.engine``, OpenVINO ``.xml``; ``LABEL=PATH`` names a row) and
              ``--checkpoint`` training checkpoints (PyTorch eager and ``torch.compile``, best recorded DHO blend applied),
              on ``--backends`` (torch-cpu, torch-cuda, ort-cpu, ort-cuda, ort-tensorrt, tensorrt, ov-cpu; default
              all, unavailable ones are listed as skipped with the reason; ``auto``: all available ones, and the
              fastest within 0.3 points of fp32 is named per model and precision) and ``--scenarios`` (single-stream, offline,
              server). ``--data DIR`` (``DIR/<class>/<image>``) or ``--split CKPT[:val|:test]`` (the split a
              checkpoint records) adds top-1, mean per-class accuracy, a per-class table and a confusion matrix
              per model (``results_confusion_<model>_<backend>_<variant>.png``); ``--images DIR`` gives the real images
              used as inputs. Warm-up (``--warmup``), ``--count`` or ``--duration`` per scenario, and a hard
              ``--max-seconds`` for the whole run (what does not fit is reported as skipped). ``--emulate rpi5|orin-nano`` limits
              threads and pins cores (labelled as emulation everywhere). Writes ``results.{json,csv,md,png}``
              to ``--out`` and prints a table.
``http``      end-to-end latency of a running server: multipart POSTs of real images to ``--url`` (``/v1/classify``).
``load``      loopback load test of servers it starts side by side (``distill serve`` configurations and the
              LitServe peer, ``--peer litserve``) over the same artifact: photos at their own size and upscaled
              to 12 MP, concurrency levels, interleaved rounds; server-side preprocess vs inference time, peak RSS.
              Only the server being measured runs (the others are paused); ratios are to ``--reference``
              (default: the peer, else the first server).
``abtest``    ``load`` with two ``distill serve`` configurations (default: batching on vs off) and 5 rounds.
``decode``    fast (DCT-scaled) against full decode on labeled photos, native and 12 MP: top-1, agreement,
              server-side preprocessing time side by side, training-loader images/s.
``compare``   ``compare A.json B.json``: per model/backend/scenario deltas and whether each is outside the spread.
``merge``     ``merge A.json B.json --out DIR``: one report (table, CSV, markdown, plot) from several runs.
``overhead``  the harness's overhead against a bare timing loop (target < 2%) and repeat-run agreement.
``int8``      int8 variants of an fp32 artifact against it: accuracy and interleaved, paired speed-ups on this CPU.
``backends``  which backends can run here, and why not.
``env``       the environment record stored with every result (JSON on stdout).

Examples::

    distill bench run -m student=student.onnx -m int8=student.int8.onnx -c best.pt \\
        --data val/ --scenarios single-stream,offline --max-seconds 300 --out runs/bench
    distill bench run -m student.onnx --emulate rpi5 --images photos/ --duration 3
    distill bench http --url http://127.0.0.1:8000 --images photos/ --concurrency 8 --duration 20
    distill bench load --model model.onnx --images photos/ --sizes native,12mp --peer litserve --rounds 2
    distill bench abtest --model model.onnx --images photos/ --concurrency 1,8,32
    distill bench compare runs/a/results.json runs/b/results.json
    distill bench overhead --model student.onnx
    distill bench run -c best.pt --split best.pt:val --backends torch-cpu --torch-modes eager,compile

Exit status: 0, 1 when a (model, backend) combination failed at run time (its row says why), 2 for bad input
(one ``error:`` line). Latency spreads: see :mod:`edge_bench.stats`; scenarios: :mod:`edge_bench.scenarios`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from distill.cli_base import DistillTyper, console
from distill.errors import ConfigError, DistillError

app = DistillTyper(help="Benchmark models on this device: latency, throughput, accuracy, memory (MLPerf scenarios).")


def _model_arg(item: str, *, kind: str) -> tuple[str, Path]:
    label, sep, path = item.partition("=")
    if not sep:
        label, path = "", item
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{kind} not found: {p}")
    if p.is_dir():
        raise ConfigError(f"{kind} path {p} is a directory (pass the file)")
    return (label or p.stem), p


def _ints(value: str, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {value!r}") from None
    if not out or any(v <= 0 for v in out):
        raise ConfigError(f"{what} must be positive integers, got {value!r}")
    return out


def _scenarios(value: str) -> list[str]:
    from .backends import parse_list
    from .scenarios import SCENARIOS

    aliases = {"singlestream": "single-stream", "single_stream": "single-stream", "offline": "offline",
               "server": "server"}
    norm = ",".join(aliases.get(s.strip().lower(), s.strip()) for s in value.split(","))
    return parse_list(norm, SCENARIOS, "scenario")


def _positive(value: float | int | None, name: str) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")


@app.command("run")
def run_cmd(
    model: List[str] = typer.Option([], "--model", "-m", help="Artifact (.onnx/.engine), optionally LABEL=PATH. Repeatable."),
    checkpoint: List[str] = typer.Option([], "--checkpoint", "-c", help="Training checkpoint (PyTorch), optionally LABEL=PATH. Repeatable."),
    backends: str = typer.Option("all", help="Comma-separated: torch-cpu,torch-cuda,ort-cpu,ort-cuda,ort-tensorrt,tensorrt,ov-cpu, 'all', or 'auto' (every backend available here, and per model and precision the fastest within 0.3 points of fp32 is named)."),
    scenarios: str = typer.Option("single-stream,offline", help="Comma-separated: single-stream, offline, server."),
    torch_modes: str = typer.Option("eager,compile", help="For checkpoints: eager, compile."),
    torch_dtypes: str = typer.Option("fp32", help="For checkpoints: fp32, bf16, fp16."),
    data: Optional[Path] = typer.Option(None, help="Labeled directory DIR/<class>/<image> (or a .tar/.tar.gz of one, as train and eval take) for accuracy."),
    split: Optional[str] = typer.Option(None, help="Accuracy on a checkpoint's recorded split instead of --data: CKPT[:val|:test]."),
    images: Optional[Path] = typer.Option(None, help="Real images used as inputs (default: a sample of --data, else synthetic)."),
    max_images: int = typer.Option(64, help="Input images kept in memory and cycled."),
    accuracy_limit: Optional[int] = typer.Option(None, help="At most this many labeled images (same number per class)."),
    emulate: Optional[str] = typer.Option(None, help="Edge-CPU emulation: rpi5 (4 cores) or orin-nano (6 cores)."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads (torch and onnxruntime); default: library default."),
    warmup: int = typer.Option(10, help="Warm-up queries before each scenario."),
    count: Optional[int] = typer.Option(None, help="Queries per scenario (per batch size for offline) instead of --duration."),
    duration: float = typer.Option(5.0, help="Seconds per scenario (offline: shared by the batch sizes)."),
    max_seconds: float = typer.Option(600.0, help="Hard bound on the whole run; what does not fit is reported as skipped."),
    batch_sizes: str = typer.Option("1,8,32,128", help="Offline batch sweep."),
    server_qps: Optional[float] = typer.Option(None, help="Server target QPS (default: 50% load, 0.5/SingleStream mean)."),
    server_bound_ms: Optional[float] = typer.Option(None, help="Server p99 latency bound (default: 10x SingleStream p50)."),
    server_max_batch: int = typer.Option(1, help="Server: the worker batches up to this many waiting queries."),
    seed: int = typer.Option(0, help="Seed of the Poisson arrivals."),
    out: Path = typer.Option(Path("runs/bench"), help="Output directory for results.{json,csv,md,png}."),
    reference: Optional[str] = typer.Option(None, help="Label of the model the others are compared with (e.g. the "
                                            "teacher): accuracy, SingleStream p50 speed-up and size ratio, per backend."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Benchmark artifacts and checkpoints (SingleStream, Offline, Server) with accuracy and memory."""
    from distill.io import check_writable

    from .accuracy import list_images
    from .backends import BACKENDS, TORCH_DTYPES, TORCH_MODES, parse_list
    from .emulate import resolve_emulation
    from .runner import BenchConfig, run_benchmark

    models = [_model_arg(m, kind="model") for m in model] + [_model_arg(c, kind="checkpoint") for c in checkpoint]
    if not models:
        raise ConfigError("nothing to benchmark: pass --model PATH and/or --checkpoint PATH")
    from distill.data.archive import resolve_images_arg

    data = resolve_images_arg(data)  # an archive: extracted once into the cache, like train and eval do
    labels = [lbl for lbl, _ in models]
    dup = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if dup:
        raise ConfigError(f"duplicate model label(s) {', '.join(dup)}: name them with LABEL=PATH")
    if reference is not None and reference not in labels:
        raise ConfigError(f"--reference {reference!r} is not one of the models' labels ({', '.join(labels)})")
    for v, name in ((duration, "--duration"), (max_seconds, "--max-seconds"), (count, "--count"),
                    (max_images, "--max-images"), (server_qps, "--server-qps"), (server_bound_ms, "--server-bound-ms"),
                    (server_max_batch, "--server-max-batch"), (threads, "--threads"), (accuracy_limit, "--accuracy-limit")):
        _positive(v, name)
    if warmup < 0:
        raise ConfigError("--warmup must be >= 0")
    auto = backends.strip() == "auto"
    if auto:
        from .backends import backend_unavailable_reason

        backends = ",".join(b for b in BACKENDS if backend_unavailable_reason(b) is None)
    cfg = BenchConfig(
        models=models, auto=auto,
        backends=parse_list(backends, BACKENDS, "backend"),
        scenarios=_scenarios(scenarios),
        torch_modes=parse_list(torch_modes, TORCH_MODES, "torch mode"),
        torch_dtypes=parse_list(torch_dtypes, TORCH_DTYPES, "torch dtype"),
        data_dir=data, data_split=split, images_dir=images, max_images=max_images, accuracy_limit=accuracy_limit,
        emulation=resolve_emulation(emulate), threads=threads, warmup=warmup, count=count, duration=duration,
        max_seconds=max_seconds, batch_sizes=_ints(batch_sizes, "--batch-sizes"), server_qps=server_qps,
        server_bound_ms=server_bound_ms, server_max_batch=server_max_batch, seed=seed,
    )
    if data:
        from .accuracy import labeled_images

        labeled_images(data)
    if data and split:
        raise ConfigError("pass either --data DIR or --split CKPT[:val|:test], not both")
    if images:
        list_images(images, 1)  # fail now, not after loading models
    check_writable(out / "results.json")
    report = run_benchmark(cfg, log=(lambda s: None) if quiet else (lambda s: console.print(s, highlight=False)))
    if reference is not None:
        report["reference"] = reference
    _finish(report, out)


def _finish(report: dict[str, Any], out: Path) -> None:
    from .report import print_table, write_reports

    paths = write_reports(report, out)
    print_table(report, console)
    if "png" not in paths:
        console.print("[dim]no plot: it needs accuracy (--data DIR) and a batch-1 latency (single-stream)[/]")
    for p in paths.values():
        typer.echo(str(p))
    if any(r.get("status") == "error" for r in report["results"]):
        raise typer.Exit(1)


@app.command("http")
def http_cmd(
    url: str = typer.Option(..., help="Server base URL (http://host:port) or the full /v1/classify URL."),
    images: Path = typer.Option(..., help="Directory of real images to upload."),
    concurrency: int = typer.Option(4, help="Client threads sending requests."),
    images_per_request: int = typer.Option(1, help="Images per request (>1 uses the 'files' field)."),
    warmup: int = typer.Option(5, help="Warm-up requests (not measured)."),
    count: Optional[int] = typer.Option(None, help="Requests to send instead of --duration."),
    duration: float = typer.Option(10.0, help="Seconds of load."),
    max_seconds: float = typer.Option(120.0, help="Hard bound on the whole command."),
    max_images: int = typer.Option(64, help="Images read into memory and cycled."),
    sizes: str = typer.Option("native", help="Photo sets, one run each: native (their own size), 12mp (the first "
                              "8 upscaled to 4032x3024 at run time)."),
    endpoint: str = typer.Option("/v1/classify", help="Path appended to a base URL."),
    out: Path = typer.Option(Path("runs/bench-http"), help="Output directory for results.{json,csv,md}."),
) -> None:
    """End-to-end latency and throughput of a running server (multipart POST of real images)."""
    from distill.io import check_writable

    from ._version import SCHEMA_VERSION, __version__
    from .accuracy import list_images
    from .env import capture_environment, load_average
    from .httpbench import classify_url, run_http
    from .loadtest import photo_sets

    target = classify_url(url, endpoint)
    for v, name in ((concurrency, "--concurrency"), (images_per_request, "--images-per-request"),
                    (count, "--count"), (duration, "--duration"), (max_seconds, "--max-seconds")):
        _positive(v, name)
    files = list_images(images, max_images)
    photos = photo_sets(files, [s.strip() for s in sizes.split(",") if s.strip()])
    check_writable(out / "results.json")
    env = capture_environment()
    rows = []
    for name, payload in photos.items():
        r = run_http(target, payload, concurrency=concurrency, images_per_request=images_per_request,
                     warmup=warmup, count=count, duration=duration, max_seconds=max_seconds, endpoint=endpoint)
        rows.append({"model": target, "path": target, "format": "http", "backend": "http",
                     "variant": f"c{concurrency}-{name}", "photos": name, "scenario": "HTTP",
                     "status": "ok" if r["ok"] else "error",
                     "reason": None if r["ok"] else f"no successful request (codes {r['status_codes']}, errors {r['errors']})",
                     "emulation": None, **r})
        console.print(f"HTTP {name}: {r['ok']}/{r['requests']} ok, {r.get('requests_per_s') or 0:.1f} req/s, "
                      f"server preprocess {r['server_preprocess_ms']} ms, inference {r['server_inference_ms']} ms, "
                      f"codes {r['status_codes']}, errors {r['errors'] or 'none'}", highlight=False)
    env["load_average_end"] = load_average()
    report = {"schema_version": SCHEMA_VERSION, "tool": "edge_bench", "tool_version": __version__,
              "command": "distill bench http", "created": env["timestamp"],
              "inputs": ", ".join(f"{len(v)} {k} photos" for k, v in photos.items()),
              "emulation": None, "environment": env, "config": {"url": target, "concurrency": concurrency},
              "models": [], "results": rows}
    _finish(report, out)


def _load_run(model: Path, images: Path, servers: list[str], peer: Optional[str], sizes: str, concurrency: str,
              requests: int, rounds: int, max_images: int, out: Path, command: str,
              reference: Optional[str] = None) -> None:
    from distill.io import atomic_write_text, check_writable

    from .accuracy import list_images
    from .env import capture_environment, load_average
    from .loadtest import ServerSpec, parse_server, photo_sets, run_load

    levels = list(_ints(concurrency, "--concurrency"))
    _positive(requests, "--requests")
    _positive(rounds, "--rounds")
    specs = [parse_server(s) for s in servers]
    if peer:
        if peer != "litserve":
            raise ConfigError(f"--peer {peer!r}: the only peer is litserve")
        ours = next((s for s in specs if s.kind == "serve"), None)
        peer_args = ours.args if ours else []
        keep = {"--max-batch", "--max-wait-ms", "--threads"}
        pa = [x for i, x in enumerate(peer_args) if x in keep or (i > 0 and peer_args[i - 1] in keep)]
        specs.append(ServerSpec("litserve", "litserve", pa))
    if len({s.name for s in specs}) != len(specs):
        raise ConfigError("server names must differ")
    reference = reference or ("litserve" if peer else specs[0].name)  # ratios are to the peer when there is one
    if reference not in {s.name for s in specs}:
        raise ConfigError(f"--reference {reference!r} is not a server of this run: {', '.join(s.name for s in specs)}")
    files = list_images(images, max_images)
    photos = photo_sets(files, [s.strip() for s in sizes.split(",") if s.strip()])
    check_writable(out / "results.json")
    env = capture_environment()

    def progress(lv: Any) -> None:
        lat = lv.latency
        console.print(f"round {lv.round} {lv.photos:>6} c={lv.concurrency:<3} {lv.server:>10}: "
                      f"{lv.throughput_rps:8.1f} req/s p50 {lat.get('p50_ms', float('nan')):8.2f} ms "
                      f"p99 {lat.get('p99_ms', float('nan')):8.2f} ms  server preprocess "
                      f"{lv.server_preprocess_ms} ms inference {lv.server_inference_ms} ms total {lv.server_total_ms} ms  "
                      f"CPU {lv.server_cpu_ms_per_request} ms/req  errors {lv.errors}  "
                      f"RSS {lv.rss_before_mb}->{lv.rss_peak_mb} MB  (load {os.getloadavg()[0]:.2f})", highlight=False)

    res = run_load(model, photos, specs, levels=levels, requests=requests, rounds=rounds, reference=reference,
                   progress=progress)
    env["load_average_end"] = load_average()
    report = {"command": command, "created": env["timestamp"], "model": str(model),
              "servers": [s.__dict__ for s in specs], "photos": {k: len(v) for k, v in photos.items()},
              "requests_per_level": requests, "rounds": rounds, "environment": env,
              "client": "asyncio keep-alive HTTP/1.1 on the same machine (loopback)", **res}
    atomic_write_text(out / "results.json", json.dumps(report, indent=2))
    for row in res["summary"]:
        console.print(json.dumps(row), highlight=False)
    typer.echo(str(out / "results.json"))
    if any(lv["errors"] for lv in res["levels"]):
        raise typer.Exit(1)


_SERVER_HELP = ("A server to start: NAME=ARGS with `distill serve` options (repeatable), e.g. "
                "'ours=--max-batch 16 --max-wait-ms 5 --threads 1'.")


@app.command("load")
def load_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Artifact every server serves."),
    images: Path = typer.Option(..., help="Directory of real photos (cycled)."),
    server: Optional[List[str]] = typer.Option(None, "--server", help=_SERVER_HELP),
    peer: Optional[str] = typer.Option(None, help="Also start a peer server over the same artifact: litserve "
                                       "(takes --max-batch/--max-wait-ms/--threads of the first server)."),
    sizes: str = typer.Option("native,12mp", help="Photo sets: native (their own size), 12mp (upscaled at run time)."),
    concurrency: str = typer.Option("1,32", help="Client concurrency levels."),
    requests: int = typer.Option(1000, help="Requests per server, photo set, level and round."),
    rounds: int = typer.Option(1, help="Interleaved rounds (A, B, A, B, ...)."),
    max_images: int = typer.Option(64, help="Photos read and cycled (the first 8 are upscaled for 12mp)."),
    out: Path = typer.Option(Path("runs/bench-load"), help="Output directory for results.json."),
    reference: Optional[str] = typer.Option(None, help="Server the throughput ratios are to (default: the peer "
                                            "when there is one, else the first server)."),
) -> None:
    """Load test of servers started side by side on loopback (throughput, latency, server timing, peak RSS);
    only the server being measured runs, the others are paused meanwhile."""
    _load_run(model, images, server or ["ours=--max-batch 16 --max-wait-ms 5 --threads 1"], peer, sizes,
              concurrency, requests, rounds, max_images, out, "distill bench load", reference)


@app.command("abtest")
def abtest_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Artifact both servers serve."),
    images: Path = typer.Option(..., help="Directory of real photos (cycled)."),
    server: Optional[List[str]] = typer.Option(None, "--server", help=_SERVER_HELP + " Default: batching on vs off."),
    sizes: str = typer.Option("native", help="Photo sets: native, 12mp."),
    concurrency: str = typer.Option("1,8,32", help="Client concurrency levels."),
    requests: int = typer.Option(500, help="Requests per server, photo set, level and round."),
    rounds: int = typer.Option(5, help="Interleaved rounds."),
    max_images: int = typer.Option(64, help="Photos read and cycled."),
    out: Path = typer.Option(Path("runs/bench-abtest"), help="Output directory for results.json."),
) -> None:
    """Interleaved A/B load test of two server configurations (default: batching on vs off)."""
    from .loadtest import ABTEST_CONFIGS

    default = [f"{k}={' '.join(v)}" for k, v in ABTEST_CONFIGS.items()]
    _load_run(model, images, server or default, None, sizes, concurrency, requests, rounds, max_images, out,
              "distill bench abtest")


@app.command("decode")
def decode_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Artifact (its preprocessing spec and classes)."),
    data: Path = typer.Option(..., help="Labeled photos: DIR/<class>/<image> (e.g. the clothing validation split)."),
    limit_per_class: Optional[int] = typer.Option(None, help="At most this many photos per class."),
    max_12mp: int = typer.Option(60, help="Photos also upscaled to 12 MP at run time (spread over the classes)."),
    train_images: int = typer.Option(20, help="12 MP photos through the training transform (0: skip)."),
    out: Path = typer.Option(Path("runs/bench-decode"), help="Output directory for results.json."),
) -> None:
    """Accuracy and speed of the DCT-scaled decode against the full decode (same photos, side by side)."""
    from distill.io import atomic_write_text, check_writable

    from .decodebench import decode_bench
    from .env import capture_environment, load_average

    if not model.is_file():
        raise ConfigError(f"artifact not found: {model}")
    check_writable(out / "results.json")
    env = capture_environment()
    res = decode_bench(model, data, limit_per_class=limit_per_class, max_12mp=max_12mp, train_images=train_images)
    env["load_average_end"] = load_average()
    report = {"command": "distill bench decode", "created": env["timestamp"], "environment": env, **res}
    atomic_write_text(out / "results.json", json.dumps(report, indent=2))
    for name, r in res["sets"].items():
        console.print(f"{name:>6}: {r['images']} photos  top-1 fast {r['top1_fast']:.4f} full {r['top1_full']:.4f} "
                      f"(delta {r['top1_delta_points']:+.2f} points)  agreement {r['agreement']:.4f}  preprocess "
                      f"{r['preprocess_fast_ms_p50']} vs {r['preprocess_full_ms_p50']} ms ({r['speedup']}x)",
                      highlight=False)
    console.print(f"train loader (12 MP): {res['train_loader']}", highlight=False)
    typer.echo(str(out / "results.json"))


@app.command("compare")
def compare_cmd(
    a: Path = typer.Argument(..., help="Baseline results.json."),
    b: Path = typer.Argument(..., help="New results.json."),
    out: Optional[Path] = typer.Option(None, help="Also write the comparison as markdown (and .json beside it)."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
    fail_on_slower: Optional[float] = typer.Option(None, help="Exit 1 if any p50 is slower by more than this percentage and outside the spread."),
) -> None:
    """What changed between two runs (per model/backend/scenario), and whether it is outside the spread."""
    from distill.io import atomic_write_json, atomic_write_text

    from .compare import compare_reports, print_comparison, to_markdown
    from .report import load_report

    cmp = compare_reports(load_report(a), load_report(b))
    print_comparison(cmp, console)
    if out:
        atomic_write_text(out, to_markdown(cmp))
        atomic_write_json(out.with_suffix(".json"), cmp)
    if json_out:
        typer.echo(json.dumps(cmp, indent=2, default=str))
    if fail_on_slower is not None and any(
        r.get("outside_spread") and (r.get("p50_change_pct") or 0) > fail_on_slower for r in cmp["rows"]
    ):
        raise typer.Exit(1)


@app.command("merge")
def merge_cmd(
    reports: List[Path] = typer.Argument(..., help="results.json files to combine (the first one's environment is kept)."),
    out: Path = typer.Option(..., help="Output directory for the merged results.{json,csv,md,png}."),
) -> None:
    """Combine several runs into one report (e.g. a latency-only teacher run and the student run)."""
    from .report import load_report

    reps = [load_report(p) for p in reports]
    merged = dict(reps[0])
    merged["results"] = [r for rep in reps for r in rep["results"]]
    merged["models"] = [m for rep in reps for m in rep.get("models", [])]
    merged["merged_from"] = [{"path": str(p), "created": rep.get("created"), "command": rep.get("command"),
                              "load_average": rep["environment"].get("load_average")} for p, rep in zip(reports, reps)]
    cpus = {rep["environment"].get("cpu") for rep in reps}
    if len(cpus) > 1:
        console.print(f"[yellow]warning:[/] merging runs from different CPUs: {', '.join(map(str, cpus))}")
    _finish(merged, out)


@app.command("overhead")
def overhead_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Artifact (.onnx) or checkpoint (.pt) to time."),
    backend: Optional[str] = typer.Option(None, help="Backend (default: ort-cpu for artifacts, torch-cpu for checkpoints)."),
    images: Optional[Path] = typer.Option(None, help="Real images for inputs (default: synthetic)."),
    iterations: int = typer.Option(1000, help="Queries per round of each loop."),
    rounds: int = typer.Option(5, help="Alternating bare/harness rounds."),
    repeats: int = typer.Option(3, help="Repeated SingleStream runs for the agreement check."),
    duration: float = typer.Option(3.0, help="Seconds per repeated run."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads."),
    max_seconds: float = typer.Option(180.0, help="Hard bound on the whole command."),
    out: Optional[Path] = typer.Option(None, help="Write the result as JSON here."),
) -> None:
    """Harness overhead vs a bare timing loop (target < 2%), and whether repeated runs agree within the spread."""
    from distill.io import atomic_write_json

    from .accuracy import list_images
    from .backends import BACKENDS, FORMAT_BACKENDS, load_artifact_backend, load_checkpoint_backend, model_format
    from .env import capture_environment
    from .overhead import measure_overhead, measure_repeatability

    label, path = _model_arg(model, kind="model")
    fmt = model_format(path)
    be = backend or FORMAT_BACKENDS[fmt][0]
    if be not in BACKENDS:
        raise ConfigError(f"unknown backend {be!r}; choose from {', '.join(BACKENDS)}")
    if be not in FORMAT_BACKENDS[fmt]:
        raise ConfigError(f"backend {be} cannot run a {fmt} model (use {', '.join(FORMAT_BACKENDS[fmt])})")
    for v, name in ((iterations, "--iterations"), (rounds, "--rounds"), (repeats, "--repeats"),
                    (duration, "--duration"), (max_seconds, "--max-seconds")):
        _positive(v, name)
    deadline = time.perf_counter() + max_seconds
    loaded = (load_checkpoint_backend(label, path, be, "eager", "fp32", threads) if fmt == "checkpoint"
              else load_artifact_backend(label, path, be, threads))
    pool = loaded.prepare(list_images(images, 16)) if images else loaded.synthetic(16)
    singles = [loaded.take(pool, i, i + 1) for i in range(int(pool.shape[0]))]
    ov = measure_overhead(loaded.run, singles[0], iterations=iterations, rounds=rounds, deadline=deadline)
    rep = measure_repeatability(loaded.run, singles, repeats=repeats, duration=duration, deadline=deadline)
    result = {"model": label, "path": str(path), "backend": be, "overhead": ov, "repeatability": rep,
              "environment": capture_environment(threads=threads)}
    if ov.get("rounds"):
        console.print(f"bare loop {ov['bare_ms_per_query']:.4f} ms/query, harness {ov['harness_ms_per_query']:.4f} "
                      f"ms/query: overhead {ov['overhead_pct']:+.2f}% (rounds {', '.join(f'{x:+.2f}' for x in ov['overhead_pct_rounds'])}) "
                      f"-> {'meets' if ov['meets_target'] else 'MISSES'} the < 2% target", highlight=False)
        console.print(f"harness bookkeeping (no-op loop): {ov['bookkeeping_ns']:.0f} ns/query = "
                      f"{ov['bookkeeping_pct_of_bare']:.4f}% of this model's {ov['bare_ms_per_query']:.4f} ms "
                      f"-> {'meets' if ov['bookkeeping_meets_target'] else 'MISSES'} the < 2% target", highlight=False)
    if rep.get("repeats"):
        for i, r in enumerate(rep["runs"], 1):
            console.print(f"run {i}: p50 {r['p50_ms']:.4f} ms, spread {r['spread_lo_ms']:.4f}-{r['spread_hi_ms']:.4f} "
                          f"(95% CI {r['ci_lo_ms']:.4f}-{r['ci_hi_ms']:.4f}), IQR {r['iqr_ms']:.4f} (n={r['n']})",
                          highlight=False)
        console.print(f"medians differ by {rep['median_spread_pct']:.2f}%; spreads share a point: {rep['agree_spread']}; "
                      f"bootstrap CIs alone: {rep['agree_ci']}; within half an IQR: {rep['agree_iqr']}", highlight=False)
    if out:
        atomic_write_json(out, result)
    typer.echo(json.dumps({"overhead_pct": ov.get("overhead_pct"), "bookkeeping_ns": ov.get("bookkeeping_ns"),
                           "bookkeeping_pct": ov.get("bookkeeping_pct_of_bare"), "agree_spread": rep.get("agree_spread"),
                           "agree_ci": rep.get("agree_ci"), "agree_iqr": rep.get("agree_iqr")}))


@app.command("backends")
def backends_cmd() -> None:
    """Which backends can run on this machine, and why the others cannot."""
    from .backends import BACKENDS, backend_unavailable_reason

    for b in BACKENDS:
        reason = backend_unavailable_reason(b)
        typer.echo(f"{b:13s} {'available' if reason is None else 'skipped: ' + reason}")


@app.command("env")
def env_cmd(emulate: Optional[str] = typer.Option(None, help="Show the emulation plan too.")) -> None:
    """Print the environment record stored with every result (JSON)."""
    from .emulate import resolve_emulation
    from .env import capture_environment
    from .jetson import detect_jetson

    typer.echo(json.dumps(capture_environment(emulation=resolve_emulation(emulate), jetson=detect_jetson()),
                          indent=2, default=str))


@app.command("int8")
def int8_cmd(
    fp32: Path = typer.Argument(..., help="fp32 .onnx artifact (export's output)."),
    data: Path = typer.Option(..., help="Labelled ImageFolder for accuracy (DIR/<class>/<image>)."),
    per_class: int = typer.Option(100, help="Accuracy images per class."),
    calib: Optional[Path] = typer.Option(None, help="ImageFolder for calibration (default: --data)."),
    calib_per_class: int = typer.Option(20, help="Calibration images per class."),
    calib_skip: int = typer.Option(0, help="Skip this many files per class of --calib (keeps them apart from --data)."),
    configs: str = typer.Option("cpu", help="Comma-separated export.quantize.INT8_CONFIGS names, or all."),
    batches: str = typer.Option("1,32,128", help="Batch sizes to time."),
    threads: str = typer.Option("1,2", help="Intra-op thread counts to time."),
    rounds: int = typer.Option(7, help="Interleaved rounds (the speed-up is the median of per-round ratios)."),
    seconds: float = typer.Option(0.4, help="Seconds per model per round."),
    spin: str = typer.Option("default", help="onnxruntime thread spinning: default, on or off."),
    reuse: bool = typer.Option(False, help="Reuse variants already in --out."),
    timing: bool = typer.Option(True, help="--no-timing: accuracy only."),
    profile: bool = typer.Option(False, help="onnxruntime per-op profile at the smallest and largest batch."),
    out: Path = typer.Option(Path("runs/bench-int8"), help="Output directory (variants and bench_int8.json)."),
) -> None:
    """int8 vs fp32 on this CPU: build the variants, check accuracy, time them interleaved (the int8 evidence)."""
    from distill.io import atomic_write_json, check_writable
    from export.metadata import read_metadata

    from .int8 import Int8Bench, markdown_table, parse_configs, run_int8_bench

    if spin not in ("default", "on", "off"):
        raise ConfigError(f"--spin must be default, on or off, got {spin!r}")
    for v, name in ((per_class, "--per-class"), (calib_per_class, "--calib-per-class"), (rounds, "--rounds"),
                    (seconds, "--seconds")):
        _positive(v, name)
    if calib_skip < 0:
        raise ConfigError("--calib-skip must be >= 0")
    meta = read_metadata(fp32)  # ArtifactError for a missing or foreign file
    if meta.precision != "fp32":
        raise ConfigError(f"{fp32} is a {meta.precision} artifact; pass the fp32 one")
    check_writable(out / "bench_int8.json")
    cfg = Int8Bench(fp32=fp32, data=data, out=out, configs=parse_configs(configs), calib=calib, per_class=per_class,
                    calib_per_class=calib_per_class, calib_skip=calib_skip, batches=_ints(batches, "--batches"),
                    threads=_ints(threads, "--threads"), rounds=rounds, seconds=seconds,
                    spin=None if spin == "default" else spin == "on", reuse=reuse, timing=timing,
                    profile=profile)
    report = run_int8_bench(cfg, log=lambda s: console.print(s, highlight=False))
    atomic_write_json(out / "bench_int8.json", report)
    if report["timing"]:
        typer.echo(markdown_table(report))
    typer.echo(str(out / "bench_int8.json"))


__all__ = ["app", "DistillError"]
