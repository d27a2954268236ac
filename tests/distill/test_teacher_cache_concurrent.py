"""Two runs side by side share the teacher cache: one computes under the lock, the other waits and reuses.

Order is forced with pipes, not sleeps: run A's teacher announces it is computing (holding the lock) and blocks
on its stdin; run B is started and must report that it waits; then A is released. B must compute nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKER = r'''
import json, logging, sys, time
import torch
from distill.data import list_image_folder
from distill.preprocess import PreprocessSpec
from distill.teachers import teacher_logits_for
from distill.teachers.base import Teacher

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
gate = sys.argv[3] == "gate"

class Counting(Teacher):
    kind = "test"
    def __init__(self):
        super().__init__("counting", ["a", "b"], PreprocessSpec(size=8, resize_size=8), {"v": 1})
        self.calls = 0
    def _native_logits(self, x):
        if gate and self.calls == 0:
            print("computing", flush=True)   # holds the lock now
            sys.stdin.readline()             # until the test releases it
        self.calls += len(x)
        return x.mean(dim=(2, 3))[:, :2]

names, samples = list_image_folder(sys.argv[1])
t0 = time.perf_counter()
logits, info = teacher_logits_for(Counting(), samples, sys.argv[2], 4, "cpu", progress=False)
print(json.dumps({"computed": info.computed, "hits": info.hits, "waited_s": info.waited_s,
                  "seconds": time.perf_counter() - t0,
                  "sum": float(logits.sum())}), flush=True)
'''


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    return tmp_path / "imgs"


def _start(images: Path, cache: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(images), str(cache), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_second_run_waits_for_the_first_and_reuses_its_outputs(images: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = _start(images, cache, "gate")
    try:
        assert a.stdout.readline().strip() == "computing"  # A holds the lock
        b = _start(images, cache, "free")
        try:
            line = b.stderr.readline()
            assert "another run is computing these teacher outputs" in line, line  # B blocks on the lock
            a.stdin.write("\n")
            a.stdin.flush()
            out_a, err_a = a.communicate(timeout=120)
            out_b, err_b = b.communicate(timeout=120)
        finally:
            b.kill()
    finally:
        a.kill()
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    ra, rb = json.loads(out_a.strip().splitlines()[-1]), json.loads(out_b.strip().splitlines()[-1])
    assert ra["computed"] == 12 and ra["hits"] == 0
    assert rb["computed"] == 0 and rb["hits"] == 12  # computed once, for both runs
    assert ra["waited_s"] == 0.0 and rb["waited_s"] > 0.0  # the wait is reported (it ends the summary's set-up line)
    assert rb["sum"] == ra["sum"]
