"""MPPI through an ONNX world model: sample K action sequences around the warm-start plan,
imagine each H steps ahead, weight them by exp(-cost / temperature), average. A sample whose
imagined future is not finite (a model that returns NaN for some inputs) costs +inf and weighs
nothing; the plan stays finite while any sample is, and is NaN (refused by the loop) when none is.

Reads top to bottom as one planning step: noise -> samples -> rollout -> cost -> weights ->
new plan. The loop owns what carries between ticks (the previous plan); `shift_plan` is the
warm start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from dreamlink.runtime.session import ModelSession
from dreamlink.runtime.tasks import QuadraticTask, trajectory_cost
from dreamlink.spec import VehicleSpec

# An extra cost term over the imagined futures, added to the task's: (traj [K,H+1,S], samples [K,H,A]) -> [K].
# Keep-out zones use it (`dreamlink.runtime.zones.ZoneCost`); the fused planner graph cannot call it.
ExtraCost = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MppiConfig:
    """Defaults tuned on the cart-pole balance task (lockstep sweep over K, H, sigma, lambda and
    4 seeds: H=30 is what re-centres the cart; K=128 keeps a tick near 7 ms on one core)."""

    samples: int = 128  # K
    horizon: int = 30  # H, control periods
    noise_sigma: float = 0.2  # as a fraction of each action's half range
    temperature: float = 0.3  # lambda, in cost units
    # Correlation of the sampling noise between consecutive steps (0: white). Smooth samples suit a
    # vehicle whose setpoints are slew-limited by the shield: white noise would mostly be clipped away.
    noise_smoothing: float = 0.0
    # With a policy prior (the distilled policy's actions over the horizon): this share of the K samples
    # is drawn around the prior instead of the warm start; sample 1 is the prior itself.
    prior_share: float = 0.25

    def __post_init__(self) -> None:
        if self.samples < 2 or self.horizon < 1:
            raise ValueError(f"MppiConfig: need samples >= 2 and horizon >= 1, got {self}")
        if not (self.noise_sigma > 0 and self.temperature > 0):
            raise ValueError(f"MppiConfig: noise_sigma and temperature must be > 0, got {self}")
        if not 0.0 <= self.noise_smoothing < 1.0:
            raise ValueError(f"MppiConfig.noise_smoothing: expected [0, 1), got {self.noise_smoothing}")
        if not 0.0 <= self.prior_share < 1.0:
            raise ValueError(f"MppiConfig.prior_share: expected [0, 1), got {self.prior_share}")

    @classmethod
    def from_calibration(cls, raw: Mapping[str, Any]) -> MppiConfig:
        """From a manifest's `calibration.planner` section (missing keys keep their defaults)."""
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def prior_rows(self) -> int:
        """How many samples (from sample 1 on) a prior seeds: at least one, never sample 0 (the warm start)."""
        return min(self.samples - 1, max(1, round(self.samples * self.prior_share)))


@dataclass(frozen=True)
class Plan:
    """An immutable plan, stamped with the time and state it was made from."""

    actions: np.ndarray  # [H,A]
    made_at_s: float
    from_state: np.ndarray  # [S]
    imagined: np.ndarray  # [H+1,S] trajectory of the lowest-cost sample
    best_cost: float  # +inf when no sample was finite
    disagreement: float  # max ensemble std along the imagined trajectory, in state-range units
    # Samples whose imagined trajectory or cost was not finite: scored +inf, weight 0. `samples` is K (0: the
    # plan did not come from sampling, or the planner cannot tell, e.g. a planner graph exported before the count).
    nonfinite_samples: int = 0
    samples: int = 0

    @property
    def all_samples_nonfinite(self) -> bool:
        """No sample was finite: there was nothing to weight, and the actions are NaN (never to be flown)."""
        return self.samples > 0 and self.nonfinite_samples >= self.samples

    def action_at(self, t_s: float, period_s: float) -> np.ndarray:
        """The step due at `t_s` (the plan's first step at `made_at_s`)."""
        k = round((t_s - self.made_at_s) / period_s)
        return self.actions[min(max(k, 0), len(self.actions) - 1)]


def shift_plan(actions: np.ndarray, steps: int = 1) -> np.ndarray:
    """Warm start: drop the steps already executed, repeat the last one at the end. [H,A] -> [H,A]."""
    if steps <= 0:
        return actions.copy()
    steps = min(steps, len(actions))
    return np.concatenate([actions[steps:], np.repeat(actions[-1:], steps, axis=0)], axis=0)


def seed_with_prior(offsets: np.ndarray, prior: np.ndarray, warm: np.ndarray, rows: int,
                    scale: np.ndarray | None = None) -> None:
    """In place: samples 1..rows of `offsets` [K,H,A] (added to `warm` [H,A]) move to `prior` [H,A],
    sample 1 exactly onto it. `scale` [A]: the offsets are in units of it (the fused graph's noise)."""
    shift = prior.astype(np.float32, copy=False) - warm
    if scale is not None:
        shift = shift / scale
    offsets[1] = 0.0
    offsets[1 : rows + 1] += shift


def smooth_noise(noise: np.ndarray, beta: float) -> None:
    """AR(1) along the horizon, in place, keeping the marginal variance: noise [K,H,A] of unit normals."""
    if beta <= 0:
        return
    gain = np.float32(np.sqrt(1.0 - beta * beta))
    for h in range(1, noise.shape[1]):
        noise[:, h] = beta * noise[:, h - 1] + gain * noise[:, h]


def mppi_weights(costs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of -cost/temperature over the finite costs, shifted by their minimum for stability; a non-finite
    cost gets weight 0, so one model output of NaN cannot poison the average. [K] -> [K]; all NaN when no cost is
    finite (there is nothing to average, and a NaN plan is refused downstream rather than a made-up one flown)."""
    finite = np.isfinite(costs)
    if not finite.any():
        return np.full(costs.shape, np.nan)
    z = np.full(costs.shape, -np.inf)
    z[finite] = -(costs[finite] - costs[finite].min()) / temperature
    w = np.exp(z)
    return w / w.sum()


def nonfinite_to_inf(costs: np.ndarray, traj: np.ndarray) -> int:
    """In place: `costs` [K] becomes +inf for every sample whose trajectory `traj` [K,H+1,S] or cost is not
    finite (a model that returns NaN for some inputs). Returns how many samples that was."""
    bad = ~(np.isfinite(costs) & np.isfinite(traj).all(axis=(1, 2)))
    costs[bad] = np.inf
    return int(bad.sum())


class MppiPlanner:
    """Holds the session and the preallocated buffers; `plan()` is one planning step.

    `extra_cost` (also a settable attribute; None: the task alone) adds a cost term to every sample."""

    def __init__(
        self,
        model: ModelSession,
        spec: VehicleSpec,
        task: QuadraticTask,
        config: MppiConfig,
        rng: np.random.Generator,
        extra_cost: ExtraCost | None = None,
    ) -> None:
        task.check(spec)
        self.model, self.spec, self.task, self.config, self.rng = model, spec, task, config, rng
        self.extra_cost = extra_cost
        K, H, A, S = config.samples, config.horizon, spec.action_dim, spec.state_dim
        self._low, self._high = spec.action_low, spec.action_high
        self._sigma = (config.noise_sigma * (self._high - self._low) / 2.0).astype(np.float32)  # [A]
        self._state_scale = ((spec.state_high - spec.state_low) / 2.0).astype(np.float32)  # [S]
        self._noise = np.empty((K, H, A), dtype=np.float32)
        self._samples = np.empty((K, H, A), dtype=np.float32)
        self._traj = np.empty((K, H + 1, S), dtype=np.float32)
        self._spread = np.empty((K, H), dtype=np.float32)
        self._step_actions = np.empty((K, A), dtype=np.float32)

    def initial_plan(self) -> np.ndarray:
        """A plan of hold actions (zeros clipped to the limits). [H,A]"""
        zero = np.clip(np.zeros(self.spec.action_dim, dtype=np.float32), self._low, self._high)
        return np.repeat(zero[None], self.config.horizon, axis=0)

    def rollout(self, state: np.ndarray, actions: np.ndarray) -> None:
        """Imagine K futures into `self._traj` [K,H+1,S] by the ensemble mean; spread into `self._spread`."""
        traj = self._traj
        traj[:, 0, :] = state
        for h in range(actions.shape[1]):
            np.copyto(self._step_actions, actions[:, h, :])
            pred = self.model.predict(traj[:, h, :], self._step_actions)  # [E,K,S]
            traj[:, h + 1, :] = pred.mean(axis=0)
            if pred.shape[0] > 1:
                self._spread[:, h] = (pred.std(axis=0) / self._state_scale).max(axis=1)
            else:
                self._spread[:, h] = 0.0

    def plan(self, state: np.ndarray, warm: np.ndarray, t_s: float, reference: np.ndarray | None = None,
             prior: np.ndarray | None = None) -> Plan:
        """One MPPI iteration from `state` [S] around the warm-start plan `warm` [H,A];
        `reference` [H,S] is the per-step target of a tracking task (None: the task's own);
        `prior` [H,A] (the policy's sequence) seeds `config.prior_rows()` of the samples."""
        self.rng.standard_normal(dtype=np.float32, out=self._noise)
        smooth_noise(self._noise, self.config.noise_smoothing)
        self._noise *= self._sigma
        self._noise[0] = 0.0  # sample 0 is the warm start itself, so a good plan is never lost
        if prior is not None:
            seed_with_prior(self._noise, prior, warm, self.config.prior_rows())
        np.add(warm[None], self._noise, out=self._samples)
        np.clip(self._samples, self._low, self._high, out=self._samples)
        self.rollout(state.astype(np.float32, copy=False), self._samples)
        costs = trajectory_cost(self.task, self._traj, self._samples, reference)  # [K]
        if self.extra_cost is not None:
            costs = costs + self.extra_cost(self._traj, self._samples)
        nonfinite = nonfinite_to_inf(costs, self._traj)
        w = mppi_weights(costs, self.config.temperature)
        actions = np.tensordot(w, self._samples, axes=1).astype(np.float32)  # [H,A]
        best = int(np.argmin(costs))
        return Plan(
            actions=actions,
            made_at_s=t_s,
            from_state=state.copy(),
            imagined=self._traj[best].copy(),
            best_cost=float(costs[best]),
            disagreement=float(self._spread[best].max()),
            nonfinite_samples=nonfinite,
            samples=self.config.samples,
        )
