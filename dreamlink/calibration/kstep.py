"""The compounding-error curve: open-loop k-step prediction error of a world model on held-out data.

Each held-out episode gives start points t0; from each, the model is rolled forward k steps
on the recorded actions (ensemble mean), and compared with the recorded state at t0 + k.
Errors are reported per state component in its unit, and as one number normalised by each
component's spread in the data, which is what the recommended horizon is read from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dreamlink.spec import VehicleSpec

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]  # state [B,S], action [B,A] -> [E,B,S]


@dataclass(frozen=True)
class KStepCurve:
    k: np.ndarray  # [K] 1..max_k
    rmse: np.ndarray  # [K,S] in each component's unit
    normalised_rmse: np.ndarray  # [K] RMS over components of error / component scale
    scale: np.ndarray  # [S] the component scales used
    starts: np.ndarray  # [K] number of start points behind each k
    state_names: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "k": self.k.tolist(),
            "normalised_rmse": [round(float(v), 6) for v in self.normalised_rmse],
            "rmse": {n: [round(float(v), 6) for v in self.rmse[:, i]] for i, n in enumerate(self.state_names)},
            "starts": self.starts.tolist(),
        }


def kstep_curve(
    predict: Predict,
    episodes: Sequence[tuple[np.ndarray, np.ndarray]],
    spec: VehicleSpec,
    max_k: int,
    stride: int = 1,
) -> KStepCurve:
    """episodes: (states [T+1,S], actions [T,A]) each. Rolls all start points of all episodes at once."""
    S = spec.state_dim
    all_states = np.concatenate([s for s, _ in episodes], axis=0)
    scale = np.maximum(all_states.std(axis=0), 1e-6).astype(np.float32)
    sq = np.zeros((max_k, S))
    counts = np.zeros(max_k, dtype=np.int64)
    # Group start points by episode so one batched predict per k serves every episode.
    starts = [(e, t0) for e, (s, _) in enumerate(episodes) for t0 in range(0, len(s) - 1, stride)]
    if not starts:
        raise ValueError("kstep_curve: no episode has a transition")
    ep_idx = np.array([e for e, _ in starts])
    t0s = np.array([t for _, t in starts])
    x = np.stack([episodes[e][0][t] for e, t in starts]).astype(np.float32)
    lengths = np.array([len(episodes[e][1]) for e in ep_idx])
    alive = np.ones(len(starts), dtype=bool)
    for k in range(1, max_k + 1):
        alive &= t0s + k <= lengths
        if not alive.any():
            break
        idx = np.flatnonzero(alive)
        a = np.stack([episodes[ep_idx[i]][1][t0s[i] + k - 1] for i in idx]).astype(np.float32)
        x_alive = predict(x[idx], a).mean(axis=0)
        x[idx] = x_alive
        truth = np.stack([episodes[ep_idx[i]][0][t0s[i] + k] for i in idx])
        err = x_alive - truth
        sq[k - 1] = (err**2).sum(axis=0)
        counts[k - 1] = len(idx)
    valid = counts > 0
    n = counts[valid][:, None]
    rmse = np.sqrt(sq[valid] / n)
    norm = np.sqrt(((rmse / scale) ** 2).mean(axis=1))
    return KStepCurve(np.arange(1, max_k + 1)[valid], rmse, norm, scale, counts[valid], spec.state_names)


def recommend_horizon(curve: KStepCurve, tolerance: float) -> int:
    """The longest k whose normalised error stays under `tolerance` at every k up to it (>= 1)."""
    over = np.flatnonzero(curve.normalised_rmse > tolerance)
    if len(over) == 0:
        return int(curve.k[-1])
    return max(1, int(curve.k[over[0]]) - 1)
