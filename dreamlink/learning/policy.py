"""A policy distilled from the planner: one small MLP that answers in one ONNX call what MPPI answers
in K x H model steps.

The runtime uses it twice (DESIGN.md): as the first fallback when planning fails or overruns, and
as a prior for sampling (a share of the K sequences seeded along its rollout). It never replaces
the planner: it imitates it on the states the planner visited, so it is only as good there.

Inputs: `state [B,S]` and `target [B,S]`, the task's reference `lookahead_steps` ahead (a fixed
task repeats its target). The network sees the state and the target-minus-state error, both
normalised; its output is squashed into the action limits, so even an untrained policy commands
nothing the vehicle cannot do.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

_MIN_STD = 1e-6


@dataclass(frozen=True)
class PolicyConfig:
    hidden: int = 64
    layers: int = 2
    lookahead_steps: int = 10  # which reference step the policy is told about (0: the current one)
    epochs: int = 60
    batch_size: int = 256
    lr: float = 2e-3
    seed: int = 0
    holdout_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PolicyConfig.{name}: expected an integer >= 1, got {value!r}")
        if self.lookahead_steps < 0:
            raise ValueError(f"PolicyConfig.lookahead_steps: expected >= 0, got {self.lookahead_steps}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"PolicyConfig.holdout_fraction: expected [0, 1), got {self.holdout_fraction}")


class DistilledPolicy(nn.Module):
    """forward(state [B,S], target [B,S]) -> action [B,A] within the spec's action limits."""

    state_mean: torch.Tensor
    state_std: torch.Tensor
    error_std: torch.Tensor
    action_mid: torch.Tensor
    action_half: torch.Tensor

    def __init__(self, spec: VehicleSpec, config: PolicyConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        S, A = spec.state_dim, spec.action_dim
        sizes = [2 * S] + [config.hidden] * config.layers
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), nn.SiLU()]
        layers.append(nn.Linear(sizes[-1], A))
        self.net = nn.Sequential(*layers)
        self.register_buffer("state_mean", torch.zeros(S))
        self.register_buffer("state_std", torch.ones(S))
        self.register_buffer("error_std", torch.ones(S))
        low, high = torch.from_numpy(spec.action_low.astype(np.float32)), torch.from_numpy(spec.action_high.astype(
            np.float32))
        self.register_buffer("action_mid", (high + low) / 2)
        self.register_buffer("action_half", (high - low) / 2)

    def set_normalisation(self, state: np.ndarray, target: np.ndarray) -> None:
        for name, x in (("state", state), ("error", target - state)):
            t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
            std = t.std(dim=0, unbiased=False)
            std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
            getattr(self, f"{name}_std").copy_(std.float())
            if name == "state":
                self.state_mean.copy_(t.mean(dim=0).float())

    def forward(self, state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = torch.cat([(state - self.state_mean) / self.state_std, (target - state) / self.error_std], -1)
        return self.action_mid + self.action_half * torch.tanh(self.net(x))


@dataclass(frozen=True)
class PolicyTrainResult:
    model: DistilledPolicy
    holdout_rmse: dict[str, float]  # per action, in action units
    holdout_baseline_rmse: dict[str, float]  # predicting the mean action: what "learned something" beats
    n_train: int
    n_holdout: int
    seconds: float
    loss_history: tuple[float, ...] = field(default=())

    def summary(self) -> dict[str, Any]:
        return {"policy_holdout_rmse": self.holdout_rmse, "policy_holdout_baseline_rmse": self.holdout_baseline_rmse,
                "policy_n_train": self.n_train, "policy_n_holdout": self.n_holdout,
                "policy_seconds": round(self.seconds, 2), "policy_lookahead_steps": self.model.config.lookahead_steps}


def distill_policy(
    spec: VehicleSpec,
    state: np.ndarray,
    target: np.ndarray,
    action: np.ndarray,
    config: PolicyConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> PolicyTrainResult:
    """Regress the planner's actions on (state, target): state [N,S], target [N,S], action [N,A]
    from flights the planner flew (behaviour cloning; the holdout is the last `holdout_fraction`)."""
    state, target, action = (np.asarray(x, dtype=np.float32) for x in (state, target, action))
    n = len(state)
    if not (state.shape == target.shape == (n, spec.state_dim) and action.shape == (n, spec.action_dim)):
        raise ValueError(f"distill_policy: shapes state {state.shape}, target {target.shape}, action {action.shape};"
                         f" expected [N,{spec.state_dim}], [N,{spec.state_dim}], [N,{spec.action_dim}]")
    ok = np.isfinite(state).all(1) & np.isfinite(target).all(1) & np.isfinite(action).all(1)
    state, target, action = state[ok], target[ok], action[ok]
    n_hold = int(len(state) * config.holdout_fraction)
    cut = len(state) - n_hold
    if cut < 1:
        raise ValueError(f"distill_policy: {len(state)} finite samples; need more than the holdout")
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DistilledPolicy(spec, config)
        model.set_normalisation(state[:cut], target[:cut])
        s, g, a = (torch.from_numpy(x[:cut]) for x in (state, target, action))
        scale = model.action_half
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-5)
        rng = np.random.default_rng(config.seed)
        losses: list[float] = []
        batches = math.ceil(cut / config.batch_size)
        model.train()
        for epoch in range(1, config.epochs + 1):
            order = torch.from_numpy(rng.permutation(cut))
            total = 0.0
            for b in range(batches):
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                loss = (((model(s[idx], g[idx]) - a[idx]) / scale) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            losses.append(total / batches)
            if progress is not None:
                progress(epoch, config.epochs, losses[-1])
        model.eval()
    rmse, baseline = {}, {}
    if n_hold:
        with torch.no_grad():
            pred = model(torch.from_numpy(state[cut:]), torch.from_numpy(target[cut:])).numpy()
        for i, name in enumerate(spec.action_names):
            rmse[name] = float(np.sqrt(np.mean((pred[:, i] - action[cut:, i]) ** 2)))
            baseline[name] = float(np.sqrt(np.mean((action[:cut, i].mean() - action[cut:, i]) ** 2)))
    seconds = time.perf_counter() - started
    log.info("distilled a policy from %d planner actions in %.1f s; holdout rmse %s", cut, seconds, rmse)
    return PolicyTrainResult(model, rmse, baseline, cut, n_hold, seconds, tuple(losses))


def planner_labels(ticks: dict[str, Any], reference: Callable[[float], np.ndarray] | None, lookahead_steps: int,
                   fixed_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state, target, action) from a flight's ticks (`dreamlink.reports.load_ticks`), the ticks whose
    action the planner chose (source 0) only; `reference(t_s) -> [H,S]` as the loop saw it."""
    keep = np.asarray(ticks["source"]) == 0
    state = np.asarray(ticks["state"], dtype=np.float32)[keep]
    action = np.asarray(ticks["action"], dtype=np.float32)[keep]
    if reference is None:
        target = np.repeat(np.asarray(fixed_target, np.float32)[None], len(state), axis=0)
    else:
        times = np.asarray(ticks["t_s"])[keep]
        windows = [reference(float(t)) for t in times]
        target = np.stack([w[min(lookahead_steps, len(w) - 1)] for w in windows])
    return state, target.astype(np.float32), action
