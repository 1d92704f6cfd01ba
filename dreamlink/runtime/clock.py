"""Clocks the control loop runs on; injected so the same loop flies real time and lockstep SITL.

A clock has `now() -> float` (seconds) and `sleep_until(t_s) -> None`. The loop lays its
deadlines on the clock's own time axis, so in lockstep the deadlines are in simulator time
and "sleeping" means waiting until the simulator has stepped that far.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

log = logging.getLogger(__name__)


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


# A vehicle clock that jumps back further than this rebooted (reordered or delayed samples are ms apart).
REBOOT_JUMP_S = 1.0


class LockstepClock:
    """Simulator time, read from the newest telemetry sample's vehicle timestamp.

    `sleep_until(t)` blocks until the vehicle has reported a sample stamped at or after
    `t`; a lockstep SITL steps once per command, so the loop runs as fast as the two
    processes can exchange messages, with the same tick code as real time.

    Lost packets and quiet vehicles: a lockstep vehicle moves only when a tick arrives, so a lost
    setpoint, a lost sample or a telemetry freeze would leave the loop waiting for ever. After a
    short wall-clock wait (adapted to how fast the vehicle usually answers: eight times the typical
    answer, within [`min_retry_s`, `retry_s`]) the clock *nudges* the source, if it can
    (`lockstep_nudge(timeout_s) -> vehicle time or None`: a TIMESYNC request, which steps the vehicle
    one tick and is answered with its time), and returns once the vehicle's time, from a sample or a
    nudge's answer, reached the deadline. So under loss the vehicle may step twice in a tick, and with
    a latency longer than the retry several times (it runs ahead of a late loop, as a real vehicle
    does); without loss, latency or stalls longer than the retry, never.
    `LockstepTimeout` only after `timeout_s` without any answer at all.

    Reboots: when the vehicle's time jumps back by more than `REBOOT_JUMP_S`, the clock adds the
    lost time to an offset, so its own time never runs backwards and the loop's deadlines stay
    valid; `reboots` counts them.
    """

    # Vehicle time moves when the loop sends, so "finished after the next deadline" means nothing
    # here; the loop counts a tick whose planning took longer than a period as the overrun instead.
    paced_by_vehicle = True

    def __init__(self, source: StateSource, timeout_s: float = 5.0, epsilon_s: float = 1e-6,
                 retry_s: float = 0.25, min_retry_s: float = 0.02) -> None:
        if not 0 < min_retry_s <= retry_s <= timeout_s:
            raise ValueError(f"LockstepClock: need 0 < min_retry_s <= retry_s <= timeout_s, got "
                             f"{min_retry_s}, {retry_s}, {timeout_s}")
        self._source = source
        self._timeout_s = timeout_s
        self._epsilon_s = epsilon_s
        self._retry_s, self._min_retry_s = retry_s, min_retry_s
        self._typical_s = min_retry_s / 8  # EWMA of how long a first wait took when it succeeded
        self._nudge = getattr(source, "lockstep_nudge", None)
        self._offset_s = 0.0  # added to vehicle time: the time lost to reboots
        self._last_s = -math.inf  # newest vehicle time seen in this boot
        self._ignored_state_s = math.nan  # a stale pre-reboot sample time, not this boot's
        self.reboots = 0
        self.nudges = 0

    def _observe(self, t_s: float, from_state: bool) -> None:
        if not math.isfinite(t_s) or (from_state and t_s == self._ignored_state_s):
            return
        if t_s < self._last_s - REBOOT_JUMP_S:
            self.reboots += 1
            log.error("vehicle clock went back from %.3f s to %.3f s: the vehicle rebooted", self._last_s, t_s)
            self._ignored_state_s = self._state_t() if not from_state else math.nan
            self._offset_s += self._last_s - t_s
            self._last_s = t_s
        else:
            self._last_s = max(self._last_s, t_s)

    def _state_t(self) -> float:
        t_s, _, _ = self._source.state()
        return t_s

    def age_of(self, t_s: float) -> float:
        """How far a sample stamped `t_s` (vehicle time, this boot) is behind the newest vehicle time seen.

        Staleness in simulated time: the vehicle waits for us, so how long the sample sat while this
        machine was busy (its wall-clock age) says nothing about the vehicle."""
        if not math.isfinite(t_s) or not math.isfinite(self._last_s):
            return math.inf
        return max(0.0, self._last_s - t_s)

    def now(self) -> float:
        self._observe(self._state_t(), True)
        return self._last_s + self._offset_s if math.isfinite(self._last_s) else 0.0  # 0 before the first sample

    def sleep_until(self, t_s: float) -> None:
        give_up = time.monotonic() + self._timeout_s
        retry = min(max(8 * self._typical_s, self._min_retry_s), self._retry_s)
        first = True
        while True:
            started = time.monotonic()
            if self._source.wait_state_after(t_s - self._offset_s - self._epsilon_s, retry):
                self.now()
                if first:  # how long the vehicle takes to answer when nothing was lost
                    self._typical_s = 0.9 * self._typical_s + 0.1 * (time.monotonic() - started)
                return
            first = False
            self.now()
            if self._last_s + self._offset_s >= t_s - self._epsilon_s:
                return  # the vehicle is there; its state stream is late, lost or frozen (the loop sees it stale)
            if time.monotonic() >= give_up:
                raise LockstepTimeout(
                    f"lockstep: no vehicle sample at t >= {t_s:.3f} s within {self._timeout_s} s (vehicle last seen at "
                    f"{self._last_s + self._offset_s:.3f} s, {self.nudges} nudges); is the SITL alive?"
                )
            if self._nudge is not None:
                self.nudges += 1
                answered = self._nudge(retry)
                if answered is not None:
                    self._observe(float(answered), False)
                    if self._last_s + self._offset_s >= t_s - self._epsilon_s:
                        return
