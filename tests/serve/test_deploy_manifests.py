"""deploy/ manifests against the Kubernetes schemas, offline (kubernetes-validate 1.37, strict: unknown fields fail).

KServe's ``InferenceService`` CRD schema is not available offline, so its own fields are checked by hand against
the v1beta1 API (the field lists below), and every pod-level part of it (containers, env, probes, resources) is
validated with the real Kubernetes schema by placing it in a Pod.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"
BUILTIN = {"apps/v1", "v1", "autoscaling/v2", "batch/v1"}

# serving.kserve.io/v1beta1 (KServe 0.13+): PredictorSpec = PodSpec fields + ComponentExtensionSpec + model/framework
PREDICTOR_FIELDS = {"model", "containers", "volumes", "serviceAccountName", "nodeSelector", "tolerations",
                    "affinity", "imagePullSecrets", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
                    "annotations", "deploymentStrategy", "workerSpec", "triton", "onnx", "securityContext"}
MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri", "storage", "runtimeVersion",
                "name", "image", "args", "command", "env", "resources", "ports", "readinessProbe", "livenessProbe",
                "volumeMounts"}
CONTAINER_PART_OF_MODEL = {"args", "command", "env", "resources", "ports", "readinessProbe", "livenessProbe",
                           "volumeMounts"}


def _docs(folder: str) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted((REPO / "deploy" / folder).glob("*.yaml")):
        out += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def _as_pod(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": containers}}


def test_builtin_kinds_validate_against_the_kubernetes_schema() -> None:
    docs = [(p, d) for p, d in _docs("k8s") if d["apiVersion"] in BUILTIN]
    assert {d["kind"] for _, d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for path, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_can_fail() -> None:
    path, dep = next((p, d) for p, d in _docs("k8s") if d["kind"] == "Deployment")
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_deployment_sets_onnxruntime_threads_from_its_cpu_limit() -> None:
    for path, dep in _docs("k8s"):
        if dep["kind"] != "Deployment":
            continue
        for c in dep["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            ref = env["DISTILL_SERVE_INTRA_OP_THREADS"]["valueFrom"]["resourceFieldRef"]
            assert ref == {"containerName": c["name"], "resource": "limits.cpu", "divisor": "1"}, path
            assert "cpu" in c["resources"]["limits"]


def _isvcs() -> dict[str, dict[str, Any]]:
    found = {d["metadata"]["name"]: d for _, d in _docs("kserve")}
    assert all(d["apiVersion"] == "serving.kserve.io/v1beta1" and d["kind"] == "InferenceService"
               for d in found.values())
    return found


def test_kserve_triton_runtime_serves_an_exported_repository_over_v2() -> None:
    isvc = _isvcs()["distill-triton"]
    pred = isvc["spec"]["predictor"]
    assert set(pred) <= PREDICTOR_FIELDS, set(pred) - PREDICTOR_FIELDS
    model = pred["model"]
    assert set(model) <= MODEL_FIELDS, set(model) - MODEL_FIELDS
    assert model["modelFormat"] == {"name": "triton"} and model["protocolVersion"] == "v2"
    assert model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"].startswith(("pvc://", "s3://", "gs://"))
    # the container-level parts are real Kubernetes container fields
    container = {"name": "kserve-container", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                 **{k: v for k, v in model.items() if k in CONTAINER_PART_OF_MODEL}}
    kubernetes_validate.validate(_as_pod([container]), K8S_VERSION, strict=True)
    assert pred["minReplicas"] <= pred["maxReplicas"]


def test_kserve_custom_predictor_runs_our_container_on_the_repository() -> None:
    from serve.settings import ENV_PREFIX, ServeSettings

    pred = _isvcs()["distill-serve"]["spec"]["predictor"]
    assert set(pred) <= PREDICTOR_FIELDS, set(pred) - PREDICTOR_FIELDS
    containers = pred["containers"]
    assert [c["name"] for c in containers] == ["kserve-container"]  # the name KServe routes to
    kubernetes_validate.validate(_as_pod(containers), K8S_VERSION, strict=True)
    c = containers[0]
    env = {e["name"]: e for e in c["env"]}
    for name in env:
        if name.startswith(ENV_PREFIX):
            assert name[len(ENV_PREFIX):].lower() in ServeSettings.model_fields, name
    assert env["DISTILL_SERVE_MODEL_REPOSITORY"]["value"] == "/mnt/models"  # where KServe's storage initializer
    assert env["STORAGE_URI"]["value"].startswith("pvc://")                # copies STORAGE_URI
    assert env["DISTILL_SERVE_INTRA_OP_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert "secretKeyRef" in env["DISTILL_SERVE_API_TOKEN"]["valueFrom"]
    # the probes point at routes the repository app really serves, without a token
    from serve.security import is_open

    for probe in ("readinessProbe", "livenessProbe"):
        path = c[probe]["httpGet"]["path"]
        assert path.startswith("/v2/health/") and is_open(path)
        assert c[probe]["httpGet"]["port"] == c["ports"][0]["containerPort"] == int(env["DISTILL_SERVE_PORT"]["value"])
