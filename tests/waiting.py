"""Waiting on real processes and sockets in tests: poll a condition, never assert on timing."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    """True as soon as `condition()` is; after `timeout_s`, whatever it says then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
