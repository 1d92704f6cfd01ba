"""Learning the vehicle you fly: flight logs in, a fine-tuned bundle out, flown and improved round by round.

`dreamlink learn` closes the loop DESIGN.md describes ("Learning the vehicle you fly"):

1. (round 0) collect: a bounded excitation flight against the live autopilot (`campaign.live.collect_live`),
   unless enough logs are given;
2. fit: the sim-pretrained world model (`--init`) fine-tuned on every real flight log so far;
3. export: ONNX, parity, the k-step error on held-out real flights, the horizon chosen from it
   (`calibration.horizon.recommend_task_horizon`), the fused planner graph, the vehicle and data it learned;
4. fly: the task (the figure-eight) with that bundle, through `runtime.onboard.fly`, on the same vehicle;
5. the flight's own `.tlog` joins the data, and the next round refits.

Each round prints the tracking RMSE with the minutes of data used so far; the k-step error of the sim-only and
each fine-tuned model on the held-out real flight is plotted side by side (the sim-to-real gap made visible).

This module is where the pieces meet (torch training, ONNX export, the onboard runtime), like `demo.py`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.demo import QUAD_HORIZON_BOUNDS
from dreamlink.spec import QUAD, VehicleSpec

log = logging.getLogger(__name__)

CHUNK_STEPS = 250  # flight logs are cut into 5 s episodes, so a holdout can be whole pieces
# A multirotor's logged position is trained as the integral of its logged velocity (see
# `TransitionSet.with_integrated_positions`: the estimator's GPS-driven wander is not dynamics).
QUAD_KINEMATICS = (("pos_n_m", "vel_n_mps"), ("pos_e_m", "vel_e_mps"), ("pos_d_m", "vel_d_mps"))
FINETUNE_LR = 3e-4


def transitions_from_logs(paths: Sequence[str | Path], spec: VehicleSpec = QUAD, autopilot: str = "auto",
                          client: tuple[int, int] = (0, 0), on_error: str = "raise") -> Any:
    """Every .tlog (any ArduPilot or PX4 flight flown with velocity setpoints, by dreamlink, MAVProxy or a GCS
    script) and .npz as one `TransitionSet`, logs cut into `CHUNK_STEPS` pieces; the vehicle each log shows is in
    the metadata. `autopilot` "auto" reads the family from each log's HEARTBEAT; all must agree."""
    from dreamlink.calibration.tlog_data import TlogDataConfig, TlogDataError, detect_autopilot, tlog_to_transitions
    from dreamlink.firmware_bridge.vehicle_id import identity_from_tlog
    from dreamlink.learning.transitions import TransitionSet

    sets, families = [], {}
    for p in map(Path, paths):
        if p.suffix == ".tlog":
            kind = detect_autopilot(p) if autopilot == "auto" else autopilot
            families[str(p)] = kind
            data = tlog_to_transitions(p, spec, kind, config=TlogDataConfig(client=client),
                                       on_error=on_error)  # type: ignore[arg-type]
            if len(data) == 0:
                raise TlogDataError(f"{p}: no transitions (no velocity setpoints in GUIDED/OFFBOARD while armed?)")
            identity = identity_from_tlog(p)
            data.meta["vehicle"] = identity.to_dict()
            sets.append(data.chunked(CHUNK_STEPS))
        elif p.suffix == ".json":
            from dreamlink.campaign.shards import load_shards

            sets.append(load_shards(str(p)))
        else:
            sets.append(TransitionSet.load(p))
    if len(set(families.values())) > 1:
        raise ValueError(f"the logs are of different autopilots ({families}); a world model learns one vehicle: "
                         f"train one per vehicle")
    return TransitionSet.concat(sets)


def split_holdout(data: Any, fraction: float = 0.2) -> tuple[Any, Any]:
    """(train, holdout): the last `fraction` of the pieces (episodes in file order) held out, so the holdout is later
    in the flight than anything trained on (no near-copies across the split)."""
    ids = np.unique(data.episode)
    if len(ids) < 2:
        return data, data.subset(np.zeros(len(data), dtype=bool))
    mask = np.isin(data.episode, ids[-max(1, round(fraction * len(ids))):])
    return data.subset(~mask), data.subset(mask)


@dataclass(frozen=True)
class FitResult:
    model: Any
    holdout: Any
    train_minutes: float
    summary: dict[str, Any] = field(default_factory=dict)


def fine_tune(init: Any, data: Any, epochs: int = 40, seed: int = 0, lr: float = FINETUNE_LR,
              progress: Callable[[int, int, float], None] | None = None, holdout: Any = None) -> FitResult:
    """The sim-pretrained `init` trained further on `data` (the method chosen by bench/finetune_study.py)."""
    from dreamlink.learning.train import TrainConfig, train_world_model
    from dreamlink.learning.transitions import provenance

    if holdout is None:
        train, holdout = split_holdout(data)
    else:
        train = data
    if all(p in data.spec.state_names and v in data.spec.state_names for p, v in QUAD_KINEMATICS):
        train = train.with_integrated_positions(QUAD_KINEMATICS)
    result = train_world_model(train, init.config, TrainConfig(epochs=epochs, seed=seed, lr=lr,
                                                                holdout_fraction=0.0), progress, init=init)
    model = result.model
    learned_in_sim = dict(getattr(init, "provenance", {})).get("vehicle", {})
    model.provenance = {**provenance(data), "method": f"full fine-tune, lr {lr:g}, {epochs} epochs",
                        "fine_tuned_from": learned_in_sim.get("summary", "a sim-pretrained model")}
    return FitResult(model, holdout, len(train) * data.spec.control_period_s / 60.0,
                     {**result.summary(), **model.provenance})


def export_quad_bundle(model: Any, out: Path, holdout: Any, training: dict[str, Any], planner: dict[str, Any]
                       ) -> tuple[Path, Any, int]:
    """World model + fused planner graph bundle at the horizon the held-out k-step error supports; (bundle, k-step
    curve, horizon). No distilled policy: the one from simulation describes another vehicle."""
    from dreamlink.bundle import load_bundle, update_manifest
    from dreamlink.calibration.horizon import recommend_task_horizon
    from dreamlink.calibration.kstep import kstep_curve
    from dreamlink.demo import QUAD_TASK_TOLERANCES, export_bundle
    from dreamlink.export.planner_graph import PlannerGraphConfig
    from dreamlink.export.planner_graph_pack import pack_planner_bundle
    from dreamlink.runtime.session import ModelSession

    wm_dir = out.with_name(out.name + "-wm")
    for d in (wm_dir, out):
        if d.exists():
            shutil.rmtree(d)
    wm, _ = export_bundle(model, QUAD, wm_dir, holdout=None, training=training, planner=planner)
    curve = kstep_curve(ModelSession(wm.path_of("world_model"), QUAD).predict, holdout.episodes(), QUAD,
                        QUAD_HORIZON_BOUNDS[1])
    horizon = recommend_task_horizon(curve, QUAD_TASK_TOLERANCES, *QUAD_HORIZON_BOUNDS)
    pack_planner_bundle(wm.root, out, PlannerGraphConfig(planner["samples"], horizon),
                        noise_sigma=planner["noise_sigma"], temperature=planner["temperature"])
    shutil.rmtree(wm_dir)
    kstep_real = {**curve.to_dict(), "task_tolerances": QUAD_TASK_TOLERANCES, "horizon": horizon}
    update_manifest(load_bundle(out), calibration={"kstep_real": kstep_real,
                                                   "planner": {**planner, "horizon": horizon}})
    return out, curve, horizon


def kstep_position_m(curve: Any, k: int) -> float:
    idx = [QUAD.state_index(n) for n in ("pos_n_m", "pos_e_m", "pos_d_m")]
    return float(np.sqrt(np.sum(curve.rmse[min(k, len(curve.k)) - 1, idx] ** 2)))


@dataclass(frozen=True)
class LearnConfig:
    connect: str
    autopilot: str
    init: Path  # the sim-pretrained checkpoint (`dreamlink demo quad` writes FLAVOUR-world-model.pt)
    out: Path
    rounds: int = 2
    collect_minutes: float = 3.0  # round 0's excitation flight (0: only the given logs)
    logs: tuple[Path, ...] = ()  # flight logs of this vehicle already at hand
    epochs: int = 40
    seed: int = 0
    laps: float = 1.5
    planner: dict[str, Any] = field(default_factory=dict)


def learn(cfg: LearnConfig, bar: Callable[[int, str, str], Any], say: Callable[[str], None] = print
          ) -> list[dict[str, Any]]:
    """The rounds of `dreamlink learn`; one row per round (data, k-step, tracking)."""
    from dreamlink.campaign.live import LiveCollectConfig, collect_live
    from dreamlink.demo import QUAD_PLANNER
    from dreamlink.learning.train import load_checkpoint, save_checkpoint
    from dreamlink.reports import load_ticks, plot_kstep_metres, quad_summary
    from dreamlink.runtime.onboard import MissionConfig, RunConfig, fly

    cfg.out.mkdir(parents=True, exist_ok=True)
    for stale in [*cfg.out.glob("round*-collect"), *cfg.out.glob("round*-flight")]:
        shutil.rmtree(stale)  # a flight folder holds one flight: logs of an earlier run would mix into the data
    sim = load_checkpoint(cfg.init)
    logs = list(cfg.logs)
    if cfg.collect_minutes > 0:
        where = cfg.out / "round0-collect"
        ticks = round(cfg.collect_minutes * 60 / QUAD.control_period_s)
        with bar(ticks, "collect (excitation)", "tick") as b:
            result = collect_live(LiveCollectConfig(cfg.connect, cfg.autopilot, where, cfg.collect_minutes,
                                                    seed=cfg.seed), QUAD, on_tick=lambda: b.update(1),
                                  on_wait=say, on_phase=lambda t: b.write(f"   {t}"))
        say(f"   collected {result.minutes:.2f} min ({len(result.transitions)} transitions) from "
            f"{result.vehicle.get('summary', cfg.autopilot)}")
        logs.append(where / "flight.tlog")
    if not logs:
        raise ValueError("dreamlink learn: no data: give --collect-minutes > 0 or flight logs with --data")
    planner = {**QUAD_PLANNER, **cfg.planner}
    _, holdout = split_holdout(transitions_from_logs(logs[-1:] if cfg.collect_minutes > 0 else logs[:1]))
    curves = {"sim-only": _curve(sim, holdout)}
    rows: list[dict[str, Any]] = []
    say(f"   sim-only model on the held-out real flight: position error "
        f"{kstep_position_m(curves['sim-only'], 45):.3f} m at 0.9 s")
    for r in range(1, cfg.rounds + 1):
        train = _without(transitions_from_logs(logs), holdout)
        minutes = len(train) * QUAD.control_period_s / 60
        with bar(cfg.epochs, f"round {r}: fine-tune on {minutes:.2f} min", "epoch") as b:
            fit = fine_tune(sim, train, cfg.epochs, cfg.seed, progress=lambda e, n, loss: b.update(1), holdout=holdout)
        save_checkpoint(fit.model, cfg.out / f"round{r}-world-model.pt")
        bundle, curve, horizon = export_quad_bundle(fit.model, cfg.out / f"round{r}-bundle", holdout,
                                                    fit.summary, planner)
        curves[f"round {r}"] = curve
        say(f"   round {r}: position error {kstep_position_m(curve, 45):.3f} m at 0.9 s on the held-out flight; "
            f"planning with H={horizon}")
        flight = cfg.out / f"round{r}-flight"
        run = RunConfig(bundle=bundle, connect=cfg.connect, out_dir=flight, seed=cfg.seed, autopilot=cfg.autopilot,
                        mission=MissionConfig(laps=cfg.laps), on_wait=say)
        fly(run)
        summary = json.loads((flight / "summary.json").read_text())
        q = quad_summary(load_ticks(flight / "ticks.npz"), summary["mission"])
        row = {"round": r, "data_minutes": round(len(train) * QUAD.control_period_s / 60, 2), "horizon": horizon,
               "kstep_pos_0.9s_m": round(kstep_position_m(curve, 45), 3),
               "tracking_rmse_m": round(q["tracking_rmse_m"], 3), "max_deviation_m": round(q["max_deviation_m"], 3),
               "fence_breaches": q["fence_breaches"], "landed_disarmed": q["landed_disarmed"],
               "stale_ticks": summary["stats"]["stale_ticks"], "bundle": str(bundle)}
        rows.append(row)
        say(f"   round {r}: tracking RMSE {row['tracking_rmse_m']:.3f} m (max {row['max_deviation_m']:.2f} m) with "
            f"{row['data_minutes']:.2f} min of real data")
        logs.append(flight / "flight.tlog")
    plot_kstep_metres(curves, cfg.out / "kstep_sim_vs_real.png",
                      f"{cfg.autopilot}: open-loop error on a held-out real flight")
    (cfg.out / "learn.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return rows


def _without(train: Any, holdout: Any) -> Any:
    """`train` less any row that is also in `holdout` (same state and action)."""
    if len(holdout) == 0:
        return train
    keys = {row.tobytes() for row in np.concatenate([holdout.state, holdout.action], axis=1)}
    mask = np.array([row.tobytes() not in keys for row in np.concatenate([train.state, train.action], axis=1)])
    return train.subset(mask)


def _curve(model: Any, holdout: Any) -> Any:
    import torch

    from dreamlink.calibration.kstep import kstep_curve

    def predict(s: np.ndarray, a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(s), torch.from_numpy(a)).numpy()

    return kstep_curve(predict, holdout.episodes(), QUAD, QUAD_HORIZON_BOUNDS[1])


def progress_bar(total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
