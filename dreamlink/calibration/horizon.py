"""How far to trust the imagined future, and at which precision.

- Horizon: the longest k whose held-out k-step error stays under a tolerance relative to the state's
  scale (`recommend_horizon`, normalised RMSE: error / each component's spread in the data); or, where the task
  says which error decides (`recommend_task_horizon`), the longest k at which the error the task's cost sees
  stays within the task's own tolerance in its own units: a multirotor tracking a path is judged on where it
  will be, so its horizon is how far ahead the imagined position stays within the tracking goal (metres),
  whatever happens to roll rates in normalised units. That is the horizon the planner flies.
- Disagreement threshold: the ensemble's spread along open-loop rollouts of held-out episodes, in the
  unit the planner graph reports (`disagreement`: max over steps and components of the members' std
  over the component's half range). In-distribution flights stay under its `quantile`; `margin` above
  that, the model is guessing, and the loop's fallback (`LoopConfig.disagreement_limit`, read from
  the manifest's `calibration.disagreement_threshold`) takes over.
- Precision verdict: a quantized model is accepted only if it keeps fp32's horizon, its k-step error
  up to that horizon stays within `max_kstep_excess` of fp32's, and the planner's first action stays
  within `max_action_error` of fp32's (same states, same noise). Otherwise it is refused, with the
  measured reason, and fp32 is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dreamlink.calibration.accuracy import PrecisionAccuracy
from dreamlink.calibration.kstep import KStepCurve, Predict, recommend_horizon
from dreamlink.spec import VehicleSpec


def recommend_task_horizon(curve: KStepCurve, tolerances: Mapping[str, float], h_min: int, h_max: int) -> int:
    """The longest k in [h_min, h_max] whose decision-relevant error stays within tolerance at every step up to it.

    `tolerances`: state name -> tolerance in its unit; the error at k is the root sum of squares of each named
    component's RMSE over its tolerance (so three position components with 0.3 m each: the 3-D position error
    within 0.3 m). Fewer than h_min steps within tolerance still give h_min (below it the planner cannot see the
    closed loop answer at all); the caller records the measured error beside the choice."""
    if not (1 <= h_min <= h_max):
        raise ValueError(f"recommend_task_horizon: expected 1 <= h_min <= h_max, got {h_min}, {h_max}")
    unknown = [n for n in tolerances if n not in curve.state_names]
    if unknown or not tolerances or any(not t > 0 for t in tolerances.values()):
        raise ValueError(f"recommend_task_horizon: tolerances need names from {curve.state_names} and values > 0, "
                         f"got {dict(tolerances)}")
    idx = [curve.state_names.index(n) for n in tolerances]
    tol = np.array(list(tolerances.values()))
    err = np.sqrt(np.sum((curve.rmse[:, idx] / tol) ** 2, axis=1))  # [K], 1.0 = at the tolerance
    over = np.flatnonzero(err > 1.0)
    longest = int(curve.k[-1]) if len(over) == 0 else int(curve.k[over[0]]) - 1
    return int(np.clip(longest, h_min, h_max))


def disagreement_threshold(predict: Predict, episodes: Sequence[tuple[np.ndarray, np.ndarray]], spec: VehicleSpec,
                           horizon: int, quantile: float = 0.99, margin: float = 1.5) -> float:
    """`margin` x the `quantile` of the per-start max ensemble spread over `horizon` open-loop steps.

    Returns +inf for a single-member model (no spread to judge by)."""
    inv_half = 2.0 / (spec.state_high - spec.state_low)
    starts = [(s[t], a[t:t + horizon]) for s, a in episodes for t in range(0, len(a) - horizon + 1, 2)]
    if not starts:
        raise ValueError(f"disagreement_threshold: no held-out episode has {horizon} steps")
    x = np.stack([s for s, _ in starts]).astype(np.float32)
    acts = np.stack([a for _, a in starts]).astype(np.float32)  # [N,H,A]
    worst = np.zeros(len(starts))
    for h in range(horizon):
        pred = predict(x, acts[:, h])  # [E,N,S]
        if pred.shape[0] == 1:
            return float("inf")
        worst = np.maximum(worst, (pred.std(axis=0) * inv_half).max(axis=1))
        x = pred.mean(axis=0)
    return float(margin * np.quantile(worst, quantile))


@dataclass(frozen=True)
class AcceptTolerance:
    kstep_tolerance: float  # normalised RMSE a k-step prediction may reach (sets the horizon)
    max_kstep_excess: float = 0.10  # a quantized curve may exceed fp32's by this fraction, k = 1..H
    max_action_error: float = 0.05  # RMS first-action difference to fp32, in action half ranges


@dataclass(frozen=True)
class Verdict:
    name: str
    accepted: bool
    horizon: int  # this precision's own recommended horizon
    kstep_excess: float  # max over k <= H of err / err_fp32 - 1
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"accepted": self.accepted, "recommended_horizon": self.horizon,
                "kstep_excess": round(self.kstep_excess, 6), "reason": self.reason}


def judge_precisions(acc: Mapping[str, PrecisionAccuracy], tol: AcceptTolerance, reference: str = "fp32"
                     ) -> tuple[int, dict[str, Verdict]]:
    """(fp32's recommended horizon, a verdict per precision). `reference` is always accepted."""
    ref = acc[reference]
    h_ref = recommend_horizon(ref.curve, tol.kstep_tolerance)
    verdicts: dict[str, Verdict] = {}
    for name, a in acc.items():
        h = recommend_horizon(a.curve, tol.kstep_tolerance)
        n = min(h_ref, len(a.curve.normalised_rmse), len(ref.curve.normalised_rmse))
        base = np.maximum(ref.curve.normalised_rmse[:n], 1e-9)
        excess = float(np.max(a.curve.normalised_rmse[:n] / base - 1.0))
        if name == reference:
            verdicts[name] = Verdict(name, True, h, 0.0, "reference")
            continue
        reasons = []
        if h < h_ref:
            reasons.append(f"recommended horizon {h} < fp32's {h_ref} at tolerance {tol.kstep_tolerance:g}")
        if excess > tol.max_kstep_excess:
            reasons.append(f"k-step error up to k={n} exceeds fp32's by {100 * excess:.1f}% "
                           f"(allowed {100 * tol.max_kstep_excess:.0f}%)")
        if a.action_error is not None and a.action_error > tol.max_action_error:
            reasons.append(f"planner action differs from fp32's by {a.action_error:.3f} half ranges RMS "
                           f"(allowed {tol.max_action_error:g})")
        verdicts[name] = Verdict(name, not reasons, h, excess,
                                 "; ".join(reasons) if reasons else
                                 f"within tolerance (k-step excess {100 * excess:.1f}%, action error "
                                 f"{'n/a' if a.action_error is None else f'{a.action_error:.3f}'})")
    return h_ref, verdicts


def choose_precision(verdicts: Mapping[str, Verdict], preference: Sequence[str]) -> str:
    """The first accepted precision in `preference` (fastest first), else "fp32"."""
    for name in preference:
        v = verdicts.get(name)
        if v is not None and v.accepted:
            return name
    return "fp32"
