"""Tasks as cost terms over imagined trajectories, with parameters the runtime may change."""

from __future__ import annotations

import numpy as np

from dreamlink.spec import (
    CARTPOLE_BALANCED_ANGLE_RAD,
    CARTPOLE_BALANCED_POS_M,
    QuadraticTask,
    SpecError,
    VehicleSpec,
)

__all__ = ["QuadraticTask", "default_task", "trajectory_cost"]


def trajectory_cost(
    task: QuadraticTask, traj: np.ndarray, actions: np.ndarray, reference: np.ndarray | None = None
) -> np.ndarray:
    """Cost of K imagined trajectories. traj [K,H+1,S] (index 0 = current state), actions [K,H,A] -> [K].

    `reference` [H,S], when given, replaces the task's fixed target step by step (tracking)."""
    target = np.asarray(task.target, dtype=np.float32) if reference is None else reference
    err = traj[:, 1:, :] - target
    per_step = (err * err) @ np.asarray(task.state_weight, dtype=np.float32)  # [K,H]
    per_step[:, -1] *= task.terminal_weight
    cost = per_step.sum(axis=1)
    cost += ((actions * actions) @ np.asarray(task.action_weight, dtype=np.float32)).sum(axis=1)
    for index, limit in task.walls:
        cost += task.wall_penalty * (np.abs(traj[:, 1:, index]) > limit).sum(axis=1)
    return cost


def cartpole_balance(spec: VehicleSpec) -> QuadraticTask:
    """Keep the pole up and the cart near the middle of the track."""
    pos, angle = spec.state_index("cart_pos_m"), spec.state_index("pole_angle_rad")
    return QuadraticTask(
        name="balance",
        target=(0.0, 0.0, 0.0, 0.0),
        state_weight=(2.0, 1.0, 20.0, 0.5),
        action_weight=(1e-3,),
        terminal_weight=5.0,
        walls=((angle, CARTPOLE_BALANCED_ANGLE_RAD), (pos, CARTPOLE_BALANCED_POS_M * 0.9)),
        wall_penalty=200.0,
    )


def quad_tracking(spec: VehicleSpec) -> QuadraticTask:
    """Follow a position/velocity reference (given per tick); keep attitude and rates calm."""
    weights = {"pos_n_m": 4.0, "pos_e_m": 4.0, "pos_d_m": 6.0, "vel_n_mps": 0.5, "vel_e_mps": 0.5, "vel_d_mps": 0.5,
               "roll_rad": 0.1, "pitch_rad": 0.1, "yaw_rad": 0.0, "roll_rate_radps": 0.01, "pitch_rate_radps": 0.01,
               "yaw_rate_radps": 0.01}
    return QuadraticTask(
        name="track",
        target=tuple(0.0 for _ in spec.state),
        state_weight=tuple(weights[n] for n in spec.state_names),
        action_weight=(0.02, 0.02, 0.05),
        terminal_weight=2.0,
    )


DEFAULT_TASKS = {"cartpole": cartpole_balance, "quad": quad_tracking}


def default_task(spec: VehicleSpec) -> QuadraticTask:
    """The vehicle file's [task]; for a spec without one (bundles written before vehicle files carried
    tasks) the built-in task of that vehicle name."""
    if spec.task is not None:
        task = spec.task
    elif spec.name in DEFAULT_TASKS:
        task = DEFAULT_TASKS[spec.name](spec)
    else:
        raise SpecError(f"vehicle {spec.name!r} has no [task] in its vehicle file; add one (targets, weights, "
                       f"walls), or use a shipped vehicle ({', '.join(sorted(DEFAULT_TASKS))})")
    task.check(spec)
    return task
