"""A mission's waypoints as the reference the planner tracks: position and velocity in local NED, a pure
function of time.

Which items fly: NAV_TAKEOFF (first), NAV_WAYPOINT (hold time param1, acceptance radius param2), NAV_LAND,
NAV_RETURN_TO_LAUNCH and DO_CHANGE_SPEED; `runtime.mission_commands` refuses the rest before anything is armed.

The path (`MissionPath.from_items`):

- t = 0 is hovering at the take-off point, straight above home at the NAV_TAKEOFF altitude (`takeoff_altitude_m`
  when the mission has none): the autopilot's own take-off gets the vehicle there, as for the figure-eight.
  NAV_TAKEOFF's latitude and longitude are ignored, as ArduPilot Copter does.
- Each leg is a straight line flown rest to rest with a trapezoidal speed profile (acceleration
  `max_accel_mps2`), at the mission's speed capped so that the vertical part stays within the climb and descent
  limits and the horizontal part within `max_horizontal_speed_mps` (`path_config_for` sets all three to 80 % of
  what the vehicle's velocity commands reach). Position and velocity are continuous; acceleration steps.
- At a waypoint without a hold time, and turning by at most `max_pass_turn_deg`, the next leg starts before the
  previous one has stopped: the two profiles overlap, the corner is cut, and the overlap is as long as keeps the
  path within the waypoint's acceptance radius (param2; 0 means `acceptance_radius_m`, 1 m: half the 2 m the
  autopilots use by default, WPNAV_RADIUS / NAV_ACC_RAD, so a vehicle lagging its reference still counts as
  there). On a straight line the speed does not dip at all. While two legs overlap the acceleration adds up,
  to at most 2 sin(turn/2) times `max_accel_mps2`.
- A waypoint with a hold time (param1, s), a sharper turn, and the point above a landing are stops: the vehicle
  arrives at rest and (for a hold) stays there, velocity exactly 0.
- DO_CHANGE_SPEED (param2 m/s; param1 0/1 ground speed, 2 climb, 3 descent limit) applies from the leg that
  starts after it, as QGroundControl draws it.
- NAV_LAND flies to above its point (the current position when its latitude and longitude are 0) at the current
  altitude, stops, descends at the descent limit to `land_slow_altitude_m` and at `land_speed_mps` to the ground;
  NAV_RETURN_TO_LAUNCH does the same above home (no climb to an RTL altitude first). Ground is home's altitude:
  without a terrain model, nothing better is known. Either ends the mission; items after it are refused.
- Keep-out zones (`keep_out`, polygons in north/east metres; a circle as `zone_geometry.circle_polygon`): each leg goes
  around them at `clearance_m` (`detour.route_around`: the planner's ~1 s horizon cannot find the way around a
  zone the reference runs through; it stalls at the border). The detour's corners are vertices of the path but not
  waypoints: `waypoints_ned`, `waypoint_seq` and `arrival_s` name the mission's items only. Altitude changes
  linearly with distance along the detour. A detour corner is cut like a waypoint's, with an acceptance radius of
  clearance / 2: the legs keep the clearance and a cut strays at most its radius from them, so the reference never
  comes closer than clearance / 2 to a zone. A waypoint's own (wider) radius is narrowed near a zone so the same
  holds. A waypoint, take-off point or landing within the clearance of a zone is refused before anything flies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from dreamlink.firmware_bridge.mission_items import MissionItem
from dreamlink.runtime.detour import KeepOutError, distance_to_zones, route_around
from dreamlink.runtime.geo import LocalFrame, altitude_amsl_m
from dreamlink.runtime.mission_commands import (
    MAV_CMD_DO_CHANGE_SPEED,
    MAV_CMD_NAV_LAND,
    MAV_CMD_NAV_RETURN_TO_LAUNCH,
    MAV_CMD_NAV_TAKEOFF,
    MAV_CMD_NAV_WAYPOINT,
    SPEED_TYPE_CLIMB,
    SPEED_TYPE_DESCENT,
    MissionError,
    check_items,
    command_name,
)
from dreamlink.spec import VehicleSpec


@dataclass(frozen=True)
class PathConfig:
    """How the path is flown between the waypoints. Vertical limits and the landing follow ArduPilot Copter's
    defaults (WPNAV_SPEED_UP 2.5, WPNAV_SPEED_DN 1.5, LAND_SPEED 0.5 m/s; its LAND_ALT_LOW is 10 m, lower here
    to keep landings short); acceleration is gentler than its WPNAV_ACCEL 2.5 m/s² for a learned model."""

    max_accel_mps2: float = 1.5
    max_climb_mps: float = 2.5
    max_descent_mps: float = 1.5
    land_speed_mps: float = 0.5
    land_slow_altitude_m: float = 3.0
    acceptance_radius_m: float = 0.3  # for waypoints whose param2 is 0: corners are cut by at most this (goal 0.5 m)
    max_pass_turn_deg: float = 120.0  # sharper turns stop at the waypoint
    max_speed_mps: float = 20.0  # a faster mission speed is refused (ArduPilot's WPNAV_SPEED maximum)
    # The fastest the vehicle is asked to fly horizontally (a faster mission speed is flown at this): see
    # `path_config_for`, which keeps the reference inside what the vehicle's commands can reach.
    max_horizontal_speed_mps: float = math.inf
    max_range_m: float = 2000.0  # a waypoint farther from home is refused: a plan made for another place

    def __post_init__(self) -> None:
        for name in ("max_accel_mps2", "max_climb_mps", "max_descent_mps", "land_speed_mps", "acceptance_radius_m",
                     "max_speed_mps", "max_range_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PathConfig.{name}: expected a finite number > 0, got {value!r}")
        if not self.max_horizontal_speed_mps > 0:
            raise ValueError(f"PathConfig.max_horizontal_speed_mps: expected > 0 (inf for no cap), "
                             f"got {self.max_horizontal_speed_mps!r}")
        if not (0 <= self.land_slow_altitude_m < 1000):
            raise ValueError(f"PathConfig.land_slow_altitude_m: expected metres >= 0, got {self.land_slow_altitude_m}")
        if not (0 <= self.max_pass_turn_deg <= 180):
            raise ValueError(f"PathConfig.max_pass_turn_deg: expected degrees in [0, 180], "
                             f"got {self.max_pass_turn_deg}")


def path_config_for(spec: VehicleSpec, headroom: float = 0.8, base: PathConfig | None = None) -> PathConfig:
    """`base` (default PathConfig) with its horizontal speed, climb and descent capped at `headroom` times what the
    vehicle's velocity commands reach (actions vel_sp_n_mps, vel_sp_e_mps, vel_sp_d_mps). A reference at the command
    limit leaves the planner nothing to catch up with once the vehicle lags it: on the real PX4 SITL a 3 m/s plan
    with ±3 m/s commands missed its first corner by 1.4 m, at 2 m/s by 0.26 m. A vehicle without those actions
    gets `base` unchanged."""
    cfg = base or PathConfig()
    if not 0 < headroom <= 1:
        raise ValueError(f"path headroom: expected a fraction in (0, 1], got {headroom!r}")
    names = ("vel_sp_n_mps", "vel_sp_e_mps", "vel_sp_d_mps")
    if not all(n in spec.action_names for n in names):
        return cfg
    low, high = spec.action_low.astype(np.float64), spec.action_high.astype(np.float64)
    n, e, d = (spec.action_index(name) for name in names)
    horizontal = headroom * float(min(-low[n], high[n], -low[e], high[e]))
    climb, descent = headroom * -float(low[d]), headroom * float(high[d])
    if min(horizontal, climb, descent) <= 0:
        return cfg
    return replace(cfg, max_horizontal_speed_mps=min(cfg.max_horizontal_speed_mps, float(horizontal)),
                   max_climb_mps=min(cfg.max_climb_mps, climb), max_descent_mps=min(cfg.max_descent_mps, descent),
                   land_speed_mps=min(cfg.land_speed_mps, descent))


@dataclass(frozen=True)
class _Vertex:
    ned_m: tuple[float, float, float]
    seq: int  # the mission item it comes from
    speed_mps: float  # of the leg that ends here (already within the vertical limits)
    hold_s: float = 0.0
    radius_m: float = 1.0
    stop: bool = False
    detour: bool = False  # a corner around a keep-out zone, not a waypoint
    # Near keep-out zones (inf without): a cut that misses the legs by at most `cut_safe_m`, or that starts within
    # `zone_margin_m` of the vertex (its distance to the nearest zone less clearance / 2), keeps clearance / 2.
    cut_safe_m: float = math.inf
    zone_margin_m: float = math.inf


def _corner_shape(cos_turn: float) -> tuple[float, float]:
    """For two rest-to-rest legs overlapping by δ around a corner, the path's closest approach to the corner is
    (a δ² / 2) * m at time λ δ into the overlap; returns (m, λ). Depends only on the turn."""
    lam = np.linspace(0.0, 1.0, 2001)
    p, q = (1.0 - lam) ** 2, lam**2  # distance still to go on the first leg, and gone on the second, / (a δ² / 2)
    dist2 = p * p + q * q - 2.0 * cos_turn * p * q
    i = int(np.argmin(dist2))
    return math.sqrt(max(float(dist2[i]), 0.0)), float(lam[i])


@dataclass(frozen=True, eq=False)
class MissionPath:
    """The reference through a mission's waypoints (see the module docstring); `position_velocity` as Figure8's.

    `waypoints_ned` [W,3] are the mission's points in the autopilot's local NED frame (the take-off point first,
    then each waypoint, the points above a landing and the touchdown), `waypoint_seq` [W] the mission item each
    comes from (0, home, for a take-off point the mission did not name), `arrival_s` [W] when the path is closest
    to each (planned), `hold_s` [W] how long it stays, `acceptance_m` [W] how close it passes. `path_ned` [P,3]
    are the vertices of the legs: the waypoints and, between them, the corners of detours around keep-out zones
    (P = W without zones in the way). Legs [K = P-1]: `leg_start_s`, `leg_length_m`, `leg_speed_mps` (peak),
    `leg_unit` [K,3]."""

    waypoints_ned: np.ndarray
    path_ned: np.ndarray
    waypoint_seq: tuple[int, ...]
    arrival_s: np.ndarray
    hold_s: np.ndarray
    acceptance_m: np.ndarray
    leg_start_s: np.ndarray
    leg_length_m: np.ndarray
    leg_speed_mps: np.ndarray
    leg_unit: np.ndarray
    max_accel_mps2: float
    takeoff_altitude_m: float  # above home: what the autopilot's take-off climbs to before t = 0
    _accel_s: np.ndarray = field(repr=False)  # time each leg accelerates (and decelerates)
    _duration_s: np.ndarray = field(repr=False)  # of each leg

    @property
    def duration_s(self) -> float:
        """From the take-off point to the end of the last hold (the touchdown, for a mission that lands)."""
        return float(self.arrival_s[-1] + self.hold_s[-1])

    @property
    def start_ned(self) -> np.ndarray:
        return self.waypoints_ned[0]

    @staticmethod
    def from_items(
        items: Sequence[MissionItem],
        frame: LocalFrame,
        takeoff_altitude_m: float,
        default_speed_mps: float,
        home_ned: Sequence[float] | np.ndarray,
        config: PathConfig | None = None,
        keep_out: Sequence[np.ndarray] = (),
        clearance_m: float = 2.0,
    ) -> MissionPath:
        """The path through `items` (mission items, home excluded) in `frame`, the autopilot's local frame.

        `home_ned` is home in that frame (HOME_POSITION): relative altitudes are above it, the take-off and RTL
        are above it, and its altitude is the ground. `default_speed_mps` is the mission's speed until a
        DO_CHANGE_SPEED (a QGC plan's hoverSpeed, or the user's); `takeoff_altitude_m` (above home) is used when
        the mission has no NAV_TAKEOFF. `keep_out` are the zones to go around (polygons [V,2], north/east m in
        `frame`; a plan's exclusion fences), by `clearance_m`. Raises MissionError for a mission that cannot be
        flown, a point within the clearance of a zone among them."""
        cfg = config or PathConfig()
        check_items(items)
        if not items:
            raise MissionError("mission: no items to fly (a plan with only a geofence or rally points?)")
        if not (math.isfinite(default_speed_mps) and 0 < default_speed_mps <= cfg.max_speed_mps):
            raise MissionError(f"mission speed: expected (0, {cfg.max_speed_mps:g}] m/s, got {default_speed_mps!r}")
        if not (math.isfinite(takeoff_altitude_m) and takeoff_altitude_m > 0):
            raise MissionError(f"take-off altitude: expected metres above home > 0, got {takeoff_altitude_m!r}")
        if keep_out and not (math.isfinite(clearance_m) and clearance_m > 0):
            raise MissionError(f"keep-out clearance: expected metres > 0, got {clearance_m!r}")
        home = np.asarray(home_ned, dtype=np.float64).reshape(3)
        home_alt_amsl_m = frame.origin_alt_m - float(home[2])
        builder = _Builder(cfg, home, home_alt_amsl_m, frame, default_speed_mps, takeoff_altitude_m,
                           tuple(np.asarray(zone, dtype=np.float64) for zone in keep_out), clearance_m)
        for item in items:
            builder.add(item)
        if not builder.vertices:
            builder.start(float(home[2]) - takeoff_altitude_m, seq=0)
        return _timed(builder.vertices, cfg, float(home[2]) - builder.vertices[0].ned_m[2])

    def position_velocity(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """t_s [T] (s since the path's start) -> positions [T,3] (m, NED), velocities [T,3] (m/s); held at the
        ends."""
        t = np.asarray(t_s, dtype=np.float64)
        a, length, peak = self.max_accel_mps2, self.leg_length_m, self.leg_speed_mps
        ta, total = self._accel_s, self._duration_s
        tau = np.clip(t[..., None] - self.leg_start_s, 0.0, total)  # [T,K] time into each leg
        accelerating, cruising = tau < ta, tau <= total - ta
        s = np.where(accelerating, 0.5 * a * tau**2,
                     np.where(cruising, 0.5 * a * ta**2 + peak * (tau - ta), length - 0.5 * a * (total - tau) ** 2))
        ds = np.where(accelerating, a * tau, np.where(cruising, peak, a * (total - tau)))
        return self.path_ned[0] + s @ self.leg_unit, ds @ self.leg_unit

    def reference_window(
        self, t_s: float, horizon: int, period_s: float, spec: VehicleSpec, start_s: float = 0.0
    ) -> np.ndarray:
        """The reference state for each of the next `horizon` steps after `t_s`: [H,S] float32, as
        `mission.reference_window`: position and velocity from the path (path time = t_s - start_s), the rest 0."""
        t = (t_s - start_s) + period_s * np.arange(1, horizon + 1)
        pos, vel = self.position_velocity(t)
        ref = np.zeros((horizon, spec.state_dim), dtype=np.float32)
        for i, axis in enumerate("ned"):
            ref[:, spec.state_index(f"pos_{axis}_m")] = pos[:, i]
            ref[:, spec.state_index(f"vel_{axis}_mps")] = vel[:, i]
        return ref


class _Builder:
    """Walks the items in order, turning each into path vertices; holds what carries between items (the speed,
    the limits, whether the mission has ended). Used once, inside `MissionPath.from_items`."""

    def __init__(self, cfg: PathConfig, home: np.ndarray, home_alt_amsl_m: float, frame: LocalFrame,
                 speed_mps: float, takeoff_altitude_m: float, keep_out: tuple[np.ndarray, ...] = (),
                 clearance_m: float = 2.0) -> None:
        self.cfg, self.home, self.home_alt_amsl_m, self.frame = cfg, home, home_alt_amsl_m, frame
        self.takeoff_altitude_m = takeoff_altitude_m
        self.speed_mps, self.climb_mps, self.descent_mps = speed_mps, cfg.max_climb_mps, cfg.max_descent_mps
        self.keep_out, self.clearance_m = keep_out, clearance_m
        self.names = {0: "the take-off point above home"}  # item seq -> how an error names it
        self.vertices: list[_Vertex] = []
        self.ended_by: MissionItem | None = None

    def start(self, d_m: float, seq: int) -> None:
        ned_m = (float(self.home[0]), float(self.home[1]), d_m)
        self._route(ned_m, ned_m, seq, seq)  # refuses a take-off inside a keep-out zone
        self.vertices.append(_Vertex(ned_m, seq, self.speed_mps, stop=True))

    def add(self, item: MissionItem) -> None:
        name = command_name(item.command)
        self.names[item.seq] = f"item {item.seq}: {name}"
        if self.ended_by is not None:
            raise MissionError(f"item {item.seq}: {name} comes after item {self.ended_by.seq} "
                               f"({command_name(self.ended_by.command)}) has ended the mission; remove it")
        if item.command == MAV_CMD_DO_CHANGE_SPEED:
            self._change_speed(item)
            return
        if item.command == MAV_CMD_NAV_TAKEOFF:
            if self.vertices:
                raise MissionError(f"item {item.seq}: {name} must be the first navigation item of the mission")
            d_m = self._down_m(item)
            if d_m >= float(self.home[2]):
                raise MissionError(f"item {item.seq}: {name} to {float(self.home[2]) - d_m:.1f} m above home; "
                                   "expected > 0")
            self.start(d_m, item.seq)
            return
        if not self.vertices:  # no NAV_TAKEOFF: the runtime's own take-off altitude
            self.start(float(self.home[2]) - self.takeoff_altitude_m, seq=0)
        here = self.vertices[-1].ned_m
        if item.command == MAV_CMD_NAV_WAYPOINT:
            n_m, e_m = self._north_east_m(item, here)
            radius_m = item.param2 if math.isfinite(item.param2) and item.param2 > 0 else self.cfg.acceptance_radius_m
            hold_s = item.param1 if math.isfinite(item.param1) and item.param1 > 0 else 0.0
            self._go((n_m, e_m, self._down_m(item)), item.seq, hold_s=hold_s, radius_m=radius_m)
        elif item.command == MAV_CMD_NAV_LAND:
            self._land(self._north_east_m(item, here), item)
        elif item.command == MAV_CMD_NAV_RETURN_TO_LAUNCH:
            self._land((float(self.home[0]), float(self.home[1])), item)

    def _change_speed(self, item: MissionItem) -> None:
        speed = item.param2
        if not (math.isfinite(speed) and speed > 0):
            return  # -1 (or 0): "no change", as the autopilots read it
        if speed > self.cfg.max_speed_mps:
            raise MissionError(f"item {item.seq}: {command_name(item.command)} to {speed:g} m/s is above "
                               f"{self.cfg.max_speed_mps:g} m/s")
        if item.param1 == SPEED_TYPE_CLIMB:
            self.climb_mps = min(speed, self.cfg.max_climb_mps)
        elif item.param1 == SPEED_TYPE_DESCENT:
            self.descent_mps = min(speed, self.cfg.max_descent_mps)
        else:
            self.speed_mps = speed

    def _down_m(self, item: MissionItem) -> float:
        try:
            return self.frame.origin_alt_m - altitude_amsl_m(item.z, item.frame, self.home_alt_amsl_m)
        except ValueError as e:  # check_items has refused these already; kept for items built by hand
            raise MissionError(f"item {item.seq}: {command_name(item.command)}: {e}") from None

    def _north_east_m(self, item: MissionItem, here: tuple[float, float, float]) -> tuple[float, float]:
        if item.x == 0 and item.y == 0:
            return here[0], here[1]  # latitude and longitude 0: "where the vehicle is", as ArduPilot reads it
        n_m, e_m, _ = self.frame.to_ned(item.x, item.y, 0.0)
        range_m = math.hypot(n_m - self.home[0], e_m - self.home[1])
        if range_m > self.cfg.max_range_m:
            raise MissionError(f"item {item.seq}: {command_name(item.command)} at {item.x:.7f}, {item.y:.7f} is "
                               f"{range_m / 1000:.1f} km from home (limit {self.cfg.max_range_m / 1000:g} km); "
                               "was the mission planned for another place?")
        return n_m, e_m

    def _go(self, ned_m: tuple[float, float, float], seq: int, speed_mps: float | None = None, hold_s: float = 0.0,
            radius_m: float | None = None, stop: bool = False) -> None:
        """A leg from the last vertex to `ned_m`, around the keep-out zones: detour corners, then the vertex."""
        last = self.vertices[-1]
        route = np.asarray(self._route(last.ned_m, ned_m, last.seq, seq))  # [R,2] north, east
        along_m = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))])
        climb = along_m / along_m[-1] if along_m[-1] > 0 else np.zeros(len(route))
        down_m = last.ned_m[2] + (ned_m[2] - last.ned_m[2]) * climb  # linear in distance along the detour
        speed = self.speed_mps if speed_mps is None else speed_mps
        step = np.asarray(ned_m) - np.asarray(last.ned_m)
        # every leg of a detour has the slope of the whole
        length = float(np.linalg.norm(step)) if len(route) == 2 else math.hypot(float(along_m[-1]), float(step[2]))
        if length > 0:
            vertical = float(step[2]) / length  # > 0 descending
            horizontal = math.sqrt(max(1.0 - vertical * vertical, 0.0))
            if horizontal * speed > self.cfg.max_horizontal_speed_mps:
                speed = self.cfg.max_horizontal_speed_mps / horizontal
            if vertical > 1e-9:
                speed = min(speed, self.descent_mps / vertical)
            elif vertical < -1e-9:
                speed = min(speed, self.climb_mps / -vertical)
        half_clearance_m = 0.5 * self.clearance_m
        for k in range(1, len(route) - 1):
            corner = (float(route[k, 0]), float(route[k, 1]), float(down_m[k]))
            self.vertices.append(_Vertex(corner, seq, speed, radius_m=half_clearance_m, detour=True,
                                         cut_safe_m=half_clearance_m))
        radius = self.cfg.acceptance_radius_m if radius_m is None else radius_m
        if self.keep_out:
            margin_m = float(distance_to_zones(np.asarray(ned_m[:2]), self.keep_out)) - half_clearance_m
            self.vertices.append(_Vertex(ned_m, seq, speed, hold_s, radius, stop, cut_safe_m=half_clearance_m,
                                         zone_margin_m=margin_m))
        else:
            self.vertices.append(_Vertex(ned_m, seq, speed, hold_s, radius, stop))

    def _route(self, from_ned: tuple[float, float, float], to_ned: tuple[float, float, float], from_seq: int,
               to_seq: int) -> list[tuple[float, float]]:
        if not self.keep_out:
            return [from_ned[:2], to_ned[:2]]
        try:
            return route_around(from_ned[:2], to_ned[:2], self.keep_out, self.clearance_m,
                                start_name=self.names.get(from_seq, f"item {from_seq}"),
                                end_name=self.names.get(to_seq, f"item {to_seq}"))
        except KeepOutError as e:
            raise MissionError(f"{e}. Nothing was flown") from None

    def _land(self, north_east_m: tuple[float, float], item: MissionItem) -> None:
        ground_d = float(self.home[2])
        cruise_d = self.vertices[-1].ned_m[2]
        self._go((north_east_m[0], north_east_m[1], cruise_d), item.seq, stop=True)
        slow_d = ground_d - self.cfg.land_slow_altitude_m
        if cruise_d < slow_d:
            self._go((north_east_m[0], north_east_m[1], slow_d), item.seq)
        self._go((north_east_m[0], north_east_m[1], ground_d), item.seq,
                 speed_mps=min(self.cfg.land_speed_mps, self.descent_mps), stop=True)
        self.ended_by = item


def _timed(vertices: list[_Vertex], cfg: PathConfig, takeoff_altitude_m: float) -> MissionPath:
    """Place the legs in time: each rest to rest; the next one starts early where the corner may be cut."""
    a = cfg.max_accel_mps2
    pts = np.array([v.ned_m for v in vertices], dtype=np.float64).reshape(-1, 3)
    steps = np.diff(pts, axis=0)
    length = np.linalg.norm(steps, axis=1)
    unit = np.divide(steps, length[:, None], out=np.zeros_like(steps), where=length[:, None] > 0)
    speed = np.array([v.speed_mps for v in vertices[1:]], dtype=np.float64)
    peak = np.minimum(speed, np.sqrt(a * length))  # a short leg never reaches the mission speed
    accel_s = peak / a
    duration = np.divide(length, peak, out=np.zeros_like(length), where=peak > 0) + accel_s
    w = len(vertices)
    arrival, start = np.zeros(w), np.zeros(max(w - 1, 0))
    t_next = vertices[0].hold_s
    max_turn_cos = math.cos(math.radians(cfg.max_pass_turn_deg))
    for k in range(w - 1):
        start[k] = t_next
        end = t_next + duration[k]
        v = vertices[k + 1]
        last = k + 1 == w - 1
        cos_turn = 1.0 if last else float(unit[k] @ unit[k + 1])
        if last or v.stop or v.hold_s > 0 or length[k] == 0 or length[k + 1] == 0 or cos_turn < max_turn_cos:
            arrival[k + 1] = end
            t_next = end + v.hold_s
            continue
        miss, lam = _corner_shape(cos_turn)
        overlap = min(accel_s[k], accel_s[k + 1])
        if miss > 0:
            overlap = min(overlap, math.sqrt(2.0 * v.radius_m / (a * miss)))
            if v.radius_m > v.cut_safe_m:
                # The cut is a parabola inside the triangle of the corner and the two points where it leaves the
                # legs, a δ² / 2 from the corner: it strays from the legs by at most its miss and from the corner
                # by at most a δ² / 2. Either bound keeping clear of the zones will do.
                overlap = min(overlap, max(math.sqrt(2.0 * v.cut_safe_m / (a * miss)),
                                           math.sqrt(2.0 * max(v.zone_margin_m, 0.0) / a)))
        arrival[k + 1] = end - overlap + lam * overlap
        t_next = end - overlap
    real = [i for i, v in enumerate(vertices) if not v.detour]
    arrays = dict(waypoints_ned=pts[real], path_ned=pts, arrival_s=arrival[real],
                  hold_s=np.array([vertices[i].hold_s for i in real]),
                  acceptance_m=np.array([vertices[i].radius_m for i in real]), leg_start_s=start,
                  leg_length_m=length, leg_speed_mps=peak, leg_unit=unit, _accel_s=accel_s, _duration_s=duration)
    for value in arrays.values():
        value.setflags(write=False)
    return MissionPath(waypoint_seq=tuple(vertices[i].seq for i in real), max_accel_mps2=a,
                       takeoff_altitude_m=takeoff_altitude_m, **arrays)
