"""Which vehicle a world model learned, and whether the one on the link is it.

A world model of a multirotor seen through its autopilot learns the autopilot's closed loop: its family and
firmware, the parameters that shape its velocity response, the airframe. A bundle records them
(`VehicleIdentity.to_dict()`, in the manifest's `training.vehicle`), read live from the autopilot during data
collection, or from the flight logs it was trained on; `dreamlink run` and `campaign` read the vehicle they
connect to and compare (`compare_identity`): a different family is a mismatch, a different firmware or
shaping parameter a difference worth a warning.

Read live: AUTOPILOT_VERSION by MAV_CMD_REQUEST_MESSAGE (mavlink.io "Request Message"; both ArduPilot >= 4.1 and
PX4 answer it), the parameters by PARAM_REQUEST_READ, all asked at once and collected for `timeout_s` (an
autopilot ignores names it does not have). From a log: the AUTOPILOT_VERSION and PARAM_VALUE records in it
(MAVProxy and QGroundControl download both at connect). How PARAM_VALUE carries an integer parameter depends on
the autopilot (mavlink.io parameter protocol, "Parameter Encoding"): PX4 copies its bytes into the float
("bytewise": SYS_AUTOSTART 10040 arrives as 1.4e-41), ArduPilot casts it (FRAME_CLASS 1 arrives as 1.0, with
param_type INT8); so integers are decoded per family.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamlink.firmware_bridge.link import mavlink

log = logging.getLogger(__name__)

FAMILIES = {3: "ardupilot", 12: "px4"}  # MAV_AUTOPILOT_ARDUPILOTMEGA, MAV_AUTOPILOT_PX4
# What shapes the closed loop a velocity setpoint sees, per family (names as in ArduCopter 4.8 and PX4 1.16).
SHAPING_PARAMS: Mapping[str, tuple[str, ...]] = {
    "ardupilot": ("WP_ACC", "PSC_JERK_NE", "PSC_NE_VEL_P", "PSC_NE_VEL_I", "PSC_NE_VEL_D", "PSC_NE_POS_P",
                  "PSC_D_VEL_P", "PSC_JERK_D", "GUID_TIMEOUT"),
    "px4": ("MPC_XY_VEL_P_ACC", "MPC_XY_VEL_I_ACC", "MPC_XY_VEL_D_ACC", "MPC_Z_VEL_P_ACC", "MPC_Z_VEL_I_ACC",
            "MPC_ACC_HOR", "MPC_ACC_HOR_MAX", "MPC_JERK_AUTO", "MPC_JERK_MAX", "MPC_XY_P", "MPC_Z_P"),
}
AIRFRAME_PARAMS: Mapping[str, tuple[str, ...]] = {"ardupilot": ("FRAME_CLASS", "FRAME_TYPE"),
                                                  "px4": ("SYS_AUTOSTART",)}
_INT_TYPES = {1, 2, 3, 4, 5, 6}  # MAV_PARAM_TYPE_UINT8 .. INT32: bytewise in the float
_SW_TYPES = {0: "dev", 64: "alpha", 128: "beta", 192: "rc", 255: ""}  # FIRMWARE_VERSION_TYPE
_REL_TOL = 1e-3


def param_value(msg: Any, family: str) -> float:
    """PARAM_VALUE's value; PX4's integer types decoded from their bytewise float, ArduPilot's cast as they are."""
    value = float(msg.param_value)
    if family == "px4" and int(msg.param_type) in _INT_TYPES:
        return float(struct.unpack("<i", struct.pack("<f", value))[0])
    return value


def firmware_version(flight_sw_version: int) -> str:
    """AUTOPILOT_VERSION.flight_sw_version (major, minor, patch, type bytes) as "4.8.0-dev" / "1.16.0"."""
    v = int(flight_sw_version)
    kind = _SW_TYPES.get(v & 0xFF, f"type{v & 0xFF}")
    text = f"{v >> 24 & 0xFF}.{v >> 16 & 0xFF}.{v >> 8 & 0xFF}"
    return f"{text}-{kind}" if kind else text


def git_hash(family: str, custom: Iterable[int] | bytes) -> str:
    """flight_custom_version: ArduPilot writes its git hash as ASCII, PX4 as the bytes of a little-endian number."""
    raw = bytes(custom)
    if family == "ardupilot":
        return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")
    return raw[::-1].hex().lstrip("0")[:8] if any(raw) else ""


@dataclass(frozen=True)
class VehicleIdentity:
    family: str  # "ardupilot", "px4" or "" (unknown)
    firmware: str = ""  # "4.8.0-dev"
    git: str = ""
    airframe: dict[str, float] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)  # the closed-loop shaping parameters
    source: str = ""  # "live" or the log it was read from

    @property
    def summary(self) -> str:
        frame = ", ".join(f"{k} {v:g}" for k, v in self.airframe.items())
        return (f"{self.family or 'unknown autopilot'} {self.firmware or '?'}" + (f" (git {self.git})" if self.git
                                                                                  else "")
                + (f", {frame}" if frame else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "firmware": self.firmware, "git": self.git, "airframe": dict(self.airframe),
                "params": dict(self.params), "source": self.source, "summary": self.summary}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> VehicleIdentity:
        return VehicleIdentity(str(d.get("family", "")), str(d.get("firmware", "")), str(d.get("git", "")),
                               {str(k): float(v) for k, v in dict(d.get("airframe", {})).items()},
                               {str(k): float(v) for k, v in dict(d.get("params", {})).items()},
                               str(d.get("source", "")))


def identity_from_messages(family: str, version: Any | None, params: Mapping[str, float], source: str
                           ) -> VehicleIdentity:
    return VehicleIdentity(
        family,
        firmware_version(version.flight_sw_version) if version is not None else "",
        git_hash(family, version.flight_custom_version) if version is not None else "",
        {k: params[k] for k in AIRFRAME_PARAMS.get(family, ()) if k in params},
        {k: params[k] for k in SHAPING_PARAMS.get(family, ()) if k in params},
        source)


def read_vehicle_identity(profile: Any, timeout_s: float = 1.5) -> VehicleIdentity:
    """Ask the autopilot behind `profile` (an AutopilotProfile, connected) who it is; what did not come within
    `timeout_s` is left out (logged), never an error: identity is information, not a precondition."""
    link, cfg = profile.link, profile.config
    family = FAMILIES.get(int(profile.AUTOPILOT), "")
    names = (*AIRFRAME_PARAMS.get(family, ()), *SHAPING_PARAMS.get(family, ()))
    got: dict[str, float] = {}
    version: list[Any] = []

    def on_param(msg: Any, recv_s: float) -> None:
        from dreamlink.firmware_bridge.params import param_name

        if msg.get_srcSystem() == cfg.target_system:
            got[param_name(msg.param_id)] = param_value(msg, family)

    def on_version(msg: Any, recv_s: float) -> None:
        if msg.get_srcSystem() == cfg.target_system:
            version.append(msg)

    link.subscribe("PARAM_VALUE", on_param)
    link.subscribe("AUTOPILOT_VERSION", on_version)
    try:
        link.mav.command_long_send(cfg.target_system, cfg.target_component, mavlink.MAV_CMD_REQUEST_MESSAGE, 0,
                                   float(mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION), 0, 0, 0, 0, 0, 0)
        for name in names:
            link.mav.param_request_read_send(cfg.target_system, cfg.target_component, name.encode("ascii"), -1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (version and all(n in got for n in names)):
            time.sleep(0.02)
    finally:
        link.unsubscribe("PARAM_VALUE", on_param)
        link.unsubscribe("AUTOPILOT_VERSION", on_version)
    missing = [n for n in names if n not in got]
    if missing or not version:
        log.info("vehicle identity: %s%s", "no AUTOPILOT_VERSION; " if not version else "",
                 f"no value for {missing}" if missing else "")
    # The closed loop flown is the one the profile tunes on entering its control mode (ArduPilot's GUIDED_TUNING):
    # those values, not the ones before, are what a model learns and what a flight meets.
    got.update(getattr(profile, "GUIDED_TUNING", {}))
    return identity_from_messages(family, version[-1] if version else None, got, "live")


def identity_from_tlog(path: str | Path, autopilot: tuple[int, int] = (1, 1)) -> VehicleIdentity:
    """The vehicle a flight log shows: its autopilot's HEARTBEAT family, AUTOPILOT_VERSION and PARAM_VALUEs."""
    from dreamlink.firmware_bridge.tlog import read_tlog

    family = ""
    version = None
    values: dict[str, Any] = {}
    for r in read_tlog(path, on_error="skip", types=("HEARTBEAT", "AUTOPILOT_VERSION", "PARAM_VALUE")):
        system, component = r.src
        if r.type == "HEARTBEAT" and (system, component) == autopilot and not family:
            family = FAMILIES.get(int(r.msg.autopilot), "")
        elif r.type == "AUTOPILOT_VERSION" and system == autopilot[0]:
            version = r.msg
        elif r.type == "PARAM_VALUE" and system == autopilot[0]:
            name = r.msg.param_id if isinstance(r.msg.param_id, str) else r.msg.param_id.decode()
            values[name.split("\x00", 1)[0]] = r.msg
    params = {name: param_value(msg, family) for name, msg in values.items()}
    return identity_from_messages(family, version, params, str(path))


def compare_identity(learned: VehicleIdentity, flying: VehicleIdentity) -> tuple[list[str], list[str]]:
    """(mismatches, differences) between the vehicle a bundle learned and the one on the link, in words.

    A mismatch (another autopilot family) means the model describes another closed loop; a difference (firmware,
    airframe, a shaping parameter) means it may. Values missing on either side are not compared."""
    mismatches, differences = [], []
    if learned.family and flying.family and learned.family != flying.family:
        mismatches.append(f"the bundle learned a {learned.family} vehicle; this is {flying.family}")
    if learned.firmware and flying.firmware and learned.firmware != flying.firmware:
        differences.append(f"firmware {learned.firmware} learned, {flying.firmware} here")
    for kind, a, b in (("airframe", learned.airframe, flying.airframe), ("parameter", learned.params, flying.params)):
        for name in sorted(set(a) & set(b)):
            if not math.isclose(a[name], b[name], rel_tol=_REL_TOL, abs_tol=1e-6):
                differences.append(f"{kind} {name} = {a[name]:g} learned, {b[name]:g} here")
    return mismatches, differences
