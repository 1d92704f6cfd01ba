"""The planner settings a vehicle file may fix (its `[planner]` table), checked by name and kind."""

from __future__ import annotations

from typing import Any

from dreamlink.spec.errors import SpecError, _number

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
