"""Clocks the control loop runs on; injected so the same loop flies real time and lockstep SITL.

A clock has `now() -> float` (seconds) and `sleep_until(t_s) -> None`. The loop lays its
deadlines on the clock's own time axis, so in lockstep the deadlines are in simulator time
and "sleeping" means waiting until the simulator has stepped that far.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, t_s: float) -> None: ...


class MonotonicClock:
    """Real flights: `time.monotonic()`, sleeping to each deadline (never backwards)."""

    paced_by_vehicle = False

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t_s: float) -> None:
        # Coarse sleep, then a short spin: Linux sleep overshoots by 50-100 us, which is
        # jitter the loop statistics would otherwise charge to the planner.
        while True:
            remaining = t_s - time.monotonic()
            if remaining <= 0.0:
                return
            if remaining > 0.0015:
                time.sleep(remaining - 0.001)
            else:
                time.sleep(0)


class StateSource(Protocol):
    def state(self) -> tuple[float, object, float]: ...

    def wait_state_after(self, t_s: float, timeout_s: float) -> bool: ...


class LockstepTimeout(RuntimeError):
    """The simulator did not step to the awaited time (it died, or the link is down)."""


class LockstepClock:
    """Simulator time, read from the newest telemetry sample's vehicle timestamp.

    `sleep_until(t)` blocks until the vehicle has reported a sample stamped at or after
    `t`; a lockstep SITL steps once per command, so the loop runs as fast as the two
    processes can exchange messages, with the same tick code as real time.
    """

    # Vehicle time moves when the loop sends, so "finished after the next deadline" means nothing
    # here; the loop counts a tick whose planning took longer than a period as the overrun instead.
    paced_by_vehicle = True

    def __init__(self, source: StateSource, timeout_s: float = 5.0, epsilon_s: float = 1e-6) -> None:
        self._source = source
        self._timeout_s = timeout_s
        self._epsilon_s = epsilon_s

    def now(self) -> float:
        t_s, _, _ = self._source.state()
        return t_s if t_s == t_s else 0.0  # NaN before the first sample

    def sleep_until(self, t_s: float) -> None:
        if not self._source.wait_state_after(t_s - self._epsilon_s, self._timeout_s):
            raise LockstepTimeout(
                f"lockstep: no vehicle sample at t >= {t_s:.3f} s within {self._timeout_s} s; is the SITL alive?"
            )
