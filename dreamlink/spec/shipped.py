"""The vehicles dreamlink ships as files (`dreamlink/vehicles/`): the cart-pole and the quadrotor."""

from __future__ import annotations

import math

import numpy as np

from dreamlink.spec.vehicle import VehicleSpec
from dreamlink.spec.vehicle_file import load_vehicle

# The shipped vehicles. Gymnasium's CartPole envelope: the episode ends past 2.4 m or 12 degrees; the
# state limits in cartpole.toml are wider (where the model was trained).
CARTPOLE = load_vehicle("cartpole")
CARTPOLE_BALANCED_ANGLE_RAD = 12.0 * math.pi / 180.0
CARTPOLE_BALANCED_POS_M = 2.4


def cartpole_balanced(state: np.ndarray) -> np.ndarray:
    """True where the pole is up and the cart on the track (Gymnasium's thresholds). state [..., 4]."""
    pos = state[..., CARTPOLE.state_index("cart_pos_m")]
    angle = state[..., CARTPOLE.state_index("pole_angle_rad")]
    return (np.abs(angle) < CARTPOLE_BALANCED_ANGLE_RAD) & (np.abs(pos) < CARTPOLE_BALANCED_POS_M)


# A multirotor seen through its autopilot (quad.toml): state in the autopilot's local NED frame
# (LOCAL_POSITION_NED, ATTITUDE), action = velocity setpoints (SET_POSITION_TARGET_LOCAL_NED).
QUAD = load_vehicle("quad")

SPECS: dict[str, VehicleSpec] = {"cartpole": CARTPOLE, "quad": QUAD}
