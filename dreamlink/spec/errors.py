"""What a malformed vehicle file or manifest spec raises, and the number check every table reader shares."""

from __future__ import annotations

import math
from typing import Any


class SpecError(ValueError):
    """A vehicle spec (usually from a manifest) is malformed; the message names the field."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    return float(value)
