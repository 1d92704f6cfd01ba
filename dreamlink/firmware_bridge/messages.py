"""The flight-controller messages as vectors: telemetry -> state entries, an action <-> a setpoint. Pure, no I/O.

The closed loop of the flight controller is part of the vehicle the world model learns, so both autopilot
profiles speak the same two messages (the MAVLink common set, https://mavlink.io/en/messages/common.html):

- State: LOCAL_POSITION_NED (x, y, z, vx, vy, vz: m and m/s in the autopilot's local NED frame, from the
  EKF origin) and ATTITUDE (roll, pitch, yaw in rad; rollspeed, pitchspeed, yawspeed: body rates in rad/s),
  each field written where a spec's state names it (`quad_layout`).
- Action: SET_POSITION_TARGET_LOCAL_NED in MAV_FRAME_LOCAL_NED with type_mask 2503 = ignore position,
  acceleration and yaw rate: a NED velocity plus an absolute yaw, the heading held where control started
  (as in the reference logs under ../shared/data/sitl-logs, and as ArduPilot documents the message:
  ardupilot.org/dev/docs/copter-commands-in-guided-mode.html; PX4: docs.px4.io/v1.16/en/flight_modes/offboard).

These functions are what the profiles use on the hot path and what `dreamlink.calibration.tlog_data` uses to
turn a flight log into transitions, so a model trained from logs sees exactly what the runtime will feed it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.link import mavlink
from dreamlink.spec import QUAD, VehicleSpec

# POSITION_TARGET_TYPEMASK bits (set = ignore that field).
POSITION_IGNORE = (mavlink.POSITION_TARGET_TYPEMASK_X_IGNORE | mavlink.POSITION_TARGET_TYPEMASK_Y_IGNORE
                   | mavlink.POSITION_TARGET_TYPEMASK_Z_IGNORE)
VELOCITY_IGNORE = (mavlink.POSITION_TARGET_TYPEMASK_VX_IGNORE | mavlink.POSITION_TARGET_TYPEMASK_VY_IGNORE
                   | mavlink.POSITION_TARGET_TYPEMASK_VZ_IGNORE)
ACCELERATION_IGNORE = (mavlink.POSITION_TARGET_TYPEMASK_AX_IGNORE | mavlink.POSITION_TARGET_TYPEMASK_AY_IGNORE
                       | mavlink.POSITION_TARGET_TYPEMASK_AZ_IGNORE)
FORCE_SET = mavlink.POSITION_TARGET_TYPEMASK_FORCE_SET
YAW_IGNORE = mavlink.POSITION_TARGET_TYPEMASK_YAW_IGNORE
YAW_RATE_IGNORE = mavlink.POSITION_TARGET_TYPEMASK_YAW_RATE_IGNORE
TYPE_MASK_VELOCITY_YAW = POSITION_IGNORE | ACCELERATION_IGNORE | YAW_RATE_IGNORE  # 2503, the control action
TYPE_MASK_POSITION_YAW = VELOCITY_IGNORE | ACCELERATION_IGNORE | YAW_RATE_IGNORE  # 2552, a position hold
TYPE_MASK_POSITION_VELOCITY_YAW = ACCELERATION_IGNORE | YAW_RATE_IGNORE  # 2496, PX4's take-off ramp
assert (TYPE_MASK_VELOCITY_YAW, TYPE_MASK_POSITION_YAW, TYPE_MASK_POSITION_VELOCITY_YAW) == (2503, 2552, 2496)

NED_FRAMES = (mavlink.MAV_FRAME_LOCAL_NED, mavlink.MAV_FRAME_LOCAL_OFFSET_NED)  # velocity is NED in both
BODY_FRAMES = (mavlink.MAV_FRAME_BODY_NED, mavlink.MAV_FRAME_BODY_OFFSET_NED)  # velocity rotated by heading

# State component -> (message, field). A spec may use any subset of these names, in any order.
LOCAL_POSITION_FIELDS: Mapping[str, str] = {"pos_n_m": "x", "pos_e_m": "y", "pos_d_m": "z",
                                            "vel_n_mps": "vx", "vel_e_mps": "vy", "vel_d_mps": "vz"}
ATTITUDE_FIELDS: Mapping[str, str] = {"roll_rad": "roll", "pitch_rad": "pitch", "yaw_rad": "yaw",
                                      "roll_rate_radps": "rollspeed", "pitch_rate_radps": "pitchspeed",
                                      "yaw_rate_radps": "yawspeed"}
VELOCITY_SETPOINT_NAMES = ("vel_sp_n_mps", "vel_sp_e_mps", "vel_sp_d_mps")


@dataclass(frozen=True)
class QuadLayout:
    """Where each telemetry field lands in a spec's state vector, and where the NED velocity sits in its action."""

    spec: VehicleSpec
    position_index: tuple[tuple[int, str], ...]  # (state index, LOCAL_POSITION_NED field)
    attitude_index: tuple[tuple[int, str], ...]  # (state index, ATTITUDE field)
    velocity_index: tuple[int, int, int]  # action indices of north, east, down


@functools.lru_cache(maxsize=16)
def quad_layout(spec: VehicleSpec) -> QuadLayout:
    """The layout of `spec`; ValueError naming the component an autopilot cannot provide or take."""
    unknown = [n for n in spec.state_names if n not in LOCAL_POSITION_FIELDS and n not in ATTITUDE_FIELDS]
    if unknown:
        raise ValueError(f"spec {spec.name!r}: state components {unknown} are not in an autopilot's telemetry; "
                         f"expected names from {sorted({**LOCAL_POSITION_FIELDS, **ATTITUDE_FIELDS})}")
    if sorted(spec.action_names) != sorted(VELOCITY_SETPOINT_NAMES):
        raise ValueError(f"spec {spec.name!r}: actions {spec.action_names} are not a NED velocity setpoint; "
                         f"expected exactly {VELOCITY_SETPOINT_NAMES}")
    return QuadLayout(
        spec,
        tuple((i, LOCAL_POSITION_FIELDS[n]) for i, n in enumerate(spec.state_names) if n in LOCAL_POSITION_FIELDS),
        tuple((i, ATTITUDE_FIELDS[n]) for i, n in enumerate(spec.state_names) if n in ATTITUDE_FIELDS),
        (spec.action_index("vel_sp_n_mps"), spec.action_index("vel_sp_e_mps"), spec.action_index("vel_sp_d_mps")),
    )


# -- pure functions: messages <-> vectors ---------------------------------------------------------------


def fill_from_local_position(x: np.ndarray, msg: Any, layout: QuadLayout) -> None:
    """Write LOCAL_POSITION_NED's fields into state `x` [S] in place (the others are left alone)."""
    for i, name in layout.position_index:
        x[i] = getattr(msg, name)


def fill_from_attitude(x: np.ndarray, msg: Any, layout: QuadLayout) -> None:
    """Write ATTITUDE's fields into state `x` [S] in place (the others are left alone)."""
    for i, name in layout.attitude_index:
        x[i] = getattr(msg, name)


def state_from_messages(local_position_ned: Any, attitude: Any, spec: VehicleSpec = QUAD) -> np.ndarray:
    """State [S] float32 in `spec` order from one LOCAL_POSITION_NED and one ATTITUDE message."""
    layout = quad_layout(spec)
    x = np.full(spec.state_dim, np.nan, dtype=np.float32)
    fill_from_local_position(x, local_position_ned, layout)
    fill_from_attitude(x, attitude, layout)
    return x


def _fields(time_boot_ms: int, frame: int, type_mask: int, pos: tuple[float, float, float],
            vel: tuple[float, float, float], yaw_rad: float | None) -> dict[str, Any]:
    if yaw_rad is None or not math.isfinite(yaw_rad):
        type_mask |= YAW_IGNORE  # no heading known: let the autopilot keep its own
        yaw_rad = 0.0
    return {"time_boot_ms": int(time_boot_ms) & 0xFFFFFFFF, "coordinate_frame": frame, "type_mask": type_mask,
            "x": pos[0], "y": pos[1], "z": pos[2], "vx": vel[0], "vy": vel[1], "vz": vel[2],
            "afx": 0.0, "afy": 0.0, "afz": 0.0, "yaw": float(yaw_rad), "yaw_rate": 0.0}


def velocity_setpoint_fields(action: np.ndarray, yaw_rad: float | None, spec: VehicleSpec = QUAD,
                             time_boot_ms: int = 0) -> dict[str, Any]:
    """SET_POSITION_TARGET_LOCAL_NED fields (without target ids) for a NED velocity action [A] and a held yaw.

    type_mask 2503 (velocity + yaw) in MAV_FRAME_LOCAL_NED; yaw None/NaN adds YAW_IGNORE (3527)."""
    n, e, d = quad_layout(spec).velocity_index
    vel = (float(action[n]), float(action[e]), float(action[d]))
    return _fields(time_boot_ms, mavlink.MAV_FRAME_LOCAL_NED, TYPE_MASK_VELOCITY_YAW, (0.0, 0.0, 0.0), vel, yaw_rad)


def position_hold_fields(pos_ned_m: tuple[float, float, float], yaw_rad: float | None,
                         time_boot_ms: int = 0) -> dict[str, Any]:
    """Fields for holding a NED position with a yaw (type_mask 2552), what PX4 needs before OFFBOARD."""
    return _fields(time_boot_ms, mavlink.MAV_FRAME_LOCAL_NED, TYPE_MASK_POSITION_YAW, pos_ned_m, (0.0, 0.0, 0.0),
                   yaw_rad)


def position_velocity_fields(pos_ned_m: tuple[float, float, float], vel_ned_mps: tuple[float, float, float],
                             yaw_rad: float | None, time_boot_ms: int = 0) -> dict[str, Any]:
    """Fields for a position target with velocity feed-forward (type_mask 2496), a take-off ramp."""
    return _fields(time_boot_ms, mavlink.MAV_FRAME_LOCAL_NED, TYPE_MASK_POSITION_VELOCITY_YAW, pos_ned_m,
                   vel_ned_mps, yaw_rad)


def is_velocity_setpoint(type_mask: int) -> bool:
    """True when a type_mask commands velocity alone: position and acceleration ignored, velocity used.

    FORCE_SET (bit 9) only qualifies acceleration, which is ignored here; ArduPilot's own echo of a velocity
    target (POSITION_TARGET_LOCAL_NED) sets it as part of 0x0FC7 "ignore everything except velocity"."""
    return (type_mask & POSITION_IGNORE == POSITION_IGNORE and type_mask & ACCELERATION_IGNORE == ACCELERATION_IGNORE
            and type_mask & VELOCITY_IGNORE == 0)


def action_from_setpoint(msg: Any, spec: VehicleSpec = QUAD, yaw_rad: float | None = None) -> np.ndarray | None:
    """The action [A] a SET_POSITION_TARGET_LOCAL_NED (or POSITION_TARGET_LOCAL_NED) commands, or None.

    None unless it is a pure velocity setpoint (`is_velocity_setpoint`): a position hold or a
    position+velocity ramp is a different closed loop, not this action. Frames: LOCAL_NED and
    LOCAL_OFFSET_NED carry NED velocities; BODY_NED and BODY_OFFSET_NED carry velocities in the
    heading-aligned frame (x forward, y right), rotated to NED with the vehicle's `yaw_rad` (None -> None,
    it cannot be known from the message); other frames -> None."""
    if not is_velocity_setpoint(int(msg.type_mask)):
        return None
    vx, vy, vz = float(msg.vx), float(msg.vy), float(msg.vz)
    frame = int(msg.coordinate_frame)
    if frame in BODY_FRAMES:
        if yaw_rad is None or not math.isfinite(yaw_rad):
            return None
        c, s = math.cos(yaw_rad), math.sin(yaw_rad)
        vx, vy = c * vx - s * vy, s * vx + c * vy
    elif frame not in NED_FRAMES:
        return None
    action = np.empty(spec.action_dim, dtype=np.float32)
    n, e, d = quad_layout(spec).velocity_index
    action[n], action[e], action[d] = vx, vy, vz
    return action
