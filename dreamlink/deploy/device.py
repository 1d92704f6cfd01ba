"""What this device is: CPU model, the SIMD features ONNX Runtime's kernels use, clock source, emulation.

Read from /proc and /sys (the paths are parameters so tests and chroots can point elsewhere).
On ARM the features come from /proc/cpuinfo `Features` and from the kernel's HWCAP words in
/proc/self/auxv; under user-mode emulation (qemu-user running an arm64 root filesystem on an
x86 host) /proc/cpuinfo describes the host, so HWCAP, which the emulator fills for the CPU it
emulates, is the one to trust, and the kernel's own architecture gives the emulation away.
"""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass
from pathlib import Path

# Features ONNX Runtime's CPU kernels (MLAS) pick fast paths on; the rest of the flag list is noise here.
SIMD_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx_vnni", "amx_tile", "neon", "asimd", "fphp", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16",
)  # fmt: skip
# The AArch64 features that decide int8 and fp16 speed, in the words a datasheet uses, and the
# /proc/cpuinfo names that must all be present for each.
ARM_FEATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("NEON/asimd", ("asimd",)),
    ("dotprod (int8 SDOT)", ("asimddp",)),
    ("i8mm (int8 matmul)", ("i8mm",)),
    ("fp16 arithmetic", ("fphp", "asimdhp")),
    ("bf16", ("bf16",)),
    ("SVE", ("sve",)),
)
# Linux arch/arm64/include/uapi/asm/hwcap.h: bit -> /proc/cpuinfo name (only the ones reported above).
HWCAP_BITS = {0: "fp", 1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
HWCAP2_BITS = {1: "sve2", 13: "i8mm", 14: "bf16"}
AT_HWCAP, AT_HWCAP2 = 16, 26
# CPU part numbers of Arm Ltd (implementer 0x41) cores on the boards dreamlink targets.
ARM_CORES = {0xD03: "Cortex-A53", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
             0xD0B: "Cortex-A76", 0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE", 0xD4F: "Neoverse-V2"}
ARM_ARCHES = ("aarch64", "arm64")
CLOCKSOURCE = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
KERNEL_ARCH = Path("/proc/sys/kernel/arch")
AUXV = Path("/proc/self/auxv")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    cores: int
    flags: frozenset[str]
    # Set when this userland runs emulated: what the kernel really runs on, e.g. "x86_64 kernel, ...".
    emulated_on: str | None = None

    @property
    def simd(self) -> tuple[str, ...]:
        return tuple(f for f in SIMD_FLAGS if f in self.flags)

    @property
    def is_arm64(self) -> bool:
        return self.arch in ARM_ARCHES

    def arm_features(self) -> tuple[tuple[str, bool], ...]:
        """(name, present) for each int8/fp16-relevant AArch64 feature."""
        return tuple((name, all(f in self.flags for f in needs)) for name, needs in ARM_FEATURES)


def parse_cpuinfo(text: str) -> tuple[str, int, set[str], bool]:
    """(model, cores, flags, looks_x86) from /proc/cpuinfo text. x86 lists `flags`; ARM lists `Features`."""
    model, cores = "", 0
    flags: set[str] = set()
    x86 = False
    implementer = part = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            cores += 1
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
            x86 = x86 or key == "flags"
        elif key == "vendor_id":
            x86 = True
        elif key == "cpu implementer" and implementer is None:
            implementer = _int(value)
        elif key == "cpu part" and part is None:
            part = _int(value)
    if not model and implementer == 0x41 and part in ARM_CORES:
        model = ARM_CORES[part]
    return model, cores, flags, x86


def parse_auxv_hwcaps(data: bytes) -> set[str]:
    """Feature names from the AT_HWCAP/AT_HWCAP2 words of a 64-bit little-endian auxv (/proc/self/auxv)."""
    names: set[str] = set()
    for i in range(0, len(data) - 15, 16):
        key, value = struct.unpack_from("<QQ", data, i)
        table = HWCAP_BITS if key == AT_HWCAP else HWCAP2_BITS if key == AT_HWCAP2 else None
        if table:
            names.update(name for bit, name in table.items() if value >> bit & 1)
    return names


def read_cpu(
    cpuinfo: Path = Path("/proc/cpuinfo"),
    auxv: Path = AUXV,
    kernel_arch: Path = KERNEL_ARCH,
    machine: str | None = None,
    device_tree_model: Path = DEVICE_TREE_MODEL,
) -> CpuInfo:
    """CPU model, core count, SIMD features and, when the kernel runs another architecture, emulation."""
    arch = machine or platform.machine()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    model, cores, flags, x86 = parse_cpuinfo(text)
    host_arch = read_text_or_none(kernel_arch)
    emulated_on = None
    if arch in ARM_ARCHES and (x86 or (host_arch is not None and host_arch not in ARM_ARCHES)):
        # /proc/cpuinfo and the model are the host's, not the emulated CPU's.
        emulated_on = f"{host_arch or 'x86'} kernel on {model or 'an unknown CPU'}"
        model, flags = f"emulated {arch} CPU", set()
    if arch in ARM_ARCHES:
        try:
            flags |= parse_auxv_hwcaps(auxv.read_bytes())
        except OSError:
            pass
        flags.add("neon")  # Advanced SIMD is mandatory on AArch64
    if not model or (arch in ARM_ARCHES and model in ARM_CORES.values()):
        # Raspberry Pi 4/5 kernels print no model name; the device tree does.
        dt = device_tree_model
        board = dt.read_text(errors="replace").strip("\x00\n ") if dt.is_file() else ""
        model = f"{board} ({model})" if board and model else board or model or platform.processor() or "unknown"
    return CpuInfo(model=model, arch=arch, cores=cores or 1, flags=frozenset(flags), emulated_on=emulated_on)


def _int(value: str) -> int | None:
    try:
        return int(value, 0)
    except ValueError:
        return None


def read_text_or_none(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def clock_source(path: Path = CLOCKSOURCE) -> str | None:
    return read_text_or_none(path)


def cpu_governor(path: Path = GOVERNOR) -> str | None:
    return read_text_or_none(path)
