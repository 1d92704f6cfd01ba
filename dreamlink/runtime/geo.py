"""Global coordinates (latitude, longitude, altitude) to the autopilot's local NED frame and back.

A mission is written in latitude and longitude; the planner tracks positions in the local NED frame whose
origin the autopilot chose (its EKF origin, GPS_GLOBAL_ORIGIN; usually where it first had a fix). A point
has to land where the autopilot itself would put it, so the conversion is the autopilot's own short-range
math, not a geodesy library:

- ArduPilot (`projection="ardupilot"`, the default: the SITL dreamlink flies against): `Location::get_distance_NE`
  and `Location::offset`: latitude difference times LATLON_TO_M (0.011131884502145034 m per 1e-7 degree, a sphere
  of radius 6378.1 km), longitude difference also scaled by cos(mean latitude of the two points).
- PX4 (`projection="px4"`): `MapProjection::project` / `reproject`, an azimuthal equidistant projection on a
  sphere of radius 6371.0 km.

The two disagree by 1.12 m for a point 1 km from the origin at CMAC (latitude -35.36; 1.11 m of it from the two
radii, 6 cm from the projections; 1.2 m at latitude 80), 4.5 cm at 40 m: small for a mission, but pick the
one of the autopilot flown so that a waypoint and the autopilot's LOCAL_POSITION_NED agree.

Altitudes follow the mission item's MAV_FRAME: GLOBAL (0) and GLOBAL_INT (5) are AMSL; GLOBAL_RELATIVE_ALT (3)
and its _INT (6) are above home; GLOBAL_TERRAIN_ALT (10, 11) are above the terrain, which needs a terrain
model dreamlink does not have, so they are refused rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# MAV_FRAME numbers (plain ints: runtime/ does not import pymavlink).
MAV_FRAME_GLOBAL = 0
MAV_FRAME_LOCAL_NED = 1
MAV_FRAME_MISSION = 2
MAV_FRAME_GLOBAL_RELATIVE_ALT = 3
MAV_FRAME_LOCAL_ENU = 4
MAV_FRAME_GLOBAL_INT = 5
MAV_FRAME_GLOBAL_RELATIVE_ALT_INT = 6
MAV_FRAME_LOCAL_OFFSET_NED = 7
MAV_FRAME_BODY_NED = 8
MAV_FRAME_BODY_OFFSET_NED = 9
MAV_FRAME_GLOBAL_TERRAIN_ALT = 10
MAV_FRAME_GLOBAL_TERRAIN_ALT_INT = 11

FRAME_NAMES = {
    MAV_FRAME_GLOBAL: "MAV_FRAME_GLOBAL",
    MAV_FRAME_LOCAL_NED: "MAV_FRAME_LOCAL_NED",
    MAV_FRAME_MISSION: "MAV_FRAME_MISSION",
    MAV_FRAME_GLOBAL_RELATIVE_ALT: "MAV_FRAME_GLOBAL_RELATIVE_ALT",
    MAV_FRAME_LOCAL_ENU: "MAV_FRAME_LOCAL_ENU",
    MAV_FRAME_GLOBAL_INT: "MAV_FRAME_GLOBAL_INT",
    MAV_FRAME_GLOBAL_RELATIVE_ALT_INT: "MAV_FRAME_GLOBAL_RELATIVE_ALT_INT",
    MAV_FRAME_LOCAL_OFFSET_NED: "MAV_FRAME_LOCAL_OFFSET_NED",
    MAV_FRAME_BODY_NED: "MAV_FRAME_BODY_NED",
    MAV_FRAME_BODY_OFFSET_NED: "MAV_FRAME_BODY_OFFSET_NED",
    MAV_FRAME_GLOBAL_TERRAIN_ALT: "MAV_FRAME_GLOBAL_TERRAIN_ALT",
    MAV_FRAME_GLOBAL_TERRAIN_ALT_INT: "MAV_FRAME_GLOBAL_TERRAIN_ALT_INT",
}
AMSL_FRAMES = (MAV_FRAME_GLOBAL, MAV_FRAME_GLOBAL_INT)
RELATIVE_ALT_FRAMES = (MAV_FRAME_GLOBAL_RELATIVE_ALT, MAV_FRAME_GLOBAL_RELATIVE_ALT_INT)
TERRAIN_ALT_FRAMES = (MAV_FRAME_GLOBAL_TERRAIN_ALT, MAV_FRAME_GLOBAL_TERRAIN_ALT_INT)
PLACEABLE_FRAMES = AMSL_FRAMES + RELATIVE_ALT_FRAMES

LATLON_TO_M = 0.011131884502145034  # ArduPilot LOCATION_SCALING_FACTOR: metres per 1e-7 degree (R = 6378.1 km)
PX4_EARTH_RADIUS_M = 6371000.0  # PX4 CONSTANTS_RADIUS_OF_EARTH
PROJECTIONS = ("ardupilot", "px4")


def frame_name(frame: int) -> str:
    return f"{FRAME_NAMES.get(frame, 'MAV_FRAME')} ({frame})"


def frame_problem(frame: int) -> str | None:
    """Why a position in `frame` cannot be placed in the local frame, or None if it can."""
    if frame in PLACEABLE_FRAMES:
        return None
    if frame in TERRAIN_ALT_FRAMES:
        return (f"{frame_name(frame)} cannot be placed: its altitudes are above terrain and dreamlink has no "
                "terrain model; use altitudes relative to home (MAV_FRAME_GLOBAL_RELATIVE_ALT, 3) or AMSL "
                "(MAV_FRAME_GLOBAL, 0)")
    return (f"{frame_name(frame)} cannot be placed: not a global frame; use MAV_FRAME_GLOBAL_RELATIVE_ALT (3) or "
            "MAV_FRAME_GLOBAL (0) (or their _INT variants, 6 and 5)")


def altitude_amsl_m(alt_m: float, frame: int, home_alt_amsl_m: float) -> float:
    """A mission item's altitude `alt_m` in MAV_FRAME `frame` as metres above mean sea level.

    Raises ValueError for frames whose altitude cannot be placed (terrain, local, body)."""
    problem = frame_problem(frame)
    if problem is not None:
        raise ValueError(problem)
    return alt_m if frame in AMSL_FRAMES else home_alt_amsl_m + alt_m


def _wrap_deg(angle_deg: float) -> float:
    """Into [-180, 180): a mission across the antimeridian is still a short hop."""
    return (angle_deg + 180.0) % 360.0 - 180.0


def _longitude_scale(lat_deg: float) -> float:
    return max(math.cos(math.radians(lat_deg)), 0.01)  # ArduPilot's floor keeps the poles finite


@dataclass(frozen=True)
class LocalFrame:
    """The autopilot's local NED frame: origin at (`origin_lat_deg`, `origin_lon_deg`, `origin_alt_m` AMSL).

    `projection` is the autopilot's own math ("ardupilot" or "px4", see the module docstring). Down is
    `origin_alt_m - altitude`: the autopilot's local z is measured from its origin's altitude, not from home.
    """

    origin_lat_deg: float
    origin_lon_deg: float
    origin_alt_m: float
    projection: str = "ardupilot"

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise ValueError(f"LocalFrame.projection: expected one of {PROJECTIONS}, got {self.projection!r}")
        if not (math.isfinite(self.origin_lat_deg) and -90.0 <= self.origin_lat_deg <= 90.0):
            raise ValueError(f"LocalFrame.origin_lat_deg: expected a latitude in [-90, 90], got {self.origin_lat_deg}")
        if not (math.isfinite(self.origin_lon_deg) and -180.0 <= self.origin_lon_deg <= 180.0):
            raise ValueError(f"LocalFrame.origin_lon_deg: expected a longitude in [-180, 180], "
                             f"got {self.origin_lon_deg}")
        if not math.isfinite(self.origin_alt_m):
            raise ValueError(f"LocalFrame.origin_alt_m: expected a finite altitude (m AMSL), got {self.origin_alt_m}")

    def to_ned(self, lat_deg: float, lon_deg: float, alt_m: float) -> tuple[float, float, float]:
        """(latitude, longitude in degrees, altitude in m AMSL) -> (north, east, down) in metres from the origin."""
        n_m, e_m = self._project(lat_deg, lon_deg)
        return n_m, e_m, self.origin_alt_m - alt_m

    def to_global(self, n_m: float, e_m: float, d_m: float) -> tuple[float, float, float]:
        """(north, east, down) in metres from the origin -> (latitude, longitude in degrees, altitude in m AMSL)."""
        lat_deg, lon_deg = self._reproject(n_m, e_m)
        return lat_deg, lon_deg, self.origin_alt_m - d_m

    def _project(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        if self.projection == "px4":
            return _px4_project(self.origin_lat_deg, self.origin_lon_deg, lat_deg, lon_deg)
        dlat_e7 = (lat_deg - self.origin_lat_deg) * 1e7
        dlon_e7 = _wrap_deg(lon_deg - self.origin_lon_deg) * 1e7
        scale = _longitude_scale(0.5 * (lat_deg + self.origin_lat_deg))
        return dlat_e7 * LATLON_TO_M, dlon_e7 * LATLON_TO_M * scale

    def _reproject(self, n_m: float, e_m: float) -> tuple[float, float]:
        if self.projection == "px4":
            return _px4_reproject(self.origin_lat_deg, self.origin_lon_deg, n_m, e_m)
        dlat_deg = n_m / LATLON_TO_M * 1e-7
        # Location::offset scales by the latitude half-way along, so this inverts to_ned exactly.
        dlon_deg = e_m / LATLON_TO_M * 1e-7 / _longitude_scale(self.origin_lat_deg + 0.5 * dlat_deg)
        return self.origin_lat_deg + dlat_deg, _wrap_deg(self.origin_lon_deg + dlon_deg)


def _px4_project(lat0_deg: float, lon0_deg: float, lat_deg: float, lon_deg: float) -> tuple[float, float]:
    lat0, lat = math.radians(lat0_deg), math.radians(lat_deg)
    dlon = math.radians(lon_deg - lon0_deg)
    arg = math.sin(lat0) * math.sin(lat) + math.cos(lat0) * math.cos(lat) * math.cos(dlon)
    c = math.acos(min(max(arg, -1.0), 1.0))
    k = c / math.sin(c) if c > 0 else 1.0
    n_m = k * (math.cos(lat0) * math.sin(lat) - math.sin(lat0) * math.cos(lat) * math.cos(dlon)) * PX4_EARTH_RADIUS_M
    e_m = k * math.cos(lat) * math.sin(dlon) * PX4_EARTH_RADIUS_M
    return n_m, e_m


def _px4_reproject(lat0_deg: float, lon0_deg: float, n_m: float, e_m: float) -> tuple[float, float]:
    x, y = n_m / PX4_EARTH_RADIUS_M, e_m / PX4_EARTH_RADIUS_M
    c = math.hypot(x, y)
    if c == 0:
        return lat0_deg, lon0_deg
    lat0 = math.radians(lat0_deg)
    sin_c, cos_c = math.sin(c), math.cos(c)
    lat = math.asin(cos_c * math.sin(lat0) + x * sin_c * math.cos(lat0) / c)
    dlon = math.atan2(y * sin_c, c * math.cos(lat0) * cos_c - x * math.sin(lat0) * sin_c)
    return math.degrees(lat), _wrap_deg(lon0_deg + math.degrees(dlon))
