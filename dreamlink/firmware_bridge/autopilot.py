"""The profile base ArduPilot-copter and PX4 share: connect, arm, modes, setpoints, streams, waits, release.

`AutopilotProfile` is the commanding half of a profile, built on `AutopilotTelemetry` (what the autopilot
reports) and speaking the messages of `messages` (an action as SET_POSITION_TARGET_LOCAL_NED, type_mask 2503:
a NED velocity plus the heading held where control started). Every command is a COMMAND_LONG that must be
ACCEPTED, whose refusal carries the autopilot's own STATUSTEXT; every mode change is confirmed by a HEARTBEAT
in the mode, and made only while no pilot has taken the vehicle.

`connect()` waits for the autopilot's HEARTBEAT (checking its family), asks for LOCAL_POSITION_NED and
ATTITUDE at `stream_rate_hz`, the status messages at `status_rate_hz`, with MAV_CMD_SET_MESSAGE_INTERVAL
(ArduPilot >= 4.0 and PX4; ardupilot.org/dev/docs/mavlink-requesting-data.html, mavlink.io "How to Request &
Stream Messages"; each profile has its own fallback when that is refused), then waits for a position estimate
and the pre-arm checks as long as the autopilot keeps sending HEARTBEATs. In flight, a state stream that
something else on the link lowered is asked for again (`streams.StreamWatch`).

Lockstep SITL (`AutopilotConfig.lockstep`): vehicle time moves only when the client ticks, with a setpoint
or a TIMESYNC request (tc1 = 0), the convention of `dreamlink.sim.quadrotor`. Every wait in a profile
(first state, takeoff, landing, PX4's offboard warm-up) then ticks with TIMESYNC (or the standing setpoint)
instead of sleeping; against a real autopilot TIMESYNC is harmless.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.autopilot_config import AutopilotConfig
from dreamlink.firmware_bridge.autopilot_telemetry import AutopilotTelemetry
from dreamlink.firmware_bridge.link import CommandRefused, Link, LinkTimeout, command_name, mavlink
from dreamlink.firmware_bridge.messages import position_hold_fields, position_velocity_fields, velocity_setpoint_fields
from dreamlink.spec import QUAD, VehicleSpec

log = logging.getLogger(__name__)

_WARN_EVERY_S = 5.0
FORCE_DISARM = 21196.0  # param2 of MAV_CMD_COMPONENT_ARM_DISARM: skip the "landed" check (both autopilots)


class AutopilotError(RuntimeError):
    """The autopilot is not in a state for the requested action; the message says what to do."""


def autopilot_name(autopilot: int) -> str:
    entry = mavlink.enums["MAV_AUTOPILOT"].get(autopilot)
    return entry.name if entry is not None else f"MAV_AUTOPILOT {autopilot}"


class AutopilotProfile(AutopilotTelemetry):
    """Commands and mode changes shared by ArduPilot and PX4, on top of the telemetry both report.

    Subclasses set FAMILY, AUTOPILOT and CONTROL_MODE and implement the mode vocabulary
    (`mode_name`), `enter_control_mode`, `send`, `takeoff`, `hold`, `land`, `failsafe`, `release`.
    """

    AUTOPILOT = mavlink.MAV_AUTOPILOT_GENERIC
    ESTIMATOR_REPORT = ""  # the family's estimator message (EKF_STATUS_REPORT, ESTIMATOR_STATUS), streamed

    def __init__(self, link: Link, spec: VehicleSpec = QUAD, config: AutopilotConfig | None = None) -> None:
        super().__init__(link, spec, config if config is not None else AutopilotConfig())
        self._yaw_hold_rad: float | None = None
        self._epoch_s = time.monotonic()  # our time_boot_ms in setpoints (the client's clock, as in the logs)
        self._last_warning = -math.inf
        self._stream_requests: dict[int, float] = {}  # msg id -> rate asked; how: `_stream_fallback` may change it
        self._data_stream_fallback: set[int] = set()  # msg ids asked for with REQUEST_DATA_STREAM instead
        self._last_stream_warning = -math.inf

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

    # -- the held heading ----------------------------------------------------------------------------

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

    def _wait_disarmed_on_ground(self, timeout_s: float | None) -> None:
        """After a landing command: both autopilots disarm by themselves on touchdown; wait for that."""
        self._wait_until(lambda: not self._armed, self.config.land_timeout_s if timeout_s is None else timeout_s,
                         "touchdown and disarm")
        log.info("%s %s landed and disarmed", self.FAMILY, self._target)

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

    def _first_failsafe(self, attempt: Callable[[str], None]) -> str:
        """Try `attempt(name)` for each of `failsafe_modes` in order; the name of the first the autopilot took.
        Raises the last refusal if it took none."""
        error: Exception | None = None
        for name in self.config.failsafe_modes:
            try:
                attempt(name)
                return name
            except (CommandRefused, LinkTimeout, AutopilotError) as exc:
                log.warning("failsafe: %s did not take %s: %s", self.FAMILY, name, exc)
                error = exc
        assert error is not None
        raise error

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
