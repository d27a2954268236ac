"""The launch and deployment manifests in deploy/ parse, and point at the real things: the service's health
routes, the Deployment the HPA scales, ``torchrun -m distill train`` and a c10d rendezvous."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MANIFESTS = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
SBATCH = sorted(DEPLOY.rglob("*.sbatch"))


def _docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def _kind(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in _docs() if d.get("kind") == kind]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    if doc["kind"] == "PyTorchJob":
        return [c for r in spec["pytorchReplicaSpecs"].values() for c in r["template"]["spec"]["containers"]]
    return spec["template"]["spec"]["containers"]


def _service_routes() -> set[str]:
    """Routes the FastAPI app declares (read from the source, so serve need not be importable here)."""
    routes: set[str] = set()
    for f in (REPO / "serve").rglob("*.py"):
        routes |= set(re.findall(r"""\.(?:get|post|api_route)\(\s*["'](/[^"']*)["']""", f.read_text()))
    return routes


def test_there_are_manifests_and_every_one_parses() -> None:
    assert MANIFESTS and SBATCH
    kinds = {d["kind"] for _, d in _docs()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PyTorchJob"} <= kinds
    for path, doc in _docs():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        assert doc["metadata"].get("name"), path


def test_deployment_probes_use_the_service_health_routes() -> None:
    routes = _service_routes()
    assert {"/health/live", "/health/ready"} <= routes, f"serve declares {sorted(routes)}"
    deployments = _kind("Deployment")
    assert deployments
    for path, dep in deployments:
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        for c in _containers(dep):
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", path
            assert c["livenessProbe"]["httpGet"]["path"] == "/health/live", path
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c:
                    get = c[probe]["httpGet"]
                    assert get["path"] in routes
                    assert get["port"] in ports or get["port"] in ports.values(), f"{probe} port {get['port']}"
            assert c["resources"]["requests"]["cpu"], "the HPA's CPU utilisation needs a CPU request"


def test_hpa_targets_the_deployment_and_the_service_selects_its_pods() -> None:
    deps = {d["metadata"]["name"]: d for _, d in _kind("Deployment")}
    hpas = _kind("HorizontalPodAutoscaler")
    assert hpas
    for path, hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deps, path
        assert ref["apiVersion"] == "apps/v1"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deps.values()]
    for path, svc in _kind("Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= labels.items() for labels in pod_labels), f"{path}: service selects no pods"


def test_pytorchjob_runs_torchrun_distill_train() -> None:
    jobs = _kind("PyTorchJob")
    assert jobs
    for path, job in jobs:
        assert job["apiVersion"].startswith("kubeflow.org/")
        assert "Worker" in job["spec"]["pytorchReplicaSpecs"] or "Master" in job["spec"]["pytorchReplicaSpecs"]
        for c in _containers(job):
            cmd = [*c.get("command", []), *c.get("args", [])]
            if len(cmd) == 1 or (len(cmd) >= 2 and cmd[:2] in (["bash", "-c"], ["sh", "-c"])):
                cmd = shlex.split(cmd[-1])
            assert cmd[0] == "torchrun", cmd
            i = cmd.index("-m")
            assert cmd[i + 1:i + 3] == ["distill", "train"], cmd
            assert "--resume" in cmd, "a restarted worker must continue from last.pt"
        rdzv = job["spec"].get("elasticPolicy", {}).get("rdzvBackend")
        assert rdzv in (None, "c10d")


def _sbatch_command(path: Path) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continued lines
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [ln for ln in lines if "torchrun" in ln]


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_uses_torchrun_with_c10d_rendezvous(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#!/bin/bash")
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    cmds = _sbatch_command(path)
    assert cmds, "no torchrun line"
    for line in cmds:
        argv = shlex.split(line)
        assert argv[0] == "srun" and "torchrun" in argv, "one torchrun per node, started by srun"
        opts = " ".join(argv)
        assert "--rdzv-backend=c10d" in opts
        assert re.search(r"--rdzv-endpoint=\S+:\d+", opts)
        assert "--rdzv-id=" in opts and "--nnodes=" in opts and "--nproc-per-node=" in opts
        i = argv.index("-m")
        assert argv[i + 1] == "distill" and argv[i + 2] in ("train", "cache-teacher")


def test_deployment_env_names_are_serve_settings() -> None:
    """Every DISTILL_SERVE_* variable the Deployment sets is a field of the service's settings (no silent typo)."""
    from serve.settings import ENV_PREFIX, ServeSettings

    fields = set(ServeSettings.model_fields)
    for path, dep in _kind("Deployment"):
        for c in _containers(dep):
            for env in c.get("env", []):
                if env["name"].startswith(ENV_PREFIX):
                    assert env["name"][len(ENV_PREFIX):].lower() in fields, f"{path}: {env['name']}"


def _distill_invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after ``-m distill``) for every distill command in the sbatch files and manifests."""
    found = []
    for path in SBATCH:
        for line in _sbatch_command(path):
            argv = shlex.split(line)
            found.append((path.name, argv[argv.index("-m") + 2:]))
    for path, job in _kind("PyTorchJob"):
        for c in _containers(job):
            cmd = [*c.get("command", []), *c.get("args", [])]
            found.append((path.name, cmd[cmd.index("-m") + 2:]))
    return found


def test_launch_commands_use_real_distill_options() -> None:
    """Options in the launch files exist on the command they call (catches drift when a CLI option is renamed)."""
    import typer.main

    from distill.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    invocations = _distill_invocations()
    assert invocations
    for where, argv in invocations:
        sub = commands[argv[0]]
        known = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
        for tok in argv[1:]:
            if tok.startswith("--"):
                assert tok.split("=")[0] in known, f"{where}: distill {argv[0]} has no option {tok}"


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_is_valid_bash(path: Path) -> None:
    import subprocess

    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_train_configs_named_by_the_launch_files_exist_and_validate() -> None:
    """``--config`` of every ``distill train`` launch names a file in configs/ (the k8s job mounts configs/ as a
    ConfigMap at /configs) that validates as a TrainConfig; no data is read."""
    from distill.config import load_config
    from distill.train import TrainConfig

    configs = {argv[argv.index("--config") + 1] for _, argv in _distill_invocations()
               if argv[0] == "train" and "--config" in argv}
    assert configs
    for name in configs:
        path = REPO / "configs" / Path(name).name
        assert path.is_file() and (name.startswith("configs/") or name.startswith("/configs/")), name
        cfg = load_config(TrainConfig, path)
        if cfg.data.unlabeled_shards:
            assert cfg.teacher_store, f"{name}: a streamed pool needs a teacher store"
        if path.name == "imagenet_dho.yaml":  # docs/method.md's ImageNet setting
            assert (cfg.batch_labeled, cfg.batch_unlabeled, cfg.lr, cfg.weight_decay, cfg.epochs) == (256, 256, 5e-5, 0.05, 32)
            assert cfg.method == "dho" and cfg.student.arch.startswith("vit_base_patch16") and cfg.student.size == 224
            assert cfg.teacher.name == "ViT-L-14" and cfg.teacher.weights and cfg.data.unlabeled_shards
