"""How a board without an autopilot speaks MAVLink: the vehicle file's `[link]` table.

Where each state component arrives (`Source`, a message and field, or an element of a named array) and
which message carries the action out (`BoardLink`); `firmware_bridge/motor_board` speaks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from dreamlink.spec.errors import SpecError, _number

if TYPE_CHECKING:
    from dreamlink.spec.vehicle import VehicleSpec


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
