"""Keep-out zones in the reference: each leg goes around them at the clearance, so the short-horizon planner is never
asked to track a line through a zone; a waypoint in a zone is refused before take-off."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dreamlink.firmware_bridge.mission_items import MissionItem
from dreamlink.runtime.detour import KeepOutError, route_around
from dreamlink.runtime.geo import LocalFrame
from dreamlink.runtime.mission_commands import MissionError
from dreamlink.runtime.mission_path import MissionPath, PathConfig
from dreamlink.runtime.plan_files import FencePolygon, read_mission_file
from dreamlink.runtime.zone_geometry import circle_polygon

MISSIONS = Path(__file__).parent / "data" / "missions"
CMAC = LocalFrame(-35.363262, 149.165237, 584.09)
DT = 0.02
CLEARANCE_M = 2.0
# An L, concave: the arms are 6 m wide, the notch between them 14 m.
L_ZONE = np.array([[0.0, 0.0], [20.0, 0.0], [20.0, 6.0], [6.0, 6.0], [6.0, 20.0], [0.0, 20.0]])


def _distance_m(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Points [T,2] to a polygon [V,2], 0 inside: written out here, not taken from the code under test."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    ab, ap = b - a, points[:, None] - a  # [V,2], [T,V,2]
    t = np.clip(np.sum(ap * ab, axis=2) / np.sum(ab * ab, axis=1), 0.0, 1.0)
    edge = np.linalg.norm(ap - t[..., None] * ab, axis=2).min(axis=1)
    inside = np.zeros(len(points), dtype=bool)
    for (an, ae), (bn, be) in zip(a, b, strict=True):
        if an != bn:
            crosses = ((an > points[:, 0]) != (bn > points[:, 0]))
            e_at = ae + (points[:, 0] - an) * (be - ae) / (bn - an)
            inside ^= crosses & (points[:, 1] < e_at)
    return np.where(inside, 0.0, edge)


def _wp(seq, n, e, alt, radius_m=0.0):
    lat, lon, _ = CMAC.to_global(n, e, 0.0)
    return MissionItem(seq, 16, 3, param2=radius_m, x=lat, y=lon, z=alt)


def _flown(path: MissionPath) -> tuple[np.ndarray, np.ndarray]:
    return path.position_velocity(np.arange(-1.0, path.duration_s + 2.0, DT))


def _assert_smooth_and_through_every_waypoint(path: MissionPath, speed_mps: float) -> None:
    pos, vel = _flown(path)
    assert np.max(np.linalg.norm(vel, axis=1)) <= speed_mps + 1e-9
    assert np.max(np.linalg.norm(np.diff(pos, axis=0), axis=1)) <= speed_mps * DT + 1e-9
    assert np.max(np.linalg.norm(np.diff(vel, axis=0), axis=1)) <= 2 * PathConfig().max_accel_mps2 * DT + 1e-9
    assert np.max(np.abs(np.gradient(pos, DT, axis=0)[1:-1] - vel[1:-1])) < 0.05
    at, _ = path.position_velocity(path.arrival_s)
    assert np.all(np.linalg.norm(at - path.waypoints_ned, axis=1) <= path.acceptance_m + 1e-9)
    assert np.all(np.diff(path.arrival_s) > 0)


# the test mission's exclusion polygon -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cmac():
    mission = read_mission_file(MISSIONS / "cmac_test_mission.plan")
    zones = [z.vertices_ne_m(CMAC) for z in mission.fence if isinstance(z, FencePolygon) and not z.inclusion]
    assert len(zones) == 1
    args = (mission.items, CMAC, 5.0, mission.hover_speed_mps or 0.0, (0.0, 0.0, 0.0))
    return zones[0], MissionPath.from_items(*args), MissionPath.from_items(*args, keep_out=zones)


def test_the_straight_path_of_the_test_mission_runs_through_its_exclusion_zone(cmac):
    zone, straight, _ = cmac
    assert _distance_m(_flown(straight)[0][:, :2], zone).min() == 0.0  # what the detour is for


def test_the_test_mission_goes_around_its_exclusion_zone(cmac):
    zone, straight, detoured = cmac
    pos, _ = _flown(detoured)
    assert _distance_m(pos[:, :2], zone).min() >= CLEARANCE_M / 2
    _assert_smooth_and_through_every_waypoint(detoured, speed_mps=3.0)
    # the corners are the path's, not the mission's: the waypoints are the same items at the same places
    assert len(detoured.path_ned) > len(detoured.waypoints_ned)
    assert detoured.waypoint_seq == straight.waypoint_seq
    assert np.array_equal(detoured.waypoints_ned, straight.waypoints_ned)
    assert straight.duration_s < detoured.duration_s < straight.duration_s + 10.0


def test_altitude_changes_with_distance_along_the_detour(cmac):
    _, _, detoured = cmac
    k = detoured.waypoint_seq.index(5)  # the leg from waypoint 5 (12 m) to 6 (8 m) crosses the zone
    a, b = detoured.waypoints_ned[k], detoured.waypoints_ned[k + 1]
    i = int(np.flatnonzero(np.all(detoured.path_ned == a, axis=1))[0])
    j = int(np.flatnonzero(np.all(detoured.path_ned == b, axis=1))[0])
    leg = detoured.path_ned[i:j + 1]
    assert len(leg) > 2
    along_m = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(leg[:, :2], axis=0), axis=1))])
    assert leg[:, 2] == pytest.approx(a[2] + (b[2] - a[2]) * along_m / along_m[-1])


def test_zones_off_the_path_change_nothing(cmac):
    _, straight, _ = cmac
    mission = read_mission_file(MISSIONS / "cmac_test_mission.plan")
    far = circle_polygon((300.0, -300.0), 20.0)
    path = MissionPath.from_items(mission.items, CMAC, 5.0, 3.0, (0.0, 0.0, 0.0), keep_out=[far])
    t = np.arange(-1.0, straight.duration_s + 2.0, DT)
    for a, b in zip(straight.position_velocity(t), path.position_velocity(t), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(straight.arrival_s, path.arrival_s) and np.array_equal(straight.path_ned, path.path_ned)


# other shapes -----------------------------------------------------------------------------------------------------

def test_a_concave_zone_is_flown_around_its_own_outline_not_its_hull():
    """Into the notch of an L and out around the end of its arm: the convex hull would refuse the notch."""
    items = [MissionItem(1, 22, 3, z=10.0), _wp(2, -8, -8, 10.0), _wp(3, 15, 13, 10.0), _wp(4, 10, 30, 10.0)]
    path = MissionPath.from_items(items, CMAC, 5.0, 3.0, (-8.0, -8.0, 0.0), keep_out=[L_ZONE])
    pos, _ = _flown(path)
    assert _distance_m(pos[:, :2], L_ZONE).min() >= CLEARANCE_M / 2
    _assert_smooth_and_through_every_waypoint(path, speed_mps=3.0)
    assert path.waypoint_seq == (1, 2, 3, 4)


def test_a_route_around_an_l_is_the_shortest_one_keeping_the_clearance():
    route = np.array(route_around((15.0, 13.0), (-5.0, 15.0), [L_ZONE], CLEARANCE_M))
    assert np.all(_distance_m(route, L_ZONE) >= CLEARANCE_M - 1e-6)
    assert route[1:-1, 1].max() > 20.0 + CLEARANCE_M - 1e-9  # around the end of the arm, not through it
    length_m = float(np.sum(np.linalg.norm(np.diff(route, axis=0), axis=1)))
    # The shortest way, exactly: tangent to the 2 m circle around the arm's corner (6, 20), along the arc to
    # (6, 22), along the top to (0, 22), the arc around (0, 20), tangent to the end.
    def tangent_and_arc_m(n: float, e: float, point_rad: float, side: float) -> float:
        d = math.hypot(n, e)  # from the corner to the point, which sits at point_rad around it
        touch_rad = point_rad + side * math.acos(CLEARANCE_M / d)
        return math.sqrt(d * d - CLEARANCE_M**2) + CLEARANCE_M * abs(math.pi / 2 - touch_rad)

    exact_m = (tangent_and_arc_m(15.0 - 6.0, 13.0 - 20.0, math.atan2(-7.0, 9.0), +1.0) + 6.0
               + tangent_and_arc_m(-5.0 - 0.0, 15.0 - 20.0, 1.25 * math.pi, -1.0))
    assert exact_m <= length_m < exact_m + 0.1  # the arcs, as circumscribed polygons, are a little longer
    again = route_around((15.0, 13.0), (-5.0, 15.0), [L_ZONE], CLEARANCE_M)
    assert np.array_equal(route, np.array(again))  # deterministic


def test_a_circle_is_flown_around_outside_the_circle():
    center, radius_m = np.array([25.0, 0.5]), 6.0
    items = [MissionItem(1, 22, 3, z=10.0), _wp(2, 50, 0, 10.0), _wp(3, 50, 20, 10.0)]
    path = MissionPath.from_items(items, CMAC, 5.0, 3.0, (0.0, 0.0, 0.0), keep_out=[circle_polygon(center, radius_m)])
    pos, _ = _flown(path)
    assert np.linalg.norm(pos[:, :2] - center, axis=1).min() >= radius_m + CLEARANCE_M / 2
    _assert_smooth_and_through_every_waypoint(path, speed_mps=3.0)


def test_a_wide_acceptance_radius_does_not_cut_a_corner_into_a_zone():
    """The turn at waypoint 3 wraps around the zone's corner 4 m away; its 15 m radius would cut right across."""
    zone = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    items = [MissionItem(1, 22, 3, z=10.0), _wp(2, -20, -3, 10.0), _wp(3, 13, -3, 10.0, radius_m=15.0),
             _wp(4, 13, 40, 10.0)]
    args = (items, CMAC, 5.0, 8.0, (-30.0, -3.0, 0.0))
    assert _distance_m(_flown(MissionPath.from_items(*args))[0][:, :2], zone).min() == 0.0
    path = MissionPath.from_items(*args, keep_out=[zone])
    assert len(path.path_ned) == len(path.waypoints_ned)  # the legs clear the zone: only the cut is changed
    assert _distance_m(_flown(path)[0][:, :2], zone).min() >= CLEARANCE_M / 2
    _assert_smooth_and_through_every_waypoint(path, speed_mps=8.0)



def test_a_fast_shallow_detour_corner_is_cut_by_at_most_half_the_clearance():
    """One detour corner between two 100 m legs at 15 m/s: cut as deep as an acceptance radius of 10 m would allow,
    the reference would run into the zone's tip, 2 m inside the corner."""
    zone = np.array([[0.0, -150.0], [28.0, 0.0], [0.0, 150.0], [-5.0, 0.0]])
    items = [MissionItem(1, 22, 3, z=10.0), _wp(2, 20, -100, 10.0), _wp(3, 20, 100, 10.0)]
    path = MissionPath.from_items(items, CMAC, 5.0, 15.0, (20.0, -120.0, 0.0), keep_out=[zone])
    assert len(path.path_ned) == len(path.waypoints_ned) + 1  # one corner, beyond the tip at (28, 0)
    pos, _ = _flown(path)
    assert _distance_m(pos[:, :2], zone).min() >= CLEARANCE_M / 2
    _assert_smooth_and_through_every_waypoint(path, speed_mps=15.0)

# refusals ---------------------------------------------------------------------------------------------------------

def test_a_waypoint_inside_a_zone_is_refused_naming_it_and_the_zone():
    items = [MissionItem(1, 22, 3, z=10.0), _wp(2, 30, 0, 10.0), _wp(3, 3, 10, 10.0)]
    with pytest.raises(MissionError, match=r"item 3: MAV_CMD_NAV_WAYPOINT \(16\) at 3\.0 m N, 10\.0 m E is inside "
                                           r"keep-out zone 1 .*Nothing was flown"):
        MissionPath.from_items(items, CMAC, 5.0, 3.0, (-10.0, -10.0, 0.0),
                               keep_out=[circle_polygon((80.0, 80.0), 5.0), L_ZONE])


def test_a_waypoint_within_the_clearance_and_a_take_off_in_a_zone_are_refused():
    near = [MissionItem(1, 22, 3, z=10.0), _wp(2, 21, 3, 10.0)]
    with pytest.raises(MissionError, match=r"item 2: .* is 1\.0 m from keep-out zone 0 .* 2 m clearance"):
        MissionPath.from_items(near, CMAC, 5.0, 3.0, (-10.0, -10.0, 0.0), keep_out=[L_ZONE])
    with pytest.raises(MissionError, match=r"item 1: MAV_CMD_NAV_TAKEOFF \(22\) at 3\.0 m N, 3\.0 m E is inside"):
        MissionPath.from_items(near, CMAC, 5.0, 3.0, (3.0, 3.0, 0.0), keep_out=[L_ZONE])


def test_zones_that_close_the_way_are_refused():
    """Four walls around the end point, with 2 m gaps at the corners: too narrow for 2 m of clearance each side."""
    walls = [np.array(box) for box in (
        [[0.0, -8.0], [2.0, -8.0], [2.0, 8.0], [0.0, 8.0]], [[18.0, -8.0], [20.0, -8.0], [20.0, 8.0], [18.0, 8.0]],
        [[4.0, -10.0], [16.0, -10.0], [16.0, -8.0], [4.0, -8.0]], [[4.0, 8.0], [16.0, 8.0], [16.0, 10.0], [4.0, 10.0]],
    )]
    with pytest.raises(KeepOutError, match=r"no route from start at -10\.0 m N, 0\.0 m E to end at 10\.0 m N"):
        route_around((-10.0, 0.0), (10.0, 0.0), walls, CLEARANCE_M)
    route = np.array(route_around((-10.0, 0.0), (10.0, 0.0), walls, 0.5))  # with less clearance, the gaps open
    assert len(route) > 2 and all(np.all(_distance_m(route, wall) >= 0.5 - 1e-6) for wall in walls)
