"""The plane geometry of keep-out zones: distances between points, segments and polygons, the even-odd inside test,
convex regions, a circle as a polygon.

One module, so that the mission path's detour (`detour`) and the zones the planner's cost and the shield keep out
of (`zones`) measure a zone with the same functions. Everything is on the north/east plane in metres (a zone is a
vertical prism). Arrays broadcast over their leading axes; a polygon is a closed ring [M,2] (the last vertex joins
the first), either winding, simple (convex or not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

CIRCLE_SIDES = 16

__all__ = [
    "CIRCLE_SIDES",
    "Polygon",
    "circle_polygon",
    "cross",
    "distance_to_convex",
    "inside_convex",
    "point_segment_distance",
    "ring_edges",
    "segments_distance",
]


def cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The z component of u x v, broadcasting; [...,2] -> [...]."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points p to segments ab, broadcasting over the leading axes; [...,2] -> [...]."""
    abn, abe = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    apn, ape = p[..., 0] - a[..., 0], p[..., 1] - a[..., 1]
    den = abn * abn + abe * abe
    t = np.clip((apn * abn + ape * abe) / np.where(den > 0, den, 1.0), 0.0, 1.0)
    return np.hypot(apn - t * abn, ape - t * abe)


def segments_distance(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance between segments ab and cd (0 where they cross), broadcasting; [...,2] -> [...]. Touching cases
    leave an endpoint on the other segment: distance 0."""
    a, b, c, d = np.broadcast_arrays(a, b, c, d)
    crossing = (cross(b - a, c - a) * cross(b - a, d - a) < 0) & (cross(d - c, a - c) * cross(d - c, b - c) < 0)
    ends = point_segment_distance(np.stack([a, b, c, d]), np.stack([c, c, a, a]), np.stack([d, d, b, b]))
    return np.where(crossing, 0.0, ends.min(axis=0))


def ring_edges(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (starts, ends) [...,m,2] of closed rings [...,m,2]; a single point is one zero-length edge."""
    return vertices, np.roll(vertices, -1, axis=-2)


def inside_convex(points: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Points [...,P,2] strictly inside the convex polygons `regions` [...,m,2] (either winding) -> [...,P];
    a degenerate region (a point, a segment) has no inside: its edges carry the distance."""
    a, b = ring_edges(regions)
    area2 = cross(a, b).sum(axis=-1)  # [...]
    side = cross((b - a)[..., None, :, :], points[..., :, None, :] - a[..., None, :, :])  # [...,P,m]
    inside = np.all(side * np.sign(area2)[..., None, None] > 0, axis=-1)
    return inside & (np.abs(area2) > 1e-12)[..., None]


def distance_to_convex(points: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Distance from points [...,P,2] to the filled convex polygons `regions` [...,m,2] (0 inside) -> [...,P]."""
    a, b = ring_edges(regions)
    dist = point_segment_distance(points[..., :, None, :], a[..., None, :, :], b[..., None, :, :]).min(axis=-1)
    return np.where(inside_convex(points, regions), 0.0, dist)


@dataclass(frozen=True, eq=False)
class Polygon:
    """A simple polygon [M,2] (convex or not, either winding, no repeated consecutive vertex; the callers check),
    its edges precomputed: the planner's cost measures every imagined step against it."""

    vertices: np.ndarray  # [M,2] north, east (m); also the edge starts
    ends: np.ndarray = field(init=False, repr=False, compare=False)  # edge ends [M,2]
    _ab: np.ndarray = field(init=False, repr=False, compare=False)  # edge vectors [M,2]
    _inv_len2: np.ndarray = field(init=False, repr=False, compare=False)  # 1 / squared edge lengths [M]
    _n_per_e: np.ndarray = field(init=False, repr=False, compare=False)  # edge slope dn/de [M] (0 if flat)

    def __post_init__(self) -> None:
        a, b = ring_edges(self.vertices)
        object.__setattr__(self, "ends", b)
        ab = b - a
        object.__setattr__(self, "_ab", ab)
        object.__setattr__(self, "_inv_len2", 1.0 / np.sum(ab * ab, axis=1))
        flat = ab[:, 1] == 0  # edges of constant east: the even-odd ray (constant east) never straddles them
        object.__setattr__(self, "_n_per_e", np.where(flat, 0.0, ab[:, 0] / np.where(flat, 1.0, ab[:, 1])))

    def even_odd(self, points: np.ndarray) -> np.ndarray:
        """Inside by the even-odd rule (a ray towards +north crosses the boundary an odd number of times);
        points [...,2] -> bool [...]. Points on the boundary may land either way: callers use the distance."""
        a = self.vertices
        pn, pe = points[..., None, 0], points[..., None, 1]  # [...,1]
        ae, be = a[:, 1], self.ends[:, 1]
        straddles = (ae > pe) != (be > pe)
        n_cross = a[:, 0] + (pe - ae) * self._n_per_e
        return np.count_nonzero(straddles & (pn < n_cross), axis=-1) % 2 == 1

    def _edge_distance_m(self, p: np.ndarray) -> np.ndarray:
        """Points [...,2] -> [...] metres to the nearest edge."""
        a = self.vertices
        apn, ape = p[..., None, 0] - a[:, 0], p[..., None, 1] - a[:, 1]  # [...,M]
        t = np.clip((apn * self._ab[:, 0] + ape * self._ab[:, 1]) * self._inv_len2, 0.0, 1.0)
        dn, de = apn - t * self._ab[:, 0], ape - t * self._ab[:, 1]
        return np.sqrt((dn * dn + de * de).min(axis=-1))

    def signed_distance_m(self, points_ne: np.ndarray) -> np.ndarray:
        """Signed distance to the boundary (negative inside); points [...,2] -> [...] float64."""
        p = np.asarray(points_ne, dtype=np.float64)
        dist = self._edge_distance_m(p)
        return np.where(self.even_odd(p), -dist, dist)

    def distance_m(self, points_ne: np.ndarray) -> np.ndarray:
        """Distance to the filled polygon (0 inside); points [...,2] -> [...] float64."""
        p = np.asarray(points_ne, dtype=np.float64)
        return np.where(self.even_odd(p), 0.0, self._edge_distance_m(p))


def circle_polygon(center_ne: Sequence[float] | np.ndarray, radius_m: float, sides: int = CIRCLE_SIDES) -> np.ndarray:
    """[sides,2] the regular polygon circumscribing the circle: its edges touch the circle, its corners are
    radius / cos(pi / sides) out, so every point of the circle is inside."""
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise ValueError(f"circle radius: expected metres > 0, got {radius_m!r}")
    center = np.asarray(center_ne, dtype=np.float64).reshape(2)
    angle = 2.0 * math.pi * np.arange(sides) / sides
    corner_m = radius_m / math.cos(math.pi / sides)
    return center + corner_m * np.stack([np.cos(angle), np.sin(angle)], axis=1)
