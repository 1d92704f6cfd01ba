"""Cart-pole motor board SITL: a separate process that speaks MAVLink 2 over UDP like the real board.

Protocol (the real motor board firmware implements the same; `dreamlink.firmware_bridge.motor_board`
is the client side):

- Identity: sysid 1, compid 1 (MAV_COMP_ID_AUTOPILOT1). HEARTBEAT at 1 Hz: type MAV_TYPE_GENERIC,
  autopilot MAV_AUTOPILOT_GENERIC, base_mode = MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, plus
  MAV_MODE_FLAG_SAFETY_ARMED while armed; system_status MAV_STATE_STANDBY (disarmed) or
  MAV_STATE_ACTIVE (armed); custom_mode bit 0 set when the SITL runs in lockstep.
- Telemetry: DEBUG_FLOAT_ARRAY (id 350), name "CARTPOLE", array_id 0, time_usec = board clock (board
  time since start, µs), data[0:4] = [cart_pos_m, cart_vel_mps, pole_angle_rad, pole_rate_radps]
  (order of `dreamlink.spec.CARTPOLE.state`), data[4] = force applied during the last physics period
  (N), data[5] = 1.0 if armed else 0.0, data[6] = episode (resets since start, see MAV_CMD_USER_1).
  Streamed at the control rate (50 Hz) by default; MAV_CMD_SET_MESSAGE_INTERVAL param1=350,
  param2=interval µs (-1 stops, 0 restores the default; under 1 ms is raised to 1 ms) -> ACK
  ACCEPTED (a non-finite interval -> DENIED); any other message id -> ACK DENIED (the command is
  supported, that message is not streamable). In lockstep the interval is stored but telemetry follows the steps.
- SET_ACTUATOR_CONTROL_TARGET (id 139), group_mlx 0: controls[0] = normalised force in [-1, 1],
  force_n = controls[0] * max_force_n (10 N). Out-of-range values are clipped, NaN becomes 0; both
  are counted. Applied only while armed. Real time: no target for 0.2 s of board time -> force 0
  (logged once per lapse, counted). Other groups are ignored (counted).
- COMMAND_LONG: MAV_CMD_COMPONENT_ARM_DISARM (param1 1 = arm, 0 = disarm) -> ACCEPTED;
  MAV_CMD_USER_1 (31010, SITL only) resets the cart-pole to a random near-upright state:
  param1 = seed (NaN = continue the board's generator; else an integer >= 0), param2 = max |angle|
  rad (0/NaN -> 0.05), param3 = max |position| m (NaN -> 0); cart velocity and pole rate are drawn
  in +/-0.05 like Gymnasium; the episode counter in data[6] goes up by one; the board clock keeps
  running -> ACCEPTED, or DENIED for out-of-range parameters. Unknown commands (and any
  COMMAND_INT) -> MAV_RESULT_UNSUPPORTED. Commands are answered only when target_system /
  target_component match the board or are 0 (broadcast).
- Fixture: the pole rests upright-ish in its start state until the board is first armed (as on a
  real rig, where the pole is held until control starts); `--no-hold` lets it fall from start.
- Timing. Real time: physics advances one control period per period of the monotonic wall clock,
  telemetry goes out at the stream interval, the newest command is held. Lockstep (`--lockstep`):
  nothing advances until a SET_ACTUATOR_CONTROL_TARGET arrives; each one advances exactly one
  control period (0.02 s of board time) with its force (zero while disarmed: the target is still the
  clock tick) and is answered by one DEBUG_FLOAT_ARRAY.
  The board also sends its current state right after ARM_DISARM and after a reset, and once a wall
  second with the heartbeat, so a client can start. The command timeout does not apply.
- Transport: one UDP socket; everything is sent to `--out` (like PX4 SITL sending to a companion's
  port 14540) and whatever arrives on that socket is accepted. A datagram is a whole number of
  frames: garbage, CRC failures and bytes left over at a datagram's end are dropped and counted,
  with a rate-limited warning; never fatal.
- Signing (`--signing-key-file KEY`, a 32-byte key only its owner can read, as for the Link): the
  board signs everything it sends (link id 0, timestamp never behind the wall clock) and acts only
  on frames whose MAVLink 2 signature is good and newer than their stream's last one; unsigned
  frames (except RADIO_STATUS), wrong signatures and replays are dropped and counted
  (`rx_unsigned_rejected`, `rx_bad_signature`, `rx_replayed` in the counters logged at exit).
  Same rule as the Link (`dreamlink.firmware_bridge.admission`): that is the protocol, both ends.

This module is the board itself, transport-free (`MotorBoard`: feed it datagrams, advance it on a clock);
`dreamlink.sim.motor_board_process` serves it on its UDP socket: `python -m dreamlink.sim cartpole|gym ...`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.admission import (
    AdmissionCounts,
)
from dreamlink.firmware_bridge.security import (
    SigningKey,
)
from dreamlink.sim.cartpole_physics import CartpoleParams
from dreamlink.sim.mavlink_udp import SitlEnd, mavlink
from dreamlink.sim.plants import CartpolePlant, GymPlant, Plant
from dreamlink.sim.udp_process import check_link_fields
from dreamlink.spec import SimSpec, load_vehicle

log = logging.getLogger(__name__)

BOARD_SYSTEM_ID = 1
BOARD_COMPONENT_ID = mavlink.MAV_COMP_ID_AUTOPILOT1
TELEMETRY_MSG_ID = mavlink.MAVLINK_MSG_ID_DEBUG_FLOAT_ARRAY
CUSTOM_MODE_LOCKSTEP = 1
MIN_STREAM_INTERVAL_US = 1000
_DEBUG_ARRAY_LEN = 58


@dataclass(frozen=True)
class BoardConfig:
    """How one SITL motor board runs. `rate_hz` is the control (physics) rate; telemetry defaults to it."""

    out_host: str = "127.0.0.1"
    out_port: int = 14540
    bind_host: str = ""  # "" = 127.0.0.1 when out_host is loopback, else all interfaces
    bind_port: int = 0
    lockstep: bool = False
    seed: int = 0
    rate_hz: float = 50.0
    sensor_noise_std: float = 0.0  # added to the four telemetry state values, in their own units
    command_timeout_s: float = 0.2
    # Like a real rig, the pole rests in its fixture until the board is first armed, so a
    # real-time SITL started seconds before the runtime connects still starts near upright.
    hold_until_armed: bool = True
    signing_key_file: str = ""  # "" = no signing (the path only: the key never sits in a config or its repr)
    physics: CartpoleParams = field(default_factory=CartpoleParams)
    vehicle_file: str = ""  # "": the cart-pole; else a vehicle file whose [sim] names a Gymnasium environment
    gym_env: str = ""  # overrides the vehicle file's [sim] gym_env

    def __post_init__(self) -> None:
        check_link_fields("BoardConfig", self.out_port, self.bind_port, self.seed)
        if not (math.isfinite(self.rate_hz) and 1.0 <= self.rate_hz <= 1000.0):
            raise ValueError(f"BoardConfig.rate_hz: expected 1..1000 Hz, got {self.rate_hz!r}")
        if not (math.isfinite(self.sensor_noise_std) and self.sensor_noise_std >= 0):
            raise ValueError(f"BoardConfig.sensor_noise_std: expected >= 0, got {self.sensor_noise_std!r}")
        if not (math.isfinite(self.command_timeout_s) and self.command_timeout_s > 0):
            raise ValueError(f"BoardConfig.command_timeout_s: expected > 0 s, got {self.command_timeout_s!r}")

    @property
    def period_us(self) -> int:
        return round(1e6 / self.rate_hz)


@dataclass
class BoardCounters(AdmissionCounts):
    """What the board counted since start (logged at exit): the admission's counts, then the board's own."""

    steps: int = 0
    tx_frames: int = 0
    tx_errors: int = 0
    commands_nan: int = 0
    commands_clipped: int = 0
    commands_ignored: int = 0
    command_timeouts: int = 0
    wall_clock_skips: int = 0


class MotorBoard:
    """The board's behaviour, transport-free: feed it datagrams, call `advance()` on the clock.

    `write(frame_bytes)` sends one packed frame. Not thread-safe: one loop owns it. The dynamics are the
    `plant`'s (the cart-pole unless given); the board keeps the wire, the clock, arming and the command hold.
    """

    def __init__(self, config: BoardConfig, write: Callable[[bytes], None],
                 counters: BoardCounters | None = None, signing_key: SigningKey | None = None,
                 wall_clock: Callable[[], float] = time.time, plant: Plant | None = None) -> None:
        self.config = config
        self.counters = counters if counters is not None else BoardCounters()
        self._write = write
        self._end = SitlEnd(self._send_frame, BOARD_SYSTEM_ID, BOARD_COMPONENT_ID, self.counters, log, signing_key,
                            wall_clock)
        self._mav = self._end.mav
        if self._end.auth is not None:
            self._mav.send = self._end.send_signed_now
        self._rng = np.random.default_rng(config.seed)
        self._noise_rng = np.random.default_rng([config.seed, 1])
        self.plant: Plant = plant if plant is not None else CartpolePlant(config.physics, self._rng)
        spec = self.plant.spec
        self._mid = ((spec.action_high + spec.action_low) / 2).astype(np.float64)
        self._half = ((spec.action_high - spec.action_low) / 2).astype(np.float64)
        if plant is None:  # the cart-pole's force scale is its physics' (a --param may change it)
            self._mid, self._half = np.zeros(1), np.array([config.physics.max_force_n])
        self._state_dim, self._action_dim = spec.state_dim, spec.action_dim
        self.time_us = 0
        self.armed = False
        self._released = not config.hold_until_armed
        self.episode = 0  # resets since start: lets a client tell post-reset states from older ones
        self.applied = np.zeros(self._action_dim)  # the action applied during the last period, its units
        self._command = np.zeros(self._action_dim)  # normalised, held until replaced, zeroed on timeout/disarm
        self._last_command_us = 0
        self._timed_out = False
        self.stream_interval_us: int | None = config.period_us
        self._telemetry = [0.0] * _DEBUG_ARRAY_LEN

    # -- clock ---------------------------------------------------------------------------------

    @property
    def state(self) -> np.ndarray:
        return self.plant.observe()

    @property
    def force_n(self) -> float:
        """The cart-pole's applied force (the first action component)."""
        return float(self.applied[0])

    def advance(self) -> None:
        """Advance the physics by one control period with the action the board applies now."""
        applied = np.zeros(self._action_dim)
        if self.armed:
            lapse_us = self.time_us - self._last_command_us
            if not self.config.lockstep and lapse_us > self.config.command_timeout_s * 1e6:
                if not self._timed_out:
                    self._timed_out = True
                    self.counters.command_timeouts += 1
                    log.warning("no actuator target for %.3f s of board time: action set to 0", lapse_us / 1e6)
            else:
                applied = self._command * self._half + self._mid
        self.applied = applied
        if self._released:
            self.plant.step(applied, self.config.period_us / 1e6)
        self.time_us += self.config.period_us
        self.counters.steps += 1

    # -- outgoing ------------------------------------------------------------------------------

    def send_heartbeat(self) -> None:
        base_mode = mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
        if self.armed:
            base_mode |= mavlink.MAV_MODE_FLAG_SAFETY_ARMED
        status = mavlink.MAV_STATE_ACTIVE if self.armed else mavlink.MAV_STATE_STANDBY
        custom_mode = CUSTOM_MODE_LOCKSTEP if self.config.lockstep else 0
        self._mav.heartbeat_send(mavlink.MAV_TYPE_GENERIC, mavlink.MAV_AUTOPILOT_GENERIC, base_mode, custom_mode,
                                 status)

    def send_state(self) -> None:
        """data[0:S] state, data[S:S+A] applied action, then armed, episode and the plant's extras."""
        data = self._telemetry
        S, A = self._state_dim, self._action_dim
        noise = self.config.sensor_noise_std
        state = self.plant.observe()
        offsets = self._noise_rng.normal(0.0, noise, S) if noise > 0 else np.zeros(S)
        for i in range(S):
            data[i] = float(state[i] + offsets[i])
        for i in range(A):
            data[S + i] = float(self.applied[i])
        data[S + A] = 1.0 if self.armed else 0.0
        data[S + A + 1] = float(self.episode)
        for i, v in enumerate(self.plant.extras()):
            data[S + A + 2 + i] = float(v)
        self._mav.debug_float_array_send(self.time_us, self.plant.telemetry_name.encode(), 0, data)

    def _send_frame(self, frame: bytes) -> None:
        self.counters.tx_frames += 1
        self._write(frame)

    # -- incoming ------------------------------------------------------------------------------

    def receive(self, datagram: bytes) -> None:
        """Handle one UDP datagram (a whole number of MAVLink frames; anything else is dropped)."""
        for admitted in self._end.admission.admit(datagram):
            self._dispatch(admitted.msg.get_type(), admitted.msg)

    def _for_me(self, target_system: int, target_component: int) -> bool:
        return target_system in (0, BOARD_SYSTEM_ID) and target_component in (0, BOARD_COMPONENT_ID)

    def _dispatch(self, msg_type: str, msg: Any) -> None:
        if msg_type == "SET_ACTUATOR_CONTROL_TARGET":
            if self._for_me(msg.target_system, msg.target_component):
                self._on_actuator_target(msg)
        elif msg_type == "MANUAL_CONTROL":
            if msg.target in (0, BOARD_SYSTEM_ID):
                self._on_normalised([msg.x / 1000.0, msg.y / 1000.0, msg.z / 1000.0, msg.r / 1000.0])
        elif msg_type == "COMMAND_LONG":
            if self._for_me(msg.target_system, msg.target_component):
                result = self._on_command(msg.command, (msg.param1, msg.param2, msg.param3))
                self._mav.command_ack_send(msg.command, result, 0, 0, msg.get_srcSystem(), msg.get_srcComponent())
                if result == mavlink.MAV_RESULT_ACCEPTED and self.config.lockstep and msg.command in (
                        mavlink.MAV_CMD_COMPONENT_ARM_DISARM, mavlink.MAV_CMD_USER_1):
                    self.send_state()
        elif msg_type == "COMMAND_INT":
            if self._for_me(msg.target_system, msg.target_component):
                self._mav.command_ack_send(msg.command, mavlink.MAV_RESULT_UNSUPPORTED, 0, 0, msg.get_srcSystem(),
                                           msg.get_srcComponent())

    def _on_actuator_target(self, msg: Any) -> None:
        if msg.group_mlx != 0:
            self.counters.commands_ignored += 1
            return
        self._on_normalised(msg.controls)

    def _on_normalised(self, controls: Sequence[float]) -> None:
        """The first A controls, each in [-1, 1] (NaN: 0, outside: clipped; both counted)."""
        for i in range(self._action_dim):
            value = float(controls[i])
            if math.isnan(value):
                self.counters.commands_nan += 1
                value = 0.0
            elif not -1.0 <= value <= 1.0:
                self.counters.commands_clipped += 1
                value = min(1.0, max(-1.0, value))
            self._command[i] = value
        self._last_command_us = self.time_us
        if self._timed_out:
            self._timed_out = False
            log.info("actuator targets resumed")
        if self.config.lockstep:
            self.advance()
            self.send_state()

    def _on_command(self, command: int, params: Sequence[float]) -> int:
        if command == mavlink.MAV_CMD_COMPONENT_ARM_DISARM:
            if params[0] not in (0.0, 1.0):
                return int(mavlink.MAV_RESULT_DENIED)
            self.armed = params[0] == 1.0
            self._released = self._released or self.armed
            self._command[:], self.applied[:] = 0.0, 0.0
            self._last_command_us, self._timed_out = self.time_us, False
            log.info("%s at board time %.3f s", "armed" if self.armed else "disarmed", self.time_us / 1e6)
            return int(mavlink.MAV_RESULT_ACCEPTED)
        if command == mavlink.MAV_CMD_SET_MESSAGE_INTERVAL:
            return self._set_interval(params[0], params[1])
        if command == mavlink.MAV_CMD_USER_1:
            return self._reset(params[0], params[1], params[2])
        return int(mavlink.MAV_RESULT_UNSUPPORTED)

    def _set_interval(self, msg_id: float, interval_us: float) -> int:
        if msg_id != TELEMETRY_MSG_ID or not math.isfinite(interval_us) or interval_us < -1:  # inf: found by fuzzing
            return int(mavlink.MAV_RESULT_DENIED)
        if interval_us == -1:
            self.stream_interval_us = None
        elif interval_us == 0:
            self.stream_interval_us = self.config.period_us
        else:
            self.stream_interval_us = max(MIN_STREAM_INTERVAL_US, round(interval_us))
        return int(mavlink.MAV_RESULT_ACCEPTED)

    def _reset(self, seed: float, param2: float, param3: float) -> int:
        seed_ok = math.isnan(seed) or (math.isfinite(seed) and seed >= 0 and seed == int(seed))
        if not seed_ok:
            return int(mavlink.MAV_RESULT_DENIED)
        rng = np.random.default_rng(int(seed)) if not math.isnan(seed) else self._rng
        if not self.plant.reset(rng, param2, param3):
            return int(mavlink.MAV_RESULT_DENIED)
        self._rng = rng
        self.episode += 1
        self._command[:], self.applied[:] = 0.0, 0.0
        self._last_command_us, self._timed_out = self.time_us, False
        log.info("reset to %s at board time %.3f s", np.array2string(self.state, precision=4), self.time_us / 1e6)
        return int(mavlink.MAV_RESULT_ACCEPTED)


def make_plant(config: BoardConfig) -> Plant | None:
    """The plant a board config names: a Gymnasium environment from its vehicle file, else None (the cart-pole)."""
    if not config.vehicle_file:
        return None
    spec = load_vehicle(config.vehicle_file)
    if config.gym_env:
        sim = spec.sim or SimSpec(config.gym_env)
        spec = dataclasses.replace(spec, sim=dataclasses.replace(sim, gym_env=config.gym_env))
    return GymPlant(spec, np.random.default_rng(config.seed))
