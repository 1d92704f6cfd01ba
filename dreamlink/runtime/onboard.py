"""Wires one flight together: bundle -> session -> planner -> link/profile -> loop -> recorder.

This is what `dreamlink run` (and the systemd service) executes on the companion computer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.bundle import BundleError, load_bundle
from dreamlink.firmware_bridge.autopilot import AutopilotProfile
from dreamlink.firmware_bridge.ground_station import EstopListener, MissionCommandListener, MissionReporter
from dreamlink.firmware_bridge.link import Link, LinkConfig
from dreamlink.firmware_bridge.mission_protocol import download as download_mission
from dreamlink.firmware_bridge.mission_protocol import read_origin
from dreamlink.firmware_bridge.profiles import make_profile
from dreamlink.firmware_bridge.vehicle_id import VehicleIdentity, compare_identity, read_vehicle_identity
from dreamlink.runtime.budget import check_rate
from dreamlink.runtime.clock import Clock, LockstepClock, MonotonicClock
from dreamlink.runtime.fused import FusedPlanner
from dreamlink.runtime.geo import LocalFrame
from dreamlink.runtime.health import planner_config_for
from dreamlink.runtime.loop import ControlLoop, LoopConfig, LoopStats
from dreamlink.runtime.mission import DriftEstimator, Figure8, TableReference, reference_window, shift_for_drift
from dreamlink.runtime.mission_flight import MissionRunner, load_mission
from dreamlink.runtime.mission_path import path_config_for
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner
from dreamlink.runtime.policy import PolicyPlanner, PolicySession
from dreamlink.runtime.recorder import FlightRecorder
from dreamlink.runtime.session import ModelSession, SessionConfig
from dreamlink.runtime.shield import Geofence, ShieldLimits
from dreamlink.runtime.tasks import default_task
from dreamlink.runtime.zones import ZoneCost
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class MissionConfig:
    """What a multirotor flies: take off, a figure-eight around the take-off point, land.

    `baseline` hands the same reference to the autopilot's own position controller (position +
    velocity feed-forward setpoints) instead of planning: the comparison the planner must win.
    """

    takeoff_altitude_m: float = 5.0
    half_width_m: float = 3.0
    speed_mps: float = 2.0
    laps: float = 2.0
    ramp_s: float = 1.5  # the path's speed ramps up from rest with this time constant
    baseline: bool = False
    land: bool = True
    fence_half_width_m: float = 15.0
    fence_min_altitude_m: float = 1.0
    fence_max_altitude_m: float = 20.0
    max_accel_mps2: float = 10.0  # slew limit on the velocity setpoints
    drift_window_s: float = 1.0  # offset-free tracking: position drift estimated over this window (0: off)
    # A mission people planned instead of the figure-eight: a QGC .plan / .waypoints file, or "autopilot" (the
    # mission and fence stored in the flight controller); flown at `speed_mps` unless the plan says otherwise.
    source: str = ""
    keep_out_margin_m: float = 1.0  # the shield keeps this far out of a keep-out zone
    keep_out_clearance_m: float = 2.5  # the path is routed this far around a keep-out zone


@dataclass(frozen=True)
class RunConfig:
    bundle: Path
    connect: str
    rate_hz: float = 0.0  # 0: the bundle's own control rate
    ticks: int = 0  # 0: until stopped
    lockstep: bool = False
    out_dir: Path = Path("runs/flight")
    seed: int = 0
    planner: MppiConfig | None = None  # None: what the bundle was calibrated for
    session: SessionConfig = field(default_factory=SessionConfig)
    connect_timeout_s: float = 30.0  # silence from the vehicle this long ends the wait for it (not its estimator)
    stale_limit_s: float = 0.1
    autopilot: str = ""  # quad: "ardupilot" or "px4"
    mission: MissionConfig = field(default_factory=MissionConfig)
    use_policy: bool = True  # the bundle's distilled policy as sampling prior and first fallback
    # Lockstep: wall seconds before the clock nudges a silent vehicle one step (0: adaptive, tens of ms,
    # right under packet loss; a long wait keeps a flight a function of its seed on a loaded machine)
    lockstep_retry_s: float = 0.0
    signing_key_file: str = ""  # MAVLink 2 signing on the link ("" = off; see firmware_bridge.link)
    allowed_sources: tuple[tuple[int, int], ...] = ()  # (sysid, compid) whose commands are taken; () = any
    on_wait: Callable[[str], None] | None = None  # hears what the vehicle is awaited for (its estimator, ...)
    strict_vehicle: bool = False  # refuse to fly a vehicle other than the one the bundle learned (else warn)
    on_takeover: str = "end"  # a pilot switched modes: "end" the flight (leaving them the vehicle) or "wait"



@dataclass(frozen=True)
class FlightResult:
    stats: LoopStats
    out_dir: Path
    start_to_first_command_s: float
    link: dict[str, object]


def fly(
    config: RunConfig,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> FlightResult:
    """Fly one flight to completion (or `stop`); always releases the vehicle and closes the logs.

    `on_ready` runs once the vehicle is armed and in control mode (service readiness);
    `on_tick` after every control tick, on the loop thread (service watchdog)."""
    t_start = time.monotonic()
    bundle = load_bundle(config.bundle)
    spec = bundle.spec
    rate_hz = config.rate_hz or spec.rate_hz
    if abs(rate_hz - spec.rate_hz) > 1e-6:
        raise BundleError(
            f"{config.bundle}: the world model steps {spec.control_period_s * 1e3:.1f} ms "
            f"({spec.rate_hz:g} Hz); running it at {rate_hz:g} Hz would imagine the wrong future. "
            f"Use --rate-hz {spec.rate_hz:g} or a bundle trained at {rate_hz:g} Hz"
        )
    if not config.lockstep:  # in lockstep the simulator waits for the planner: no wall-clock budget
        check_rate(bundle.manifest, rate_hz)
    rng = np.random.default_rng(config.seed)
    planner: Any
    policy = PolicySession.from_bundle(bundle, config.session) if config.use_policy else None
    # Keep-out zones are a cost term the fused graph cannot take: a mission plans with the numpy planner.
    numpy_only = bool(config.mission.source)
    if not bundle.has("world_model"):
        # A policy alone: it is the controller, through the same loop, shield and recorder; no prior, no
        # policy fallback (it is what failed), nothing imagined.
        only = policy or PolicySession.from_bundle(bundle, config.session)  # loaded once, even with --no-policy
        if only is None:
            raise BundleError(f"{config.bundle}: holds neither a world model nor a policy; nothing to fly")
        target = default_task(spec).target if spec.task is not None or spec.name in ("cartpole", "quad") \
            else np.zeros(spec.state_dim)
        planner = PolicyPlanner(only, spec, np.asarray(target, np.float32))
        planner_cfg, policy = planner.config, None
    elif bundle.has("planner") and not numpy_only:
        # The bundle carries a fused planner graph: one session.run a tick (same MPPI, tested equal).
        planner = FusedPlanner.from_bundle(bundle, default_task(spec), rng, config.planner)
        planner_cfg = planner.config
    else:
        # the settings the bundle was calibrated for (a fused graph's too): no second session to read them
        planner_cfg = config.planner or planner_config_for(bundle)
        session = ModelSession(bundle.path_of("world_model"), spec, config.session)
        planner = MppiPlanner(session, spec, default_task(spec), planner_cfg, rng)
    planner.plan(np.zeros(spec.state_dim, np.float32), planner.initial_plan(), 0.0)  # warm the session up
    try:  # glibc keeps the heap that loading and warm-up freed: give it back to the OS (~0.8 MB of RSS)
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass
    max_ticks = config.ticks if config.ticks > 0 else int(600 * rate_hz)
    recorder = FlightRecorder(config.out_dir, spec, planner_cfg.horizon, max_ticks)
    link = Link(LinkConfig(connect=config.connect, signing_key_file=config.signing_key_file,
                           allowed_sources=config.allowed_sources), tap=recorder.tap).open()
    profile = make_profile(spec, link, config.autopilot, config.lockstep)
    estop = EstopListener(link)
    clock: Clock = MonotonicClock()
    if config.lockstep:
        retry = {"retry_s": config.lockstep_retry_s, "min_retry_s": config.lockstep_retry_s} \
            if config.lockstep_retry_s > 0 else {}
        clock = LockstepClock(profile, **retry)
    first_command_s = float("nan")
    mission_info: dict[str, object] = {}
    runner: MissionRunner | None = None
    try:
        if isinstance(profile, AutopilotProfile):
            profile.connect(timeout_s=config.connect_timeout_s, progress=config.on_wait)
            mission_info["vehicle"] = check_vehicle(bundle.manifest.training.get("vehicle"), profile,
                                                    config.strict_vehicle, str(config.bundle))
        else:
            profile.connect(timeout_s=config.connect_timeout_s)
        if spec.name == "quad" and config.mission.source:
            limits, reference, ticks, mission_info, runner = _take_off_on_mission(
                profile, link, spec, config, planner_cfg.horizon, clock, planner)
        elif spec.name == "quad":
            limits, reference, ticks, mission_info = _take_off(profile, spec, config, planner_cfg.horizon, clock)
        else:
            profile.arm()
            profile.enter_control_mode()
            limits, reference, ticks = ShieldLimits.from_spec(spec), None, config.ticks
            if spec.task is not None and spec.task.reference:  # a reference trajectory from the vehicle file
                reference = TableReference(spec.task.reference, spec.task.target, spec.control_period_s,
                                           planner_cfg.horizon, clock.now())
                mission_info["reference"] = {"rows": len(spec.task.reference), "start_s": reference.start_s}
        disagreement_limit = float(bundle.manifest.calibration.get("disagreement_threshold", float("inf")))
        loop = ControlLoop(
            profile,
            planner,
            limits,
            clock,
            LoopConfig(rate_hz=rate_hz, stale_limit_s=config.stale_limit_s, disagreement_limit=disagreement_limit,
                       on_takeover=config.on_takeover),
            recorder,
            reference,
            estop=estop.triggered,
            # An autopilot has failsafe modes of its own (RTL/LAND); a motor board's is motor off.
            failsafe=getattr(profile, "failsafe", profile.release),
            policy=policy,
        )
        recorder.event("armed", clock.now(), bundle=str(bundle.root), planner=planner_cfg.__dict__,
                       planner_kind=type(planner).__name__, **mission_info)
        first_command_s = time.monotonic() - t_start
        if on_ready is not None:
            on_ready()
        if config.mission.baseline and spec.name == "quad":
            stats = _fly_baseline(profile, spec, config, clock, recorder, ticks, mission_info, stop)
        elif runner is not None:
            stats = loop.run(ticks, _either(stop, runner.done), on_tick)
            mission_info["mission"] = runner.report()
            for e in runner.events:
                recorder.event("ground_station", e["t_s"], **{k: v for k, v in e.items() if k != "t_s"})
        else:
            stats = loop.run(ticks, stop, on_tick)
        recorder.event("stats", clock.now(), **stats.to_dict())
        taken = getattr(profile, "taken_over", None)
        if loop.stopped_by_estop:
            mission_info["estop_from"] = estop.source
        elif taken is not None or loop.stopped_by_takeover:
            # The pilot has it: no landing, no mode change, no disarm from here on (release() knows it too).
            mission_info["taken_over"] = {"mode": taken[0] if taken else None, "ticks": stats.takeover_ticks,
                                          "on_takeover": config.on_takeover}
            recorder.event("left_to_pilot", clock.now(), mode=taken[0] if taken else None)
        elif spec.name == "quad" and config.mission.land:
            profile.land()
            recorder.event("landed", clock.now(), armed=profile.armed)
            mission_info["landed_disarmed"] = not profile.armed
    finally:
        if isinstance(profile, AutopilotProfile):
            mission_info["telemetry"] = profile.stream_report()
        try:
            profile.release()
        finally:
            link_stats = link.stats
            link.close()
            recorder.close()
    log.info("flight done: %d ticks, %.1f Hz", stats.ticks, stats.achieved_rate_hz)
    result = FlightResult(stats, config.out_dir, first_command_s, _link_dict(link_stats))
    summary = {"stats": stats.to_dict(), "start_to_first_command_s": first_command_s, "link": result.link,
               "mission": mission_info, "planner": type(planner).__name__}
    (config.out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return result


def check_vehicle(learned: Any, profile: AutopilotProfile, strict: bool, bundle_name: str) -> dict[str, Any]:
    """Compare the vehicle the bundle learned (its manifest's `training.vehicle`) with the one connected: warn
    about each difference (another autopilot family is a mismatch: the model describes another closed loop); with
    `strict` any of them raises BundleError before anything is armed. Returns what was found, for the summary."""
    flying = read_vehicle_identity(profile)
    out: dict[str, Any] = {"flying": flying.to_dict()}
    if not learned:
        log.warning("%s records no vehicle it learned; cannot check it against %s", bundle_name, flying.summary)
        return out
    mismatches, differences = compare_identity(VehicleIdentity.from_dict(learned), flying)
    out.update(learned=learned, mismatches=mismatches, differences=differences)
    for text in mismatches + differences:
        log.warning("%s: %s", bundle_name, text)
    if strict and (mismatches or differences):
        raise BundleError(f"{bundle_name} learned {learned.get('summary', learned.get('family'))}, not this vehicle "
                          f"({flying.summary}): {'; '.join(mismatches + differences)}. Fly a bundle learned on this "
                          f"vehicle (`dreamlink learn`), or leave out --strict-vehicle")
    return out


def _take_off(
    profile: Any, spec: VehicleSpec, config: RunConfig, horizon: int, clock: Clock
) -> tuple[ShieldLimits, Callable[[float], np.ndarray], int, dict[str, object]]:
    """Control mode, arm, take off; then the figure-eight reference around where the vehicle is."""
    m = config.mission
    profile.enter_control_mode()
    profile.arm()
    _, x, _ = profile.state()
    home = [float(x[spec.state_index(f"pos_{a}_m")]) for a in ("n", "e")]
    ground_d = float(x[spec.state_index("pos_d_m")])
    centre = (home[0], home[1], ground_d - m.takeoff_altitude_m)
    profile.takeoff(m.takeoff_altitude_m)
    _settle(profile, spec, centre, clock)
    path = Figure8(centre, m.half_width_m, m.speed_mps, m.ramp_s)
    start_s = clock.now()
    fence = Geofence.for_velocity_setpoints(
        spec,
        (home[0] - m.fence_half_width_m, home[1] - m.fence_half_width_m, ground_d - m.fence_max_altitude_m),
        (home[0] + m.fence_half_width_m, home[1] + m.fence_half_width_m, ground_d - m.fence_min_altitude_m),
    )
    step = m.max_accel_mps2 * spec.control_period_s
    limits = ShieldLimits.from_spec(spec, max_step_change=(step,) * spec.action_dim, geofence=fence)
    period = spec.control_period_s
    ticks = config.ticks or round(m.laps * path.lap_s / period)
    reference = _offset_free(lambda t_s: reference_window(path, spec, t_s, horizon, period, start_s), profile, spec,
                             m.drift_window_s)

    info: dict[str, object] = {
        "path": "figure8", "centre_ned_m": centre, "half_width_m": m.half_width_m, "speed_mps": m.speed_mps,
        "ramp_s": m.ramp_s, "drift_window_s": m.drift_window_s,
        "start_s": start_s, "lap_s": path.lap_s, "fence_min_ned_m": fence.min_ned_m, "fence_max_ned_m": fence.max_ned_m,
        "baseline": m.baseline, "autopilot": config.autopilot,
    }
    return limits, reference, ticks, info


def _offset_free(window: Callable[[float], np.ndarray], profile: Any, spec: VehicleSpec,
                 drift_window_s: float) -> Callable[[float], np.ndarray]:
    """The reference `window(t_s) -> [H,S]`, shifted against the position drift the telemetry shows (offset-free
    tracking, `DriftEstimator`); `window` itself with `drift_window_s` 0."""
    if drift_window_s <= 0:
        return window
    drift = DriftEstimator(spec, drift_window_s)

    def reference(t_s: float) -> np.ndarray:
        t_vehicle, x, _ = profile.state()
        return shift_for_drift(window(t_s), drift.update(t_vehicle, x), spec, spec.control_period_s)

    return reference


def _either(stop: threading.Event | None, done: threading.Event) -> threading.Event:
    """One event the loop watches: set when the mission is done or when `stop` is (a watcher thread bridges it)."""
    if stop is not None:
        def bridge() -> None:
            while not done.is_set():
                if stop.wait(0.2):
                    done.set()

        threading.Thread(target=bridge, daemon=True, name="mission-stop").start()
    return done


def _take_off_on_mission(
    profile: Any, link: Link, spec: VehicleSpec, config: RunConfig, horizon: int, clock: Clock, planner: Any,
) -> tuple[ShieldLimits, Callable[[float], np.ndarray], int, dict[str, object], MissionRunner]:
    """A planned mission: read it (and refuse what cannot fly) before arming, take off, settle at its start, then
    the mission's reference, its keep-out zones in the planner's cost and the shield, the ground station heard."""
    m = config.mission
    target = (profile.config.target_system, profile.config.target_component)
    origin = read_origin(link, *target, timeout_s=5.0)
    frame = LocalFrame(origin.lat_deg, origin.lon_deg, origin.alt_m,
                       projection="px4" if config.autopilot == "px4" else "ardupilot")
    _, x, _ = profile.state()
    home = np.array([float(x[spec.state_index(n)]) for n in ("pos_n_m", "pos_e_m", "pos_d_m")])
    planned = load_mission(m.source, frame, home, m.takeoff_altitude_m, m.speed_mps, m.keep_out_margin_m,
                           m.keep_out_clearance_m, download=lambda kind: download_mission(link, *target, kind),
                           home_is_item0=config.autopilot == "ardupilot", config=path_config_for(spec))
    log.info("mission %s: %d items, %d keep-out zones, %.0f s planned (origin from %s)", planned.source,
             len(planned.items), len(planned.zones.keep_out), planned.path.duration_s, origin.source)
    profile.enter_control_mode()
    profile.arm()
    profile.takeoff(planned.path.takeoff_altitude_m)
    start = tuple(map(float, planned.path.start_ned))
    _settle(profile, spec, start, clock)  # type: ignore[arg-type]
    if planned.zones.keep_out and hasattr(planner, "extra_cost"):
        planner.extra_cost = ZoneCost(spec, planned.zones)
    step = m.max_accel_mps2 * spec.control_period_s
    limits = ShieldLimits.from_spec(spec, max_step_change=(step,) * spec.action_dim,
                                    zones=planned.zones if planned.zones.keep_out else None)
    reporter = MissionReporter(link, len(planned.items))
    runner = MissionRunner(planned, spec, horizon, spec.control_period_s, clock.now(), profile.state, reporter)
    MissionCommandListener(link, runner.decide, config.allowed_sources)
    reference = _offset_free(runner.reference, profile, spec, m.drift_window_s)

    period = spec.control_period_s
    ticks = int((planned.path.duration_s + 600.0) / period)  # room for pauses and go-tos; the mission ends it
    info: dict[str, object] = {
        "path": "mission", "source": planned.source, "start_s": runner.start_s, "speed_mps": planned.speed_mps,
        "origin": origin._asdict(), "home_ned_m": home.tolist(), "path_ned_m": planned.path.path_ned.tolist(),
        "waypoints_ned_m": planned.path.waypoints_ned.tolist(), "keep_out_ne_m": [z.tolist() for z in
                                                                                planned.keep_out_ne],
        "duration_planned_s": planned.path.duration_s, "drift_window_s": m.drift_window_s,
        "autopilot": config.autopilot, "baseline": m.baseline,
    }
    return limits, reference, ticks, info, runner


def _settle(profile: Any, spec: VehicleSpec, centre: tuple[float, float, float], clock: Clock,
            timeout_s: float = 10.0, speed_mps: float = 0.3, error_m: float = 0.3) -> None:
    """Hold the start point until the take-off's climb has died out (an autopilot reports the
    take-off done at the altitude, still climbing at up to its WPNAV speed)."""
    period = spec.control_period_s
    vel = [spec.state_index(f"vel_{a}_mps") for a in ("n", "e", "d")]
    pos = [spec.state_index(f"pos_{a}_m") for a in ("n", "e", "d")]
    deadline = t_end = clock.now()
    t_end += timeout_s
    while clock.now() < t_end:
        _, x, _ = profile.state()
        if np.linalg.norm(x[vel]) < speed_mps and np.linalg.norm(x[pos] - np.asarray(centre)) < error_m:
            return
        profile.send_position(centre, (0.0, 0.0, 0.0))
        deadline += period
        clock.sleep_until(deadline)
    log.warning("vehicle did not settle at %s within %.0f s; starting the mission anyway", centre, timeout_s)


def _fly_baseline(
    profile: Any, spec: VehicleSpec, config: RunConfig, clock: Clock, recorder: FlightRecorder, ticks: int,
    info: dict[str, Any], stop: threading.Event | None,
) -> LoopStats:
    """The same reference streamed as position + velocity setpoints to the autopilot's own controller."""
    path = Figure8(tuple(info["centre_ned_m"]), info["half_width_m"], info["speed_mps"], info["ramp_s"])
    period, start_s = spec.control_period_s, float(info["start_s"])
    deadline = clock.now()
    for _ in range(ticks):
        if stop is not None and stop.is_set():
            break
        now = clock.now()
        _, state, _ = profile.state()
        pos, vel = path.position_velocity(np.array([now - start_s + period]))
        profile.send_position(tuple(map(float, pos[0])), tuple(map(float, vel[0])))
        recorder.tick(now, state, vel[0].astype(np.float32), None, float("nan"), max(0.0, now - deadline), 0)
        deadline += period
        clock.sleep_until(deadline)
    nan = float("nan")
    count_keys = ("overruns", "missed_deadlines", "stale_ticks", "failsafes", "estops", "shield_clipped",
                  "shield_nonfinite", "shield_fenced")
    timing_keys = ("plan_latency_p50_ms", "plan_latency_p99_ms", "plan_latency_max_ms", "lateness_p50_ms",
                   "lateness_p99_ms", "lateness_max_ms")
    counts: dict[str, Any] = dict.fromkeys(count_keys, 0)
    timing: dict[str, Any] = dict.fromkeys(timing_keys, nan)
    return LoopStats(ticks=ticks, duration_s=ticks * period, achieved_rate_hz=1 / period, fallbacks={}, **counts,
                     **timing)


def _link_dict(stats: object) -> dict[str, object]:
    return {k: v for k, v in getattr(stats, "__dict__", {}).items() if not k.startswith("_")}


def with_planner(config: RunConfig, **overrides: float) -> RunConfig:
    """A copy of `config` with some planner settings changed (samples, horizon, ...)."""
    base = config.planner or MppiConfig()
    return replace(config, planner=replace(base, **overrides))  # type: ignore[arg-type]
