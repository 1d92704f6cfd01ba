"""`dreamlink demo quad`: per autopilot flavour, collect, train, export with the fused planner graph, distil a
policy from the planner, then fly the figure-eight by planning and by the autopilot's own position control.

Two ways to fly the comparison: in real time with wind (the demo), or over many randomised seeds in
lockstep (`--lockstep-seeds N`, `make quad-seeds`: every flight must land; an RMSE table per seed).
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamlink.demo import (
    QUAD_IGNORE_INPUTS,
    QUAD_KSTEP_TOLERANCE,
    QUAD_PLANNER,
    QUAD_TASK_TOLERANCES,
    _bar,
    collect_quad_flights,
    export_bundle,
)

FLAVOURS = ("ardupilot", "px4")
DISTIL_FLIGHTS = 4  # lockstep planner flights whose actions the policy learns


@dataclass(frozen=True)
class QuadDemoConfig:
    seed: int = 0
    flights: int = 6  # randomised data-collection flights per flavour
    seconds: float = 60.0  # excitation per collection flight
    epochs: int = 40
    laps: float = 2.0
    wind_mps: float = 2.0
    lockstep_seeds: int = 0  # > 0: fly this many randomised lockstep seeds instead of the real-time pair
    reuse: bool = False  # keep the bundles (and the collected data) already in the output folder
    # The world model: the demo's is 5 x 2 x 64; make calibrate-quad builds 5 x 2 x 256 the same way.
    hidden: int = 64
    layers: int = 2
    ensemble: int = 5
    activation: str = ""  # "": dreamlink's default (WorldModelConfig.activation)
    autopilots: tuple[str, ...] = FLAVOURS  # which autopilot flavours to build and fly
    workers: int = 1  # lockstep planner flights flown side by side for the distillation (results do not change)

    @property
    def tag(self) -> str:
        """Folder-name suffix for a world model that is not the demo's."""
        shape = (self.hidden, self.layers, self.ensemble)
        tag = "" if shape == (64, 2, 5) else f"-h{self.hidden}" + (f"x{self.layers}" if self.layers != 2 else "") + (
            f"-e{self.ensemble}" if self.ensemble != 5 else "")
        return tag + (f"-{self.activation}" if self.activation else "")


def transitions_path(out: Path, flavour: str) -> Path:
    return out / f"{flavour}-transitions.npz"


def checkpoint_path(out: Path, flavour: str, cfg: QuadDemoConfig) -> Path:
    """The sim-pretrained world model's torch checkpoint (what a real vehicle's data fine-tunes)."""
    return out / f"{flavour}{cfg.tag}-world-model.pt"


def build_quad_bundle(out: Path, flavour: str, cfg: QuadDemoConfig) -> Path:
    """Collect, train, export (world model + fused planner graph), distil the policy; the bundle folder."""
    from dreamlink.bundle import load_bundle
    from dreamlink.campaign.distill import distill_into_bundle, fly_planner_lockstep
    from dreamlink.export.planner_graph import PlannerGraphConfig
    from dreamlink.export.planner_graph_pack import pack_planner_bundle
    from dreamlink.learning.policy import PolicyConfig
    from dreamlink.learning.train import TrainConfig, save_checkpoint, train_world_model
    from dreamlink.learning.transitions import TransitionSet, provenance
    from dreamlink.learning.world_model import WorldModelConfig
    from dreamlink.reports import plot_kstep
    from dreamlink.spec import QUAD

    bundle_dir = out / f"{flavour}{cfg.tag}-bundle"
    data_path = transitions_path(out, flavour)
    if cfg.reuse and (bundle_dir / "manifest.json").exists():
        print(f"== {flavour}: reusing {bundle_dir}")
        return bundle_dir
    if cfg.reuse and data_path.exists():
        print(f"== {flavour}: reusing {data_path}")
        data = TransitionSet.load(data_path)
    else:
        print(f"== {flavour}: collect {cfg.flights} randomised lockstep flights of {cfg.seconds:.0f} s")
        data = collect_quad_flights(flavour, [cfg.seed * 100 + i for i in range(cfg.flights)], cfg.seconds)
        data.save(data_path)
    train_set, holdout = data.split_by_episode(1 / cfg.flights, cfg.seed)
    shape = f"{cfg.ensemble}x{cfg.layers}x{cfg.hidden}" + (f" {cfg.activation}" if cfg.activation else "")
    with _bar(cfg.epochs, f"train {flavour} {shape}", "epoch") as bar:
        result = train_world_model(
            train_set,
            WorldModelConfig(hidden=cfg.hidden, layers=cfg.layers, ensemble_size=cfg.ensemble,
                             ignore_inputs=QUAD_IGNORE_INPUTS,
                             activation=cfg.activation or WorldModelConfig.activation),
            TrainConfig(epochs=cfg.epochs, seed=cfg.seed),
            lambda e, n, loss: bar.update(1),
        )
    wm_dir = out / f"{flavour}{cfg.tag}-world-model"
    result.model.provenance = provenance(train_set)
    # The torch weights stay beside the bundle: `dreamlink learn --init` fine-tunes them on the real vehicle.
    save_checkpoint(result.model, checkpoint_path(out, flavour, cfg))
    for d in (wm_dir, bundle_dir):
        if d.exists():
            shutil.rmtree(d)
    wm, curve = export_bundle(result.model, QUAD, wm_dir, holdout=holdout,
                              training={**result.summary(), **result.model.provenance},
                              planner=QUAD_PLANNER, tolerance=QUAD_KSTEP_TOLERANCE,
                              task_tolerances=QUAD_TASK_TOLERANCES)
    horizon = int(load_bundle(wm.root).manifest.calibration["planner"]["horizon"])
    plot_kstep({f"{flavour} fp32": curve}, out / f"{flavour}{cfg.tag}-kstep_error.png", QUAD_KSTEP_TOLERANCE)
    # One graph run a tick (the fused planner graph), with the demo's sampling settings.
    pack_planner_bundle(wm.root, bundle_dir, PlannerGraphConfig(QUAD_PLANNER["samples"], horizon),
                        noise_sigma=QUAD_PLANNER["noise_sigma"], temperature=QUAD_PLANNER["temperature"])
    shutil.rmtree(wm_dir)
    seeds = [cfg.seed * 100 + 50 + i for i in range(DISTIL_FLIGHTS)]
    with _bar(len(seeds), f"planner flights to distil ({flavour})", "flight") as bar, \
            ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        def fly(i: int) -> Path:
            folder = fly_planner_lockstep(bundle_dir, flavour, seeds[i], out / f"{flavour}{cfg.tag}-distil-{i}")
            bar.update(1)
            return folder

        flights = list(pool.map(fly, range(len(seeds))))
    policy_cfg = PolicyConfig(lookahead_steps=10, epochs=60, seed=cfg.seed)
    with _bar(policy_cfg.epochs, f"distil {flavour}", "epoch") as bar:
        _, distilled = distill_into_bundle(bundle_dir, flights, policy_cfg, lambda e, n, loss: bar.update(1))
    rmse = ", ".join(f"{k} {v:.2f}" for k, v in distilled.holdout_rmse.items())
    base = ", ".join(f"{v:.2f}" for v in distilled.holdout_baseline_rmse.values())
    print(f"   policy holdout RMSE {rmse} m/s (mean-action baseline {base})")
    return bundle_dir


def fly_figure8(bundle: Path, flavour: str, out: Path, sitl_seed: int, laps: float, wind_mps: float | None,
                lockstep: bool, baseline: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """One figure-eight flight of `dreamlink run` in its own process against a new SITL; (summary, tracking)."""
    from dreamlink.campaign.quad_run import fly_quad_process
    from dreamlink.reports import load_ticks, plot_quad_path, quad_summary

    wind = ("--wind-mps", str(wind_mps)) if wind_mps is not None else ()
    summary = fly_quad_process(bundle, flavour, sitl_seed, out, laps=laps, lockstep=lockstep, sitl_args=wind,
                               run_args=("--baseline",) if baseline else (), timeout_s=None)
    ticks = load_ticks(out / "ticks.npz")
    tracking = quad_summary(ticks, summary["mission"])
    plot_quad_path(ticks, summary["mission"], out / "path3d.png",
                   title=f"{flavour} {'baseline' if baseline else 'planner'}: tracking RMSE "
                         f"{tracking['tracking_rmse_m']:.2f} m")
    return summary, tracking


def demo_quad(out: Path, cfg: QuadDemoConfig) -> int:
    """Both flavours: build the bundle, then the real-time pair (or the lockstep seed sweep); print the table."""
    out.mkdir(parents=True, exist_ok=True)
    bundles = {flavour: build_quad_bundle(out, flavour, cfg) for flavour in cfg.autopilots}
    if cfg.lockstep_seeds > 0:
        return _lockstep_seeds(out, bundles, cfg)
    rows = []
    for flavour, bundle in bundles.items():
        for mode in ("planner", "baseline"):
            print(f"   fly {flavour} {mode}: real time, wind {cfg.wind_mps:g} m/s, {cfg.laps:g} laps")
            summary, q = fly_figure8(bundle, flavour, out / f"{flavour}-{mode}", cfg.seed + 7, cfg.laps,
                                     cfg.wind_mps, lockstep=False, baseline=mode == "baseline")
            rows.append((flavour, mode, q, summary["stats"]))
    print("\n| autopilot | control | tracking RMSE | max deviation | fence breaches | landed+disarmed | p50/p99 plan "
          "| overruns | fallbacks |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for flavour, mode, q, st in rows:
        print(f"| {flavour} | {mode} | {q['tracking_rmse_m']:.2f} m | {q['max_deviation_m']:.2f} m | "
              f"{q['fence_breaches']} | {q['landed_disarmed']} | {st['plan_latency_p50_ms']:.1f}/"
              f"{st['plan_latency_p99_ms']:.1f} ms | {st['overruns']} | {sum(st['fallbacks'].values())} |")
    report = [{"autopilot": f, "control": m, **q, "stats": st} for f, m, q, st in rows]
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"plots: {', '.join(str(out / f'{f}-{m}' / 'path3d.png') for f, m, _, _ in rows)}")
    ok = all(q["landed_disarmed"] and q["fence_breaches"] == 0 for _, _, q, _ in rows)
    return 0 if ok else 1


def _lockstep_seeds(out: Path, bundles: dict[str, Path], cfg: QuadDemoConfig) -> int:
    """Every flavour x seed by planning in lockstep, randomised SITL (airframe, wind, noise, latency drawn from
    the seed); the RMSE table. (The baseline's figures are the real-time demo's.)"""
    seeds = [1000 + i for i in range(cfg.lockstep_seeds)]
    rows: list[dict[str, Any]] = []
    with _bar(len(seeds) * len(bundles), "lockstep flights", "flight") as bar:
        for flavour, bundle in bundles.items():
            for seed in seeds:
                for mode in ("planner",):
                    where = out / f"seeds{cfg.tag}" / f"{flavour}-{mode}-{seed}"
                    try:
                        summary, q = fly_figure8(bundle, flavour, where, seed, cfg.laps, None, lockstep=True,
                                                 baseline=mode == "baseline")
                        st = summary["stats"]
                        rows.append({"autopilot": flavour, "control": mode, "seed": seed, **q,
                                     "fallbacks": sum(st["fallbacks"].values()), "error": ""})
                    except Exception as e:  # a broken flight is a row, not the end of the sweep
                        rows.append({"autopilot": flavour, "control": mode, "seed": seed, "tracking_rmse_m": None,
                                     "landed_disarmed": False, "fence_breaches": None, "error": str(e)[:300]})
                    bar.update(1)
    lines = ["| autopilot | control | seed | tracking RMSE (m) | max deviation (m) | landed+disarmed | fence breaches"
             " | fallbacks | error |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        rmse = f"{r['tracking_rmse_m']:.3f}" if r["tracking_rmse_m"] is not None else "-"
        dev = f"{r['max_deviation_m']:.2f}" if r.get("max_deviation_m") is not None else "-"
        lines.append(f"| {r['autopilot']} | {r['control']} | {r['seed']} | {rmse} | {dev} | {r['landed_disarmed']} | "
                     f"{r['fence_breaches']} | {r.get('fallbacks', '-')} | {r['error']} |")
    summary_lines = ["", "| autopilot | control | flights | landed | median RMSE (m) | worst RMSE (m) |",
                     "| --- | --- | --- | --- | --- | --- |"]
    for flavour in bundles:
        for mode in ("planner",):
            sel = [r for r in rows if r["autopilot"] == flavour and r["control"] == mode]
            rmses = sorted(r["tracking_rmse_m"] for r in sel if r["tracking_rmse_m"] is not None)
            med = f"{rmses[len(rmses) // 2]:.3f}" if rmses else "-"
            worst = f"{rmses[-1]:.3f}" if rmses else "-"
            landed = sum(bool(r["landed_disarmed"]) for r in sel)
            summary_lines.append(f"| {flavour} | {mode} | {len(sel)} | {landed} | {med} | {worst} |")
    text = "\n".join(lines + summary_lines) + "\n"
    (out / f"seeds{cfg.tag}.md").write_text(text)
    (out / f"seeds{cfg.tag}.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(text)
    print(f"table: {out / f'seeds{cfg.tag}.md'}")
    tables = {p.stem[len("seeds"):].lstrip("-") or "default": json.loads(p.read_text())
              for p in sorted(out.glob("seeds*.json"), key=lambda p: p.stat().st_mtime)}  # first flown: reference
    if len(tables) > 1:
        paired = paired_seed_table(tables)
        (out / "seeds-paired.md").write_text(paired)
        print(paired)
        print(f"paired table: {out / 'seeds-paired.md'}")
    return 0 if all(r["landed_disarmed"] for r in rows) else 1


def paired_seed_table(tables: dict[str, list[dict[str, Any]]]) -> str:
    """Lockstep seed sweeps of several world models (same seeds, same data) side by side, per autopilot.

    The first table is the reference (the sweep flown first): each other model's mean RMSE over the seeds
    both landed, its ratio to the reference's, and on how many seeds it tracked better.
    """
    names = list(tables)
    ref_name = names[0]
    lines = [f"| autopilot | world model | flights | landed | mean RMSE (m) | median RMSE (m) | worst (m) "
             f"| mean / {ref_name} | seeds better than {ref_name} |", "| --- " * 9 + "|"]
    flavours = sorted({r["autopilot"] for rows in tables.values() for r in rows})
    for flavour in flavours:
        ref = {r["seed"]: r["tracking_rmse_m"] for r in tables[ref_name] if r["autopilot"] == flavour}
        for name in names:
            sel = [r for r in tables[name] if r["autopilot"] == flavour]
            rmse = {r["seed"]: r["tracking_rmse_m"] for r in sel}
            flown = sorted(v for v in rmse.values() if v is not None)
            if not flown:
                lines.append(f"| {flavour} | {name} | {len(sel)} | 0 | - | - | - | - | - |")
                continue
            both = [s for s in rmse if rmse[s] is not None and ref.get(s) is not None]
            ratio = (sum(rmse[s] for s in both) / sum(ref[s] for s in both)) if both else float("nan")
            better = sum(rmse[s] < ref[s] for s in both)
            landed = sum(bool(r["landed_disarmed"]) for r in sel)
            lines.append(f"| {flavour} | {name} | {len(sel)} | {landed} | {sum(flown) / len(flown):.3f} | "
                         f"{flown[len(flown) // 2]:.3f} | {flown[-1]:.3f} | {ratio:.2f} | "
                         f"{better if name != ref_name else '-'}/{len(both)} |")
    return "\n".join(lines) + "\n"
