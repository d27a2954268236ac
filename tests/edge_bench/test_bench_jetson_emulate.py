"""tegrastats parsing, Jetson detection, power windows, and the emulation plan."""

from __future__ import annotations

import pytest

from distill.errors import ConfigError
from edge_bench.emulate import CAVEAT, resolve_emulation, usable_cores
from edge_bench.jetson import TegrastatsSampler, detect_jetson, parse_tegrastats_line

ORIN = ("11-24-2025 10:00:01 RAM 2448/7620MB (lfb 4x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729,0%@729,"
        "0%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] VIC_FREQ 115 APE 200 CV0@-256C CPU@46.5C "
        "SOC2@44.2C SOC0@44.7C CV1@-256C GPU@-256C tj@46.5C SOC1@44.2C CV2@-256C VDD_IN 4988mW/5012mW "
        "VDD_CPU_GPU_CV 558mW/561mW VDD_SOC 1476mW/1480mW")
NANO = ("RAM 1497/3956MB (lfb 97x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [9%@1479,4%@1479,"
        "3%@1479,2%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25 PLL@25C CPU@27.5C PMIC@100C GPU@26C AO@35.5C "
        "thermal@26.75C POM_5V_IN 3197/3197 POM_5V_GPU 0/0 POM_5V_CPU 479/479")
XAVIER = "RAM 3000/15000MB CPU [5%@1190] VDD_IN 6204/6204 VDD_CPU_GPU_CV 1200/1200"


def test_parse_tegrastats_lines():
    assert parse_tegrastats_line(ORIN) == {"rail": "VDD_IN", "power_mw": 4988, "avg_mw": 5012}
    assert parse_tegrastats_line(NANO) == {"rail": "POM_5V_IN", "power_mw": 3197, "avg_mw": 3197}
    assert parse_tegrastats_line(XAVIER) == {"rail": "VDD_IN", "power_mw": 6204, "avg_mw": 6204}
    assert parse_tegrastats_line("RAM 1/2MB CPU [1%@100]") is None
    assert parse_tegrastats_line("") is None


def test_sampler_energy_window():
    s = TegrastatsSampler(exe="/nonexistent")
    for t, line in ((1.0, ORIN), (1.5, ORIN.replace("4988mW", "5012mW")), (9.0, NANO)):
        s.feed(line, t=t)
    e = s.energy(0.5, 2.0, images=100)
    assert e["power_samples"] == 2 and e["power_mean_mw"] == pytest.approx(5000)
    assert e["energy_per_image_mj"] == pytest.approx(5000 * 1.5 / 100)
    assert s.energy(3.0, 4.0, images=10) is None


def test_detect_jetson(tmp_path):
    assert detect_jetson(tmp_path / "none", tmp_path / "none2") is None
    rel = tmp_path / "nv_tegra_release"
    rel.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit\x00")
    info = detect_jetson(rel, model)
    assert info["board"].startswith("NVIDIA Jetson Orin Nano") and info["l4t_release"].startswith("R36")
    assert "power_mode" in info and "tegrastats" in info


def test_emulation_plan():
    assert resolve_emulation(None) is None and resolve_emulation("none") is None
    plan = resolve_emulation("rpi5")
    assert plan["label"] == "emulation:rpi5" and plan["target_cores"] == 4 and CAVEAT in plan["notes"]
    n = len(usable_cores())
    assert plan["intra_op_threads"] == min(4, n) and len(plan["pinned_cores"]) == min(4, n)
    assert plan["degraded"] == (n < 4)
    if n < 4:
        assert any("fewer than the 4" in note for note in plan["notes"])
    assert resolve_emulation("orin-nano")["target_cores"] == 6
    with pytest.raises(ConfigError, match="unknown --emulate"):
        resolve_emulation("pi-zero")
