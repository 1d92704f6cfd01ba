"""The safety shield: the last function every command passes before `send`.

Whatever the planner or a fallback produced, the shield (1) replaces anything non-finite or
malformed by the hold action, (2) clips to the hard action limits, (3) limits how fast a
setpoint may change (an acceleration limit for velocity setpoints), and (4) for vehicles whose
actions are velocity setpoints, bends any velocity that would carry the vehicle out of the
geofence within `lookahead_s` so that it cannot, and finally clips again. It never raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamlink.spec import VehicleSpec


@dataclass(frozen=True)
class Geofence:
    """An axis-aligned box in the local NED frame; `axes` pairs (action index, state position index)."""

    min_ned_m: tuple[float, ...]
    max_ned_m: tuple[float, ...]
    axes: tuple[tuple[int, int], ...]
    lookahead_s: float = 1.0

    def __post_init__(self) -> None:
        if not (len(self.min_ned_m) == len(self.max_ned_m) == len(self.axes)):
            raise ValueError("Geofence: min_ned_m, max_ned_m and axes need one entry per fenced axis")
        if any(lo >= hi for lo, hi in zip(self.min_ned_m, self.max_ned_m, strict=True)):
            raise ValueError(f"Geofence: each min must be below its max, got {self.min_ned_m} / {self.max_ned_m}")
        if self.lookahead_s <= 0:
            raise ValueError(f"Geofence.lookahead_s: expected > 0, got {self.lookahead_s}")

    @staticmethod
    def for_velocity_setpoints(
        spec: VehicleSpec, min_ned_m: tuple[float, float, float], max_ned_m: tuple[float, float, float],
        lookahead_s: float = 1.0,
    ) -> Geofence:
        axes = tuple(
            (spec.action_index(f"vel_sp_{a}_mps"), spec.state_index(f"pos_{a}_m")) for a in ("n", "e", "d")
        )
        return Geofence(tuple(min_ned_m), tuple(max_ned_m), axes, lookahead_s)

    def contains(self, state: np.ndarray) -> bool:
        pos = np.array([state[s] for _, s in self.axes])
        return bool(np.all(pos >= self.min_ned_m) and np.all(pos <= self.max_ned_m))

    def margin_m(self, state: np.ndarray) -> float:
        """Distance to the nearest face (negative outside)."""
        pos = np.array([state[s] for _, s in self.axes])
        return float(np.min(np.minimum(pos - np.asarray(self.min_ned_m), np.asarray(self.max_ned_m) - pos)))


@dataclass(frozen=True)
class ShieldLimits:
    """Hard limits on the action vector, in spec units; defaults to the spec's own."""

    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    hold_action: tuple[float, ...]  # sent instead of anything non-finite
    max_step_change: tuple[float, ...] | None = None  # per tick, per component (None: unlimited)
    geofence: Geofence | None = None

    @staticmethod
    def from_spec(
        spec: VehicleSpec, max_step_change: tuple[float, ...] | None = None, geofence: Geofence | None = None
    ) -> ShieldLimits:
        hold = np.clip(np.zeros(spec.action_dim), spec.action_low, spec.action_high)
        return ShieldLimits(
            tuple(map(float, spec.action_low)),
            tuple(map(float, spec.action_high)),
            tuple(map(float, hold)),
            max_step_change,
            geofence,
        )


@dataclass(frozen=True)
class ShieldResult:
    action: np.ndarray  # [A], safe to send
    clipped: bool  # outside the limits, or changing faster than allowed
    nonfinite: bool  # NaN/Inf or malformed, replaced by the hold action
    fenced: bool = False  # bent to stay inside the geofence


def shield(
    action: np.ndarray,
    limits: ShieldLimits,
    state: np.ndarray | None = None,
    previous: np.ndarray | None = None,
) -> ShieldResult:
    """Make `action` safe to send given the current `state` [S] and the `previous` action sent."""
    low = np.asarray(limits.action_low, dtype=np.float32)
    high = np.asarray(limits.action_high, dtype=np.float32)
    a = np.asarray(action, dtype=np.float32)
    nonfinite = a.shape != low.shape or not np.all(np.isfinite(a))
    out = np.asarray(limits.hold_action, dtype=np.float32).copy() if nonfinite else np.clip(a, low, high)
    clipped = (not nonfinite) and bool(np.any(out != a))
    if limits.max_step_change is not None and previous is not None and np.all(np.isfinite(previous)):
        step = np.asarray(limits.max_step_change, dtype=np.float32)
        slewed = np.clip(out, previous - step, previous + step)
        clipped = clipped or bool(np.any(slewed != out))
        out = slewed
    fenced = False
    fence = limits.geofence
    if fence is not None and state is not None and np.all(np.isfinite(state)):
        for (ai, si), lo, hi in zip(fence.axes, fence.min_ned_m, fence.max_ned_m, strict=True):
            pos = float(state[si])
            v_max = (hi - pos) / fence.lookahead_s  # the fastest outward speed that stays inside
            v_min = (lo - pos) / fence.lookahead_s
            v = float(np.clip(out[ai], v_min, v_max))
            if v != out[ai]:
                out[ai], fenced = v, True
        out = np.clip(out, low, high)
    return ShieldResult(out, clipped, nonfinite, fenced)
