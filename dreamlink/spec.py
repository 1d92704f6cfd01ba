"""The one vocabulary: names, units and limits of a vehicle's state and action vectors.

Every other box (learning, export, bundle, runtime, firmware_bridge, sim) indexes
state and action vectors through a `VehicleSpec`, never through magic numbers, and
the spec travels inside every bundle so a model loaded without its training code is
still self-describing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class SpecError(ValueError):
    """A vehicle spec (usually from a manifest) is malformed; the message names the field."""


@dataclass(frozen=True)
class Component:
    """One scalar of a state or action vector: its name (unit suffix in the name), unit and limits."""

    name: str
    unit: str
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "low": self.low, "high": self.high}

    @staticmethod
    def from_dict(d: Any, where: str) -> Component:
        if not isinstance(d, dict):
            raise SpecError(f"{where}: expected an object with name, unit, low, high; got {type(d).__name__}")
        for key, kind in (("name", str), ("unit", str), ("low", (int, float)), ("high", (int, float))):
            if key not in d:
                raise SpecError(f"{where}.{key}: missing (expected {kind})")
            if not isinstance(d[key], kind) or isinstance(d[key], bool):
                raise SpecError(f"{where}.{key}: expected {kind}, got {d[key]!r}")
        low, high = float(d["low"]), float(d["high"])
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise SpecError(f"{where}: expected finite low < high, got low={low}, high={high}")
        return Component(d["name"], d["unit"], low, high)


@dataclass(frozen=True)
class VehicleSpec:
    """State and action layout of one vehicle, and its control period.

    `state` limits are the envelope the vehicle is expected to stay in (used for
    normalising error figures and for the "still balanced / inside the fence" checks);
    `action` limits are hard: the shield clips every command to them.
    """

    name: str
    state: tuple[Component, ...]
    action: tuple[Component, ...]
    control_period_s: float

    @property
    def state_dim(self) -> int:
        return len(self.state)

    @property
    def action_dim(self) -> int:
        return len(self.action)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.state)

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.action)

    @property
    def action_low(self) -> np.ndarray:
        return np.array([c.low for c in self.action], dtype=np.float32)

    @property
    def action_high(self) -> np.ndarray:
        return np.array([c.high for c in self.action], dtype=np.float32)

    @property
    def state_low(self) -> np.ndarray:
        return np.array([c.low for c in self.state], dtype=np.float32)

    @property
    def state_high(self) -> np.ndarray:
        return np.array([c.high for c in self.state], dtype=np.float32)

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.control_period_s

    def state_index(self, name: str) -> int:
        try:
            return self.state_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name}: no state component {name!r}; have {self.state_names}") from None

    def action_index(self, name: str) -> int:
        try:
            return self.action_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name}: no action component {name!r}; have {self.action_names}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": [c.to_dict() for c in self.state],
            "action": [c.to_dict() for c in self.action],
            "control_period_s": self.control_period_s,
        }

    @staticmethod
    def from_dict(d: Any, where: str = "spec") -> VehicleSpec:
        if not isinstance(d, dict):
            raise SpecError(f"{where}: expected an object, got {type(d).__name__}")
        for key in ("name", "state", "action", "control_period_s"):
            if key not in d:
                raise SpecError(f"{where}.{key}: missing")
        if not isinstance(d["name"], str) or not d["name"]:
            raise SpecError(f"{where}.name: expected a non-empty string, got {d['name']!r}")
        vectors = {}
        for key in ("state", "action"):
            if not isinstance(d[key], list) or not d[key]:
                raise SpecError(f"{where}.{key}: expected a non-empty list of components, got {d[key]!r}")
            comps = tuple(Component.from_dict(c, f"{where}.{key}[{i}]") for i, c in enumerate(d[key]))
            names = [c.name for c in comps]
            if len(set(names)) != len(names):
                raise SpecError(f"{where}.{key}: component names must be unique, got {names}")
            vectors[key] = comps
        period = d["control_period_s"]
        if isinstance(period, bool) or not isinstance(period, (int, float)) or not 0.0 < period < 10.0:
            raise SpecError(f"{where}.control_period_s: expected seconds in (0, 10), got {period!r}")
        return VehicleSpec(d["name"], vectors["state"], vectors["action"], float(period))


# Gymnasium's CartPole envelope: the episode ends past 2.4 m or 12 degrees. The state
# limits here are wider (where the model was trained), the "balanced" test lives in
# `CARTPOLE_BALANCED_*`.
CARTPOLE = VehicleSpec(
    name="cartpole",
    state=(
        Component("cart_pos_m", "m", -2.4, 2.4),
        Component("cart_vel_mps", "m/s", -5.0, 5.0),
        Component("pole_angle_rad", "rad", -math.pi, math.pi),
        Component("pole_rate_radps", "rad/s", -10.0, 10.0),
    ),
    action=(Component("cart_force_n", "N", -10.0, 10.0),),
    control_period_s=0.02,
)
CARTPOLE_BALANCED_ANGLE_RAD = 12.0 * math.pi / 180.0
CARTPOLE_BALANCED_POS_M = 2.4


def cartpole_balanced(state: np.ndarray) -> np.ndarray:
    """True where the pole is up and the cart on the track (Gymnasium's thresholds). state [..., 4]."""
    pos = state[..., CARTPOLE.state_index("cart_pos_m")]
    angle = state[..., CARTPOLE.state_index("pole_angle_rad")]
    return (np.abs(angle) < CARTPOLE_BALANCED_ANGLE_RAD) & (np.abs(pos) < CARTPOLE_BALANCED_POS_M)


# A multirotor seen through its autopilot: the closed loop of the flight controller is part of
# what the world model learns. State in the autopilot's local NED frame (LOCAL_POSITION_NED,
# ATTITUDE); action = velocity setpoints (SET_POSITION_TARGET_LOCAL_NED, type_mask 2503, yaw held),
# with the limits used in the reference ArduPilot/PX4 logs (|v_xy| <= 3 m/s, |v_z| <= 1 m/s).
QUAD = VehicleSpec(
    name="quad",
    state=(
        Component("pos_n_m", "m", -50.0, 50.0),
        Component("pos_e_m", "m", -50.0, 50.0),
        Component("pos_d_m", "m", -50.0, 5.0),
        Component("vel_n_mps", "m/s", -10.0, 10.0),
        Component("vel_e_mps", "m/s", -10.0, 10.0),
        Component("vel_d_mps", "m/s", -5.0, 5.0),
        Component("roll_rad", "rad", -math.pi / 2, math.pi / 2),
        Component("pitch_rad", "rad", -math.pi / 2, math.pi / 2),
        Component("yaw_rad", "rad", -math.pi, math.pi),
        Component("roll_rate_radps", "rad/s", -10.0, 10.0),
        Component("pitch_rate_radps", "rad/s", -10.0, 10.0),
        Component("yaw_rate_radps", "rad/s", -10.0, 10.0),
    ),
    action=(
        Component("vel_sp_n_mps", "m/s", -3.0, 3.0),
        Component("vel_sp_e_mps", "m/s", -3.0, 3.0),
        Component("vel_sp_d_mps", "m/s", -1.0, 1.0),
    ),
    control_period_s=0.02,
)

SPECS: dict[str, VehicleSpec] = {"cartpole": CARTPOLE, "quad": QUAD}
