"""The safety shield: the last function every command passes before `send`.

Whatever the planner or a fallback produced, the shield (1) replaces anything non-finite or
malformed by the hold action, (2) clips to the hard action limits, (3) limits how fast a
setpoint may change (an acceleration limit for velocity setpoints), (4) for vehicles whose
actions are velocity setpoints, bends any velocity that would carry the vehicle out of the
geofence within `lookahead_s` so that it cannot, and finally clips again, and (5) refuses a
velocity setpoint whose lookahead enters a keep-out zone (`dreamlink.runtime.zones`). It never raises.

The keep-out check, horizontally (zones are vertical prisms): from the current position p0, with
the setpoint v held for `zone_lookahead_s` (T) while the vehicle's velocity slews to it from its
current w, the path stays in the parallelogram p0 + a v + c w, a in [0, T], c in [0, `zone_slew_s`]
(a first-order velocity lag of time constant up to `zone_slew_s`, or an acceleration-limited ramp of
up to twice it, never leaves it). The setpoint passes unchanged when that region keeps the margin to
every zone it starts clear of, and gets no deeper into one it starts inside (so a vehicle inside a
zone may always hold or leave). Otherwise it is replaced by the safe candidate closest to it: v
scaled down along its own direction, or v with its component into the zone (where v would hit the
buffer) removed and then scaled (the largest safe scale of each, from a grid of scales checked in one
batch); failing both, zero horizontal velocity, which is always accepted: it is the most the shield
can do, and the lookahead is there so that it rarely has to. The vertical setpoint is never touched.
Where the geofence and a zone disagree (outside the fence, its way back in crossing a zone) the zone
wins: holding still beats entering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamlink.runtime.zones import Zones, regions_enter
from dreamlink.spec import VehicleSpec

# The largest safe scale of a direction is searched on a grid of ZONE_GRID scales, then once more between the
# last safe and the first unsafe: a resolution of 1/ZONE_GRID^2 of the requested speed in two batched checks.
ZONE_GRID = 16


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
class ZoneAxes:
    """Where the keep-out check finds the horizontal setpoint, position and velocity (indices)."""

    action_ne: tuple[int, int]  # vel_sp_n_mps, vel_sp_e_mps
    pos_ne: tuple[int, int]  # pos_n_m, pos_e_m
    vel_ne: tuple[int, int] | None = None  # vel_n_mps, vel_e_mps (None: no measured velocity, no slew region)

    @staticmethod
    def for_velocity_setpoints(spec: VehicleSpec) -> ZoneAxes:
        action_ne = (spec.action_index("vel_sp_n_mps"), spec.action_index("vel_sp_e_mps"))
        pos_ne = (spec.state_index("pos_n_m"), spec.state_index("pos_e_m"))
        has_vel = {"vel_n_mps", "vel_e_mps"} <= set(spec.state_names)
        vel_ne = (spec.state_index("vel_n_mps"), spec.state_index("vel_e_mps")) if has_vel else None
        return ZoneAxes(action_ne, pos_ne, vel_ne)


@dataclass(frozen=True)
class ShieldLimits:
    """Hard limits on the action vector, in spec units; defaults to the spec's own."""

    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    hold_action: tuple[float, ...]  # sent instead of anything non-finite
    max_step_change: tuple[float, ...] | None = None  # per tick, per component (None: unlimited)
    geofence: Geofence | None = None
    zones: Zones | None = None  # keep-out zones (velocity setpoints only; `zone_axes` says where)
    zone_lookahead_s: float = 1.0  # how long a setpoint is assumed held
    zone_slew_s: float = 0.5  # the vehicle's velocity lag to a new setpoint (see the module docstring)
    zone_axes: ZoneAxes | None = None

    def __post_init__(self) -> None:
        if self.zones is not None and self.zone_axes is None:
            raise ValueError("ShieldLimits.zones needs zone_axes: use ShieldLimits.from_spec(spec, zones=...) with a "
                             "spec that has pos_n_m, pos_e_m, vel_sp_n_mps and vel_sp_e_mps")
        if not (np.isfinite(self.zone_lookahead_s) and self.zone_lookahead_s > 0):
            raise ValueError(f"ShieldLimits.zone_lookahead_s: expected > 0 s, got {self.zone_lookahead_s}")
        if not (np.isfinite(self.zone_slew_s) and self.zone_slew_s >= 0):
            raise ValueError(f"ShieldLimits.zone_slew_s: expected >= 0 s, got {self.zone_slew_s}")

    @staticmethod
    def from_spec(
        spec: VehicleSpec, max_step_change: tuple[float, ...] | None = None, geofence: Geofence | None = None,
        zones: Zones | None = None, zone_lookahead_s: float = 1.0, zone_slew_s: float = 0.5,
    ) -> ShieldLimits:
        hold = np.clip(np.zeros(spec.action_dim), spec.action_low, spec.action_high)
        return ShieldLimits(
            tuple(map(float, spec.action_low)),
            tuple(map(float, spec.action_high)),
            tuple(map(float, hold)),
            max_step_change,
            geofence,
            zones,
            zone_lookahead_s,
            zone_slew_s,
            ZoneAxes.for_velocity_setpoints(spec) if zones is not None else None,
        )


@dataclass(frozen=True)
class ShieldResult:
    action: np.ndarray  # [A], safe to send
    clipped: bool  # outside the limits, or changing faster than allowed
    nonfinite: bool  # NaN/Inf or malformed, replaced by the hold action
    fenced: bool = False  # bent to stay inside the geofence
    zoned: bool = False  # replaced because its lookahead entered a keep-out zone


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
    state_ok = state is not None and bool(np.all(np.isfinite(state)))
    if fence is not None and state is not None and state_ok:
        bent = np.clip(out, *_fence_bounds(fence, state, len(out)))
        fenced = bool(np.any(bent != out))
        out = np.clip(bent.astype(out.dtype), low, high)
    zoned = False
    if limits.zones is not None and limits.zone_axes is not None and state is not None and state_ok:
        out, zoned = _keep_out(out, limits, limits.zones, limits.zone_axes, state, low, high)
    return ShieldResult(out, clipped, nonfinite, fenced, zoned)


def _fence_bounds(fence: Geofence, state: np.ndarray, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per action component, the velocity range [A] that stays inside the fence for `lookahead_s`."""
    lo, hi = np.full(action_dim, -np.inf), np.full(action_dim, np.inf)
    for (ai, si), lo_m, hi_m in zip(fence.axes, fence.min_ned_m, fence.max_ned_m, strict=True):
        pos = float(state[si])
        lo[ai] = (lo_m - pos) / fence.lookahead_s
        hi[ai] = (hi_m - pos) / fence.lookahead_s  # the fastest outward speed that stays inside
    return lo, hi


def _keep_out(
    out: np.ndarray, limits: ShieldLimits, zones: Zones, axes: ZoneAxes, state: np.ndarray,
    low: np.ndarray, high: np.ndarray,
) -> tuple[np.ndarray, bool]:
    """`out` [A] if its lookahead keeps out of the zones, else the closest safe replacement; (action, replaced)."""
    ne = list(axes.action_ne)
    p0 = np.array([state[axes.pos_ne[0]], state[axes.pos_ne[1]]], dtype=np.float64)
    w = np.zeros(2) if axes.vel_ne is None else np.array([state[axes.vel_ne[0]], state[axes.vel_ne[1]]], np.float64)
    lag = limits.zone_slew_s * w
    fence_lo, fence_hi = (-np.inf, np.inf) if limits.geofence is None else _fence_bounds(
        limits.geofence, state, len(out))

    def setpoints(v_ne: np.ndarray) -> np.ndarray:
        """`out` with its horizontal velocity replaced by each row of v_ne [n,2], kept in fence and limits [n,A]."""
        a = np.repeat(out[None].astype(np.float64), len(v_ne), axis=0)
        a[:, ne] = v_ne
        return np.clip(np.clip(a, fence_lo, fence_hi).astype(out.dtype), low, high)

    def safe(a: np.ndarray) -> np.ndarray:
        """Which setpoints a [n,A] keep their lookahead region (see the module docstring) out of the zones [n]."""
        v = limits.zone_lookahead_s * a[:, ne].astype(np.float64)  # [n,2]
        corners = np.stack([np.zeros_like(v), v, v + lag, np.broadcast_to(lag, v.shape)], axis=1)  # [n,4,2]
        return ~regions_enter(p0, p0 + corners, zones)

    def largest_safe(v_ne: np.ndarray) -> np.ndarray | None:
        """The safe setpoint along v_ne [2] with the largest scale in (0, 1] the grid finds (None: none)."""
        best, lo, hi = None, 0.0, 1.0
        for _ in range(2):
            scales = lo + (hi - lo) * np.arange(1, ZONE_GRID + 1) / ZONE_GRID
            cand = setpoints(scales[:, None] * v_ne)
            ok = np.flatnonzero(safe(cand))
            if len(ok) == 0:
                hi = scales[0]
                continue
            k = int(ok[-1])
            best, lo = cand[k], scales[k]
            if k == ZONE_GRID - 1:
                break
            hi = scales[k + 1]
        return best

    if safe(out[None])[0]:
        return out, False
    v = out[ne].astype(np.float64)
    candidates = []
    along = largest_safe(v)
    if along is not None:
        candidates.append(along)
    # Slide: drop the component of v into the zone at the point where v's lookahead meets its buffer.
    reached = along[ne].astype(np.float64) if along is not None else np.zeros(2)
    normal = _sd_gradient(zones, p0 + limits.zone_lookahead_s * reached)
    inward = float(v @ normal)
    if inward < 0:
        slide = largest_safe(v - inward * normal)
        if slide is not None:
            candidates.append(slide)
    if candidates:
        return min(candidates, key=lambda a: float(np.sum((a[ne] - v) ** 2))), True
    hold = setpoints(np.zeros((1, 2)))
    if not safe(hold)[0]:  # outside the fence, its way back in crosses a zone: the zone wins
        hold = out[None].copy()
        hold[:, ne] = 0.0
        hold = np.clip(hold, low, high)
    return hold[0], True


def _sd_gradient(zones: Zones, p: np.ndarray, h_m: float = 1e-3) -> np.ndarray:
    """Unit gradient of the zones' signed distance at p [2] (outward from the nearest zone); zeros where flat."""
    probe = p + h_m * np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    sd = zones.signed_distance_m(probe)
    if not np.all(np.isfinite(sd)):
        return np.zeros(2)
    g = np.array([sd[0] - sd[1], sd[2] - sd[3]])
    norm = float(np.hypot(*g))
    return g / norm if norm > 0 else np.zeros(2)
