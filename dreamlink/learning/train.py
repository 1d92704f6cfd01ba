"""Training loop for the ensemble world model (one file, top to bottom, CleanRL style).

Each member gets its own bootstrap resample of the training rows and its own shuffle, so
the members disagree where data is thin — that disagreement is the runtime's uncertainty
signal. The loss is mean squared error in normalised delta units; with `multi_step = k > 1`
each member also rolls its own predictions forward k steps along training episodes and
is penalised at every step (errors scaled by the delta std, so step 1 equals the one-step loss).
Everything random flows from `TrainConfig.seed` inside a forked torch RNG, so a seed
reproduces the weights bit for bit on the same machine and thread count, and the
caller's global RNG is left alone.

Fine-tuning (`init=`): a model pretrained in simulation is copied and trained further on the real
vehicle's data, keeping its shape and its normalisation (the statistics its weights were learned
in; re-fitting them would move every input under the weights). The choice of full fine-tuning over
training on real data alone, mixing sim and real, or a residual on top was made by measured k-step
error on held-out real flights (README, "Learn the vehicle you fly"; `dreamlink.learning.finetune_study`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamlink.learning.transitions import TransitionSet
from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig
from dreamlink.spec import SpecError, VehicleSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dreamlink-world-model"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    holdout_fraction: float = 0.1
    seed: int = 0
    multi_step: int = 1  # k-step rollout loss along episodes; 1 = plain one-step regression
    threads: int = 0  # torch intra-op threads while training; 0 keeps torch's default

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "multi_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name}: expected an integer >= 1, got {value!r}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig: expected lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"TrainConfig.holdout_fraction: expected [0, 1), got {self.holdout_fraction}")
        if self.threads < 0:
            raise ValueError(f"TrainConfig.threads: expected >= 0 (0 = torch default), got {self.threads}")


@dataclass(frozen=True)
class TrainResult:
    model: EnsembleWorldModel
    train_loss: float  # last epoch's mean loss, normalised delta units squared
    holdout_one_step_rmse: dict[str, float]  # per state name, raw units, ensemble mean
    epochs: int
    seconds: float
    n_train: int
    n_holdout: int
    # Added beyond the brief: the "predict no change" RMSE on the same holdout (what the model must beat),
    # and each epoch's loss.
    holdout_baseline_rmse: dict[str, float] = field(default_factory=dict)
    loss_history: tuple[float, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures for a bundle manifest's `training` section (no model)."""
        return {
            "train_loss": self.train_loss,
            "holdout_one_step_rmse": dict(self.holdout_one_step_rmse),
            "holdout_baseline_rmse": dict(self.holdout_baseline_rmse),
            "epochs": self.epochs,
            "seconds": round(self.seconds, 3),
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "model_config": asdict(self.model.config),
        }


def train_world_model(
    data: TransitionSet,
    model_config: WorldModelConfig,
    train_config: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
    init: EnsembleWorldModel | None = None,
) -> TrainResult:
    """Fit an `EnsembleWorldModel` to `data`; `progress(epoch, epochs, loss)` is called after each epoch.

    `init`: fine-tune a copy of this model (its config and normalisation win over `model_config`)."""
    if init is not None:
        if init.spec != data.spec:
            raise ValueError(f"train_world_model: the initial model is for spec {init.spec.name!r} "
                             f"({init.spec.state_dim} states, {init.spec.action_dim} actions), the data for "
                             f"{data.spec.name!r}; fine-tune a model of the same vehicle description")
        model_config = init.config
    cfg = train_config
    train, holdout = data.split_by_episode(cfg.holdout_fraction, cfg.seed)
    if len(train) == 0:
        raise ValueError("train_world_model: no training transitions")
    saved_threads = torch.get_num_threads()
    started = time.perf_counter()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model, losses = _fit(train, model_config, cfg, progress, init)
    finally:
        torch.set_num_threads(saved_threads)
    seconds = time.perf_counter() - started
    rmse, baseline = _one_step_rmse(model, holdout) if len(holdout) else ({}, {})
    log.info("trained %d epochs on %d transitions in %.1f s; holdout rmse %s", cfg.epochs, len(train), seconds, rmse)
    return TrainResult(
        model=model,
        train_loss=losses[-1],
        holdout_one_step_rmse=rmse,
        epochs=cfg.epochs,
        seconds=seconds,
        n_train=len(train),
        n_holdout=len(holdout),
        holdout_baseline_rmse=baseline,
        loss_history=tuple(losses),
    )


def _fit(
    train: TransitionSet,
    model_config: WorldModelConfig,
    cfg: TrainConfig,
    progress: Callable[[int, int, float], None] | None,
    init: EnsembleWorldModel | None = None,
) -> tuple[EnsembleWorldModel, list[float]]:
    if init is not None:
        model = copy.deepcopy(init)
    else:
        model = EnsembleWorldModel(train.spec, model_config)
        model.set_normalisation(train.state, train.action, train.next_state - train.state)
    states, actions = _windows(train, cfg.multi_step)  # [N, k+1, S], [N, k, A]
    states_t, actions_t = torch.from_numpy(states), torch.from_numpy(actions)
    n, E = states.shape[0], model_config.ensemble_size
    if n == 0:
        raise ValueError(f"train_world_model: no episode is {cfg.multi_step} steps long; lower multi_step")
    rng = np.random.default_rng(cfg.seed)
    bootstrap = rng.integers(0, n, size=(E, n))  # each member's resample, fixed for the run
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = math.ceil(n / cfg.batch_size)
    losses: list[float] = []
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        order = np.take_along_axis(bootstrap, rng.permuted(np.tile(np.arange(n), (E, 1)), axis=1), axis=1)
        order_t = torch.from_numpy(order)
        total = 0.0
        for b in range(n_batches):
            idx = order_t[:, b * cfg.batch_size : (b + 1) * cfg.batch_size]  # [E, bs]
            loss = _rollout_loss(model, states_t[idx], actions_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total / n_batches)
        if progress is not None:
            progress(epoch, cfg.epochs, losses[-1])
        log.debug("epoch %d/%d loss %.5f", epoch, cfg.epochs, losses[-1])
    model.eval()
    return model, losses


def _rollout_loss(model: EnsembleWorldModel, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """states [E,bs,k+1,S], actions [E,bs,k,A]: each member rolls its own prediction k steps."""
    k = actions.shape[2]
    if k == 1:
        target = (states[:, :, 1] - states[:, :, 0] - model.delta_mean) / model.delta_std
        return torch.mean((model.predict_normalised_delta(states[:, :, 0], actions[:, :, 0]) - target) ** 2)
    s = states[:, :, 0]
    total = states.new_zeros(())
    for j in range(k):
        s = model(s, actions[:, :, j])
        total = total + torch.mean(((s - states[:, :, j + 1]) / model.delta_std) ** 2)
    return total / k


def _windows(data: TransitionSet, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All length-k windows along episodes: states [N, k+1, S], actions [N, k, A]. k=1 is every row."""
    if k == 1:
        return np.stack([data.state, data.next_state], axis=1), data.action[:, None, :]
    s_out, a_out = [], []
    for s, a in data.episodes():
        for t in range(a.shape[0] - k + 1):
            s_out.append(s[t : t + k + 1])
            a_out.append(a[t : t + k])
    S, A = data.spec.state_dim, data.spec.action_dim
    if not s_out:
        return np.zeros((0, k + 1, S), np.float32), np.zeros((0, k, A), np.float32)
    return np.stack(s_out).astype(np.float32), np.stack(a_out).astype(np.float32)


@torch.no_grad()
def _one_step_rmse(model: EnsembleWorldModel, data: TransitionSet) -> tuple[dict[str, float], dict[str, float]]:
    """(model, predict-no-change) one-step RMSE per state name on `data`, ensemble mean, raw units."""
    pred = model(torch.from_numpy(data.state), torch.from_numpy(data.action)).mean(dim=0).numpy()
    err = np.sqrt(np.mean((pred - data.next_state) ** 2, axis=0, dtype=np.float64))
    base = np.sqrt(np.mean((data.state - data.next_state) ** 2, axis=0, dtype=np.float64))
    names = data.spec.state_names
    return dict(zip(names, map(float, err), strict=True)), dict(zip(names, map(float, base), strict=True))


def save_checkpoint(model: EnsembleWorldModel, path: str | os.PathLike[str]) -> Path:
    """torch.save of plain data only (config, spec dict, state_dict, and `model.provenance`, what it learned
    from: JSON-like), so loading needs no pickle of our classes."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": asdict(model.config),
        "spec": model.spec.to_dict(),
        "state_dict": model.state_dict(),
        "provenance": json.loads(json.dumps(getattr(model, "provenance", {}), default=str)),
    }
    tmp = p.with_name(f".{p.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, p)
    return p


def load_checkpoint(path: str | os.PathLike[str]) -> EnsembleWorldModel:
    """Load a `save_checkpoint` file with `weights_only=True` (no arbitrary code from the file)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors here
        raise ValueError(f"{p}: not a readable dreamlink checkpoint ({e})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p}: not a dreamlink world-model checkpoint (field 'format' != {CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{p}: checkpoint version {payload.get('version')!r}, this dreamlink reads {CHECKPOINT_VERSION}"
        )
    try:
        spec = VehicleSpec.from_dict(payload.get("spec"), where=f"{p}: spec")
        config = WorldModelConfig(**payload.get("config", {}))
    except (SpecError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: bad spec or config ({e})") from None
    model = EnsembleWorldModel(spec, config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{p}: state_dict does not match its config {config} ({e})") from None
    model.provenance = dict(payload.get("provenance") or {})
    model.eval()
    return model
