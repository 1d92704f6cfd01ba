"""Which profile speaks to which vehicle: the one place that maps a vehicle spec (and, for a
multirotor, its autopilot family) to the object the runtime flies through."""

from __future__ import annotations

from typing import Any

from dreamlink.firmware_bridge.ardupilot import ArduPilotCopterProfile
from dreamlink.firmware_bridge.autopilot_config import AutopilotConfig
from dreamlink.firmware_bridge.link import Link
from dreamlink.firmware_bridge.motor_board import BoardProfile, MotorBoardProfile
from dreamlink.firmware_bridge.px4 import Px4Profile
from dreamlink.spec import VehicleSpec

AUTOPILOTS = {"ardupilot": ArduPilotCopterProfile, "px4": Px4Profile}


def make_profile(spec: VehicleSpec, link: Link, autopilot: str = "", lockstep: bool = False) -> Any:
    """A board profile for a vehicle whose file has a [link] table (the cart-pole's motor board among them); an
    ArduPilot or PX4 profile for the quadrotor."""
    if spec.name == "cartpole":
        return MotorBoardProfile(link, spec)
    if spec.link is not None:
        return BoardProfile(link, spec)
    if spec.name == "quad":
        if autopilot not in AUTOPILOTS:
            raise ValueError(f"vehicle quad: --autopilot must be one of {sorted(AUTOPILOTS)}, got {autopilot!r}")
        return AUTOPILOTS[autopilot](link, spec, AutopilotConfig(lockstep=lockstep))
    raise ValueError(f"no vehicle profile for {spec.name!r}: its vehicle file has no [link] table saying how the "
                     f"state arrives and the action is sent")
