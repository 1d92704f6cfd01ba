"""The one vocabulary: names, units and limits of a vehicle's state and action vectors.

Every other box (learning, export, bundle, runtime, firmware_bridge, sim) indexes state and action
vectors through a `VehicleSpec`, never through magic numbers, and the spec travels inside every bundle
so a model loaded without its training code is still self-describing. The optional parts a vehicle
file may add (link, task, planner settings, simulator) live in their own modules of this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamlink.spec.board_link import BoardLink
from dreamlink.spec.errors import SpecError
from dreamlink.spec.planner_settings import _planner_settings
from dreamlink.spec.sim import SimSpec
from dreamlink.spec.task import QuadraticTask


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
    link: BoardLink | None = None  # how a board speaks (None: an autopilot profile, or the built-in board)
    task: QuadraticTask | None = None  # what the planner is asked to do (None: the built-in task by name)
    planner: tuple[tuple[str, float], ...] = ()  # planner settings the vehicle file fixes (name, value)
    sim: SimSpec | None = None  # the simulator standing in for the robot (`dreamlink sitl gym`)

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
        out: dict[str, Any] = {
            "name": self.name,
            "state": [c.to_dict() for c in self.state],
            "action": [c.to_dict() for c in self.action],
            "control_period_s": self.control_period_s,
        }
        if self.link is not None:
            out["link"] = self.link.to_dict()
        if self.task is not None:
            out["task"] = self.task.to_dict(self)
        if self.planner:
            out["planner"] = dict(self.planner)
        if self.sim is not None:
            out["sim"] = self.sim.to_dict()
        return out

    def planner_settings(self) -> dict[str, float]:
        return dict(self.planner)

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
        base = VehicleSpec(d["name"], vectors["state"], vectors["action"], float(period))
        return VehicleSpec(
            base.name, base.state, base.action, base.control_period_s,
            link=BoardLink.from_dict(d["link"], base, f"{where}.link") if "link" in d else None,
            task=QuadraticTask.from_dict(d["task"], base, f"{where}.task") if "task" in d else None,
            planner=_planner_settings(d.get("planner", {}), f"{where}.planner"),
            sim=SimSpec.from_dict(d["sim"], base, f"{where}.sim") if "sim" in d else None,
        )
