"""`make byo-study`: bring your own robot, flown from a TOML vehicle file and the CLI alone, beside pytorch-mppi.

    .venv/bin/python bench/byo_robot_study.py [--out runs/byo-study] [--seeds 10] [--quick] [--skip-build]
                                              [--only pendulum|mountain_car|pytorch-mppi]

Two unmodified Gymnasium environments, each described only by a vehicle file (examples/*/NAME.toml):
  1. build, with the user's commands and nothing else (subprocesses, no Python for the vehicle):
     `dreamlink collect` (train and held-out data), `dreamlink train`, `dreamlink export`;
  2. per seed, a real-time `dreamlink sitl gym` process and `dreamlink run` over UDP/MAVLink, judged
     from the flight's ticks.npz:
       pendulum (400 ticks = 20 s, starts hanging): success = |angle| < 0.2 rad over the last 5 s;
       mountain car (500 ticks = 25 s): success = position reaches the flag (0.45).
  3. the peer: pytorch-mppi's own pendulum swing-up example (tests/pendulum.py of UM-ARM-Lab/pytorch_mppi
     at v0.9.1: true dynamics, K=100, H=15, sigma 10, lambda 1, float64), run in this process on
     Gymnasium's Pendulum-v1 from the same hanging start, 400 steps per seed, one torch thread, each
     `command()` timed; and its learned-dynamics example (tests/pendulum_approximate.py: a 2 x 32 tanh
     network, 100 random bootstrap steps, retrained on all data every 50 steps, K=1000, H=30, sigma 1).

Writes `<out>/results.md` and `<out>/results.json` and prints the markdown; one progress line per flight on
stderr. Flight folders and command logs stay in `<out>/<vehicle>/`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import machine  # noqa: E402

from dreamlink.sim.launcher import free_udp_port  # noqa: E402

PEER = "pytorch-mppi"
OUTSIDE = "outside"
UPRIGHT_RAD = 0.2  # the band around upright that counts as held
FLAG_M = 0.45  # MountainCarContinuous-v0's goal_position


@dataclass(frozen=True)
class Vehicle:
    name: str
    toml: Path
    transitions: int
    ticks: int  # at the file's 20 Hz
    goal: str  # what success means, for the table


VEHICLES = {
    "pendulum": Vehicle("pendulum", ROOT / "examples/pendulum/pendulum.toml", 20000, 400,
                        f"|angle| < {UPRIGHT_RAD} rad over the last 5 s"),
    "mountain_car": Vehicle("mountain_car", ROOT / "examples/mountain_car/mountain_car.toml", 30000, 500,
                            f"position >= {FLAG_M}"),
}


def say(msg: str) -> None:
    print(f"[byo-study {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dreamlink_cmd() -> list[str]:
    script = Path(sys.executable).parent / "dreamlink"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dreamlink.cli"]


def run_logged(argv: list[str], log_path: Path, timeout_s: float) -> None:
    """Run one CLI command, its stdout and stderr into `log_path`; a failure raises with the log's tail."""
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, cwd=ROOT)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"`{' '.join(argv)}` exited {proc.returncode}; log {log_path}:\n{tail}")
    say(f"  {' '.join(argv[1:3])} ... done in {time.perf_counter() - t0:.0f} s")


# ---------------------------------------------------------------------------------------------
# dreamlink: the user's commands
# ---------------------------------------------------------------------------------------------


def build(v: Vehicle, work: Path, transitions: int, epochs: int) -> dict[str, Any]:
    """collect (train + held-out), train, export: the README's pipeline for a vehicle file."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    dl, t0 = dreamlink_cmd(), time.perf_counter()
    toml = str(v.toml)
    say(f"{v.name}: building ({transitions} + {transitions // 5} transitions, {epochs} epochs)")
    run_logged([*dl, "collect", toml, "--out", str(work / "data.npz"), "--transitions", str(transitions),
                "--seed", "0"], logs / "collect.log", 3600)
    run_logged([*dl, "collect", toml, "--out", str(work / "hold.npz"), "--transitions", str(transitions // 5),
                "--seed", "1"], logs / "collect-hold.log", 3600)
    run_logged([*dl, "train", "--data", str(work / "data.npz"), "--out", str(work / "model.pt"),
                "--epochs", str(epochs)], logs / "train.log", 3600)
    if (work / "bundle").exists():
        shutil.rmtree(work / "bundle")
    run_logged([*dl, "export", "--checkpoint", str(work / "model.pt"), "--vehicle", toml,
                "--data", str(work / "hold.npz"), "--out", str(work / "bundle")], logs / "export.log", 1800)
    return {"transitions": transitions, "holdout_transitions": transitions // 5, "epochs": epochs,
            "build_s": time.perf_counter() - t0}


def build_outside(work: Path, toml: Path, quick: bool) -> dict[str, Path]:
    """A world model and a policy made outside dreamlink (examples/pendulum/outside_model.py: plain torch,
    torch.onnx.export with .onnx.data side files), bundled with `dreamlink bundle`, then the bundles copied to
    another folder and the originals (and the ONNX files) removed: the copies must stand alone."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    made = work / "made"
    dl = dreamlink_cmd()
    say("outside: a world model and a policy fitted with plain torch (examples/pendulum/outside_model.py)")
    run_logged([sys.executable, str(ROOT / "examples/pendulum/outside_model.py"), "--out", str(made),
                *(["--steps", "8000", "--epochs", "5"] if quick else [])], logs / "outside-model.log", 3600)
    out: dict[str, Path] = {}
    for role, argv in (("model", [str(made / "model.onnx")]), ("policy", ["--policy", str(made / "policy.onnx")])):
        built = work / f"built-{role}"
        if built.exists():
            shutil.rmtree(built)
        run_logged([*dl, "bundle", *argv, "--vehicle", str(toml), "--out", str(built)], logs / f"bundle-{role}.log",
                   600)
        copied = work / "copied" / role
        if copied.exists():
            shutil.rmtree(copied)
        shutil.copytree(built, copied)
        shutil.rmtree(built)
        out[role] = copied
    shutil.rmtree(made)
    return out


def bundle_planner(bundle: Path) -> dict[str, Any]:
    """The planner `dreamlink run` will use, as it reads it from the bundle."""
    from dreamlink.bundle import load_bundle
    from dreamlink.runtime.health import planner_config_for

    cfg = planner_config_for(load_bundle(bundle))
    return {"samples": cfg.samples, "horizon": cfg.horizon}


class SitlEndedEarly(RuntimeError):
    """The SITL process was gone before `dreamlink run` finished: not the planner's doing."""


def fly(v: Vehicle, bundle: Path, seed: int, flight_dir: Path) -> Path:
    """A real-time SITL process and `dreamlink run` over UDP; the SITL is always stopped after."""
    dl = dreamlink_cmd()
    port = free_udp_port()
    if flight_dir.exists():
        shutil.rmtree(flight_dir)
    flight_dir.parent.mkdir(parents=True, exist_ok=True)
    sitl_log = (flight_dir.parent / f"{flight_dir.name}-sitl.log").open("w")
    sitl = subprocess.Popen([*dl, "sitl", "gym", "--vehicle", str(v.toml), "--out", f"udp:127.0.0.1:{port}",
                             "--seed", str(seed)], stdout=sitl_log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        run_log = flight_dir.parent / f"{flight_dir.name}-run.log"
        with run_log.open("w") as log:
            proc = subprocess.run([*dl, "run", "--bundle", str(bundle), "--connect", f"udp:127.0.0.1:{port}",
                                   "--ticks", str(v.ticks), "--seed", str(seed), "--out", str(flight_dir)],
                                  stdout=log, stderr=subprocess.STDOUT, timeout=v.ticks * 0.05 + 120, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"dreamlink run exited {proc.returncode}; log {run_log}:\n{run_log.read_text()[-2000:]}")
        if sitl.poll() is not None:
            raise SitlEndedEarly(f"the SITL process ended before the flight did (exit {sitl.returncode}, "
                                 f"log {sitl_log.name})")
    finally:
        sitl.terminate()
        try:
            sitl.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sitl.kill()
            sitl.wait()
        sitl_log.close()
    return flight_dir / "ticks.npz"


def pendulum_angle(state: np.ndarray) -> np.ndarray:
    """Angle from upright [rad] from the vehicle file's state columns cos_theta (0) and sin_theta (1)."""
    return np.arctan2(state[:, 1], state[:, 0])


def judge(vehicle: str, state: np.ndarray, t_s: np.ndarray, latency_s: np.ndarray) -> dict[str, Any]:
    """Success, time to goal and planning time of one flight (or peer episode) at 20 Hz."""
    lat_ms = latency_s[np.isfinite(latency_s)] * 1e3
    out: dict[str, Any] = {"ticks": len(state), "plan_ms_p50": float(np.median(lat_ms)),
                           "plan_ms_p99": float(np.percentile(lat_ms, 99)), "plan_ms_max": float(lat_ms.max())}
    t = t_s - t_s[0]
    if vehicle == "mountain_car":
        pos = state[:, 0]
        reached = np.flatnonzero(pos >= FLAG_M)
        out.update(success=bool(len(reached)), max_position_m=float(pos.max()), start_position_m=float(pos[0]),
                   time_to_goal_s=float(t[reached[0]]) if len(reached) else None)
    else:
        angle = pendulum_angle(state)
        near = np.flatnonzero(np.abs(angle) < UPRIGHT_RAD)
        last = np.abs(angle[-100:])  # the last 5 s at 20 Hz
        out.update(success=bool(len(angle) >= 100 and last.max() < UPRIGHT_RAD),
                   start_angle_rad=float(angle[0]), max_abs_angle_last_5s_rad=float(last.max()),
                   time_to_goal_s=float(t[near[0]]) if len(near) else None)
    return out


def dreamlink_flights(v: Vehicle, bundle: Path, seeds: int, work: Path) -> list[dict[str, Any]]:
    rows = []
    for seed in range(seeds):
        retried = ""
        try:
            ticks = fly(v, bundle, seed, work / f"flight-{seed}")
        except SitlEndedEarly as exc:
            # Something outside the flight stopped the simulator: fly the seed again, once, and say so.
            retried = str(exc)
            say(f"{v.name} seed {seed}: {exc}; flying it again")
            ticks = fly(v, bundle, seed, work / f"flight-{seed}")
        with np.load(ticks) as z:
            r = judge(v.name, z["state"], z["t_s"], z["plan_latency_s"])
        summary = json.loads((ticks.parent / "summary.json").read_text()) if (ticks.parent / "summary.json").exists() \
            else {}
        stats = summary.get("stats", summary)
        r.update(seed=seed, flight=str(ticks.parent), retried=retried,
                 **{k: stats.get(k) for k in ("achieved_rate_hz", "overruns", "missed_deadlines", "stale_ticks",
                                              "fallbacks", "lateness_p99_ms") if k in stats})
        if stats.get("ticks"):
            r["shield_changed_share"] = stats.get("shield_changed_ticks", 0) / stats["ticks"]
        rows.append(r)
        ttg = f"{r['time_to_goal_s']:.1f} s" if r["time_to_goal_s"] is not None else "never"
        extra = (f"max |angle| last 5 s {r['max_abs_angle_last_5s_rad']:.3f} rad" if v.name == "pendulum"
                 else f"max position {r['max_position_m']:.3f}")
        say(f"{v.name} seed {seed}: {'success' if r['success'] else 'FAIL'}, goal at {ttg}, {extra}, "
            f"plan {r['plan_ms_p50']:.1f}/{r['plan_ms_p99']:.1f} ms p50/p99, stale ticks {r.get('stale_ticks', '?')}")
    return rows


# ---------------------------------------------------------------------------------------------
# The peer: pytorch-mppi's own pendulum examples (UM-ARM-Lab/pytorch_mppi tests/, v0.9.1)
# ---------------------------------------------------------------------------------------------

ACTION_LOW, ACTION_HIGH = -2.0, 2.0


def angle_normalize(x: Any) -> Any:
    return ((x + math.pi) % (2 * math.pi)) - math.pi


def running_cost(state: Any, action: Any) -> Any:
    theta = state[:, 0]
    theta_dt = state[:, 1]
    return angle_normalize(theta) ** 2 + 0.1 * theta_dt**2


def true_dynamics(state: Any, perturbed_action: Any) -> Any:
    """tests/pendulum.py's `dynamics`, verbatim (numpy ufuncs on tensors included): Gymnasium's equations."""
    import torch

    th = state[:, 0].view(-1, 1)
    thdot = state[:, 1].view(-1, 1)
    g, m, l, dt = 10, 1, 1, 0.05
    u = torch.clamp(perturbed_action, -2, 2)
    newthdot = thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l**2) * u) * dt
    newthdot = np.clip(newthdot, -8, 8)
    newth = th + newthdot * dt
    return torch.cat((newth, newthdot), dim=1)


def _pendulum_env(seed: int) -> Any:
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    env.reset(seed=seed)
    return env


def _hang(env: Any) -> None:
    # dreamlink's vehicle file starts the same way: [sim] start_state = [pi, 0] (the example uses [pi, 1]).
    env.unwrapped.state = np.array([np.pi, 0.0])


def _episode(ctrl: Any, env: Any, steps: int, retrain: Any = None, every: int = 50) -> dict[str, Any]:
    """run_mppi's loop from pytorch_mppi.mppi, with each `command` timed and the observed states kept.

    The unwrapped environment is stepped (as dreamlink's SITL board does), so Gymnasium's 200-step time limit
    does not end the 400-step episode."""
    import torch

    nx = 2
    dataset = torch.zeros((every, nx + 1), dtype=ctrl.U.dtype, device=ctrl.d)
    states, latency, retrain_s = [], [], []
    for i in range(steps):
        state = env.unwrapped.state.copy()
        t0 = time.perf_counter()
        action = ctrl.command(state)
        latency.append(time.perf_counter() - t0)
        env.unwrapped.step(action.cpu().numpy())
        states.append([math.cos(state[0]), math.sin(state[0]), state[1]])  # as the board streams it
        di = i % every
        if retrain is not None and di == 0 and i > 0:
            t1 = time.perf_counter()
            retrain(dataset)
            retrain_s.append(time.perf_counter() - t1)
            dataset.zero_()
        dataset[di, :nx] = torch.tensor(state, dtype=ctrl.U.dtype)
        dataset[di, nx:] = action
    period = env.unwrapped.dt
    return {"state": np.array(states), "t_s": np.arange(steps) * period, "latency_s": np.array(latency),
            "retrain_s": retrain_s}


def peer_true(seed: int, steps: int) -> dict[str, Any]:
    """tests/pendulum.py: MPPI on the true dynamics."""
    import torch
    from pytorch_mppi import mppi

    torch.manual_seed(seed)
    d, dtype = "cpu", torch.double
    ctrl = mppi.MPPI(true_dynamics, running_cost, 2, torch.tensor(10, device=d, dtype=dtype), num_samples=100,
                     horizon=15, lambda_=1.0, u_min=torch.tensor(ACTION_LOW, device=d),
                     u_max=torch.tensor(ACTION_HIGH, device=d), device=d)
    env = _pendulum_env(seed)
    _hang(env)
    return _episode(ctrl, env, steps)


def peer_approximate(seed: int, steps: int) -> dict[str, Any]:
    """tests/pendulum_approximate.py: MPPI on a network learned online (bootstrap, then retrain every 50 steps)."""
    import torch
    from pytorch_mppi import mppi

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    d, dtype = torch.device("cpu"), torch.double
    H_UNITS, TRAIN_EPOCH, BOOT_STRAP_ITER, nx, nu = 32, 150, 100, 2, 1
    network = torch.nn.Sequential(
        torch.nn.Linear(nx + nu, H_UNITS), torch.nn.Tanh(), torch.nn.Linear(H_UNITS, H_UNITS), torch.nn.Tanh(),
        torch.nn.Linear(H_UNITS, nx)).double().to(device=d)

    def dynamics(state: Any, perturbed_action: Any) -> Any:
        u = torch.clamp(perturbed_action, ACTION_LOW, ACTION_HIGH)
        if state.dim() == 1 or u.dim() == 1:
            state = state.view(1, -1)
            u = u.view(1, -1)
        if u.shape[1] > 1:
            u = u[:, 0].view(-1, 1)
        xu = torch.cat((state, u), dim=1)
        next_state = state + network(xu)
        next_state[:, 0] = angle_normalize(next_state[:, 0])
        return next_state

    def angular_diff_batch(a: Any, b: Any) -> Any:
        diff = a - b
        diff[diff > math.pi] -= 2 * math.pi
        diff[diff < -math.pi] += 2 * math.pi
        return diff

    data: list[Any] = []

    def train(new_data: Any) -> None:
        new_data[:, 0] = angle_normalize(new_data[:, 0])
        if not torch.is_tensor(new_data):
            new_data = torch.from_numpy(new_data)
        new_data[:, -1] = torch.clamp(new_data[:, -1], ACTION_LOW, ACTION_HIGH)
        data.append(new_data.to(device=d))
        XU = torch.cat(data, dim=0)
        dtheta = angular_diff_batch(XU[1:, 0], XU[:-1, 0])
        dtheta_dt = XU[1:, 1] - XU[:-1, 1]
        Y = torch.cat((dtheta.view(-1, 1), dtheta_dt.view(-1, 1)), dim=1)
        XU = XU[:-1]
        for param in network.parameters():
            param.requires_grad = True
        optimizer = torch.optim.Adam(network.parameters())
        for _ in range(TRAIN_EPOCH):
            optimizer.zero_grad()
            loss = (Y - network(XU)).norm(2, dim=1) ** 2
            loss.mean().backward()
            optimizer.step()
        for param in network.parameters():
            param.requires_grad = False

    env = _pendulum_env(seed)
    env.unwrapped.state = np.array([np.pi, 1.0])  # the example's bootstrap start
    boot = np.zeros((BOOT_STRAP_ITER, nx + nu))
    for i in range(BOOT_STRAP_ITER):
        pre_action_state = env.unwrapped.state
        action = np.random.uniform(low=ACTION_LOW, high=ACTION_HIGH)
        env.unwrapped.step(np.array([action]))
        boot[i, :nx] = pre_action_state
        boot[i, nx:] = action
    train(boot)
    env.reset(seed=seed)
    _hang(env)
    ctrl = mppi.MPPI(dynamics, running_cost, nx, torch.tensor(1, device=d, dtype=dtype), num_samples=1000,
                     horizon=30, lambda_=1.0, device=d, u_min=torch.tensor(ACTION_LOW, dtype=torch.double, device=d),
                     u_max=torch.tensor(ACTION_HIGH, dtype=torch.double, device=d))
    return _episode(ctrl, env, steps, retrain=train)


PEER_VARIANTS = {
    "true dynamics (tests/pendulum.py)": (peer_true, 100, 15),
    "learned online (tests/pendulum_approximate.py)": (peer_approximate, 1000, 30),
}


def peer_episodes(seeds: int, steps: int) -> dict[str, list[dict[str, Any]]]:
    import torch

    torch.set_num_threads(1)  # dreamlink's ONNX Runtime session runs one intra-op thread
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # numpy ufuncs on tensors, as the example does
    out: dict[str, list[dict[str, Any]]] = {}
    for label, (fn, _, _) in PEER_VARIANTS.items():
        rows = []
        for seed in range(seeds):
            ep = fn(seed, steps)
            r = judge("pendulum", ep["state"], ep["t_s"], ep["latency_s"])
            r.update(seed=seed, retrain_s_total=float(sum(ep["retrain_s"])))
            rows.append(r)
            ttg = f"{r['time_to_goal_s']:.1f} s" if r["time_to_goal_s"] is not None else "never"
            say(f"{PEER} {label.split(' (')[0]} seed {seed}: {'success' if r['success'] else 'FAIL'}, goal at {ttg}, "
                f"max |angle| last 5 s {r['max_abs_angle_last_5s_rad']:.3f} rad, "
                f"command {r['plan_ms_p50']:.1f}/{r['plan_ms_p99']:.1f} ms p50/p99")
        out[label] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    goals = [r["time_to_goal_s"] for r in rows if r["success"] and r["time_to_goal_s"] is not None]
    return {"seeds": len(rows), "successes": sum(r["success"] for r in rows),
            "time_to_goal_s_median": statistics.median(goals) if goals else None,
            "plan_ms_p50": statistics.median(r["plan_ms_p50"] for r in rows),
            "plan_ms_p99": max(r["plan_ms_p99"] for r in rows)}


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    v = m["versions"]
    rows = []
    for r in result["rows"]:
        a = r["aggregate"]
        ttg = f"{a['time_to_goal_s_median']:.1f} s" if a["time_to_goal_s_median"] is not None else "-"
        shield = f"; shield changed {100 * a['shield_changed_share']:.1f} % of ticks" \
            if "shield_changed_share" in a else ""
        rows.append(f"| {r['label']}{shield} | {a['seeds']} | {a['successes']} | {ttg} | "
                    f"{a['plan_ms_p50']:.2f} / {a['plan_ms_p99']:.2f} | {r['samples']} x {r['horizon']} |")
    parts = [
        "# Bring your own robot: Gymnasium vehicle files flown with the CLI, beside pytorch-mppi",
        "",
        f"Command: `{result['command']}` ({'quick' if result['quick'] else 'full'} run, {result['seconds']:.0f} s)",
        "",
        f"- Machine: {m['cpu']} ({m['arch']}), {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}",
        f"- Versions: python {v['python']}, numpy {v['numpy']}, onnxruntime {v['onnxruntime']}, torch {v['torch']} "
        f"({m['torch_blas']}, {m['torch_cpu_capability']}), pytorch-mppi {v['pytorch_mppi']}, gymnasium "
        f"{result['gymnasium']}, pymavlink {v['pymavlink']}, dreamlink {v['dreamlink']} ({m['git']})",
        f"- Threads: dreamlink's ONNX Runtime session intra-op {result['threads']['dreamlink_intra_op']}; "
        f"pytorch-mppi torch.get_num_threads() = {result['threads']['torch']}",
        f"- Load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in result['loadavg_end'])}; {m['date_utc']}",
        "",
        "| vehicle / planner | seeds | successes | median time to goal | plan ms p50 / p99 | samples x horizon |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Success: pendulum (starts hanging at rest, 400 ticks = 20 s): |angle| < 0.2 rad over the last 5 s; "
        "mountain car (500 ticks = 25 s): position reaches 0.45. Time to goal: first |angle| < 0.2 rad / "
        "first position >= 0.45, median over successful seeds. Plan ms: median over seeds of each run's per-tick "
        "median; p99 is the worst seed's p99.",
        "",
        "**Not the same job.** dreamlink plans with a world model it learned from `dreamlink collect` data, "
        "exported to ONNX, in its own process, over real MAVLink/UDP against a real-time SITL process; its plan "
        "time is the loop's per-tick planning latency. pytorch-mppi's example plans with the TRUE pendulum "
        "dynamics (the example's own), in-process with no network, in lockstep with the environment; its plan "
        "time is one `command()` call. Its learned-dynamics example "
        "(tests/pendulum_approximate.py) learns online while it flies (100 random bootstrap steps, then it "
        "retrains on all data every 50 steps, in the loop, not counted in plan time).",
    ]
    for r in result["rows"]:
        bad = [x for x in r["per_seed"] if not x["success"]]
        if bad:
            parts.append("")
            parts.append(f"Failed seeds of {r['label']}: " + "; ".join(
                f"seed {x['seed']}" + (f" (max |angle| last 5 s {x['max_abs_angle_last_5s_rad']:.2f} rad)"
                                       if "max_abs_angle_last_5s_rad" in x
                                       else f" (max position {x['max_position_m']:.3f})") for x in bad))
        again = [x for x in r["per_seed"] if x.get("retried")]
        if again:
            parts.append("")
            parts.append(f"Flown again after the SITL process ended mid-flight ({r['label']}): "
                         + "; ".join(f"seed {x['seed']} ({x['retried']})" for x in again))
    return "\n".join(parts) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/byo-study"), help="results folder")
    p.add_argument("--seeds", type=int, default=10, help="seeds per vehicle and planner (quick: 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, fewer transitions and epochs")
    p.add_argument("--skip-build", action="store_true", help="reuse the bundles already in --out")
    p.add_argument("--only", choices=[*VEHICLES, OUTSIDE, PEER],
                   help="one vehicle, the models made outside dreamlink, or only the peer")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds = min(a.seeds, 2)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    import gymnasium

    from dreamlink.runtime.session import SessionConfig

    result: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick,
                              "machine": machine.machine_info(), "gymnasium": gymnasium.__version__, "rows": [],
                              "threads": {"dreamlink_intra_op": SessionConfig().intra_op_threads}}
    for v in VEHICLES.values():
        if args.only not in (None, v.name):
            continue
        work = args.out / v.name
        bundle = work / "bundle"
        if args.skip_build and (bundle / "manifest.json").exists():
            build_info: dict[str, Any] = {"reused": str(bundle)}
        else:
            transitions = v.transitions // 4 if args.quick else v.transitions
            build_info = build(v, work, transitions, 10 if args.quick else 40)
        planner = bundle_planner(bundle)
        per_seed = dreamlink_flights(v, bundle, args.seeds, work)
        result["rows"].append({"label": f"{v.name}: dreamlink (learned ONNX model, MAVLink/UDP, real time)",
                               "vehicle": v.name, "goal": v.goal, "build": build_info, **planner,
                               "aggregate": aggregate(per_seed), "per_seed": per_seed})
    if args.only in (None, OUTSIDE):
        pendulum = VEHICLES["pendulum"]
        work = args.out / "outside"
        bundles = build_outside(work, pendulum.toml, args.quick)
        for role, label in (("model", "pendulum: a world model made outside (plain torch, `dreamlink bundle`)"),
                            ("policy", "pendulum: a policy made outside, flown alone (`dreamlink bundle --policy`)")):
            per_seed = dreamlink_flights(pendulum, bundles[role], args.seeds, work / role)
            planner = bundle_planner(bundles[role]) if role == "model" else {"samples": 1, "horizon": 1}
            agg = aggregate(per_seed)
            if role == "policy":
                agg["shield_changed_share"] = statistics.mean(r.get("shield_changed_share", 0.0) for r in per_seed)
            result["rows"].append({"label": label, "vehicle": "pendulum", "goal": pendulum.goal, **planner,
                                   "aggregate": agg, "per_seed": per_seed})
    if args.only in (None, PEER):
        import torch

        peers = peer_episodes(args.seeds, VEHICLES["pendulum"].ticks)
        for label, per_seed in peers.items():
            _, K, H = PEER_VARIANTS[label]
            result["rows"].append({"label": f"pendulum: pytorch-mppi, {label}", "vehicle": "pendulum",
                                   "samples": K, "horizon": H, "aggregate": aggregate(per_seed),
                                   "per_seed": per_seed})
        result["threads"]["torch"] = torch.get_num_threads()
    result["threads"].setdefault("torch", "-")
    result["loadavg_end"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - started
    text = render(result)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(text)
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
