"""The task a vehicle file gives the planner: quadratic tracking of a target or a reference, soft walls.

Read from the vehicle file's `[task]` table (component names as keys) or a manifest's copy of it; a
reference trajectory may come from a CSV file beside the vehicle file.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamlink.spec.errors import SpecError, _number

if TYPE_CHECKING:
    from dreamlink.spec.vehicle import VehicleSpec


def _by_name(table: Any, names: tuple[str, ...], default: float, where: str) -> tuple[float, ...]:
    """A {component name: number} table as a vector in `names` order; names not in it get `default`."""
    if isinstance(table, (list, tuple)):  # already a vector (a manifest)
        if len(table) != len(names):
            raise SpecError(f"{where}: expected {len(names)} numbers ({', '.join(names)}), got {len(table)}")
        return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(table))
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table of component name = number, got {table!r}")
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise SpecError(f"{where}: no component {unknown[0]!r}; the vehicle has {', '.join(names)}")
    return tuple(_number(table[n], f"{where}.{n}") if n in table else default for n in names)


@dataclass(frozen=True)
class QuadraticTask:
    """Quadratic tracking of a target state, a quadratic action cost, and soft walls.

    `walls` are (state index, |limit|) pairs; every imagined step past a wall costs
    `wall_penalty`, which is how "the pole must stay up" enters a smooth planner.
    `reference` rows are (t_s, x_0 .. x_S-1) of a reference trajectory (a CSV in the vehicle file;
    NaN where it names no value: the fixed target holds there); empty: the fixed target only.
    """

    name: str
    target: tuple[float, ...]  # [S] raw units
    state_weight: tuple[float, ...]  # [S] per unit^2
    action_weight: tuple[float, ...]  # [A] per unit^2
    terminal_weight: float = 1.0
    walls: tuple[tuple[int, float], ...] = ()
    wall_penalty: float = 1000.0
    reference: tuple[tuple[float, ...], ...] = ()

    def check(self, spec: VehicleSpec) -> None:
        if len(self.target) != spec.state_dim or len(self.state_weight) != spec.state_dim:
            raise ValueError(
                f"task {self.name}: target/state_weight need {spec.state_dim} entries ({spec.state_names})"
            )
        if len(self.action_weight) != spec.action_dim:
            raise ValueError(f"task {self.name}: action_weight needs {spec.action_dim} entries ({spec.action_names})")

    def to_dict(self, spec: VehicleSpec) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "target": dict(zip(spec.state_names, self.target, strict=True)),
            "state_weight": dict(zip(spec.state_names, self.state_weight, strict=True)),
            "action_weight": dict(zip(spec.action_names, self.action_weight, strict=True)),
            "terminal_weight": self.terminal_weight,
            "walls": {spec.state_names[i]: limit for i, limit in self.walls},
            "wall_penalty": self.wall_penalty,
        }
        if self.reference:
            out["reference"] = [[None if math.isnan(v) else v for v in row] for row in self.reference]
        return out

    @staticmethod
    def from_dict(d: Any, spec: VehicleSpec, where: str, base_dir: Path | None = None) -> QuadraticTask:
        """From a vehicle file's [task] table (component names as keys) or a manifest's copy of it."""
        if not isinstance(d, dict):
            raise SpecError(f"{where}: expected a table, got {d!r}")
        known = {"name", "target", "state_weight", "action_weight", "terminal_weight", "walls", "wall_penalty",
                 "reference", "reference_csv"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: unknown key; expected some of {', '.join(sorted(known))}")
        walls_raw = d.get("walls", {})
        if not isinstance(walls_raw, dict):
            raise SpecError(f"{where}.walls: expected a table of state name = |limit|, got {walls_raw!r}")
        walls = []
        for name, limit in walls_raw.items():
            if name not in spec.state_names:
                raise SpecError(f"{where}.walls: no state component {name!r}; have {', '.join(spec.state_names)}")
            value = _number(limit, f"{where}.walls.{name}")
            if value <= 0:
                raise SpecError(f"{where}.walls.{name}: expected a limit > 0, got {value}")
            walls.append((spec.state_index(name), value))
        reference: tuple[tuple[float, ...], ...] = ()
        if "reference_csv" in d:
            reference = read_reference_csv((base_dir or Path(".")) / str(d["reference_csv"]), spec,
                                           f"{where}.reference_csv")
        elif "reference" in d:
            reference = tuple(tuple(math.nan if v is None else _number(v, f"{where}.reference") for v in row)
                              for row in d["reference"])
        task = QuadraticTask(
            name=str(d.get("name", "task")),
            target=_by_name(d.get("target", {}), spec.state_names, 0.0, f"{where}.target"),
            state_weight=_by_name(d.get("state_weight", {}), spec.state_names, 0.0, f"{where}.state_weight"),
            action_weight=_by_name(d.get("action_weight", {}), spec.action_names, 0.0, f"{where}.action_weight"),
            terminal_weight=_number(d.get("terminal_weight", 1.0), f"{where}.terminal_weight"),
            walls=tuple(walls),
            wall_penalty=_number(d.get("wall_penalty", 1000.0), f"{where}.wall_penalty"),
            reference=reference,
        )
        if not any(w > 0 for w in task.state_weight):
            raise SpecError(f"{where}.state_weight: every weight is 0, the planner would have nothing to aim "
                            f"for; give at least one of {', '.join(spec.state_names)} a weight > 0")
        return task


def read_reference_csv(path: Path, spec: VehicleSpec, where: str) -> tuple[tuple[float, ...], ...]:
    """A reference trajectory: a header `t_s,<state names...>` (any subset), rows by rising time."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise SpecError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    if not rows or rows[0][:1] != ["t_s"]:
        raise SpecError(f"{where}: {path} must start with a header row t_s,<state names>; got {rows[:1]}")
    header = [h.strip() for h in rows[0]]
    for name in header[1:]:
        if name not in spec.state_names:
            raise SpecError(f"{where}: {path} column {name!r} is not a state component ({', '.join(spec.state_names)})")
    out, last_t = [], -math.inf
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            values = [float(v) for v in row]
        except ValueError:
            raise SpecError(f"{where}: {path} line {line}: expected numbers, got {row}") from None
        if len(values) != len(header) or not values[0] > last_t:
            raise SpecError(f"{where}: {path} line {line}: expected {len(header)} values with t_s rising")
        last_t = values[0]
        x = [math.nan] * spec.state_dim
        for name, v in zip(header[1:], values[1:], strict=True):
            x[spec.state_index(name)] = v
        out.append((values[0], *x))
    if len(out) < 2:
        raise SpecError(f"{where}: {path} holds {len(out)} rows; a reference needs at least 2")
    return tuple(out)
