"""The CPU's instruction-set features that decide which kernels run (torch-free, standard library only).

int8 and bf16 speed depend on them: x86 AVX2 without VNNI multiplies u8*s8 pairs with ``vpmaddubsw`` (int16
saturation, hence 7-bit weights), AVX-512 VNNI / AVX-VNNI have a saturation-free dot product, AMX has int8 and
bf16 tile units; Arm has NEON everywhere, ``dotprod`` (sdot/udot), ``i8mm`` (smmla) and SVE. The edge_bench
environment record names them (every result carries them), :mod:`export.quantize` picks the int8
configuration measured best for the ISA class (:func:`isa_class`) and training picks bf16 autocast on a CPU
with native bf16 (:mod:`distill.device`). The one home of /proc/cpuinfo parsing.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

#: feature name -> the /proc/cpuinfo flag(s) that report it (any of them)
X86_FEATURES = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx512f": ("avx512f",),
    "avx512bw": ("avx512bw",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_fp16": ("avx512_fp16",),
    "amx_tile": ("amx_tile",),
    "amx_int8": ("amx_int8",),
    "amx_bf16": ("amx_bf16",),
    "amx_fp16": ("amx_fp16",),
    "f16c": ("f16c",),
}
ARM_FEATURES = {
    "neon": ("asimd", "neon"),
    "dotprod": ("asimddp",),
    "i8mm": ("i8mm",),
    "bf16": ("bf16",),
    "fp16": ("fphp", "asimdhp"),
    "sve": ("sve",),
    "sve2": ("sve2",),
}


def parse_cpuinfo(text: str, machine: str) -> list[str]:
    """Our feature names present in a /proc/cpuinfo text (x86 ``flags`` or Arm ``Features`` line)."""
    table = ARM_FEATURES if machine.lower() in ("aarch64", "arm64") or machine.lower().startswith("arm") else X86_FEATURES
    have: set[str] = set()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            have |= set(line.split(":", 1)[1].split())
    if table is ARM_FEATURES and machine.lower() in ("aarch64", "arm64"):
        have.add("asimd")  # Advanced SIMD is mandatory on AArch64 (emulators do not always list it)
    return [name for name, flags in table.items() if any(f in have for f in flags)]


@lru_cache(maxsize=1)
def cpu_features() -> tuple[str, ...]:
    """This CPU's features (see :data:`X86_FEATURES` / :data:`ARM_FEATURES`); empty where /proc/cpuinfo is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    return tuple(parse_cpuinfo(text, platform.machine()))


def cpu_model() -> str:
    """The CPU's model name (x86 ``model name``, Arm ``Hardware`` / ``CPU model``), else what platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def classify(features: tuple[str, ...] | list[str], machine: str) -> str:
    """The ISA class that decides the int8 kernels: ``x86-amx``, ``x86-avx512-vnni``, ``x86-avx-vnni``,
    ``x86-avx512``, ``x86-avx2``, ``x86``, ``arm-i8mm``, ``arm-dotprod``, ``arm-neon`` or ``other``."""
    f = set(features)
    m = machine.lower()
    if m in ("x86_64", "amd64", "i686", "x86"):
        for cls, need in (("x86-amx", "amx_int8"), ("x86-avx512-vnni", "avx512_vnni"), ("x86-avx-vnni", "avx_vnni"),
                          ("x86-avx512", "avx512bw"), ("x86-avx2", "avx2")):
            if need in f:
                return cls
        return "x86"
    if m in ("aarch64", "arm64") or m.startswith("arm"):
        for cls, need in (("arm-i8mm", "i8mm"), ("arm-dotprod", "dotprod")):
            if need in f:
                return cls
        return "arm-neon"
    return "other"


def isa_class() -> str:
    return classify(cpu_features(), platform.machine())


def isa_record() -> dict[str, object]:
    """What a result records: the machine, the features and the class."""
    return {"machine": platform.machine(), "features": list(cpu_features()), "class": isa_class()}


__all__ = ["ARM_FEATURES", "X86_FEATURES", "classify", "cpu_features", "cpu_model", "isa_class", "isa_record", "parse_cpuinfo"]
