"""Onboard code never imports torch: a Raspberry Pi image carries no training stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

ONBOARD = [
    "dreamlink.spec",
    "dreamlink.bundle",
    "dreamlink.runtime",
    "dreamlink.runtime.onboard",
    "dreamlink.runtime.loop",
    "dreamlink.runtime.health",
    "dreamlink.firmware_bridge",
    "dreamlink.firmware_bridge.link",
    "dreamlink.firmware_bridge.motor_board",
    "dreamlink.firmware_bridge.autopilot",
    "dreamlink.firmware_bridge.ardupilot",
    "dreamlink.firmware_bridge.px4",
    "dreamlink.firmware_bridge.tlog",
    "dreamlink.calibration.tlog_data",
    "dreamlink.runtime.mission",
    "dreamlink.runtime.shield",
    "dreamlink.runtime.fused",
    "dreamlink.calibration.kstep",
    "dreamlink.learning.transitions",
    "dreamlink.deploy",
]


@pytest.mark.parametrize("module", ONBOARD)
def test_onboard_module_does_not_import_torch(module):
    code = (
        f"import sys, {module}; bad = [m for m in ('torch', 'onnx') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{module} pulled in {proc.stdout.strip()} {proc.stderr[-2000:]}"
