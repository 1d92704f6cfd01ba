"""A pilot takes the vehicle: a ground station on its own socket switches the autopilot out of GUIDED /
OFFBOARD mid-flight. dreamlink stops commanding at once, never changes the mode again (no LAND, no disarm,
no switch back), records the takeover and ends the flight. dreamlink's own SITL in real time, both flavours;
the flight log (.tlog) is the judge of what dreamlink sent."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from pymavlink import mavutil
from pymavlink.dialects.v20 import ardupilotmega as gcs_dialect
from waiting import eventually

from dreamlink.runtime.onboard import MissionConfig, RunConfig, fly
from dreamlink.sim.launcher import SitlProcess

pytestmark = [pytest.mark.sitl, pytest.mark.slow]

COMPANION_COMPONENT = 191
# the mode a ground station switches to: (custom_mode, main/sub for PX4, the name dreamlink reports)
PILOT_MODES = {"ardupilot": ((1.0, 5.0, 0.0), "LOITER"), "px4": ((1.0, 4.0, 3.0), "AUTO.LOITER")}
CONTROL_MODES = {"ardupilot": 4, "px4": 6 << 16}  # GUIDED; OFFBOARD
# what would change the mode or the arming: never sent once a pilot has the vehicle
MODE_COMMANDS = {176, 20, 21, 22, 400}  # DO_SET_MODE, NAV_RETURN_TO_LAUNCH, NAV_LAND, NAV_TAKEOFF, ARM_DISARM


def sent_by_dreamlink_after(tlog: Path, t0: float) -> list[str]:
    """The messages dreamlink (component 191) sent at or after `t0` (the .tlog's own time stamps)."""
    log = mavutil.mavlink_connection(str(tlog), dialect="ardupilotmega")
    out = []
    while (msg := log.recv_match()) is not None:
        if msg.get_srcComponent() == COMPANION_COMPONENT and getattr(msg, "_timestamp", 0.0) >= t0 \
                and msg.get_type() != "HEARTBEAT":
            out.append(msg.get_type() if msg.get_type() != "COMMAND_LONG" else f"COMMAND_LONG {msg.command}")
    return out


def first_heartbeat_in(tlog: Path, custom_mode: int, after_mode: int) -> float:
    """When the vehicle's HEARTBEAT first showed `custom_mode` after having shown `after_mode` (the control mode;
    PX4 boots in AUTO.LOITER already)."""
    log = mavutil.mavlink_connection(str(tlog), dialect="ardupilotmega")
    controlled = False
    while (msg := log.recv_match(type="HEARTBEAT")) is not None:
        if msg.get_srcComponent() != 1:
            continue
        controlled = controlled or msg.custom_mode == after_mode
        if controlled and msg.custom_mode == custom_mode:
            return float(msg._timestamp)
    raise AssertionError(f"no HEARTBEAT in mode {custom_mode} after {after_mode} in {tlog}")


@pytest.mark.parametrize("flavour", ["ardupilot", "px4"])
def test_a_mode_change_by_the_ground_station_ends_commanding_and_nothing_changes_the_mode_after(
        quad_bundle: Path, tmp_path: Path, flavour: str) -> None:
    out = tmp_path / "flight"
    params, mode_name = PILOT_MODES[flavour]
    with SitlProcess("quad", lockstep=False, seed=7, extra_args=("--flavour", flavour, "--nominal")) as sitl:
        box: dict = {}
        config = RunConfig(bundle=quad_bundle, connect=sitl.connect_string, autopilot=flavour, out_dir=out,
                           mission=MissionConfig(takeoff_altitude_m=3.0, laps=3.0))
        thread = threading.Thread(target=lambda: box.setdefault("r", fly(config)))
        thread.start()
        events = out / "events.jsonl"
        assert eventually(lambda: events.exists() and '"armed"' in events.read_text(), timeout_s=90)
        time.sleep(1.0)  # planning and sending setpoints by now
        gcs = gcs_dialect.MAVLink(None, srcSystem=255, srcComponent=190)
        frame = gcs.command_long_encode(1, 1, gcs_dialect.MAV_CMD_DO_SET_MODE, 0, *params, 0, 0, 0, 0)
        assert sitl.vehicle_address is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(bytes(frame.pack(gcs)), sitl.vehicle_address)
        thread.join(timeout=60)
        assert not thread.is_alive()
        time.sleep(1.5)  # any late command of ours would show in the vehicle's next heartbeats
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mission"]["taken_over"]["mode"] == mode_name
    assert "landed_disarmed" not in summary["mission"]  # no landing was asked for
    assert summary["stats"]["takeover_ticks"] >= 1
    kinds = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert "takeover" in kinds and "left_to_pilot" in kinds
    custom = int(params[1]) if flavour == "ardupilot" else (int(params[1]) << 16) | (int(params[2]) << 24)
    t_taken = first_heartbeat_in(out / "flight.tlog", custom, CONTROL_MODES[flavour])
    after = sent_by_dreamlink_after(out / "flight.tlog", t_taken)
    setpoints = [m for m in after if m == "SET_POSITION_TARGET_LOCAL_NED"]
    assert len(setpoints) <= 1, after  # within one tick: the one already on its way
    commands = [int(m.split()[1]) for m in after if m.startswith("COMMAND_LONG")]
    assert not MODE_COMMANDS & set(commands), after  # no mode change, no land, no disarm
