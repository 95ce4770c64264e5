"""What this host is, for profiles that stand for it (`isa: auto`)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def host_isa() -> str:
    """`x86-avx512` (AVX-512 with VNNI), `x86`, or `arm64`, read from the CPU flags."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    return "x86-avx512" if {"avx512f", "avx512_vnni"} <= set(flags) else "x86"
