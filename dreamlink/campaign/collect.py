"""Collect transitions from a vehicle (SITL or real) through its profile, with exploratory actions.

Collection goes through the same link and profile the runtime flies with, so the data
carries the same telemetry path (units, message timing) as flight. In lockstep SITL each
command advances the simulator one control period, so a transition is exactly one step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dreamlink.campaign.excitation import ExcitationConfig, VelocityExcitation
from dreamlink.firmware_bridge.autopilot import AutopilotProfile
from dreamlink.firmware_bridge.motor_board import BoardProfile, MotorBoardProfile
from dreamlink.learning.transitions import TransitionSet
from dreamlink.sim.cartpole_physics import CartpoleParams, step
from dreamlink.spec import CARTPOLE, VehicleSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectConfig:
    transitions: int = 20000
    max_episode_steps: int = 200
    seed: int = 0
    reset_max_angle_rad: float = 0.2
    reset_max_pos_m: float = 1.0
    stop_angle_rad: float = 0.8  # past this the episode ends: far outside where we plan
    stop_pos_m: float = 2.3
    step_timeout_s: float = 2.0


class Exploration:
    """Exploratory action sequences, one style per episode: white noise, random holds, or a
    smooth Ornstein-Uhlenbeck walk; together they cover fast and slow excitation."""

    STYLES = ("white", "hold", "smooth")

    def __init__(self, spec: VehicleSpec, rng: np.random.Generator) -> None:
        self.low, self.high, self.rng = spec.action_low, spec.action_high, rng
        self.style = "white"
        self._a = np.zeros(spec.action_dim, dtype=np.float32)
        self._hold_left = 0

    def new_episode(self) -> None:
        self.style = self.STYLES[int(self.rng.integers(len(self.STYLES)))]
        self._a = self.rng.uniform(self.low, self.high).astype(np.float32) * 0.3
        self._hold_left = 0

    def next(self) -> np.ndarray:
        if self.style == "white":
            self._a = self.rng.uniform(self.low, self.high).astype(np.float32)
        elif self.style == "hold":
            if self._hold_left <= 0:
                self._a = self.rng.uniform(self.low, self.high).astype(np.float32)
                self._hold_left = int(self.rng.integers(1, 10))
            self._hold_left -= 1
        else:
            half = (self.high - self.low) / 2
            self._a = (0.85 * self._a + 0.35 * half * self.rng.standard_normal(len(half))).astype(np.float32)
        return np.clip(self._a, self.low, self.high)


def collect_cartpole(
    profile: MotorBoardProfile,
    spec: VehicleSpec,
    config: CollectConfig,
    progress: Callable[[int], None] | None = None,
) -> TransitionSet:
    """Episodes from random near-upright resets until `config.transitions` are gathered.

    Needs a lockstep SITL (resets are a SITL-only command). `progress(n_new)` is called per
    transition for a progress bar.
    """
    i_pos, i_ang = spec.state_index("cart_pos_m"), spec.state_index("pole_angle_rad")
    return collect_board(profile, spec, config, (config.reset_max_angle_rad, config.reset_max_pos_m),
                         lambda x: abs(x[i_ang]) > config.stop_angle_rad or abs(x[i_pos]) > config.stop_pos_m,
                         progress)


def collect_board(
    profile: BoardProfile,
    spec: VehicleSpec,
    config: CollectConfig,
    reset_params: tuple[float, float] = (1.0, 0.0),
    stop: Callable[[np.ndarray], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TransitionSet:
    """Episodes of exploratory actions from SITL resets (`reset_params`: MAV_CMD_USER_1's param2/param3; a
    Gymnasium board's (1, 0) starts each in the vehicle file's explore box) until `config.transitions` are
    gathered; an episode ends after `config.max_episode_steps` or where `stop(state)` says.

    Needs a lockstep SITL: one command is one step, so a transition is exactly one control period."""
    rng = np.random.default_rng(config.seed)
    explore = Exploration(spec, rng)
    S, A, N = spec.state_dim, spec.action_dim, config.transitions
    states = np.empty((N, S), np.float32)
    actions = np.empty((N, A), np.float32)
    nexts = np.empty((N, S), np.float32)
    episode = np.empty(N, np.int64)
    n, ep = 0, 0
    profile.arm()
    while n < N:
        profile.request_sim_reset(int(rng.integers(2**24)), *reset_params)  # COMMAND_LONG params are float32
        t_s, x, _ = profile.state()
        explore.new_episode()
        for _ in range(config.max_episode_steps):
            if n >= N:
                break
            a = explore.next()
            profile.send(a)
            if not profile.wait_state_after(t_s + spec.control_period_s * 0.5, config.step_timeout_s):
                raise TimeoutError(f"collect: no state after t={t_s:.3f} s; is the SITL in lockstep and alive?")
            t_next, x_next, _ = profile.state()
            states[n], actions[n], nexts[n], episode[n] = x, a, x_next, ep
            n += 1
            if progress:
                progress(1)
            t_s, x = t_next, x_next
            if stop is not None and stop(x):
                break
        ep += 1
    profile.release()
    log.info("collected %d transitions in %d episodes", n, ep)
    return TransitionSet(
        spec=spec,
        state=states,
        action=actions,
        next_state=nexts,
        episode=episode,
        meta={"source": "sitl-lockstep", "seed": config.seed, "episodes": ep, "config": config.__dict__},
    )


@dataclass(frozen=True)
class QuadCollectConfig:
    seconds: float = 60.0  # of excitation, after take-off
    takeoff_altitude_m: float = 5.0
    seed: int = 0
    step_timeout_s: float = 5.0
    excitation: ExcitationConfig = field(default_factory=ExcitationConfig)


def collect_quad(
    profile: AutopilotProfile,
    spec: VehicleSpec,
    config: QuadCollectConfig,
    progress: Callable[[int], None] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> TransitionSet:
    """One flight: control mode, arm, take off, excite with velocity setpoints, land.

    Needs a lockstep SITL (one setpoint = one control period, so a transition is exactly one
    step); against a real-time vehicle use the .tlog path of calibration instead.
    """
    rng = np.random.default_rng(config.seed)
    excite = VelocityExcitation(config.excitation, rng)
    N = round(config.seconds / spec.control_period_s)
    S, A = spec.state_dim, spec.action_dim
    states, actions, nexts = np.empty((N, S), np.float32), np.empty((N, A), np.float32), np.empty((N, S), np.float32)
    pos = [spec.state_index(n) for n in ("pos_n_m", "pos_e_m", "pos_d_m")]
    profile.enter_control_mode()
    profile.arm()
    profile.takeoff(config.takeoff_altitude_m)
    t_s, x, _ = profile.state()
    t0 = t_s
    n = 0
    try:
        for n in range(N):
            a = excite.next(x[pos].astype(np.float64), t_s - t0)
            profile.send(a)
            if not profile.wait_state_after(t_s + spec.control_period_s * 0.5, config.step_timeout_s):
                raise TimeoutError(f"collect: no state after t={t_s:.3f} s; is the SITL in lockstep and alive?")
            t_next, x_next, _ = profile.state()
            states[n], actions[n], nexts[n] = x, a, x_next
            if progress:
                progress(1)
            t_s, x = t_next, x_next
        n = N
    finally:
        profile.land()
    log.info("collected %d quad transitions (seed %d)", n, config.seed)
    return TransitionSet(
        spec=spec,
        state=states[:n],
        action=actions[:n],
        next_state=nexts[:n],
        episode=np.zeros(n, np.int64),
        meta={"source": "sitl-lockstep", "seed": config.seed, **(meta or {})},
    )


def cartpole_random_force_transitions(episodes: int, length: int, seed: int) -> TransitionSet:
    """Random-force episodes from near-upright starts, stepped with the SITL's own physics (no process, no
    sockets): data for benchmarks and tests that need a learnable model in seconds. Each force is held 5 periods."""
    rng = np.random.default_rng(seed)
    params = CartpoleParams()
    dt = CARTPOLE.control_period_s
    x = np.stack([rng.uniform(-1.0, 1.0, episodes), rng.uniform(-0.5, 0.5, episodes),
                  rng.uniform(-0.3, 0.3, episodes), rng.uniform(-1.0, 1.0, episodes)], axis=-1)
    states, actions, nexts, ids = [], [], [], []
    force = rng.uniform(-10.0, 10.0, episodes)
    for t in range(length):
        if t % 5 == 0:  # hold each random force for 5 periods: richer motions than white noise
            force = rng.uniform(-10.0, 10.0, episodes)
        nxt = step(x, force, dt, params)
        states.append(x)
        actions.append(force[:, None])
        nexts.append(nxt)
        ids.append(np.arange(episodes))
        x = nxt
    order = np.argsort(np.concatenate(ids), kind="stable")  # rows of one episode together, in time order
    return TransitionSet(CARTPOLE, np.concatenate(states)[order], np.concatenate(actions)[order],
                         np.concatenate(nexts)[order], np.concatenate(ids)[order])
