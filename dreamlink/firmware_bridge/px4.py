"""PX4 profile: OFFBOARD with a continuous setpoint stream, an offboard take-off ramp, PX4's own hold and landing.

Follows PX4's documented MAVLink interface and the PX4 v1.16 SIH log under ../shared/data/sitl-logs:

- Modes: HEARTBEAT.custom_mode packs `union px4_custom_mode {uint16 reserved; uint8 main_mode; uint8
  sub_mode}` (src/modules/commander/px4_custom_mode.h), so custom_mode = main << 16 | sub << 24: OFFBOARD =
  main 6 = 393216, AUTO.LOITER ("Hold") = 4/3 = 50593792, AUTO.LAND = 4/6 = 100925440 (all three in the log).
  MAV_CMD_DO_SET_MODE takes param1 = MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, param2 = main, param3 = sub.
  PX4 1.16 answers DO_SET_MODE twice, an immediate ACCEPTED from the mavlink receiver and then Commander's
  real result (PX4 PR #27343 removes the first); the profile lets a later refusal win and waits for a
  HEARTBEAT in the mode (`AutopilotProfile._set_mode`).
- OFFBOARD needs proof of life: "PX4 enables offboard control only after receiving the signal for more than
  a second", the signal being setpoints at > 2 Hz, and arming in OFFBOARD or switching to it needs the
  stream already running (docs.px4.io/v1.16/en/flight_modes/offboard; COM_OF_LOSS_T, 1 s in 1.16). When it
  stops, PX4 leaves OFFBOARD for its failsafe (COM_OBL_RC_ACT; without RC that ends in Return).
  `enter_control_mode()` therefore streams a hold of the current position (type_mask 2552, as the log's
  client did for 2 s) for `offboard_warmup_s` (>= 1 s) before DO_SET_MODE OFFBOARD, and a background
  thread keeps streaming at `setpoint_rate_hz` (20 Hz, MAVSDK's rate): the newest action for
  `setpoint_timeout_s`, then a hold of the position where the runtime went quiet. So OFFBOARD survives a
  slow tick or a pause between take-off and the control loop, yet a stalled runtime stops the vehicle
  instead of flying its last velocity; if the whole process dies the stream dies with it and PX4's own
  offboard-loss failsafe takes over.
- Take-off: an offboard position+velocity ramp (type_mask 2496) at `takeoff_speed_mps` to the target,
  then a position hold there; what the log's client flew (1.5 m/s to 8 m). Chosen over MAV_CMD_NAV_TAKEOFF
  + AUTO.TAKEOFF because PX4 then ends in AUTO.LOITER and the runtime must switch back to OFFBOARD in the
  air, and because NAV_TAKEOFF's param7 is an AMSL altitude (needs HOME_POSITION), while the ramp is
  flown in the same local frame and mode as the control loop, on the same stream.
- land() = MAV_CMD_NAV_LAND with NaN position/yaw ("Landing at current position", as in the log); PX4
  disarms itself 2 s after touchdown (COM_DISARM_LAND). hold() = AUTO.LOITER. failsafe() = the
  configured actions in order: "RTL" (MAV_CMD_NAV_RETURN_TO_LAUNCH), "LAND", "HOLD" (AUTO.LOITER).
- Lockstep SITL: no background thread (each setpoint is a tick); waits tick with the standing setpoint.

Recommended order: connect() -> enter_control_mode() -> arm() -> takeoff(alt) -> send() at the control
rate -> land() (or release()). `stop_stream()` ends the background thread (release() and land() do).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.autopilot import AutopilotError, AutopilotProfile
from dreamlink.firmware_bridge.autopilot_config import AutopilotConfig
from dreamlink.firmware_bridge.link import Link, LinkError, mavlink
from dreamlink.firmware_bridge.messages import position_hold_fields, position_velocity_fields
from dreamlink.spec import QUAD, VehicleSpec

log = logging.getLogger(__name__)

PX4_MAIN_MODES: Mapping[str, int] = {"MANUAL": 1, "ALTCTL": 2, "POSCTL": 3, "AUTO": 4, "ACRO": 5, "OFFBOARD": 6,
                                     "STABILIZED": 7, "RATTITUDE": 8}
PX4_AUTO_SUB_MODES: Mapping[str, int] = {"READY": 1, "TAKEOFF": 2, "LOITER": 3, "MISSION": 4, "RTL": 5, "LAND": 6,
                                         "RTGS": 7, "FOLLOW_TARGET": 8, "PRECLAND": 9, "VTOL_TAKEOFF": 10}
_MAIN_NAMES = {v: k for k, v in PX4_MAIN_MODES.items()}
_AUTO_NAMES = {v: k for k, v in PX4_AUTO_SUB_MODES.items()}
OFFBOARD = PX4_MAIN_MODES["OFFBOARD"]
FAILSAFE_ACTIONS = ("RTL", "LAND", "HOLD")
_WARMUP_MARGIN_S = 0.2  # "more than a second", measured on telemetry that lags the vehicle by a sample or two
_LAND_PARAMS = (0.0, 0.0, 0.0, math.nan, math.nan, math.nan, math.nan)  # here, current yaw (the log's)


def px4_custom_mode(main_mode: int, sub_mode: int = 0) -> int:
    """HEARTBEAT/DO_SET_MODE custom_mode of a PX4 main (and AUTO sub) mode."""
    if not (0 <= main_mode <= 255 and 0 <= sub_mode <= 255):
        raise ValueError(f"px4_custom_mode: main and sub mode are bytes, got {main_mode}, {sub_mode}")
    return (main_mode << 16) | (sub_mode << 24)


def px4_mode_parts(custom_mode: int) -> tuple[int, int]:
    """(main mode, sub mode) of a PX4 custom_mode."""
    return (custom_mode >> 16) & 0xFF, (custom_mode >> 24) & 0xFF


def px4_mode_name(custom_mode: int) -> str:
    """"OFFBOARD", "AUTO.LOITER", "POSCTL" ...; unknown numbers as "MAIN_9" / "AUTO.SUB_12"."""
    main, sub = px4_mode_parts(custom_mode)
    name = _MAIN_NAMES.get(main, f"MAIN_{main}")
    if main == PX4_MAIN_MODES["AUTO"]:
        return f"AUTO.{_AUTO_NAMES.get(sub, f'SUB_{sub}')}"
    return name


class Px4Profile(AutopilotProfile):
    """The runtime's view of a PX4 multicopter: `state()` in, velocity setpoints in OFFBOARD out."""

    FAMILY = "PX4"
    AUTOPILOT = mavlink.MAV_AUTOPILOT_PX4
    CONTROL_MODE = "OFFBOARD"
    ESTIMATOR_REPORT = "ESTIMATOR_STATUS"
    # After a landing PX4 1.16 sits disarmed in OFFBOARD, whose arming check fails without a setpoint stream (seen
    # on the real SITL: the pre-arm bit came back as soon as enter_control_mode() started streaming).
    PREARM_FAILS_IN_MODES = frozenset({"OFFBOARD"})

    def __init__(self, link: Link, spec: VehicleSpec = QUAD, config: AutopilotConfig | None = None) -> None:
        config = config if config is not None else AutopilotConfig()
        unknown = [m for m in config.failsafe_modes if m not in FAILSAFE_ACTIONS]
        if unknown:
            raise ValueError(f"AutopilotConfig.failsafe_modes: {unknown} are not PX4 failsafe actions; expected "
                             f"names from {FAILSAFE_ACTIONS}")
        super().__init__(link, spec, config)
        self._standing: dict[str, Any] | None = None  # what the stream repeats
        self._standing_expires_s = math.inf  # monotonic; an action expires into a position hold
        self._last_sent_s = -math.inf
        self._stream_started_t_s = math.inf  # autopilot time of the first streamed setpoint
        self._stream_stop = threading.Event()
        self._stream_thread: threading.Thread | None = None

    def mode_name(self, custom_mode: int) -> str:
        return px4_mode_name(custom_mode)

    def in_control_mode(self, custom_mode: int) -> bool:
        return px4_mode_parts(custom_mode)[0] == OFFBOARD

    def set_mode(self, main_mode: int, sub_mode: int = 0) -> None:
        """DO_SET_MODE to a main/sub mode and wait until the HEARTBEAT shows it (double ACK handled)."""
        name = px4_mode_name(px4_custom_mode(main_mode, sub_mode))
        self._set_mode((float(mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED), float(main_mode), float(sub_mode)),
                       lambda custom_mode: px4_mode_parts(custom_mode) == (main_mode, sub_mode)
                       or (main_mode == OFFBOARD and px4_mode_parts(custom_mode)[0] == OFFBOARD), name)

    # -- profile contract --------------------------------------------------------------------------

    def enter_control_mode(self) -> None:
        """Stream a hold of the current position for `offboard_warmup_s` + 0.2 s (autopilot time), then OFFBOARD.

        The heading is latched here and held by every setpoint; the stream keeps running afterwards."""
        pos, _ = self._position_and_yaw()
        self.hold_yaw()
        self._set_standing(position_hold_fields(pos, self.yaw_hold_rad, self._time_boot_ms()))
        self._start_stream()
        warmup_s = self.config.offboard_warmup_s + _WARMUP_MARGIN_S
        self._wait_until(lambda: self._t_s >= self._stream_started_t_s + warmup_s, warmup_s + 5.0,
                         f"{warmup_s:g} s of setpoint stream before OFFBOARD")
        self.set_mode(OFFBOARD)

    def send(self, action: np.ndarray) -> None:
        """action [A] NED velocity (m/s) -> SET_POSITION_TARGET_LOCAL_NED, type_mask 2503, yaw held; the
        background stream repeats it for `setpoint_timeout_s`."""
        self._check_action(action)
        self._send_streamed(self._setpoint_for(action))

    def send_position(self, pos_ned_m: tuple[float, float, float], vel_ned_mps: tuple[float, float, float]) -> None:
        """Position + velocity feed-forward target, kept alive by the background stream like `send`."""
        self._send_streamed(self.position_setpoint_for(pos_ned_m, vel_ned_mps))

    def _send_streamed(self, fields: dict[str, Any]) -> None:
        """Send now and make it the standing setpoint the background stream repeats for `setpoint_timeout_s`."""
        now = time.monotonic()
        self._set_standing(fields, now + self.config.setpoint_timeout_s)
        self._send_setpoint(fields)
        with self._cond:
            self._last_sent_s = now
        if self._stream_thread is None and not self.config.lockstep:
            self._start_stream()

    def takeoff(self, altitude_m: float, timeout_s: float | None = None) -> None:
        """Climb `altitude_m` above the current position along an offboard ramp (position + velocity feed-forward
        at `takeoff_speed_mps`), then hold there; returns within `altitude_tolerance_m`. Needs OFFBOARD and armed."""
        if not (math.isfinite(altitude_m) and altitude_m > 0):
            raise ValueError(f"takeoff: altitude_m must be > 0, got {altitude_m!r}")
        if not self.armed:
            raise AutopilotError("PX4 take-off needs an armed vehicle: call arm() after enter_control_mode() (PX4 "
                                 "disarms again after COM_DISARM_PRFLT, 10 s, without a take-off)")
        custom_mode = self.custom_mode
        if custom_mode is None or not self.in_control_mode(custom_mode):
            raise AutopilotError(f"PX4 take-off is flown in OFFBOARD (mode is {self.mode}); call "
                                 f"enter_control_mode() first")
        (n0, e0, d0), _ = self._position_and_yaw()
        yaw = self.yaw_hold_rad
        target_d = d0 - altitude_m
        speed = self.config.takeoff_speed_mps
        with self._cond:
            t0 = self._t_s

        def ramp() -> None:
            with self._cond:
                d_sp = max(target_d, d0 - speed * (self._t_s - t0))
            if d_sp > target_d:
                self._set_standing(position_velocity_fields((n0, e0, d_sp), (0.0, 0.0, -speed), yaw,
                                                            self._time_boot_ms()))
            else:
                self._set_standing(position_hold_fields((n0, e0, target_d), yaw, self._time_boot_ms()))

        self._wait_until(lambda: self._position_ned[2] <= target_d + self.config.altitude_tolerance_m,
                         timeout_s if timeout_s is not None else 15.0 + 2.0 * altitude_m / speed,
                         f"climb to {altitude_m:g} m", on_step=ramp)
        self._set_standing(position_hold_fields((n0, e0, target_d), yaw, self._time_boot_ms()))
        self.hold_yaw()
        log.info("PX4 %s took off to %.1f m", self._target, d0 - self._position_ned[2])

    def hold(self) -> None:
        """AUTO.LOITER ("Hold"); the stream goes on holding this position, ready for enter_control_mode()."""
        if self._left_to_pilot("holding"):
            return
        pos, _ = self._position_and_yaw()
        self._set_standing(position_hold_fields(pos, self.yaw_hold_rad, self._time_boot_ms()))
        self._start_stream()
        self.set_mode(PX4_MAIN_MODES["AUTO"], PX4_AUTO_SUB_MODES["LOITER"])

    def land(self, timeout_s: float | None = None) -> None:
        """MAV_CMD_NAV_LAND at the current position, stop the stream, wait until PX4 disarmed on the ground (not if
        a pilot took the vehicle: then only the stream stops)."""
        if self._left_to_pilot("landing"):
            self.stop_stream()
            return
        self._yield_control()
        self._command(mavlink.MAV_CMD_NAV_LAND, _LAND_PARAMS, "landing")
        self.stop_stream()
        self._wait_disarmed_on_ground(timeout_s)

    def failsafe(self) -> str:
        """Ask for PX4's own failsafe: the first of `failsafe_modes` it accepts ("RTL", "LAND", "HOLD"). Returns
        its name; the stream stops once PX4 is in charge. Raises the last refusal if none was accepted."""
        if self._left_to_pilot("asking for a failsafe mode"):
            self.stop_stream()
            return "PILOT"
        self._yield_control()

        def attempt(name: str) -> None:
            if name == "RTL":
                self._command(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, (), "returning to launch")
            elif name == "LAND":
                self._command(mavlink.MAV_CMD_NAV_LAND, _LAND_PARAMS, "landing")
            else:
                self.hold()
                return
            self.stop_stream()  # PX4 is in charge now

        return self._first_failsafe(attempt)

    def release(self) -> None:
        """NAV_LAND if flying, else disarm; stop the stream. Returns without waiting. Never raises: if PX4 took
        nothing, stopping the stream leaves it to PX4's offboard-loss failsafe."""

        def land() -> None:
            self._command(mavlink.MAV_CMD_NAV_LAND, _LAND_PARAMS, "landing", 0.5, 1)

        try:
            self._release_safely(land)
        finally:
            self.stop_stream()

    # -- the setpoint stream -----------------------------------------------------------------------

    def stop_stream(self) -> None:
        """End the background setpoint stream (PX4 leaves OFFBOARD after COM_OF_LOSS_T if still in it)."""
        thread = self._stream_thread
        self._stream_stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        with self._cond:
            self._stream_thread = None
            self._standing = None
            self._stream_started_t_s = math.inf

    @property
    def streaming(self) -> bool:
        with self._cond:
            return self._standing is not None

    def _set_standing(self, fields: dict[str, Any], expires_s: float = math.inf) -> None:
        with self._cond:
            self._standing, self._standing_expires_s = fields, expires_s

    def _send_setpoint(self, fields: Mapping[str, Any]) -> None:
        super()._send_setpoint(fields)
        with self._cond:
            if self._stream_started_t_s == math.inf:
                self._stream_started_t_s = self._t_s

    def _start_stream(self) -> None:
        if self.config.lockstep or self._stream_thread is not None:
            return  # lockstep: every setpoint is a tick, sent by the caller or by `_lockstep_tick`
        self._stream_stop.clear()
        self._stream_thread = threading.Thread(target=self._stream_loop, daemon=True,
                                               name=f"px4-setpoints {self.link.config.connect}")
        self._stream_thread.start()

    def _standing_now(self) -> dict[str, Any] | None:
        """The setpoint to repeat now; an expired action turns into a hold of the current position."""
        with self._cond:
            fields, expired = self._standing, time.monotonic() >= self._standing_expires_s
        if fields is None:
            return None
        if expired:
            self._warn("PX4 %s: no action for %.2f s; streaming a position hold", self._target,
                       self.config.setpoint_timeout_s)
            pos, _ = self._position_and_yaw()
            fields = position_hold_fields(pos, self.yaw_hold_rad, self._time_boot_ms())
            with self._cond:
                if self._standing is not None:
                    self._standing, self._standing_expires_s = fields, math.inf
        return {**fields, "time_boot_ms": self._time_boot_ms()}

    def _stream_loop(self) -> None:
        period_s = 1.0 / self.config.setpoint_rate_hz
        while not self._stream_stop.wait(period_s / 4):
            try:
                with self._cond:
                    due = time.monotonic() - self._last_sent_s >= period_s
                if not due:
                    continue
                fields = self._standing_now()
                if fields is None:
                    continue
                self._send_setpoint(fields)
                with self._cond:
                    self._last_sent_s = time.monotonic()
            except LinkError as exc:  # the link closed under us: nothing left to keep alive
                log.info("PX4 setpoint stream on %s ends: %s", self.link.config.connect, exc)
                return
            except Exception as exc:
                self._warn("PX4 setpoint stream on %s: %s", self.link.config.connect, exc)

    def _lockstep_tick(self) -> None:
        """While streaming, the step is a setpoint (PX4 counts them for OFFBOARD); a short wait for its answer, as
        in the base class: on a lossy link a lost setpoint or state costs 30 ms, not 0.5 s, and the waits that
        call this end on a condition, not on a step count."""
        fields = self._standing_now()
        if fields is None:
            super()._lockstep_tick()
            return
        with self._cond:
            t_s = min(self._t_s, self._attitude_t_s)
        self._send_setpoint(fields)
        self.wait_state_after(t_s + 1e-3, 0.03)
