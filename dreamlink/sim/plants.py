"""What a SITL board simulates: a plant that observes, steps with an action in its units, and resets.

The board (`dreamlink.sim.motor_board`) owns the wire, the clock and the arming; a plant owns only the
dynamics. Two plants: dreamlink's cart-pole physics, and any continuous-action Gymnasium environment used
unmodified (its observation is the state, its action the action).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import numpy as np

from dreamlink.sim.cartpole_physics import CartpoleParams, random_state, step
from dreamlink.spec import CARTPOLE, VehicleSpec

log = logging.getLogger(__name__)

DEFAULT_RESET_ANGLE_RAD = 0.05


class Plant(Protocol):
    """The dynamics behind a board. `extras()` are what the board streams after the state (reward, done)."""

    spec: VehicleSpec
    telemetry_name: str

    def observe(self) -> np.ndarray: ...

    def step(self, action: np.ndarray, dt_s: float) -> None: ...

    def reset(self, rng: np.random.Generator, param2: float, param3: float) -> bool: ...

    def extras(self) -> tuple[float, ...]: ...


class CartpolePlant:
    """dreamlink's cart-pole (`cartpole_physics`): starts like Gymnasium, resets near upright.

    Reset: param2 = largest |angle| rad (0/NaN: 0.05), param3 = largest |position| m (NaN: 0)."""

    telemetry_name = "CARTPOLE"

    def __init__(self, params: CartpoleParams, rng: np.random.Generator) -> None:
        self.spec, self.params = CARTPOLE, params
        self.state = random_state(rng, DEFAULT_RESET_ANGLE_RAD, 0.05)  # Gymnasium's start

    def observe(self) -> np.ndarray:
        return self.state

    def step(self, action: np.ndarray, dt_s: float) -> None:
        self.state = step(self.state, float(action[0]), dt_s, self.params)

    def reset(self, rng: np.random.Generator, param2: float, param3: float) -> bool:
        max_angle_rad = DEFAULT_RESET_ANGLE_RAD if math.isnan(param2) or param2 == 0 else param2
        max_pos_m = 0.0 if math.isnan(param3) else param3
        if not 0 < max_angle_rad <= math.pi or not 0 <= max_pos_m < self.params.track_limit_m:
            return False
        self.state = random_state(rng, max_angle_rad, max_pos_m)
        return True

    def extras(self) -> tuple[float, ...]:
        return ()


class GymPlant:
    """A Gymnasium environment, unmodified, stepped one control period per step.

    The environment's own reset starts every episode; the vehicle file's `[sim] start_state` (or, for a
    reset with param2 = 1, a draw from `explore_low..explore_high`) is then written to `env.unwrapped.state`,
    the internal state of Gymnasium's classic-control environments. The episode's end (terminated or
    truncated) is reported, not acted on: a board keeps stepping the unwrapped environment, as a robot's
    physics does not stop at a time limit or a goal. Streams the last reward and whether the episode has
    terminated (the car reached the flag, say) since the last reset after the state."""

    def __init__(self, spec: VehicleSpec, rng: np.random.Generator) -> None:
        if spec.sim is None:
            raise ValueError(f"vehicle {spec.name!r}: no [sim] table naming a Gymnasium environment (gym_env = ...)")
        import gymnasium

        self.spec, self.sim = spec, spec.sim
        self.telemetry_name = spec.link.array_name if spec.link is not None and spec.link.array_name else "GYM"
        try:
            self.env = gymnasium.make(self.sim.gym_env, **dict(self.sim.make_kwargs))
        except gymnasium.error.Error as exc:
            raise ValueError(f"vehicle {spec.name!r} [sim] gym_env = {self.sim.gym_env!r}: {exc}") from None
        obs_shape = self.env.observation_space.shape
        act = self.env.action_space
        if obs_shape != (spec.state_dim,) or getattr(act, "shape", None) != (spec.action_dim,):
            raise ValueError(f"vehicle {spec.name!r}: {self.sim.gym_env} observes {obs_shape} and acts "
                             f"{getattr(act, 'shape', act)}; the vehicle file describes ({spec.state_dim},) and "
                             f"({spec.action_dim},) (a continuous Box action is needed)")
        env_dt = getattr(self.env.unwrapped, "dt", None)
        if env_dt is not None and abs(float(env_dt) - spec.control_period_s) > 1e-9:
            log.warning("%s steps %.4f s; the vehicle file's control_period_s is %.4f s: each control period "
                        "advances one environment step", self.sim.gym_env, env_dt, spec.control_period_s)
        self.reward, self.terminated = 0.0, False
        self._obs = np.zeros(spec.state_dim)
        self.reset(rng, math.nan, 0.0)

    def observe(self) -> np.ndarray:
        return self._obs

    def step(self, action: np.ndarray, dt_s: float) -> None:
        obs, reward, terminated, _truncated, _ = self.env.unwrapped.step(action.astype(np.float32))
        self._obs = np.asarray(obs, dtype=np.float64)
        self.reward, self.terminated = float(reward), self.terminated or bool(terminated)

    def reset(self, rng: np.random.Generator, param2: float, param3: float) -> bool:
        """param2 = 1: start in the explore box (data collection); else the environment's start, then the
        vehicle file's start_state if it gives one."""
        explore = param2 == 1.0
        if explore and not self.sim.explore_low:
            return False
        obs, _ = self.env.reset(seed=int(rng.integers(2**31)))
        self._obs = np.asarray(obs, dtype=np.float64)
        start: Any = None
        if explore:
            start = rng.uniform(self.sim.explore_low, self.sim.explore_high)
        elif self.sim.start_state:
            start = np.asarray(self.sim.start_state, dtype=np.float64)
        if start is not None:
            self._obs = self._set_state(start)
        self.reward, self.terminated = 0.0, False
        return True

    def _set_state(self, state: np.ndarray) -> np.ndarray:
        env = self.env.unwrapped
        if not hasattr(env, "state"):
            raise ValueError(f"{self.sim.gym_env} has no `state` attribute to start from; drop start_state / "
                             f"explore_low..high from the vehicle file's [sim]")
        env.state = np.array(state, dtype=np.asarray(env.state).dtype if env.state is not None else np.float64)
        get_obs = getattr(env, "_get_obs", None)
        return np.asarray(get_obs() if get_obs is not None else env.state, dtype=np.float64)

    def extras(self) -> tuple[float, ...]:
        return (self.reward, 1.0 if self.terminated else 0.0)
