"""The MAVLink mission protocol, client side (mavlink.io/en/services/mission.html): download the mission, the fence
or the rally points stored in the flight controller exactly as a ground station uploaded them, upload them as a
ground station does, and read the global origin of the autopilot's local NED frame.

- Download: MISSION_REQUEST_LIST -> MISSION_COUNT -> MISSION_REQUEST_INT for seq 0 .. count-1, each answered by a
  MISSION_ITEM_INT (or the legacy float MISSION_ITEM of an old autopilot, converted) -> our MISSION_ACK ACCEPTED,
  also after a count of 0 (without it PX4 refuses an upload for 5 s: "IGN MISSION_COUNT: Busy").
- Upload (what QGroundControl does): MISSION_COUNT -> the autopilot asks for each item, we answer with
  MISSION_ITEM_INT -> its MISSION_ACK. Items are asked for with MISSION_REQUEST_INT or the legacy MISSION_REQUEST;
  both are answered with MISSION_ITEM_INT, as the protocol says.
- Mission types: MISSION, FENCE, RALLY (`mission_items.MISSION_TYPE_*`), one transfer each; messages of another
  type, another seq, from another system or to another one are ignored, never taken for the answer.

Timeouts and retries: the protocol's default timeout and retry count (the page's "Timeouts and Retries"): a
request that gets no answer in `timeout_s` = 1.5 s is sent again, at most `retries` = 5 times, then the transfer
fails with MissionProtocolError naming the step, the seq and what came instead. The page suggests 250 ms for items;
we wait 1.5 s for every answer because a telemetry radio busy with streams can take longer than 250 ms for a round
trip, a needless re-request costs one duplicate item, and giving up costs the mission. So a lost item costs 1.5 s.
An error MISSION_ACK ends a transfer at once (the protocol calls errors unrecoverable), except
MAV_MISSION_INVALID_SEQUENCE during an upload: ArduPilot sends it for a duplicate item and carries on.

What the real autopilots do (ArduCopter 4.8-dev and PX4 1.16 SITL: a 7-item mission and a 4-vertex exclusion fence
uploaded by a pymavlink ground station, downloaded here; both ACK every upload MAV_MISSION_ACCEPTED, and
`dreamlink.sim.quadrotor.mission_store` is dreamlink's SITL of this):

- ArduPilot: mission seq 0 is home. The autopilot keeps whatever a ground station uploads as seq 0 out of its store
  and answers seq 0 with its current home (MAV_CMD_NAV_WAYPOINT, MAV_FRAME_GLOBAL, AMSL); with nothing uploaded the
  count is 0. `download` keeps home as item 0; the runtime decides what to do with it (it is not a waypoint the
  ground station planned). Items come back with the non-INT frame numbers (MAV_FRAME_GLOBAL_RELATIVE_ALT_INT as
  MAV_FRAME_GLOBAL_RELATIVE_ALT, MAV_FRAME_MISSION as MAV_FRAME_GLOBAL) while x and y still hold degE7, so every
  global frame of a MISSION_ITEM_INT is read as degE7 here. Fence items come back as MAV_FRAME_GLOBAL with z = 0,
  autocontinue 0 and only param1 (the vertex count, or a circle's radius). Fences travel as mission type FENCE
  (AC_PolyFence, ArduPilot 4.0 and later). On upload ArduPilot asks with MISSION_REQUEST, never
  MISSION_REQUEST_INT, again after 1 s; a resent item it already has is NACKed MAV_MISSION_INVALID_SEQUENCE.
- PX4: no home item: what was uploaded as seq 0 comes back. A download must ask in order (a seq other than the next
  or the same again ends it with MAV_MISSION_ERROR), which is how `download` asks. PX4 answers MISSION_REQUEST_INT
  in ..._INT frames whatever was uploaded (MAV_FRAME_GLOBAL comes back MAV_FRAME_GLOBAL_INT, fence vertices too).
  On upload it asks with MISSION_REQUEST until it has seen a MISSION_ITEM_INT, then with MISSION_REQUEST_INT.

Origin: both autopilots publish LOCAL_POSITION_NED relative to their estimator's origin (ArduPilot: the EKF origin,
`send_local_position` uses `get_relative_position_NED_origin`; PX4: EKF2's reference point), which they send as
GPS_GLOBAL_ORIGIN. Home (HOME_POSITION) is where the vehicle armed or first had GPS and may lie elsewhere; its x, y, z
fields are home's position in that same local frame. `read_origin` therefore asks for GPS_GLOBAL_ORIGIN first and
falls back to HOME_POSITION moved back by its local x, y, z. ArduPilot sends neither before its EKF has an origin
(about 20 s after boot in SITL). PX4 refuses the GPS_GLOBAL_ORIGIN request (MAV_RESULT_DENIED) until EKF2 has its
origin (a few seconds into SIH) while HOME_POSITION already comes, at local 0, 0, 0; the fallback then lands within
a millimetre of the origin PX4 reports later.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, NamedTuple

from dreamlink.firmware_bridge.link import CommandRefused, Link, LinkError, LinkTimeout, mavlink
from dreamlink.firmware_bridge.mission_items import (
    MISSION_TYPE_FENCE,
    MISSION_TYPE_MISSION,
    MISSION_TYPE_RALLY,
    MissionItem,
)

log = logging.getLogger(__name__)

TIMEOUT_S = 1.5  # the protocol's default timeout before a request is sent again
RETRIES = 5  # the protocol's maximum number of re-sends

MAV_MISSION_ACCEPTED = 0
MAV_MISSION_UNSUPPORTED = 3
MAV_MISSION_INVALID_SEQUENCE = 13
MAV_FRAME_MISSION = 2
# MAV_FRAME_GLOBAL, _RELATIVE_ALT, _INT, _RELATIVE_ALT_INT, _TERRAIN_ALT, _TERRAIN_ALT_INT: x, y are latitude and
# longitude (degE7 in MISSION_ITEM_INT, whichever spelling the autopilot uses)
GLOBAL_FRAMES = frozenset({0, 3, 5, 6, 10, 11})
LOCAL_SCALE = 1e4  # local frames in MISSION_ITEM_INT: x, y in metres * 1e4 (the protocol's encoding)
EARTH_RADIUS_M = 6378137.0
MSG_ID_GPS_GLOBAL_ORIGIN = 49
MSG_ID_HOME_POSITION = 242

_TYPE_NAMES = {MISSION_TYPE_MISSION: "mission", MISSION_TYPE_FENCE: "fence", MISSION_TYPE_RALLY: "rally points"}


class MissionProtocolError(LinkError):
    """A mission transfer failed. `step` is the request that went unanswered or was refused (e.g.
    "MISSION_REQUEST_INT"), `seq` the item (None for the list or count), `received` what came instead (described,
    in order), `result` the MAV_MISSION_RESULT of the MISSION_ACK that refused it (None: no answer)."""

    def __init__(self, message: str, step: str, seq: int | None, received: tuple[str, ...],
                 result: int | None = None) -> None:
        self.step, self.seq, self.received, self.result = step, seq, received, result
        super().__init__(message)


class Origin(NamedTuple):
    """The global position of the autopilot's local NED frame's origin (degrees, metres AMSL) and the message it came
    from ("GPS_GLOBAL_ORIGIN", or "HOME_POSITION" moved back by home's local position)."""

    lat_deg: float
    lon_deg: float
    alt_m: float
    source: str


def mission_type_name(mission_type: int) -> str:
    return _TYPE_NAMES.get(mission_type, f"mission type {mission_type}")


def mission_result_name(result: int) -> str:
    entry = mavlink.enums["MAV_MISSION_RESULT"].get(result)
    return entry.name if entry is not None else f"MAV_MISSION_RESULT {result}"


# -- items on the wire ----------------------------------------------------------------------------------------------

def item_from_message(msg: Any) -> MissionItem:
    """A MISSION_ITEM_INT (x, y degE7 for global frames, metres * 1e4 for local ones, as-is for MAV_FRAME_MISSION)
    or a legacy MISSION_ITEM (float x, y as they are) as a MissionItem."""
    frame = int(msg.frame)
    x, y = float(msg.x), float(msg.y)
    if msg.get_type() == "MISSION_ITEM_INT":
        scale = 1e7 if frame in GLOBAL_FRAMES else 1.0 if frame == MAV_FRAME_MISSION else LOCAL_SCALE
        x, y = int(msg.x) / scale, int(msg.y) / scale
    return MissionItem(seq=int(msg.seq), command=int(msg.command), frame=frame, param1=float(msg.param1),
                       param2=float(msg.param2), param3=float(msg.param3), param4=float(msg.param4), x=x, y=y,
                       z=float(msg.z), autocontinue=bool(msg.autocontinue),
                       mission_type=int(getattr(msg, "mission_type", MISSION_TYPE_MISSION)))


def int_position(item: MissionItem) -> tuple[int, int]:
    """`item.x`, `item.y` as MISSION_ITEM_INT carries them (see `item_from_message`)."""
    scale = 1e7 if item.frame in GLOBAL_FRAMES else 1.0 if item.frame == MAV_FRAME_MISSION else LOCAL_SCALE
    return round(item.x * scale), round(item.y * scale)


def send_item(link: Link, target_system: int, target_component: int, item: MissionItem) -> None:
    """One MISSION_ITEM_INT for `item`, addressed to `target_system`/`target_component`."""
    x, y = int_position(item)
    link.mav.mission_item_int_send(target_system, target_component, item.seq, item.frame, item.command, 0,
                                   int(item.autocontinue), item.param1, item.param2, item.param3, item.param4, x, y,
                                   item.z, item.mission_type)


# -- the transfer's mailbox -----------------------------------------------------------------------------------------

class _Inbox:
    """Mission messages from the autopilot to us, queued by the link's receive thread while one transfer runs
    (subscribed before the first request goes out, so a fast answer is not missed)."""

    def __init__(self, link: Link, target_system: int, target_component: int, mission_type: int,
                 types: Sequence[str]) -> None:
        self.link, self.types, self.mission_type = link, tuple(types), mission_type
        self.target_system, self.target_component = target_system, target_component
        self._queue: queue.Queue[Any] = queue.Queue()

    def __enter__(self) -> _Inbox:
        for msg_type in self.types:
            self.link.subscribe(msg_type, self._on_message)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for msg_type in self.types:
            self.link.unsubscribe(msg_type, self._on_message)

    def _on_message(self, msg: Any, _recv_s: float) -> None:
        me = self.link.config
        if ((self.target_system == 0 or msg.get_srcSystem() == self.target_system)
                and (self.target_component == 0 or msg.get_srcComponent() == self.target_component)
                and msg.target_system in (0, me.source_system) and msg.target_component in (0, me.source_component)):
            self._queue.put(msg)

    def get(self, deadline_s: float) -> Any | None:
        """The next message, or None once the monotonic clock passes `deadline_s`."""
        try:
            return self._queue.get(timeout=max(0.0, deadline_s - time.monotonic()))
        except queue.Empty:
            return None


def _describe(msg: Any) -> str:
    kind = msg.get_type()
    if kind == "MISSION_ACK":
        return f"MISSION_ACK {mission_result_name(int(msg.type))} ({mission_type_name(int(msg.mission_type))})"
    if kind == "MISSION_COUNT":
        return f"MISSION_COUNT {int(msg.count)} ({mission_type_name(int(msg.mission_type))})"
    return f"{kind} seq {int(msg.seq)} ({mission_type_name(int(getattr(msg, 'mission_type', 0)))})"


def _instead(seen: list[str]) -> str:
    if not seen:
        return "nothing came instead"
    shown = ", ".join(dict.fromkeys(seen))  # distinct, in order of arrival
    return f"instead came: {shown}"


def _exchange(inbox: _Inbox, send: Callable[[], None], is_answer: Callable[[Any], bool], what: str, step: str,
              seq: int | None, answer: str, timeout_s: float, retries: int) -> tuple[Any, int]:
    """Send a request until its answer comes (1 + `retries` sends, `timeout_s` each); returns the answer and the
    number of re-sends. An error MISSION_ACK of the transfer's type ends it (MissionProtocolError)."""
    seen: list[str] = []
    for attempt in range(retries + 1):
        send()
        deadline = time.monotonic() + timeout_s
        while (msg := inbox.get(deadline)) is not None:
            if is_answer(msg):
                return msg, attempt
            seen.append(_describe(msg))
            if (msg.get_type() == "MISSION_ACK" and int(msg.mission_type) == inbox.mission_type
                    and int(msg.type) != MAV_MISSION_ACCEPTED):
                raise MissionProtocolError(f"{what}: {step}{_seq_text(seq)} refused with {_describe(msg)}",
                                           step, seq, tuple(seen), int(msg.type))
        if not inbox.link.is_open:
            break
        log.info("%s: no %s for %s%s in %.2f s; asking again", what, answer, step, _seq_text(seq), timeout_s)
    raise MissionProtocolError(f"{what}: {step}{_seq_text(seq)} got no {answer} after {retries + 1} tries of "
                               f"{timeout_s:.2f} s ({_instead(seen)}); is the autopilot connected and sending to "
                               f"this link?", step, seq, tuple(seen))


def _seq_text(seq: int | None) -> str:
    return "" if seq is None else f" seq {seq}"


# -- download -------------------------------------------------------------------------------------------------------

def download(link: Link, target_system: int, target_component: int, mission_type: int = MISSION_TYPE_MISSION,
             timeout_s: float = TIMEOUT_S, retries: int = RETRIES) -> list[MissionItem]:
    """The items of `mission_type` stored in the autopilot, in seq order, as it sends them.

    ArduPilot's mission starts with its home as item 0 (see the module docstring): it is kept, not dropped; the
    runtime decides. Each request is re-sent after `timeout_s` without its answer, at most `retries` times.
    Raises MissionProtocolError naming the step, the seq and what came instead, e.g. when the autopilot refuses
    (ArduPilot answers MAV_MISSION_DENIED while someone uploads) or never answers."""
    what = f"download {mission_type_name(mission_type)} from {target_system}/{target_component}"
    started = time.monotonic()
    mav = link.mav
    with _Inbox(link, target_system, target_component, mission_type,
                ("MISSION_COUNT", "MISSION_ITEM_INT", "MISSION_ITEM", "MISSION_ACK")) as inbox:
        count_msg, resends = _exchange(
            inbox, lambda: mav.mission_request_list_send(target_system, target_component, mission_type),
            lambda m: m.get_type() == "MISSION_COUNT" and int(m.mission_type) == mission_type,
            what, "MISSION_REQUEST_LIST", None, "MISSION_COUNT", timeout_s, retries)
        count = int(count_msg.count)
        items: list[MissionItem] = []
        legacy = False  # the autopilot refused MISSION_REQUEST_INT: ask with MISSION_REQUEST (float items)
        seq = 0
        while seq < count:
            send = mav.mission_request_send if legacy else mav.mission_request_int_send
            request = functools.partial(send, target_system, target_component, seq, mission_type)
            is_item = functools.partial(_is_item, seq=seq, mission_type=mission_type)
            step, answer = ("MISSION_REQUEST", "MISSION_ITEM") if legacy else ("MISSION_REQUEST_INT",
                                                                                "MISSION_ITEM_INT")
            try:
                msg, again = _exchange(inbox, request, is_item, what, step, seq, answer, timeout_s, retries)
            except MissionProtocolError as exc:
                if legacy or exc.result != MAV_MISSION_UNSUPPORTED:
                    raise
                log.info("%s: MISSION_REQUEST_INT unsupported; asking with MISSION_REQUEST", what)
                legacy = True
                continue
            resends += again
            items.append(item_from_message(msg))
            seq += 1
        mav.mission_ack_send(target_system, target_component, MAV_MISSION_ACCEPTED, mission_type)
    log.info("%s: %d items in %.2f s (%d requests sent again)", what, count, time.monotonic() - started, resends)
    return items


def _is_item(msg: Any, seq: int, mission_type: int) -> bool:
    return (msg.get_type() in ("MISSION_ITEM_INT", "MISSION_ITEM") and int(msg.seq) == seq
            and int(getattr(msg, "mission_type", MISSION_TYPE_MISSION)) == mission_type)


# -- upload ---------------------------------------------------------------------------------------------------------

def upload(link: Link, target_system: int, target_component: int, items: Sequence[MissionItem],
           mission_type: int = MISSION_TYPE_MISSION, timeout_s: float = TIMEOUT_S, retries: int = RETRIES) -> None:
    """Store `items` (seq 0 .. n-1, all of `mission_type`) in the autopilot, replacing what it had of that type,
    as a ground station does; returns once the autopilot's MISSION_ACK says MAV_MISSION_ACCEPTED.

    The autopilot drives the transfer by asking for items; after `timeout_s` of silence the count (nothing asked
    yet) or the last item sent goes again, at most `retries` times in a row. Raises MissionProtocolError on an
    error MISSION_ACK (other than INVALID_SEQUENCE, which ArduPilot sends for a duplicate and then carries on) or
    silence, and ValueError for items out of order or of another type."""
    for index, item in enumerate(items):
        if item.seq != index or item.mission_type != mission_type:
            raise ValueError(f"upload {mission_type_name(mission_type)}: item {index} has seq {item.seq} and "
                             f"{mission_type_name(item.mission_type)}; expected seq {index} and "
                             f"{mission_type_name(mission_type)} (number items 0 .. n-1, one type per upload)")
    what = f"upload {mission_type_name(mission_type)} to {target_system}/{target_component}"
    started = time.monotonic()
    count = len(items)
    mav = link.mav

    def send_count() -> None:
        mav.mission_count_send(target_system, target_component, count, mission_type)

    resend: Callable[[], None] = send_count
    step, step_seq, answer = "MISSION_COUNT", None, "MISSION_REQUEST_INT or MISSION_ACK"
    last_sent = -1
    resent_last = False
    seen: list[str] = []
    silent = 0
    with _Inbox(link, target_system, target_component, mission_type,
                ("MISSION_REQUEST_INT", "MISSION_REQUEST", "MISSION_ACK")) as inbox:
        send_count()
        deadline = time.monotonic() + timeout_s
        while True:
            msg = inbox.get(deadline)
            if msg is None:
                silent += 1
                if silent > retries or not link.is_open:
                    raise MissionProtocolError(
                        f"{what}: {step}{_seq_text(step_seq)} got no {answer} after {silent} tries of "
                        f"{timeout_s:.2f} s ({_instead(seen)}); is the autopilot connected and sending to this link?",
                        step, step_seq, tuple(seen))
                log.info("%s: no answer to %s%s in %.2f s; sending it again", what, step, _seq_text(step_seq),
                         timeout_s)
                resend()
                resent_last = last_sent == count - 1
                deadline = time.monotonic() + timeout_s
                continue
            if int(getattr(msg, "mission_type", MISSION_TYPE_MISSION)) != mission_type:
                seen.append(_describe(msg))
                continue
            if msg.get_type() == "MISSION_ACK":
                result = int(msg.type)
                if result == MAV_MISSION_ACCEPTED and last_sent == count - 1:
                    break
                seen.append(_describe(msg))
                if result in (MAV_MISSION_ACCEPTED, MAV_MISSION_INVALID_SEQUENCE):
                    continue  # a stale ack, or ArduPilot's NACK of a duplicate item: the transfer goes on
                # ArduPilot answers a resent last item with MAV_MISSION_ERROR once it has stored the upload
                hint = ("; the autopilot may have stored it and its MISSION_ACK ACCEPTED been lost: download to check"
                        if last_sent == count - 1 and resent_last else "")
                raise MissionProtocolError(f"{what}: {step}{_seq_text(step_seq)} refused with {_describe(msg)}{hint}",
                                           step, step_seq, tuple(seen), result)
            seq = int(msg.seq)
            if not 0 <= seq < count:
                raise MissionProtocolError(f"{what}: the autopilot asked for seq {seq} of a {count}-item upload "
                                           f"({_describe(msg)})", msg.get_type(), seq, tuple(seen))
            item = items[seq]
            send_item(link, target_system, target_component, item)

            def resend_item(item: MissionItem = item) -> None:
                send_item(link, target_system, target_component, item)

            resend, step, step_seq = resend_item, "MISSION_ITEM_INT", seq
            answer = "MISSION_ACK" if seq == count - 1 else "request for the next item"
            last_sent = max(last_sent, seq)
            silent = 0
            deadline = time.monotonic() + timeout_s
    log.info("%s: %d items accepted in %.2f s", what, count, time.monotonic() - started)


# -- the local frame's origin ---------------------------------------------------------------------------------------

def read_origin(link: Link, target_system: int, target_component: int, timeout_s: float = 3.0) -> Origin:
    """Where the autopilot's local NED frame (LOCAL_POSITION_NED, SET_POSITION_TARGET_LOCAL_NED) is anchored.

    Asks for GPS_GLOBAL_ORIGIN (MAV_CMD_REQUEST_MESSAGE 49; the estimator's origin, which both autopilots use);
    if the autopilot cannot send it, HOME_POSITION (MAV_CMD_REQUEST_MESSAGE 242) moved back by home's local
    x, y, z (a flat-earth step, exact to millimetres for the tens of metres between the two). A message already
    received on the link serves when the request goes unanswered. Raises LinkTimeout if neither comes within
    about `timeout_s` each, LinkError if home has no local position (no origin yet: no local frame either)."""
    origin = _request_message(link, target_system, target_component, "GPS_GLOBAL_ORIGIN", MSG_ID_GPS_GLOBAL_ORIGIN,
                              timeout_s)
    if origin is not None:
        found = Origin(origin.latitude / 1e7, origin.longitude / 1e7, origin.altitude / 1e3, "GPS_GLOBAL_ORIGIN")
        log.info("local frame origin %.7f %.7f %.2f m AMSL (GPS_GLOBAL_ORIGIN)", *found[:3])
        return found
    home = _request_message(link, target_system, target_component, "HOME_POSITION", MSG_ID_HOME_POSITION, timeout_s)
    if home is None:
        raise LinkTimeout(f"read origin from {target_system}/{target_component}: neither GPS_GLOBAL_ORIGIN nor "
                          f"HOME_POSITION came within {timeout_s:.1f} s each; has the autopilot a GPS fix yet?")
    north, east, down = float(home.x), float(home.y), float(home.z)
    if not all(math.isfinite(v) for v in (north, east, down)):
        raise LinkError(f"read origin from {target_system}/{target_component}: HOME_POSITION has no local position "
                        f"(x, y, z = {north}, {east}, {down}): the estimator has no origin yet; wait for GPS")
    lat_home, lon_home = home.latitude / 1e7, home.longitude / 1e7
    lat = lat_home - math.degrees(north / EARTH_RADIUS_M)
    lon = lon_home - math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(lat_home))))
    found = Origin(lat, lon, home.altitude / 1e3 + down, "HOME_POSITION")
    log.info("local frame origin %.7f %.7f %.2f m AMSL (HOME_POSITION, home at %.1f %.1f %.1f m NED)", *found[:3],
             north, east, down)
    return found


def _request_message(link: Link, target_system: int, target_component: int, msg_type: str, msg_id: int,
                     timeout_s: float) -> Any | None:
    """Ask for one `msg_type` (MAV_CMD_REQUEST_MESSAGE) and wait for it; the newest one received before if the
    autopilot refuses or does not answer; None if there is none."""

    def from_target(msg: Any) -> bool:
        return ((target_system == 0 or msg.get_srcSystem() == target_system)
                and (target_component == 0 or msg.get_srcComponent() == target_component))

    waiter = link._expect(msg_type, from_target)  # before the request: PX4 sends the message before the ACK
    try:
        result = link.command_long(target_system, target_component, mavlink.MAV_CMD_REQUEST_MESSAGE, [msg_id],
                                   timeout_s=timeout_s / 3, retries=2)
        if result != mavlink.MAV_RESULT_ACCEPTED:
            raise CommandRefused(mavlink.MAV_CMD_REQUEST_MESSAGE, result, msg_type)
        msg = link._await(msg_type, waiter, timeout_s)
    except LinkError as exc:
        link._await(msg_type, waiter, 0.0)  # unregister
        log.info("%s not sent on request: %s", msg_type, exc)
        msg = None
    if msg is None:
        latest = link.latest(msg_type)
        if latest is not None and from_target(latest[0]):
            return latest[0]
    return msg
