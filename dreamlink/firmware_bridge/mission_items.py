"""Mission items as the MAVLink mission protocol carries them, whoever wrote them: a ground station's file
(QGroundControl `.plan`, Mission Planner / MAVProxy `.waypoints`) or the autopilot's own store (downloaded
with MISSION_REQUEST_LIST / MISSION_ITEM_INT). One type for both, so a mission reads the same whichever way it
arrived; what the items mean (a path, keep-out zones) is the runtime's (`dreamlink.runtime`).
"""

from __future__ import annotations

from dataclasses import dataclass

# MAV_MISSION_TYPE
MISSION_TYPE_MISSION = 0
MISSION_TYPE_FENCE = 1
MISSION_TYPE_RALLY = 2


@dataclass(frozen=True)
class MissionItem:
    """One MISSION_ITEM_INT: `command` a MAV_CMD, `frame` a MAV_FRAME, `param1..4` as the command defines them.

    `x`, `y` are latitude and longitude in degrees for global frames (MISSION_ITEM_INT carries degE7; the
    conversion is exact to 1e-7 degree) or local metres for local frames; `z` the altitude in metres in the
    frame's reference (relative to home for MAV_FRAME_GLOBAL_RELATIVE_ALT, AMSL for MAV_FRAME_GLOBAL)."""

    seq: int
    command: int
    frame: int
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    autocontinue: bool = True
    mission_type: int = MISSION_TYPE_MISSION
