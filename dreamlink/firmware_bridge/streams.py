"""Telemetry streams held at the rate planning needs, whatever else shares the link.

A companion computer is rarely the autopilot's only client. MAVProxy at its defaults asks for every data
stream at 4 Hz (REQUEST_DATA_STREAM) when it starts and again every 15 s or so, and on ArduPilot that request
resets the interval of every message in those stream groups (GCS_MAVLINK::handle_request_data_stream ->
initialise_message_intervals_for_stream), overriding the 50 Hz SET_MESSAGE_INTERVAL the profile asked for: the
state goes stale one tick in two and nothing says why. A ground station can do the same with its own rates.

`StreamWatch` records when each watched message arrives and, when one is overdue by `gap_periods` of its
requested period after it had been flowing, says it is due to be asked for again. The profile re-asserts it at
once (one COMMAND_LONG, no wait for the ACK), at most every `min_reassert_s` per message, so a 4 Hz override
costs a sample or two instead of a stale flight. Pure bookkeeping on an injected time: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class _Stream:
    requested_hz: float
    first_s: float = math.nan
    last_s: float = math.nan
    count: int = 0
    reasserts: int = 0
    last_reassert_s: float = -math.inf
    worst_gap_s: float = 0.0
    window_start_s: float = math.nan  # 1 s windows for the lowest rate seen
    window_count: int = 0
    lowest_hz: float = math.inf


@dataclass
class StreamWatch:
    """Arrivals of the watched messages; which of them are overdue and should be asked for again."""

    requested_hz: dict[str, float]
    gap_periods: float = 3.0  # overdue after this many requested periods without a sample
    min_reassert_s: float = 0.5  # per message: ask again no more often than this
    _streams: dict[str, _Stream] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for name, hz in self.requested_hz.items():
            if not (math.isfinite(hz) and hz > 0):
                raise ValueError(f"StreamWatch.requested_hz[{name!r}]: expected a rate > 0 Hz, got {hz!r}")
        if not (self.gap_periods >= 1.5 and self.min_reassert_s > 0):
            raise ValueError(f"StreamWatch: expected gap_periods >= 1.5 and min_reassert_s > 0, got "
                             f"{self.gap_periods!r}, {self.min_reassert_s!r}")
        self._streams = {name: _Stream(hz) for name, hz in self.requested_hz.items()}

    def arrived(self, name: str, t_s: float) -> None:
        s = self._streams.get(name)
        if s is None:
            return
        if s.count:
            s.worst_gap_s = max(s.worst_gap_s, t_s - s.last_s)
        else:
            s.first_s = t_s
        s.last_s = t_s
        s.count += 1
        if math.isnan(s.window_start_s):
            s.window_start_s, s.window_count = t_s, 0
        elif t_s - s.window_start_s >= 1.0:
            s.lowest_hz = min(s.lowest_hz, s.window_count / (t_s - s.window_start_s))
            s.window_start_s, s.window_count = t_s, 0
        s.window_count += 1

    def due(self, now_s: float) -> list[str]:
        """Messages overdue now (after they had flowed), each marked as re-asserted at `now_s`."""
        out = []
        for name, s in self._streams.items():
            if not s.count:
                continue  # never flowed: the estimator may not be ready; connect() waits for that
            if (now_s - s.last_s > self.gap_periods / s.requested_hz
                    and now_s - s.last_reassert_s >= self.min_reassert_s):
                s.reasserts += 1
                s.last_reassert_s = now_s
                out.append(name)
        return out

    def reasserts(self, name: str) -> int:
        return self._streams[name].reasserts

    def measured_hz(self, name: str) -> float:
        s = self._streams[name]
        return (s.count - 1) / (s.last_s - s.first_s) if s.count > 1 and s.last_s > s.first_s else math.nan

    def report(self) -> dict[str, dict[str, float | int]]:
        """Per message: asked rate, measured mean and lowest 1 s rate, worst gap, times re-asserted."""
        return {name: {"requested_hz": s.requested_hz, "measured_hz": round(self.measured_hz(name), 2),
                       "lowest_1s_hz": round(s.lowest_hz, 2) if math.isfinite(s.lowest_hz) else math.nan,
                       "worst_gap_ms": round(s.worst_gap_s * 1e3, 1), "reasserts": s.reasserts}
                for name, s in self._streams.items()}
