"""The MAVLink parameter protocol on the SITL (mavlink.io/en/services/parameter.html), for the few
parameters that change how the simulated autopilot flies.

An integrator tunes these on a real flight controller before a mission (ArduCopter's guided-mode
velocity shaping takes WP_ACC and PSC_JERK_NE: a 3 m figure-eight at 2 m/s needs more than the
2.5 m/s^2 default), so the SITL must take them the same way: PARAM_SET answered by a PARAM_VALUE
echo with the stored value, PARAM_REQUEST_READ by name or index, PARAM_REQUEST_LIST streamed.
Unknown names are ignored without a reply, as ArduPilot does; values are REAL32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

MAV_PARAM_TYPE_REAL32 = 9
PARAM_REQUESTS = ("PARAM_SET", "PARAM_REQUEST_READ", "PARAM_REQUEST_LIST")


class ParamTable:
    """Named float parameters in a fixed order (the order gives each its index)."""

    def __init__(self, defaults: Mapping[str, float]) -> None:
        self._values = {name: float(value) for name, value in defaults.items()}
        self._names = list(self._values)
        self.sets = 0

    def __getitem__(self, name: str) -> float:
        return self._values[name]

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        return list(self._names)

    def set(self, name: str, value: float) -> bool:
        """Store `value` if `name` is known and the value finite; False (nothing stored) otherwise."""
        if name not in self._values or not math.isfinite(value):
            return False
        self._values[name] = float(value)
        self.sets += 1
        return True

    def index_of(self, name: str) -> int:
        return self._names.index(name)


def _param_id(raw: Any) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    return str(raw).split("\x00", 1)[0]


def handle_param_message(msg_type: str, msg: Any, table: ParamTable,
                         send_value: Callable[[str, float, int, int], None]) -> bool:
    """Answer one PARAM_* message; `send_value(name, value, count, index)` sends a PARAM_VALUE.
    Returns whether the message was a parameter message."""
    if msg_type == "PARAM_SET":
        name = _param_id(msg.param_id)
        if table.set(name, float(msg.param_value)):
            send_value(name, table[name], len(table), table.index_of(name))
        return True
    if msg_type == "PARAM_REQUEST_READ":
        index = int(msg.param_index)
        names = table.names()
        name = names[index] if 0 <= index < len(names) else _param_id(msg.param_id)
        if name in names:
            send_value(name, table[name], len(table), table.index_of(name))
        return True
    if msg_type == "PARAM_REQUEST_LIST":
        for i, name in enumerate(table.names()):
            send_value(name, table[name], len(table), i)
        return True
    return False
