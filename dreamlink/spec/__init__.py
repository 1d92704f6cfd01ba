"""The one vocabulary: names, units and limits of a vehicle's state and action vectors.

Every other box (learning, export, bundle, runtime, firmware_bridge, sim) indexes
state and action vectors through a `VehicleSpec`, never through magic numbers, and
the spec travels inside every bundle so a model loaded without its training code is
still self-describing.

A spec is read from a vehicle file (TOML, `load_vehicle`): besides the vectors it may say how
the state arrives over MAVLink and how the action is sent (`BoardLink`), the task as cost terms
(`QuadraticTask`), planner settings, and which simulator stands in for the robot (`SimSpec`).
The cart-pole and the quadrotor ship as two such files (`dreamlink/vehicles/`); a user's robot
needs a file, not code.

Where each part lives: `vehicle` (`VehicleSpec`, `Component`), `board_link` (`[link]`), `task`
(`[task]`), `planner_settings` (`[planner]`), `sim` (`[sim]`), `vehicle_file` (reading the TOML),
`shipped` (`CARTPOLE`, `QUAD`), `errors` (`SpecError`). Import from here.
"""

from dreamlink.spec.board_link import COMMANDS, BoardLink, Source
from dreamlink.spec.errors import SpecError
from dreamlink.spec.planner_settings import PLANNER_KEYS
from dreamlink.spec.shipped import (
    CARTPOLE,
    CARTPOLE_BALANCED_ANGLE_RAD,
    CARTPOLE_BALANCED_POS_M,
    QUAD,
    SPECS,
    cartpole_balanced,
)
from dreamlink.spec.sim import SimSpec
from dreamlink.spec.task import QuadraticTask, read_reference_csv
from dreamlink.spec.vehicle import Component, VehicleSpec
from dreamlink.spec.vehicle_file import VEHICLES_DIR, load_vehicle, vehicle_from_table, with_vehicle_file

__all__ = [
    "CARTPOLE",
    "CARTPOLE_BALANCED_ANGLE_RAD",
    "CARTPOLE_BALANCED_POS_M",
    "COMMANDS",
    "PLANNER_KEYS",
    "QUAD",
    "SPECS",
    "VEHICLES_DIR",
    "BoardLink",
    "Component",
    "QuadraticTask",
    "SimSpec",
    "Source",
    "SpecError",
    "VehicleSpec",
    "cartpole_balanced",
    "load_vehicle",
    "read_reference_csv",
    "vehicle_from_table",
    "with_vehicle_file",
]
