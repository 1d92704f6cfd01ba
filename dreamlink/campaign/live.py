"""Data from the vehicle you fly: a bounded excitation flight against any live ArduPilot or PX4 autopilot.

`dreamlink collect quad --connect ... --autopilot ...` runs this in real time. It flies through the very loop the
planner flies through (`ControlLoop`: stale-state fallbacks, the shield with its slew limit and geofence, the
e-stop, the autopilot's failsafe when telemetry dies, the flight recorder), with an excitation in place of the
planner: velocity setpoints rich enough to identify the closed loop (random steps and sums of sines,
`campaign.excitation`), kept inside a box around the start point. Every frame goes into the flight's `.tlog`, and
the transitions are read back from that log (`calibration.tlog_data`), the same path as any other flight log, so
a model learns exactly what a log of this vehicle says.

The wait for the autopilot lasts as long as its estimator needs (printing what it waits for); a vehicle already
in the air (`in_air`) is taken over where it is, without arming or taking off, and left holding afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.calibration.tlog_data import TlogDataConfig, tlog_to_transitions
from dreamlink.campaign.excitation import ExcitationConfig, VelocityExcitation
from dreamlink.firmware_bridge.ground_station import EstopListener
from dreamlink.firmware_bridge.link import Link, LinkConfig
from dreamlink.firmware_bridge.profiles import make_profile
from dreamlink.firmware_bridge.px4 import Px4Profile
from dreamlink.firmware_bridge.vehicle_id import read_vehicle_identity
from dreamlink.learning.transitions import TransitionSet
from dreamlink.runtime.clock import MonotonicClock
from dreamlink.runtime.loop import ControlLoop, LoopConfig, LoopStats
from dreamlink.runtime.mppi import Plan
from dreamlink.runtime.recorder import TLOG_NAME, FlightRecorder
from dreamlink.runtime.shield import Geofence, ShieldLimits
from dreamlink.spec import QUAD, VehicleSpec

log = logging.getLogger(__name__)

TRANSITIONS_NAME = "transitions.npz"
COLLECT_SUMMARY = "collect.json"


@dataclass(frozen=True)
class LiveCollectConfig:
    connect: str
    autopilot: str  # "ardupilot" or "px4"
    out_dir: Path
    minutes: float = 3.0  # of excitation, after take-off
    takeoff_altitude_m: float = 6.0
    box_half_width_m: float = 6.0  # the excitation stays within this of the start point, north and east
    box_altitude_m: tuple[float, float] = (3.0, 9.0)  # and between these heights above the ground it started on
    fence_margin_m: float = 3.0  # the shield's geofence lies this far outside the box
    max_accel_mps2: float = 10.0  # the shield's slew limit on the setpoints (as in `dreamlink run`)
    in_air: bool = False  # take over a vehicle already flying, where it is; leave it holding at the end
    seed: int = 0
    connect_timeout_s: float = 30.0  # silence from the autopilot that ends the wait (not its estimator)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.minutes) and 0 < self.minutes <= 30):
            raise ValueError(f"LiveCollectConfig.minutes: expected (0, 30], got {self.minutes!r}")
        lo, hi = self.box_altitude_m
        if not (0 < lo < hi and self.box_half_width_m > 1 and self.takeoff_altitude_m >= lo):
            raise ValueError(f"LiveCollectConfig: the box needs 0 < low < high altitude, a half width > 1 m and a "
                             f"take-off altitude inside it; got {self.box_altitude_m}, {self.box_half_width_m}, "
                             f"{self.takeoff_altitude_m}")


class ExcitationSource:
    """The planner's place in the loop, filled by an excitation: `plan()` returns the next setpoint as a one-step
    plan (nothing is imagined). Position is read from the state the loop hands it."""

    def __init__(self, excitation: VelocityExcitation, spec: VehicleSpec, start_s: float) -> None:
        self.excitation, self.spec, self.start_s = excitation, spec, start_s
        self._pos = [spec.state_index(n) for n in ("pos_n_m", "pos_e_m", "pos_d_m")]
        self._order = [spec.action_index(n) for n in ("vel_sp_n_mps", "vel_sp_e_mps", "vel_sp_d_mps")]

    def initial_plan(self) -> np.ndarray:
        return np.zeros((1, self.spec.action_dim), dtype=np.float32)

    def plan(self, state: np.ndarray, warm: np.ndarray, now_s: float, ref: Any = None, prior: Any = None) -> Plan:
        v = self.excitation.next(state[self._pos].astype(np.float64), now_s - self.start_s)
        action = np.zeros((1, self.spec.action_dim), dtype=np.float32)
        action[0, self._order] = v
        imagined = np.full((2, self.spec.state_dim), np.nan, dtype=np.float32)
        return Plan(action, now_s, state.copy(), imagined, math.nan, 0.0)


@dataclass(frozen=True)
class LiveCollectResult:
    transitions: TransitionSet
    out_dir: Path
    stats: LoopStats
    vehicle: dict[str, Any]
    telemetry: dict[str, Any]

    @property
    def minutes(self) -> float:
        return len(self.transitions) * self.transitions.spec.control_period_s / 60.0


def collect_live(config: LiveCollectConfig, spec: VehicleSpec = QUAD, stop: threading.Event | None = None,
                 on_tick: Callable[[], None] | None = None, on_wait: Callable[[str], None] | None = None,
                 on_phase: Callable[[str], None] | None = None) -> LiveCollectResult:
    """One excitation flight in real time; the transitions it gave (also saved beside its flight log)."""
    phase = on_phase or (lambda text: log.info("%s", text))
    out = Path(config.out_dir)
    if (out / TLOG_NAME).exists():
        raise FileExistsError(f"{out} already holds a flight log ({TLOG_NAME}); collect into a new folder, so one "
                              f"log is one flight")
    period = spec.control_period_s
    ticks = round(config.minutes * 60.0 / period)
    recorder = FlightRecorder(out, spec, 1, ticks)
    link = Link(LinkConfig(config.connect), tap=recorder.tap).open()
    profile = make_profile(spec, link, config.autopilot)
    estop = EstopListener(link)
    clock = MonotonicClock()
    vehicle: dict[str, Any] = {}
    stats: LoopStats | None = None
    try:
        phase(f"waiting for the {config.autopilot} autopilot on {config.connect}")
        profile.connect(timeout_s=config.connect_timeout_s, progress=on_wait)
        vehicle = read_vehicle_identity(profile).to_dict()
        phase(f"connected: {vehicle.get('summary', config.autopilot)}")
        _, x, _ = profile.state()
        pos = np.array([x[spec.state_index(n)] for n in ("pos_n_m", "pos_e_m", "pos_d_m")], dtype=np.float64)
        if config.in_air:
            if not (profile.armed and profile.in_air):
                raise RuntimeError(f"collect --in-air: the {config.autopilot} vehicle is not flying "
                                   f"({profile.waiting_for()}); leave out --in-air to take off")
            ground_d = pos[2] + config.box_altitude_m[0]  # the box's floor is where the vehicle is now
            profile.enter_control_mode()
        else:
            ground_d = float(pos[2])
            phase(f"arming and taking off to {config.takeoff_altitude_m:g} m")
            profile.enter_control_mode()
            profile.arm()
            profile.takeoff(config.takeoff_altitude_m)
        lo_alt, hi_alt = config.box_altitude_m
        w = config.box_half_width_m
        box_min = (pos[0] - w, pos[1] - w, ground_d - hi_alt)
        box_max = (pos[0] + w, pos[1] + w, ground_d - lo_alt)
        m = config.fence_margin_m
        fence = Geofence.for_velocity_setpoints(spec, (box_min[0] - m, box_min[1] - m, box_min[2] - m),
                                                (box_max[0] + m, box_max[1] + m, box_max[2] + m))
        step = config.max_accel_mps2 * period
        limits = ShieldLimits.from_spec(spec, max_step_change=(step,) * spec.action_dim, geofence=fence)
        excitation = VelocityExcitation(
            ExcitationConfig(max_speed_xy_mps=float(spec.action_high[spec.action_index("vel_sp_n_mps")]),
                             max_speed_z_mps=float(spec.action_high[spec.action_index("vel_sp_d_mps")]),
                             box_min_ned_m=box_min, box_max_ned_m=box_max),
            np.random.default_rng(config.seed))
        source = ExcitationSource(excitation, spec, clock.now())
        loop = ControlLoop(profile, source, limits, clock, LoopConfig(rate_hz=1.0 / period), recorder,  # type: ignore[arg-type]
                           estop=estop.triggered, failsafe=profile.failsafe)
        recorder.event("excitation", clock.now(), box_min_ned_m=box_min, box_max_ned_m=box_max,
                       fence_min_ned_m=fence.min_ned_m, fence_max_ned_m=fence.max_ned_m, seed=config.seed,
                       vehicle=vehicle)
        phase(f"excitation for {config.minutes:g} min inside +/-{w:g} m, {lo_alt:g}-{hi_alt:g} m up")
        stats = loop.run(ticks, stop, on_tick)
        recorder.event("stats", clock.now(), **stats.to_dict())
        if loop.stopped_by_estop:
            phase("e-stop: the motors were stopped")
        elif config.in_air:
            phase("excitation done: holding")
            profile.hold()
        else:
            phase("excitation done: landing")
            profile.land()
    finally:
        telemetry = profile.stream_report()
        try:
            if config.in_air and stats is not None:
                if isinstance(profile, Px4Profile):
                    profile.stop_stream()  # in AUTO.LOITER now: PX4 holds without the stream
            else:
                profile.release()  # lands when flying, disarms when not
        finally:
            link_cfg = link.config
            link.close()
            recorder.close()
    data = tlog_to_transitions(out / TLOG_NAME, spec, config.autopilot,
                               config=TlogDataConfig(client=(link_cfg.source_system, link_cfg.source_component)))
    data.meta["vehicle"] = vehicle
    data.save(out / TRANSITIONS_NAME)
    summary = {"stats": stats.to_dict() if stats else None, "vehicle": vehicle, "telemetry": telemetry,
               "transitions": len(data), "minutes": round(len(data) * period / 60.0, 3),
               "wall_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / COLLECT_SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    assert stats is not None
    return LiveCollectResult(data, out, stats, vehicle, telemetry)
