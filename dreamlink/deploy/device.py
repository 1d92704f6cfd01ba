"""What this device is: CPU model and the SIMD features ONNX Runtime's kernels use, clock source.

Read from /proc and /sys (the paths are parameters so tests and chroots can point elsewhere).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# Features ONNX Runtime's CPU kernels (MLAS) pick fast paths on; the rest of the flag list is noise here.
SIMD_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx_vnni", "amx_tile", "neon", "asimd", "asimdhp", "asimddp", "sve", "i8mm", "bf16",
)  # fmt: skip
CLOCKSOURCE = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    cores: int
    flags: frozenset[str]

    @property
    def simd(self) -> tuple[str, ...]:
        return tuple(f for f in SIMD_FLAGS if f in self.flags)


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """CPU model and flags. x86 lists `flags`; ARM lists `Features` (asimd is NEON on aarch64)."""
    model, cores = "", 0
    flags: set[str] = set()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            cores += 1
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:
        # Raspberry Pi 4/5 kernels print no model name; the device tree does.
        dt = Path("/proc/device-tree/model")
        model = dt.read_text(errors="replace").strip("\x00\n ") if dt.is_file() else platform.processor() or "unknown"
    arch = platform.machine()
    if arch in ("aarch64", "arm64"):
        flags.add("neon")  # Advanced SIMD is mandatory on AArch64
    return CpuInfo(model=model, arch=arch, cores=cores or 1, flags=frozenset(flags))


def read_text_or_none(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def clock_source(path: Path = CLOCKSOURCE) -> str | None:
    return read_text_or_none(path)


def cpu_governor(path: Path = GOVERNOR) -> str | None:
    return read_text_or_none(path)
