"""The simulated flight controller's mission, fence and rally stores, and its side of the MAVLink mission protocol
(mavlink.io/en/services/mission.html), as ArduCopter 4.8-dev and PX4 1.16 answer it (their SITLs, checked against
`dreamlink.firmware_bridge.mission_protocol` and a pymavlink ground station; see that module's docstring).

Upload (a ground station stores items): MISSION_COUNT -> we ask for seq 0 .. count-1 -> MISSION_ITEM_INT (or the
legacy float MISSION_ITEM) for each -> MISSION_ACK MAV_MISSION_ACCEPTED, and the new list replaces the old one of that
type at once (a failed upload leaves the old one; ArduPilot is not atomic, which no client should rely on).
Download (a client reads them): MISSION_REQUEST_LIST -> MISSION_COUNT -> MISSION_REQUEST_INT seq -> MISSION_ITEM_INT
(MISSION_REQUEST -> float MISSION_ITEM, as both autopilots answer it) -> the client's MISSION_ACK. MISSION_CLEAR_ALL
empties a type. Answers go to the sender's system and component.

Per flavour, as the real ones do:

- ArduPilot: asks for upload items with MISSION_REQUEST (MissionItemProtocol::queued_request_send), again after 1 s
  of silence, and cancels an upload after 8 s (MISSION_ACK MAV_MISSION_OPERATION_CANCELLED). Mission seq 0 is home:
  what an upload puts there is dropped, a download gets the current home (MAV_CMD_NAV_WAYPOINT, MAV_FRAME_GLOBAL,
  AMSL); nothing uploaded: count 0. Global items come back in the non-INT frame (..._RELATIVE_ALT_INT -> 3), every
  other item in MAV_FRAME_GLOBAL (0); fence items as MAV_FRAME_GLOBAL, z 0, autocontinue 0, only param1. An item
  out of sequence is answered MAV_MISSION_INVALID_SEQUENCE and the upload goes on; a download while an upload runs
  is MAV_MISSION_DENIED; a download of a seq past the end gets MISSION_COUNT and MAV_MISSION_INVALID_SEQUENCE.
- PX4: asks with MISSION_REQUEST until it has seen a MISSION_ITEM_INT (or MISSION_REQUEST_INT), then with
  MISSION_REQUEST_INT; asks again after 250 ms, gives up after 5 s. Items come back in the frame family of the
  request (MISSION_REQUEST_INT: ..._INT frames; fence vertices MAV_FRAME_GLOBAL_INT). A download must ask in order
  (the next seq or the same again), anything else ends it with MAV_MISSION_ERROR; an item out of sequence during an
  upload is ignored.

Not simulated: parameter rounding and commands an autopilot refuses or reinterprets (both keep the params of the
items here), MISSION_CURRENT / MISSION_ITEM_REACHED (nothing flies the mission), persistence across a simulated
reboot (`--reboot-at-s` builds a new store; real autopilots keep their mission in storage).
Timers run on the wall clock (`clock`), like a real autopilot's, also when vehicle time is in lockstep.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dreamlink.firmware_bridge.mission_items import (
    MISSION_TYPE_FENCE,
    MISSION_TYPE_MISSION,
    MISSION_TYPE_RALLY,
    MissionItem,
)
from dreamlink.firmware_bridge.mission_protocol import GLOBAL_FRAMES, int_position, item_from_message

log = logging.getLogger(__name__)

MISSION_MESSAGES = ("MISSION_COUNT", "MISSION_ITEM_INT", "MISSION_ITEM", "MISSION_REQUEST_LIST",
                    "MISSION_REQUEST_INT", "MISSION_REQUEST", "MISSION_ACK", "MISSION_CLEAR_ALL")

ACCEPTED, ERROR, UNSUPPORTED_FRAME, UNSUPPORTED, NO_SPACE = 0, 1, 2, 3, 4
INVALID_PARAM5_X, INVALID_PARAM6_Y, INVALID_SEQUENCE, DENIED, OPERATION_CANCELLED = 10, 11, 13, 14, 15
INT32_END = 2**31
MISSION_TYPE_ALL = 255
MAV_CMD_NAV_WAYPOINT = 16
MAV_FRAME_GLOBAL, MAV_FRAME_GLOBAL_INT = 0, 5
FENCE_COMMANDS = frozenset({5000, 5001, 5002, 5003, 5004})  # return point, polygon vertices, circles
POLYGON_VERTEX_COMMANDS = frozenset({5001, 5002})
RALLY_COMMANDS = frozenset({5100})
# frame numbers of the two spellings of each global frame: non-INT <-> INT
TO_NON_INT = {5: 0, 6: 3, 11: 10}
TO_INT = {0: 5, 3: 6, 10: 11}


# Upload timing per flavour: (re-request after s of silence, abandon after s), and capacity per type
# (mission, fence, rally), of the order of the real ones
UPLOAD_TIMING_S = {"ardupilot": (1.0, 8.0), "px4": (0.25, 5.0)}
CAPACITY = {"ardupilot": (700, 84, 10), "px4": (2000, 64, 8)}


@dataclass
class _Upload:
    mission_type: int
    partner: tuple[int, int]  # (system, component) of the uploader
    count: int
    items: list[MissionItem]
    last_request_s: float
    last_item_s: float


class MissionStore:
    """Stored items per mission type and the transfers in progress. `mav` is the face's pymavlink encoder;
    `home()` gives home as (lat degE7, lon degE7, alt m AMSL)."""

    def __init__(self, flavour: str, mav: Any, home: Callable[[], tuple[int, int, float]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ardupilot = flavour == "ardupilot"  # else PX4
        self.re_request_s, self.upload_timeout_s = UPLOAD_TIMING_S[flavour]
        self.capacity = CAPACITY[flavour]
        self._mav, self._home, self._clock = mav, home, clock
        self._items: dict[int, list[MissionItem]] = {MISSION_TYPE_MISSION: [], MISSION_TYPE_FENCE: [],
                                                     MISSION_TYPE_RALLY: []}
        self._upload: _Upload | None = None
        self._int_mode = False  # PX4: use MISSION_REQUEST_INT on uploads once the client showed it speaks INT
        self._download_next: dict[tuple[int, int, int], int] = {}  # PX4: (system, component, type) -> next seq
        self._last_upload: tuple[tuple[int, int], int, int] | None = None  # PX4: (partner, type, count) done last
        self.uploads_accepted = 0

    def items(self, mission_type: int) -> list[MissionItem]:
        """The stored items of `mission_type` (ArduPilot's mission: seq 0 is whatever was stored there, not home)."""
        return list(self._items.get(mission_type, []))

    # -- incoming ---------------------------------------------------------------------------------------------------

    def handle(self, msg_type: str, msg: Any) -> None:
        """One mission-protocol message addressed to this autopilot."""
        mission_type = int(getattr(msg, "mission_type", MISSION_TYPE_MISSION))
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        if msg_type == "MISSION_ACK":
            self._download_next.pop((*src, mission_type), None)  # the client's end of a download
        elif msg_type == "MISSION_CLEAR_ALL" and mission_type == MISSION_TYPE_ALL:
            self._items = {t: [] for t in self._items}
            self._ack(src, ACCEPTED, mission_type)
        elif mission_type not in self._items:
            self._ack(src, UNSUPPORTED, mission_type)
        elif msg_type == "MISSION_COUNT":
            self._start_upload(src, mission_type, int(msg.count))
        elif msg_type in ("MISSION_ITEM_INT", "MISSION_ITEM"):
            self._receive_item(src, msg_type, msg, mission_type)
        elif msg_type == "MISSION_REQUEST_LIST":
            self._send_count(src, mission_type)
        elif msg_type in ("MISSION_REQUEST_INT", "MISSION_REQUEST"):
            self._send_item(src, mission_type, int(msg.seq), as_int=msg_type == "MISSION_REQUEST_INT")
        elif msg_type == "MISSION_CLEAR_ALL":
            self._items[mission_type] = []
            self._ack(src, ACCEPTED, mission_type)

    def poll(self) -> None:
        """Ask again for an upload item that did not come, abandon an upload gone silent (call every frame)."""
        up = self._upload
        if up is None:
            return
        now = self._clock()
        if now - up.last_item_s > self.upload_timeout_s:
            log.warning("%s upload from %d/%d timed out at item %d of %d", _type_name(up.mission_type), *up.partner,
                        len(up.items), up.count)
            self._upload = None
            if self.ardupilot:  # ArduPilot says so; PX4 only tells its log
                self._ack(up.partner, OPERATION_CANCELLED, up.mission_type)
        elif now - up.last_request_s > self.re_request_s:
            self._request(up)

    # -- upload -----------------------------------------------------------------------------------------------------

    def _start_upload(self, src: tuple[int, int], mission_type: int, count: int) -> None:
        up = self._upload
        if up is not None and up.partner != src:
            self._ack(src, DENIED if self.ardupilot else ERROR, mission_type)
            return
        if count > self.capacity[mission_type]:
            self._ack(src, NO_SPACE, mission_type)
            return
        if count == 0:  # an empty upload clears the type
            self._upload = None
            self._items[mission_type] = []
            self._ack(src, ACCEPTED, mission_type)
            return
        now = self._clock()
        self._upload = _Upload(mission_type, src, count, [], now, now)
        self._request(self._upload)

    def _request(self, up: _Upload) -> None:
        seq = len(up.items)
        up.last_request_s = self._clock()
        if self.ardupilot or not self._int_mode:
            self._mav.mission_request_send(*up.partner, seq, up.mission_type)
        else:
            self._mav.mission_request_int_send(*up.partner, seq, up.mission_type)

    def _receive_item(self, src: tuple[int, int], msg_type: str, msg: Any, mission_type: int) -> None:
        up = self._upload
        seq = int(msg.seq)
        if up is None:
            # PX4 takes the last item again as "the GCS missed my ACK" and repeats ACCEPTED; ArduPilot says ERROR
            repeat = not self.ardupilot and self._last_upload == (src, mission_type, seq + 1)
            self._ack(src, ACCEPTED if repeat else ERROR, mission_type)
            return
        if up.partner != src or up.mission_type != mission_type:
            self._ack(src, DENIED if self.ardupilot else ERROR, mission_type)
            return
        if not self.ardupilot:
            self._int_mode = msg_type == "MISSION_ITEM_INT"
        if seq != len(up.items):
            if self.ardupilot:  # ArduPilot NACKs it and carries on; PX4 drops it silently
                self._ack(src, INVALID_SEQUENCE, mission_type)
            return
        item = item_from_message(msg)
        result = self._check(item, mission_type)
        if result != ACCEPTED:
            self._upload = None
            self._ack(src, result, mission_type)
            return
        up.items.append(replace(item, mission_type=mission_type))
        up.last_item_s = self._clock()
        if len(up.items) < up.count:
            self._request(up)
            return
        self._upload = None
        self._items[mission_type] = up.items
        self._last_upload = (src, mission_type, up.count)
        self.uploads_accepted += 1
        log.info("%s of %d items stored (from %d/%d)", _type_name(mission_type), len(up.items), *src)
        self._ack(src, ACCEPTED, mission_type)

    def _check(self, item: MissionItem, mission_type: int) -> int:
        x, y = int_position(item) if math.isfinite(item.x) and math.isfinite(item.y) else (INT32_END, INT32_END)
        if not -INT32_END < x < INT32_END or (item.frame in GLOBAL_FRAMES and abs(item.x) > 90):
            return INVALID_PARAM5_X  # a float MISSION_ITEM can hold what no MISSION_ITEM_INT can send back
        if not -INT32_END < y < INT32_END or (item.frame in GLOBAL_FRAMES and abs(item.y) > 180):
            return INVALID_PARAM6_Y
        if mission_type == MISSION_TYPE_FENCE:
            if item.command not in FENCE_COMMANDS:
                return UNSUPPORTED
            if item.frame not in GLOBAL_FRAMES:
                return UNSUPPORTED_FRAME
            if item.command in POLYGON_VERTEX_COMMANDS and not 3 <= item.param1 <= 255:
                return ERROR  # a polygon needs at least 3 vertices (PX4's check; ArduPilot's limit is 255)
        elif mission_type == MISSION_TYPE_RALLY:
            if item.command not in RALLY_COMMANDS:
                return UNSUPPORTED
        elif item.command in FENCE_COMMANDS | RALLY_COMMANDS:
            return ERROR  # PX4 refuses fence and rally items in a mission
        return ACCEPTED

    # -- download ---------------------------------------------------------------------------------------------------

    def _send_count(self, src: tuple[int, int], mission_type: int) -> None:
        if self._upload is not None:  # no download while someone uploads
            if self.ardupilot:
                self._ack(src, DENIED, mission_type)
            return  # PX4 ignores it ("Mission download request ignored, already active")
        self._download_next[(*src, mission_type)] = 0
        self._mav.mission_count_send(*src, len(self._items[mission_type]), mission_type)

    def _send_item(self, src: tuple[int, int], mission_type: int, seq: int, as_int: bool) -> None:
        if self._upload is not None and self.ardupilot:
            self._ack(src, DENIED, mission_type)
            return
        if not self.ardupilot:
            self._int_mode = as_int
        count = len(self._items[mission_type])
        if not self.ardupilot:  # PX4 serves a download in order only
            expected = self._download_next.get((*src, mission_type))
            if expected is None:
                return  # PX4 ignores item requests outside a download
            if seq not in (expected, expected - 1) or seq >= count:
                self._download_next.pop((*src, mission_type), None)
                self._ack(src, ERROR, mission_type)
                return
            self._download_next[(*src, mission_type)] = max(expected, seq + 1)
        elif not 0 <= seq < count:
            self._mav.mission_count_send(*src, count, mission_type)
            self._ack(src, INVALID_SEQUENCE, mission_type)
            return
        item = self._as_sent(self._items[mission_type][seq], as_int)
        if as_int:
            x, y = int_position(item)
            self._mav.mission_item_int_send(*src, seq, item.frame, item.command, 0, int(item.autocontinue),
                                            item.param1, item.param2, item.param3, item.param4, x, y, item.z,
                                            mission_type)
        else:
            self._mav.mission_item_send(*src, seq, item.frame, item.command, 0, int(item.autocontinue), item.param1,
                                        item.param2, item.param3, item.param4, item.x, item.y, item.z, mission_type)

    def _as_sent(self, item: MissionItem, as_int: bool) -> MissionItem:
        """A stored item as this autopilot family writes it back (frame spelling, home, fence fields)."""
        if self.ardupilot:
            if item.mission_type == MISSION_TYPE_MISSION and item.seq == 0:
                lat_e7, lon_e7, alt_m = self._home()
                return MissionItem(0, MAV_CMD_NAV_WAYPOINT, MAV_FRAME_GLOBAL, x=lat_e7 / 1e7, y=lon_e7 / 1e7, z=alt_m)
            if item.mission_type == MISSION_TYPE_FENCE:
                return replace(item, frame=MAV_FRAME_GLOBAL, param2=0.0, param3=0.0, param4=0.0, z=0.0,
                               autocontinue=False)
            frame = TO_NON_INT.get(item.frame, item.frame) if item.frame in GLOBAL_FRAMES else MAV_FRAME_GLOBAL
            return replace(item, frame=frame)
        if item.mission_type == MISSION_TYPE_FENCE:
            return replace(item, frame=MAV_FRAME_GLOBAL_INT if as_int else MAV_FRAME_GLOBAL)
        if item.frame in GLOBAL_FRAMES:
            frame = TO_INT.get(item.frame, item.frame) if as_int else TO_NON_INT.get(item.frame, item.frame)
            return replace(item, frame=frame)
        return item

    def _ack(self, dest: tuple[int, int], result: int, mission_type: int) -> None:
        self._mav.mission_ack_send(*dest, result, mission_type)


def _type_name(mission_type: int) -> str:
    return {MISSION_TYPE_MISSION: "mission", MISSION_TYPE_FENCE: "fence", MISSION_TYPE_RALLY: "rally"}.get(
        mission_type, f"mission type {mission_type}")
