#!/usr/bin/env python3
"""Build the serving image without a Docker daemon, run it, classify a real JPEG in it, clean up.

The recipe of ../shared/docs/deployment.md ("Containers"), automated:

1. ``apt-get install buildah podman debootstrap runc`` when missing (needs root);
2. a Debian bookworm base with python3 + python3-venv, debootstrapped once and cached
   (``localhost/debian-py:bookworm`` in containers storage, plus a tarball under the cache dir);
3. ``buildah bud --isolation chroot --network host --format docker --build-arg BASE_IMAGE=localhost/debian-py:bookworm``
   (the host's CA bundle is mounted so pip inside the build reaches the package index);
4. ``buildah run`` the server from the image in the background with the model mounted at /models,
   wait for /health/ready, POST the JPEG to /v1/classify and check the answer;
5. stop the server, remove the working container (and the image unless ``--keep-image``).

Prints one JSON report on stdout (``--json PATH`` also writes it): image size, answer, timings.
Only the standard library is used, so it runs with the system ``python3`` too.

    sudo python3 scripts/container/build_and_run.py --model runs/exp/model.onnx --image cat.jpg
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_TAG = "localhost/debian-py:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PACKAGES = ("buildah", "podman", "debootstrap", "runc")


def log(msg: str) -> None:
    print(f"[container] {msg}", file=sys.stderr, flush=True)


def sh(cmd: list[str], *, check: bool = True, capture: bool = False, timeout: float | None = None,
       **kw: object) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=check, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else sys.stderr,
                          stderr=subprocess.PIPE if capture else sys.stderr, **kw)  # type: ignore[arg-type]


# -- 1. tools -------------------------------------------------------------------------------------------
def ensure_tools() -> None:
    missing = [p for p in PACKAGES if shutil.which(p) is None and not (p == "runc" and shutil.which("crun"))]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"error: {', '.join(missing)} missing and not root: apt-get install -y {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sh(["apt-get", "update", "-qq"], env=env, timeout=600)
    sh(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, timeout=900)


# -- 2. base image --------------------------------------------------------------------------------------
def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 .sources or classic .list), else deb.debian.org."""
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for f in candidates:
        try:
            text = f.read_text()
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uris and suites and "bookworm" in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def image_exists(tag: str) -> bool:
    return sh(["buildah", "inspect", "--type", "image", tag], check=False, capture=True).returncode == 0


def ensure_base(cache: Path) -> None:
    if image_exists(BASE_TAG):
        log(f"base image {BASE_TAG} cached")
        return
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / "debian-py-bookworm.tar"
    if not tarball.exists():
        rootfs = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache))
        try:
            t0 = time.time()
            sh(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
                str(rootfs), debian_mirror()], timeout=1200)
            log(f"debootstrap took {time.time() - t0:.0f}s")
            # apt lists and caches are not needed in the base
            for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for p in (rootfs / sub).glob("*.deb" if "archives" in sub else "*_*"):
                    p.unlink(missing_ok=True)
            tmp = tarball.with_suffix(".tar.part")
            sh(["tar", "-C", str(rootfs), "-cf", str(tmp), "."], timeout=600)
            tmp.rename(tarball)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    sh(["podman", "import", str(tarball), BASE_TAG], timeout=600)


# -- 3. build -------------------------------------------------------------------------------------------
def build(tag: str, context: Path, model_arg: str | None) -> float:
    cmd = ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--format", "docker", "--layers=false",
           "--build-arg", f"BASE_IMAGE={BASE_TAG}", "-t", tag, "-f", str(context / "Dockerfile")]
    if Path(CA_BUNDLE).exists():
        cmd[2:2] = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    if model_arg:
        cmd += ["--build-arg", f"MODEL={model_arg}"]
    t0 = time.time()
    sh([*cmd, str(context)], timeout=1800)
    return time.time() - t0


def image_size(tag: str) -> int:
    out = sh(["podman", "image", "inspect", "--format", "{{.Size}}", tag], capture=True).stdout.strip()
    return int(out)


# -- 4. run and classify --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def multipart(files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for field, name, data, ctype in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before becoming ready")
        try:
            status, _, _ = http("GET", base + "/health/ready", timeout=2)
            if status == 200:
                return time.time() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout:.0f}s")


def run_and_classify(tag: str, model: Path | None, image: Path, top_k: int, ready_timeout: float) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ctr = sh(["buildah", "from", "--pull=never", tag], capture=True).stdout.strip().splitlines()[-1]
    mount_dir = None
    proc = None
    report: dict = {"container": ctr, "port": port}
    try:
        cmd = ["buildah", "run", "--isolation", "chroot", "--network", "host",
               "-e", f"DISTILL_SERVE_PORT={port}", "-e", "DISTILL_SERVE_HOST=127.0.0.1"]
        if model is not None:
            # a world-readable copy: the image runs as an unprivileged user (uid 10001)
            mount_dir = Path(tempfile.mkdtemp(prefix="distill-model-"))
            mount_dir.chmod(0o755)
            shutil.copy2(model, mount_dir / "model.onnx")
            (mount_dir / "model.onnx").chmod(0o644)
            cmd += ["-v", f"{mount_dir}:/models:ro"]
        cmd += [ctr, "--", "/opt/venv/bin/python", "-m", "serve", "--no-access-log"]
        log("$ " + " ".join(cmd) + " &")
        proc = subprocess.Popen(cmd, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
        report["ready_s"] = round(wait_ready(base, proc, ready_timeout), 2)
        status, _, body = http("GET", base + "/v1/model")
        info = json.loads(body)
        report["model"] = {k: info.get(k) for k in ("name", "version", "providers", "precision", "num_classes")}
        data = image.read_bytes()
        payload, ctype = multipart([("file", image.name, data, "image/jpeg")])
        t0 = time.perf_counter()
        status, headers, body = http("POST", f"{base}/v1/classify?top_k={top_k}", payload,
                                     {"Content-Type": ctype, "X-Request-ID": "container-smoke-1"})
        report["classify_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        report["status"] = status
        report["answer"] = json.loads(body)
        report["request_id_header"] = {k.lower(): v for k, v in headers.items()}.get("x-request-id")
        bad, bad_ctype = multipart([("file", "x.jpg", b"not a jpeg", "image/jpeg")])
        status_bad, _, _ = http("POST", f"{base}/v1/classify", bad, {"Content-Type": bad_ctype})
        report["bad_image_status"] = status_bad
        status_after, _, _ = http("GET", base + "/health/ready")
        report["ready_after_bad_input"] = status_after == 200
    finally:
        if proc is not None and proc.poll() is None:
            report.update(stop_server(proc))
        sh(["buildah", "rm", ctr], check=False, capture=True)
        if mount_dir is not None:
            shutil.rmtree(mount_dir, ignore_errors=True)
    return report


def _server_pids(pgid: int) -> list[int]:
    """The uvicorn process(es) that ``buildah run`` started in our process group (chroot: host PID space)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and b"-m serve" in cmd and b"buildah" not in cmd:
            pids.append(int(d.name))
    return pids


def stop_server(proc: subprocess.Popen) -> dict:
    """SIGTERM the server itself (graceful: uvicorn drains, exits 0), then make sure the group is gone."""
    out: dict = {}
    t0 = time.time()
    pids = _server_pids(proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    if not pids:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
        out["shutdown_s"] = round(time.time() - t0, 2)
        out["shutdown_rc"] = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        out["shutdown_rc"] = "killed"
    return out


def check_answer(report: dict, model: Path | None, top_k: int) -> list[str]:
    problems = []
    ans = report.get("answer", {})
    if report.get("status") != 200:
        problems.append(f"classify answered {report.get('status')}: {ans}")
        return problems
    preds = ans["results"][0]["predictions"]
    if len(preds) != min(top_k, report["model"]["num_classes"]):
        problems.append(f"expected {top_k} predictions, got {len(preds)}")
    if any(not 0.0 <= p["score"] <= 1.0 for p in preds) or preds != sorted(preds, key=lambda p: -p["score"]):
        problems.append("scores not probabilities in descending order")
    if report.get("request_id_header") != "container-smoke-1" or ans.get("request_id") != "container-smoke-1":
        problems.append("X-Request-ID not honoured")
    if model is not None:
        want = hashlib.sha256(model.read_bytes()).hexdigest()[:12]
        if ans["model"]["version"] != want:
            problems.append(f"model version {ans['model']['version']} != sha256 prefix {want}")
    if report.get("bad_image_status") != 400:
        problems.append(f"undecodable upload answered {report.get('bad_image_status')}, expected 400")
    if not report.get("ready_after_bad_input"):
        problems.append("not ready after a bad upload")
    if report.get("shutdown_rc") not in (0, None):
        problems.append(f"server did not shut down cleanly (exit {report.get('shutdown_rc')})")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artifact mounted at /models/model.onnx (omit with --bake)")
    ap.add_argument("--bake", metavar="CONTEXT_PATH", help="bake this model (path inside the build context, e.g. "
                    "models/model.onnx) with --build-arg MODEL= instead of mounting --model")
    ap.add_argument("--image", type=Path, required=True, help="a real JPEG to classify")
    ap.add_argument("--tag", default="localhost/distill-serve:test")
    ap.add_argument("--context", type=Path, default=REPO)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("DISTILL_CONTAINER_CACHE", "/var/cache/distill-container")))
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--ready-timeout", type=float, default=120)
    ap.add_argument("--keep-image", action="store_true", help="keep the built image (default: remove it)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    if args.model is None and args.bake is None:
        ap.error("give --model (mounted) or --bake (baked in)")

    report: dict = {"tag": args.tag}
    t0 = time.time()
    try:
        ensure_tools()
        ensure_base(args.cache)
        report["build_s"] = round(build(args.tag, args.context, args.bake), 1)
        report["image_size_bytes"] = image_size(args.tag)
        report["image_size_mb"] = round(report["image_size_bytes"] / 1e6, 1)
        log(f"image {args.tag}: {report['image_size_mb']} MB")
        report.update(run_and_classify(args.tag, None if args.bake else args.model, args.image, args.top_k,
                                       args.ready_timeout))
        report["problems"] = check_answer(report, args.model, args.top_k)
    except Exception as e:  # noqa: BLE001 - reported as a problem, the image is still cleaned up
        report["problems"] = [f"{type(e).__name__}: {e}"]
    finally:
        if not args.keep_image and image_exists(args.tag):
            sh(["buildah", "rmi", "-f", args.tag], check=False, capture=True)
    report["total_s"] = round(time.time() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    if report["problems"]:
        log("FAILED: " + "; ".join(report["problems"]))
        return 1
    top = report["answer"]["results"][0]["predictions"][0]
    log(f"OK: {args.image.name} -> {top['label']} ({top['score']:.3f}); image {report['image_size_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
