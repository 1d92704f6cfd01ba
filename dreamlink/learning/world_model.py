"""The ensemble world model: E small MLPs, each predicting the state change over one control period.

Why this shape: predicting the delta (not the next state) makes "nothing changes" the
zero output, which a small MLP learns fast; an ensemble's spread is the runtime's
uncertainty signal. The E members live in stacked weight tensors `[E, in, out]`, so
one batched matmul runs all members and the ONNX graph is a handful of MatMul/Add
nodes whatever E is. Normalisation (state, action, delta mean/std) is stored as
buffers inside the module, so `forward` — and the exported graph — take and return
raw units, and a bundle needs no side file of statistics.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dreamlink.spec import VehicleSpec

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": nn.functional.silu,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": nn.functional.gelu,
}
# A component that never varies in the data (std ~ 0) is left unscaled rather than blown up.
_MIN_STD = 1e-6


@dataclass(frozen=True)
class WorldModelConfig:
    hidden: int = 128
    layers: int = 2  # hidden layers; the MLP has layers + 1 weight matrices
    ensemble_size: int = 5
    # ReLU: ONNX Runtime fuses it into the Gemm, where SiLU costs a separate pass of about 0.3 ns an element
    # (a 2 x 256 model's planner step: 90 % of the fp32 peak against 82 %). Flown side by side on the same
    # data and seeds (make activation-study, 2026-11-25) both track the figure-eight alike; see docs/performance.md.
    activation: str = "relu"
    # State components the dynamics do not depend on (e.g. a multirotor's position: its response to a
    # velocity setpoint is the same anywhere in the air). Masked out of the MLP's input, so the model
    # cannot overfit to where the training flights happened to be.
    ignore_inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore_inputs", tuple(self.ignore_inputs))
        for name in ("hidden", "layers", "ensemble_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WorldModelConfig.{name}: expected an integer >= 1, got {value!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"WorldModelConfig.activation: expected one of {sorted(_ACTIVATIONS)}, got {self.activation!r}"
            )


class EnsembleWorldModel(nn.Module):
    """forward(state [B,S], action [B,A]) -> next_state [E,B,S], raw units in and out."""

    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor
    delta_mean: torch.Tensor
    delta_std: torch.Tensor
    input_mask: torch.Tensor

    def __init__(self, spec: VehicleSpec, config: WorldModelConfig) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        self.provenance: dict[str, object] = {}  # what it learned from (vehicle, logs, minutes); saved with it
        S, A, E = spec.state_dim, spec.action_dim, config.ensemble_size
        sizes = [S + A] + [config.hidden] * config.layers + [S]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            # nn.Linear's default init, drawn independently for each member.
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(E, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(E, 1, fan_out).uniform_(-bound, bound)))
        self._act = _ACTIVATIONS[config.activation]
        for name, dim in (("state", S), ("action", A), ("delta", S)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        unknown = [n for n in config.ignore_inputs if n not in spec.state_names]
        if unknown:
            raise ValueError(f"WorldModelConfig.ignore_inputs: {unknown} not in {spec.name} state {spec.state_names}")
        mask = torch.tensor([0.0 if n in config.ignore_inputs else 1.0 for n in spec.state_names])
        self.register_buffer("input_mask", mask)

    @property
    def ensemble_size(self) -> int:
        return self.config.ensemble_size

    def set_normalisation(self, state: np.ndarray | torch.Tensor, action: np.ndarray | torch.Tensor,
                          delta: np.ndarray | torch.Tensor) -> None:
        """Set input and output statistics from training data: state [N,S], action [N,A], delta [N,S]."""
        for name, x, dim in (("state", state, self.spec.state_dim), ("action", action, self.spec.action_dim),
                             ("delta", delta, self.spec.state_dim)):
            t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
            if t.ndim != 2 or t.shape[1] != dim or t.shape[0] < 1:
                raise ValueError(f"set_normalisation: {name} has shape {list(t.shape)}, expected [N,{dim}] with N >= 1")
            std = t.std(dim=0, unbiased=False)
            std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
            getattr(self, f"{name}_mean").copy_(t.mean(dim=0).float())
            getattr(self, f"{name}_std").copy_(std.float())

    def predict_normalised_delta(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The members' outputs in normalised delta units (the training target's space).

        state [B,S], action [B,A] -> [E,B,S], every member sees the same batch; or state [E,B,S],
        action [E,B,A] -> [E,B,S], each member its own batch (bootstrap training).
        """
        s_in = (state - self.state_mean) / self.state_std * self.input_mask
        x = torch.cat([s_in, (action - self.action_mean) / self.action_std], -1)
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            # [B,in] @ [E,in,out] broadcasts to [E,B,out]: one MatMul node for all members.
            x = torch.matmul(x, w) + b
            if i < n - 1:
                x = self._act(x)
        return x

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        delta = self.predict_normalised_delta(state, action) * self.delta_std + self.delta_mean
        return state + delta
