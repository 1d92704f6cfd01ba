"""Distil the planner into a policy: fly the planner in lockstep SITL, take the actions it chose as labels,
fit `learning.policy.DistilledPolicy`, and add it to the bundle (prior for sampling, first fallback).

Behaviour cloning on the planner's own flights: the labels are on the states the planner visits, which
are the states the policy will be asked about when it stands in for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.bundle import Bundle, load_bundle


def fly_planner_lockstep(bundle: Path, flavour: str, seed: int, out: Path, laps: float = 1.0,
                         extra: Sequence[str] = ()) -> Path:
    """One lockstep figure-eight flight of `dreamlink run` (no policy) against a randomised SITL; its folder."""
    from dreamlink.campaign.quad_run import fly_quad_process

    fly_quad_process(bundle, flavour, seed, out, laps=laps, run_seed=seed, run_args=("--no-policy", *extra))
    return out


def labels_from_flight(flight: Path, lookahead_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state, target, action) of the planner's ticks of one flight folder (`ticks.npz` + `summary.json`)."""
    from dreamlink.learning.policy import planner_labels
    from dreamlink.reports import load_ticks
    from dreamlink.runtime.mission import Figure8, reference_window

    ticks = load_ticks(flight / "ticks.npz")
    summary = json.loads((flight / "summary.json").read_text())
    m, spec = summary["mission"], ticks["spec"]
    path = Figure8(tuple(m["centre_ned_m"]), m["half_width_m"], m["speed_mps"], m["ramp_s"])
    horizon = lookahead_steps + 1

    def reference(t_s: float) -> np.ndarray:
        return reference_window(path, spec, t_s, horizon, spec.control_period_s, m["start_s"])

    return planner_labels(ticks, reference, lookahead_steps, np.zeros(spec.state_dim, np.float32))


def distill_into_bundle(bundle_dir: Path, flights: Sequence[Path], config: Any,
                        progress: Callable[[int, int, float], None] | None = None) -> tuple[Bundle, Any]:
    """Fit a policy (`learning.policy.PolicyConfig` `config`) to the planner's ticks in `flights` and add it
    to the bundle; returns the reloaded bundle and the training result."""
    from dreamlink.export.pack import add_policy
    from dreamlink.learning.policy import distill_policy

    parts = [labels_from_flight(f, config.lookahead_steps) for f in flights]
    state, target, action = (np.concatenate([p[i] for p in parts]) for i in range(3))
    bundle = load_bundle(bundle_dir)
    result = distill_policy(bundle.spec, state, target, action, config, progress)
    return add_policy(bundle, result.model, result.summary()), result
