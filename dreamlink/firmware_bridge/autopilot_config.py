"""`AutopilotConfig`: how to talk to one ArduPilot or PX4 flight controller, validated once at the edge.

Its own module because both halves of a profile read it: the telemetry (`autopilot_telemetry`: which system
and component to listen to, the stream rates) and the commands (`autopilot`: timeouts, retries, failsafe
modes, PX4's setpoint stream).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AutopilotConfig:
    """How to talk to one ArduPilot or PX4 flight controller. Fields marked PX4 are ignored by ArduPilot."""

    target_system: int = 1
    target_component: int = 1
    stream_rate_hz: float = 50.0  # LOCAL_POSITION_NED and ATTITUDE
    status_rate_hz: float = 2.0  # EXTENDED_SYS_STATE (landed state) and SYS_STATUS (pre-arm checks)
    command_timeout_s: float = 1.0  # per COMMAND_LONG try
    command_retries: int = 2
    mode_confirm_timeout_s: float = 2.5  # a HEARTBEAT must show the new mode (heartbeats come at 1 Hz)
    altitude_tolerance_m: float = 0.3  # take-off is done this close to the target altitude
    land_timeout_s: float = 120.0
    failsafe_modes: tuple[str, ...] = ("RTL", "LAND")  # tried in order by failsafe()
    lockstep: bool = False  # lockstep SITL: waits tick with TIMESYNC, no background setpoint stream
    setpoint_rate_hz: float = 20.0  # PX4: background stream (MAVSDK's rate; PX4 needs > 2 Hz)
    setpoint_timeout_s: float = 0.5  # PX4: the newest action is repeated this long, then a position hold
    offboard_warmup_s: float = 1.0  # PX4: stream this long (vehicle time) before asking for OFFBOARD
    takeoff_speed_mps: float = 1.5  # PX4: climb rate of the offboard take-off ramp (as in the log)
    # connect(): how long the autopilot may take to have a position estimate and pass its pre-arm checks while
    # it keeps sending HEARTBEATs (real ArduPilot SITL: about 40 s until its EKF uses GPS; a cold GPS: minutes)
    estimator_timeout_s: float = 600.0
    keep_streams: bool = True  # re-assert the state streams when something else on the link lowers them

    def __post_init__(self) -> None:
        for key in ("target_system", "target_component"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise ValueError(f"AutopilotConfig.{key}: expected 0..255 (0 = any), got {value!r}")
        if isinstance(self.command_retries, bool) or not isinstance(self.command_retries, int) \
                or not 0 <= self.command_retries <= 10:
            raise ValueError(f"AutopilotConfig.command_retries: expected 0..10, got {self.command_retries!r}")
        positive = ("stream_rate_hz", "status_rate_hz", "command_timeout_s", "mode_confirm_timeout_s",
                    "altitude_tolerance_m", "land_timeout_s", "setpoint_timeout_s", "takeoff_speed_mps",
                    "estimator_timeout_s")
        for key in positive:
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"AutopilotConfig.{key}: expected a finite value > 0, got {value!r}")
        if self.stream_rate_hz > 500 or self.status_rate_hz > 500:
            raise ValueError(f"AutopilotConfig.stream_rate_hz/status_rate_hz: expected <= 500 Hz, got "
                             f"{self.stream_rate_hz!r}/{self.status_rate_hz!r}")
        if not (math.isfinite(self.setpoint_rate_hz) and 2.0 < self.setpoint_rate_hz <= 100.0):
            raise ValueError(f"AutopilotConfig.setpoint_rate_hz: expected (2, 100] Hz (PX4 leaves OFFBOARD "
                             f"below 2 Hz), got {self.setpoint_rate_hz!r}")
        if not (math.isfinite(self.offboard_warmup_s) and self.offboard_warmup_s >= 1.0):
            raise ValueError(f"AutopilotConfig.offboard_warmup_s: expected >= 1 s (PX4 enables offboard after "
                             f"more than a second of setpoints), got {self.offboard_warmup_s!r}")
        if not self.failsafe_modes or not all(isinstance(m, str) and m for m in self.failsafe_modes):
            raise ValueError(f"AutopilotConfig.failsafe_modes: expected mode names like ('RTL', 'LAND'), "
                             f"got {self.failsafe_modes!r}")
