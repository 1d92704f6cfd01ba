"""Onboard code never imports torch: a Raspberry Pi image carries no training stack.

Nor what the onboard process does not use: pymavlink's `mavutil` (it loads the MAVLink 1 and 2
"all" dialects, 19 MB), the "all" or "ardupilotmega" dialects (the link has its own, ~20 messages:
4-5 MB less), the dialect generator, onnx, `cryptography` when no bundle signature is checked, or
tarfile/tempfile/shutil when the bundle is a folder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_models import linear_world_model

from dreamlink.bundle import write_bundle
from dreamlink.export.planner_graph import PlannerGraphConfig
from dreamlink.export.planner_graph_pack import pack_planner_bundle
from dreamlink.spec import CARTPOLE

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
    "dreamlink.firmware_bridge.messages",
    "dreamlink.firmware_bridge.autopilot_config",
    "dreamlink.firmware_bridge.autopilot_telemetry",
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

# Never on the flight path: the training stack, the ONNX editing library, pymavlink's connection
# helpers and their dialects (MAVLink 1, "all", "ardupilotmega") and its generator, pyserial on a UDP
# link, bundle-signature crypto when no signature is checked, and what only .tar bundles need.
NOT_IN_FLIGHT = ("torch", "onnx", "pymavlink.mavutil", "pymavlink.dialects.v10", "pymavlink.dialects.v20.all",
                 "pymavlink.dialects.v20.ardupilotmega", "pymavlink.generator",
                 "dreamlink.firmware_bridge.dialect.generate", "cryptography", "serial", "tarfile", "tempfile",
                 "shutil")


@pytest.mark.parametrize("module", ONBOARD)
def test_onboard_module_does_not_import_torch(module):
    code = (
        f"import sys, {module}; bad = [m for m in ('torch', 'onnx', 'pymavlink.mavutil') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{module} pulled in {proc.stdout.strip()} {proc.stderr[-2000:]}"


FLIGHT_START = """
import json, sys
import numpy as np
import dreamlink.runtime.onboard  # everything `dreamlink run` imports
from dreamlink.bundle import load_bundle
from dreamlink.firmware_bridge.link import Link, LinkConfig
from dreamlink.firmware_bridge.motor_board import MotorBoardProfile
from dreamlink.runtime.fused import FusedPlanner
from dreamlink.runtime.tasks import default_task

bundle = load_bundle(sys.argv[1])
planner = FusedPlanner.from_bundle(bundle, default_task(bundle.spec), np.random.default_rng(0))
plan = planner.plan(np.array([0.0, 0.0, 0.02, 0.0], np.float32), planner.initial_plan(), 0.0)
with Link(LinkConfig(f"udpout:127.0.0.1:{sys.argv[2]}", heartbeat_period_s=0.0)) as link:
    MotorBoardProfile(link, bundle.spec).send(plan.actions[0])
names = sys.argv[3].split(",")
print(json.dumps(sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))))
"""


@pytest.mark.sitl  # a real socket
def test_a_flight_start_loads_only_what_it_flies_with(tmp_path: Path) -> None:
    """Verify an unsigned planner bundle, plan once, send the first command: none of NOT_IN_FLIGHT."""
    F = np.eye(4, dtype=np.float32) + np.diag(np.full(3, 0.02, np.float32), 1)
    G = np.array([[0.0], [0.01], [0.0], [-0.02]], np.float32)
    world = linear_world_model(tmp_path / "wm.onnx", F, G)
    src = write_bundle(tmp_path / "src", CARTPOLE, {"world_model": (world, {"ensemble_size": 1})})
    bundle = pack_planner_bundle(src.root, tmp_path / "bundle", PlannerGraphConfig(32, 5))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as board:
        board.bind(("127.0.0.1", 0))
        board.settimeout(60.0)
        proc = subprocess.run([sys.executable, "-c", FLIGHT_START, str(bundle.root), str(board.getsockname()[1]),
                               ",".join(NOT_IN_FLIGHT)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        frame = board.recv(4096)
    assert frame[0] == 0xFD and int.from_bytes(frame[7:10], "little") == 139  # SET_ACTUATOR_CONTROL_TARGET
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
