"""Mission files as QGroundControl, Mission Planner / MAVProxy and ArduPilot's autotest write them (samples in
tests/data/missions, their sources in its README): read, and refused by name where they cannot be flown."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dreamlink.runtime.geo import LocalFrame
from dreamlink.runtime.mission_commands import (
    MAV_CMD_DO_CHANGE_SPEED,
    MAV_CMD_NAV_RETURN_TO_LAUNCH,
    MAV_CMD_NAV_TAKEOFF,
    MAV_CMD_NAV_WAYPOINT,
    MissionError,
)
from dreamlink.runtime.plan_files import FenceCircle, FencePolygon, read_mission_file

MISSIONS = Path(__file__).parent / "data" / "missions"
CMAC = (-35.363262, 149.165237)


def test_reads_a_qgroundcontrol_plan():
    plan = read_mission_file(MISSIONS / "qgc_simple_square.plan")

    assert [i.command for i in plan.items] == [MAV_CMD_NAV_TAKEOFF] + [MAV_CMD_NAV_WAYPOINT] * 4
    assert [i.seq for i in plan.items] == [1, 2, 3, 4, 5]  # as uploaded to the autopilot: home is 0
    takeoff = plan.items[0]
    assert (takeoff.frame, takeoff.x, takeoff.y, takeoff.z) == (3, 47.397742, 8.545594, 20.0)
    assert math.isnan(takeoff.param4)  # QGroundControl writes NaN as null
    assert plan.items[1].x == 47.398742 and plan.items[1].y == 8.546594
    assert plan.home is not None and (plan.home.lat_deg, plan.home.lon_deg, plan.home.alt_m) == (47.397742, 8.545594,
                                                                                                   488.0)
    assert (plan.hover_speed_mps, plan.cruise_speed_mps) == (5.0, 15.0)
    assert plan.fence == () and plan.rally == ()


def test_reads_qgroundcontrol_fence_polygons():
    plan = read_mission_file(MISSIONS / "qgc_geofence_inclusion_exclusion.plan")

    assert plan.items == ()
    inside, keep_out = plan.fence
    assert isinstance(inside, FencePolygon) and inside.inclusion
    assert isinstance(keep_out, FencePolygon) and not keep_out.inclusion
    assert len(inside.vertices_deg) == len(keep_out.vertices_deg) == 4
    assert inside.vertices_deg[0] == (38.7507608625056, -77.49735908548331)
    frame = LocalFrame(plan.home.lat_deg, plan.home.lon_deg, plan.home.alt_m)  # type: ignore[union-attr]
    ne = inside.vertices_ne_m(frame)
    assert ne.shape == (4, 2) and np.all(np.linalg.norm(ne, axis=1) < 50)  # a small field next to home


def test_reads_an_ardupilot_waypoints_file():
    mission = read_mission_file(MISSIONS / "ardupilot_copter_do_change_speed.waypoints")

    assert mission.home is not None
    assert (mission.home.lat_deg, mission.home.lon_deg) == CMAC and mission.home.alt_m == pytest.approx(584.09)
    assert [i.seq for i in mission.items] == list(range(1, 10))  # line 0, home, is not a mission item
    assert [i.command for i in mission.items] == [22, 16, 178, 16, 178, 16, 178, 16, 20]
    takeoff = mission.items[0]
    assert (takeoff.frame, takeoff.x, takeoff.y, takeoff.z) == (3, 0.0, 0.0, 20.0)
    speeds = [(i.param1, i.param2) for i in mission.items if i.command == MAV_CMD_DO_CHANGE_SPEED]
    assert speeds == [(1.0, 15.0), (1.0, 10.0), (1.0, 17.0)]
    assert mission.items[3].x == -35.360174 and mission.items[3].y == 149.167908 and mission.items[3].z == 14.0
    assert mission.hover_speed_mps is None and mission.fence == ()


def test_the_issue_test_mission():
    """Six or more waypoints at different altitudes around CMAC, one holding, a speed change, a keep-out zone
    across one straight leg, a take-off first and a return to launch last."""
    mission = read_mission_file(MISSIONS / "cmac_test_mission.plan")
    assert mission.home is not None and (mission.home.lat_deg, mission.home.lon_deg) == CMAC
    frame = LocalFrame(mission.home.lat_deg, mission.home.lon_deg, mission.home.alt_m)
    items = mission.items

    assert items[0].command == MAV_CMD_NAV_TAKEOFF and items[-1].command == MAV_CMD_NAV_RETURN_TO_LAUNCH
    waypoints = [i for i in items if i.command == MAV_CMD_NAV_WAYPOINT]
    assert len(waypoints) >= 6
    assert all(i.frame == 3 and 5 <= i.z <= 15 for i in waypoints) and len({i.z for i in waypoints}) >= 5
    assert sum(i.param1 > 0 for i in waypoints) == 1  # one hold
    assert any(i.command == MAV_CMD_DO_CHANGE_SPEED and i.param2 > 0 for i in items)
    ne = np.array([frame.to_ned(i.x, i.y, 0.0)[:2] for i in waypoints])
    assert np.all(np.linalg.norm(ne, axis=1) <= 40.0)
    assert mission.hover_speed_mps == 3.0

    (keep_out,) = [z for z in mission.fence if isinstance(z, FencePolygon) and not z.inclusion]
    box = keep_out.vertices_ne_m(frame)
    crossed = [k for k in range(len(ne) - 1) if _segment_crosses_polygon(ne[k], ne[k + 1], box)]
    assert len(crossed) == 1  # the straight leg runs through it; the planner has to go around
    (circle,) = [z for z in mission.fence if isinstance(z, FenceCircle)]
    assert circle.inclusion and np.all(np.linalg.norm(ne - circle.center_ne_m(frame), axis=1) < circle.radius_m)
    assert len(mission.rally) == 1 and mission.rally[0].alt_m == 10.0


def _segment_crosses_polygon(a: np.ndarray, b: np.ndarray, polygon: np.ndarray) -> bool:
    def side(p, q, r):
        return np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    edges = zip(polygon, np.roll(polygon, -1, axis=0), strict=True)
    return any(side(a, b, p) != side(a, b, q) and side(p, q, a) != side(p, q, b) for p, q in edges)


def test_refuses_unsupported_items_of_a_real_plan_by_name():
    """QGroundControl's own ArduCopter test plan: a region of interest, a timed loiter, a spline, a waypoint
    above terrain and one with no altitude. All named in one message, nothing flown."""
    with pytest.raises(MissionError) as refused:
        read_mission_file(MISSIONS / "qgc_ardupilot_sitl_copter.plan")
    message = str(refused.value)
    assert "item 5: MAV_CMD_DO_SET_ROI (201) is not supported" in message
    assert "item 7: MAV_CMD_NAV_LOITER_TIME (19) is not supported" in message
    assert "item 9: MAV_CMD_NAV_SPLINE_WAYPOINT (82) is not supported" in message
    assert "item 8: MAV_CMD_NAV_WAYPOINT (16) in MAV_FRAME_GLOBAL_TERRAIN_ALT (10) cannot be placed" in message
    assert "item 6: MAV_CMD_NAV_WAYPOINT (16) has no position" in message
    assert "supported: MAV_CMD_NAV_WAYPOINT (16), MAV_CMD_NAV_TAKEOFF (22)" in message
    assert "item 2:" not in message and "item 4:" not in message  # the waypoint in AMSL and the speed change fly


def test_refuses_a_servo_in_a_plan_by_name(tmp_path):
    plan = json.loads((MISSIONS / "cmac_test_mission.plan").read_text())
    servo = {"autoContinue": True, "command": 183, "doJumpId": 4, "frame": 2, "params": [9, 1900, 0, 0, 0, 0, 0],
             "type": "SimpleItem"}
    plan["mission"]["items"].insert(3, servo)
    path = tmp_path / "servo.plan"
    path.write_text(json.dumps(plan))

    with pytest.raises(MissionError, match=r"item 4: MAV_CMD_DO_SET_SERVO \(183\) is not supported; supported: "
                                           r"MAV_CMD_NAV_WAYPOINT \(16\)"):
        read_mission_file(path)


def test_refuses_a_survey_by_its_complex_item_type():
    with pytest.raises(MissionError, match=r"item 2\): QGroundControl ComplexItem 'survey' is not supported"):
        read_mission_file(MISSIONS / "qgc_survey.plan")


def test_refuses_an_ardupilot_gripper_mission_by_name():
    with pytest.raises(MissionError, match=r"item 2: MAV_CMD_DO_GRIPPER \(211\) is not supported; "
                                           r"item 3: MAV_CMD_DO_GRIPPER \(211\)"):
        read_mission_file(MISSIONS / "ardupilot_copter_gripper.waypoints")


def test_reads_a_version_1_plan_item_with_a_coordinate(tmp_path):
    """QGroundControl before mission version 2 wrote four params and a separate `coordinate`."""
    plan = {"fileType": "Plan", "groundStation": "QGroundControl", "version": 1,
            "geoFence": {"polygon": [], "version": 1},
            "mission": {"version": 1, "hoverSpeed": 5, "items": [
                {"autoContinue": True, "command": 16, "coordinate": [47.63369112, -122.08925023, 20], "doJumpId": 1,
                 "frame": 3, "params": [2, 0, 0, None], "type": "SimpleItem"}]}}
    path = tmp_path / "v1.plan"
    path.write_text(json.dumps(plan))

    (item,) = read_mission_file(path).items
    assert (item.command, item.param1, item.x, item.y, item.z) == (16, 2.0, 47.63369112, -122.08925023, 20.0)


def test_a_waypoints_file_in_a_terrain_frame_is_refused(tmp_path):
    text = (MISSIONS / "ardupilot_copter_do_change_speed.waypoints").read_text().replace("2\t0\t3\t16", "2\t0\t10\t16")
    path = tmp_path / "terrain.waypoints"
    path.write_text(text)
    with pytest.raises(MissionError, match=r"item 2: MAV_CMD_NAV_WAYPOINT \(16\) in MAV_FRAME_GLOBAL_TERRAIN_ALT"):
        read_mission_file(path)


@pytest.mark.parametrize(("text", "error"), [
    ("hello\n", "not a mission file"),
    ("QGC WPL 100\n0\t1\t0\t16\t0\t0\t0\t0\t0\t0\t0\t1\n", "expected the header 'QGC WPL 110'"),
    ("QGC WPL 110\n0\t1\t0\t16\t0\t0\t0\t0\t0\t0\t0\t1\n2\t0\t3\t16\t0\t0\t0\t0\t1\t2\t3\t1\n", "INDEX 2, expected 1"),
    ("QGC WPL 110\n0\t1\t0\t16\t0\t0\t0\t0\t0\t0\t0\n", "expected 12 columns"),
    ('{"fileType": "Plan", "mission": {"items": [{"type": "SimpleItem", "command": 16, "frame": 3, '
     '"params": [0, 0, 0]}]}}', r"mission.items\[0\].params: expected a list of 7 numbers"),
    ('{"fileType": "Fence"}', 'fileType: expected "Plan"'),
])
def test_malformed_files_are_refused_with_where(tmp_path, text, error):
    path = tmp_path / "bad.mission"
    path.write_text(text)
    with pytest.raises(MissionError, match=error):
        read_mission_file(path)
