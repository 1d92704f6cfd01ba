"""Board vehicle profile: a board without an autopilot (a motor controller, a SITL in front of a simulator),
described by the vehicle file's [link] table (`dreamlink.spec.BoardLink`): where each state component arrives
and how the action goes out.

The board's protocol (the SITLs in `dreamlink.sim.motor_board` implement it, the cart-pole one as
`cartpole.toml` describes it): HEARTBEAT from the link's sysid/compid (SAFETY_ARMED flag in base_mode;
custom_mode bit 0 = lockstep SITL). Telemetry: the state from DEBUG_FLOAT_ARRAY (array_id 0, the named
array, `time_usec` = board clock in µs), NAMED_VALUE_FLOAT (`time_boot_ms`) or fields of standard messages,
one source per component; on a DEBUG_FLOAT_ARRAY board data[S:S+A] is the applied action, data[S+A] armed,
data[S+A+1] the episode (SITL resets so far). Commands: the action normalised from each component's
[low, high] to [-1, 1] as SET_ACTUATOR_CONTROL_TARGET controls (the board holds it, and zeroes it after 0.2 s
without a new one), or to [-1000, 1000] as MANUAL_CONTROL x, y, z, r, or in its units as NAMED_VALUE_FLOAT;
COMMAND_LONG ARM_DISARM, SET_MESSAGE_INTERVAL, and MAV_CMD_USER_1 (SITL-only reset).

A board has no flight modes: `enter_control_mode()` only checks it is armed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.link import CommandRefused, Link, LinkTimeout, command_name, mavlink
from dreamlink.spec import CARTPOLE, VehicleSpec

log = logging.getLogger(__name__)

BOARD_STATE_NAMES = CARTPOLE.state_names  # the cart-pole board's data[0:4] order
FORCE_NAME = "cart_force_n"
CUSTOM_MODE_LOCKSTEP = 1
_BOARD_TIME_TOLERANCE_S = 1e-6  # board time is whole µs; callers compute targets in float seconds
_MAX_EXACT_FLOAT32_INT = 2**24  # COMMAND_LONG params are float32
_STREAM_IDS = {"DEBUG_FLOAT_ARRAY": mavlink.MAVLINK_MSG_ID_DEBUG_FLOAT_ARRAY,
               "NAMED_VALUE_FLOAT": mavlink.MAVLINK_MSG_ID_NAMED_VALUE_FLOAT}


class MotorBoardError(RuntimeError):
    """The board is not in a state for the requested action; the message says what to do."""


@dataclass(frozen=True)
class MotorBoardConfig:
    """Overrides of the vehicle file's [link]: target ids (-1: the file's) and the state stream rate (0: the
    file's, else the control rate)."""

    target_system: int = -1
    target_component: int = -1
    stream_rate_hz: float = 0.0

    def __post_init__(self) -> None:
        if not -1 <= self.target_system <= 255:
            raise ValueError(f"MotorBoardConfig.target_system: expected 0..255, got {self.target_system!r}")
        if not -1 <= self.target_component <= 255:
            raise ValueError(f"MotorBoardConfig.target_component: expected 0..255, got {self.target_component!r}")
        if not (math.isfinite(self.stream_rate_hz) and 0 <= self.stream_rate_hz <= 1000):
            raise ValueError(f"MotorBoardConfig.stream_rate_hz: expected (0, 1000] Hz, got {self.stream_rate_hz!r}")


def _board_time_s(msg: Any) -> float:
    if hasattr(msg, "time_usec"):
        return float(msg.time_usec) / 1e6
    if hasattr(msg, "time_boot_ms"):
        return float(msg.time_boot_ms) / 1e3
    return math.nan


def _check_source(src: Any, component: str, vehicle: str) -> None:
    """The message and field a vehicle file names exist in dreamlink's MAVLink dialect."""
    msg_class = getattr(mavlink, f"MAVLink_{src.message.lower()}_message", None)
    if msg_class is None:
        known = sorted(k[len("MAVLINK_MSG_ID_"):] for k in dir(mavlink) if k.startswith("MAVLINK_MSG_ID_"))
        raise ValueError(f"vehicle {vehicle!r}: {component} comes from {src.text()}, a message dreamlink does not "
                         f"decode; known: {', '.join(known)}")
    if src.message not in ("DEBUG_FLOAT_ARRAY", "NAMED_VALUE_FLOAT") and src.key not in msg_class.fieldnames:
        raise ValueError(f"vehicle {vehicle!r}: {component} comes from {src.text()}, but {src.message} has no field "
                         f"{src.key!r}; it has {', '.join(msg_class.fieldnames)}")


class BoardProfile:
    """The runtime's view of a board: `state()` in, `send(action)` out, as the vehicle file's [link] says."""

    def __init__(self, link: Link, spec: VehicleSpec, config: MotorBoardConfig = MotorBoardConfig()) -> None:
        if spec.link is None:
            raise ValueError(f"vehicle {spec.name!r} has no [link] table: its vehicle file must say how the state "
                             f"arrives and how the action is sent (see dreamlink/vehicles/cartpole.toml)")
        self.link, self.spec, self.board = link, spec, spec.link
        self.config = config
        self.target_system = config.target_system if config.target_system >= 0 else self.board.system_id
        self.target_component = config.target_component if config.target_component >= 0 else self.board.component_id
        self.stream_rate_hz = config.stream_rate_hz or self.board.stream_rate_hz or spec.rate_hz
        self._mid = ((spec.action_high + spec.action_low) / 2).astype(np.float64)
        self._half = ((spec.action_high - spec.action_low) / 2).astype(np.float64)
        self._cond = threading.Condition()
        self._x = np.full(spec.state_dim, np.nan, dtype=np.float32)  # filled in place by the receive thread
        self._t_s = -math.inf
        self._recv_s = -math.inf
        self._armed = False
        self._episode = -1
        self._lockstep: bool | None = None
        self._controls = [0.0] * 8
        # message type -> [(state index, source)]: one handler a message type
        self._routes: dict[str, list[tuple[int, Any]]] = {}
        for i, src in enumerate(self.board.telemetry):
            _check_source(src, spec.state_names[i], spec.name)
            self._routes.setdefault(src.message, []).append((i, src))
        for message in self._routes:
            link.subscribe(message, self._on_telemetry)
        link.subscribe("HEARTBEAT", self._on_heartbeat)

    # -- telemetry (receive thread) ------------------------------------------------------------

    def _from_board(self, msg: Any) -> bool:
        return ((self.target_system == 0 or msg.get_srcSystem() == self.target_system)
                and (self.target_component == 0 or msg.get_srcComponent() == self.target_component))

    def _on_telemetry(self, msg: Any, recv_s: float) -> None:
        if not self._from_board(msg):
            return
        kind = msg.get_type()
        if kind == "DEBUG_FLOAT_ARRAY" and msg.array_id != 0:
            return
        updated = False
        with self._cond:
            for i, src in self._routes.get(kind, ()):
                if kind == "DEBUG_FLOAT_ARRAY":
                    if msg.name != src.key:
                        continue
                    value = msg.data[src.index]
                elif kind == "NAMED_VALUE_FLOAT":
                    if msg.name != src.key:
                        continue
                    value = msg.value
                else:
                    value = getattr(msg, src.key)
                    if src.index >= 0:
                        value = value[src.index]
                self._x[i] = value
                updated = True
            if not updated:
                return
            if kind == "DEBUG_FLOAT_ARRAY":
                if self.board.armed_index >= 0:
                    self._armed = msg.data[self.board.armed_index] > 0.5
                if self.board.episode_index >= 0:
                    self._episode = int(msg.data[self.board.episode_index])
            if np.isnan(self._x).any() and self._recv_s == -math.inf:
                return  # not every component has arrived yet: no state to act on
            self._t_s = _board_time_s(msg)
            self._recv_s = recv_s
            self._cond.notify_all()

    def _on_heartbeat(self, msg: Any, recv_s: float) -> None:
        if not self._from_board(msg):
            return
        with self._cond:
            self._armed = bool(msg.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED)
            self._lockstep = bool(msg.custom_mode & CUSTOM_MODE_LOCKSTEP)

    # -- profile contract ----------------------------------------------------------------------

    def connect(self, timeout_s: float = 5.0) -> None:
        """Wait for the board's HEARTBEAT, then ask for its state streams at `stream_rate_hz`."""
        seen = self.link.latest("HEARTBEAT")
        if seen is None or not self._from_board(seen[0]) or time.monotonic() - seen[1] > 1.5:
            heartbeat = self.link.wait_for("HEARTBEAT", timeout_s, self._from_board)
            if heartbeat is None:
                raise LinkTimeout(f"no HEARTBEAT from motor board {self.target_system}/{self.target_component} on "
                                  f"{self.link.config.connect} within {timeout_s:.1f} s; is the board (or "
                                  f"`dreamlink sitl`) running and sending to this port?")
        interval_us = 1e6 / self.stream_rate_hz
        for message in self._routes:
            msg_id = _STREAM_IDS.get(message) or getattr(mavlink, f"MAVLINK_MSG_ID_{message}", None)
            if msg_id is None:
                raise ValueError(f"vehicle {self.spec.name!r} [link]: unknown MAVLink message {message!r}")
            self._command(mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, (msg_id, interval_us), 2.0,
                          f"requesting the {message} stream")
        log.info("motor board %d/%d connected on %s, state stream at %.0f Hz", self.target_system,
                 self.target_component, self.link.config.connect, self.stream_rate_hz)

    def state(self) -> tuple[float, np.ndarray, float]:
        """(board time s, state [S] float32 copy, age s since it arrived); (NaN, NaNs, inf) before any."""
        with self._cond:
            x = self._x.copy()
            t_s, recv_s = self._t_s, self._recv_s
        if recv_s == -math.inf:
            return math.nan, x, math.inf
        return t_s, x, time.monotonic() - recv_s

    def wait_state_after(self, t_s: float, timeout_s: float) -> bool:
        """Block until a state stamped at board time >= `t_s` (1 µs tolerance) arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._t_s >= t_s - _BOARD_TIME_TOLERANCE_S, timeout_s)

    def normalise(self, action: np.ndarray) -> np.ndarray:
        """Each action component from its [low, high] to [-1, 1], clipped; NaN passed on."""
        with np.errstate(invalid="ignore"):
            return np.clip((action.astype(np.float64) - self._mid) / self._half, -1.0, 1.0)

    def send(self, action: np.ndarray) -> None:
        """action [A] in spec units, sent as the [link] says. NaN is passed on (the board applies 0 and counts
        it); the shield should stop it first."""
        if action.shape != (self.spec.action_dim,):
            raise ValueError(f"MotorBoardProfile.send: expected action shape ({self.spec.action_dim},), "
                             f"got {action.shape}")
        command = self.board.command
        if command == "NAMED_VALUE_FLOAT":
            ms = int(time.monotonic() * 1e3) & 0xFFFFFFFF
            for name, value in zip(self.board.command_names, action, strict=True):
                self.link.mav.named_value_float_send(ms, name.encode(), float(value))
            return
        unit = self.normalise(action)
        if command == "MANUAL_CONTROL":
            axes = [0, 0, 0, 0]
            for i, v in enumerate(unit):
                axes[i] = 0 if math.isnan(v) else round(v * 1000)
            self.link.mav.manual_control_send(self.target_system, axes[0], axes[1], axes[2], axes[3], 0)
            return
        for i, v in enumerate(unit):
            self._controls[i] = float(v)
        with self._cond:
            t_s = self._t_s
        time_usec = int(t_s * 1e6) if math.isfinite(t_s) else 0  # the board time of the state acted on
        self.link.mav.set_actuator_control_target_send(time_usec, self.board.command_group, self.target_system,
                                                       self.target_component, self._controls)

    def arm(self, timeout_s: float = 2.0) -> None:
        self._command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1.0,), timeout_s, "arming")
        with self._cond:
            self._armed = True

    def disarm(self, timeout_s: float = 2.0) -> None:
        self._command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (0.0,), timeout_s, "disarming")
        with self._cond:
            self._armed = False

    def enter_control_mode(self) -> None:
        """No modes on a motor board: only checks that it is armed."""
        if not self.armed:
            raise MotorBoardError("motor board is not armed; call arm() before enter_control_mode()")

    def release(self) -> None:
        """Zero the motor and disarm. Never raises: it is what runs when everything else failed."""
        try:
            self.send(np.zeros(self.spec.action_dim, dtype=np.float32))
        except Exception as exc:
            log.warning("release: could not send zero force: %s", exc)
        try:
            self.disarm(timeout_s=0.5)
        except Exception as exc:
            log.warning("release: could not disarm the motor board: %s", exc)

    def emergency_stop(self) -> None:
        """E-stop: motor to zero and disarm at once, one try each (no waiting on a dead link)."""
        try:
            self.send(np.zeros(self.spec.action_dim, dtype=np.float32))
            self.link.mav.command_long_send(self.target_system, self.target_component,
                                            mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0, 0.0, 0, 0, 0, 0, 0, 0)
        except Exception as exc:
            log.warning("emergency stop: could not reach the motor board: %s", exc)

    def request_sim_reset(self, seed: int | None, param2: float = 0.05, param3: float = 0.0) -> None:
        """SITL only: reset the simulation (MAV_CMD_USER_1; for the cart-pole param2/param3 are the largest
        |angle| rad and |position| m of the random start, for a Gymnasium board param2 = 1 draws the start from
        the vehicle file's explore box) and wait for the first state after it.

        Seeds must be integers < 2**24 (COMMAND_LONG params are float32). The board clock keeps running
        through a reset, so the post-reset state is recognised by the episode counter."""
        if self.board.episode_index < 0:
            raise MotorBoardError(f"vehicle {self.spec.name!r}: its board reports no episode counter, so a SITL "
                                  f"reset cannot be told from older states")
        if seed is not None and not (isinstance(seed, (int, np.integer)) and 0 <= seed < _MAX_EXACT_FLOAT32_INT):
            raise ValueError(f"request_sim_reset: seed must be an integer in [0, 2**24) (it travels as float32) "
                             f"or None, got {seed!r}")
        with self._cond:
            episode_before = self._episode
        self._command(mavlink.MAV_CMD_USER_1,
                      (math.nan if seed is None else float(seed), float(param2), float(param3)),
                      2.0, "resetting the SITL (only a SITL board accepts this)")
        with self._cond:
            fresh = self._cond.wait_for(lambda: self._episode > max(episode_before, 0), 2.0)
        if not fresh:
            raise LinkTimeout(f"motor board accepted the reset but sent no state after it within 2 s on "
                              f"{self.link.config.connect}; is the DEBUG_FLOAT_ARRAY stream switched off?")

    @property
    def armed(self) -> bool:
        with self._cond:
            return self._armed

    @property
    def lockstep(self) -> bool | None:
        """True if the board said (heartbeat custom_mode bit 0) it is a lockstep SITL; None before a heartbeat."""
        with self._cond:
            return self._lockstep

    def _command(self, command: int, params: tuple[float, ...], timeout_s: float, doing: str) -> None:
        result = self.link.command_long(self.target_system, self.target_component, command, params,
                                        timeout_s=timeout_s)
        if result != mavlink.MAV_RESULT_ACCEPTED:
            raise CommandRefused(command, result, f"{doing} on motor board {self.target_system}/"
                                                  f"{self.target_component}")
        log.debug("%s accepted", command_name(command))


class MotorBoardProfile(BoardProfile):
    """The cart-pole's motor board: a board profile whose spec must carry the cart-pole's names (a spec without
    a [link] table gets cartpole.toml's)."""

    def __init__(self, link: Link, spec: VehicleSpec, config: MotorBoardConfig = MotorBoardConfig()) -> None:
        missing = [n for n in BOARD_STATE_NAMES if n not in spec.state_names]
        if missing or FORCE_NAME not in spec.action_names:
            raise ValueError(f"MotorBoardProfile: spec {spec.name!r} lacks {missing or [FORCE_NAME]}; the motor "
                             f"board reports {BOARD_STATE_NAMES} and takes {FORCE_NAME!r}")
        if spec.link is None:
            spec = VehicleSpec(spec.name, spec.state, spec.action, spec.control_period_s, CARTPOLE.link, spec.task,
                               spec.planner, spec.sim)
        super().__init__(link, spec, config)

    def request_sim_reset(self, seed: int | None, max_angle_rad: float = 0.05, max_pos_m: float = 0.0) -> None:
        """SITL only: reset the cart-pole to a random state within `max_angle_rad` of upright and `max_pos_m` of
        the track's middle."""
        super().request_sim_reset(seed, max_angle_rad, max_pos_m)
