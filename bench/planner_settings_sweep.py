"""Planner settings against a vehicle file's own Gymnasium environment, in process: how the derived defaults
(`dreamlink/runtime/planner_defaults.py`) were chosen.

Steps the unmodified environment directly (no SITL, no network) with the bundle's world model planning each
step, from the vehicle file's start state, for several seeds; prints per seed and the success count. Success:
the pendulum within 0.2 rad of upright for the last 5 s; the mountain car at the flag (position >= 0.45).

    python bench/planner_settings_sweep.py BUNDLE --samples 256 --horizon 15 --noise 1.0 --temperature 0.252
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

from dreamlink.bundle import load_bundle
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner, shift_plan
from dreamlink.runtime.session import ModelSession
from dreamlink.runtime.tasks import default_task


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--noise", type=float, default=1.0, help="noise sigma as a share of each action's half range")
    p.add_argument("--temperature", type=float, default=0.252)
    p.add_argument("--smoothing", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args(argv)
    bundle = load_bundle(args.bundle)
    spec = bundle.spec
    if spec.sim is None:
        raise SystemExit(f"{args.bundle}: its vehicle has no [sim] Gymnasium environment")
    session = ModelSession(bundle.path_of("world_model"), spec)
    config = MppiConfig(samples=args.samples, horizon=args.horizon, noise_sigma=args.noise,
                        temperature=args.temperature, noise_smoothing=args.smoothing)
    print(f"{spec.name}: {config}")
    successes = 0
    for seed in range(args.seeds):
        env = gymnasium.make(spec.sim.gym_env).unwrapped
        obs, _ = env.reset(seed=seed)
        if spec.sim.start_state:
            env.state = np.array(spec.sim.start_state)
            obs = env._get_obs() if hasattr(env, "_get_obs") else env.state
        planner = MppiPlanner(session, spec, default_task(spec), config, np.random.default_rng(seed))
        warm, states, t0 = planner.initial_plan(), [], time.perf_counter()
        for _ in range(args.steps):
            plan = planner.plan(np.asarray(obs, np.float32), warm, 0.0)
            warm = shift_plan(plan.actions)
            obs, *_ = env.step(plan.actions[0])
            states.append(np.array(obs))
        x = np.array(states)
        ms = (time.perf_counter() - t0) / len(x) * 1e3
        if spec.name == "pendulum":
            angle = np.abs(np.arctan2(x[:, 1], x[:, 0]))
            last = round(5.0 / spec.control_period_s)
            ok = bool(angle[-last:].max() < 0.2)
            print(f"seed {seed}: last 5 s max {angle[-last:].max():.3f} rad, first within 0.2 rad after "
                  f"{np.argmax(angle < 0.2) * spec.control_period_s:.2f} s, {ms:.1f} ms/step")
        else:
            ok = bool(x[:, 0].max() >= 0.45)
            print(f"seed {seed}: max position {x[:, 0].max():.3f}, {ms:.1f} ms/step")
        successes += ok
    print(f"success {successes} / {args.seeds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
