"""Mission files as ground stations write them: QGroundControl `.plan` (JSON) and the plain-text `QGC WPL 110`
format of Mission Planner, MAVProxy and ArduPilot's autotest (`.waypoints`, `.txt`).

`read_mission_file` returns a `MissionFile`: the mission items (`MissionItem`, the same type as a mission
downloaded from the autopilot), the geofence, rally points, the planned home and the file's speeds. Items
numbered as they are uploaded to ArduPilot: home is 0, so the first mission item is 1 (a .plan's first item, a
WPL file's line 1), and a refusal names the number the ground station shows. Every item is checked
(`mission_path.check_items`) before anything flies; QGroundControl's ComplexItems (survey, corridor and
structure scans) are refused by their type: they are patterns the ground station expands, not items.

Formats, from their sources: the .plan layout is QGroundControl's "Plan File Format" (docs.qgroundcontrol.com,
qgc-dev-guide/file_formats/plan), mission version 2 (`params` has 7 entries, x/y/z the last three, null for NaN)
and version 1 (`params` 4 entries plus `coordinate`), geoFence version 2 (`polygons`, `circles`) and the older
version 1 (one inclusion `polygon`); the WPL format is mavlink.io's "Mission Plain-Text File Format".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.mission_items import MissionItem
from dreamlink.runtime.geo import LocalFrame
from dreamlink.runtime.mission_commands import MissionError, check_items


@dataclass(frozen=True)
class PlannedHome:
    """Home as the file planned it: latitude, longitude (degrees), altitude (m AMSL). The vehicle's own home
    (HOME_POSITION) is what flies; this is for checking the file was made for the place it is flown."""

    lat_deg: float
    lon_deg: float
    alt_m: float


@dataclass(frozen=True)
class FencePolygon:
    """A polygon fence: the vehicle stays inside it (`inclusion`) or out of it (a keep-out zone)."""

    vertices_deg: tuple[tuple[float, float], ...]  # (latitude, longitude), as the file orders them
    inclusion: bool

    def vertices_ne_m(self, frame: LocalFrame) -> np.ndarray:
        """[V,2] north, east (m) in `frame`."""
        return np.array([frame.to_ned(lat, lon, frame.origin_alt_m)[:2] for lat, lon in self.vertices_deg])


@dataclass(frozen=True)
class FenceCircle:
    """A circular fence around (`center_lat_deg`, `center_lon_deg`) with `radius_m`; inclusion or keep-out."""

    center_lat_deg: float
    center_lon_deg: float
    radius_m: float
    inclusion: bool

    def center_ne_m(self, frame: LocalFrame) -> np.ndarray:
        """[2] north, east (m) in `frame`."""
        return np.array(frame.to_ned(self.center_lat_deg, self.center_lon_deg, frame.origin_alt_m)[:2])


@dataclass(frozen=True)
class RallyPoint:
    """A safe point: latitude, longitude (degrees), altitude (m above home, as QGroundControl writes them)."""

    lat_deg: float
    lon_deg: float
    alt_m: float


@dataclass(frozen=True)
class MissionFile:
    """What a mission file holds. `hover_speed_mps` / `cruise_speed_mps` are a .plan's default speeds for
    multirotors and fixed wings (None in a WPL file, which has none)."""

    source: str
    items: tuple[MissionItem, ...]
    fence: tuple[FencePolygon | FenceCircle, ...] = ()
    rally: tuple[RallyPoint, ...] = ()
    home: PlannedHome | None = None
    hover_speed_mps: float | None = None
    cruise_speed_mps: float | None = None


def read_mission_file(path: str | Path) -> MissionFile:
    """Read a QGroundControl .plan or a QGC WPL 110 file (told apart by content, not by name) and check that
    every item can be flown. Raises MissionError naming the file, the item and what to change."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # Mission Planner on Windows may write a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise MissionError(f"{path}: cannot read the mission file ({e})") from None
    head = text.lstrip()
    if head.startswith("{"):
        mission = _read_plan(text, str(path))
    elif head.startswith("QGC WPL"):
        mission = _read_wpl(text, str(path))
    else:
        first = head.splitlines()[0][:40] if head else "an empty file"
        raise MissionError(f"{path}: not a mission file: expected a QGroundControl .plan (JSON) or a 'QGC WPL 110' "
                           f"waypoint file, got {first!r}")
    check_items(mission.items, str(path))
    return mission


# QGroundControl .plan ---------------------------------------------------------------------------------------------

def _read_plan(text: str, source: str) -> MissionFile:
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        raise MissionError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(plan, dict) or plan.get("fileType") != "Plan":
        raise MissionError(f"{source}: fileType: expected \"Plan\" (a QGroundControl plan), "
                           f"got {plan.get('fileType') if isinstance(plan, dict) else type(plan).__name__!r}")
    mission = _obj(plan.get("mission"), f"{source}: mission")
    raw_items = mission.get("items")
    if not isinstance(raw_items, list):
        raise MissionError(f"{source}: mission.items: expected a list of mission items, got {raw_items!r}")
    items = tuple(_plan_item(raw, i + 1, f"{source}: mission.items[{i}]") for i, raw in enumerate(raw_items))
    home = None
    if mission.get("plannedHomePosition") is not None:
        lat, lon, alt = _numbers(mission["plannedHomePosition"], 3, f"{source}: mission.plannedHomePosition")
        home = PlannedHome(lat, lon, alt)
    fence = _plan_fence(plan.get("geoFence"), f"{source}: geoFence")
    rally: tuple[RallyPoint, ...] = ()
    if plan.get("rallyPoints") is not None:
        points = _obj(plan["rallyPoints"], f"{source}: rallyPoints").get("points", [])
        rally = tuple(RallyPoint(*_numbers(p, 3, f"{source}: rallyPoints.points[{i}]")) for i, p in enumerate(points))
    return MissionFile(source, items, fence, rally, home, _speed(mission, "hoverSpeed", source),
                       _speed(mission, "cruiseSpeed", source))


def _plan_item(raw: Any, seq: int, where: str) -> MissionItem:
    item = _obj(raw, where)
    kind = item.get("type")
    if kind == "ComplexItem":
        raise MissionError(f"{where} (item {seq}): QGroundControl ComplexItem {item.get('complexItemType')!r} is "
                           "not supported: dreamlink flies simple items only (take-off, waypoints, change speed, "
                           "land, return to launch); replace the pattern with waypoints")
    if kind != "SimpleItem":
        raise MissionError(f"{where}: type: expected \"SimpleItem\" or \"ComplexItem\", got {kind!r}")
    command, frame = _integer(item, "command", where), _integer(item, "frame", where)
    params = item.get("params")
    if isinstance(params, list) and len(params) == 4 and "coordinate" in item:  # mission version 1
        params = params + list(_numbers(item["coordinate"], 3, f"{where}.coordinate", allow_null=True))
    p = _numbers(params, 7, f"{where}.params", allow_null=True)
    return MissionItem(seq=seq, command=command, frame=frame, param1=p[0], param2=p[1], param3=p[2], param4=p[3],
                       x=p[4], y=p[5], z=p[6], autocontinue=bool(item.get("autoContinue", True)))


def _plan_fence(raw: Any, where: str) -> tuple[FencePolygon | FenceCircle, ...]:
    if raw is None:
        return ()
    fence = _obj(raw, where)
    zones: list[FencePolygon | FenceCircle] = []
    if fence.get("version") == 1:  # one inclusion polygon (QGroundControl before 3.4)
        vertices = fence.get("polygon", [])
        if vertices:
            zones.append(FencePolygon(_vertices(vertices, f"{where}.polygon"), inclusion=True))
        return tuple(zones)
    if fence.get("version") != 2:
        raise MissionError(f"{where}.version: expected 1 or 2, got {fence.get('version')!r}")
    for i, raw_polygon in enumerate(fence.get("polygons", [])):
        polygon = _obj(raw_polygon, f"{where}.polygons[{i}]")
        vertices = _vertices(polygon.get("polygon"), f"{where}.polygons[{i}].polygon")
        zones.append(FencePolygon(vertices, _flag(polygon, "inclusion", f"{where}.polygons[{i}]")))
    for i, raw_circle in enumerate(fence.get("circles", [])):
        circle = _obj(raw_circle, f"{where}.circles[{i}]")
        body = _obj(circle.get("circle"), f"{where}.circles[{i}].circle")
        lat, lon = _numbers(body.get("center"), 2, f"{where}.circles[{i}].circle.center")
        (radius_m,) = _numbers([body.get("radius")], 1, f"{where}.circles[{i}].circle.radius")
        if radius_m <= 0:
            raise MissionError(f"{where}.circles[{i}].circle.radius: expected metres > 0, got {radius_m}")
        zones.append(FenceCircle(lat, lon, radius_m, _flag(circle, "inclusion", f"{where}.circles[{i}]")))
    return tuple(zones)


def _vertices(raw: Any, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list) or len(raw) < 3:
        raise MissionError(f"{where}: expected at least 3 [latitude, longitude] vertices, got {raw!r}")
    out = []
    for i, vertex in enumerate(raw):
        lat, lon = _numbers(vertex, 2, f"{where}[{i}]")
        out.append((lat, lon))
    return tuple(out)


def _speed(mission: dict[str, Any], key: str, source: str) -> float | None:
    if mission.get(key) is None:
        return None
    (value,) = _numbers([mission[key]], 1, f"{source}: mission.{key}")
    return value if value > 0 else None


# QGC WPL 110 ------------------------------------------------------------------------------------------------------

WPL_COLUMNS = ("INDEX", "CURRENT", "FRAME", "COMMAND", "PARAM1", "PARAM2", "PARAM3", "PARAM4", "X/LATITUDE",
               "Y/LONGITUDE", "Z/ALTITUDE", "AUTOCONTINUE")


def _read_wpl(text: str, source: str) -> MissionFile:
    lines = text.splitlines()
    header = lines[0].split()
    if header[:2] != ["QGC", "WPL"] or header[2:] != ["110"]:
        raise MissionError(f"{source}: line 1: expected the header 'QGC WPL 110', got {lines[0].strip()!r}")
    rows: list[MissionItem] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()  # tabs by the format; spaces in hand-edited files
        if len(fields) != len(WPL_COLUMNS):
            raise MissionError(f"{source}: line {number}: expected {len(WPL_COLUMNS)} columns "
                               f"({' '.join(WPL_COLUMNS)}), got {len(fields)}")
        try:
            seq, _current, frame, command = (int(f) for f in fields[:4])
            p = [float(f) for f in fields[4:11]]
            autocontinue = bool(int(float(fields[11])))
        except ValueError:
            raise MissionError(f"{source}: line {number}: expected integers for INDEX CURRENT FRAME COMMAND and "
                               f"numbers for the rest, got {line.strip()!r}") from None
        if seq != len(rows):
            raise MissionError(f"{source}: line {number}: INDEX {seq}, expected {len(rows)} (items numbered from "
                               "0, home, without gaps)")
        rows.append(MissionItem(seq=seq, command=command, frame=frame, param1=p[0], param2=p[1], param3=p[2],
                                param4=p[3], x=p[4], y=p[5], z=p[6], autocontinue=autocontinue))
    if not rows:
        raise MissionError(f"{source}: no items after the header; line 2 is home, the mission starts on line 3")
    home_item = rows[0]  # item 0 is home (the autopilot replaces it with its own on upload)
    home = None if home_item.x == 0 and home_item.y == 0 else PlannedHome(home_item.x, home_item.y, home_item.z)
    return MissionFile(source, tuple(rows[1:]), home=home)


# helpers ----------------------------------------------------------------------------------------------------------

def _obj(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise MissionError(f"{where}: expected an object, got {type(raw).__name__}")
    return raw


def _integer(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MissionError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def _flag(obj: dict[str, Any], key: str, where: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise MissionError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _numbers(raw: Any, count: int, where: str, allow_null: bool = False) -> tuple[float, ...]:
    """`count` numbers; JSON null (QGroundControl's NaN) only where `allow_null`."""
    if not isinstance(raw, list) or len(raw) != count:
        raise MissionError(f"{where}: expected a list of {count} numbers, got {raw!r}")
    out = []
    for i, value in enumerate(raw):
        if value is None and allow_null:
            out.append(math.nan)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MissionError(f"{where}[{i}]: expected a number{' or null' if allow_null else ''}, got {value!r}")
        else:
            out.append(float(value))
    return tuple(out)
