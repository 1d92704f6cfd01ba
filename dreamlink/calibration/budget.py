"""The device budget: which samples x horizon, at which precision, this machine plans inside its share
of the control period, measured, not estimated.

For every (K, H) of the sweep, the planner graph is composed around each precision's world model and
the precisions are timed round-robin, one planning step each (as `bench/planner_bench.py` does), so a
burst of load from anything else on the machine falls on all of them alike. Each step is timed on the
wall clock (what the control loop sees) and on the thread's CPU clock (one thread: the planner's own
work, without the time another process held the core). The budget is read from the wall-clock p99:
on a busy machine it is pessimistic, which is the right side to err on; the report shows both.

The record written to the manifest (`calibration.budget`) carries the keys
`dreamlink.runtime.budget.recorded_budget` reads: device, precision, samples, horizon, p99_ms, share,
rate_hz (the largest rate at which that p99 fits the share), plus the sweep table.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dreamlink.export.planner_graph import PlannerGraphConfig, write_planner
from dreamlink.export.planner_graph_pack import optimize_offline
from dreamlink.runtime.fused import FusedPlanner
from dreamlink.runtime.mppi import MppiConfig, shift_plan
from dreamlink.runtime.session import SessionConfig
from dreamlink.runtime.tasks import default_task
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

GAP_S = 0.002  # idle time before each timed step, as a control loop sleeps between ticks


@dataclass(frozen=True)
class SweepConfig:
    samples: tuple[int, ...] = (64, 128, 256, 512, 1024)
    horizons: tuple[int, ...] = (10, 15, 20, 30)
    steps: int = 40  # timed steps per (K, H, precision)
    warmup: int = 3
    threads: int = 1
    share: float = 0.5  # of the control period, for planning

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(sorted(set(self.samples))))
        object.__setattr__(self, "horizons", tuple(sorted(set(self.horizons))))
        if not self.samples or not self.horizons or min(self.samples) < 2 or min(self.horizons) < 1:
            raise ValueError(f"SweepConfig: need samples >= 2 and horizons >= 1, got {self.samples}, {self.horizons}")
        if self.steps < 2 or self.warmup < 0 or self.threads < 1:
            raise ValueError(f"SweepConfig: steps >= 2, warmup >= 0, threads >= 1; got {self}")
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"SweepConfig.share: expected a fraction of the period in (0, 1], got {self.share}")


@dataclass(frozen=True)
class SweepPoint:
    precision: str
    samples: int
    horizon: int
    median_ms: float
    p99_ms: float
    cpu_median_ms: float
    cpu_p99_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def planner_graph(world_model: str | os.PathLike[str], spec: VehicleSpec, samples: int, horizon: int,
                  out_dir: str | os.PathLike[str], tag: str) -> Path:
    """Compose and ORT-optimise ("extended", portable) the MPPI planner graph for one setting."""
    cfg = PlannerGraphConfig(samples, horizon)
    plain = write_planner(world_model, spec, cfg, Path(out_dir) / f"{tag}_K{samples}_H{horizon}_plain.onnx")
    return optimize_offline(plain, Path(out_dir) / f"{tag}_K{samples}_H{horizon}.onnx")


def time_interleaved(planners: Mapping[str, FusedPlanner], states: np.ndarray, warmup: int
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per planner: (wall ms [N], thread-CPU ms [N]) of one planning step from each of `states` [warmup+N, S],
    round-robin one step each, warm-started from its own shifted previous plan."""
    warm = {name: p.initial_plan() for name, p in planners.items()}
    wall: dict[str, list[float]] = {name: [] for name in planners}
    cpu: dict[str, list[float]] = {name: [] for name in planners}
    for i, state in enumerate(states):
        for name, planner in planners.items():
            time.sleep(GAP_S)
            c0, t0 = time.thread_time(), time.perf_counter()
            plan = planner.plan(state, warm[name], 0.0)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            warm[name] = shift_plan(plan.actions)
            if i >= warmup:
                wall[name].append(dt * 1e3)
                cpu[name].append(dc * 1e3)
    return {name: (np.array(wall[name]), np.array(cpu[name])) for name in planners}


def sweep(world_models: Mapping[str, str | os.PathLike[str]], spec: VehicleSpec, config: SweepConfig,
          states: np.ndarray, progress: Callable[[int, int], None] | None = None) -> list[SweepPoint]:
    """Time every precision at every (K, H) of `config`; `states` [N,S] are where the planner starts from
    (held-out states: the planner's cost depends little on them, but they keep it honest)."""
    rng = np.random.default_rng(0)
    n = config.warmup + config.steps
    run_states = states[rng.choice(len(states), n, replace=len(states) < n)].astype(np.float32)
    points: list[SweepPoint] = []
    settings = [(k, h) for k in config.samples for h in config.horizons]
    session = SessionConfig(intra_op_threads=config.threads, allow_spinning=False, graph_optimization="disable")
    with tempfile.TemporaryDirectory(prefix="dreamlink-sweep-") as tmp:
        for i, (k, h) in enumerate(settings):
            planners = {
                name: FusedPlanner(planner_graph(path, spec, k, h, tmp, name), spec, default_task(spec),
                                   MppiConfig(samples=k, horizon=h), np.random.default_rng(0), session)
                for name, path in world_models.items()
            }
            timed = time_interleaved(planners, run_states, config.warmup)
            for name, (wall, cpu) in timed.items():
                points.append(SweepPoint(name, k, h, float(np.median(wall)), float(np.percentile(wall, 99)),
                                         float(np.median(cpu)), float(np.percentile(cpu, 99))))
            del planners
            for f in Path(tmp).glob("*.onnx"):
                f.unlink()
            log.info("sweep K=%d H=%d: %s", k, h, ", ".join(f"{p.precision} p99 {p.p99_ms:.1f} ms"
                                                            for p in points[-len(world_models):]))
            if progress is not None:
                progress(i + 1, len(settings))
    return points


def fit_budget(points: Sequence[SweepPoint], precision: str, period_s: float, share: float,
               max_horizon: int | None = None) -> SweepPoint | None:
    """The largest K x H (ties: the longer horizon) of `precision` whose p99 fits `share` of the period;
    horizons past `max_horizon` (the calibrated one) are not candidates. None: nothing fits."""
    limit_ms = share * period_s * 1e3
    fits = [p for p in points if p.precision == precision and p.p99_ms <= limit_ms
            and (max_horizon is None or p.horizon <= max_horizon)]
    if not fits:
        return None
    return max(fits, key=lambda p: (p.samples * p.horizon, p.horizon))


def device_name() -> str:
    """This CPU's model, as `dreamlink doctor` reads it (so the two compare alike)."""
    from dreamlink.deploy.device import read_cpu

    return read_cpu().model


def budget_record(points: Sequence[SweepPoint], precision: str, spec: VehicleSpec, config: SweepConfig,
                  max_horizon: int | None = None) -> dict[str, Any]:
    """The manifest's `calibration.budget`: the fitted setting (or the smallest measured one, marked as
    not fitting, so doctor and the runtime refuse it) and the sweep it was read from."""
    chosen = fit_budget(points, precision, spec.control_period_s, config.share, max_horizon)
    fits = chosen is not None
    if chosen is None:
        own = [p for p in points if p.precision == precision]
        chosen = min(own, key=lambda p: (p.p99_ms, p.samples * p.horizon))
    return {
        "device": device_name(), "precision": precision, "samples": chosen.samples, "horizon": chosen.horizon,
        "p99_ms": round(chosen.p99_ms, 4), "median_ms": round(chosen.median_ms, 4),
        "cpu_median_ms": round(chosen.cpu_median_ms, 4), "share": config.share,
        "period_ms": spec.control_period_s * 1e3, "rate_hz": round(config.share * 1e3 / chosen.p99_ms, 3),
        "fits": fits, "threads": config.threads, "onnxruntime": ort.__version__,
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sweep": [p.to_dict() for p in points],
    }
