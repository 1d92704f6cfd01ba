"""Commands the runtime takes from a ground station: the emergency stop, and the mission commands (go here,
pause and resume, return, land), answered with the runtime's real result; progress reported back.

A ground station (QGroundControl, MAVProxy: `long DO_FLIGHTTERMINATION 1`) sends COMMAND_LONG
MAV_CMD_DO_FLIGHTTERMINATION (185) with param1 >= 0.5 to the companion computer (our system id,
component 191, or broadcast 0). MAVLink documents it as "terminate flight immediately"; for the
runtime it means: stop planning, motors safe now. It is ACKed ACCEPTED, and counted; from a
source not in `allowed_sources` (when set) it is ACKed DENIED and ignored.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dreamlink.firmware_bridge.link import Link, mavlink

log = logging.getLogger(__name__)


class EstopListener:
    """Sets `triggered` (a threading.Event) when a valid flight-termination command arrives."""

    def __init__(self, link: Link, allowed_sources: Sequence[tuple[int, int]] = ()) -> None:
        self.link = link
        self.allowed = tuple(allowed_sources)
        self.triggered = threading.Event()
        self.source: tuple[int, int] | None = None
        self.refused = 0
        link.subscribe("COMMAND_LONG", self._on_command)

    def _for_us(self, msg: Any) -> bool:
        me_sys, me_comp = self.link.config.source_system, self.link.config.source_component
        return msg.target_system in (0, me_sys) and msg.target_component in (0, me_comp)

    def _on_command(self, msg: Any, _recv_s: float) -> None:
        if msg.command != mavlink.MAV_CMD_DO_FLIGHTTERMINATION or not self._for_us(msg):
            return
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        if self.allowed and src not in self.allowed:
            self.refused += 1
            log.warning("flight termination from %d/%d refused: not an allowed source", *src)
            result = mavlink.MAV_RESULT_DENIED
        elif msg.param1 < 0.5:
            result = mavlink.MAV_RESULT_ACCEPTED  # "0 = no termination": nothing to do
        else:
            self.source = src
            self.triggered.set()
            log.error("EMERGENCY STOP from %d/%d", *src)
            result = mavlink.MAV_RESULT_ACCEPTED
        try:
            self.link.mav.command_ack_send(msg.command, result, 0, 0, src[0], src[1])
        except Exception as exc:  # the ACK is a courtesy; the stop must not depend on it
            log.warning("could not ACK flight termination: %s", exc)


# Mission commands a ground station sends the companion while it flies a mission (MAVLink's mission and
# command protocols; QGroundControl's "go here" sends DO_REPOSITION as COMMAND_INT, MAVProxy's `guided` a
# SET_POSITION_TARGET_GLOBAL_INT).
GOTO, PAUSE, RESUME, RETURN, LAND = "goto", "pause", "resume", "return", "land"


@dataclass(frozen=True)
class GcsRequest:
    """What a ground station asked for: `kind` one of goto/pause/resume/return/land; a go-to's global target
    (degrees, metres in `frame`, a MAV_FRAME); who asked; and whether the protocol expects an ACK (a command
    does, SET_POSITION_TARGET_GLOBAL_INT does not)."""

    kind: str
    source: tuple[int, int]
    lat_deg: float = math.nan
    lon_deg: float = math.nan
    alt_m: float = math.nan
    frame: int = 0
    command: int = 0  # the MAV_CMD to ACK (0: a message, not a command)


class MissionCommandListener:
    """Turns ground-station commands addressed to the companion (our system id and component, or broadcast)
    into `GcsRequest`s and answers each command with the result `decide(request)` returns: the real result, since
    the runtime decides (a go-to into a keep-out zone is DENIED, a resume without a pause is ACCEPTED and does
    nothing, ...). `decide` runs on the link's receive thread: it must be quick and thread-safe.

    MAV_CMD_DO_REPOSITION (192: param5/6/7 or x/y/z = lat/lon/alt), SET_POSITION_TARGET_GLOBAL_INT (a position
    target), MAV_CMD_DO_PAUSE_CONTINUE (193: param1 0 = pause, 1 = continue), MAV_CMD_NAV_RETURN_TO_LAUNCH (20),
    MAV_CMD_NAV_LAND (21). Commands from a source not in `allowed_sources` (when set) are DENIED."""

    def __init__(self, link: Link, decide: Callable[[GcsRequest], int],
                 allowed_sources: Sequence[tuple[int, int]] = ()) -> None:
        self.link, self.decide, self.allowed = link, decide, tuple(allowed_sources)
        self.counts: dict[str, int] = {}
        link.subscribe("COMMAND_LONG", self._on_command)
        link.subscribe("COMMAND_INT", self._on_command)
        link.subscribe("SET_POSITION_TARGET_GLOBAL_INT", self._on_position_target)

    def _for_us(self, target_system: int, target_component: int) -> bool:
        me_sys, me_comp = self.link.config.source_system, self.link.config.source_component
        return target_system in (0, me_sys) and target_component in (0, me_comp)

    def _on_command(self, msg: Any, _recv_s: float) -> None:
        if not self._for_us(msg.target_system, msg.target_component):
            return
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        command = int(msg.command)
        is_int = msg.get_type() == "COMMAND_INT"
        request: GcsRequest | None = None
        if command == mavlink.MAV_CMD_DO_REPOSITION:
            lat, lon = (msg.x / 1e7, msg.y / 1e7) if is_int else (msg.param5, msg.param6)
            frame = int(msg.frame) if is_int else mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT
            request = GcsRequest(GOTO, src, float(lat), float(lon), float(msg.z if is_int else msg.param7), frame,
                                 command)
        elif command == mavlink.MAV_CMD_DO_PAUSE_CONTINUE:
            request = GcsRequest(RESUME if msg.param1 >= 0.5 else PAUSE, src, command=command)
        elif command == mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH:
            request = GcsRequest(RETURN, src, command=command)
        elif command == mavlink.MAV_CMD_NAV_LAND:
            request = GcsRequest(LAND, src, command=command)
        if request is None:
            return  # not a mission command: the e-stop listener or nobody
        self._answer(request)

    def _on_position_target(self, msg: Any, _recv_s: float) -> None:
        if not self._for_us(msg.target_system, msg.target_component):
            return
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        self._answer(GcsRequest(GOTO, src, msg.lat_int / 1e7, msg.lon_int / 1e7, float(msg.alt),
                                int(msg.coordinate_frame)))

    def _answer(self, request: GcsRequest) -> None:
        if self.allowed and request.source not in self.allowed:
            result = int(mavlink.MAV_RESULT_DENIED)
            log.warning("%s from %d/%d refused: not an allowed source", request.kind, *request.source)
        else:
            try:
                result = int(self.decide(request))
            except Exception as exc:  # the runtime could not take it: say so, never drop the ACK
                log.warning("ground station %s: %s", request.kind, exc)
                result = int(mavlink.MAV_RESULT_FAILED)
        self.counts[request.kind] = self.counts.get(request.kind, 0) + 1
        if request.command:
            try:
                self.link.mav.command_ack_send(request.command, result, 0, 0, *request.source)
            except Exception as exc:
                log.warning("could not ACK %s: %s", request.kind, exc)


class MissionReporter:
    """Progress the way autopilots report it, so a ground station's map shows it: MISSION_CURRENT (the item
    flown, re-sent every second), MISSION_ITEM_REACHED (once per item) and STATUSTEXT for what changed."""

    def __init__(self, link: Link, total: int) -> None:
        self.link, self.total = link, total
        self.current = 0

    def set_current(self, seq: int) -> None:
        self.current = seq
        self.heartbeat()

    def heartbeat(self) -> None:
        """MISSION_CURRENT now (call at 1 Hz)."""
        try:
            self.link.mav.mission_current_send(self.current, self.total)
        except Exception as exc:
            log.debug("MISSION_CURRENT not sent: %s", exc)

    def reached(self, seq: int) -> None:
        try:
            self.link.mav.mission_item_reached_send(seq)
        except Exception as exc:
            log.debug("MISSION_ITEM_REACHED not sent: %s", exc)

    def text(self, text: str, severity: int = mavlink.MAV_SEVERITY_INFO) -> None:
        try:
            self.link.mav.statustext_send(severity, text[:50].encode())
        except Exception as exc:
            log.debug("STATUSTEXT not sent: %s", exc)
