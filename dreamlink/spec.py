"""The one vocabulary: names, units and limits of a vehicle's state and action vectors.

Every other box (learning, export, bundle, runtime, firmware_bridge, sim) indexes
state and action vectors through a `VehicleSpec`, never through magic numbers, and
the spec travels inside every bundle so a model loaded without its training code is
still self-describing.

A spec is read from a vehicle file (TOML, `load_vehicle`): besides the vectors it may say how
the state arrives over MAVLink and how the action is sent (`BoardLink`), the task as cost terms
(`QuadraticTask`), planner settings, and which simulator stands in for the robot (`SimSpec`).
The cart-pole and the quadrotor ship as two such files (`dreamlink/vehicles/`); a user's robot
needs a file, not code.
"""

from __future__ import annotations

import csv
import math
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
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




def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


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


_SOURCE = re.compile(r"^(?P<msg>[A-Z][A-Z0-9_]*)(?:(?P<sep>[:.])(?P<key>[A-Za-z0-9_]+))?(?:\[(?P<index>\d+)\])?$")
COMMANDS = ("SET_ACTUATOR_CONTROL_TARGET", "MANUAL_CONTROL", "NAMED_VALUE_FLOAT")


@dataclass(frozen=True)
class Source:
    """Where one state component arrives: `DEBUG_FLOAT_ARRAY:NAME[i]` (element i of the array called NAME),
    `NAMED_VALUE_FLOAT:name`, or `MESSAGE.field` / `MESSAGE.field[i]` of any standard message."""

    message: str
    key: str
    index: int = -1

    def text(self) -> str:
        sep = "." if self.message not in ("DEBUG_FLOAT_ARRAY", "NAMED_VALUE_FLOAT") else ":"
        return f"{self.message}{sep}{self.key}" + (f"[{self.index}]" if self.index >= 0 else "")

    @staticmethod
    def parse(text: Any, where: str, default_index: int = -1) -> Source:
        m = _SOURCE.match(text) if isinstance(text, str) else None
        if m is None or m["key"] is None:
            raise SpecError(f"{where}: expected DEBUG_FLOAT_ARRAY:NAME[i], NAMED_VALUE_FLOAT:name or "
                            f"MESSAGE.field[i], got {text!r}")
        msg, sep, key = m["msg"], m["sep"], m["key"]
        if (msg in ("DEBUG_FLOAT_ARRAY", "NAMED_VALUE_FLOAT")) != (sep == ":"):
            raise SpecError(f"{where}: {msg} takes ':' before the name, other messages '.' before the field; "
                            f"got {text!r}")
        index = int(m["index"]) if m["index"] is not None else (default_index if msg == "DEBUG_FLOAT_ARRAY" else -1)
        if msg == "DEBUG_FLOAT_ARRAY" and not 0 <= index < 58:
            raise SpecError(f"{where}: DEBUG_FLOAT_ARRAY holds data[0..57]; give the element, e.g. {msg}:{key}[0]")
        if msg in ("DEBUG_FLOAT_ARRAY", "NAMED_VALUE_FLOAT") and len(key) > 10:
            raise SpecError(f"{where}: {msg} names are at most 10 characters (MAVLink char[10]), got {key!r}")
        return Source(msg, key, index)


@dataclass(frozen=True)
class BoardLink:
    """How a board (no autopilot) speaks: where each state component arrives, how the action goes out.

    Actions are sent normalised: each component's [low, high] maps to [-1, 1] (SET_ACTUATOR_CONTROL_TARGET
    `controls[i]`, group `command_group`) or to [-1000, 1000] (MANUAL_CONTROL x, y, z, r in action order);
    NAMED_VALUE_FLOAT sends each in its own units under its `command_names`. On a DEBUG_FLOAT_ARRAY board the
    elements after the state and the applied action carry the armed flag and the episode (resets so far).
    """

    telemetry: tuple[Source, ...]  # [S]
    command: str = "SET_ACTUATOR_CONTROL_TARGET"
    command_names: tuple[str, ...] = ()  # NAMED_VALUE_FLOAT: one name per action component
    command_group: int = 0
    system_id: int = 1
    component_id: int = 1
    stream_rate_hz: float = 0.0  # 0: the control rate
    armed_index: int = -1  # DEBUG_FLOAT_ARRAY element with the armed flag (-1: the HEARTBEAT only)
    episode_index: int = -1  # DEBUG_FLOAT_ARRAY element counting SITL resets (-1: none)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["telemetry"] = [s.text() for s in self.telemetry]
        out["command_names"] = list(self.command_names)
        return out

    @staticmethod
    def from_dict(d: Any, spec: VehicleSpec, where: str, per_component: tuple[Any, ...] = ()) -> BoardLink:
        if not isinstance(d, dict):
            raise SpecError(f"{where}: expected a table, got {d!r}")
        known = {f.name for f in fields(BoardLink)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: unknown key; expected some of {', '.join(sorted(known))}")
        S, A = spec.state_dim, spec.action_dim
        tele = d.get("telemetry")
        sources: list[Source] = []
        if isinstance(tele, list):
            if len(tele) != S:
                raise SpecError(f"{where}.telemetry: expected {S} sources (one per state component), got {len(tele)}")
            sources = [Source.parse(t, f"{where}.telemetry[{i}]") for i, t in enumerate(tele)]
        else:
            for i, c in enumerate(spec.state):
                own = per_component[i] if i < len(per_component) else None
                if own is not None:
                    sources.append(Source.parse(own, f"state[{i}] ({c.name}).from"))
                elif tele is not None:
                    sources.append(Source.parse(tele, f"{where}.telemetry", default_index=i))
                else:
                    raise SpecError(f"state[{i}] ({c.name}): no source; give the component a `from = ...` or "
                                    f"[link] telemetry = \"DEBUG_FLOAT_ARRAY:NAME\" (state in data[0..{S - 1}])")
        command = d.get("command", "SET_ACTUATOR_CONTROL_TARGET")
        if command not in COMMANDS:
            raise SpecError(f"{where}.command: expected one of {', '.join(COMMANDS)}, got {command!r}")
        if command == "SET_ACTUATOR_CONTROL_TARGET" and A > 8:
            raise SpecError(f"{where}.command: SET_ACTUATOR_CONTROL_TARGET carries 8 controls, the vehicle has {A}")
        if command == "MANUAL_CONTROL" and A > 4:
            raise SpecError(f"{where}.command: MANUAL_CONTROL carries x, y, z, r (4 axes), the vehicle has {A}")
        names = tuple(d.get("command_names", ()))
        if command == "NAMED_VALUE_FLOAT":
            names = names or tuple(n[:10] for n in spec.action_names)
            if len(names) != A or any(not isinstance(n, str) or not 0 < len(n) <= 10 for n in names):
                raise SpecError(f"{where}.command_names: expected {A} names of at most 10 characters, got {names}")
        array = [s for s in sources if s.message == "DEBUG_FLOAT_ARRAY"]
        default_armed = S + A if array and all(s.index == i for i, s in enumerate(sources)) else -1
        link = BoardLink(
            telemetry=tuple(sources), command=command, command_names=names,
            command_group=int(d.get("command_group", 0)),
            system_id=int(d.get("system_id", 1)), component_id=int(d.get("component_id", 1)),
            stream_rate_hz=_number(d.get("stream_rate_hz", 0.0), f"{where}.stream_rate_hz"),
            armed_index=int(d.get("armed_index", default_armed)),
            episode_index=int(d.get("episode_index", default_armed + 1 if default_armed >= 0 else -1)),
        )
        for key in ("system_id", "component_id"):
            if not 0 <= getattr(link, key) <= 255:
                raise SpecError(f"{where}.{key}: expected 0..255, got {getattr(link, key)}")
        return link

    @property
    def array_name(self) -> str:
        """The DEBUG_FLOAT_ARRAY the board streams ("" if the state comes otherwise)."""
        names = {s.key for s in self.telemetry if s.message == "DEBUG_FLOAT_ARRAY"}
        return next(iter(names)) if len(names) == 1 else ""


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


PLANNER_KEYS = {"samples": int, "horizon": int, "noise_sigma": float, "temperature": float,
                "noise_smoothing": float, "prior_share": float}


def _planner_settings(d: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a table, got {d!r}")
    out = []
    for key, value in sorted(d.items()):
        if key not in PLANNER_KEYS:
            raise SpecError(f"{where}.{key}: unknown planner setting; expected some of {', '.join(PLANNER_KEYS)}")
        number = _number(value, f"{where}.{key}")
        if PLANNER_KEYS[key] is int and number != int(number):
            raise SpecError(f"{where}.{key}: expected a whole number, got {value!r}")
        out.append((key, PLANNER_KEYS[key](number)))
    return tuple(out)


VEHICLES_DIR = Path(__file__).parent / "vehicles"


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # the same parser, backported (a dependency on Python 3.10)

    return tomli


def load_vehicle(name_or_path: str | Path) -> VehicleSpec:
    """A vehicle by the name of a shipped file (`cartpole`, `quad`) or from a TOML file; errors name the file
    and the field.

    The file: `name`, `control_period_s`, `[[state]]` and `[[action]]` tables (name, unit, low, high; a
    state component may say `from = "..."`, see `Source`), and optional `[link]`, `[task]`, `[planner]`,
    `[sim]` tables (see `BoardLink`, `QuadraticTask`, `PLANNER_KEYS`, `SimSpec`)."""
    text = str(name_or_path)
    path = Path(text)
    if not text.endswith(".toml") and not path.exists():
        shipped = VEHICLES_DIR / f"{text}.toml"
        if not shipped.exists():
            known = ", ".join(sorted(p.stem for p in VEHICLES_DIR.glob("*.toml")))
            raise SpecError(f"unknown vehicle {text!r}: not a file, and dreamlink ships {known} "
                            f"(give a vehicle file, NAME.toml)")
        path = shipped
    try:
        raw = _toml().loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the vehicle file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; a vehicle file is TOML") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    try:
        return vehicle_from_table(raw, str(path), path.parent)
    except SpecError as exc:  # every refusal names the file
        raise SpecError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def vehicle_from_table(raw: dict[str, Any], where: str, base_dir: Path) -> VehicleSpec:
    """The vehicle a parsed TOML table describes (see `load_vehicle`)."""
    known = {"name", "control_period_s", "state", "action", "link", "task", "planner", "sim"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; a vehicle file has {', '.join(sorted(known))}")
    per_component = []
    state = []
    for c in raw.get("state", []) if isinstance(raw.get("state"), list) else []:
        if isinstance(c, dict):
            c = dict(c)
            per_component.append(c.pop("from", None))
        state.append(c)
    base = VehicleSpec.from_dict({**{k: raw[k] for k in ("name", "control_period_s", "action") if k in raw},
                                  "state": state if state else raw.get("state")}, where)
    return VehicleSpec(
        base.name, base.state, base.action, base.control_period_s,
        link=(BoardLink.from_dict(raw["link"], base, f"{where} [link]", tuple(per_component))
              if "link" in raw else None),
        task=QuadraticTask.from_dict(raw["task"], base, f"{where} [task]", base_dir) if "task" in raw else None,
        planner=_planner_settings(raw.get("planner", {}), f"{where} [planner]"),
        sim=SimSpec.from_dict(raw["sim"], base, f"{where} [sim]") if "sim" in raw else None,
    )


def with_vehicle_file(trained: VehicleSpec, file: VehicleSpec) -> VehicleSpec:
    """`trained`'s vectors with `file`'s task, planner, link and sim: a vehicle file edited after training (a new
    task, other planner settings) applies to the model, as long as the state and action are the same."""
    same = (trained.state == file.state and trained.action == file.action
            and trained.control_period_s == file.control_period_s)
    if not same:
        raise SpecError(f"vehicle file {file.name!r} describes other state/action vectors or control period than "
                        f"the model was trained with ({trained.state_names} -> {trained.action_names} every "
                        f"{trained.control_period_s} s); retrain, or fix the file")
    return VehicleSpec(trained.name, trained.state, trained.action, trained.control_period_s, file.link, file.task,
                       file.planner, file.sim)


# The shipped vehicles. Gymnasium's CartPole envelope: the episode ends past 2.4 m or 12 degrees; the
# state limits in cartpole.toml are wider (where the model was trained).
CARTPOLE = load_vehicle("cartpole")
CARTPOLE_BALANCED_ANGLE_RAD = 12.0 * math.pi / 180.0
CARTPOLE_BALANCED_POS_M = 2.4


def cartpole_balanced(state: np.ndarray) -> np.ndarray:
    """True where the pole is up and the cart on the track (Gymnasium's thresholds). state [..., 4]."""
    pos = state[..., CARTPOLE.state_index("cart_pos_m")]
    angle = state[..., CARTPOLE.state_index("pole_angle_rad")]
    return (np.abs(angle) < CARTPOLE_BALANCED_ANGLE_RAD) & (np.abs(pos) < CARTPOLE_BALANCED_POS_M)


# A multirotor seen through its autopilot (quad.toml): state in the autopilot's local NED frame
# (LOCAL_POSITION_NED, ATTITUDE), action = velocity setpoints (SET_POSITION_TARGET_LOCAL_NED).
QUAD = load_vehicle("quad")

SPECS: dict[str, VehicleSpec] = {"cartpole": CARTPOLE, "quad": QUAD}
