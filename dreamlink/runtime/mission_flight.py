"""A mission people planned, flown by imagined replanning: where it comes from (a ground station's file or the
autopilot's own store), the keep-out zones it carries, and the ground station's say while it flies.

`load_mission` turns a `.plan` / `.waypoints` file, or the MISSION and FENCE items downloaded from the
autopilot, into a `MissionPath` in the autopilot's local frame (its origin read from GPS_GLOBAL_ORIGIN /
HOME_POSITION), routed around the exclusion zones, and the `Zones` the planner's cost and the shield keep out
of. `MissionRunner` is the reference the loop tracks: mission time runs with the clock except while paused or
on a go-to from the map; it tracks the waypoints reached (and reports them as autopilots do), decides the
ground station's requests (`MissionCommandListener`), and says when the mission is done.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.ground_station import GOTO, LAND, PAUSE, RESUME, RETURN, GcsRequest, MissionReporter
from dreamlink.firmware_bridge.link import mavlink
from dreamlink.firmware_bridge.mission_items import MISSION_TYPE_FENCE, MISSION_TYPE_MISSION, MissionItem
from dreamlink.runtime.geo import LocalFrame, altitude_amsl_m
from dreamlink.runtime.mission_path import MissionPath, PathConfig
from dreamlink.runtime.plan_files import FenceCircle, FencePolygon, read_mission_file
from dreamlink.runtime.zones import KeepOut, KeepOutCircle, KeepOutPolygon, Zones
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

# MAV_CMD fence items (the autopilot's FENCE store)
FENCE_POLYGON_INCLUSION, FENCE_POLYGON_EXCLUSION = 5001, 5002
FENCE_CIRCLE_INCLUSION, FENCE_CIRCLE_EXCLUSION = 5003, 5004
GOTO_ACCEL_MPS2 = 1.5


@dataclass(frozen=True)
class PlannedMission:
    """A mission ready to fly: the path, the zones (for the planner's cost and the shield), where it came from."""

    path: MissionPath
    zones: Zones
    keep_out_ne: tuple[np.ndarray, ...]  # the zones' outlines [V,2] the path goes around (circles as 16-gons)
    frame: LocalFrame
    home_ned: np.ndarray
    source: str
    items: tuple[MissionItem, ...]
    speed_mps: float


def fence_from_items(items: Sequence[MissionItem]) -> tuple[FencePolygon | FenceCircle, ...]:
    """The autopilot's FENCE store as zones: polygons are runs of vertex items (param1 = vertex count)."""
    zones: list[FencePolygon | FenceCircle] = []
    i = 0
    while i < len(items):
        item = items[i]
        if item.command in (FENCE_POLYGON_INCLUSION, FENCE_POLYGON_EXCLUSION):
            count = max(int(item.param1), 1)
            run = items[i:i + count]
            zones.append(FencePolygon(tuple((v.x, v.y) for v in run), item.command == FENCE_POLYGON_INCLUSION))
            i += count
            continue
        if item.command in (FENCE_CIRCLE_INCLUSION, FENCE_CIRCLE_EXCLUSION):
            zones.append(FenceCircle(item.x, item.y, item.param1, item.command == FENCE_CIRCLE_INCLUSION))
        i += 1
    return tuple(zones)


def load_mission(source: str, frame: LocalFrame, home_ned: np.ndarray, takeoff_altitude_m: float,
                 speed_mps: float, margin_m: float = 1.0, clearance_m: float = 2.5,
                 download: Callable[[int], list[MissionItem]] | None = None,
                 home_is_item0: bool = False, config: PathConfig | None = None) -> PlannedMission:
    """`source` a mission file, or "autopilot" (then `download(mission_type)` fetches the MISSION and FENCE items;
    `home_is_item0`: ArduPilot keeps home as mission item 0, PX4 does not).

    A file's speed (a .plan's hoverSpeed) wins over `speed_mps`; `config` (the vehicle's limits, `path_config_for`)
    caps it, and the go-to speed with it. Exclusion fences become keep-out zones; inclusion
    fences are left to the autopilot's own fence (logged). Raises MissionError/ValueError naming what cannot fly."""
    if source == "autopilot":
        if download is None:
            raise ValueError("--mission autopilot needs the link to the autopilot")
        items = [i for i in download(MISSION_TYPE_MISSION) if not (home_is_item0 and i.seq == 0)]
        fence = fence_from_items(download(MISSION_TYPE_FENCE))
        name = "the autopilot's mission"
    else:
        planned = read_mission_file(Path(source))
        items, fence, name = list(planned.items), planned.fence, str(source)
        speed_mps = planned.hover_speed_mps or speed_mps
    zones: list[KeepOut] = []
    for zone in fence:
        if zone.inclusion:
            log.info("%s: an inclusion fence is left to the autopilot's own fence", name)
            continue
        if isinstance(zone, FencePolygon):
            zones.append(KeepOutPolygon(tuple((float(n), float(e)) for n, e in zone.vertices_ne_m(frame))))
        else:
            centre = zone.center_ne_m(frame)
            zones.append(KeepOutCircle((float(centre[0]), float(centre[1])), float(zone.radius_m)))
    keep_out = [z.outline_ne_m for z in zones]  # the same zones for the path: a circle as its circumscribed 16-gon
    path = MissionPath.from_items(items, frame, takeoff_altitude_m, speed_mps, home_ned, config=config,
                                  keep_out=keep_out, clearance_m=clearance_m)
    cap_mps = config.max_horizontal_speed_mps if config is not None else math.inf
    if speed_mps > cap_mps:
        log.warning("%s: mission speed %.1f m/s is flown at %.1f m/s, the most the vehicle's velocity commands reach "
                    "with room to correct", name, speed_mps, cap_mps)
        speed_mps = cap_mps
    return PlannedMission(path, Zones(tuple(zones), margin_m=margin_m), tuple(keep_out), frame,
                          np.asarray(home_ned, dtype=np.float64), name, tuple(items), speed_mps)


@dataclass
class _Move:
    """A straight rest-to-rest move (trapezoidal speed) from `a` to `b` starting at clock time `start_s`."""

    a: np.ndarray
    b: np.ndarray
    start_s: float
    speed_mps: float

    def __post_init__(self) -> None:
        self.length_m = float(np.linalg.norm(self.b - self.a))
        self.unit = (self.b - self.a) / self.length_m if self.length_m > 1e-9 else np.zeros(3)
        v, acc = self.speed_mps, GOTO_ACCEL_MPS2
        self.ramp_s = min(v / acc, math.sqrt(self.length_m / acc))
        self.peak_mps = acc * self.ramp_s
        self.cruise_s = max(0.0, (self.length_m - acc * self.ramp_s**2) / max(self.peak_mps, 1e-9))
        self.duration_s = 2 * self.ramp_s + self.cruise_s

    def at(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tau = np.clip(t_s - self.start_s, 0.0, self.duration_s)
        acc, r, c = GOTO_ACCEL_MPS2, self.ramp_s, self.cruise_s
        s = np.where(tau < r, 0.5 * acc * tau**2,
                     np.where(tau < r + c, 0.5 * acc * r**2 + self.peak_mps * (tau - r),
                              self.length_m - 0.5 * acc * np.maximum(self.duration_s - tau, 0.0) ** 2))
        v = np.where(tau < r, acc * tau, np.where(tau < r + c, self.peak_mps, acc * (self.duration_s - tau)))
        return self.a + s[:, None] * self.unit, v[:, None] * self.unit


@dataclass
class WaypointRecord:
    seq: int
    planned_s: float
    acceptance_m: float
    arrived_s: float | None = None  # mission time of the closest approach, once the mission has passed it
    miss_m: float = math.inf  # closest approach (m)
    closest_s: float | None = None


@dataclass
class MissionRunner:
    """The loop's reference for a planned mission, with pause/resume, go-to and return/land from a ground station.

    `reference(t_s)` is what the loop calls each tick; `decide(request)` answers the ground station (thread-safe);
    `done` is set when the path (or a return/land) is complete and the vehicle should land."""

    mission: PlannedMission
    spec: VehicleSpec
    horizon: int
    period_s: float
    start_s: float
    state: Callable[[], tuple[float, np.ndarray, float]]
    reporter: MissionReporter | None = None
    done: threading.Event = field(default_factory=threading.Event)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        path = self.mission.path
        self._lock = threading.Lock()
        self._offset_s = 0.0  # mission time = clock - start - offset
        self._paused_at: float | None = None  # clock time of a pause / go-to
        self._move: _Move | None = None  # a go-to, a way back to the mission, or a return
        self._then: str = ""  # after the move: "hold" (go-to), "mission" (back), "land" (return)
        self._land_now = False
        self._now = self.start_s
        self.waypoints = [WaypointRecord(int(s), float(t), float(a)) for s, t, a in
                          zip(path.waypoint_seq, path.arrival_s, path.acceptance_m, strict=True)]
        self._pos = [self.spec.state_index(n) for n in ("pos_n_m", "pos_e_m", "pos_d_m")]
        self._vel = [self.spec.state_index(n) for n in ("vel_n_mps", "vel_e_mps", "vel_d_mps")]
        self._next = 0
        self._reported_s = -math.inf
        if self.reporter is not None:
            self.reporter.set_current(self.waypoints[0].seq)

    # -- the reference -------------------------------------------------------------------------------

    def mission_time(self, now_s: float) -> float:
        paused = self._paused_at if self._paused_at is not None else now_s
        return paused - self.start_s - self._offset_s

    def reference(self, t_s: float) -> np.ndarray:
        with self._lock:
            self._now = t_s
            times = t_s + self.period_s * np.arange(1, self.horizon + 1)
            if self._move is not None:
                pos, vel = self._move.at(times)
                if t_s >= self._move.start_s + self._move.duration_s:
                    self._after_move(t_s)
            elif self._paused_at is not None:  # hold where the mission stopped
                pos, _ = self.mission.path.position_velocity(np.array([self.mission_time(t_s)]))
                pos, vel = np.repeat(pos, self.horizon, axis=0), np.zeros((self.horizon, 3))
            else:
                tau = times - self.start_s - self._offset_s
                pos, vel = self.mission.path.position_velocity(tau)
                if self.mission_time(t_s) >= self.mission.path.duration_s:
                    self.done.set()
            self._track_progress(t_s)
            if self.reporter is not None and t_s - self._reported_s >= 1.0:
                self._reported_s = t_s
                self.reporter.heartbeat()
        ref = np.zeros((self.horizon, self.spec.state_dim), np.float32)
        ref[:, self._pos] = pos
        ref[:, self._vel] = vel
        return ref

    def _after_move(self, t_s: float) -> None:
        if self._then == "mission":
            self._offset_s += t_s - (self._paused_at or t_s)
            self._paused_at, self._move = None, None
            self._event("resumed", t_s)
        elif self._then == "land":
            self._land_now = True
            self.done.set()
        # "hold": stay at the go-to point (the move's end) until resumed

    def _track_progress(self, t_s: float) -> None:
        """Each waypoint's closest approach while the mission is between its neighbours' planned arrivals (two
        waypoints at one place, the take-off point and the return, are told apart by time); reported reached when
        the mission time passes its planned arrival and hold."""
        _, x, _ = self.state()
        here = np.asarray(x[self._pos], dtype=np.float64)
        tau = self.mission_time(t_s)
        for i, w in enumerate(self.waypoints):
            lo = self.waypoints[i - 1].planned_s if i > 0 else -math.inf
            hi = self.waypoints[i + 1].planned_s if i + 1 < len(self.waypoints) else math.inf
            if lo <= tau <= hi:
                d = float(np.linalg.norm(here - self.mission.path.waypoints_ned[i]))
                if d < w.miss_m:
                    w.miss_m, w.closest_s = d, tau
        while self._next < len(self.waypoints):
            w = self.waypoints[self._next]
            if tau < w.planned_s + float(self.mission.path.hold_s[self._next]):
                break
            w.arrived_s = w.closest_s
            if self.reporter is not None:
                self.reporter.reached(w.seq)
            self._next += 1
            if self.reporter is not None and self._next < len(self.waypoints):
                self.reporter.set_current(self.waypoints[self._next].seq)

    @property
    def land_now(self) -> bool:
        """A return or a land ended the mission early: land where it is."""
        return self._land_now

    # -- the ground station ----------------------------------------------------------------------------

    def _here(self) -> np.ndarray:
        _, x, _ = self.state()
        return np.asarray(x[self._pos], dtype=np.float64)

    def _event(self, kind: str, t_s: float, **fields: Any) -> None:
        self.events.append({"event": kind, "t_s": t_s, **fields})
        if self.reporter is not None:
            self.reporter.text(f"dreamlink: {kind}")

    def decide(self, request: GcsRequest) -> int:
        """The ground station's request, taken or refused; the MAV_RESULT to ACK it with."""
        with self._lock:
            now = self._now
            if request.kind == PAUSE:
                if self._paused_at is None:
                    self._paused_at = now
                    self._event("paused", now)
                return int(mavlink.MAV_RESULT_ACCEPTED)
            if request.kind == RESUME:
                if self._paused_at is None:
                    return int(mavlink.MAV_RESULT_ACCEPTED)  # nothing to resume
                back, _ = self.mission.path.position_velocity(np.array([self.mission_time(now)]))
                self._move = _Move(self._here(), back[0], now, self.mission.speed_mps)
                self._then = "mission"
                self._event("resuming", now)
                return int(mavlink.MAV_RESULT_ACCEPTED)
            if request.kind == GOTO:
                if not all(map(math.isfinite, (request.lat_deg, request.lon_deg))):
                    return int(mavlink.MAV_RESULT_DENIED)
                home_amsl = self.mission.frame.origin_alt_m - float(self.mission.home_ned[2])
                alt = request.alt_m if math.isfinite(request.alt_m) else math.nan
                alt_amsl = altitude_amsl_m(alt, request.frame, home_amsl) if math.isfinite(alt) \
                    else self.mission.frame.origin_alt_m
                target = np.array(self.mission.frame.to_ned(request.lat_deg, request.lon_deg, alt_amsl))
                if not math.isfinite(alt):
                    target[2] = self._here()[2]
                if self.mission.zones.keep_out and bool(self.mission.zones.inside(target[None, :2])[0]):
                    self._event("goto_refused", now, target_ned_m=target.tolist(), why="inside a keep-out zone")
                    return int(mavlink.MAV_RESULT_DENIED)
                if self._paused_at is None:
                    self._paused_at = now
                self._move = _Move(self._here(), target, now, self.mission.speed_mps)
                self._then = "hold"
                self._event("goto", now, target_ned_m=target.tolist())
                return int(mavlink.MAV_RESULT_ACCEPTED)
            if request.kind == RETURN:
                home = self.mission.home_ned.copy()
                home[2] = self._here()[2]
                self._paused_at = self._paused_at if self._paused_at is not None else now
                self._move = _Move(self._here(), home, now, self.mission.speed_mps)
                self._then = "land"
                self._event("return", now)
                return int(mavlink.MAV_RESULT_ACCEPTED)
            if request.kind == LAND:
                self._land_now = True
                self.done.set()
                self._event("land", now)
                return int(mavlink.MAV_RESULT_ACCEPTED)
        return int(mavlink.MAV_RESULT_UNSUPPORTED)

    def report(self) -> dict[str, Any]:
        """Each waypoint's planned and flown arrival (mission time) and miss distance, and what the GCS asked."""
        return {
            "source": self.mission.source,
            "waypoints": [{"seq": w.seq, "planned_s": round(w.planned_s, 2),
                           "arrived_s": None if w.arrived_s is None else round(w.arrived_s, 2),
                           "miss_m": round(w.miss_m, 3) if math.isfinite(w.miss_m) else None,
                           "acceptance_m": w.acceptance_m} for w in self.waypoints],
            "reached": sum(w.arrived_s is not None for w in self.waypoints),
            "within_acceptance": sum(w.miss_m <= w.acceptance_m for w in self.waypoints),
            "max_miss_m": round(max(w.miss_m for w in self.waypoints), 3),
            "duration_planned_s": round(self.mission.path.duration_s, 2),
            "requests": self.events,
        }
