"""Accuracy of each precision where it matters for planning, on held-out data.

- one-step error: normalised RMSE of the ensemble mean (error / each component's spread, RMS over
  components), the figure training reports;
- the k-step curve, k = 1..H_max (`kstep_curve`): the compounding error an imagined future carries;
- the planner's chosen action against fp32's from the same states with the same noise: what reaches
  the motors. Normalised by each action's half range, RMS over actions and states.

Closed-loop quality is measured in SITL by `dreamlink.calibration.closed_loop`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dreamlink.calibration.kstep import KStepCurve, Predict, kstep_curve
from dreamlink.export.planner_graph import PlannerGraphConfig, write_planner
from dreamlink.export.planner_graph_pack import optimize_offline
from dreamlink.learning.transitions import TransitionSet
from dreamlink.runtime.fused import FusedPlanner
from dreamlink.runtime.mppi import MppiConfig
from dreamlink.runtime.session import SessionConfig
from dreamlink.runtime.tasks import default_task
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)


def predictor(world_model: str | os.PathLike[str], threads: int = 1) -> Predict:
    """state [B,S], action [B,A] -> next_state [E,B,S] through an ONNX Runtime session on the CPU."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(world_model), sess_options=opts, providers=["CPUExecutionProvider"])

    def predict(state: np.ndarray, action: np.ndarray) -> np.ndarray:
        (out,) = sess.run(["next_state"], {"state": state.astype(np.float32), "action": action.astype(np.float32)})
        return out if out.ndim == 3 else out[None]

    return predict


def one_step_error(predict: Predict, data: TransitionSet) -> float:
    """Normalised one-step RMSE of the ensemble mean on `data` (same normalisation as `kstep_curve`)."""
    scale = np.maximum(data.state.std(axis=0), 1e-6)
    pred = np.concatenate([predict(data.state[i:i + 4096], data.action[i:i + 4096]).mean(axis=0)
                           for i in range(0, len(data), 4096)])
    rmse = np.sqrt(((pred - data.next_state) ** 2).mean(axis=0))
    return float(np.sqrt(((rmse / scale) ** 2).mean()))


@dataclass(frozen=True)
class PrecisionAccuracy:
    name: str
    one_step: float  # normalised RMSE
    curve: KStepCurve
    action_error: float | None = None  # RMS of (action - fp32 action) / half range; None: not measured
    action_error_max: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"one_step": round(self.one_step, 6), "kstep": self.curve.to_dict(),
                "action_error": None if self.action_error is None else round(self.action_error, 6),
                "action_error_max": None if self.action_error_max is None else round(self.action_error_max, 6)}


def planner_actions(world_model: str | os.PathLike[str], spec: VehicleSpec, graph: PlannerGraphConfig,
                    mppi: MppiConfig, states: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N,A] first action the fused planner chooses from each of `states` [N,S], from a hold warm start,
    with noise from `seed`: the same numbers for any world model given the same seed."""
    with tempfile.TemporaryDirectory(prefix="dreamlink-acc-") as tmp:
        plain = write_planner(world_model, spec, graph, Path(tmp) / "plain.onnx")
        path = optimize_offline(plain, Path(tmp) / "planner.onnx")
        planner = FusedPlanner(path, spec, default_task(spec), mppi, np.random.default_rng(seed),
                               SessionConfig(allow_spinning=False, graph_optimization="disable"))
        warm = planner.initial_plan()
        return np.stack([planner.plan(s.astype(np.float32), warm, 0.0).actions[0] for s in states])


def measure_accuracy(
    world_models: Mapping[str, str | os.PathLike[str]],
    holdout: TransitionSet,
    max_k: int,
    graph: PlannerGraphConfig | None = None,
    mppi: MppiConfig | None = None,
    action_states: int = 24,
    reference: str = "fp32",
    progress: Callable[[str], None] | None = None,
) -> dict[str, PrecisionAccuracy]:
    """Accuracy of every world model in `world_models` (by precision name) on `holdout`.

    With `graph`/`mppi`, also the planner's first action against `reference`'s on `action_states`
    held-out states with the same noise."""
    spec = holdout.spec
    episodes = holdout.episodes()
    states = holdout.state[np.random.default_rng(0).choice(len(holdout), min(action_states, len(holdout)),
                                                            replace=False)]
    half = (spec.action_high - spec.action_low) / 2.0
    actions: dict[str, np.ndarray] = {}
    out: dict[str, PrecisionAccuracy] = {}
    for name, path in world_models.items():
        predict = predictor(path)
        curve = kstep_curve(predict, episodes, spec, max_k)
        one = one_step_error(predict, holdout)
        if graph is not None and mppi is not None:
            actions[name] = planner_actions(path, spec, graph, mppi, states)
        out[name] = PrecisionAccuracy(name, one, curve)
        log.info("%s: one-step %.4f, k=%d %.4f", name, one, int(curve.k[-1]), float(curve.normalised_rmse[-1]))
        if progress is not None:
            progress(name)
    if actions and reference in actions:
        for name, acc in out.items():
            d = (actions[name] - actions[reference]) / half
            out[name] = PrecisionAccuracy(name, acc.one_step, acc.curve, float(np.sqrt((d**2).mean())),
                                          float(np.abs(d).max()))
    return out
