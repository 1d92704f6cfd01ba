"""Motor-board vehicle profile: cart-pole state from DEBUG_FLOAT_ARRAY, force out as an actuator target.

The board's protocol (the SITL in `dreamlink.sim.motor_board` and the firmware implement it):
HEARTBEAT from sysid 1 / compid 1 (SAFETY_ARMED flag in base_mode; custom_mode bit 0 = lockstep
SITL); telemetry DEBUG_FLOAT_ARRAY name "CARTPOLE", array_id 0, time_usec = board clock (µs),
data[0:4] = [cart_pos_m, cart_vel_mps, pole_angle_rad, pole_rate_radps], data[4] = applied force N,
data[5] = armed, data[6] = episode (SITL resets so far); commands SET_ACTUATOR_CONTROL_TARGET
group 0, controls[0] = force / max_force_n in [-1, 1] (the board holds it, and zeroes it after
0.2 s without a new one); COMMAND_LONG ARM_DISARM, SET_MESSAGE_INTERVAL(350, µs), and
MAV_CMD_USER_1 (SITL-only reset).

The motor board has no flight modes: `enter_control_mode()` only checks it is armed.
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
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

TELEMETRY_NAME = "CARTPOLE"
BOARD_STATE_NAMES = ("cart_pos_m", "cart_vel_mps", "pole_angle_rad", "pole_rate_radps")  # data[0:4] order
FORCE_NAME = "cart_force_n"
CUSTOM_MODE_LOCKSTEP = 1
_BOARD_TIME_TOLERANCE_S = 1e-6  # board time is whole µs; callers compute targets in float seconds
_MAX_EXACT_FLOAT32_INT = 2**24  # COMMAND_LONG params are float32


class MotorBoardError(RuntimeError):
    """The motor board is not in a state for the requested action; the message says what to do."""


@dataclass(frozen=True)
class MotorBoardConfig:
    target_system: int = 1
    target_component: int = 1
    stream_rate_hz: float = 50.0
    max_force_n: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.target_system <= 255:
            raise ValueError(f"MotorBoardConfig.target_system: expected 0..255, got {self.target_system!r}")
        if not 0 <= self.target_component <= 255:
            raise ValueError(f"MotorBoardConfig.target_component: expected 0..255, got {self.target_component!r}")
        if not (math.isfinite(self.stream_rate_hz) and 0 < self.stream_rate_hz <= 1000):
            raise ValueError(f"MotorBoardConfig.stream_rate_hz: expected (0, 1000] Hz, got {self.stream_rate_hz!r}")
        if not (math.isfinite(self.max_force_n) and self.max_force_n > 0):
            raise ValueError(f"MotorBoardConfig.max_force_n: expected > 0 N, got {self.max_force_n!r}")


class MotorBoardProfile:
    """The runtime's view of a cart-pole motor board: `state()` in, `send(action)` out."""

    def __init__(self, link: Link, spec: VehicleSpec, config: MotorBoardConfig = MotorBoardConfig()) -> None:
        missing = [n for n in BOARD_STATE_NAMES if n not in spec.state_names]
        if missing or FORCE_NAME not in spec.action_names:
            raise ValueError(f"MotorBoardProfile: spec {spec.name!r} lacks {missing or [FORCE_NAME]}; the motor "
                             f"board reports {BOARD_STATE_NAMES} and takes {FORCE_NAME!r}")
        self.link, self.spec, self.config = link, spec, config
        self._state_index = tuple(spec.state_index(n) for n in BOARD_STATE_NAMES)
        self._force_index = spec.action_index(FORCE_NAME)
        self._cond = threading.Condition()
        self._x = np.full(spec.state_dim, np.nan, dtype=np.float32)  # filled in place by the receive thread
        self._t_s = -math.inf
        self._recv_s = -math.inf
        self._force_n = math.nan
        self._armed = False
        self._episode = -1
        self._lockstep: bool | None = None
        self._controls = [0.0] * 8
        link.subscribe("DEBUG_FLOAT_ARRAY", self._on_state)
        link.subscribe("HEARTBEAT", self._on_heartbeat)

    # -- telemetry (receive thread) ------------------------------------------------------------

    def _from_board(self, msg: Any) -> bool:
        return ((self.config.target_system == 0 or msg.get_srcSystem() == self.config.target_system)
                and (self.config.target_component == 0 or msg.get_srcComponent() == self.config.target_component))

    def _on_state(self, msg: Any, recv_s: float) -> None:
        if msg.array_id != 0 or msg.name != TELEMETRY_NAME or not self._from_board(msg):
            return
        data = msg.data
        with self._cond:
            for i, j in enumerate(self._state_index):
                self._x[j] = data[i]
            self._t_s = msg.time_usec / 1e6
            self._recv_s = recv_s
            self._force_n = data[4]
            self._armed = data[5] > 0.5
            self._episode = int(data[6])
            self._cond.notify_all()

    def _on_heartbeat(self, msg: Any, recv_s: float) -> None:
        if not self._from_board(msg):
            return
        with self._cond:
            self._armed = bool(msg.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED)
            self._lockstep = bool(msg.custom_mode & CUSTOM_MODE_LOCKSTEP)

    # -- profile contract ----------------------------------------------------------------------

    def connect(self, timeout_s: float = 5.0) -> None:
        """Wait for the board's HEARTBEAT, then ask for the state stream at `stream_rate_hz`."""
        seen = self.link.latest("HEARTBEAT")
        if seen is None or not self._from_board(seen[0]) or time.monotonic() - seen[1] > 1.5:
            heartbeat = self.link.wait_for("HEARTBEAT", timeout_s, self._from_board)
            if heartbeat is None:
                raise LinkTimeout(f"no HEARTBEAT from motor board {self.config.target_system}/"
                                  f"{self.config.target_component} on {self.link.config.connect} within "
                                  f"{timeout_s:.1f} s; is the board (or `dreamlink sitl cartpole`) running and "
                                  f"sending to this port?")
        interval_us = 1e6 / self.config.stream_rate_hz
        self._command(mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, (mavlink.MAVLINK_MSG_ID_DEBUG_FLOAT_ARRAY, interval_us),
                      2.0, "requesting the DEBUG_FLOAT_ARRAY stream")
        log.info("motor board %d/%d connected on %s, state stream at %.0f Hz", self.config.target_system,
                 self.config.target_component, self.link.config.connect, self.config.stream_rate_hz)

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

    def send(self, action: np.ndarray) -> None:
        """action [A] in spec units; the force is sent as controls[0] = force / max_force_n, clipped to
        [-1, 1]. NaN is passed on (the board applies 0 and counts it); the shield should stop it first."""
        if action.shape != (self.spec.action_dim,):
            raise ValueError(f"MotorBoardProfile.send: expected action shape ({self.spec.action_dim},), "
                             f"got {action.shape}")
        value = float(action[self._force_index]) / self.config.max_force_n
        self._controls[0] = min(1.0, max(-1.0, value)) if not math.isnan(value) else value
        with self._cond:
            t_s = self._t_s
        time_usec = int(t_s * 1e6) if math.isfinite(t_s) else 0  # the board time of the state acted on
        self.link.mav.set_actuator_control_target_send(time_usec, 0, self.config.target_system,
                                                       self.config.target_component, self._controls)

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
            self.link.mav.command_long_send(self.config.target_system, self.config.target_component,
                                            mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0, 0.0, 0, 0, 0, 0, 0, 0)
        except Exception as exc:
            log.warning("emergency stop: could not reach the motor board: %s", exc)

    def request_sim_reset(self, seed: int | None, max_angle_rad: float = 0.05, max_pos_m: float = 0.0) -> None:
        """SITL only: reset the cart-pole near upright (MAV_CMD_USER_1) and wait for the first state after it.

        Seeds must be integers < 2**24 (COMMAND_LONG params are float32). The board clock keeps running
        through a reset, so the post-reset state is recognised by the episode counter (data[6])."""
        if seed is not None and not (isinstance(seed, (int, np.integer)) and 0 <= seed < _MAX_EXACT_FLOAT32_INT):
            raise ValueError(f"request_sim_reset: seed must be an integer in [0, 2**24) (it travels as float32) "
                             f"or None, got {seed!r}")
        with self._cond:
            episode_before = self._episode
        self._command(mavlink.MAV_CMD_USER_1,
                      (math.nan if seed is None else float(seed), float(max_angle_rad), float(max_pos_m)),
                      2.0, "resetting the SITL cart-pole (only a SITL board accepts this)")
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
        result = self.link.command_long(self.config.target_system, self.config.target_component, command, params,
                                        timeout_s=timeout_s)
        if result != mavlink.MAV_RESULT_ACCEPTED:
            raise CommandRefused(command, result, f"{doing} on motor board {self.config.target_system}/"
                                                  f"{self.config.target_component}")
        log.debug("%s accepted", command_name(command))
