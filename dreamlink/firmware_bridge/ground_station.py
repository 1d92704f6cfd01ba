"""Commands the runtime takes from a ground station: the emergency stop.

A ground station (QGroundControl, MAVProxy: `long DO_FLIGHTTERMINATION 1`) sends COMMAND_LONG
MAV_CMD_DO_FLIGHTTERMINATION (185) with param1 >= 0.5 to the companion computer (our system id,
component 191, or broadcast 0). MAVLink documents it as "terminate flight immediately"; for the
runtime it means: stop planning, motors safe now. It is ACKed ACCEPTED, and counted; from a
source not in `allowed_sources` (when set) it is ACKed DENIED and ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
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
