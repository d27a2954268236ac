"""The same Dockerfile built for linux/arm64 and run under qemu-user-static: a real JPEG classified on aarch64
gives the x86 image's top-5 (scores within 1e-4).

Opt-in (DISTILL_ARM64_TESTS=1, as root): debootstrapping an arm64 base and pip-installing the wheels under
emulation takes far longer than CI's 30 minutes on 2 cores (measured: docs/results.md, issue 16), so it is not
part of CI; the last result and the command are recorded in docs/results.md. No latency is checked: the
emulator's speed says nothing about a board.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(not (os.environ.get("DISTILL_ARM64_TESTS") == "1" and os.geteuid() == 0),
                       reason="builds the arm64 image under qemu (root, apt, package index, about an hour on 2 "
                              "cores); set DISTILL_ARM64_TESTS=1"),
]


@pytest.mark.timeout(3 * 3600)
def test_arm64_image_classifies_like_x86(tiny_artifact, artifact, clothing_small_dir, tmp_path):
    jpeg = sorted(clothing_small_dir.rglob("*.jpg"))[0]  # a real photo of realistic size: resize + crop on aarch64
    report_path = tmp_path / "arm64.json"
    r = subprocess.run([sys.executable, str(REPO / "scripts/container/build_and_run.py"), "--arch", "arm64",
                        "--model", str(tiny_artifact), "--image", str(jpeg), "--top-k", "5",
                        "--json", str(report_path)], capture_output=True, text=True, timeout=3 * 3600 - 60)
    assert report_path.exists(), r.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert r.returncode == 0 and not report["problems"], (report["problems"], r.stderr[-3000:])
    assert report["emulated"] and report["image_arch"] == "arm64"
    assert report["container_platform"]["machine"] == "aarch64"
    got = report["answer"]["results"][0]["predictions"]
    # the x86 answer: the same artifact through the same runtime on this host (what the x86 image runs)
    want = artifact.top_k(artifact.classify([jpeg]), 5)[0]
    assert [p["label"] for p in got] == [p.label for p in want]
    assert np.allclose([p["score"] for p in got], [p.score for p in want], atol=1e-4)
