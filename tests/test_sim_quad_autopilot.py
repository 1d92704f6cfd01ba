"""The flight-controller logic of both flavours, in process (no sockets): modes, arming, setpoints, failsafes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from dreamlink.sim.quadrotor.ardupilot import ArduCopterAutopilot
from dreamlink.sim.quadrotor.autopilot import (
    MAV_LANDED_STATE_IN_AIR,
    MAV_LANDED_STATE_ON_GROUND,
    MAV_RESULT_ACCEPTED,
    MAV_RESULT_DENIED,
    MAV_RESULT_FAILED,
    MAV_RESULT_TEMPORARILY_REJECTED,
    MAV_STATE_CRITICAL,
    MAV_STATE_UNINIT,
    AutopilotConfig,
)
from dreamlink.sim.quadrotor.modes import PX4_LOITER, PX4_OFFBOARD, PX4_RTL, CopterMode
from dreamlink.sim.quadrotor.px4 import Px4Autopilot
from dreamlink.sim.quadrotor.randomisation import DomainParams
from dreamlink.sim.quadrotor.vehicle import SimVehicle

NAN7 = (0.0, 0.0, 0.0, math.nan, math.nan, math.nan, math.nan)
VEL_YAW = 2503
POS_YAW = 2552


class Flight:
    """A SimVehicle driven like a companion computer would, in vehicle time."""

    def __init__(self, flavour: str, **config: object) -> None:
        self.v = SimVehicle(AutopilotConfig(flavour, **config), DomainParams(seed=0))  # type: ignore[arg-type]
        self.ap: Any = self.v.autopilot

    def cmd(self, command: int, *params: float) -> list[int] | None:
        full = (*params, *NAN7[len(params):]) if len(params) < 7 else params
        return self.ap.command(command, full, self.v.time_s, self.v.state)

    def run(self, seconds: float, velocity: tuple[float, float, float] | None = None,
            position: tuple[float, float, float] | None = None) -> None:
        for _ in range(round(seconds * 100)):
            if velocity is not None:
                self.ap.position_target(VEL_YAW, 1, (0, 0, 0), velocity, (0, 0, 0), 0.0, 0.0, self.v.time_s,
                                        self.v.state)
            if position is not None:
                self.ap.position_target(POS_YAW, 1, position, (0, 0, 0), (0, 0, 0), 0.0, 0.0, self.v.time_s,
                                        self.v.state)
            self.v.advance_frame()

    def in_guided_at(self, altitude_m: float) -> Flight:
        """ArduPilot: estimator ready, GUIDED, armed, NAV_TAKEOFF to `altitude_m` and settled there."""
        self.run(1.1)
        self.cmd(176, 1, CopterMode.GUIDED)
        self.cmd(400, 1)
        self.cmd(22, *([0.0] * 6), altitude_m)
        self.run(6.0)
        return self

    def texts(self) -> list[str]:
        return [t for _, t in self.ap.take_texts()]

    @property
    def alt(self) -> float:
        return -float(self.v.state.pos_ned_m[2])


# -- ArduCopter -----------------------------------------------------------------------------------------------


def test_ardupilot_refuses_to_arm_until_the_estimator_is_ready_and_in_unarmable_modes() -> None:
    f = Flight("ardupilot")
    assert f.cmd(400, 1) == [MAV_RESULT_FAILED] and f.texts() == ["PreArm: Waiting for Nav Checks"]
    assert f.cmd(176, 1, CopterMode.GUIDED) == [MAV_RESULT_FAILED]  # GUIDED needs a position estimate
    assert f.texts() == ["Mode change to GUIDED failed: requires position"]
    f.run(1.1)
    assert f.cmd(176, 1, CopterMode.LAND) == [MAV_RESULT_ACCEPTED]
    assert f.cmd(400, 1) == [MAV_RESULT_FAILED] and f.texts() == ["Arm: Mode not armable"]
    assert f.cmd(176, 0, CopterMode.GUIDED) == [MAV_RESULT_DENIED]  # no CUSTOM_MODE_ENABLED flag
    assert f.cmd(176, 1, 42) == [MAV_RESULT_FAILED] and f.texts() == ["No such mode 42"]
    assert f.cmd(176, 1, CopterMode.GUIDED) == [MAV_RESULT_ACCEPTED]
    assert f.cmd(22, *([0.0] * 6), 5.0) == [MAV_RESULT_FAILED]  # takeoff needs arming first
    assert f.cmd(400, 1) == [MAV_RESULT_ACCEPTED] and f.texts() == ["Arming motors"]
    assert f.ap.heartbeat()[2] == 217 and f.cmd(999) is None  # unknown: left to the MAVLink face


def test_ardupilot_setpoints_do_not_lift_a_landed_vehicle_but_takeoff_does() -> None:
    f = Flight("ardupilot")
    f.run(1.1)
    f.cmd(176, 1, CopterMode.GUIDED)
    f.cmd(400, 1)
    f.run(2.0, velocity=(0.0, 0.0, -1.0))
    assert f.alt < 0.05 and f.ap.landed
    assert f.cmd(22, *([0.0] * 6), 4.0) == [MAV_RESULT_ACCEPTED]
    f.run(6.0)
    assert f.alt == pytest.approx(4.0, abs=0.3) and f.ap.landed_state() == MAV_LANDED_STATE_IN_AIR
    assert f.cmd(22, *([0.0] * 6), 8.0) == [MAV_RESULT_FAILED]  # already flying


def test_ardupilot_guided_velocity_times_out_into_a_hold_but_position_does_not() -> None:
    f = Flight("ardupilot").in_guided_at(5.0)
    f.run(4.0, velocity=(2.0, 0.0, 0.0))
    assert f.v.state.vel_ned_mps[0] == pytest.approx(2.0, abs=0.15)
    f.run(2.5)  # within GUID_TIMEOUT the last velocity is still flown
    assert f.v.state.vel_ned_mps[0] > 1.8
    f.run(4.0)
    stopped_at = f.v.state.pos_ned_m.copy()
    assert np.linalg.norm(f.v.state.vel_ned_mps) < 0.2 and f.ap.mode == CopterMode.GUIDED
    assert f.ap.counters.guided_timeouts == 1
    f.run(3.0)
    assert np.linalg.norm(f.v.state.pos_ned_m - stopped_at) < 0.3  # it holds there
    f.ap.position_target(POS_YAW, 1, (0.0, 5.0, -6.0), (0, 0, 0), (0, 0, 0), 0.0, 0.0, f.v.time_s, f.v.state)
    f.run(12.0)  # one position target, no stream: flown to and held, no timeout
    assert np.linalg.norm(f.v.state.pos_ned_m - [0.0, 5.0, -6.0]) < 0.3


def test_ardupilot_ignores_setpoints_outside_guided_and_stops_on_invalid_ones() -> None:
    f = Flight("ardupilot").in_guided_at(5.0)
    f.run(2.0, velocity=(1.5, 0.0, 0.0))
    f.ap.position_target(VEL_YAW, 1, (0, 0, 0), (math.nan, 0.0, 0.0), (0, 0, 0), 0.0, 0.0, f.v.time_s, f.v.state)
    assert f.ap.counters.setpoints_invalid == 1 and f.ap.task.kind == "hold"
    f.run(3.0)
    assert np.linalg.norm(f.v.state.vel_ned_mps) < 0.2
    f.cmd(176, 1, CopterMode.LOITER)
    f.run(1.0, velocity=(2.0, 0.0, 0.0))
    assert f.ap.counters.setpoints_ignored == 100 and np.linalg.norm(f.v.state.vel_ned_mps) < 0.2


def test_ardupilot_land_disarms_at_touchdown_and_rtl_comes_home() -> None:
    f = Flight("ardupilot").in_guided_at(5.0)
    f.run(4.0, velocity=(3.0, 0.0, 0.0))
    assert f.cmd(20) == [MAV_RESULT_ACCEPTED] and f.ap.mode == CopterMode.RTL
    f.run(12.0)
    assert -f.v.state.pos_ned_m[2] > 14.0  # climbed to RTL_ALT (15 m) first
    f.run(40.0)
    assert not f.ap.armed and f.ap.landed_state() == MAV_LANDED_STATE_ON_GROUND
    assert np.linalg.norm(f.v.state.pos_ned_m[:2]) < 0.5 and "Disarming motors" in f.texts()


def test_ardupilot_armed_and_idle_on_the_ground_disarms_after_disarm_delay() -> None:
    f = Flight("ardupilot")
    f.run(1.1)
    f.cmd(176, 1, CopterMode.GUIDED)
    f.cmd(400, 1)
    f.run(9.5)
    assert f.ap.armed
    f.run(1.0)
    assert not f.ap.armed


def test_ardupilot_attitude_target_thrust_is_a_climb_rate() -> None:
    f = Flight("ardupilot")
    f.run(1.1)
    f.cmd(176, 1, CopterMode.GUIDED)
    f.cmd(400, 1)
    level = (1.0, 0.0, 0.0, 0.0)
    for _ in range(300):  # thrust 0.75: climb at half of WPNAV_SPEED_UP, from the ground
        f.ap.attitude_target(0b0000_0111, level, (0, 0, 0), 0.75, f.v.time_s, f.v.state)
        f.v.advance_frame()
    assert f.v.state.vel_ned_mps[2] == pytest.approx(-1.25, abs=0.2)


# -- PX4 ------------------------------------------------------------------------------------------------------


def test_px4_offboard_needs_a_stream_armed_not_disarmed() -> None:
    f = Flight("px4")
    f.run(1.1)
    assert f.ap.mode_name == "Hold" and f.ap.heartbeat()[3] == 0x03040000
    assert f.cmd(176, 1, 6) == [MAV_RESULT_ACCEPTED, MAV_RESULT_ACCEPTED]  # disarmed: any mode goes
    assert f.ap.heartbeat()[3] == PX4_OFFBOARD.custom_mode and f.ap.heartbeat()[4] == MAV_STATE_UNINIT
    assert f.cmd(400, 1) == [MAV_RESULT_TEMPORARILY_REJECTED]
    assert f.texts() == ["Preflight Fail: No offboard signal\t",
                         "Arming denied: Resolve system health failures first\t"]
    f.run(0.5, position=(0.0, 0.0, 0.0))
    assert f.cmd(400, 1) == [MAV_RESULT_ACCEPTED]


def test_px4_rejects_offboard_in_flight_without_a_stream_then_accepts_and_falls_out_to_rtl() -> None:
    f = Flight("px4")
    f.run(1.1)
    assert f.cmd(22) == [MAV_RESULT_ACCEPTED]  # NaN altitude: MIS_TAKEOFF_ALT
    assert f.cmd(400, 1) == [MAV_RESULT_ACCEPTED]
    f.run(4.0)
    assert f.ap.nav_mode == PX4_LOITER and f.alt == pytest.approx(2.5, abs=0.3)
    assert f.cmd(176, 1, 6) == [MAV_RESULT_ACCEPTED, MAV_RESULT_TEMPORARILY_REJECTED]  # the premature ACK first
    f.run(0.3, position=(0.0, 0.0, -2.5))
    assert f.cmd(176, 1, 6) == [MAV_RESULT_ACCEPTED, MAV_RESULT_ACCEPTED] and f.ap.nav_mode == PX4_OFFBOARD
    f.run(3.0, velocity=(1.0, 0.0, 0.0))
    assert f.v.state.vel_ned_mps[0] == pytest.approx(1.0, abs=0.15)
    f.run(0.9)
    assert f.ap.nav_mode == PX4_OFFBOARD  # COM_OF_LOSS_T is 1 s
    f.run(0.2)
    assert f.ap.nav_mode == PX4_RTL and f.ap.user_mode == PX4_OFFBOARD
    assert f.ap.heartbeat()[4] == MAV_STATE_CRITICAL and "Failsafe activated\t" in f.texts()
    f.run(0.2, velocity=(0.0, 0.0, 0.0))
    assert f.ap.nav_mode == PX4_OFFBOARD and not f.ap.failsafe  # the stream is back, so is OFFBOARD


@pytest.mark.parametrize(("setting", "mode"), [("land", "Land"), ("hold", "Hold")])
def test_px4_offboard_loss_mode_is_configurable(setting: str, mode: str) -> None:
    f = Flight("px4", px4_offboard_loss_mode=setting)
    f.run(1.1)
    f.run(0.2, position=(0.0, 0.0, -3.0))
    f.cmd(176, 1, 6)
    f.cmd(400, 1)
    f.run(4.0, position=(0.0, 0.0, -3.0))
    f.run(1.2)
    assert f.ap.mode_name == mode


def test_px4_land_disarms_after_com_disarm_land_and_returns_to_the_users_mode() -> None:
    f = Flight("px4")
    f.run(1.1)
    f.run(0.2, position=(0.0, 0.0, 0.0))
    f.cmd(176, 1, 6)
    f.cmd(400, 1)
    f.run(5.0, position=(0.0, 0.0, -3.0))
    assert f.cmd(21) == [MAV_RESULT_ACCEPTED] and "Landing at current position\t" in f.texts()
    f.run(8.0)
    assert f.ap.landed and not f.ap.armed
    texts = f.texts()
    assert "Landing detected\t" in texts and "Disarmed by landing\t" in texts
    assert f.ap.nav_mode == PX4_OFFBOARD and f.ap.heartbeat()[2] == 17  # back to OFFBOARD, disarmed (log)


def test_px4_refuses_disarm_in_flight_and_unknown_auto_submodes() -> None:
    f = Flight("px4")
    f.run(1.1)
    f.cmd(22)
    f.cmd(400, 1)
    f.run(3.0)
    assert f.cmd(400, 0) == [MAV_RESULT_TEMPORARILY_REJECTED]
    assert f.cmd(176, 1, 4, 7)[-1] == MAV_RESULT_TEMPORARILY_REJECTED  # type: ignore[index]
    assert f.cmd(176, 1, 0x60000) == [MAV_RESULT_ACCEPTED, MAV_RESULT_ACCEPTED]  # matches nothing, changes nothing
    assert f.ap.nav_mode == PX4_LOITER and f.ap.armed


def test_ardupilot_and_px4_are_distinct_classes_with_their_own_heartbeat() -> None:
    assert isinstance(Flight("ardupilot").ap, ArduCopterAutopilot)
    px4 = Flight("px4").ap
    assert isinstance(px4, Px4Autopilot) and px4.heartbeat()[:2] == (2, 12)


def test_set_mode_message_is_acked_by_px4_but_not_by_ardupilot() -> None:
    ap = Flight("ardupilot")
    ap.run(1.1)
    assert ap.ap.set_mode_message(1, int(CopterMode.GUIDED), ap.v.time_s, ap.v.state) == []
    assert ap.ap.mode == CopterMode.GUIDED
    px4 = Flight("px4")
    px4.run(1.1)
    assert px4.ap.set_mode_message(1, PX4_RTL.custom_mode, px4.v.time_s, px4.v.state) == [MAV_RESULT_ACCEPTED]
    assert px4.ap.nav_mode == PX4_RTL  # the packed custom_mode of SET_MODE is split into main/sub
