"""A killed run resumed from last.pt ends with exactly the weights and metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.realdata

REPO = Path(__file__).resolve().parents[2]


def _args(cifar_small_dir: Path, resnet56_weights: Path, cache: Path, out: Path) -> list[str]:
    return ["train", "--data", str(cifar_small_dir), "--shots", "2", "--teacher", "cifar_resnet56",
            "--teacher-weights", str(resnet56_weights), "--student", "cifar_resnet8", "--batch-size", "8",
            "--cache-dir", str(cache), "--no-progress", "--steps", "6", "--eval-every", "3",
            "--set", "checkpoint_every=2", "--set", "plots=false", "--out", str(out)]


def _val_events(run: Path) -> list[dict]:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "val"]


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["step"] == sb["step"]
    for key, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][key]), key
    assert sa["blend"] == sb["blend"]


@pytest.fixture(scope="module")
def reference(cifar_small_dir: Path, resnet56_weights: Path, tmp_path_factory: pytest.TempPathFactory,
              distill_main) -> tuple[Path, Path]:
    cache = tmp_path_factory.getbasetemp() / "distill_train_cache"  # shared with test_train.py
    cache.mkdir(exist_ok=True)
    out = tmp_path_factory.mktemp("ref") / "run"
    assert distill_main(_args(cifar_small_dir, resnet56_weights, cache, out)) == 0
    return out, cache


def test_killed_run_resumes_identically(reference: tuple[Path, Path], cifar_small_dir: Path, resnet56_weights: Path,
                                        tmp_path: Path, distill_main) -> None:
    from distill.train.loop import KILL_ENV

    ref, cache = reference
    out = tmp_path / "killed"
    env = {**os.environ, KILL_ENV: "5"}
    proc = subprocess.run([sys.executable, "-m", "distill", *_args(cifar_small_dir, resnet56_weights, cache, out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL after step 5: no clean-up ran
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4
    assert not (out / "summary.json").exists()

    assert distill_main(["train", "--resume", "--out", str(out)]) == 0
    _same_weights(ref / "last.pt", out / "last.pt")
    _same_weights(ref / "best.pt", out / "best.pt")
    assert _val_events(ref) == _val_events(out)
    assert json.loads((out / "summary.json").read_text())["completed"]


def test_max_steps_stop_then_resume_is_identical(reference: tuple[Path, Path], cifar_small_dir: Path,
                                                 resnet56_weights: Path, tmp_path: Path, distill_main) -> None:
    ref, cache = reference
    out = tmp_path / "stopped"
    assert distill_main([*_args(cifar_small_dir, resnet56_weights, cache, out), "--max-steps", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["completed"] and summary["steps"] == 3
    assert distill_main(["train", "--resume", "--out", str(out), "--max-steps", "0"]) == 0
    _same_weights(ref / "last.pt", out / "last.pt")
    assert _val_events(ref) == _val_events(out)


def test_resume_refuses_a_different_config(reference: tuple[Path, Path], run_cli) -> None:
    ref, _ = reference
    code, _, err = run_cli(["train", "--resume", "--out", str(ref), "--method", "kd"])
    assert code == 2 and "cannot resume" in err and "method" in err
    code, _, err = run_cli(["train", "--config", str(ref / "config.yaml")])  # an existing run is not overwritten
    assert code == 2 and "--resume" in err


def test_interrupt_saves_a_resumable_checkpoint_and_says_so(reference: tuple[Path, Path], cifar_small_dir: Path,
                                                            resnet56_weights: Path, tmp_path: Path,
                                                            distill_main) -> None:
    """A real SIGINT (Ctrl-C) after step 3: last.pt at step 3 (checkpoint_every=2 would have left step 2), one
    line naming it, exit 130; the resumed run ends exactly as the uninterrupted one."""
    from distill.train.hooks import SIGNAL_ENV

    ref, cache = reference
    out = tmp_path / "interrupted"
    env = {**os.environ, SIGNAL_ENV: "3:INT"}
    proc = subprocess.run([sys.executable, "-m", "distill", *_args(cifar_small_dir, resnet56_weights, cache, out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-2000:]
    said = [line for line in proc.stderr.splitlines() if "interrupted" in line]
    assert len(said) == 1 and "SIGINT after step 3/6" in said[0] and "last.pt" in said[0] and "--resume" in said[0]
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    assert not (out / "summary.json").exists()
    assert distill_main(["train", "--resume", "--out", str(out)]) == 0
    _same_weights(ref / "last.pt", out / "last.pt")
    assert _val_events(ref) == _val_events(out)


def test_interrupt_guard_catches_sigterm_once_then_steps_aside() -> None:
    from distill.train.hooks import InterruptGuard

    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
    try:
        with InterruptGuard() as guard:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled before kill() returns to Python code
            assert guard.signum == signal.SIGTERM and guard.name == "SIGTERM" and calls == []
            os.kill(os.getpid(), signal.SIGTERM)  # the second one reaches the previous handler
            assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not guard._handle
    finally:
        signal.signal(signal.SIGTERM, previous)
