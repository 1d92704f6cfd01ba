"""The MAVLink parameter protocol, client side (mavlink.io/en/services/parameter.html): set a
flight controller parameter and confirm it by the PARAM_VALUE the autopilot echoes back."""

from __future__ import annotations

import logging
import math
from typing import Any

from dreamlink.firmware_bridge.link import Link, LinkTimeout

log = logging.getLogger(__name__)

MAV_PARAM_TYPE_REAL32 = 9


def param_name(raw: Any) -> str:
    """PARAM_VALUE.param_id (16 chars, NUL-padded unless full) as a str."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    return str(raw).split("\x00", 1)[0]


def set_param(link: Link, target_system: int, target_component: int, name: str, value: float,
              timeout_s: float = 1.0, retries: int = 2) -> float:
    """PARAM_SET `name` = `value` (REAL32), resent until the PARAM_VALUE echo arrives; returns the value
    the autopilot reports. Raises LinkTimeout naming the parameter (an unknown name gets no echo) and
    ValueError if the autopilot stored something else."""
    if len(name) > 16 or not name.isascii():
        raise ValueError(f"set_param: {name!r} is not a MAVLink parameter id (ASCII, at most 16 characters)")

    def echo(msg: Any) -> bool:
        return param_name(msg.param_id) == name and (target_system == 0 or msg.get_srcSystem() == target_system)

    for _ in range(retries + 1):
        # The waiter is registered before the send, so an echo that beats us back is not missed.
        waiter = link._expect("PARAM_VALUE", echo)
        link.mav.param_set_send(target_system, target_component, name.encode("ascii"), float(value),
                                MAV_PARAM_TYPE_REAL32)
        reply = link._await("PARAM_VALUE", waiter, timeout_s)
        if reply is not None:
            got = float(reply.param_value)
            if not math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-6):
                raise ValueError(f"PARAM_SET {name}={value:g}: the autopilot kept {got:g} (out of its range?)")
            log.info("parameter %s = %g", name, got)
            return got
    raise LinkTimeout(f"PARAM_SET {name}={value:g} to {target_system}/{target_component}: no PARAM_VALUE echo after "
                      f"{retries + 1} tries of {timeout_s:.2f} s; does this autopilot have a parameter {name}?")
