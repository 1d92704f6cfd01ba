"""End to end, as a user runs it: SITL and runtime as separate processes over real UDP.

One small world model is learned once for the module (collect in lockstep SITL, train,
export, bundle), then flown by `dreamlink run` in its own process against a lockstep SITL
process: the pole must stay up. A garbage datagram sent to the runtime's port meanwhile is
dropped and counted, not fatal.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from dreamlink.spec import CARTPOLE, cartpole_balanced

pytestmark = [pytest.mark.sitl, pytest.mark.slow]

TICKS = 400


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    from dreamlink.calibration.kstep import kstep_curve
    from dreamlink.campaign.collect import CollectConfig, collect_cartpole
    from dreamlink.export.pack import pack_bundle
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.motor_board import MotorBoardProfile
    from dreamlink.learning.train import TrainConfig, train_world_model
    from dreamlink.learning.world_model import WorldModelConfig
    from dreamlink.runtime.session import ModelSession
    from dreamlink.sim.launcher import SitlProcess

    with SitlProcess(vehicle="cartpole", lockstep=True, seed=3) as sitl, Link(LinkConfig(sitl.connect_string)) as link:
        profile = MotorBoardProfile(link, CARTPOLE)
        profile.connect(timeout_s=10)
        data = collect_cartpole(profile, CARTPOLE, CollectConfig(transitions=8000, seed=3))
    train, holdout = data.split_by_episode(0.1, seed=3)
    result = train_world_model(
        train, WorldModelConfig(hidden=64, layers=2, ensemble_size=3), TrainConfig(epochs=25, seed=3)
    )
    out = tmp_path_factory.mktemp("e2e") / "bundle"
    bundle, parity = pack_bundle(out, CARTPOLE, result.model)
    assert parity.ok
    curve = kstep_curve(ModelSession(bundle.path_of("world_model"), CARTPOLE).predict, holdout.episodes(), CARTPOLE, 20)
    assert curve.normalised_rmse[0] < curve.normalised_rmse[-1]  # the error compounds with k
    return out


def test_runtime_process_balances_the_pole_over_udp(bundle_dir, tmp_path):
    from dreamlink.reports import cartpole_summary, load_ticks, longest_streak
    from dreamlink.sim.launcher import SitlProcess

    flight = tmp_path / "flight"
    with SitlProcess(vehicle="cartpole", lockstep=True, seed=11) as sitl:
        cmd = [
            sys.executable,
            "-m",
            "dreamlink.cli",
            "run",
            "--bundle",
            str(bundle_dir),
            "--connect",
            sitl.connect_string,
            "--lockstep",
            "--ticks",
            str(TICKS),
            "--out",
            str(flight),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Garbage at the runtime's port while it flies: dropped and counted, not fatal.
        events = flight / "events.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (events.exists() and "armed" in events.read_text()):
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for payload in (b"\xfd\x09garbage-not-mavlink", bytes(range(256)), b"\xfe\x05\x00"):
                s.sendto(payload, ("127.0.0.1", sitl.port))
        out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    ticks = load_ticks(flight / "ticks.npz")
    summary = cartpole_summary(ticks)
    assert summary["ticks"] == TICKS
    assert longest_streak(cartpole_balanced(ticks["state"])) == TICKS, summary
    assert np.all(np.abs(ticks["action"]) <= CARTPOLE.action_high[0])
    report = json.loads((flight / "summary.json").read_text())
    assert report["link"]["rx_bad"] >= 1, report["link"]
    assert report["stats"]["fallbacks"] == {}, report["stats"]
    # The flight log is a .tlog pymavlink reads back: our commands and the board's telemetry.
    from pymavlink import mavutil

    log = mavutil.mavlink_connection(str(flight / "flight.tlog"))
    kinds: dict[str, int] = {}
    while (m := log.recv_match()) is not None:
        kinds[m.get_type()] = kinds.get(m.get_type(), 0) + 1
    assert kinds.get("SET_ACTUATOR_CONTROL_TARGET", 0) >= TICKS
    assert kinds.get("DEBUG_FLOAT_ARRAY", 0) >= TICKS


def test_flight_log_survives_kill_9_mid_flight(bundle_dir, tmp_path):
    """SIGKILL the runtime mid-flight: the .tlog reads back with pymavlink, nothing but the last
    record may be cut, and every event line but the last is whole JSON."""
    import os
    import signal

    from pymavlink import mavutil

    from dreamlink.sim.launcher import SitlProcess

    flight = tmp_path / "killed"
    with SitlProcess(vehicle="cartpole", lockstep=True, seed=5) as sitl:
        cmd = [sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(bundle_dir), "--connect",
               sitl.connect_string, "--lockstep", "--out", str(flight)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tlog = flight / "flight.tlog"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tlog.exists() and tlog.stat().st_size > 50_000):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    size = tlog.stat().st_size
    assert size > 50_000
    log = mavutil.mavlink_connection(str(tlog))
    kinds: dict[str, int] = {}
    while (m := log.recv_match()) is not None:
        kinds[m.get_type()] = kinds.get(m.get_type(), 0) + 1
    assert kinds.get("BAD_DATA", 0) <= 1, kinds  # at most the record being written at the kill
    assert kinds["SET_ACTUATOR_CONTROL_TARGET"] > 100 and kinds["DEBUG_FLOAT_ARRAY"] > 100
    lines = (flight / "events.jsonl").read_text().splitlines()
    whole = [json.loads(line)["event"] for line in lines[:-1]]  # the last line may be the one cut
    assert lines and json.loads(lines[0])["event"] == "armed" and all(whole)
