"""The models every planner in the benchmark runs: one torch ensemble per hidden size, trained
briefly on cart-pole physics so the weights, the rollouts and the int8 error are those of a real
model (a random network would flatter int8 and plan nonsense), exported once to the bundle the
fused planners load. Same weights for the torch peers and the ONNX planners.

Why cart-pole: dreamlink's reference vehicle (S=4, A=1). A planner step's FLOPs are dominated by
the hidden x hidden layer, so S and A barely move the figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from dreamlink.bundle import Bundle, load_bundle
from dreamlink.campaign.collect import cartpole_random_force_transitions
from dreamlink.export.pack import pack_bundle
from dreamlink.export.planner_graph import PlannerGraphConfig
from dreamlink.export.planner_graph_pack import pack_planner_bundle
from dreamlink.learning.train import TrainConfig, train_world_model
from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig
from dreamlink.spec import CARTPOLE

log = logging.getLogger(__name__)

SPEC = CARTPOLE
ENSEMBLE = 5
LAYERS = 2
ACTIVATION = WorldModelConfig().activation  # dreamlink's default


def train_model(hidden: int, epochs: int, seed: int = 0, layers: int = LAYERS, activation: str = ACTIVATION
                ) -> tuple[EnsembleWorldModel, dict[str, float]]:
    data = cartpole_random_force_transitions(episodes=200, length=60, seed=seed)
    result = train_world_model(data, WorldModelConfig(hidden=hidden, layers=layers, ensemble_size=ENSEMBLE,
                                                      activation=activation),
                               TrainConfig(epochs=epochs, seed=seed, threads=2))
    model = result.model.eval()
    return model, result.holdout_one_step_rmse


@dataclass
class BenchModel:
    hidden: int
    torch_model: EnsembleWorldModel
    bundle: Bundle  # the world model only
    holdout_rmse: dict[str, float]

    def flops_per_step(self, samples: int, horizon: int) -> int:
        """Matmul FLOPs of one planning step: the world model on K rows, H times.

        Counted from the torch model's weights (2 per multiply-add, biases and activations not
        counted), so every planner is measured against the same work whatever its graph layout.
        """
        macs = sum(int(w.numel()) for w in self.torch_model.weights)  # E x in x out per layer
        return 2 * samples * macs * horizon


def build_model(hidden: int, out: Path, epochs: int, layers: int = LAYERS, activation: str = ACTIVATION
                ) -> BenchModel:
    torch.manual_seed(0)
    model, rmse = train_model(hidden, epochs, layers=layers, activation=activation)
    bundle, _ = pack_bundle(out / f"h{hidden}", SPEC, model, training={"holdout_one_step_rmse": rmse})
    return BenchModel(hidden, model, bundle, rmse)


def planner_bundle(model: BenchModel, out: Path, samples: int, horizon: int, precision: str, noise_sigma: float,
                   temperature: float, chunk: int = PlannerGraphConfig(2, 1).chunk, rollout: str = "unrolled",
                   method: str = "mppi") -> Bundle:
    name = f"h{model.hidden}_k{samples}_h{horizon}_{precision}_{method}_{rollout}_c{chunk}"
    if (out / name / "manifest.json").is_file():
        return load_bundle(out / name)
    return pack_planner_bundle(model.bundle.root, out / name,
                               PlannerGraphConfig(samples, horizon, method=method, rollout=rollout, chunk=chunk),
                               noise_sigma=noise_sigma, temperature=temperature, precision=precision)
