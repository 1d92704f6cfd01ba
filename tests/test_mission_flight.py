"""A planned mission as the loop's reference: mission time, pause and resume, go-to from the map (refused into a
keep-out zone), return and land, and each waypoint's arrival; then the whole `dreamlink run --mission` on
dreamlink's SITL with a ground station on its own socket sending go-to and resume."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pymavlink.dialects.v20 import ardupilotmega as gcs_dialect

from dreamlink.firmware_bridge.ground_station import GOTO, LAND, PAUSE, RESUME, RETURN, GcsRequest
from dreamlink.firmware_bridge.link import mavlink
from dreamlink.firmware_bridge.mission_items import MissionItem
from dreamlink.runtime.geo import LocalFrame
from dreamlink.runtime.mission_flight import MissionRunner, fence_from_items, load_mission
from dreamlink.sim.launcher import SitlProcess
from dreamlink.spec import QUAD

MISSIONS = Path(__file__).resolve().parent / "data" / "missions"
CMAC = (-35.363262, 149.165237, 584.0)
GCS = (255, 190)


def runner_at(state: dict[str, np.ndarray], source: Path = MISSIONS / "cmac_test_mission.plan") -> MissionRunner:
    frame = LocalFrame(*CMAC)
    planned = load_mission(str(source), frame, np.zeros(3), 10.0, 3.0)

    def vehicle() -> tuple[float, np.ndarray, float]:
        x = np.zeros(QUAD.state_dim, np.float32)
        x[:3] = state["pos"]
        return 0.0, x, 0.0

    return MissionRunner(planned, QUAD, horizon=10, period_s=0.1, start_s=100.0, state=vehicle)


def positions(ref: np.ndarray) -> np.ndarray:
    return ref[:, :3]


def test_the_reference_follows_the_planned_path_and_the_mission_ends_after_it() -> None:
    state = {"pos": np.array([0.0, 0.0, -10.0])}
    runner = runner_at(state)
    path = runner.mission.path
    ref = runner.reference(100.0 + 5.0)
    expected, _ = path.position_velocity(5.0 + 0.1 * np.arange(1, 11))
    np.testing.assert_allclose(positions(ref), expected, atol=1e-4)
    assert not runner.done.is_set()
    runner.reference(100.0 + path.duration_s + 0.1)
    assert runner.done.is_set() and not runner.land_now


def test_pause_holds_where_the_mission_was_and_resume_flies_back_then_on() -> None:
    state = {"pos": np.array([0.0, 0.0, -10.0])}
    runner = runner_at(state)
    runner.reference(110.0)
    assert runner.decide(GcsRequest(PAUSE, GCS, command=193)) == mavlink.MAV_RESULT_ACCEPTED
    held = positions(runner.reference(115.0))
    np.testing.assert_allclose(held, np.repeat(held[:1], len(held), axis=0))  # the reference stands still
    frozen, _ = runner.mission.path.position_velocity(np.array([10.0]))
    np.testing.assert_allclose(held[0], frozen[0], atol=1e-4)
    state["pos"] = frozen[0] + np.array([2.0, 0.0, 0.0])  # drifted 2 m while paused
    assert runner.decide(GcsRequest(RESUME, GCS, command=193)) == mavlink.MAV_RESULT_ACCEPTED
    back = positions(runner.reference(115.0))
    assert np.linalg.norm(back[-1] - frozen[0]) < np.linalg.norm(back[0] - frozen[0]) + 1e-9  # heading back
    runner.reference(120.0)  # the way back (2 m) is done by now: mission time runs again from where it stopped
    assert runner.mission_time(130.0) == pytest.approx(10.0 + 130.0 - 120.0)  # the pause and the way back not counted
    assert any(e["event"] == "resumed" for e in runner.events)


def test_a_goto_is_flown_and_one_into_a_keep_out_zone_is_denied() -> None:
    state = {"pos": np.array([0.0, 0.0, -10.0])}
    runner = runner_at(state)
    runner.reference(105.0)
    zone = runner.mission.keep_out_ne[0].mean(axis=0)  # the exclusion polygon's middle
    lat, lon, _ = runner.mission.frame.to_global(float(zone[0]), float(zone[1]), 0.0)
    assert runner.decide(GcsRequest(GOTO, GCS, lat, lon, 10.0, 3, 192)) == mavlink.MAV_RESULT_DENIED
    lat, lon, _ = runner.mission.frame.to_global(-15.0, -5.0, 0.0)
    assert runner.decide(GcsRequest(GOTO, GCS, lat, lon, 8.0, 3, 192)) == mavlink.MAV_RESULT_ACCEPTED
    ref = positions(runner.reference(105.0))
    direction = ref[-1] - ref[0]
    assert direction[0] < 0 and direction[1] < 0  # toward the go-to point, south-west of home
    ref = positions(runner.reference(160.0))
    np.testing.assert_allclose(ref[-1], [-15.0, -5.0, -8.0], atol=0.05)  # arrived and holding there (8 m up)
    assert not runner.done.is_set()


def test_return_flies_home_then_lands_and_land_ends_at_once() -> None:
    state = {"pos": np.array([10.0, 5.0, -12.0])}
    runner = runner_at(state)
    runner.reference(120.0)
    assert runner.decide(GcsRequest(RETURN, GCS, command=20)) == mavlink.MAV_RESULT_ACCEPTED
    runner.reference(200.0)
    assert runner.done.is_set() and runner.land_now
    other = runner_at(state)
    assert other.decide(GcsRequest(LAND, GCS, command=21)) == mavlink.MAV_RESULT_ACCEPTED
    assert other.done.is_set() and other.land_now


def test_waypoints_are_reached_in_order_with_their_miss_distance() -> None:
    state = {"pos": np.zeros(3)}
    runner = runner_at(state)
    path = runner.mission.path
    for t in np.arange(0.0, path.duration_s + 1.0, 0.1):
        pos, _ = path.position_velocity(np.array([t]))
        state["pos"] = pos[0] + np.array([0.0, 0.1, 0.0])  # flown 10 cm east of the plan
        runner.reference(100.0 + t)
    report = runner.report()
    assert report["reached"] == len(path.waypoints_ned)
    assert max(w["miss_m"] for w in report["waypoints"]) < 0.1 + 0.3 + 1e-6  # the offset plus a corner's cut
    assert all(w["arrived_s"] is not None for w in report["waypoints"])


def test_the_autopilots_fence_store_becomes_zones() -> None:
    vertices = [MissionItem(i, 5002, 5, param1=4, x=CMAC[0] + dn, y=CMAC[1] + de, mission_type=1)
                for i, (dn, de) in enumerate([(1e-4, 1e-4), (1e-4, 2e-4), (2e-4, 2e-4), (2e-4, 1e-4)])]
    circle = MissionItem(4, 5004, 5, param1=7.5, x=CMAC[0], y=CMAC[1] - 3e-4, mission_type=1)
    zones = fence_from_items([*vertices, circle])
    assert len(zones) == 2 and not zones[0].inclusion and len(zones[0].vertices_deg) == 4
    assert zones[1].radius_m == 7.5 and not zones[1].inclusion


SHORT_PLAN = {
    "fileType": "Plan", "version": 1, "groundStation": "QGroundControl",
    "geoFence": {"version": 2, "polygons": [], "circles": []}, "rallyPoints": {"version": 2, "points": []},
    "mission": {"version": 2, "firmwareType": 3, "vehicleType": 2, "cruiseSpeed": 15, "hoverSpeed": 2,
                "plannedHomePosition": [CMAC[0], CMAC[1], CMAC[2]], "items": []},
}


def short_plan(path: Path) -> Path:
    """Take off to 5 m, two waypoints 8 m out, land: about 25 s."""
    home_lat, home_lon = -35.3632610, 149.1652299  # dreamlink's ArduPilot-flavour SITL home
    m_lat, m_lon = 1 / 111319.49, 1 / (111319.49 * np.cos(np.radians(home_lat)))
    items = [(22, home_lat, home_lon, 5), (16, home_lat + 8 * m_lat, home_lon, 5),
             (16, home_lat + 8 * m_lat, home_lon + 8 * m_lon, 6), (21, home_lat, home_lon, 0)]
    plan = json.loads(json.dumps(SHORT_PLAN))
    plan["mission"]["items"] = [
        {"type": "SimpleItem", "autoContinue": True, "command": c, "doJumpId": i + 1, "frame": 3,
         "params": [0, 0, 0, None, lat, lon, alt]} for i, (c, lat, lon, alt) in enumerate(items)]
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.sitl
@pytest.mark.slow
def test_a_plan_flown_on_the_sitl_with_a_goto_and_a_resume_from_the_ground_station(
        quad_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "flight"
    plan = short_plan(tmp_path / "short.plan")
    with SitlProcess("quad", lockstep=False, seed=5, extra_args=("--flavour", "ardupilot", "--nominal")) as sitl:
        run = subprocess.Popen([sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(quad_bundle),
                                "--connect", sitl.connect_string, "--autopilot", "ardupilot", "--mission", str(plan),
                                "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events = out / "events.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (events.exists() and '"armed"' in events.read_text()):
            time.sleep(0.2)
        time.sleep(3.0)
        gcs = gcs_dialect.MAVLink(None, srcSystem=255, srcComponent=190)
        acks = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3.0)
            lat, lon = round((-35.3632610 - 6 / 111319.49) * 1e7), round(149.1652299 * 1e7)  # 6 m south of home
            goto = gcs.command_int_encode(1, 191, 6, gcs_dialect.MAV_CMD_DO_REPOSITION, 0, 0, -1, 0, 0, 0,
                                          lat, lon, 5.0)
            sent_goto = time.monotonic()
            s.sendto(bytes(goto.pack(gcs)), ("127.0.0.1", sitl.port))
            acks.append(_ack(s, gcs))
            time.sleep(4.0)
            resume = gcs.command_long_encode(1, 191, gcs_dialect.MAV_CMD_DO_PAUSE_CONTINUE, 0, 1, 0, 0, 0, 0, 0, 0)
            s.sendto(bytes(resume.pack(gcs)), ("127.0.0.1", sitl.port))
            acks.append(_ack(s, gcs))
        _, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr[-3000:]
    assert [a.result for a in acks] == [mavlink.MAV_RESULT_ACCEPTED] * 2
    summary = json.loads((out / "summary.json").read_text())
    mission = summary["mission"]["mission"]
    assert [r["event"] for r in mission["requests"]][:2] == ["goto", "resuming"]
    assert mission["reached"] == len(mission["waypoints"]) and summary["mission"]["landed_disarmed"] is True
    # heading for the go-to point (south) within 1 s: the southward velocity rises by over 1 m/s, whether the
    # vehicle was hovering or flying north on its first leg when the request came
    ticks = np.load(out / "ticks.npz")
    t_goto = next(e["t_s"] for e in mission["requests"] if e["event"] == "goto")
    after = (ticks["t_s"] > t_goto) & (ticks["t_s"] < t_goto + 1.0)
    south = -ticks["state"][:, 3]
    assert south[after].max() - south[after][0] > 1.0, south[after]
    assert time.monotonic() - sent_goto > 0


def _ack(s: socket.socket, gcs: gcs_dialect.MAVLink) -> object:
    while True:
        for m in gcs.parse_buffer(s.recv(4096)) or []:
            if m.get_type() == "COMMAND_ACK":
                return m
