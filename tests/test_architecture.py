"""Architecture contracts: the one-way flow, a torch-free runtime, no import cycle, and an artifact that loads and
runs while torch cannot be imported at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "export", "serve", "edge_bench")


def test_import_linter_contracts_hold():
    """``lint-imports`` with the contracts in pyproject.toml (layers distill -> export -> serve | edge_bench; the
    runtime's modules import no torch, model zoo or exporter, deferred imports included)."""
    exe = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(exe), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def import_cycles(*packages: str) -> list[list[str]]:
    """Strongly connected components (size > 1) of the module import graph, deferred imports included."""
    import grimp

    graph = grimp.build_graph(*packages, include_external_packages=False, cache_dir=None)
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph has a few hundred modules, recursion depth is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(adj):
        if m not in index:
            visit(m)
    return cycles


def test_product_packages_have_no_import_cycle():
    assert import_cycles(*PACKAGES) == []


_BLOCKED_RUN = r"""
import importlib.abc, json, sys
BLOCKED = ("torch", "torchvision", "timm", "open_clip", "export.pipeline", "export.fold", "export.onnx_export",
           "export.quantize", "export.verify", "export.teacher", "export.tensorrt")

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
import numpy as np
from export.runtime import load_artifact

out = {}
for path in sys.argv[2:]:
    art = load_artifact(path, providers=["CPUExecutionProvider"])
    out[path] = {"probs": art.classify(json.loads(sys.argv[1])).tolist(), "kind": art.meta.kind,
                 "top": art.top_k(art.classify(json.loads(sys.argv[1])[:1]), 1)[0][0].label}
try:
    import torch  # noqa: F401
except ImportError:
    out["torch_blocked"] = True
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_head_artifact(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export import export_onnx

    out = tmp_path_factory.mktemp("two_head") / "two.onnx"
    export_onnx(tiny_checkpoint, out, fold_heads=False, max_verify_images=20, verbose=False)
    return out


def test_artifacts_load_and_run_with_torch_blocked(tiny_artifact: Path, two_head_artifact: Path, real_jpegs):
    """A folded and a two-head artifact (whose blend the runtime applies) classify real JPEGs in a process where
    importing torch or any exporter raises; the probabilities equal those of a normal process."""
    from export.runtime import load_artifact

    images = [str(p) for p in real_jpegs[:6]]
    res = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, json.dumps(images), str(tiny_artifact),
                          str(two_head_artifact)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["torch_blocked"] is True
    for path in (tiny_artifact, two_head_artifact):
        want = load_artifact(path).classify(images)
        np.testing.assert_allclose(np.asarray(got[str(path)]["probs"]), want, atol=1e-6)
    assert got[str(two_head_artifact)]["kind"] == "two_head"


def test_method_citations_point_at_the_page_in_the_repository():
    """Code and configs cite docs/method.md (which exists), never a bare method.md from outside the repository."""
    import re

    assert (ROOT / "docs" / "method.md").is_file()
    bare = []
    for folder in (*PACKAGES, "configs", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".sh") and re.search(r"(?<!docs/)method\.md", path.read_text()):
                bare.append(str(path.relative_to(ROOT)))
    assert bare == []


def serve_closure() -> set[str]:
    """Files of distill/ and export/ that serve imports, directly or not (deferred imports and package __init__s
    included; imports under ``if TYPE_CHECKING`` are not real imports)."""
    import grimp

    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None,
                              exclude_type_checking_imports=True)
    seen: set[str] = set()
    todo = [m for m in graph.modules if m.split(".")[0] == "serve"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [*graph.find_modules_directly_imported_by(m), *(".".join(parts[:i]) for i in range(1, len(parts)))]
    files = set()
    for m in seen:
        if m.split(".")[0] in ("distill", "export"):
            p = Path(*m.split("."))
            files.add((p / "__init__.py").as_posix() if (ROOT / p / "__init__.py").exists() else f"{p.as_posix()}.py")
    return files


def test_serving_image_file_list_covers_what_serve_imports():
    sys.path.insert(0, str(ROOT / "scripts" / "container"))
    try:
        from prune_to_serving import serving_files
    finally:
        sys.path.pop(0)
    need = serve_closure()
    assert need <= serving_files(), f"add to scripts/container/serving_files.txt: {sorted(need - serving_files())}"
    assert "export/pipeline.py" not in serving_files() and "distill/train/loop.py" not in serving_files()


def test_pruned_serving_tree_serves_without_torch_or_onnx(tmp_path: Path, tiny_artifact: Path, real_jpegs):
    """The tree the image installs (prune_to_serving.py on a copy) imports the app and classifies real JPEGs while
    torch, timm, open_clip and onnx cannot be imported (onnxruntime reads the metadata)."""
    import shutil

    src = tmp_path / "src"
    for item in ("distill", "export", "serve", "edge_bench", "scripts/container"):
        shutil.copytree(ROOT / item, src / item, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, str(src / "scripts/container/prune_to_serving.py"), str(src)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert not (src / "edge_bench").exists() and not (src / "export" / "pipeline.py").exists()
    code = _BLOCKED_RUN.replace('BLOCKED = (', 'BLOCKED = ("onnx", ').replace(
        "from export.runtime import load_artifact", "import serve.app, serve.cli\nfrom export.runtime import load_artifact")
    res = subprocess.run([sys.executable, "-c", code, json.dumps([str(p) for p in real_jpegs[:3]]), str(tiny_artifact)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["torch_blocked"] and len(got[str(tiny_artifact)]["probs"]) == 3
