"""Global coordinates into the autopilot's local frame, and a mission's waypoints into the reference the
planner tracks: continuous, through every waypoint when it says, holding where it says, at the mission's speed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dreamlink.firmware_bridge.mission_items import MissionItem
from dreamlink.runtime.geo import LocalFrame
from dreamlink.runtime.mission_commands import MissionError
from dreamlink.runtime.mission_path import MissionPath, PathConfig, path_config_for
from dreamlink.runtime.plan_files import read_mission_file
from dreamlink.spec import CARTPOLE, QUAD

MISSIONS = Path(__file__).parent / "data" / "missions"
CMAC = LocalFrame(-35.363262, 149.165237, 584.09)
DT = 0.02


# frame conversion ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("projection", ["ardupilot", "px4"])
def test_a_point_100_m_north_east_round_trips(projection):
    frame = LocalFrame(CMAC.origin_lat_deg, CMAC.origin_lon_deg, CMAC.origin_alt_m, projection)
    lat, lon, alt = frame.to_global(100.0, 100.0, -12.0)
    assert lat > frame.origin_lat_deg and lon > frame.origin_lon_deg and alt == pytest.approx(596.09)

    n, e, d = frame.to_ned(lat, lon, alt)
    assert abs(n - 100.0) < 0.01 and abs(e - 100.0) < 0.01 and abs(d + 12.0) < 0.01


def test_ardupilot_scale_is_its_location_scaling_factor():
    n, e, _ = CMAC.to_ned(CMAC.origin_lat_deg + 1e-5, CMAC.origin_lon_deg + 1e-5, CMAC.origin_alt_m)
    assert n == pytest.approx(1.1131884502145034, rel=1e-9)  # 100 units of 1e-7 degree
    assert e == pytest.approx(1.1131884502145034 * math.cos(math.radians(CMAC.origin_lat_deg + 0.5e-5)), rel=1e-9)


def test_the_two_autopilots_projections_agree_within_the_documented_error():
    px4 = LocalFrame(CMAC.origin_lat_deg, CMAC.origin_lon_deg, CMAC.origin_alt_m, "px4")
    for bearing_deg in range(0, 360, 15):
        b = math.radians(bearing_deg)
        for distance_m, documented_m in ((1000.0, 1.12), (40.0, 0.045)):
            lat, lon, alt = px4.to_global(distance_m * math.cos(b), distance_m * math.sin(b), 0.0)
            n, e, _ = CMAC.to_ned(lat, lon, alt)
            error_m = math.hypot(n - distance_m * math.cos(b), e - distance_m * math.sin(b))
            assert error_m <= documented_m
            assert error_m > 0.5 * documented_m  # and the difference is real: pick the autopilot's own


def _wp(seq, n, e, alt, frame=3, hold_s=0.0, radius_m=0.0, origin=CMAC):
    lat, lon, _ = origin.to_global(n, e, 0.0)
    return MissionItem(seq, 16, frame, param1=hold_s, param2=radius_m, x=lat, y=lon, z=alt)


def test_relative_and_amsl_altitudes():
    """Relative altitudes are above home, AMSL above the sea; the local frame's down is from its origin."""
    home_ned = (0.0, 0.0, -2.0)  # home 2 m above the autopilot's origin
    items = [_wp(1, 10, 0, 10.0, frame=3), _wp(2, 20, 0, 10.0, frame=6), _wp(3, 30, 0, 594.09, frame=0),
             _wp(4, 40, 0, 594.09, frame=5)]
    path = MissionPath.from_items(items, CMAC, 5.0, 2.0, home_ned)
    assert path.waypoints_ned[1:, 2] == pytest.approx([-12.0, -12.0, -10.0, -10.0])
    assert path.waypoints_ned[1:, 0] == pytest.approx([10, 20, 30, 40], abs=1e-6)
    assert path.waypoints_ned[0] == pytest.approx([0.0, 0.0, -7.0])  # no NAV_TAKEOFF: 5 m above home


def test_terrain_altitudes_are_refused():
    with pytest.raises(MissionError, match=r"item 1: MAV_CMD_NAV_WAYPOINT \(16\) in MAV_FRAME_GLOBAL_TERRAIN_ALT_INT"):
        MissionPath.from_items([_wp(1, 10, 0, 10.0, frame=11)], CMAC, 5.0, 2.0, (0, 0, 0))


# the test mission -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_mission() -> MissionPath:
    mission = read_mission_file(MISSIONS / "cmac_test_mission.plan")
    return MissionPath.from_items(mission.items, CMAC, 5.0, mission.hover_speed_mps or 0.0, (0.0, 0.0, 0.0))


def test_path_is_continuous_in_position_and_velocity(test_mission):
    t = np.arange(-1.0, test_mission.duration_s + 2.0, DT)
    pos, vel = test_mission.position_velocity(t)
    speed = np.linalg.norm(vel, axis=1)

    assert speed.max() <= 3.0 + 1e-9  # the plan's hover speed
    assert np.max(np.linalg.norm(np.diff(pos, axis=0), axis=1)) <= 3.0 * DT + 1e-9
    # acceleration at most max_accel_mps2, twice that where two legs overlap around a corner
    assert np.max(np.linalg.norm(np.diff(vel, axis=0), axis=1)) <= 2 * PathConfig().max_accel_mps2 * DT + 1e-9
    # and the velocity is the derivative of the position
    assert np.max(np.abs(np.gradient(pos, DT, axis=0)[1:-1] - vel[1:-1])) < 0.05


def test_path_starts_at_the_take_off_point_and_ends_on_the_ground_at_home(test_mission):
    pos, vel = test_mission.position_velocity(np.array([0.0, test_mission.duration_s, test_mission.duration_s + 5]))
    assert pos[0] == pytest.approx([0.0, 0.0, -10.0]) and test_mission.takeoff_altitude_m == pytest.approx(10.0)
    assert pos[1] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9) and pos[2] == pytest.approx(pos[1])
    assert np.abs(vel).max() < 1e-9
    assert test_mission.waypoint_seq[0] == 1 and test_mission.waypoint_seq[-1] == 9  # take-off ... RTL


def test_path_passes_every_waypoint_within_its_acceptance_radius_when_planned(test_mission):
    pos, _ = test_mission.position_velocity(test_mission.arrival_s)
    miss = np.linalg.norm(pos - test_mission.waypoints_ned, axis=1)
    assert np.all(miss <= test_mission.acceptance_m + 1e-9)
    assert np.all(np.diff(test_mission.arrival_s) > 0)
    cut = miss > 0.05
    assert cut.sum() >= 3  # corners are cut, not stopped at: the path flows through them


def test_path_holds_for_the_hold_time(test_mission):
    (k,) = np.flatnonzero(test_mission.hold_s > 0)
    assert test_mission.hold_s[k] == 3.0 and test_mission.waypoint_seq[k] == 3
    t = np.linspace(test_mission.arrival_s[k], test_mission.arrival_s[k] + 3.0, 31)
    pos, vel = test_mission.position_velocity(t)
    assert np.abs(vel).max() < 1e-9
    assert np.allclose(pos, test_mission.waypoints_ned[k], atol=1e-9)
    _, after = test_mission.position_velocity(np.array([test_mission.arrival_s[k] + 3.2]))
    assert np.linalg.norm(after) > 0.1  # and then moves on


def test_speed_changes_after_do_change_speed(test_mission):
    seq = test_mission.waypoint_seq
    before, after = seq.index(3), seq.index(5)  # DO_CHANGE_SPEED (item 4) sits between waypoints 3 and 5
    t_before = np.linspace(test_mission.arrival_s[before - 1], test_mission.arrival_s[before], 200)
    t_after = np.linspace(test_mission.arrival_s[before] + 3.0, test_mission.arrival_s[after], 200)
    speed_before = np.linalg.norm(test_mission.position_velocity(t_before)[1], axis=1).max()
    speed_after = np.linalg.norm(test_mission.position_velocity(t_after)[1], axis=1).max()
    assert speed_before == pytest.approx(3.0, abs=0.01)
    assert speed_after == pytest.approx(2.0, abs=0.01)


def test_duration_is_what_the_legs_and_the_landing_take(test_mission):
    pts = test_mission.waypoints_ned
    horizontal_m = float(np.sum(np.linalg.norm(np.diff(pts[:-2], axis=0), axis=1)))  # up to the point above home
    lower_bound_s = horizontal_m / 3.0 + 3.0 + 7.0 / 1.5 + 3.0 / 0.5  # fastest legs, the hold, the two descents
    assert lower_bound_s < test_mission.duration_s < 1.5 * lower_bound_s


def test_reference_window_is_the_path_over_the_horizon(test_mission):
    ref = test_mission.reference_window(12.0, horizon=25, period_s=0.1, spec=QUAD, start_s=2.0)
    pos, vel = test_mission.position_velocity(10.0 + 0.1 * np.arange(1, 26))
    assert ref.shape == (25, QUAD.state_dim) and ref.dtype == np.float32
    for i, axis in enumerate("ned"):
        assert ref[:, QUAD.state_index(f"pos_{axis}_m")] == pytest.approx(pos[:, i], abs=1e-5)
        assert ref[:, QUAD.state_index(f"vel_{axis}_mps")] == pytest.approx(vel[:, i], abs=1e-5)


# other missions and refusals --------------------------------------------------------------------------------------

def test_ardupilot_do_change_speed_mission_flies_its_speeds():
    mission = read_mission_file(MISSIONS / "ardupilot_copter_do_change_speed.waypoints")
    home = mission.home
    assert home is not None
    frame = LocalFrame(home.lat_deg, home.lon_deg, home.alt_m)
    path = MissionPath.from_items(mission.items, frame, 5.0, 5.0, (0.0, 0.0, 0.0))

    assert path.takeoff_altitude_m == pytest.approx(20.0)  # NAV_TAKEOFF's, not the fallback
    assert path.leg_speed_mps[:4] == pytest.approx([5.0, 15.0, 10.0, 17.0])  # after each DO_CHANGE_SPEED
    assert path.waypoints_ned[-1] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)  # RTL: landed at home


def test_sharp_turns_stop_and_straight_lines_do_not_slow_down():
    items = [MissionItem(1, 22, 3, z=10.0), _wp(2, 20, 0, 10.0), _wp(3, 40, 0, 10.0), _wp(4, 20, 0, 10.0)]
    path = MissionPath.from_items(items, CMAC, 5.0, 3.0, (0.0, 0.0, 0.0))
    _, vel = path.position_velocity(path.arrival_s)
    assert np.linalg.norm(vel[1]) == pytest.approx(3.0)  # through waypoint 2 on a straight line at full speed
    assert np.linalg.norm(vel[2]) < 1e-9  # waypoint 3 turns back: a stop


def test_land_with_no_position_lands_where_it_is():
    items = [MissionItem(1, 22, 3, z=8.0), _wp(2, 10, 5, 8.0), MissionItem(3, 21, 3)]
    path = MissionPath.from_items(items, CMAC, 5.0, 2.0, (1.0, 1.0, 0.5))
    assert path.waypoints_ned[-1] == pytest.approx([10.0, 5.0, 0.5], abs=1e-6)  # ground is home's altitude
    assert path.waypoints_ned[0] == pytest.approx([1.0, 1.0, -7.5])


@pytest.mark.parametrize(("items", "error"), [
    ([_wp(1, 10, 0, 10.0), MissionItem(2, 22, 3, z=10.0)], r"item 2: MAV_CMD_NAV_TAKEOFF \(22\) must be the first"),
    ([MissionItem(1, 20, 2), _wp(2, 10, 0, 10.0)], r"item 2: .* comes after item 1 \(MAV_CMD_NAV_RETURN_TO_LAUNCH"),
    ([_wp(1, 10, 0, 10.0), MissionItem(2, 178, 2, param1=1, param2=40.0)], r"item 2: .* to 40 m/s is above"),
    ([MissionItem(1, 183, 2, param1=9, param2=1900)], r"item 1: MAV_CMD_DO_SET_SERVO \(183\) is not supported"),
    ([], "no items to fly"),
])
def test_missions_that_cannot_be_flown_are_refused(items, error):
    with pytest.raises(MissionError, match=error):
        MissionPath.from_items(items, CMAC, 5.0, 2.0, (0.0, 0.0, 0.0))


def test_a_plan_made_for_another_place_is_refused():
    """QGroundControl's square near Zurich, flown from ArduPilot SITL's home in Canberra."""
    mission = read_mission_file(MISSIONS / "qgc_simple_square.plan")
    with pytest.raises(MissionError, match=r"item 2: MAV_CMD_NAV_WAYPOINT \(16\) at 47.3987420, 8.5465940 is \d+\.\d "
                                           r"km from home"):
        MissionPath.from_items(mission.items, CMAC, 5.0, 5.0, (0.0, 0.0, 0.0))


def test_the_vehicles_command_limits_cap_the_paths_speeds():
    """The quad's velocity commands reach ±3 m/s horizontally and ±1 m/s vertically: the path asks 80 % of that at
    most, so the planner has room to catch up a lag; a 3 m/s plan flies at 2.4 m/s."""
    cfg = path_config_for(QUAD)
    assert cfg.max_horizontal_speed_mps == pytest.approx(2.4)
    assert cfg.max_climb_mps == pytest.approx(0.8) and cfg.max_descent_mps == pytest.approx(0.8)
    assert path_config_for(CARTPOLE) == PathConfig()  # no velocity commands: nothing to cap

    mission = read_mission_file(MISSIONS / "cmac_test_mission.plan")
    capped = MissionPath.from_items(mission.items, CMAC, 5.0, 3.0, (0.0, 0.0, 0.0), config=cfg)
    free = MissionPath.from_items(mission.items, CMAC, 5.0, 3.0, (0.0, 0.0, 0.0))
    t = np.arange(0.0, capped.duration_s, DT)
    _, vel = capped.position_velocity(t)
    assert np.linalg.norm(vel[:, :2], axis=1).max() <= 2.4 + 1e-9
    assert vel[:, 2].max() <= 0.8 + 1e-9 and vel[:, 2].min() >= -0.8 - 1e-9
    _, free_vel = free.position_velocity(np.arange(0.0, free.duration_s, DT))
    assert np.linalg.norm(free_vel[:, :2], axis=1).max() > 2.9  # without the cap the plan's 3 m/s
    assert capped.duration_s > free.duration_s


def test_a_speed_change_cannot_raise_the_climb_above_the_vehicles_limit():
    items = [MissionItem(1, 22, 3, z=5.0), MissionItem(2, 178, 2, param1=2, param2=5.0), _wp(3, 0, 0, 25.0)]
    path = MissionPath.from_items(items, CMAC, 5.0, 3.0, (0.0, 0.0, 0.0), config=path_config_for(QUAD))
    _, vel = path.position_velocity(np.arange(0.0, path.duration_s, DT))
    assert -vel[:, 2].max() <= 0.8 + 1e-9 and vel[:, 2].min() == pytest.approx(-0.8)
