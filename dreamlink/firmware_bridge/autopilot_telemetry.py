"""What an ArduPilot or PX4 flight controller reports, kept up to date on the link's receive thread.

`AutopilotTelemetry` is the listening half of every autopilot profile (`autopilot.AutopilotProfile` adds the
commands): it assembles the state vector and reads the autopilot's condition, so that the loop does not plan
on a state it cannot trust and does not command a vehicle that is not its own.

- State: the newest LOCAL_POSITION_NED and ATTITUDE (`messages` writes their fields into the state vector);
  `state()` is stamped with LOCAL_POSITION_NED.time_boot_ms (the autopilot's clock) and its age is that of
  the OLDER of the two, so a stalled ATTITUDE stream shows up as a stale state. `streams` records their
  arrival, so a stream that something else on the link lowered is noticed.
- HEARTBEAT of the autopilot (target system/component, autopilot field not MAV_AUTOPILOT_INVALID) gives
  armed (base_mode SAFETY_ARMED), custom_mode (the flight mode, per family) and system_status;
  EXTENDED_SYS_STATE gives the landed state; SYS_STATUS's MAV_SYS_STATUS_PREARM_CHECK health bit says the
  pre-arm checks pass (both firmwares set it: ArduPilot from the start in its log, PX4 1.16 in health only,
  cleared after landing), which `connect()` waits for, since before it ArduPilot refuses GUIDED ("requires
  position") and both refuse to arm; STATUSTEXT is logged and kept, so a refused command's error carries
  the autopilot's own words ("PreArm: ..."). Other components' HEARTBEATs are remembered, to name who else
  shares the link.
- Pilot takeover (`taken_over`): once the vehicle is in the control mode at our request, a HEARTBEAT in
  another mode we did not ask for, still armed, means a pilot or ground station took it. Disarmed in another
  mode is a reboot (or a disarm), not a takeover.
- Estimator health (`estimator_ok`): SYS_STATUS's MAV_SYS_STATUS_AHRS health bit (both firmwares), and the
  family's own report: ArduPilot's EKF_STATUS_REPORT (bad when a variance reaches FS_EKF_THRESH's default
  0.8, the filter is uninitialised or in constant-position mode, or lacks attitude, velocity or relative
  position; ArduCopter/ekf_check.cpp), PX4's ESTIMATOR_STATUS (bad when an innovation test ratio exceeds 1,
  a GPS glitch or accelerometer error is flagged, or a solution is missing).
- A reboot (`reboots`): the autopilot's clock (time_boot_ms, TIMESYNC tc1) jumps back by more than 1 s. The
  profile then reports no state (`state()` age inf) until `connect()` is called again: a flight controller
  that rebooted is disarmed, its estimator starts over, and nothing of the flight before applies to it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.autopilot_config import AutopilotConfig
from dreamlink.firmware_bridge.link import Link, mavlink
from dreamlink.firmware_bridge.messages import fill_from_attitude, fill_from_local_position, quad_layout
from dreamlink.firmware_bridge.streams import StreamWatch
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

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


def _estimator_why(measure: str, high: list[str], flags: int, fault_flags: int, fault_text: str) -> str:
    """Why an estimator report says the estimate is unusable, "" if it does not."""
    if high:
        return f"{measure} " + ", ".join(high)
    if flags & _ESTIMATOR_NEEDED != _ESTIMATOR_NEEDED:
        return f"flags 0x{flags:x} lack 0x{_ESTIMATOR_NEEDED & ~flags:x}"
    if flags & fault_flags:
        return f"flags 0x{flags:x}: {fault_text}"
    return ""


class AutopilotTelemetry:
    """State assembly, heartbeats, takeover, estimator health and reboots, as ArduPilot and PX4 report them.

    Subclasses set FAMILY and CONTROL_MODE and the mode vocabulary (`mode_name`, `in_control_mode`).
    """

    FAMILY = "autopilot"
    CONTROL_MODE = ""

    def __init__(self, link: Link, spec: VehicleSpec, config: AutopilotConfig) -> None:
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
        self._vehicle_t_s = -math.inf  # newest autopilot time seen (any source), for reboot detection
        self._rebooted = False
        self.reboots = 0
        self._estimator_bad: dict[str, str] = {}  # message -> why, while that message says it is bad
        self.streams = StreamWatch({"LOCAL_POSITION_NED": config.stream_rate_hz, "ATTITUDE": config.stream_rate_hz})
        self._others: dict[tuple[int, int], str] = {}  # other components heard on this link -> what they are
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
            if self._controlling and not in_control and not armed:
                # Out of our mode and disarmed: the autopilot rebooted (it comes back disarmed in its boot mode) or
                # was disarmed; nobody is flying it in another mode. Not a takeover: the loop's stale-state and
                # failsafe paths answer it, as for any vehicle lost mid-flight.
                self._controlling = False
            elif self._controlling and not in_control:
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

    # -- status, estimator health, reboots (receive thread) ----------------------------------------

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

    # -- what the runtime and missions read --------------------------------------------------------

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

    def wait_state_after(self, t_s: float, timeout_s: float) -> bool:
        """Block until both messages stamped at autopilot time >= `t_s` arrived; False on timeout (lockstep clock)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._rebooted and
                                       min(self._t_s, self._attitude_t_s) >= t_s - _TIME_TOLERANCE_S, timeout_s)

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
    def _target(self) -> str:
        return f"{self.config.target_system}/{self.config.target_component}"

    @property
    def _state_complete(self) -> bool:
        return self._position_recv_s > -math.inf and self._attitude_recv_s > -math.inf
