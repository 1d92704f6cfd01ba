"""A mission leg routed around keep-out zones, before it is time-parametrised.

Why in the reference: the planner looks about a second ahead. A reference that runs straight through a zone pulls
the vehicle in while the zone cost pushes it out, and the vehicle stalls at the border; the way around is beyond
the horizon. So the reference goes around: `route_around` returns the shortest polyline from a leg's start to its
end that keeps `clearance_m` from every zone.

Geometry, on the north/east plane in metres (a zone is a vertical prism):

- A zone is any simple polygon [V,2], convex or not, either winding; a repeated closing vertex is accepted. A
  circle enters as `zone_geometry.circle_polygon` (`KeepOutCircle.outline_ne_m`), the regular 16-gon
  circumscribing it (radius / cos(pi/16) to its corners), so the polygon contains the circle.
- The inflated zone is exactly the set of points within `clearance_m` of the polygon: a segment is tested by its
  distance to each edge, so a concave polygon needs no special case, and a notch narrower than twice the clearance,
  or two zones closer than that, are closed to the route rather than threaded.
- The route's corners are the vertices of a polygon circumscribing the inflated zone: at each convex vertex the
  arc of radius `clearance_m` is replaced by tangent segments turning at most 22.5 degrees each, whose corners lie
  clearance / cos(step / 2) out. Reflex vertices get none (a shortest path never bends at them), and a corner that
  lies within the clearance of any zone (inside a notch, or near another zone) is dropped.
- Dijkstra over the visibility graph of start, end and corners: pairs whose segment keeps the clearance from every
  zone (`TOLERANCE_M` of float slack, as a path along an inflated edge is exactly at the clearance).

Pure functions of their inputs; the same inputs give the same route. The distances are `zone_geometry`'s, the
ones the shield and the planner's zone cost measure with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dreamlink.runtime.zone_geometry import Polygon, cross, ring_edges, segments_distance

MAX_ARC_STEP_RAD = math.pi / 8  # corners around a convex vertex: at most 22.5 degrees of turn each (as the 16-gon)
TOLERANCE_M = 1e-6  # a segment along an inflated edge is at the clearance exactly, up to rounding

__all__ = ["KeepOutError", "distance_to_zones", "route_around"]


class KeepOutError(ValueError):
    """A point that must be flown lies within the clearance of a keep-out zone, or no route keeps the clearance.
    `zone` is the index of the zone in the sequence given (None when no single zone is to blame)."""

    def __init__(self, message: str, zone: int | None = None) -> None:
        super().__init__(message)
        self.zone = zone


def distance_to_zones(points_ne: np.ndarray, keep_out: Sequence[np.ndarray]) -> np.ndarray:
    """points [...,2] -> [...] metres to the nearest zone, 0 inside one; inf without zones."""
    p = np.asarray(points_ne, dtype=np.float64)
    out = np.full(p.shape[:-1], np.inf)
    for i, polygon in enumerate(keep_out):
        out = np.minimum(out, Polygon(_ring(polygon, i)).distance_m(p))
    return out


def route_around(
    start_ne: Sequence[float] | np.ndarray,
    end_ne: Sequence[float] | np.ndarray,
    keep_out: Sequence[np.ndarray],
    clearance_m: float,
    start_name: str = "start",
    end_name: str = "end",
) -> list[tuple[float, float]]:
    """The shortest polyline from `start_ne` to `end_ne` (north, east, m) that stays `clearance_m` from every
    zone in `keep_out` (polygons [V,2], m): [start, end] when the straight segment already does, otherwise start,
    the corners around the zones, end. `start_name` / `end_name` name the points in errors.

    Raises KeepOutError when the start or the end lies within the clearance of a zone (naming the point and the
    zone), or when the zones leave no way through; ValueError for a malformed zone or clearance."""
    if not (math.isfinite(clearance_m) and clearance_m > 0):
        raise ValueError(f"clearance_m: expected metres > 0 (the buffer for tracking error), got {clearance_m!r}")
    start = np.asarray(start_ne, dtype=np.float64).reshape(2)
    end = np.asarray(end_ne, dtype=np.float64).reshape(2)
    rings = [_ring(polygon, i) for i, polygon in enumerate(keep_out)]
    polygons = [Polygon(ring) for ring in rings]
    for name, point in ((start_name, start), (end_name, end)):
        _check_clear(name, point, polygons, clearance_m)
    straight = [(float(start[0]), float(start[1])), (float(end[0]), float(end[1]))]
    if not rings or _segments_clearance(start[None], end[None], rings)[0] >= clearance_m - TOLERANCE_M:
        return straight

    corners = np.concatenate([_corners(ring, clearance_m) for ring in rings])
    keep = np.ones(len(corners), dtype=bool)
    for polygon in polygons:
        keep &= polygon.distance_m(corners) >= clearance_m - TOLERANCE_M
    points = np.concatenate([start[None], end[None], corners[keep]])  # [N,2]: 0 is the start, 1 the end
    i, j = np.triu_indices(len(points), k=1)
    visible = _segments_clearance(points[i], points[j], rings) >= clearance_m - TOLERANCE_M
    length = np.full((len(points), len(points)), np.inf)
    pair_m = np.linalg.norm(points[j] - points[i], axis=1)
    length[i[visible], j[visible]] = pair_m[visible]
    length[j[visible], i[visible]] = pair_m[visible]
    previous = _dijkstra(length, source=0)
    if previous[1] < 0:
        raise KeepOutError(f"no route from {start_name} at {_where(start)} to {end_name} at {_where(end)} keeps "
                           f"{clearance_m:g} m from the keep-out zones: they close the way or enclose one of the "
                           "points; move the waypoints or the zones")
    route, k = [], 1
    while k >= 0:
        route.append((float(points[k, 0]), float(points[k, 1])))
        k = int(previous[k])
    route.reverse()
    route[0], route[-1] = straight[0], straight[1]
    return route


# geometry ---------------------------------------------------------------------------------------------------------

def _ring(polygon: np.ndarray, index: int) -> np.ndarray:
    """The zone's vertices [V,2], counter-clockwise in (north, east), without a closing repeat or duplicates."""
    v = np.asarray(polygon, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"keep-out zone {index}: expected finite [V,2] north, east vertices (m), got shape "
                         f"{v.shape}")
    keep = np.linalg.norm(v - np.roll(v, 1, axis=0), axis=1) > 0
    v = v[keep] if keep.any() else v[:1]
    if len(v) < 3:
        raise ValueError(f"keep-out zone {index}: expected at least 3 distinct vertices, got {len(v)}")
    area2 = float(np.sum(cross(v, np.roll(v, -1, axis=0))))
    if area2 == 0:
        raise ValueError(f"keep-out zone {index}: its vertices enclose no area (all on one line)")
    return v if area2 > 0 else v[::-1].copy()


def _corners(ring: np.ndarray, clearance_m: float) -> np.ndarray:
    """[C,2] corners of the polygon circumscribing the inflated zone, around each convex vertex of `ring`."""
    e_in, e_out = ring - np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0) - ring
    turn = np.arctan2(cross(e_in, e_out), np.sum(e_in * e_out, axis=1))  # > 0 at a convex vertex (CCW ring)
    normal_in = np.arctan2(e_in[:, 1], e_in[:, 0]) - math.pi / 2  # outward normal of the edge arriving
    out = []
    for vertex, a0, th in zip(ring, normal_in, turn, strict=True):
        if th <= 1e-9:
            continue
        steps = math.ceil(th / MAX_ARC_STEP_RAD - 1e-9)
        step = th / steps
        angle = a0 + step * (np.arange(steps) + 0.5)
        out.append(vertex + clearance_m / math.cos(step / 2) * np.stack([np.cos(angle), np.sin(angle)], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2))


def _check_clear(name: str, point: np.ndarray, polygons: list[Polygon], clearance_m: float) -> None:
    for i, polygon in enumerate(polygons):
        ring = polygon.vertices
        distance_m = float(polygon.distance_m(point))
        if distance_m < clearance_m - TOLERANCE_M:
            how = "is inside" if distance_m == 0 else f"is {distance_m:.1f} m from"
            raise KeepOutError(f"{name} at {_where(point)} {how} keep-out zone {i} (around {_where(ring.mean(0))}), "
                               f"within its {clearance_m:g} m clearance; move the point out or the zone away", zone=i)


def _where(ne: np.ndarray) -> str:
    return f"{ne[0]:.1f} m N, {ne[1]:.1f} m E"


def _segments_clearance(p0: np.ndarray, p1: np.ndarray, rings: list[np.ndarray]) -> np.ndarray:
    """Segments p0 p1 [P,2] -> [P] metres to the nearest zone edge (0 where one crosses an edge). Inside a zone
    without crossing an edge means an endpoint inside, which the callers have excluded."""
    out = np.full(len(p0), np.inf)
    for ring in rings:
        out = np.minimum(out, segments_distance(p0[:, None], p1[:, None], *ring_edges(ring)).min(axis=1))
    return out


def _dijkstra(length: np.ndarray, source: int) -> np.ndarray:
    """Shortest paths over a dense [N,N] length matrix (inf: no edge) -> [N] predecessor of each node (-1 for the
    source and for the unreachable). Ties go to the lower index: the same graph gives the same route."""
    n = len(length)
    dist, previous, done = np.full(n, np.inf), np.full(n, -1), np.zeros(n, dtype=bool)
    dist[source] = 0.0
    for _ in range(n):
        k = int(np.argmin(np.where(done, np.inf, dist)))
        if done[k] or not math.isfinite(dist[k]):
            break
        done[k] = True
        through = dist[k] + length[k]
        better = (through < dist) & ~done
        dist[better], previous[better] = through[better], k
    return previous
