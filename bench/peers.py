"""What a user would otherwise pick, on the same torch model and the same task.

(a) `pytorch_mppi.MPPI` from PyPI: dynamics = the ensemble mean, running cost = the task's
    quadratic + wall terms per step, terminal cost = the extra terminal weight on the last state.
(b) a plain torch eager batched rollout: the same MPPI update as `dreamlink.runtime.mppi`
    (sample 0 = the warm start, ensemble-mean rollout, trajectory cost, softmax weights) written
    directly in torch, the baseline a careful user writes by hand.

Both run under `torch.inference_mode()` with `torch.set_num_threads(threads)` set by the caller.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_mppi import MPPI

from dreamlink.runtime.mppi import MppiConfig
from dreamlink.runtime.tasks import QuadraticTask
from dreamlink.spec import VehicleSpec


class _TorchTask:
    """The task's cost terms as torch tensors."""

    def __init__(self, task: QuadraticTask, spec: VehicleSpec) -> None:
        self.target = torch.tensor(task.target, dtype=torch.float32)
        self.state_weight = torch.tensor(task.state_weight, dtype=torch.float32)
        self.action_weight = torch.tensor(task.action_weight, dtype=torch.float32)
        self.terminal_weight = float(task.terminal_weight)
        limit = np.full(spec.state_dim, np.inf, np.float32)
        for index, value in task.walls:
            limit[index] = value
        self.wall_limit = torch.from_numpy(limit)
        self.wall_penalty = float(task.wall_penalty)

    def quadratic(self, x: torch.Tensor) -> torch.Tensor:
        """[..., S] -> [...]: weighted squared distance to the target."""
        err = x - self.target
        return (err * err * self.state_weight).sum(-1)

    def walls(self, x: torch.Tensor) -> torch.Tensor:
        """[..., S] -> [...]: the wall penalty for every component past its wall."""
        return (x.abs() > self.wall_limit).sum(-1).to(x.dtype) * self.wall_penalty


class PytorchMppiPlanner:
    """(a) pytorch-mppi's `MPPI.command(state)`; it keeps and shifts its own nominal plan."""

    name = "pytorch-mppi"

    def __init__(self, model: torch.nn.Module, spec: VehicleSpec, task: QuadraticTask, config: MppiConfig,
                 seed: int) -> None:
        torch.manual_seed(seed)
        self.model, t = model, _TorchTask(task, spec)
        sigma = config.noise_sigma * (spec.action_high - spec.action_low) / 2.0

        def dynamics(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
            return model(state, action).mean(0)

        def running_cost(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
            return t.quadratic(state) + t.walls(state) + (action * action * t.action_weight).sum(-1)

        def terminal_cost(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            # states [1,K,T,S]; the last step already paid weight 1 in the running cost.
            return (t.terminal_weight - 1.0) * t.quadratic(states[..., -1, :])

        self.mppi = MPPI(
            dynamics, running_cost, spec.state_dim,
            noise_sigma=torch.diag(torch.tensor(sigma * sigma, dtype=torch.float32)),
            num_samples=config.samples, horizon=config.horizon, lambda_=config.temperature,
            u_min=torch.from_numpy(spec.action_low), u_max=torch.from_numpy(spec.action_high),
            terminal_state_cost=terminal_cost if t.terminal_weight != 1.0 else None,
            U_init=torch.zeros(config.horizon, spec.action_dim),
        )

    def step(self, state: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.mppi.command(torch.from_numpy(state)).numpy()


class TorchEagerPlanner:
    """(b) the reference MPPI update, batched over K, in plain torch eager."""

    name = "torch eager"

    def __init__(self, model: torch.nn.Module, spec: VehicleSpec, task: QuadraticTask, config: MppiConfig,
                 seed: int) -> None:
        self.model, self.task = model, _TorchTask(task, spec)
        self.K, self.H, self.A, self.S = config.samples, config.horizon, spec.action_dim, spec.state_dim
        self.sigma = torch.from_numpy(config.noise_sigma * (spec.action_high - spec.action_low) / 2.0)
        self.low, self.high = torch.from_numpy(spec.action_low), torch.from_numpy(spec.action_high)
        self.temperature = config.temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.keep = torch.ones(self.K, 1, 1)
        self.keep[0] = 0.0
        self.warm = torch.zeros(self.H, self.A)
        step_w = torch.ones(self.H)
        step_w[-1] = self.task.terminal_weight
        self.step_w = step_w

    def plan(self, state: torch.Tensor, warm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """state [S], warm [H,A] -> (new plan [H,A], costs [K])."""
        noise = torch.randn(self.K, self.H, self.A, generator=self.generator) * self.sigma * self.keep
        samples = torch.maximum(torch.minimum(warm + noise, self.high), self.low)
        x = state.expand(self.K, self.S)
        traj = []
        for h in range(self.H):
            x = self.model(x, samples[:, h]).mean(0)
            traj.append(x)
        nxt = torch.stack(traj, 1)  # [K,H,S]
        costs = (self.task.quadratic(nxt) * self.step_w).sum(1) + self.task.walls(nxt).sum(1)
        costs = costs + (samples * samples * self.task.action_weight).sum((1, 2))
        weights = torch.softmax(-costs / self.temperature, 0)
        return torch.einsum("k,kha->ha", weights, samples), costs

    def step(self, state: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            plan, _ = self.plan(torch.from_numpy(state), self.warm)
            self.warm = torch.cat([plan[1:], plan[-1:]], 0)  # shift_plan
            return plan[0].numpy()
