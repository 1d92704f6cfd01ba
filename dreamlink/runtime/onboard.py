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

import numpy as np

from dreamlink.bundle import BundleError, load_bundle
from dreamlink.firmware_bridge.link import Link, LinkConfig
from dreamlink.firmware_bridge.motor_board import MotorBoardProfile
from dreamlink.runtime.clock import Clock, LockstepClock, MonotonicClock
from dreamlink.runtime.health import planner_config_for
from dreamlink.runtime.loop import ControlLoop, LoopConfig, LoopStats
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner
from dreamlink.runtime.recorder import FlightRecorder
from dreamlink.runtime.session import ModelSession, SessionConfig
from dreamlink.runtime.shield import ShieldLimits
from dreamlink.runtime.tasks import default_task

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"


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
    connect_timeout_s: float = 10.0
    stale_limit_s: float = 0.1


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
    planner_cfg = config.planner or planner_config_for(bundle)
    session = ModelSession(bundle.path_of("world_model"), spec, config.session)
    planner = MppiPlanner(session, spec, default_task(spec), planner_cfg, np.random.default_rng(config.seed))
    planner.plan(np.zeros(spec.state_dim, np.float32), planner.initial_plan(), 0.0)  # warm the session up
    max_ticks = config.ticks if config.ticks > 0 else int(600 * rate_hz)
    recorder = FlightRecorder(config.out_dir, spec, planner_cfg.horizon, max_ticks)
    link = Link(LinkConfig(connect=config.connect), tap=recorder.tap).open()
    profile = MotorBoardProfile(link, spec)
    clock: Clock = LockstepClock(profile) if config.lockstep else MonotonicClock()
    loop = ControlLoop(
        profile,
        planner,
        ShieldLimits.from_spec(spec),
        clock,
        LoopConfig(rate_hz=rate_hz, stale_limit_s=config.stale_limit_s),
        recorder,
    )
    first_command_s = float("nan")
    try:
        profile.connect(timeout_s=config.connect_timeout_s)
        profile.arm()
        profile.enter_control_mode()
        recorder.event("armed", clock.now(), bundle=str(bundle.root), planner=planner_cfg.__dict__)
        first_command_s = time.monotonic() - t_start
        if on_ready is not None:
            on_ready()
        stats = loop.run(config.ticks, stop, on_tick)
        recorder.event("stats", clock.now(), **stats.to_dict())
    finally:
        try:
            profile.release()
        finally:
            link_stats = link.stats
            link.close()
            recorder.close()
    log.info("flight done: %d ticks, %.1f Hz", stats.ticks, stats.achieved_rate_hz)
    result = FlightResult(stats, config.out_dir, first_command_s, _link_dict(link_stats))
    summary = {"stats": stats.to_dict(), "start_to_first_command_s": first_command_s, "link": result.link}
    (config.out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return result


def _link_dict(stats: object) -> dict[str, object]:
    return {k: v for k, v in getattr(stats, "__dict__", {}).items() if not k.startswith("_")}


def with_planner(config: RunConfig, **overrides: float) -> RunConfig:
    """A copy of `config` with some planner settings changed (samples, horizon, ...)."""
    base = config.planner or MppiConfig()
    return replace(config, planner=replace(base, **overrides))  # type: ignore[arg-type]
