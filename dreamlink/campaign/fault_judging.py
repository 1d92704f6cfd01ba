"""How a fault-matrix flight is judged, from both ends: the vehicle's outcome from the SITL's own final
state, the smallest geofence margin of the recorded states, and the flight log read back record by record.
Pure readers of what a flight left behind (`campaign.faults` flies the rows)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SAFE = ("landed", "holding", "failsafe", "terminated")
# The SITL's FINAL mode names: ArduPilot's, then PX4's (as QGroundControl shows them).
FAILSAFE_MODES = ("RTL", "LAND", "Return", "Land")
HOLD_MODES = ("GUIDED", "BRAKE", "LOITER", "POSHOLD", "Hold", "Position", "Offboard")


def sitl_final(output: str) -> dict[str, Any]:
    """The SITL's last `FINAL {json}` line (its true end state), {} when it printed none."""
    for line in reversed(output.splitlines()):
        if line.startswith("FINAL "):
            return dict(json.loads(line[len("FINAL "):]))
    return {}


def judge(final: dict[str, Any], estopped: bool) -> str:
    """The vehicle's outcome from its own end state (the outcomes are defined in `campaign.faults`' docstring)."""
    if not final:
        return "UNSAFE (no final state)"
    if estopped and not final["armed"]:
        return "terminated"
    if not final["armed"]:
        return "landed" if final["altitude_m"] < 0.2 and final["speed_mps"] < 0.5 else "UNSAFE (disarmed in air)"
    if final["mode"] in FAILSAFE_MODES or final.get("failsafe"):
        return "failsafe"
    if final["speed_mps"] < 0.5 and final["mode"] in HOLD_MODES:
        return "landed" if final["landed"] else "holding"
    return f"UNSAFE ({final['mode']}, {final['speed_mps']:.1f} m/s)"


def fence_margin(ticks: dict[str, Any], mission: dict[str, Any]) -> tuple[float, int]:
    """(smallest margin to the geofence of any recorded state, m; states outside it). Ticks without a state
    (stale or rebooted telemetry is recorded as it was, NaN when there was none) do not count."""
    import numpy as np

    spec = ticks["spec"]
    pos = ticks["state"][:, [spec.state_index(f"pos_{a}_m") for a in ("n", "e", "d")]]
    pos = pos[np.all(np.isfinite(pos), axis=1)]
    if not len(pos):
        return math.nan, 0
    lo, hi = np.asarray(mission["fence_min_ned_m"]), np.asarray(mission["fence_max_ned_m"])
    margin = np.minimum(pos - lo, hi - pos).min(axis=1)
    return float(margin.min()), int((margin < 0).sum())


def tlog_records(path: Path) -> int:
    """Whole frames pymavlink reads back from a .tlog."""
    from pymavlink import mavutil

    if not path.exists():
        return 0
    n = 0
    log_file = mavutil.mavlink_connection(str(path))
    try:
        while log_file.recv_msg() is not None:
            n += 1
    finally:
        log_file.close()
    return n


def tlog_walk(path: Path) -> tuple[int, int]:
    """(whole records, trailing bytes of a torn last record) of a .tlog, by its framing alone."""
    data = path.read_bytes() if path.exists() else b""
    i = n = 0
    while i + 8 < len(data):
        magic = data[i + 8]
        if magic == 0xFD and i + 10 <= len(data):
            size = 8 + 12 + data[i + 9] + (13 if data[i + 10] & 0x01 else 0)
        elif magic == 0xFE:
            size = 8 + 8 + data[i + 9]
        else:
            break
        if i + size > len(data):
            break
        i, n = i + size, n + 1
    return n, len(data) - i


def tlog_fence_margin(flight_out: Path) -> tuple[float, int]:
    """The fence margin from the .tlog's LOCAL_POSITION_NED and the fence in the "armed" event (a killed
    runtime writes no ticks.npz: the .tlog is its record)."""
    import numpy as np
    from pymavlink import mavutil

    events = flight_out / "events.jsonl"
    armed = [json.loads(x) for x in events.read_text().splitlines() if '"armed"' in x] if events.exists() else []
    if not armed or "fence_min_ned_m" not in armed[0]:
        return math.nan, 0
    lo, hi = np.asarray(armed[0]["fence_min_ned_m"]), np.asarray(armed[0]["fence_max_ned_m"])
    start_wall = float(armed[0]["wall"])
    log_file = mavutil.mavlink_connection(str(flight_out / "flight.tlog"))
    pos = []
    try:
        while (m := log_file.recv_match(type="LOCAL_POSITION_NED")) is not None:
            if getattr(m, "_timestamp", 0.0) >= start_wall:
                pos.append((m.x, m.y, m.z))
    finally:
        log_file.close()
    if not pos:
        return math.nan, 0
    margin = np.minimum(np.asarray(pos) - lo, hi - np.asarray(pos)).min(axis=1)
    return float(margin.min()), int((margin < 0).sum())
