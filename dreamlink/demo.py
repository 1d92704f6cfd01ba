"""`dreamlink demo` and the people-facing halves of the step-by-step commands.

Like `cli.py`, this module talks to a person (progress bars, tables, plots); the work itself
is done by the library packages it calls.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.spec import VehicleSpec

# Planner settings the demo records in the bundle; chosen so one tick fits well inside
# 20 ms on one core of a small x86 or a Pi 5 class CPU (measured by the demo's report).
HORIZON_MIN, HORIZON_MAX = 10, 30
KSTEP_MAX = 50
KSTEP_TOLERANCE = 0.05  # normalised RMSE (error / data std); see calibration.kstep


def _bar(total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def collect_with_progress(spec: VehicleSpec, transitions: int, seed: int, connect: str | None = None,
                          vehicle_file: str = "", episode_steps: int = 200) -> Any:
    """Transitions from a lockstep board SITL (started here unless `connect` names a running one): the cart-pole,
    or the Gymnasium environment of a vehicle file's [sim]."""
    from dreamlink.campaign.collect import CollectConfig, collect_board, collect_cartpole
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.profiles import make_profile
    from dreamlink.sim.launcher import SitlProcess

    def run(connect_string: str) -> Any:
        with Link(LinkConfig(connect=connect_string)) as link, _bar(transitions, "collect", "tr") as bar:
            profile = make_profile(spec, link)
            profile.connect(timeout_s=10.0)
            config = CollectConfig(transitions=transitions, seed=seed, max_episode_steps=episode_steps)
            if spec.name == "cartpole":
                return collect_cartpole(profile, spec, config, bar.update)
            return collect_board(profile, spec, config, (1.0 if spec.sim and spec.sim.explore_low else 0.0, 0.0),
                                 progress=bar.update)

    if connect:
        return run(connect)
    if spec.name == "cartpole":
        with SitlProcess(vehicle="cartpole", lockstep=True, seed=seed) as sitl:
            return run(sitl.connect_string)
    if spec.sim is None or not vehicle_file:
        raise ValueError(f"collect {spec.name}: its vehicle file has no [sim] table naming a Gymnasium environment; "
                         f"start your board or SITL and give --connect")
    with SitlProcess(vehicle="gym", lockstep=True, seed=seed, extra_args=("--vehicle", vehicle_file)) as sitl:
        return run(sitl.connect_string)


def train_with_progress(data: Any, hidden: int, layers: int, ensemble: int, epochs: int, seed: int,
                        activation: str = "", init: Any = None, lr: float = 0.0,
                        ignore_inputs: tuple[str, ...] = ()) -> Any:
    """Train (or, with `init`, fine-tune: lr 3e-4 unless given) with a progress bar."""
    from dreamlink.learning.train import TrainConfig, train_world_model
    from dreamlink.learning.transitions import TransitionSet
    from dreamlink.learning.world_model import WorldModelConfig

    if isinstance(data, list):
        data = TransitionSet.concat([TransitionSet.load(p) for p in data])
    with _bar(epochs, "train", "epoch") as bar:

        def progress(epoch: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")

        return train_world_model(
            data,
            WorldModelConfig(hidden=hidden, layers=layers, ensemble_size=ensemble,
                             activation=activation or WorldModelConfig.activation, ignore_inputs=ignore_inputs),
            TrainConfig(epochs=epochs, seed=seed, lr=lr or (3e-4 if init is not None else 1e-3)),
            progress,
            init=init,
        )


def load_user_module(ref: str, state_dict: str | None) -> Any:
    """`FILE.py:NAME` -> the nn.Module NAME (or NAME() if it is a factory), weights loaded if given."""
    import torch

    file, _, name = ref.partition(":")
    if not name or not Path(file).is_file():
        raise ValueError(f"--module {ref!r}: expected FILE.py:NAME with an existing FILE")
    spec = importlib.util.spec_from_file_location("dreamlink_user_model", file)
    if spec is None or spec.loader is None:
        raise ValueError(f"--module {ref!r}: cannot import {file}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    obj = getattr(mod, name, None)
    if obj is None:
        raise ValueError(f"--module {ref!r}: {file} has no attribute {name!r}")
    model = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--module {ref!r}: {name} is not an nn.Module nor returns one")
    if state_dict:
        model.load_state_dict(torch.load(state_dict, weights_only=True))
    return model.eval()


def export_bundle(
    model: Any,
    spec: VehicleSpec,
    out: Path,
    data_path: str | None = None,
    holdout: Any = None,
    horizon: int = 0,
    samples: int = 0,
    training: dict[str, Any] | None = None,
    planner: dict[str, Any] | None = None,
    tolerance: float = 0.0,
    task_tolerances: dict[str, float] | None = None,
) -> tuple[Any, Any]:
    """Export, parity-check and pack; with held-out data, measure the k-step curve and record the
    recommended horizon and the planner settings in the manifest. Returns (bundle, curve or None).

    `task_tolerances` (state name -> tolerance in its unit): the planner flies the horizon at which that
    decision-relevant error stays within them (`recommend_task_horizon`, bounded by QUAD_HORIZON_BOUNDS), not a
    fixed one; the normalised recommendation is still recorded beside it."""
    from dreamlink.bundle import update_manifest
    from dreamlink.calibration.kstep import kstep_curve, recommend_horizon
    from dreamlink.export.pack import pack_bundle
    from dreamlink.learning.transitions import TransitionSet
    from dreamlink.runtime.planner_defaults import DERIVED_HORIZON, DERIVED_SAMPLES, derived_planner
    from dreamlink.runtime.session import ModelSession
    from dreamlink.runtime.tasks import DEFAULT_TASKS, default_task

    bundle, parity = pack_bundle(out, spec, model, training=training or {})
    verdict = "PASS" if parity.ok else "FAIL"
    print(
        f"parity torch vs ONNX Runtime on {parity.n_samples} random inputs: max abs err {parity.max_abs_err:.2e} "
        f"(tolerance atol {parity.atol:g} + rtol {parity.rtol:g}) {verdict}"
    )
    if holdout is None and data_path:
        holdout = TransitionSet.load(data_path)
    curve = None
    calibration: dict[str, Any] = {}
    if holdout is not None:
        session = ModelSession(bundle.path_of("world_model"), spec)
        curve = kstep_curve(session.predict, holdout.episodes(), spec, KSTEP_MAX)
        tolerance = tolerance or KSTEP_TOLERANCE
        recommended = recommend_horizon(curve, tolerance)
        calibration["kstep"] = {**curve.to_dict(), "tolerance": tolerance, "recommended_horizon": recommended}
        if task_tolerances and not horizon:
            from dreamlink.calibration.horizon import recommend_task_horizon

            horizon = recommend_task_horizon(curve, task_tolerances, *QUAD_HORIZON_BOUNDS)
            idx = [spec.state_index(n) for n in task_tolerances]
            err = float(np.sqrt(np.sum(curve.rmse[horizon - 1, idx] ** 2)))
            calibration["kstep"]["task_horizon"] = {"tolerances": task_tolerances, "horizon": horizon,
                                                    "error_at_horizon": round(err, 4)}
            planner = {**(planner or {}), "horizon": horizon}
            print(f"k-step error: {', '.join(task_tolerances)} within {max(task_tolerances.values()):g} up to "
                  f"H={horizon} ({err:.3f} at H); planning with {horizon} (normalised recommendation {recommended})")
        else:
            horizon = (horizon or (planner or {}).get("horizon") or spec.planner_settings().get("horizon")
                       or int(np.clip(recommended, HORIZON_MIN, HORIZON_MAX)))
            print(
                f"k-step error: recommended horizon {recommended} (normalised RMSE < {tolerance}); "
                f"planning with {horizon}"
            )
    if not planner and spec.task is None and spec.name not in DEFAULT_TASKS:
        # no task yet (a vehicle file may add one later): the temperature derives from it at run time
        planner = {"samples": samples or DERIVED_SAMPLES, "horizon": horizon or DERIVED_HORIZON}
    elif not planner:  # the vehicle file's settings, the rest derived from it (runtime.planner_defaults)
        derived = derived_planner(spec, default_task(spec), horizon)
        planner = {"samples": samples or derived.samples, "horizon": derived.horizon,
                   "noise_sigma": derived.noise_sigma, "temperature": round(derived.temperature, 6),
                   "noise_smoothing": derived.noise_smoothing}
    calibration["planner"] = planner
    bundle = update_manifest(bundle, calibration=calibration)
    print(f"wrote bundle {bundle.root}")
    return bundle, curve


def print_flight_report(result: Any) -> None:
    s = result.stats
    rows = [
        ("ticks", f"{s.ticks}"),
        ("achieved rate", f"{s.achieved_rate_hz:.2f} Hz"),
        (
            "planner latency p50 / p99 / max",
            f"{s.plan_latency_p50_ms:.2f} / {s.plan_latency_p99_ms:.2f} / {s.plan_latency_max_ms:.2f} ms",
        ),
        (
            "loop lateness p50 / p99 / max",
            f"{s.lateness_p50_ms:.2f} / {s.lateness_p99_ms:.2f} / {s.lateness_max_ms:.2f} ms",
        ),
        ("deadline overruns (missed)", f"{s.overruns} ({s.missed_deadlines})"),
        ("fallbacks", json.dumps(s.fallbacks) if s.fallbacks else "0"),
        ("stale-state ticks", f"{s.stale_ticks}"),
        ("shield clipped / non-finite", f"{s.shield_clipped} / {s.shield_nonfinite}"),
        ("shield changed the action", f"{s.shield_changed_ticks} of {s.ticks} ticks "
                                      f"({100 * s.shield_changed_ticks / max(s.ticks, 1):.1f} %)"),
        ("non-finite samples left out", f"{s.nonfinite_samples_total} in {s.ticks_with_nonfinite} ticks"),
        ("start to first command", f"{result.start_to_first_command_s:.2f} s"),
        ("link rx bad frames", f"{result.link.get('rx_bad', '?')}"),
        ("flight log", f"{result.out_dir}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def demo_cartpole(out: Path, seed: int, transitions: int, ticks: int, epochs: int) -> int:
    from dreamlink.reports import cartpole_summary, load_ticks, plot_imagined_vs_actual, plot_kstep
    from dreamlink.runtime.onboard import SUMMARY_NAME
    from dreamlink.sim.launcher import SitlProcess
    from dreamlink.spec import CARTPOLE

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"== dreamlink demo cartpole (seed {seed}) -> {out}")
    print("1/5 collect: lockstep motor-board SITL over UDP, exploratory actions")
    data = collect_with_progress(CARTPOLE, transitions, seed)
    data.save(out / "transitions.npz")
    train_set, holdout = data.split_by_episode(0.1, seed)
    print(f"    {len(train_set)} training / {len(holdout)} held-out transitions")

    print("2/5 train: ensemble of MLPs predicting the state delta")
    result = train_with_progress(train_set, 64, 2, 5, epochs, seed)
    rmse = ", ".join(f"{k} {v:.2e}" for k, v in result.holdout_one_step_rmse.items())
    print(f"    {result.seconds:.1f} s; held-out one-step RMSE: {rmse}")

    print("3/5 export: ONNX, parity against torch, bundle")
    bundle_dir = out / "bundle"
    if bundle_dir.exists():
        import shutil

        shutil.rmtree(bundle_dir)
    training = {
        "holdout_one_step_rmse": result.holdout_one_step_rmse,
        "epochs": result.epochs,
        "seconds": result.seconds,
        "n_train": result.n_train,
        "seed": seed,
    }
    bundle, curve = export_bundle(result.model, CARTPOLE, bundle_dir, holdout=holdout, training=training)
    plot_kstep({"fp32": curve}, out / "kstep_error.png", KSTEP_TOLERANCE)

    print(f"4/5 fly: motor-board SITL (real time) + onboard runtime process, {ticks} ticks at 50 Hz over UDP")
    flight_dir = out / "flight"
    with SitlProcess(vehicle="cartpole", lockstep=False, seed=seed) as sitl:
        cmd = [
            sys.executable,
            "-m",
            "dreamlink.cli",
            "run",
            "--bundle",
            str(bundle.root),
            "--connect",
            sitl.connect_string,
            "--ticks",
            str(ticks),
            "--out",
            str(flight_dir),
            "--seed",
            str(seed),
        ]
        proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        print(f"runtime process failed with exit code {proc.returncode}", file=sys.stderr)
        return 1

    print("5/5 report")
    ticks_data = load_ticks(flight_dir / "ticks.npz")
    summary = cartpole_summary(ticks_data)
    flight = json.loads((flight_dir / SUMMARY_NAME).read_text())
    plot_imagined_vs_actual(ticks_data, out / "imagined_vs_actual.png")
    report = {
        "seed": seed,
        "cartpole": summary,
        "flight": flight,
        "kstep_recommended_horizon": bundle.manifest.calibration.get("kstep", {}).get("recommended_horizon"),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    ok = summary["longest_balanced_streak"] >= 500
    print(
        f"  ticks balanced            {summary['ticks_balanced']} / {summary['ticks']} "
        f"(longest streak {summary['longest_balanced_streak']}) {'PASS' if ok else 'FAIL'} (>= 500)"
    )
    print(f"  max |pole angle|, |cart|  {summary['max_abs_angle_deg']:.2f} deg, {summary['max_abs_cart_pos_m']:.2f} m")
    print(f"  plots                     {out / 'imagined_vs_actual.png'}, {out / 'kstep_error.png'}")
    print(f"  report                    {out / 'report.json'} ({report['wall_s']} s)")
    return 0 if ok else 1


# H=45 (0.9 s): the ArduPilot closed loop answers a velocity setpoint in about 0.5 s; measured on one
# lockstep seed, 0.45 m RMSE at H=30 against 0.42 m at H=45 (README, "Quadrotor").
QUAD_PLANNER = {"samples": 128, "horizon": 45, "noise_sigma": 0.3, "temperature": 3.0, "noise_smoothing": 0.9}
QUAD_IGNORE_INPUTS = ("pos_n_m", "pos_e_m", "pos_d_m", "yaw_rad")
# The quad's telemetry carries sensor noise (about 0.1 of a component's spread at k = 1), so its
# tolerance sits above that floor.
QUAD_KSTEP_TOLERANCE = 0.4
# What decides a multirotor's horizon: how far ahead its imagined position stays within the tracking goal (the
# figure-eight is judged at 0.3 m RMSE), between half a second (the closed loop's answer to a step) and 0.9 s.
QUAD_TASK_TOLERANCES = {"pos_n_m": 0.3, "pos_e_m": 0.3, "pos_d_m": 0.3}
QUAD_HORIZON_BOUNDS = (25, 45)


def collect_quad_flights(flavour: str, seeds: list[int], seconds: float) -> Any:
    """Lockstep SITL flights under domain randomisation, one per seed, excited with velocity setpoints."""
    from dreamlink.campaign.collect import QuadCollectConfig, collect_quad
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.profiles import make_profile
    from dreamlink.firmware_bridge.vehicle_id import read_vehicle_identity
    from dreamlink.learning.transitions import TransitionSet
    from dreamlink.sim.launcher import SitlProcess
    from dreamlink.spec import QUAD

    sets = []
    with _bar(len(seeds) * round(seconds / QUAD.control_period_s), f"collect {flavour}", "tr") as bar:
        for seed in seeds:
            with SitlProcess("quad", lockstep=True, seed=seed, extra_args=("--flavour", flavour)) as sitl, \
                    Link(LinkConfig(sitl.connect_string)) as link:
                profile = make_profile(QUAD, link, flavour, lockstep=True)
                profile.connect(timeout_s=30)
                vehicle = read_vehicle_identity(profile).to_dict()
                d = collect_quad(profile, QUAD, QuadCollectConfig(seconds=seconds, seed=seed), bar.update,
                                 meta={"flavour": flavour, "vehicle": {**vehicle, "source": "dreamlink quad SITL"}})
            sets.append(TransitionSet(d.spec, d.state, d.action, d.next_state, np.full(len(d), seed), d.meta))
    return TransitionSet.concat(sets)
