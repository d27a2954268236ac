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

``--arch arm64`` builds the same Dockerfile for linux/arm64 on an x86 host: the base is debootstrapped for
arm64, every ``RUN`` of the build and the server itself execute under qemu-user-static (registered with
binfmt_misc, the F flag so it works inside a chroot). The answer is the check; timings under emulation say
nothing about a board and are reported as ``emulated: true``. ``--compare REPORT.json`` (a report of an earlier
run, e.g. the x86 image) checks the top-k labels are equal and the scores within ``--score-tol``.
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
EMULATION_PACKAGES = ("qemu-user-static", "binfmt-support")
#: Debian/OCI architecture name -> (ELF machine name as qemu calls it, ``uname -m``)
ARCHES = {"amd64": ("x86_64", "x86_64"), "arm64": ("aarch64", "aarch64")}
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def host_arch() -> str:
    machine = os.uname().machine
    return next((a for a, (_, m) in ARCHES.items() if m == machine), machine)


def base_tag(arch: str) -> str:
    """The cached base per architecture (the host's keeps its historical tag)."""
    return BASE_TAG if arch == host_arch() else f"{BASE_TAG}-{arch}"


def log(msg: str) -> None:
    print(f"[container] {msg}", file=sys.stderr, flush=True)


def sh(cmd: list[str], *, check: bool = True, capture: bool = False, timeout: float | None = None,
       **kw: object) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=check, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else sys.stderr,
                          stderr=subprocess.PIPE if capture else sys.stderr, **kw)  # type: ignore[arg-type]


# -- 1. tools -------------------------------------------------------------------------------------------
def ensure_tools(arch: str | None = None) -> None:
    foreign = arch is not None and arch != host_arch()
    wanted = PACKAGES + (EMULATION_PACKAGES if foreign else ())
    missing = [p for p in PACKAGES if shutil.which(p) is None and not (p == "runc" and shutil.which("crun"))]
    if foreign and shutil.which(f"qemu-{ARCHES[arch][0]}-static") is None:
        missing += list(EMULATION_PACKAGES)
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"error: {', '.join(missing)} missing and not root: apt-get install -y {' '.join(wanted)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        sh(["apt-get", "update", "-qq"], env=env, timeout=600)
        sh(["apt-get", "install", "-y", "-qq", *wanted], env=env, timeout=900)
    if foreign:
        check_qemu(arch)  # type: ignore[arg-type]
        ensure_binfmt(arch)  # type: ignore[arg-type]


#: onnxruntime (1.28-1.32 tested) segfaults at import under qemu-user 7.2 (Debian bookworm); 10.0 (bookworm-backports) works
MIN_QEMU = (8, 0)


def check_qemu(arch: str) -> None:
    exe = f"qemu-{ARCHES[arch][0]}-static"
    out = sh([exe, "--version"], capture=True, check=False).stdout
    m = re.search(r"version (\d+)\.(\d+)", out or "")
    if m and (int(m.group(1)), int(m.group(2))) < MIN_QEMU:
        raise SystemExit(f"error: {exe} {m.group(1)}.{m.group(2)} is too old (onnxruntime crashes at import under "
                         f"it); on Debian bookworm: echo 'deb http://deb.debian.org/debian bookworm-backports main' > "
                         f"/etc/apt/sources.list.d/backports.list && apt-get update && apt-get install -y -t "
                         f"bookworm-backports qemu-user-static, then re-register: echo -1 > "
                         f"{BINFMT}/qemu-{ARCHES[arch][0]}")


def ensure_binfmt(arch: str) -> None:
    """Register qemu-user-static for ``arch`` with binfmt_misc (mounting it first), so foreign ELF binaries run.

    The F (fix-binary) flag matters: the interpreter is opened at registration time, so it also works inside
    the build's chroot, which has no qemu of its own.
    """
    qemu = ARCHES[arch][0]
    entry = BINFMT / f"qemu-{qemu}"
    if not (BINFMT / "register").exists():
        if os.geteuid() != 0:
            raise SystemExit("error: binfmt_misc is not mounted and not root: mount -t binfmt_misc binfmt_misc " + str(BINFMT))
        sh(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    if entry.exists():
        if "flags: " in entry.read_text() and "F" not in entry.read_text().split("flags: ")[1].split()[0]:
            log(f"warning: {entry} lacks the F flag; builds in a chroot may fail to find the interpreter")
        return
    conf = Path(f"/usr/lib/binfmt.d/qemu-{qemu}.conf")
    if not conf.exists():
        raise SystemExit(f"error: {conf} missing: apt-get install -y qemu-user-static")
    (BINFMT / "register").write_text(conf.read_text().strip())
    log(f"registered {entry.name} with binfmt_misc")


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


def ensure_base(cache: Path, arch: str | None = None) -> str:
    """The debootstrapped Debian bookworm + python3 base for ``arch`` (default: the host's); returns its tag."""
    arch = arch or host_arch()
    tag = base_tag(arch)
    if image_exists(tag):
        log(f"base image {tag} cached")
        return tag
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / ("debian-py-bookworm.tar" if arch == host_arch() else f"debian-py-bookworm-{arch}.tar")
    if not tarball.exists():
        rootfs = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache))
        try:
            t0 = time.time()
            sh(["debootstrap", f"--arch={arch}", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                "bookworm", str(rootfs), debian_mirror()], timeout=3600)
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
    sh(["podman", "import", "--arch", arch, "--os", "linux", str(tarball), tag], timeout=600)
    return tag


# -- 3. build -------------------------------------------------------------------------------------------
#: glibc of Debian bookworm is 2.36: manylinux wheels up to that tag run in the image
MANYLINUX = ("manylinux_2_17", "manylinux2014", "manylinux_2_28", "manylinux_2_31", "manylinux_2_34", "manylinux_2_35")


def download_wheels(dest: Path, arch: str, context: Path, python_version: str = "3.11") -> Path:
    """The image's wheels for ``arch`` (and pip/setuptools to build the project), fetched by the HOST's pip.

    Under emulation every TLS handshake and index page runs in qemu; the package index then resets the slow
    connections (seen: ``ConnectionResetError`` on /simple/onnxruntime/ for every retry). Downloading the target's
    wheels natively and installing them with ``--no-index`` inside the build changes nothing about what is
    installed (the same PyPI wheels for aarch64), only who fetched them.
    """
    machine = ARCHES[arch][0]
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [a for tag in MANYLINUX for a in ("--platform", f"{tag}_{machine}")]
    sh([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
        "--python-version", python_version, *platforms, "-d", str(dest),
        "-r", str(context / "scripts/container/requirements.txt"), "pip", "setuptools>=77", "wheel"], timeout=1800)
    return dest


def build(tag: str, context: Path, model_arg: str | None, arch: str | None = None, base: str = BASE_TAG,
          timeout: float = 1800, wheelhouse: Path | None = None) -> float:
    arch = arch or host_arch()
    cmd = ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--format", "docker", "--layers=false",
           "--platform", f"linux/{arch}", "--build-arg", f"BASE_IMAGE={base}", "-t", tag,
           "-f", str(context / "Dockerfile")]
    if wheelhouse is not None:
        cmd += ["-v", f"{wheelhouse}:/wheels:ro", "--build-arg", "PIP_FIND_LINKS=/wheels",
                "--build-arg", "PIP_NO_INDEX=1"]
    if Path(CA_BUNDLE).exists():
        cmd[2:2] = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    if model_arg:
        cmd += ["--build-arg", f"MODEL={model_arg}"]
    t0 = time.time()
    sh([*cmd, str(context)], timeout=timeout)
    return time.time() - t0


def image_arch(tag: str) -> str:
    return sh(["podman", "image", "inspect", "--format", "{{.Architecture}}", tag], capture=True).stdout.strip()


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


#: What the image's own interpreter reports: the proof the wheels and the runtime really are the target's.
MACHINE_PROBE = ("import json, platform, numpy, onnxruntime; print(json.dumps({'machine': platform.machine(), "
                 "'python': platform.python_version(), 'onnxruntime': onnxruntime.__version__, "
                 "'numpy': numpy.__version__}))")


def run_and_classify(tag: str, model: Path | None, image: Path, top_k: int, ready_timeout: float,
                     emulated: bool = False, qemu_cpu: str | None = None) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ctr = sh(["buildah", "from", "--pull=never", tag], capture=True).stdout.strip().splitlines()[-1]
    mount_dir = None
    proc = None
    report: dict = {"container": ctr, "port": port}
    try:
        cmd = ["buildah", "run", "--isolation", "chroot", "--network", "host",
               "-e", f"DISTILL_SERVE_PORT={port}", "-e", "DISTILL_SERVE_HOST=127.0.0.1"]
        if emulated:  # the warm-up's batch-size sweep (1..16) takes many minutes in qemu; the check is the answer
            cmd += ["-e", "DISTILL_SERVE_BATCH_SIZING=fixed", "-e", "DISTILL_SERVE_MAX_BATCH=2"]
            if qemu_cpu:  # qemu reads QEMU_CPU from the emulated process's environment
                cmd += ["-e", f"QEMU_CPU={qemu_cpu}"]
        if model is not None:
            # a world-readable copy: the image runs as an unprivileged user (uid 10001)
            mount_dir = Path(tempfile.mkdtemp(prefix="distill-model-"))
            mount_dir.chmod(0o755)
            shutil.copy2(model, mount_dir / "model.onnx")
            (mount_dir / "model.onnx").chmod(0o644)
            cmd += ["-v", f"{mount_dir}:/models:ro"]
        probe = sh([*cmd, ctr, "--", "/opt/venv/bin/python", "-c", MACHINE_PROBE], capture=True, timeout=600,
                   check=False)
        if probe.returncode != 0:
            raise RuntimeError(f"the image's python cannot import its runtime (exit {probe.returncode}): "
                               f"{(probe.stderr or '').strip().splitlines()[-1:] or ''}")
        report["container_platform"] = json.loads(probe.stdout.strip().splitlines()[-1])
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
            report.update(stop_server(proc, 300 if emulated else 30))  # uvicorn's drain is slow in qemu
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


def stop_server(proc: subprocess.Popen, timeout: float = 30) -> dict:
    """SIGTERM the server itself (graceful: uvicorn drains, exits 0), then make sure the group is gone."""
    out: dict = {}
    t0 = time.time()
    pids = _server_pids(proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    if not pids:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
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


def compare_answers(report: dict, reference: dict, score_tol: float) -> list[str]:
    """Same top-k labels as the reference run (e.g. the x86 image) and every score within ``score_tol``."""
    try:
        got = report["answer"]["results"][0]["predictions"]
        want = reference["answer"]["results"][0]["predictions"]
    except (KeyError, IndexError, TypeError):
        return ["no answer to compare with the reference report"]
    problems = []
    if [p["label"] for p in got] != [p["label"] for p in want]:
        problems.append(f"top-{len(want)} labels {[p['label'] for p in got]} != reference {[p['label'] for p in want]}")
    else:
        diff = max(abs(a["score"] - b["score"]) for a, b in zip(got, want))
        report["compare"] = {"reference_arch": reference.get("arch"), "labels_equal": True, "max_score_diff": diff,
                             "score_tol": score_tol}
        if diff > score_tol:
            problems.append(f"scores differ from the reference by {diff:.3g} > {score_tol:g}")
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
    ap.add_argument("--reuse-image", action="store_true", help="skip the build when --tag already exists (a kept "
                    "image from an earlier run)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--arch", choices=sorted(ARCHES), default=host_arch(),
                    help="image architecture; a foreign one is built and run under qemu-user-static")
    ap.add_argument("--compare", type=Path, help="a report of an earlier run (e.g. the x86 image): same top-k "
                    "labels, scores within --score-tol")
    ap.add_argument("--score-tol", type=float, default=1e-4)
    ap.add_argument("--qemu-cpu", default="cortex-a76", help="the emulated CPU (QEMU_CPU) when the server runs under "
                    "emulation: cortex-a76 is a Raspberry Pi 5's core (NEON + dotprod, no SVE); '' for qemu's default "
                    "(max: every feature qemu has, SVE included, much slower to emulate)")
    ap.add_argument("--wheelhouse", choices=("auto", "on", "off"), default="auto",
                    help="install the image's wheels from a wheelhouse the host downloads for the target "
                         "architecture (auto: under emulation only)")
    ap.add_argument("--build-timeout", type=float, default=None,
                    help="seconds for the build (default 1800, 7200 under emulation)")
    args = ap.parse_args(argv)
    emulated = args.arch != host_arch()
    if args.ready_timeout == ap.get_default("ready_timeout") and emulated:
        args.ready_timeout = 900.0  # the interpreter and onnxruntime start slowly under qemu
    if args.model is None and args.bake is None:
        ap.error("give --model (mounted) or --bake (baked in)")

    report: dict = {"tag": args.tag, "arch": args.arch, "host_arch": host_arch(), "emulated": emulated,
                    "qemu_cpu": (args.qemu_cpu or "max") if emulated else None}
    t0 = time.time()
    try:
        ensure_tools(args.arch)
        t_base = time.time()
        base = ensure_base(args.cache, args.arch)
        report["base_s"] = round(time.time() - t_base, 1)
        wheels = None
        reuse = args.reuse_image and image_exists(args.tag)
        if reuse:
            log(f"reusing the existing image {args.tag} (--reuse-image)")
            report["reused_image"] = True
        elif args.wheelhouse == "on" or (args.wheelhouse == "auto" and emulated):
            t_w = time.time()
            wheels = download_wheels(args.cache / f"wheels-{args.arch}", args.arch, args.context)
            report["wheelhouse_s"] = round(time.time() - t_w, 1)
        if not reuse:
            report["build_s"] = round(build(args.tag, args.context, args.bake, args.arch, base,
                                            args.build_timeout or (7200 if emulated else 1800), wheels), 1)
        report["image_arch"] = image_arch(args.tag)
        report["image_size_bytes"] = image_size(args.tag)
        report["image_size_mb"] = round(report["image_size_bytes"] / 1e6, 1)
        log(f"image {args.tag}: {report['image_size_mb']} MB")
        report.update(run_and_classify(args.tag, None if args.bake else args.model, args.image, args.top_k,
                                       args.ready_timeout, emulated, args.qemu_cpu if emulated else None))
        report["problems"] = check_answer(report, args.model, args.top_k)
        if report["image_arch"] != args.arch:
            report["problems"].append(f"image architecture {report['image_arch']} != {args.arch}")
        machine = report.get("container_platform", {}).get("machine")
        if machine != ARCHES[args.arch][1]:
            report["problems"].append(f"the image's python reports machine {machine}, expected {ARCHES[args.arch][1]}")
        if args.compare is not None:
            report["problems"] += compare_answers(report, json.loads(args.compare.read_text()), args.score_tol)
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
    log(f"OK ({args.arch}{', emulated' if emulated else ''}): {args.image.name} -> {top['label']} "
        f"({top['score']:.3f}); image {report['image_size_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
