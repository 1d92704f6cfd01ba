"""What a SET_POSITION_TARGET_LOCAL_NED / SET_ATTITUDE_TARGET commands: pure decoding of their type_mask.

MAVLink common.xml, POSITION_TARGET_TYPEMASK (a set bit means *ignore* that field): 1 X, 2 Y, 4 Z, 8 VX,
16 VY, 32 VZ, 64 AX, 128 AY, 256 AZ, 512 FORCE_SET (afx..afz are a force, not an acceleration), 1024 YAW,
2048 YAW_RATE. ATTITUDE_TARGET_TYPEMASK: 1 BODY_ROLL_RATE, 2 BODY_PITCH_RATE, 4 BODY_YAW_RATE ignore,
32 THRUST_BODY_SET, 64 THROTTLE ignore, 128 ATTITUDE ignore.

The masks in the real logs (../shared/data/sitl-logs): 2503 = velocity + yaw (the excitation), 2496 =
position + velocity + yaw (PX4 climb ramp), 2552 = position + yaw (PX4 hold before arming).

The two autopilots read the same bits differently:

- ArduCopter (GCS_MAVLINK_Copter::handle_message_set_position_target_local_ned) ignores a whole group when any
  of its three bits is set, then accepts pos+vel(+acc), vel(+acc), acc, or pos alone; anything else, FORCE_SET
  with acceleration, or NaN velocities stop the vehicle (`mode_guided.init(true)`, a position hold).
- PX4 (mavlink_receiver.cpp, and docs/en/flight_modes/offboard.md "Copter/VTOL") keeps each axis separately,
  NaN where ignored; the offboard control mode is position if any position axis is set, else velocity, else
  acceleration; FORCE_SET with acceleration is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

X_IGNORE, Y_IGNORE, Z_IGNORE = 1, 2, 4
VX_IGNORE, VY_IGNORE, VZ_IGNORE = 8, 16, 32
AX_IGNORE, AY_IGNORE, AZ_IGNORE = 64, 128, 256
FORCE_SET = 512
YAW_IGNORE = 1024
YAW_RATE_IGNORE = 2048

ROLL_RATE_IGNORE, PITCH_RATE_IGNORE, YAW_RATE_BODY_IGNORE = 1, 2, 4
THRUST_BODY_SET = 32
THROTTLE_IGNORE = 64
ATTITUDE_IGNORE = 128

MAV_FRAME_LOCAL_NED = 1
MAV_FRAME_LOCAL_OFFSET_NED = 7
MAV_FRAME_BODY_NED = 8
MAV_FRAME_BODY_OFFSET_NED = 9
ARDUPILOT_FRAMES = (MAV_FRAME_LOCAL_NED, MAV_FRAME_LOCAL_OFFSET_NED, MAV_FRAME_BODY_NED, MAV_FRAME_BODY_OFFSET_NED)
PX4_FRAMES = (MAV_FRAME_LOCAL_NED, MAV_FRAME_BODY_NED)


@dataclass(frozen=True)
class PositionTargetMask:
    """Which fields a SET_POSITION_TARGET_* type_mask says to use (True = commanded), per axis."""

    position: tuple[bool, bool, bool]
    velocity: tuple[bool, bool, bool]
    acceleration: tuple[bool, bool, bool]
    force: bool
    yaw: bool
    yaw_rate: bool

    def describe(self) -> str:
        parts = [name for name, used in (("position", self.position), ("velocity", self.velocity),
                                          ("force" if self.force else "acceleration", self.acceleration))
                 if any(used)]
        parts += [name for name, used in (("yaw", self.yaw), ("yaw_rate", self.yaw_rate)) if used]
        return "+".join(parts) or "nothing"


def decode_position_target_mask(type_mask: int) -> PositionTargetMask:
    if not 0 <= type_mask <= 0xFFFF:
        raise ValueError(f"type_mask: expected a uint16, got {type_mask!r}")

    def used(bit: int) -> bool:
        return not type_mask & bit

    return PositionTargetMask(
        position=(used(X_IGNORE), used(Y_IGNORE), used(Z_IGNORE)),
        velocity=(used(VX_IGNORE), used(VY_IGNORE), used(VZ_IGNORE)),
        acceleration=(used(AX_IGNORE), used(AY_IGNORE), used(AZ_IGNORE)),
        force=bool(type_mask & FORCE_SET), yaw=used(YAW_IGNORE), yaw_rate=used(YAW_RATE_IGNORE))


def ardupilot_guided_submode(mask: PositionTargetMask) -> str | None:
    """ArduCopter's reading: "pos_vel_accel", "vel_accel", "accel", "pos", or None (invalid -> stop)."""
    pos, vel, acc = all(mask.position), all(mask.velocity), all(mask.acceleration)
    if mask.force and acc:
        return None
    if pos and vel:
        return "pos_vel_accel"
    if vel:
        return "vel_accel"
    if not pos and acc:
        return "accel"
    if pos and not acc:
        return "pos"
    return None


def px4_offboard_control(mask: PositionTargetMask) -> str | None:
    """PX4's offboard control mode for this mask: "position", "velocity", "acceleration", or None (nothing
    usable, or FORCE_SET acceleration, which PX4 refuses)."""
    if any(mask.position):
        return "position"
    if any(mask.velocity):
        return "velocity"
    if any(mask.acceleration):
        return None if mask.force else "acceleration"
    return None


def masked(values: tuple[float, float, float], used: tuple[bool, bool, bool]) -> tuple[float, float, float]:
    """The values with NaN where the mask ignores them (PX4's trajectory_setpoint convention)."""
    return (values[0] if used[0] else math.nan, values[1] if used[1] else math.nan,
            values[2] if used[2] else math.nan)


@dataclass(frozen=True)
class AttitudeTargetMask:
    """Which SET_ATTITUDE_TARGET fields are commanded."""

    body_rates: tuple[bool, bool, bool]
    thrust: bool
    attitude: bool
    thrust_body: bool

    def describe(self) -> str:
        parts = [name for name, used in (("attitude", self.attitude), ("body_rates", all(self.body_rates)),
                                          ("thrust", self.thrust)) if used]
        return "+".join(parts) or "nothing"


def decode_attitude_target_mask(type_mask: int) -> AttitudeTargetMask:
    if not 0 <= type_mask <= 0xFF:
        raise ValueError(f"type_mask: expected a uint8, got {type_mask!r}")
    return AttitudeTargetMask(
        body_rates=(not type_mask & ROLL_RATE_IGNORE, not type_mask & PITCH_RATE_IGNORE,
                    not type_mask & YAW_RATE_BODY_IGNORE),
        thrust=not type_mask & THROTTLE_IGNORE, attitude=not type_mask & ATTITUDE_IGNORE,
        thrust_body=bool(type_mask & THRUST_BODY_SET))
