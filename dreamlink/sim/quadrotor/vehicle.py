"""One simulated flight controller + airframe, without any transport: physics, controller and autopilot on one clock.

Timing: the autopilot's mode logic and the position/velocity loop run once per 10 ms frame (100 Hz);
attitude, rate control and physics every 2.5 ms substep (400 Hz). The vehicle clock is an integer frame count,
so `time_us` never drifts and lockstep runs replay exactly.
"""

from __future__ import annotations

import numpy as np

from dreamlink.sim.quadrotor.ardupilot import ArduCopterAutopilot
from dreamlink.sim.quadrotor.autopilot import AutopilotConfig
from dreamlink.sim.quadrotor.controller import ARDUPILOT_GAINS, OFF, PX4_GAINS, Controller, ControlTarget
from dreamlink.sim.quadrotor.physics import SUBSTEP_S, DrydenWind, QuadParams, QuadPhysics, QuadState
from dreamlink.sim.quadrotor.px4 import Px4Autopilot
from dreamlink.sim.quadrotor.randomisation import DomainParams

FRAME_US = 10_000
SUBSTEPS_PER_FRAME = round(FRAME_US / 1e6 / SUBSTEP_S)

# Home of each autopilot's stock SITL (the HOME_POSITION in the two logs): lat deg, lon deg, alt m AMSL.
HOMES = {"ardupilot": (-35.3632610, 149.1652299, 584.09), "px4": (47.3977434, 8.5455943, 489.383)}


class SimVehicle:
    """Advance with `advance_frame()`; read `state`, `autopilot`, `controller.output`, `time_us`."""

    def __init__(self, config: AutopilotConfig, domain: DomainParams, nominal: QuadParams | None = None) -> None:
        self.nominal = nominal if nominal is not None else QuadParams()
        self.domain = domain
        self.flavour = config.flavour
        self.home = HOMES[config.flavour]
        self.true_params = domain.quad_params(self.nominal)
        wind = DrydenWind(domain.wind_params(), np.random.default_rng([domain.seed, 1]))
        self.physics = QuadPhysics(self.true_params, wind)
        self.controller = Controller(self.nominal, ARDUPILOT_GAINS if config.flavour == "ardupilot" else PX4_GAINS)
        self.autopilot: ArduCopterAutopilot | Px4Autopilot = (
            ArduCopterAutopilot(config) if config.flavour == "ardupilot"
            else Px4Autopilot(config, home_alt_amsl_m=self.home[2]))
        self.frames = 0
        self.target: ControlTarget = OFF

    @property
    def state(self) -> QuadState:
        return self.physics.state

    @property
    def time_us(self) -> int:
        return self.frames * FRAME_US

    @property
    def time_s(self) -> float:
        return self.frames * FRAME_US / 1e6

    def advance_frame(self) -> None:
        """Mode logic once, then controller + physics for 10 ms."""
        self.target = self.autopilot.update(self.time_s, self.state)
        for _ in range(SUBSTEPS_PER_FRAME):
            cmd = self.controller.update(self.target, self.state, SUBSTEP_S)
            self.physics.step(cmd, SUBSTEP_S)
        self.frames += 1
