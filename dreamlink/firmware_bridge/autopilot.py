"""What the ArduPilot-copter and PX4 profiles share: telemetry -> state vector, action -> setpoint, heartbeats.

The closed loop of the flight controller is part of the vehicle the world model learns, so both profiles
speak the same two messages (the MAVLink common set, https://mavlink.io/en/messages/common.html):

- State: LOCAL_POSITION_NED (x, y, z, vx, vy, vz: m and m/s in the autopilot's local NED frame, from the
  EKF origin) and ATTITUDE (roll, pitch, yaw in rad; rollspeed, pitchspeed, yawspeed: body rates in rad/s).
  The profile keeps the newest pair; `state()` is stamped with LOCAL_POSITION_NED.time_boot_ms (the
  autopilot's clock) and its age is that of the OLDER of the two, so a stalled ATTITUDE stream shows up
  as a stale state. Both are asked for at `stream_rate_hz` with MAV_CMD_SET_MESSAGE_INTERVAL (ArduPilot
  >= 4.0 and PX4; ardupilot.org/dev/docs/mavlink-requesting-data.html, mavlink.io "How to Request &
  Stream Messages"); each profile has its own fallback when that is refused.
- Action: SET_POSITION_TARGET_LOCAL_NED in MAV_FRAME_LOCAL_NED with type_mask 2503 = ignore position,
  acceleration and yaw rate: a NED velocity plus an absolute yaw, the heading held where control started
  (as in the reference logs under ../shared/data/sitl-logs, and as ArduPilot documents the message:
  ardupilot.org/dev/docs/copter-commands-in-guided-mode.html; PX4: docs.px4.io/v1.16/en/flight_modes/offboard).
- HEARTBEAT of the autopilot (target system/component, autopilot field not MAV_AUTOPILOT_INVALID) gives
  armed (base_mode SAFETY_ARMED), custom_mode (the flight mode, per family) and system_status;
  EXTENDED_SYS_STATE gives the landed state; SYS_STATUS's MAV_SYS_STATUS_PREARM_CHECK health bit says the
  pre-arm checks pass (both firmwares set it: ArduPilot from the start in its log, PX4 1.16 in health only,
  cleared after landing), which `connect()` waits for, since before it ArduPilot refuses GUIDED ("requires
  position") and both refuse to arm; STATUSTEXT is logged and kept, so a refused command's error carries
  the autopilot's own words ("PreArm: ...").

Faults the profile watches for (so the loop does not plan on a state it cannot trust):

- Estimator health (`estimator_ok`): SYS_STATUS's MAV_SYS_STATUS_AHRS health bit (both firmwares), and the
  family's own report, asked for at `status_rate_hz`: ArduPilot's EKF_STATUS_REPORT (bad when a variance
  reaches FS_EKF_THRESH's default 0.8, the filter is uninitialised or in constant-position mode, or lacks
  attitude, velocity or relative position; ArduCopter/ekf_check.cpp), PX4's ESTIMATOR_STATUS (bad when an
  innovation test ratio exceeds 1, a GPS glitch or accelerometer error is flagged, or a solution is missing).
- A reboot (`reboots`): the autopilot's clock (time_boot_ms, TIMESYNC tc1) jumps back by more than 1 s. The
  profile then reports no state (`state()` age inf) until `connect()` is called again: a flight controller
  that rebooted is disarmed, its estimator starts over, and nothing of the flight before applies to it.

Pure functions (`state_from_messages`, `velocity_setpoint_fields`, `action_from_setpoint`) are what the
profiles use on the hot path and what `dreamlink.calibration.tlog_data` uses to turn a flight log into
transitions, so a model trained from logs sees exactly what the runtime will feed it.

Lockstep SITL (`AutopilotConfig.lockstep`): vehicle time moves only when the client ticks, with a setpoint
or a TIMESYNC request (tc1 = 0), the convention of `dreamlink.sim.quadrotor`. Every wait in a profile
(first state, takeoff, landing, PX4's offboard warm-up) then ticks with TIMESYNC (or the standing setpoint)
instead of sleeping; against a real autopilot TIMESYNC is harmless.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.link import CommandRefused, Link, LinkTimeout, command_name, mavlink
from dreamlink.firmware_bridge.streams import StreamWatch
from dreamlink.spec import QUAD, VehicleSpec

log = logging.getLogger(__name__)

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

_LANDED_IN_AIR = (mavlink.MAV_LANDED_STATE_IN_AIR, mavlink.MAV_LANDED_STATE_TAKEOFF,
                  mavlink.MAV_LANDED_STATE_LANDING)
_REBOOT_JUMP_S = 1.0  # the autopilot's clock went back this far: it rebooted
# ESTIMATOR_STATUS_FLAGS / EKF_STATUS_FLAGS (same bits): attitude, both velocities, relative horizontal and
# absolute vertical position are what a velocity-setpoint flight needs.
_ESTIMATOR_NEEDED = 0x01 | 0x02 | 0x04 | 0x08 | 0x20
_EKF_UNINITIALIZED, _CONST_POS_MODE = 1024, 128
_ESTIMATOR_FAULTS = 1024 | 2048  # ESTIMATOR_GPS_GLITCH, ESTIMATOR_ACCEL_ERROR
FS_EKF_THRESH = 0.8  # ArduCopter's default variance threshold
_TIME_TOLERANCE_S = 5e-4  # time_boot_ms is whole ms; callers compute targets in float seconds
_WARN_EVERY_S = 5.0


FORCE_DISARM = 21196.0  # param2 of MAV_CMD_COMPONENT_ARM_DISARM: skip the "landed" check (both autopilots)


class AutopilotError(RuntimeError):
    """The autopilot is not in a state for the requested action; the message says what to do."""


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


def _estimator_why(measure: str, high: list[str], flags: int, fault_flags: int, fault_text: str) -> str:
    """Why an estimator report says the estimate is unusable, "" if it does not."""
    if high:
        return f"{measure} " + ", ".join(high)
    if flags & _ESTIMATOR_NEEDED != _ESTIMATOR_NEEDED:
        return f"flags 0x{flags:x} lack 0x{_ESTIMATOR_NEEDED & ~flags:x}"
    if flags & fault_flags:
        return f"flags 0x{flags:x}: {fault_text}"
    return ""


def autopilot_name(autopilot: int) -> str:
    entry = mavlink.enums["MAV_AUTOPILOT"].get(autopilot)
    return entry.name if entry is not None else f"MAV_AUTOPILOT {autopilot}"


# -- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutopilotConfig:
    """How to talk to one ArduPilot or PX4 flight controller. Fields marked PX4 are ignored by ArduPilot."""

    target_system: int = 1
    target_component: int = 1
    stream_rate_hz: float = 50.0  # LOCAL_POSITION_NED and ATTITUDE
    status_rate_hz: float = 2.0  # EXTENDED_SYS_STATE (landed state) and SYS_STATUS (pre-arm checks)
    command_timeout_s: float = 1.0  # per COMMAND_LONG try
    command_retries: int = 2
    mode_confirm_timeout_s: float = 2.5  # a HEARTBEAT must show the new mode (heartbeats come at 1 Hz)
    altitude_tolerance_m: float = 0.3  # take-off is done this close to the target altitude
    land_timeout_s: float = 120.0
    failsafe_modes: tuple[str, ...] = ("RTL", "LAND")  # tried in order by failsafe()
    lockstep: bool = False  # lockstep SITL: waits tick with TIMESYNC, no background setpoint stream
    setpoint_rate_hz: float = 20.0  # PX4: background stream (MAVSDK's rate; PX4 needs > 2 Hz)
    setpoint_timeout_s: float = 0.5  # PX4: the newest action is repeated this long, then a position hold
    offboard_warmup_s: float = 1.0  # PX4: stream this long (vehicle time) before asking for OFFBOARD
    takeoff_speed_mps: float = 1.5  # PX4: climb rate of the offboard take-off ramp (as in the log)
    # connect(): how long the autopilot may take to have a position estimate and pass its pre-arm checks while
    # it keeps sending HEARTBEATs (real ArduPilot SITL: about 40 s until its EKF uses GPS; a cold GPS: minutes)
    estimator_timeout_s: float = 600.0
    keep_streams: bool = True  # re-assert the state streams when something else on the link lowers them

    def __post_init__(self) -> None:
        for key in ("target_system", "target_component"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise ValueError(f"AutopilotConfig.{key}: expected 0..255 (0 = any), got {value!r}")
        if isinstance(self.command_retries, bool) or not isinstance(self.command_retries, int) \
                or not 0 <= self.command_retries <= 10:
            raise ValueError(f"AutopilotConfig.command_retries: expected 0..10, got {self.command_retries!r}")
        positive = ("stream_rate_hz", "status_rate_hz", "command_timeout_s", "mode_confirm_timeout_s",
                    "altitude_tolerance_m", "land_timeout_s", "setpoint_timeout_s", "takeoff_speed_mps",
                    "estimator_timeout_s")
        for key in positive:
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"AutopilotConfig.{key}: expected a finite value > 0, got {value!r}")
        if self.stream_rate_hz > 500 or self.status_rate_hz > 500:
            raise ValueError(f"AutopilotConfig.stream_rate_hz/status_rate_hz: expected <= 500 Hz, got "
                             f"{self.stream_rate_hz!r}/{self.status_rate_hz!r}")
        if not (math.isfinite(self.setpoint_rate_hz) and 2.0 < self.setpoint_rate_hz <= 100.0):
            raise ValueError(f"AutopilotConfig.setpoint_rate_hz: expected (2, 100] Hz (PX4 leaves OFFBOARD "
                             f"below 2 Hz), got {self.setpoint_rate_hz!r}")
        if not (math.isfinite(self.offboard_warmup_s) and self.offboard_warmup_s >= 1.0):
            raise ValueError(f"AutopilotConfig.offboard_warmup_s: expected >= 1 s (PX4 enables offboard after "
                             f"more than a second of setpoints), got {self.offboard_warmup_s!r}")
        if not self.failsafe_modes or not all(isinstance(m, str) and m for m in self.failsafe_modes):
            raise ValueError(f"AutopilotConfig.failsafe_modes: expected mode names like ('RTL', 'LAND'), "
                             f"got {self.failsafe_modes!r}")


# -- the profile base ---------------------------------------------------------------------------------


class AutopilotProfile:
    """State assembly, heartbeats, commands and mode changes shared by ArduPilot and PX4.

    Subclasses set FAMILY, AUTOPILOT and CONTROL_MODE and implement the mode vocabulary
    (`mode_name`), `enter_control_mode`, `send`, `takeoff`, `hold`, `land`, `failsafe`, `release`.
    """

    FAMILY = "autopilot"
    AUTOPILOT = mavlink.MAV_AUTOPILOT_GENERIC
    CONTROL_MODE = ""
    ESTIMATOR_REPORT = ""  # the family's estimator message (EKF_STATUS_REPORT, ESTIMATOR_STATUS), streamed

    def __init__(self, link: Link, spec: VehicleSpec = QUAD, config: AutopilotConfig = AutopilotConfig()) -> None:
        self.layout = quad_layout(spec)
        self.link, self.spec, self.config = link, spec, config
        self._cond = threading.Condition()  # an RLock inside: helpers may nest
        self._x = np.full(spec.state_dim, np.nan, dtype=np.float32)  # filled in place by the receive thread
        self._position_ned = [math.nan, math.nan, math.nan]
        self._yaw_rad = math.nan
        self._t_s = -math.inf  # LOCAL_POSITION_NED.time_boot_ms
        self._attitude_t_s = -math.inf
        self._position_recv_s = -math.inf
        self._attitude_recv_s = -math.inf
        self._heartbeat_recv_s = -math.inf
        self._heartbeat_autopilot: int | None = None
        self._armed = False
        self._custom_mode: int | None = None
        self._system_status: int | None = None
        self._landed_state: int | None = None
        self._prearm_ok: bool | None = None  # None until a SYS_STATUS arrived
        self._acks: deque[tuple[Any, float]] = deque(maxlen=32)
        self._texts: deque[tuple[float, int, str]] = deque(maxlen=32)
        self._yaw_hold_rad: float | None = None
        self._epoch_s = time.monotonic()  # our time_boot_ms in setpoints (the client's clock, as in the logs)
        self._last_warning = -math.inf
        self._vehicle_t_s = -math.inf  # newest autopilot time seen (any source), for reboot detection
        self._rebooted = False
        self.reboots = 0
        self._estimator_bad: dict[str, str] = {}  # message -> why, while that message says it is bad
        self.streams = StreamWatch({"LOCAL_POSITION_NED": config.stream_rate_hz, "ATTITUDE": config.stream_rate_hz})
        self._stream_requests: dict[int, float] = {}  # msg id -> rate asked; how: `_stream_fallback` may change it
        self._data_stream_fallback: set[int] = set()  # msg ids asked for with REQUEST_DATA_STREAM instead
        self._others: dict[tuple[int, int], str] = {}  # other components heard on this link -> what they are
        self._last_stream_warning = -math.inf
        # Pilot takeover: once the vehicle is in the control mode on our request, a mode change we did not ask
        # for means a pilot or ground station took the vehicle; from then on nothing from us commands it.
        self._controlling = False
        self._takeover: tuple[str, float] | None = None  # (the mode it was taken into, monotonic time)
        self.takeovers = 0
        link.subscribe("LOCAL_POSITION_NED", self._on_local_position)
        link.subscribe("EKF_STATUS_REPORT", self._on_ekf_status_report)
        link.subscribe("ESTIMATOR_STATUS", self._on_estimator_status)
        link.subscribe("ATTITUDE", self._on_attitude)
        link.subscribe("HEARTBEAT", self._on_heartbeat)
        link.subscribe("EXTENDED_SYS_STATE", self._on_extended_sys_state)
        link.subscribe("SYS_STATUS", self._on_sys_status)
        link.subscribe("STATUSTEXT", self._on_statustext)
        link.subscribe("COMMAND_ACK", self._on_command_ack)

    # -- the mode vocabulary (per family) ----------------------------------------------------------

    def mode_name(self, custom_mode: int) -> str:
        return str(custom_mode)

    def in_control_mode(self, custom_mode: int) -> bool:
        return self.mode_name(custom_mode) == self.CONTROL_MODE

    # -- telemetry (receive thread) ----------------------------------------------------------------

    def _from_autopilot(self, msg: Any) -> bool:
        return ((self.config.target_system == 0 or msg.get_srcSystem() == self.config.target_system)
                and (self.config.target_component == 0 or msg.get_srcComponent() == self.config.target_component))

    def _on_local_position(self, msg: Any, recv_s: float) -> None:
        if not self._from_autopilot(msg):
            return
        with self._cond:
            self._note_vehicle_time(msg.time_boot_ms / 1000.0)
            fill_from_local_position(self._x, msg, self.layout)
            self._position_ned[0], self._position_ned[1], self._position_ned[2] = msg.x, msg.y, msg.z
            self._t_s = msg.time_boot_ms / 1000.0
            self._position_recv_s = recv_s
            self.streams.arrived("LOCAL_POSITION_NED", recv_s)
            self._cond.notify_all()

    def _on_attitude(self, msg: Any, recv_s: float) -> None:
        if not self._from_autopilot(msg):
            return
        with self._cond:
            self._note_vehicle_time(msg.time_boot_ms / 1000.0)
            fill_from_attitude(self._x, msg, self.layout)
            self._yaw_rad = msg.yaw
            self._attitude_t_s = msg.time_boot_ms / 1000.0
            self._attitude_recv_s = recv_s
            self.streams.arrived("ATTITUDE", recv_s)
            self._cond.notify_all()

    def _on_heartbeat(self, msg: Any, recv_s: float) -> None:
        if not self._from_autopilot(msg) or msg.autopilot == mavlink.MAV_AUTOPILOT_INVALID:
            # a GCS, a camera or our own echo, not the flight controller: remembered, to name who shares the link
            src = (msg.get_srcSystem(), msg.get_srcComponent())
            if src != (self.link.config.source_system, self.link.config.source_component):
                entry = mavlink.enums["MAV_TYPE"].get(int(msg.type))
                with self._cond:
                    self._others[src] = entry.name if entry is not None else f"MAV_TYPE {msg.type}"
            return
        armed = bool(msg.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED)
        taken = False
        with self._cond:
            changed = (armed, msg.custom_mode) != (self._armed, self._custom_mode)
            in_control = self.in_control_mode(int(msg.custom_mode))
            if self._controlling and not in_control:
                self._controlling, self._takeover, taken = False, (self.mode_name(int(msg.custom_mode)), recv_s), True
                self.takeovers += 1
            elif self._takeover is not None and in_control and armed:
                self._takeover, self._controlling = None, True  # handed back: the pilot chose our mode again
                log.warning("%s %s is back in %s: control handed back", self.FAMILY, self._target, self.CONTROL_MODE)
            self._armed, self._custom_mode = armed, int(msg.custom_mode)
            self._system_status, self._heartbeat_autopilot = int(msg.system_status), int(msg.autopilot)
            self._heartbeat_recv_s = recv_s
            self._cond.notify_all()
        if changed:
            log.info("%s %d/%d: %s, %s", self.FAMILY, msg.get_srcSystem(), msg.get_srcComponent(),
                     self.mode_name(int(msg.custom_mode)), "armed" if armed else "disarmed")
        if taken:
            self._on_takeover()
            log.warning("%s %s: taken over (now in %s, not %s by our request); dreamlink stops commanding and "
                        "will not change the mode", self.FAMILY, self._target, self.mode_name(int(msg.custom_mode)),
                        self.CONTROL_MODE)

    # -- pilot takeover ----------------------------------------------------------------------------

    def _on_takeover(self) -> None:
        """Subclasses stop whatever keeps commanding in the background (PX4's setpoint stream)."""

    def _claim_control(self) -> None:
        """The vehicle is in the control mode at our request: a later mode change we do not make is a takeover."""
        with self._cond:
            self._controlling, self._takeover = True, None

    def _left_to_pilot(self, doing: str) -> bool:
        """True (and logged) if a pilot took the vehicle: then `doing` is not done."""
        taken = self.taken_over
        if taken is not None:
            log.warning("%s %s was taken over (mode %s): not %s", self.FAMILY, self._target, taken[0], doing)
        return taken is not None

    def _yield_control(self) -> None:
        """We are about to change the mode ourselves (land, hold, failsafe): not a takeover."""
        with self._cond:
            self._controlling = False

    @property
    def taken_over(self) -> tuple[str, float] | None:
        """(the mode a pilot or ground station switched to, monotonic time) while they have the vehicle; None
        while dreamlink has it (or never had it)."""
        with self._cond:
            return self._takeover

    def _on_extended_sys_state(self, msg: Any, recv_s: float) -> None:
        if self._from_autopilot(msg):
            with self._cond:
                self._landed_state = int(msg.landed_state)
                self._cond.notify_all()

    def _on_sys_status(self, msg: Any, recv_s: float) -> None:
        if self._from_autopilot(msg):
            ahrs = mavlink.MAV_SYS_STATUS_AHRS
            watched = msg.onboard_control_sensors_present & msg.onboard_control_sensors_enabled & ahrs
            with self._cond:
                self._prearm_ok = bool(msg.onboard_control_sensors_health & mavlink.MAV_SYS_STATUS_PREARM_CHECK)
                self._set_estimator("SYS_STATUS", "AHRS health bit cleared"
                                    if watched and self._armed and not msg.onboard_control_sensors_health & ahrs
                                    else "")
                self._cond.notify_all()

    def _on_ekf_status_report(self, msg: Any, recv_s: float) -> None:
        if not self._from_autopilot(msg):
            return
        variances = {"velocity": msg.velocity_variance, "pos_horiz": msg.pos_horiz_variance,
                     "pos_vert": msg.pos_vert_variance, "compass": msg.compass_variance}
        high = [f"{k} {v:.2f}" for k, v in variances.items() if not v < FS_EKF_THRESH]
        why = _estimator_why("variance", high, int(msg.flags), _EKF_UNINITIALIZED | _CONST_POS_MODE,
                             "uninitialised or constant position")
        with self._cond:
            self._set_estimator("EKF_STATUS_REPORT", why)

    def _on_estimator_status(self, msg: Any, recv_s: float) -> None:
        if not self._from_autopilot(msg):
            return
        ratios = {"vel": msg.vel_ratio, "pos_horiz": msg.pos_horiz_ratio, "pos_vert": msg.pos_vert_ratio}
        high = [f"{k} {v:.2f}" for k, v in ratios.items() if not v <= 1.0]
        why = _estimator_why("test ratio", high, int(msg.flags), _ESTIMATOR_FAULTS, "GPS glitch or accelerometer error")
        with self._cond:
            self._set_estimator("ESTIMATOR_STATUS", why)

    def _set_estimator(self, source: str, why: str) -> None:
        """Record what `source` says of the estimator (under the lock); "" = healthy."""
        was = self._estimator_bad.get(source, "")
        if why:
            self._estimator_bad[source] = why
        else:
            self._estimator_bad.pop(source, None)
        if bool(why) != bool(was):
            # On the ground an estimator still converging is routine (and arming waits for it); in the air it
            # is a fault the runtime acts on.
            level = logging.ERROR if why and self._armed else logging.INFO
            log.log(level, "%s %s: estimator %s (%s)", self.FAMILY, self._target,
                    ("unhealthy" if self._armed else "not ready") if why else "healthy", why or source)

    def _note_vehicle_time(self, t_s: float) -> None:
        """Reboot detection on the autopilot's clock (under the lock)."""
        if t_s < self._vehicle_t_s - _REBOOT_JUMP_S:
            self.reboots += 1
            self._rebooted = True
            self._t_s = self._attitude_t_s = -math.inf
            self._position_recv_s = self._attitude_recv_s = -math.inf
            self._estimator_bad.clear()
            log.error("%s %s rebooted (its clock went back from %.3f s to %.3f s): no state is flown on until it "
                      "is connected again", self.FAMILY, self._target, self._vehicle_t_s, t_s)
            self._vehicle_t_s = t_s
        else:
            self._vehicle_t_s = max(self._vehicle_t_s, t_s)

    def _on_statustext(self, msg: Any, recv_s: float) -> None:
        if not self._from_autopilot(msg):
            return
        text = str(msg.text).rstrip("\x00").strip()  # PX4 ends its texts with a tab
        with self._cond:
            self._texts.append((recv_s, int(msg.severity), text))
        level = (logging.ERROR if msg.severity <= mavlink.MAV_SEVERITY_ERROR else
                 logging.WARNING if msg.severity <= mavlink.MAV_SEVERITY_WARNING else logging.INFO)
        log.log(level, "%s says: %s", self.FAMILY, text)

    def _on_command_ack(self, msg: Any, recv_s: float) -> None:
        if self._from_autopilot(msg):
            with self._cond:
                self._acks.append((msg, recv_s))
                self._cond.notify_all()

    # -- profile contract --------------------------------------------------------------------------

    def connect(self, timeout_s: float = 30.0, wait_ready: bool = True,
                progress: Callable[[str], None] | None = None) -> None:
        """Wait for the autopilot's HEARTBEAT (checking it is this family), ask for the state streams, then wait
        for the first complete state and (`wait_ready`) for the pre-arm checks to pass.

        `timeout_s` bounds silence, not patience: the wait lasts as long as the autopilot needs for its
        estimator (up to `AutopilotConfig.estimator_timeout_s`) while it keeps sending HEARTBEATs, and ends
        with LinkTimeout when nothing came from it for `timeout_s`. Real ArduPilot has no LOCAL_POSITION_NED
        until its EKF uses GPS (about 40 s after boot in SITL), so a service started with the flight controller
        must wait rather than fail. `progress(text)` hears what is awaited, and why, every few seconds."""
        with self._cond:
            self._rebooted = False  # whatever it was before, this is the vehicle we connect to now
            self._cond.wait_for(lambda: self._heartbeat_autopilot is not None, timeout_s)
            autopilot = self._heartbeat_autopilot
        if autopilot is None:
            raise LinkTimeout(f"no HEARTBEAT from {self.FAMILY} {self._target} on {self.link.config.connect} "
                              f"within {timeout_s:.1f} s; is the autopilot (or its SITL) running and sending to "
                              f"this port?")
        if autopilot != self.AUTOPILOT:
            raise AutopilotError(f"{self._target} on {self.link.config.connect} is {autopilot_name(autopilot)}, "
                                 f"not {self.FAMILY} ({autopilot_name(self.AUTOPILOT)}); use the profile for "
                                 f"that autopilot")
        self._request_streams()
        started = time.monotonic()
        self._wait_while_alive(lambda: self._state_complete, started, timeout_s,
                               "a position estimate (LOCAL_POSITION_NED + ATTITUDE)", progress)
        if wait_ready and not self.ready:
            log.info("%s %s: waiting for the pre-arm checks to pass", self.FAMILY, self._target)
            # A landed vehicle left in a mode it cannot arm in (ArduPilot after LAND) fails its pre-arm checks for
            # that reason alone until enter_control_mode() changes the mode; and a vehicle whose estimator is
            # healthy is not waited on for ever: arm() then carries the autopilot's own reason if it refuses.
            healthy_since = [math.inf]

            def ready_enough() -> bool:
                if self._prearm_ok is True or self.mode in self.PREARM_FAILS_IN_MODES:
                    return True
                now = time.monotonic()
                if not self._estimator_bad and self._prearm_ok is not None:
                    healthy_since[0] = min(healthy_since[0], now)
                    return now - healthy_since[0] >= self.PREARM_WAIT_S
                healthy_since[0] = math.inf
                return False

            self._wait_while_alive(ready_enough, started, timeout_s,
                                   "the pre-arm checks to pass (SYS_STATUS MAV_SYS_STATUS_PREARM_CHECK)", progress)
            if not self.ready:
                log.warning("%s %s: pre-arm checks not reported passing (%s); going on, arming will say why if it "
                            "is refused", self.FAMILY, self._target, self.waiting_for())
        log.info("%s %s connected on %s, mode %s, state at %.0f Hz after %.1f s", self.FAMILY, self._target,
                 self.link.config.connect, self.mode, self.config.stream_rate_hz, time.monotonic() - started)

    WAIT_REPORT_S = 5.0  # connect(): how often `progress` hears what is awaited
    PREARM_WAIT_S = 20.0  # connect(): with a healthy estimator, wait this long at most for the pre-arm bit
    PREARM_FAILS_IN_MODES: frozenset[str] = frozenset()  # modes the pre-arm checks fail in because of the mode
    STREAM_REQUEST_REPEAT_S = 10.0  # connect(): the stream requests again, in case another client reset them

    def _wait_while_alive(self, condition: Callable[[], bool], started_s: float, silence_s: float, what: str,
                          progress: Callable[[str], None] | None) -> None:
        """Wait until `condition()` (under the lock) while the autopilot's HEARTBEATs keep coming; LinkTimeout
        after `silence_s` without one, or after `estimator_timeout_s` from `started_s` in all."""
        report_at = started_s + self.WAIT_REPORT_S
        request_at = started_s + self.STREAM_REQUEST_REPEAT_S
        while True:
            now = time.monotonic()
            with self._cond:
                if condition():
                    return
                silent_s = now - self._heartbeat_recv_s
            waited_s = now - started_s
            if silent_s > silence_s:
                raise LinkTimeout(f"{self.FAMILY} {self._target} on {self.link.config.connect} went silent (no "
                                  f"HEARTBEAT for {silent_s:.1f} s) while dreamlink waited {waited_s:.0f} s for "
                                  f"{what}")
            if waited_s > self.config.estimator_timeout_s:
                raise LinkTimeout(f"{self.FAMILY} {self._target} on {self.link.config.connect}: no {what} within "
                                  f"{self.config.estimator_timeout_s:.0f} s ({self.waiting_for()}); "
                                  f"AutopilotConfig.estimator_timeout_s sets the limit")
            if now >= report_at:
                report_at = now + self.WAIT_REPORT_S
                text = f"{self.FAMILY} {self._target}: waiting for {what}, {waited_s:.0f} s: {self.waiting_for()}"
                log.info("%s", text)
                if progress is not None:
                    progress(text)
            if now >= request_at and not self.config.lockstep:
                request_at = now + self.STREAM_REQUEST_REPEAT_S
                self._request_streams(quiet=True)
            if self.config.lockstep:
                self._lockstep_tick()
            else:
                with self._cond:
                    self._cond.wait(0.05)

    def waiting_for(self) -> str:
        """What the autopilot has and lacks for a flight, in words: streams, estimator, pre-arm, its last text."""
        with self._cond:
            parts = [f"mode {self.mode}", "armed" if self._armed else "disarmed",
                     "LOCAL_POSITION_NED " + ("flowing" if self._position_recv_s > -math.inf else
                                              "not sent yet (no EKF origin / position estimate)"),
                     "ATTITUDE " + ("flowing" if self._attitude_recv_s > -math.inf else "not sent yet")]
            if self._estimator_bad:
                parts.append("estimator: " + "; ".join(f"{k} {v}" for k, v in self._estimator_bad.items()))
            if self._prearm_ok is not None:
                parts.append("pre-arm checks " + ("pass" if self._prearm_ok else "failing"))
            if self._texts:
                parts.append(f"autopilot said {self._texts[-1][2]!r}")
        return ", ".join(parts)

    def state(self) -> tuple[float, np.ndarray, float]:
        """(autopilot time s, state [S] float32 copy, age s of the older of the two messages); (NaN, NaNs, inf)
        before both LOCAL_POSITION_NED and ATTITUDE arrived."""
        with self._cond:
            if not self._state_complete or self._rebooted:
                return math.nan, np.full(self.spec.state_dim, np.nan, dtype=np.float32), math.inf
            x = self._x.copy()
            t_s, recv_s = self._t_s, min(self._position_recv_s, self._attitude_recv_s)
        now = time.monotonic()
        if self.config.keep_streams and not self.config.lockstep:
            self._keep_streams(now)
        return t_s, x, now - recv_s

    def wait_state_after(self, t_s: float, timeout_s: float) -> bool:
        """Block until both messages stamped at autopilot time >= `t_s` arrived; False on timeout (lockstep clock)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._rebooted and
                                       min(self._t_s, self._attitude_t_s) >= t_s - _TIME_TOLERANCE_S, timeout_s)

    def lockstep_nudge(self, timeout_s: float) -> float | None:
        """Step a lockstep SITL once (a TIMESYNC request) and return the autopilot time its answer carries (s),
        None if no answer came within `timeout_s`. What `LockstepClock` does when a sample is late or lost."""
        ts1 = time.monotonic_ns()
        self.link.mav.timesync_send(0, ts1)
        answer = self.link.wait_for("TIMESYNC", timeout_s, lambda m: m.tc1 != 0 and m.ts1 == ts1)
        if answer is None:
            return None
        t_s = answer.tc1 / 1e9
        with self._cond:
            self._note_vehicle_time(t_s)
        return t_s

    def arm(self, timeout_s: float | None = None) -> None:
        self._command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1.0,), "arming", timeout_s)
        with self._cond:
            self._armed = True  # the next HEARTBEAT confirms it

    def disarm(self, timeout_s: float | None = None) -> None:
        self._command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (0.0,), "disarming", timeout_s)
        with self._cond:
            self._armed = False

    def send(self, action: np.ndarray) -> None:
        raise NotImplementedError

    def enter_control_mode(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def emergency_stop(self) -> None:
        """E-stop: force-disarm now (MAV_CMD_COMPONENT_ARM_DISARM, param2 21196, which both ArduPilot and
        PX4 honour in the air: the motors stop and the vehicle falls). Fire and forget, then confirm."""
        try:
            self.link.mav.command_long_send(self.config.target_system, self.config.target_component,
                                            mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0, 0.0, FORCE_DISARM, 0, 0, 0, 0, 0)
        except Exception as exc:
            log.warning("emergency stop: could not reach the autopilot: %s", exc)

    # -- what the runtime and missions read --------------------------------------------------------

    @property
    def armed(self) -> bool:
        with self._cond:
            return self._armed

    @property
    def custom_mode(self) -> int | None:
        with self._cond:
            return self._custom_mode

    @property
    def mode(self) -> str:
        """The flight mode of the newest HEARTBEAT by name ("GUIDED", "OFFBOARD", "AUTO.LOITER"), "?" before one."""
        custom_mode = self.custom_mode
        return "?" if custom_mode is None else self.mode_name(custom_mode)

    @property
    def ready(self) -> bool:
        """The newest SYS_STATUS says the pre-arm checks pass (False before any SYS_STATUS)."""
        with self._cond:
            return self._prearm_ok is True

    @property
    def landed_state(self) -> int | None:
        """MAV_LANDED_STATE from EXTENDED_SYS_STATE, None if the autopilot never sent it."""
        with self._cond:
            return self._landed_state

    @property
    def in_air(self) -> bool:
        """Flying per EXTENDED_SYS_STATE; without it, armed counts as flying (the safe guess for release)."""
        with self._cond:
            if self._landed_state is None or self._landed_state == mavlink.MAV_LANDED_STATE_UNDEFINED:
                return self._armed
            return self._landed_state in _LANDED_IN_AIR

    @property
    def estimator_ok(self) -> bool:
        """No estimator report says it is unhealthy (True before any report: absence is not a fault)."""
        with self._cond:
            return not self._estimator_bad

    @property
    def estimator_problem(self) -> str:
        with self._cond:
            return "; ".join(f"{k}: {v}" for k, v in self._estimator_bad.items())

    @property
    def rebooted(self) -> bool:
        """The autopilot rebooted since `connect()` (see the module docstring)."""
        with self._cond:
            return self._rebooted

    @property
    def system_status(self) -> int | None:
        with self._cond:
            return self._system_status

    @property
    def statustexts(self) -> list[str]:
        """The autopilot's recent STATUSTEXT messages, oldest first."""
        with self._cond:
            return [text for _, _, text in self._texts]

    @property
    def yaw_hold_rad(self) -> float | None:
        """The heading every velocity setpoint holds; latched by enter_control_mode() and after take-off."""
        with self._cond:
            return self._yaw_hold_rad

    def hold_yaw(self, yaw_rad: float | None = None) -> None:
        """Hold `yaw_rad`, or the current heading when None (NaN before the first ATTITUDE: the autopilot's own)."""
        with self._cond:
            self._yaw_hold_rad = float(self._yaw_rad if yaw_rad is None else yaw_rad)

    # -- helpers for the subclasses ----------------------------------------------------------------

    # Lockstep: the SITL answers a command at once without moving time, so a command or answer lost on a lossy
    # link is retried fast and often (it must not end a flight before it starts); real links keep the config.
    LOCKSTEP_COMMAND_TIMEOUT_S, LOCKSTEP_COMMAND_RETRIES = 0.3, 20

    @property
    def command_timeout_s(self) -> float:
        c = self.config
        return min(c.command_timeout_s, self.LOCKSTEP_COMMAND_TIMEOUT_S) if c.lockstep else c.command_timeout_s

    @property
    def command_retries(self) -> int:
        c = self.config
        return max(c.command_retries, self.LOCKSTEP_COMMAND_RETRIES) if c.lockstep else c.command_retries

    @property
    def _target(self) -> str:
        return f"{self.config.target_system}/{self.config.target_component}"

    @property
    def _state_complete(self) -> bool:
        return self._position_recv_s > -math.inf and self._attitude_recv_s > -math.inf

    def _position_and_yaw(self) -> tuple[tuple[float, float, float], float]:
        with self._cond:
            if self._position_recv_s == -math.inf:
                raise AutopilotError(f"{self.FAMILY} {self._target}: no LOCAL_POSITION_NED yet; call connect() "
                                     f"and wait for a position estimate first")
            n, e, d = self._position_ned
            return (n, e, d), self._yaw_rad

    def _time_boot_ms(self) -> int:
        return int((time.monotonic() - self._epoch_s) * 1000.0)

    def _check_action(self, action: np.ndarray) -> None:
        if action.shape != (self.spec.action_dim,):
            raise ValueError(f"{type(self).__name__}.send: expected action shape ({self.spec.action_dim},), "
                             f"got {action.shape}")

    def position_setpoint_for(self, pos_ned_m: tuple[float, float, float],
                              vel_ned_mps: tuple[float, float, float]) -> dict[str, Any]:
        """A position target with velocity feed-forward and the held yaw (type_mask 2496)."""
        with self._cond:
            if self._yaw_hold_rad is None:
                self._yaw_hold_rad = self._yaw_rad
            yaw = self._yaw_hold_rad
        return position_velocity_fields(pos_ned_m, vel_ned_mps, yaw, self._time_boot_ms())

    def send_position(self, pos_ned_m: tuple[float, float, float], vel_ned_mps: tuple[float, float, float]) -> None:
        """Hand the tracking to the autopilot's own position controller (the baseline the planner is judged
        against): SET_POSITION_TARGET_LOCAL_NED with position and velocity feed-forward."""
        self._send_setpoint(self.position_setpoint_for(pos_ned_m, vel_ned_mps))

    def _setpoint_for(self, action: np.ndarray) -> dict[str, Any]:
        """The velocity setpoint for `action` with the held yaw; a non-finite action becomes a position hold
        here (the shield should have stopped it; an autopilot given NaN velocities behaves per firmware)."""
        with self._cond:
            if self._yaw_hold_rad is None:
                self._yaw_hold_rad = self._yaw_rad
            yaw = self._yaw_hold_rad
        if np.all(np.isfinite(action)):
            return velocity_setpoint_fields(action, yaw, self.spec, self._time_boot_ms())
        self._warn("non-finite action %s: holding position instead", action)
        pos, _ = self._position_and_yaw()
        return position_hold_fields(pos, yaw, self._time_boot_ms())

    def _send_setpoint(self, fields: Mapping[str, Any]) -> None:
        if self._takeover is not None:  # a pilot has the vehicle: not one more setpoint (read without the lock)
            return
        self.link.mav.set_position_target_local_ned_send(target_system=self.config.target_system,
                                                          target_component=self.config.target_component, **fields)

    def _command(self, command: int, params: tuple[float, ...], doing: str, timeout_s: float | None = None,
                 retries: int | None = None) -> None:
        """COMMAND_LONG to the autopilot; CommandRefused (with its STATUSTEXTs) unless ACCEPTED."""
        since = time.monotonic()
        result = self.link.command_long(self.config.target_system, self.config.target_component, command, params,
                                        timeout_s=self.command_timeout_s if timeout_s is None else timeout_s,
                                        retries=self.command_retries if retries is None else retries)
        if result != mavlink.MAV_RESULT_ACCEPTED:
            raise CommandRefused(command, result, self._context(doing, since))
        log.debug("%s accepted (%s)", command_name(command), doing)

    def _context(self, doing: str, since_s: float) -> str:
        with self._cond:  # a refusal's reason may trail its ACK by a few ms
            self._cond.wait_for(lambda: any(t >= since_s for t, _, _ in self._texts), 0.1)
            texts = [text for t, _, text in self._texts if t >= since_s]
        said = f" (autopilot said: {'; '.join(texts)})" if texts else ""
        return f"{doing} on {self.FAMILY} {self._target}{said}"

    def _set_mode(self, params: tuple[float, ...], is_mode: Callable[[int], bool], name: str) -> None:
        """MAV_CMD_DO_SET_MODE, then wait for a HEARTBEAT in the mode.

        A later non-ACCEPTED COMMAND_ACK for the same command overrides the first ACCEPTED one: PX4 1.16's
        mavlink receiver ACKs DO_SET_MODE at once and Commander sends the real result after it (PX4 PR #27343,
        and the PX4 log). The heartbeat check also catches an ACCEPTED number that matched no mode."""
        since = time.monotonic()
        doing = f"switching to {name}"
        if self.taken_over is not None:
            raise AutopilotError(f"{self.FAMILY} {self._target} was taken over (mode {self.taken_over[0]}): "
                                 f"dreamlink does not change the mode a pilot chose ({doing} not sent)")
        if name != self.CONTROL_MODE:
            self._yield_control()
        self._command(mavlink.MAV_CMD_DO_SET_MODE, params, doing)
        deadline = since + self.config.command_timeout_s + self.config.mode_confirm_timeout_s
        with self._cond:
            while True:
                overridden = [a for a, t in self._acks if t >= since and a.command == mavlink.MAV_CMD_DO_SET_MODE
                              and a.result not in (mavlink.MAV_RESULT_ACCEPTED, mavlink.MAV_RESULT_IN_PROGRESS)]
                if overridden:
                    raise CommandRefused(mavlink.MAV_CMD_DO_SET_MODE, int(overridden[-1].result),
                                         self._context(doing + " (its first COMMAND_ACK said ACCEPTED)", since))
                if (self._heartbeat_recv_s >= since and self._custom_mode is not None
                        and is_mode(self._custom_mode)):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AutopilotError(f"{self.FAMILY} {self._target} accepted {doing} but its HEARTBEAT shows "
                                         f"{self.mode} after {self.config.mode_confirm_timeout_s:.1f} s; is another "
                                         f"client or a failsafe changing modes?")
                self._cond.wait(min(remaining, 0.05))
        if name == self.CONTROL_MODE:
            self._claim_control()
        log.info("%s %s in %s", self.FAMILY, self._target, name)

    def _wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str,
                    on_step: Callable[[], None] | None = None) -> None:
        """Wait (wall clock) until `condition()` (evaluated under the lock) holds; LinkTimeout naming `what`.

        `on_step` runs before each check (a take-off ramp updates its setpoint there). In lockstep each
        step ticks the vehicle (`_lockstep_tick`); in real time it waits for the next message."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            if on_step is not None:
                on_step()
            with self._cond:
                if condition():
                    return
            if time.monotonic() >= deadline:
                raise LinkTimeout(f"{self.FAMILY} {self._target} on {self.link.config.connect}: no {what} within "
                                  f"{timeout_s:.1f} s (mode {self.mode}, {'armed' if self.armed else 'disarmed'})")
            if self.config.lockstep:
                self._lockstep_tick()
            else:
                with self._cond:
                    self._cond.wait(0.05)

    def _lockstep_tick(self) -> None:
        """Move a lockstep SITL one step: a TIMESYNC request, answered after the step (real autopilots answer too).
        A short wait: an answer lost on a lossy link costs 30 ms, not more; a late one only means an extra step
        (these waits end on a condition, never on a step count)."""
        self.lockstep_nudge(0.03)

    def _request_streams(self, quiet: bool = False) -> None:
        """SET_MESSAGE_INTERVAL for the state and status messages, waiting for each ACK (`_stream_fallback` when
        refused). `quiet`: a repeat whose refusals were already reported."""
        rate = self.config.stream_rate_hz
        for msg_id, rate_hz in ((mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED, rate),
                                (mavlink.MAVLINK_MSG_ID_ATTITUDE, rate),
                                (mavlink.MAVLINK_MSG_ID_EXTENDED_SYS_STATE, self.config.status_rate_hz),
                                (mavlink.MAVLINK_MSG_ID_SYS_STATUS, self.config.status_rate_hz),
                                *(((getattr(mavlink, f"MAVLINK_MSG_ID_{self.ESTIMATOR_REPORT}"),
                                    self.config.status_rate_hz),) if self.ESTIMATOR_REPORT else ())):
            self._stream_requests[msg_id] = rate_hz
            if msg_id in self._data_stream_fallback:
                self._reassert(msg_id)
                continue
            try:
                result = self.link.command_long(self.config.target_system, self.config.target_component,
                                                mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, (msg_id, 1e6 / rate_hz),
                                                timeout_s=self.command_timeout_s,
                                                retries=self.command_retries)
            except LinkTimeout:
                result = None
            if result != mavlink.MAV_RESULT_ACCEPTED and not quiet:
                self._stream_fallback(msg_id, rate_hz, result)

    def _reassert(self, msg_id: int) -> None:
        """Ask for one stream again at its rate, fire and forget (the loop thread cannot wait for ACKs)."""
        rate_hz = self._stream_requests[msg_id]
        self.link.mav.command_long_send(self.config.target_system, self.config.target_component,
                                        mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, 0, float(msg_id), 1e6 / rate_hz,
                                        0, 0, 0, 0, 0)

    def _keep_streams(self, now_s: float) -> None:
        """Re-assert a state stream that another client lowered (see firmware_bridge/streams.py); warn naming
        who else is on the link."""
        with self._cond:
            due = self.streams.due(now_s)
            others = dict(self._others)
        if not due:
            return
        for name in due:
            msg_id = getattr(mavlink, f"MAVLINK_MSG_ID_{name}")
            if msg_id in self._stream_requests:
                self._reassert(msg_id)
        if now_s - self._last_stream_warning >= _WARN_EVERY_S:
            self._last_stream_warning = now_s
            who = ", ".join(f"{s}/{c} {kind}" for (s, c), kind in sorted(others.items())) or "none heard directly"
            rates = ", ".join(f"{n} {self.streams.measured_hz(n):.0f} Hz mean, re-asserted "
                              f"{self.streams.reasserts(n)}x" for n in due)
            log.warning("%s %s: %s arrived late (asked %.0f Hz): something else on the link lowered the stream "
                        "(a ground station or MAVProxy asking for data streams resets ArduPilot's message "
                        "intervals; MAVProxy: --streamrate=-1); asked again. Other components on this link: %s",
                        self.FAMILY, self._target, rates, self.config.stream_rate_hz, who)

    def stream_report(self) -> dict[str, object]:
        """The state streams as flown (rates, worst gaps, re-assertions) and who else was on the link."""
        with self._cond:
            return {"streams": self.streams.report(),
                    "other_components": {f"{s}/{c}": kind for (s, c), kind in sorted(self._others.items())}}

    def _stream_fallback(self, msg_id: int, rate_hz: float, result: int | None) -> None:
        """SET_MESSAGE_INTERVAL was refused (result) or not answered (None)."""
        log.warning("%s %s did not accept a %.0f Hz interval for message %d (%s)", self.FAMILY, self._target,
                    rate_hz, msg_id, "no answer" if result is None else result)

    def _warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:  # per tick at 50 Hz otherwise
            self._last_warning = now
            log.warning(msg, *args)

    def _release_safely(self, land: Callable[[], None]) -> None:
        """Land if flying, else disarm if armed; log, never raise (what runs when everything else failed).

        The landed state comes at 2 Hz and may lag a take-off, but both autopilots refuse a disarm in the air
        (unforced), so a refused disarm is followed by the landing."""
        if self.taken_over is not None:
            log.warning("release: %s %s was taken over (mode %s): left to the pilot, no mode change, no disarm",
                        self.FAMILY, self._target, self.taken_over[0])
            return
        self._yield_control()
        try:
            if self.armed and not self.in_air:
                try:
                    self._command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (0.0,), "disarming", 0.5, 1)
                    with self._cond:
                        self._armed = False
                    return
                except CommandRefused as exc:
                    log.warning("release: %s; landing instead", exc)
            if self.in_air or self.armed:
                land()
        except Exception as exc:
            log.warning("release: %s %s did not take the command: %s", self.FAMILY, self._target, exc)
