"""Cart-pole rigid-body physics: Gymnasium's CartPole equations, continuous force, finite track.

The equations are those of Gymnasium's `CartPoleEnv` (Barto, Sutton & Anderson 1983 with the
Florian 2007 correction left out, as Gymnasium does), so a model trained here transfers to the
well-known benchmark. Differences from Gymnasium, each deliberate:

- the force is continuous in [-max_force_n, max_force_n] (Gymnasium: +/-10 N bang-bang);
- one control period is integrated in `params.substeps` semi-implicit Euler substeps (Gymnasium:
  one explicit Euler step of 20 ms), which keeps energy bounded over long free swings;
- the track has end stops at |x| = track_limit_m: the cart position is clamped there and its
  velocity into the stop zeroed (an inelastic stop; the pole's reaction to the impact is
  neglected). The pole swings freely through any angle.

State vector order is `dreamlink.spec.CARTPOLE.state`:
[cart_pos_m, cart_vel_mps, pole_angle_rad, pole_rate_radps]; angle 0 is upright, positive angle
leans toward +x, and a positive force pushes the cart toward +x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STATE_DIM = 4


@dataclass(frozen=True)
class CartpoleParams:
    """Physical constants of the cart-pole (Gymnasium's values by default)."""

    gravity_mps2: float = 9.8
    cart_mass_kg: float = 1.0
    pole_mass_kg: float = 0.1
    pole_half_length_m: float = 0.5
    max_force_n: float = 10.0
    track_limit_m: float = 2.4
    substeps: int = 5

    def __post_init__(self) -> None:
        for name in ("gravity_mps2", "cart_mass_kg", "pole_mass_kg", "pole_half_length_m", "max_force_n",
                     "track_limit_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"CartpoleParams.{name}: expected a finite number > 0, got {value!r}")
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"CartpoleParams.substeps: expected an integer >= 1, got {self.substeps!r}")


def step(state: np.ndarray, force_n: float | np.ndarray, dt_s: float, params: CartpoleParams) -> np.ndarray:
    """Advance the cart-pole by `dt_s` with a constant force; returns a new float64 state.

    state [..., 4] (batches allowed), force_n scalar or [...]; the force is clipped to
    +/-params.max_force_n (motor saturation). The input is not modified.
    """
    s = np.asarray(state, dtype=np.float64)
    if s.shape[-1:] != (STATE_DIM,):
        raise ValueError(f"cartpole state: expected shape [..., {STATE_DIM}], got {s.shape}")
    if not dt_s > 0:
        raise ValueError(f"cartpole step: expected dt_s > 0, got {dt_s!r}")
    force = np.clip(np.asarray(force_n, dtype=np.float64), -params.max_force_n, params.max_force_n)
    x, x_dot, theta, theta_dot = s[..., 0], s[..., 1], s[..., 2], s[..., 3]

    total_mass = params.cart_mass_kg + params.pole_mass_kg
    polemass_length = params.pole_mass_kg * params.pole_half_length_m
    limit = params.track_limit_m
    tau = dt_s / params.substeps
    for _ in range(params.substeps):
        sin_t, cos_t = np.sin(theta), np.cos(theta)
        temp = (force + polemass_length * theta_dot**2 * sin_t) / total_mass
        theta_acc = (params.gravity_mps2 * sin_t - cos_t * temp) / (
            params.pole_half_length_m * (4.0 / 3.0 - params.pole_mass_kg * cos_t**2 / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos_t / total_mass
        # Semi-implicit Euler: velocities first, then positions with the new velocities.
        x_dot = x_dot + tau * x_acc
        x = x + tau * x_dot
        theta_dot = theta_dot + tau * theta_acc
        theta = theta + tau * theta_dot
        # End stops: clamp the position, kill only the velocity that points into the stop so the
        # cart can be driven away from it again.
        x_dot = np.where(((x >= limit) & (x_dot > 0)) | ((x <= -limit) & (x_dot < 0)), 0.0, x_dot)
        x = np.clip(x, -limit, limit)
    return np.stack(np.broadcast_arrays(x, x_dot, theta, theta_dot), axis=-1)


def random_state(rng: np.random.Generator, max_angle_rad: float, max_pos_m: float,
                 max_rate: float = 0.05) -> np.ndarray:
    """A near-upright start: angle in +/-max_angle_rad, position in +/-max_pos_m, cart velocity and
    pole rate in +/-max_rate (Gymnasium draws all four in +/-0.05). Returns float64 [4]."""
    lows = np.array([-max_pos_m, -max_rate, -max_angle_rad, -max_rate])
    return rng.uniform(lows, -lows)
