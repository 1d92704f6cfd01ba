"""type_mask decoding of SET_POSITION_TARGET_LOCAL_NED / SET_ATTITUDE_TARGET, checked against MAVLink's bit
definitions and the masks real clients sent in the two autopilot logs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from shared_logs import PX4_LOG, needs_log

from dreamlink.sim.quadrotor.modes import (
    PX4_LOITER,
    PX4_OFFBOARD,
    PX4_RTL,
    CopterMode,
    copter_base_mode,
    px4_base_mode,
    px4_custom_mode,
    px4_mode_from_command,
    px4_split_custom_mode,
)
from dreamlink.sim.quadrotor.setpoints import (
    ardupilot_guided_submode,
    decode_attitude_target_mask,
    decode_position_target_mask,
    masked,
    px4_offboard_control,
)

ALL3 = (True, True, True)
NONE3 = (False, False, False)


def test_log_masks_decode_to_what_the_clients_meant() -> None:
    vel_yaw = decode_position_target_mask(2503)  # the excitation: velocity + yaw
    assert (vel_yaw.position, vel_yaw.velocity, vel_yaw.acceleration) == (NONE3, ALL3, NONE3)
    assert vel_yaw.yaw and not vel_yaw.yaw_rate and not vel_yaw.force
    climb = decode_position_target_mask(2496)  # PX4 climb ramp: position + velocity + yaw
    assert (climb.position, climb.velocity, climb.acceleration) == (ALL3, ALL3, NONE3) and climb.yaw
    hold = decode_position_target_mask(2552)  # PX4 hold before arming: position + yaw
    assert (hold.position, hold.velocity, hold.acceleration) == (ALL3, NONE3, NONE3) and hold.yaw
    assert [m.describe() for m in (vel_yaw, climb, hold)] == ["velocity+yaw", "position+velocity+yaw", "position+yaw"]


@pytest.mark.parametrize(("mask", "ardupilot", "px4"), [
    (2503, "vel_accel", "velocity"),
    (2496, "pos_vel_accel", "position"),
    (2552, "pos", "position"),
    (0b0000_1100_0011_1111, "accel", "acceleration"),  # 3135: acceleration only
    (0b0000_1110_0011_1111, None, None),  # acceleration as a force: both refuse
    (0xFFFF, None, None),  # nothing commanded
    (2503 & ~0b100, "vel_accel", "position"),  # z position + xyz velocity: AP drops the partial group
    (0b0000_1101_1111_1011, None, "position"),  # z position only: AP needs all three, PX4 takes one axis
])
def test_each_autopilot_reads_the_mask_its_own_way(mask: int, ardupilot: str | None, px4: str | None) -> None:
    decoded = decode_position_target_mask(mask)
    assert ardupilot_guided_submode(decoded) == ardupilot
    assert px4_offboard_control(decoded) == px4


def test_masked_values_are_nan_where_ignored() -> None:
    decoded = decode_position_target_mask(0b0000_1101_1111_1011)  # z position only
    x, y, z = masked((1.0, 2.0, -5.0), decoded.position)
    assert math.isnan(x) and math.isnan(y) and z == -5.0


def test_attitude_mask() -> None:
    att_thrust = decode_attitude_target_mask(0b0000_0111)  # ignore body rates: attitude + thrust
    assert att_thrust.attitude and att_thrust.thrust and att_thrust.body_rates == NONE3
    rates = decode_attitude_target_mask(0b1000_0000)  # ignore attitude: body rates + thrust
    assert not rates.attitude and rates.body_rates == ALL3 and rates.describe() == "body_rates+thrust"
    assert not decode_attitude_target_mask(64).thrust


def test_out_of_range_mask_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="type_mask"):
        decode_position_target_mask(70000)


def test_heartbeat_fields_match_the_logs() -> None:
    assert copter_base_mode(CopterMode.STABILIZE, armed=False) == 81
    assert copter_base_mode(CopterMode.GUIDED, armed=False) == 89
    assert copter_base_mode(CopterMode.LAND, armed=True) == 217
    assert px4_custom_mode(4, 3) == 50593792 and px4_base_mode(PX4_LOITER, armed=False) == 29
    assert PX4_OFFBOARD.custom_mode == 393216 and px4_base_mode(PX4_OFFBOARD, armed=True) == 145
    assert px4_split_custom_mode(100925440) == (4, 6)
    assert px4_mode_from_command(1, 6, 0) == PX4_OFFBOARD and px4_mode_from_command(1, 4, 5) == PX4_RTL
    assert px4_mode_from_command(1, 0x60000, 0) is None  # the packed word in param2 matches nothing in PX4


def _first_masks_in(log_path: Path, limit: int) -> set[int]:
    os.environ.setdefault("MAVLINK20", "1")
    from pymavlink import mavutil

    masks: set[int] = set()
    log = mavutil.mavlink_connection(str(log_path))
    for _ in range(limit):
        msg = log.recv_match(type="SET_POSITION_TARGET_LOCAL_NED")
        if msg is None:
            break
        masks.add(int(msg.type_mask))
    return masks


@needs_log(PX4_LOG)
def test_every_mask_the_px4_log_client_sent_is_a_supported_combination() -> None:
    masks = _first_masks_in(PX4_LOG, 260)  # hold, climb ramp, first excitation
    assert masks == {2552, 2496, 2503}
    for mask in masks:
        decoded = decode_position_target_mask(mask)
        assert px4_offboard_control(decoded) is not None and ardupilot_guided_submode(decoded) is not None
