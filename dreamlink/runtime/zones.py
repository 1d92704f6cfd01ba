"""Keep-out zones: the plan's exclusion polygons and circles, or the autopilot's fence.

Everything is in the autopilot's local NED frame, in metres, on the north/east plane: a zone is a
vertical prism, unbounded in altitude, so only the horizontal position and velocity matter.

A zone enters a flight three times:

- in the mission path, which goes around its `outline_ne_m` at a clearance (`detour.route_around`;
  a circle as the polygon circumscribing it), so the reference never runs through it;
- as a cost in the imagined futures (`ZoneCost`, given to `MppiPlanner(extra_cost=...)`), so the
  planner goes around in time; and
- as a hard check in the shield (`ShieldLimits.zones`): a setpoint whose short lookahead enters a
  zone is replaced by the closest safe one, and the intervention is counted (`ShieldResult.zoned`).

The cost and the shield see the zones inflated by `Zones.margin_m`, the buffer that absorbs tracking error and position
noise. The fused ONNX planner graph carries its cost terms inside the graph and cannot call back into
numpy, and its graph is not changed for zones: a flight with keep-out zones plans with the numpy
`MppiPlanner` (the runtime chooses it), and the shield checks every setpoint whichever planner ran.

Conventions: `signed_distance_m` is negative inside, positive outside, zero on the boundary, and
"inside" is strict (a point on the inflated boundary is not inside: touching the buffer is allowed).
Polygons may be any simple polygon, convex or not (even-odd rule for inside, distance to the edges for
the magnitude); a ring whose last vertex repeats the first is accepted and closed implicitly. The
distances themselves are `zone_geometry`'s, which the detour measures with too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dreamlink.runtime.zone_geometry import (
    Polygon,
    circle_polygon,
    cross,
    distance_to_convex,
    inside_convex,
    point_segment_distance,
    ring_edges,
    segments_distance,
)
from dreamlink.spec import VehicleSpec

ZONE_WEIGHT = 1000.0  # cost of one imagined step inside a zone, in task cost units (before the depth term)
ZONE_DEPTH_SCALE_M = 1.0  # one scale deeper inside costs (1 + 1)^2 = 4x the entry constant
CLEARANCE_TOLERANCE_M = 1e-6  # float slack in the shield's check: a path may touch the buffer, not cross it

__all__ = [
    "KeepOut",
    "KeepOutCircle",
    "KeepOutPolygon",
    "ZoneCost",
    "Zones",
    "region_enters",
    "regions_enter",
    "segment_enters",
    "zone_cost",
]


@dataclass(frozen=True)
class KeepOutPolygon:
    """A simple polygon (convex or not), vertices (north, east) in metres in either winding."""

    vertices_ne_m: tuple[tuple[float, float], ...]
    _polygon: Polygon = field(init=False, repr=False, compare=False)  # the edges, precomputed

    def __post_init__(self) -> None:
        try:
            v = tuple((float(n), float(e)) for n, e in self.vertices_ne_m)
        except (TypeError, ValueError):
            raise ValueError(f"KeepOutPolygon.vertices_ne_m: expected (north_m, east_m) pairs, got "
                             f"{self.vertices_ne_m!r}") from None
        if len(v) > 3 and v[0] == v[-1]:
            v = v[:-1]
        object.__setattr__(self, "vertices_ne_m", v)
        arr = np.array(v, dtype=np.float64).reshape(-1, 2)
        if len(arr) < 3 or not np.all(np.isfinite(arr)):
            raise ValueError(f"KeepOutPolygon: need at least 3 finite (north_m, east_m) vertices, got {v}")
        a, b = ring_edges(arr)
        if np.any(np.all(a == b, axis=1)):
            raise ValueError(f"KeepOutPolygon: repeated consecutive vertex in {v}; drop the duplicate")
        if abs(0.5 * float(np.sum(cross(a, b)))) < 1e-9:
            raise ValueError(f"KeepOutPolygon: the vertices {v} enclose no area")
        m = len(arr)
        i, j = np.triu_indices(m, k=2)
        apart = (j - i) % m != m - 1  # the first and last edge share a vertex too
        i, j = i[apart], j[apart]
        touching = segments_distance(a[i], b[i], a[j], b[j]) <= 0.0
        if np.any(touching):
            k = int(np.argmax(touching))
            raise ValueError(f"KeepOutPolygon: edges {int(i[k])} and {int(j[k])} cross or touch; a zone must be a "
                             f"simple polygon (list the vertices in boundary order, split a figure-eight in two)")
        object.__setattr__(self, "_polygon", Polygon(arr))

    @property
    def bounds_ne_m(self) -> tuple[np.ndarray, np.ndarray]:
        """The bounding box: (min [2], max [2])."""
        return self._polygon.vertices.min(axis=0), self._polygon.vertices.max(axis=0)

    @property
    def outline_ne_m(self) -> np.ndarray:
        """The vertices [M,2]: what the mission path goes around."""
        return np.array(self.vertices_ne_m, dtype=np.float64)

    def signed_distance_m(self, points_ne: np.ndarray) -> np.ndarray:
        """Signed distance to the boundary (negative inside); points [...,2] -> [...] float64."""
        return self._polygon.signed_distance_m(points_ne)

    def distance_to_regions_m(self, regions: np.ndarray) -> np.ndarray:
        """Distance between the filled polygon and each filled convex region [N,m,2] (0 where they overlap) -> [N]."""
        a, b = self._polygon.vertices, self._polygon.ends
        overlap = self._polygon.even_odd(regions).any(axis=-1) | inside_convex(a, regions).any(axis=-1)
        ra, rb = ring_edges(regions)
        dist = segments_distance(ra[:, :, None], rb[:, :, None], a, b).min(axis=(1, 2))
        return np.where(overlap, 0.0, dist)

    def no_deeper_than_m(self, regions: np.ndarray, depth_m: float) -> np.ndarray:
        """Whether no point of each filled convex region [N,m,2] lies inside the polygon more than
        `depth_m` from its boundary -> bool [N]. Sufficient, not necessary: it asks for one edge within
        `depth_m` of every vertex of (region ∩ polygon) -- the region's vertices inside, the polygon's
        vertices in the region, the crossings of their boundaries -- which, the distance to a segment
        being convex, bounds every point of the intersection. A path leaving through the nearest edge passes."""
        tol = CLEARANCE_TOLERANCE_M
        n = len(regions)
        a, b = self._polygon.vertices, self._polygon.ends
        ra, rb = ring_edges(regions)
        e_ab, e_cd = (rb - ra)[:, :, None], b - a  # [N,m,1,2], [M,2]
        den = cross(e_ab, e_cd)  # [N,m,M]
        ac = a - ra[:, :, None]  # [N,m,M,2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t, u = cross(ac, e_cd) / den, cross(ac, e_ab) / den
        meet = (np.abs(den) > 1e-12) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
        crossings = ra[:, :, None] + np.where(meet, t, 0.0)[..., None] * e_ab  # [N,m,M,2]
        points = np.concatenate(
            [regions, np.broadcast_to(a, (n, *a.shape)), crossings.reshape(n, -1, 2)], axis=1)
        counted = np.concatenate(
            [self.signed_distance_m(regions) <= tol, distance_to_convex(a, regions) <= tol,
             meet.reshape(n, -1)], axis=1)  # [N,P]
        d = point_segment_distance(points[:, :, None, :], a, b)  # [N,P,M]
        worst = np.where(counted[..., None], d, 0.0).max(axis=1)  # [N,M] farthest counted point from each edge
        return np.any(worst <= depth_m, axis=-1)


@dataclass(frozen=True)
class KeepOutCircle:
    """A disc: centre (north, east) and radius in metres."""

    centre_ne_m: tuple[float, float]
    radius_m: float

    def __post_init__(self) -> None:
        c = tuple(float(x) for x in self.centre_ne_m)
        if len(c) != 2 or not all(np.isfinite(c)):
            raise ValueError(f"KeepOutCircle.centre_ne_m: expected finite (north_m, east_m), got {self.centre_ne_m}")
        if not (np.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError(f"KeepOutCircle.radius_m: expected > 0, got {self.radius_m}")
        object.__setattr__(self, "centre_ne_m", c)

    @property
    def bounds_ne_m(self) -> tuple[np.ndarray, np.ndarray]:
        """The bounding box: (min [2], max [2])."""
        c = np.asarray(self.centre_ne_m)
        return c - self.radius_m, c + self.radius_m

    def signed_distance_m(self, points_ne: np.ndarray) -> np.ndarray:
        """Signed distance to the circle (negative inside); points [...,2] -> [...] float64."""
        d = np.asarray(points_ne, dtype=np.float64) - np.asarray(self.centre_ne_m)
        return np.hypot(d[..., 0], d[..., 1]) - self.radius_m

    def min_signed_distance_m(self, regions: np.ndarray) -> np.ndarray:
        """The smallest signed distance over each filled convex region [N,m,2] (exact) -> [N]."""
        centre = np.asarray(self.centre_ne_m, dtype=np.float64)[None]  # [1,2]
        return distance_to_convex(centre, regions)[:, 0] - self.radius_m

    @property
    def outline_ne_m(self) -> np.ndarray:
        """[16,2] the regular polygon circumscribing the circle (`circle_polygon`): what the mission path goes
        around, so the path's clearance holds from the circle too."""
        return circle_polygon(self.centre_ne_m, self.radius_m)


KeepOut = KeepOutPolygon | KeepOutCircle


@dataclass(frozen=True)
class Zones:
    """The keep-out zones of a flight, each inflated by `margin_m` (a safety buffer, metres)."""

    keep_out: tuple[KeepOut, ...] = ()
    margin_m: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_out", tuple(self.keep_out))
        for z in self.keep_out:
            if not isinstance(z, KeepOutPolygon | KeepOutCircle):
                raise ValueError(f"Zones.keep_out: expected KeepOutPolygon or KeepOutCircle, got {z!r}")
        if not (np.isfinite(self.margin_m) and self.margin_m >= 0):
            raise ValueError(f"Zones.margin_m: expected a finite margin >= 0 m, got {self.margin_m}")

    def signed_distance_m(self, points_ne: np.ndarray) -> np.ndarray:
        """Signed distance to the nearest inflated zone (negative inside, +inf without zones);
        points [...,2] -> [...] float64."""
        p = np.asarray(points_ne, dtype=np.float64)
        out = np.full(p.shape[:-1], np.inf)
        for z in self.keep_out:
            np.minimum(out, z.signed_distance_m(p), out=out)
        return out - self.margin_m

    def inside(self, points_ne: np.ndarray) -> np.ndarray:
        """Strictly inside some inflated zone; points [...,2] -> bool [...]."""
        return self.signed_distance_m(points_ne) < 0

    def depth_m(self, points_ne: np.ndarray) -> np.ndarray:
        """How far inside the inflated zones each point is (0 outside); points [...,2] -> [...] float64.
        Only points in a zone's inflated bounding box are measured: most imagined futures are far from any."""
        p = np.asarray(points_ne, dtype=np.float64)
        flat = p.reshape(-1, 2)
        depth = np.zeros(len(flat))
        for z in self.keep_out:
            lo, hi = z.bounds_ne_m
            near = np.flatnonzero(np.all((flat > lo - self.margin_m) & (flat < hi + self.margin_m), axis=1))
            if len(near):
                depth[near] = np.maximum(depth[near], self.margin_m - z.signed_distance_m(flat[near]))
        return depth.reshape(p.shape[:-1])


def regions_enter(start_ne: Sequence[float] | np.ndarray, regions_ne: np.ndarray, zones: Zones) -> np.ndarray:
    """For each convex region [N,m,2] (vertices in boundary order, each containing `start_ne`), whether a
    path confined to it may enter a zone: come closer than the margin to a zone it starts clear of, or go
    deeper into one it starts inside (so holding still, and leaving, never enter) -> bool [N].

    Exact for circles and for starts outside a polygon; for a start inside a polygon itself (past the
    buffer) it is conservative and may refuse a path that does not go deeper."""
    start = np.asarray(start_ne, dtype=np.float64).reshape(2)
    regions = np.asarray(regions_ne, dtype=np.float64).reshape(len(regions_ne), -1, 2)
    box_lo, box_hi = regions.min(axis=(0, 1)), regions.max(axis=(0, 1))
    tol = CLEARANCE_TOLERANCE_M
    enters = np.zeros(len(regions), dtype=bool)
    for z in zones.keep_out:
        # Keep the buffer from zones the start is clear of; get no closer to those it is already in.
        keep_m = min(float(z.signed_distance_m(start)), zones.margin_m)
        z_lo, z_hi = z.bounds_ne_m
        if keep_m >= 0 and float(np.max(np.maximum(z_lo - box_hi, box_lo - z_hi))) >= keep_m:
            continue  # the boxes alone are that far apart
        if isinstance(z, KeepOutCircle):
            enters |= z.min_signed_distance_m(regions) < keep_m - tol
        elif keep_m > tol:
            enters |= z.distance_to_regions_m(regions) < keep_m - tol
        else:  # no margin left to measure: (0 when overlapping cannot tell touching from crossing)
            enters |= ~z.no_deeper_than_m(regions, -keep_m + tol)
    return enters


def region_enters(start_ne: Sequence[float] | np.ndarray, region_ne: np.ndarray, zones: Zones) -> bool:
    """`regions_enter` for one convex region [m,2]."""
    return bool(regions_enter(start_ne, np.asarray(region_ne, dtype=np.float64)[None], zones)[0])


def segment_enters(start_ne: Sequence[float] | np.ndarray, end_ne: Sequence[float] | np.ndarray,
                   zones: Zones) -> bool:
    """Whether the straight line from `start_ne` to `end_ne` enters a zone (as `regions_enter`)."""
    return region_enters(start_ne, np.array([start_ne, end_ne], dtype=np.float64), zones)


def zone_cost(traj: np.ndarray, spec: VehicleSpec, zones: Zones, weight: float = ZONE_WEIGHT) -> np.ndarray:
    """Keep-out cost of K imagined trajectories: traj [K,H+1,S] (index 0 = the current state) -> [K].

    Each imagined step inside an inflated zone costs `weight * (1 + depth / ZONE_DEPTH_SCALE_M)^2`,
    depth being how far inside it is (metres). The constant makes any sample that enters pay at least
    `weight` per step, so with `weight` far above the temperature MPPI gives it next to no weight; the
    depth term keeps ordering the samples when all of them enter (shallow and brief beats deep and
    long), which a flat wall penalty would not. It rises with slope 2 at the boundary, not 0, so
    grazing a little deeper is already worse. It is finite for every finite trajectory, and zero
    outside, so it never bends a plan that stays clear (a NaN position gives a NaN cost, which the
    planner scores +inf)."""
    pos = traj[:, 1:, [spec.state_index("pos_n_m"), spec.state_index("pos_e_m")]]  # [K,H,2]
    depth = zones.depth_m(pos)  # [K,H]
    per_step = np.where(depth > 0, (1.0 + depth / ZONE_DEPTH_SCALE_M) ** 2, 0.0)
    return weight * per_step.sum(axis=1)


@dataclass(frozen=True)
class ZoneCost:
    """The keep-out cost as an `MppiPlanner.extra_cost`: (traj [K,H+1,S], samples [K,H,A]) -> [K]."""

    spec: VehicleSpec
    zones: Zones
    weight: float = ZONE_WEIGHT

    def __post_init__(self) -> None:
        for name in ("pos_n_m", "pos_e_m"):  # a spec without them is refused at start, not in flight
            self.spec.state_index(name)
        if not (np.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"ZoneCost.weight: expected a finite weight > 0, got {self.weight}")

    def __call__(self, traj: np.ndarray, samples: np.ndarray) -> np.ndarray:
        return zone_cost(traj, self.spec, self.zones, self.weight)
