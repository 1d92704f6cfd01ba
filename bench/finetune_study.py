"""How to adapt a sim-pretrained world model to a real autopilot's data, decided by held-out k-step error.

For each real SITL flight log (ArduCopter 4.8, PX4 1.16 SIH: ../shared/data/sitl-logs), the log's transitions are
cut into 5 s pieces; the last quarter of the flight is held out. Candidates, all 5 x 2 x 64 like the demo's:

- sim-only: the model trained in dreamlink's own SITL (`--sim DIR/FLAVOUR-world-model.pt`, from `dreamlink demo quad`)
- real-only: trained from scratch on the real training part
- mix: trained from scratch on the sim data and the real training part together
- fine-tune: the sim model trained further on the real training part (`train_world_model(init=...)`)

Printed: open-loop position and velocity RMSE at 0.3, 0.6 and 0.9 s (k = 15, 30, 45) on the held-out part, and
with `--minutes` also for shorter slices of real data. Not a test: a few minutes on 2 cores.

    python bench/finetune_study.py --sim runs/demo-quad [--minutes 0.5 1 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dreamlink.calibration.kstep import kstep_curve
from dreamlink.calibration.reference_logs import FLIGHT_LOGS, require_sitl_logs
from dreamlink.calibration.tlog_data import tlog_to_transitions
from dreamlink.learning.train import TrainConfig, load_checkpoint, train_world_model
from dreamlink.learning.transitions import TransitionSet
from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig
from dreamlink.spec import QUAD

KS = (15, 30, 45)
CHUNK = 250  # 5 s pieces


def errors(model: EnsembleWorldModel, holdout: TransitionSet) -> dict[str, float]:
    def predict(s: np.ndarray, a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(s), torch.from_numpy(a)).numpy()

    curve = kstep_curve(predict, holdout.episodes(), QUAD, max(KS))
    pos = [QUAD.state_index(n) for n in ("pos_n_m", "pos_e_m", "pos_d_m")]
    vel = [QUAD.state_index(n) for n in ("vel_n_mps", "vel_e_mps", "vel_d_mps")]
    out = {}
    for k in KS:
        out[f"pos@{k}"] = float(np.sqrt(np.sum(curve.rmse[k - 1, pos] ** 2)))
        out[f"vel@{k}"] = float(np.sqrt(np.sum(curve.rmse[k - 1, vel] ** 2)))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sim", type=Path, required=True,
                   help="folder with FLAVOUR-world-model.pt and FLAVOUR-transitions.npz")
    p.add_argument("--minutes", type=float, nargs="*", default=[], help="also train on only this much real data")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--out", type=Path, default=Path("runs/finetune-study"))
    args = p.parse_args()
    try:
        logs = require_sitl_logs(FLIGHT_LOGS.values(), Path(__file__))
    except FileNotFoundError as e:
        raise SystemExit(f"{Path(__file__).name}: {e}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for flavour, name in FLIGHT_LOGS.items():
        real = tlog_to_transitions(logs / name, QUAD, flavour).chunked(CHUNK)
        ids = np.unique(real.episode)
        n_hold = max(1, len(ids) // 4)
        hold = real.subset(np.isin(real.episode, ids[-n_hold:]))
        train_all = real.subset(~np.isin(real.episode, ids[-n_hold:]))
        sim_model = load_checkpoint(args.sim / f"{flavour}-world-model.pt")
        sim_data = TransitionSet.load(args.sim / f"{flavour}-transitions.npz")
        slices = [None, *args.minutes]
        for minutes in slices:
            train = train_all
            if minutes is not None:
                train = train_all.subset(np.arange(len(train_all)) < round(minutes * 60 / QUAD.control_period_s))
            real_min = len(train) * QUAD.control_period_s / 60
            cfg = WorldModelConfig(hidden=64, layers=2, ensemble_size=5, ignore_inputs=sim_model.config.ignore_inputs)
            tc = TrainConfig(epochs=args.epochs, seed=0)
            candidates: dict[str, EnsembleWorldModel] = {}
            if minutes is None:
                candidates["sim-only"] = sim_model
            t0 = time.perf_counter()
            candidates["real-only"] = train_world_model(train, cfg, tc).model
            candidates["mix"] = train_world_model(TransitionSet.concat([sim_data, train]), cfg, tc).model
            candidates["fine-tune"] = train_world_model(train, cfg, TrainConfig(epochs=args.epochs, seed=0, lr=3e-4),
                                                        init=sim_model).model
            candidates["fine-tune lr1e-3"] = train_world_model(train, cfg, tc, init=sim_model).model
            for method, model in candidates.items():
                e = errors(model, hold)
                rows.append({"autopilot": flavour, "real_minutes": round(real_min, 2), "method": method, **e})
                print(f"{flavour:9s} {real_min:5.2f} min {method:17s} " +
                      " ".join(f"{k} {v:.3f}" for k, v in e.items()), flush=True)
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    (args.out / "finetune_study.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| autopilot | real data (min) | method | " + " | ".join(f"{k}" for k in rows[0] if "@" in k) + " |",
             "| --- " * (3 + sum("@" in k for k in rows[0])) + "|"]
    for r in rows:
        lines.append(f"| {r['autopilot']} | {r['real_minutes']} | {r['method']} | " +
                     " | ".join(f"{v:.3f}" for k, v in r.items() if "@" in k) + " |")
    (args.out / "finetune_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
