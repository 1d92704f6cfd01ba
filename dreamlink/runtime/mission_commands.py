"""Which mission items dreamlink flies, and the check that refuses the rest before anything is armed.

NAV_TAKEOFF, NAV_WAYPOINT, NAV_LAND, NAV_RETURN_TO_LAUNCH and DO_CHANGE_SPEED fly (`runtime.mission_path`
turns them into the reference); anything else (a camera trigger, a servo, a loiter) is refused with
`MissionError` naming each item and its command, as are positions in frames that cannot be placed: a mission
flown with an item skipped in silence is a mission flown wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dreamlink.firmware_bridge.mission_items import MissionItem
from dreamlink.runtime.geo import frame_problem

# MAV_CMD numbers (plain ints: runtime/ does not import pymavlink).
MAV_CMD_NAV_WAYPOINT = 16
MAV_CMD_NAV_RETURN_TO_LAUNCH = 20
MAV_CMD_NAV_LAND = 21
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_DO_CHANGE_SPEED = 178
SUPPORTED_COMMANDS = (MAV_CMD_NAV_WAYPOINT, MAV_CMD_NAV_TAKEOFF, MAV_CMD_NAV_LAND, MAV_CMD_NAV_RETURN_TO_LAUNCH,
                      MAV_CMD_DO_CHANGE_SPEED)

# Names for the messages that refuse a mission: the commands ground stations commonly write.
COMMAND_NAMES = {
    16: "MAV_CMD_NAV_WAYPOINT", 17: "MAV_CMD_NAV_LOITER_UNLIM", 18: "MAV_CMD_NAV_LOITER_TURNS",
    19: "MAV_CMD_NAV_LOITER_TIME", 20: "MAV_CMD_NAV_RETURN_TO_LAUNCH", 21: "MAV_CMD_NAV_LAND",
    22: "MAV_CMD_NAV_TAKEOFF", 30: "MAV_CMD_NAV_CONTINUE_AND_CHANGE_ALT", 31: "MAV_CMD_NAV_LOITER_TO_ALT",
    80: "MAV_CMD_NAV_ROI", 82: "MAV_CMD_NAV_SPLINE_WAYPOINT", 84: "MAV_CMD_NAV_VTOL_TAKEOFF",
    85: "MAV_CMD_NAV_VTOL_LAND", 92: "MAV_CMD_NAV_GUIDED_ENABLE", 93: "MAV_CMD_NAV_DELAY",
    94: "MAV_CMD_NAV_PAYLOAD_PLACE", 112: "MAV_CMD_CONDITION_DELAY", 113: "MAV_CMD_CONDITION_CHANGE_ALT",
    114: "MAV_CMD_CONDITION_DISTANCE", 115: "MAV_CMD_CONDITION_YAW", 177: "MAV_CMD_DO_JUMP",
    178: "MAV_CMD_DO_CHANGE_SPEED", 179: "MAV_CMD_DO_SET_HOME", 181: "MAV_CMD_DO_SET_RELAY",
    182: "MAV_CMD_DO_REPEAT_RELAY", 183: "MAV_CMD_DO_SET_SERVO", 184: "MAV_CMD_DO_REPEAT_SERVO",
    189: "MAV_CMD_DO_LAND_START", 195: "MAV_CMD_DO_SET_ROI_LOCATION", 197: "MAV_CMD_DO_SET_ROI_NONE",
    201: "MAV_CMD_DO_SET_ROI", 202: "MAV_CMD_DO_DIGICAM_CONFIGURE", 203: "MAV_CMD_DO_DIGICAM_CONTROL",
    204: "MAV_CMD_DO_MOUNT_CONFIGURE", 205: "MAV_CMD_DO_MOUNT_CONTROL", 206: "MAV_CMD_DO_SET_CAM_TRIGG_DIST",
    207: "MAV_CMD_DO_FENCE_ENABLE", 208: "MAV_CMD_DO_PARACHUTE", 211: "MAV_CMD_DO_GRIPPER",
    212: "MAV_CMD_DO_AUTOTUNE_ENABLE", 213: "MAV_CMD_NAV_SET_YAW_SPEED", 214: "MAV_CMD_DO_SET_CAM_TRIGG_INTERVAL",
    222: "MAV_CMD_DO_GUIDED_LIMITS", 223: "MAV_CMD_DO_ENGINE_CONTROL", 1000: "MAV_CMD_DO_GIMBAL_MANAGER_PITCHYAW",
    2000: "MAV_CMD_IMAGE_START_CAPTURE", 2001: "MAV_CMD_IMAGE_STOP_CAPTURE", 2500: "MAV_CMD_VIDEO_START_CAPTURE",
    2501: "MAV_CMD_VIDEO_STOP_CAPTURE", 3000: "MAV_CMD_DO_VTOL_TRANSITION", 42600: "MAV_CMD_DO_WINCH",
}

SPEED_TYPE_CLIMB = 2  # DO_CHANGE_SPEED param1; 0 (airspeed) and 1 (ground speed) set the path speed
SPEED_TYPE_DESCENT = 3


class MissionError(ValueError):
    """A mission that cannot be flown as written; the message names the item and what to change."""


def command_name(command: int) -> str:
    return f"{COMMAND_NAMES.get(command, 'unknown MAV_CMD')} ({command})"


def _has_position(item: MissionItem) -> bool:
    """Whether the item's x, y, z say where to go (and so its frame must be placeable)."""
    if item.command in (MAV_CMD_NAV_WAYPOINT, MAV_CMD_NAV_TAKEOFF):
        return True
    return item.command == MAV_CMD_NAV_LAND and not (item.x == 0 and item.y == 0)


def check_items(items: Sequence[MissionItem], source: str = "mission") -> None:
    """Refuse, naming each one, the items dreamlink cannot fly: unsupported commands, positions in frames that
    cannot be placed (terrain, local), missing coordinates. Every problem in one message, so one edit fixes all."""
    problems, unsupported = [], False
    for item in items:
        name = command_name(item.command)
        if item.command not in SUPPORTED_COMMANDS:
            problems.append(f"item {item.seq}: {name} is not supported")
            unsupported = True
            continue
        if not _has_position(item):
            continue
        problem = frame_problem(item.frame)
        if problem is not None:
            problems.append(f"item {item.seq}: {name} in {problem}")
            continue
        needed = (item.z,) if item.command == MAV_CMD_NAV_TAKEOFF else (item.x, item.y, item.z)
        if not all(math.isfinite(v) for v in needed):
            what = "altitude" if len(needed) == 1 else "position"
            problems.append(f"item {item.seq}: {name} has no {what} (latitude {item.x}, longitude {item.y}, "
                            f"altitude {item.z}; nan is a null in the file)")
        elif len(needed) == 3 and not (-90.0 <= item.x <= 90.0 and -180.0 <= item.y <= 180.0):
            problems.append(f"item {item.seq}: {name} at latitude {item.x}, longitude {item.y} is not on the earth")
    if problems:
        supported = ", ".join(command_name(c) for c in SUPPORTED_COMMANDS)
        tail = f"; supported: {supported}" if unsupported else ""
        raise MissionError(f"{source}: {'; '.join(problems)}{tail}. Nothing was flown; change these items in the "
                           "ground station")
