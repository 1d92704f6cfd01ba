"""What the runtime does when things go wrong, with the real SITL process over UDP:
a model that outputs NaN, a distrusted ensemble, telemetry that stops, and an e-stop from a
ground station. Whatever happens, every command sent is finite and inside the limits."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from onnx_models import linear_world_model
from waiting import eventually

from dreamlink.bundle import update_manifest, write_bundle
from dreamlink.reports import load_ticks
from dreamlink.runtime.mppi import MppiConfig
from dreamlink.runtime.onboard import RunConfig, fly
from dreamlink.sim.launcher import SitlProcess
from dreamlink.spec import CARTPOLE

pytestmark = pytest.mark.sitl

PLANNER = MppiConfig(samples=16, horizon=5)


def cartpole_bundle(tmp_path: Path, name: str, bias: float = 0.0, ensemble: int = 1, spread: float = 0.0,
                    calibration: dict | None = None) -> Path:
    model = linear_world_model(tmp_path / f"{name}.onnx", np.eye(4, dtype=np.float32), np.zeros((4, 1), np.float32),
                               bias=np.full(4, bias, np.float32), ensemble=ensemble, spread=spread)
    bundle = write_bundle(tmp_path / name, CARTPOLE, {"world_model": (model, {"ensemble_size": ensemble})})
    if calibration:
        bundle = update_manifest(bundle, calibration=calibration)
    return bundle.root


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def fly_until_armed(config: RunConfig) -> tuple[threading.Thread, dict]:
    """Fly `config` on a thread (result in box["r"]) and return once it has armed and flown half a second."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fly(config)))
    t.start()
    events_file = config.out_dir / "events.jsonl"
    assert eventually(lambda: events_file.exists() and "armed" in events_file.read_text(), timeout_s=30)
    time.sleep(0.5)
    return t, box


def assert_every_command_safe(out: Path) -> np.ndarray:
    actions = load_ticks(out / "ticks.npz")["action"]
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= CARTPOLE.action_high[0])
    return actions


def test_a_model_that_outputs_nan_falls_back_and_sends_only_safe_commands(tmp_path):
    bundle = cartpole_bundle(tmp_path, "nan", bias=float("nan"))
    with SitlProcess("cartpole", lockstep=True, seed=1) as sitl:
        result = fly(RunConfig(bundle=bundle, connect=sitl.connect_string, lockstep=True, ticks=40,
                               out_dir=tmp_path / "f", planner=PLANNER))
    assert result.stats.fallbacks == {"all_samples_nonfinite": 40}
    actions = assert_every_command_safe(tmp_path / "f")
    np.testing.assert_array_equal(actions, 0.0)  # no usable plan ever: the hold action, every tick
    assert sum(e["event"] == "fallback" for e in events(tmp_path / "f")) == 40


def test_ensemble_disagreement_above_the_calibrated_threshold_is_not_flown(tmp_path):
    bundle = cartpole_bundle(tmp_path, "split", ensemble=3, spread=0.5, calibration={"disagreement_threshold": 0.01})
    with SitlProcess("cartpole", lockstep=True, seed=2) as sitl:
        result = fly(RunConfig(bundle=bundle, connect=sitl.connect_string, lockstep=True, ticks=30,
                               out_dir=tmp_path / "f", planner=PLANNER))
    assert result.stats.fallbacks == {"model_uncertain": 30}
    assert_every_command_safe(tmp_path / "f")


def test_telemetry_that_stops_means_no_planning_then_the_vehicle_failsafe(tmp_path):
    """The board stops streaming (MAV_CMD_SET_MESSAGE_INTERVAL -1 from another client): the runtime
    holds instead of planning on stale state, then releases the board (its failsafe: motor off)."""
    bundle = cartpole_bundle(tmp_path, "ok")
    out = tmp_path / "f"
    with SitlProcess("cartpole", lockstep=False, seed=3) as sitl:
        t, box = fly_until_armed(
            RunConfig(bundle=bundle, connect=sitl.connect_string, ticks=250, out_dir=out, planner=PLANNER))
        from pymavlink.dialects.v20 import all as mavlink  # a ground station of our own, on its own socket

        gcs = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
        frame = gcs.command_long_encode(1, 1, mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, 0, 350, -1, 0, 0, 0, 0, 0)
        assert sitl.vehicle_address is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(bytes(frame.pack(gcs)), sitl.vehicle_address)
        t.join(timeout=60)
    stats = box["r"].stats
    assert stats.stale_ticks > 0 and stats.fallbacks.get("stale_state") == stats.stale_ticks
    assert stats.failsafes >= 1
    assert any(e["event"] == "failsafe" for e in events(out))
    assert_every_command_safe(out)


def test_e_stop_from_the_ground_station_stops_the_motor_within_one_tick(tmp_path):
    """MAV_CMD_DO_FLIGHTTERMINATION to the companion (1/191): the next tick disarms the board; the flight log
    shows at most one actuator command between the e-stop arriving and the disarm going out."""
    from pymavlink import mavutil
    from pymavlink.dialects.v20 import all as mavlink

    bundle = cartpole_bundle(tmp_path, "ok")
    out = tmp_path / "f"
    with SitlProcess("cartpole", lockstep=False, seed=4) as sitl:
        t, box = fly_until_armed(
            RunConfig(bundle=bundle, connect=sitl.connect_string, ticks=1000, out_dir=out, planner=PLANNER))
        gcs = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
        frame = gcs.command_long_encode(1, 191, mavlink.MAV_CMD_DO_FLIGHTTERMINATION, 0, 1, 0, 0, 0, 0, 0, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            s.sendto(bytes(frame.pack(gcs)), ("127.0.0.1", sitl.port))  # the runtime's port
            ack = None
            try:
                while ack is None:
                    for m in gcs.parse_buffer(s.recv(4096)) or []:
                        if m.get_type() == "COMMAND_ACK":
                            ack = m
            except TimeoutError:
                pass
        t.join(timeout=30)
    result = box["r"]
    assert result.stats.estops == 1 and result.stats.ticks < 1000
    assert ack is not None and ack.result == mavlink.MAV_RESULT_ACCEPTED  # the ground station is a peer too
    log = mavutil.mavlink_connection(str(out / "flight.tlog"))
    after_estop = None
    while (m := log.recv_match()) is not None:
        if m.get_type() == "COMMAND_LONG" and m.command == mavlink.MAV_CMD_DO_FLIGHTTERMINATION:
            after_estop = 0
        elif after_estop is not None and m.get_type() == "SET_ACTUATOR_CONTROL_TARGET":
            after_estop += 1
        elif after_estop is not None and m.get_type() == "COMMAND_LONG" and \
                m.command == mavlink.MAV_CMD_COMPONENT_ARM_DISARM and m.param1 == 0:
            break
    assert after_estop is not None and after_estop <= 1, after_estop
    assert any(e["event"] == "estop" for e in events(out))


def test_a_bundle_with_a_fused_planner_graph_flies_it(tmp_path):
    """`dreamlink run` plans with the bundle's fused graph (one session.run a tick) when it has one."""
    from dreamlink.export.planner_graph import PlannerGraphConfig
    from dreamlink.export.planner_graph_pack import pack_planner_bundle

    plain = cartpole_bundle(tmp_path, "plain")
    fused = pack_planner_bundle(plain, tmp_path / "fused", PlannerGraphConfig(16, 5), noise_sigma=0.2).root
    with SitlProcess("cartpole", lockstep=True, seed=6) as sitl:
        fly(RunConfig(bundle=fused, connect=sitl.connect_string, lockstep=True, ticks=30, out_dir=tmp_path / "f"))
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["planner"] == "FusedPlanner" and summary["stats"]["ticks"] == 30
    assert_every_command_safe(tmp_path / "f")
