"""What `dreamlink doctor` says about an ARM board's CPU, read from its /proc files, and about emulation."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dreamlink.deploy.device import AT_HWCAP, AT_HWCAP2, CpuInfo, parse_auxv_hwcaps, read_cpu
from dreamlink.deploy.doctor import OK, WARN, check_budget, check_cpu

PI5_CORE = """\
processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""
PI5_CPUINFO = PI5_CORE.format(n=0) + PI5_CORE.format(n=1) + """\
Revision\t: c04170
Serial\t\t: 5e2c4d8f1a2b3c4d
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""

PI4_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma f16c avx512f
"""


def arm_board(
    tmp_path: Path, cpuinfo: str, dt_model: str | None = None, auxv: bytes = b"", kernel: str = "aarch64"
) -> CpuInfo:
    """read_cpu as an arm64 userland sees it, on a `kernel` of that architecture."""
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    (tmp_path / "arch").write_text(kernel + "\n")
    (tmp_path / "auxv").write_bytes(auxv)
    if dt_model is not None:
        (tmp_path / "model").write_text(dt_model + "\x00")
    return read_cpu(tmp_path / "cpuinfo", tmp_path / "auxv", tmp_path / "arch", "aarch64", tmp_path / "model")


def auxv(hwcap: int, hwcap2: int) -> bytes:
    return struct.pack("<6Q", 6, 4096, AT_HWCAP, hwcap, AT_HWCAP2, hwcap2) + struct.pack("<2Q", 0, 0)


def test_raspberry_pi_5_features_from_cpuinfo(tmp_path: Path) -> None:
    cpu = arm_board(tmp_path, PI5_CPUINFO, dt_model="Raspberry Pi 5 Model B Rev 1.0")
    assert cpu.model == "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)"
    assert cpu.cores == 2 and cpu.emulated_on is None
    features = dict(cpu.arm_features())
    assert features["NEON/asimd"] and features["dotprod (int8 SDOT)"] and features["fp16 arithmetic"]
    assert not features["i8mm (int8 matmul)"] and not features["SVE"] and not features["bf16"]
    check = check_cpu(cpu)
    assert check.status == OK
    assert "dotprod (int8 SDOT) yes" in check.detail and "i8mm (int8 matmul) no" in check.detail


def test_raspberry_pi_4_has_neither_dotprod_nor_fp16(tmp_path: Path) -> None:
    cpu = arm_board(tmp_path, PI4_CPUINFO)
    assert cpu.model == "Cortex-A72"  # no device tree here: the core's name from its part number
    features = dict(cpu.arm_features())
    assert features["NEON/asimd"]
    assert not features["dotprod (int8 SDOT)"] and not features["fp16 arithmetic"]


def test_fp16_arithmetic_needs_both_scalar_and_vector_halves(tmp_path: Path) -> None:
    cpu = arm_board(tmp_path, PI4_CPUINFO.replace("crc32 cpuid", "crc32 cpuid fphp"))
    assert dict(cpu.arm_features())["fp16 arithmetic"] is False


def test_hwcap_words_decode_to_cpuinfo_names() -> None:
    # What qemu-user reports for its cortex-a76 model, and for "max".
    a76 = parse_auxv_hwcaps(auxv(0x119FFB, 0x0))
    assert {"fp", "asimd", "fphp", "asimdhp", "asimddp"} <= a76 and not {"sve", "i8mm", "bf16"} & a76
    maximal = parse_auxv_hwcaps(auxv(0xECFFFFFB, 0x7F877FFF))
    assert {"asimddp", "sve", "sve2", "i8mm", "bf16"} <= maximal
    assert parse_auxv_hwcaps(b"\x00" * 7) == set()  # truncated: nothing, not an exception


def test_arm64_userland_on_an_x86_kernel_is_reported_as_emulation(tmp_path: Path) -> None:
    cpu = arm_board(tmp_path, X86_CPUINFO, auxv=auxv(0x119FFB, 0), kernel="x86_64")
    assert cpu.emulated_on == "x86_64 kernel on AMD EPYC"
    assert cpu.model == "emulated aarch64 CPU"
    assert "avx2" not in cpu.flags  # the host's flags are not the emulated CPU's
    assert dict(cpu.arm_features())["dotprod (int8 SDOT)"]  # from HWCAP, which the emulator fills
    check = check_cpu(cpu)
    assert check.status == WARN and "EMULATED" in check.detail and "not device figures" in check.fix


def test_native_x86_is_not_emulation(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(X86_CPUINFO)
    (tmp_path / "arch").write_text("x86_64\n")
    cpu = read_cpu(tmp_path / "cpuinfo", tmp_path / "missing", tmp_path / "arch", "x86_64")
    assert cpu.emulated_on is None and cpu.model == "AMD EPYC" and "avx2" in cpu.simd
    assert check_cpu(cpu).status == OK


@pytest.mark.parametrize("emulated", [None, "x86_64 kernel on AMD EPYC"])
def test_timings_measured_under_emulation_are_labelled(tmp_path: Path, emulated: str | None) -> None:
    from test_deploy_install import make_bundle

    from dreamlink.bundle import load_bundle
    from dreamlink.runtime.health import HealthResult

    bundle = load_bundle(make_bundle(tmp_path / "b"))
    cpu = CpuInfo("emulated aarch64 CPU", "aarch64", 2, frozenset({"neon"}), emulated_on=emulated)
    check = check_budget(bundle, cpu, lambda b: HealthResult(True, (), 5, 900.0, 1200.0, 0.1))
    assert "measured here: p50 900.00 ms" in check.detail
    assert ("not a device figure" in check.detail) == (emulated is not None)
