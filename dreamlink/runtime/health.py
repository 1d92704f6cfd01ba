"""Health check of a bundle on this device: it loads, plans, stays in limits, in budget.

Used by `dreamlink install-bundle` before a new model slot is kept, and by `doctor`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dreamlink.bundle import Bundle
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner, shift_plan
from dreamlink.runtime.planner_defaults import bundle_planner
from dreamlink.runtime.session import ModelSession, SessionConfig
from dreamlink.runtime.tasks import default_task


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    reasons: tuple[str, ...]
    ticks: int
    p50_ms: float
    p99_ms: float
    max_abs_action: float


def planner_config_for(bundle: Bundle) -> MppiConfig:
    """The planner settings the bundle was calibrated for (manifest `calibration.planner`) over those its vehicle
    file fixes or implies (`planner_defaults`)."""
    return bundle_planner(bundle.spec, default_task(bundle.spec), bundle.manifest.calibration.get("planner", {}))


def run_health_check(
    bundle: Bundle,
    n_ticks: int = 50,
    states: np.ndarray | None = None,
    budget_s: float | None = None,
    seed: int = 0,
) -> HealthResult:
    """Plan `n_ticks` times on recorded `states` [N,S] (or states drawn near the middle of the
    spec's envelope) and check: no exception, finite actions inside the spec limits, and the
    p99 planning latency within `budget_s` (default: the control period)."""
    spec = bundle.spec
    budget = spec.control_period_s if budget_s is None else budget_s
    rng = np.random.default_rng(seed)
    if states is None:
        mid = (spec.state_low + spec.state_high) / 2
        half = (spec.state_high - spec.state_low) / 2
        states = (mid + 0.05 * half * rng.uniform(-1, 1, size=(n_ticks, spec.state_dim))).astype(np.float32)
    reasons: list[str] = []
    latencies: list[float] = []
    max_abs = 0.0
    try:
        planner = MppiPlanner(
            ModelSession(bundle.path_of("world_model"), spec, SessionConfig()),
            spec,
            default_task(spec),
            planner_config_for(bundle),
            rng,
        )
        warm = planner.initial_plan()
        for i in range(n_ticks):
            state = np.asarray(states[i % len(states)], dtype=np.float32)
            t0 = time.perf_counter()
            plan = planner.plan(state, warm, i * spec.control_period_s)
            latencies.append(time.perf_counter() - t0)
            a = plan.actions[0]
            if not np.all(np.isfinite(a)):
                reasons.append(f"tick {i}: non-finite action {a.tolist()}")
                break
            if np.any(a < spec.action_low - 1e-6) or np.any(a > spec.action_high + 1e-6):
                reasons.append(f"tick {i}: action {a.tolist()} outside limits")
                break
            max_abs = max(max_abs, float(np.abs(a).max()))
            warm = shift_plan(plan.actions)
    except Exception as e:
        reasons.append(f"planning failed: {type(e).__name__}: {e}")
    lat = np.array(latencies) * 1e3
    p50 = float(np.percentile(lat, 50)) if len(lat) else float("nan")
    p99 = float(np.percentile(lat, 99)) if len(lat) else float("nan")
    if len(lat) and p99 > budget * 1e3:
        reasons.append(f"p99 planning latency {p99:.2f} ms exceeds the budget {budget * 1e3:.2f} ms")
    return HealthResult(not reasons, tuple(reasons), len(latencies), p50, p99, max_abs)
