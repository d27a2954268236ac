"""Jetson support: board detection, power mode (``nvpmodel -q``) and power sampling with ``tegrastats``.

``tegrastats`` prints one line per interval; the board's input rail is ``VDD_IN`` (Orin, Xavier) or
``POM_5V_IN`` (Nano, TX2), as ``<now>mW/<avg>mW`` (JetPack 5+) or ``<now>/<avg>`` (older releases), both in mW.
Energy per image = mean input power over the scenario's window x its duration / images processed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN)\s+(\d+)(?:mW)?/(\d+)(?:mW)?")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DT_MODEL = Path("/proc/device-tree/model")


def parse_tegrastats_line(line: str) -> dict[str, Any] | None:
    """``{"rail": "VDD_IN", "power_mw": 4988, "avg_mw": 4990}`` from one tegrastats line, or None."""
    m = _RAIL.search(line)
    if not m:
        return None
    return {"rail": m.group(1), "power_mw": int(m.group(2)), "avg_mw": int(m.group(3))}


def detect_jetson(release: Path = TEGRA_RELEASE, dt_model: Path = DT_MODEL) -> dict[str, Any] | None:
    """Board facts on a Jetson (None elsewhere)."""
    model = None
    if dt_model.exists():
        try:
            model = dt_model.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
        except OSError:
            model = None
    is_jetson = release.exists() or bool(model and ("jetson" in model.lower() or "nvidia" in model.lower()))
    if not is_jetson:
        return None
    info: dict[str, Any] = {"board": model or "NVIDIA Jetson (model unknown)"}
    if release.exists():
        try:
            info["l4t_release"] = release.read_text(errors="replace").splitlines()[0].strip("# ").strip()
        except (OSError, IndexError):
            pass
    info["power_mode"] = nvpmodel_mode()
    info["tegrastats"] = shutil.which("tegrastats") is not None
    return info


def nvpmodel_mode() -> str | None:
    exe = shutil.which("nvpmodel")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("NVPM WARN")]
    return " ".join(lines) or None


class TegrastatsSampler:
    """Runs ``tegrastats --interval MS`` in the background; ``window()`` marks a scenario's start and end."""

    def __init__(self, interval_ms: int = 100, exe: str | None = None) -> None:
        self.interval_ms = interval_ms
        self.exe = exe or shutil.which("tegrastats")
        self.samples: list[tuple[float, int]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.exe is not None

    def start(self) -> "TegrastatsSampler":
        if not self.exe or self._proc:
            return self
        self._proc = subprocess.Popen([self.exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            s = parse_tegrastats_line(line)
            if s:
                with self._lock:
                    self.samples.append((time.perf_counter(), s["power_mw"]))

    def feed(self, line: str, t: float | None = None) -> None:
        """Add one line by hand (tests; replaying a tegrastats log)."""
        s = parse_tegrastats_line(line)
        if s:
            with self._lock:
                self.samples.append((time.perf_counter() if t is None else t, s["power_mw"]))

    def energy(self, t0: float, t1: float, images: int) -> dict[str, Any] | None:
        """Mean power in [t0, t1] and energy per image (mJ); None without samples in the window."""
        with self._lock:
            window = [p for t, p in self.samples if t0 <= t <= t1]
        if not window or images <= 0:
            return None
        mean_mw = sum(window) / len(window)
        return {"power_mean_mw": mean_mw, "power_samples": len(window),
                "energy_per_image_mj": mean_mw * (t1 - t0) / images}

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
            self._proc = None
