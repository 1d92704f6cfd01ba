"""The simulator standing in for a robot: the vehicle file's `[sim]` table (a Gymnasium environment)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from dreamlink.spec.errors import SpecError, _number

if TYPE_CHECKING:
    from dreamlink.spec.vehicle import VehicleSpec


@dataclass(frozen=True)
class SimSpec:
    """A Gymnasium environment standing in for the robot (`dreamlink sitl gym`), used unmodified: its
    observation is the state, its action the action. `start_state` / `explore_low..high` are written to
    `env.unwrapped.state` (classic control's internal state) after a reset: a fixed start for flights
    ("hanging down"), a box drawn uniformly for data collection."""

    gym_env: str
    make_kwargs: tuple[tuple[str, Any], ...] = ()
    start_state: tuple[float, ...] = ()
    explore_low: tuple[float, ...] = ()
    explore_high: tuple[float, ...] = ()
    collect_hold_steps: int = 1  # data collection: each random action held this many steps

    def to_dict(self) -> dict[str, Any]:
        return {"gym_env": self.gym_env, "make_kwargs": dict(self.make_kwargs), "start_state": list(self.start_state),
                "explore_low": list(self.explore_low), "explore_high": list(self.explore_high),
                "collect_hold_steps": self.collect_hold_steps}

    @staticmethod
    def from_dict(d: Any, spec: VehicleSpec, where: str) -> SimSpec:
        if not isinstance(d, dict) or not isinstance(d.get("gym_env"), str):
            raise SpecError(f"{where}: expected a table with gym_env = \"ID\" (a Gymnasium environment id)")
        known = {f.name for f in fields(SimSpec)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: unknown key; expected some of {', '.join(sorted(known))}")
        vec = {k: tuple(_number(v, f"{where}.{k}[{i}]") for i, v in enumerate(d.get(k, ())))
               for k in ("start_state", "explore_low", "explore_high")}
        if len(vec["explore_low"]) != len(vec["explore_high"]):
            raise SpecError(f"{where}: explore_low and explore_high need the same length")
        kwargs = d.get("make_kwargs", {})
        if not isinstance(kwargs, dict):
            raise SpecError(f"{where}.make_kwargs: expected a table of gymnasium.make keyword arguments")
        hold = d.get("collect_hold_steps", 1)
        if not isinstance(hold, int) or hold < 1:
            raise SpecError(f"{where}.collect_hold_steps: expected a whole number >= 1, got {hold!r}")
        return SimSpec(d["gym_env"], tuple(sorted(kwargs.items())), vec["start_state"], vec["explore_low"],
                       vec["explore_high"], hold)
