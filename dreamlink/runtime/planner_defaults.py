"""Planner settings for a model nobody tuned: derived from the vehicle file, so a robot someone brings plans
sensibly before any tuning.

Why these: MPPI's two scale-dependent knobs are the sampling noise (in action units) and the temperature (in
cost units). Noise as a share of each action's range makes exploration reach the limits whatever the units
(the textbook choice, the action's half range, is the default); a temperature relative to the task's own cost
scale makes the weighting mean the same for a task whose costs are in the thousands and one whose costs are in
the hundredths. The vehicle file's [planner] table overrides any of them (the shipped cart-pole's does: its
settings were tuned by a sweep).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import numpy as np

from dreamlink.runtime.mppi import MppiConfig
from dreamlink.spec import QuadraticTask, VehicleSpec

DERIVED_SAMPLES = 256
DERIVED_HORIZON = 15
DERIVED_NOISE_SHARE = 1.0  # of each action's half range
# Temperature = this many "tenth-of-the-envelope" trajectories: two samples whose costs differ by the cost of
# being a tenth of the state envelope off target over the whole horizon get weights e^-1 apart.
DERIVED_TEMPERATURE_SHARE = 0.2
OFF_TARGET_SHARE = 0.1


def cost_scale(task: QuadraticTask, spec: VehicleSpec, horizon: int) -> float:
    """The task's cost of a trajectory that stays `OFF_TARGET_SHARE` of every state component's half range off
    target for `horizon` steps (the last step weighted by the terminal weight, as `trajectory_cost` does)."""
    half = (spec.state_high - spec.state_low).astype(np.float64) / 2.0
    per_step = float(np.dot(np.asarray(task.state_weight, np.float64), (OFF_TARGET_SHARE * half) ** 2))
    return per_step * (horizon - 1 + task.terminal_weight)


def derived_planner(spec: VehicleSpec, task: QuadraticTask, horizon: int = 0) -> MppiConfig:
    """MppiConfig from the vehicle file: its [planner] settings, the rest derived (see the module's docstring).
    `horizon` (0: the file's, else 15): what the k-step error recommended, or what a person chose."""
    fixed = spec.planner_settings()
    h = int(horizon or fixed.get("horizon", DERIVED_HORIZON))
    temperature = DERIVED_TEMPERATURE_SHARE * cost_scale(task, spec, h)
    config = MppiConfig(samples=DERIVED_SAMPLES, horizon=h, noise_sigma=DERIVED_NOISE_SHARE,
                        temperature=temperature if temperature > 0 else 1.0)
    return replace(config, **{k: v for k, v in fixed.items() if k != "horizon"})  # type: ignore[arg-type]


def bundle_planner(spec: VehicleSpec, task: QuadraticTask, calibrated: Mapping[str, Any]) -> MppiConfig:
    """What a bundle flies with: its manifest's `calibration.planner` settings over the vehicle file's."""
    base = derived_planner(spec, task, int(calibrated.get("horizon", 0) or 0))
    names = {f.name for f in fields(MppiConfig)}
    return replace(base, **{k: v for k, v in calibrated.items() if k in names})
