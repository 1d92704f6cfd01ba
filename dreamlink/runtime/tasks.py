"""Tasks as cost terms over imagined trajectories, with parameters the runtime may change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamlink.spec import CARTPOLE_BALANCED_ANGLE_RAD, CARTPOLE_BALANCED_POS_M, VehicleSpec


@dataclass(frozen=True)
class QuadraticTask:
    """Quadratic tracking of a target state, a quadratic action cost, and soft walls.

    `walls` are (state index, |limit|) pairs; every imagined step past a wall costs
    `wall_penalty`, which is how "the pole must stay up" enters a smooth planner.
    """

    name: str
    target: tuple[float, ...]  # [S] raw units
    state_weight: tuple[float, ...]  # [S] per unit^2
    action_weight: tuple[float, ...]  # [A] per unit^2
    terminal_weight: float = 1.0
    walls: tuple[tuple[int, float], ...] = ()
    wall_penalty: float = 1000.0

    def check(self, spec: VehicleSpec) -> None:
        if len(self.target) != spec.state_dim or len(self.state_weight) != spec.state_dim:
            raise ValueError(
                f"task {self.name}: target/state_weight need {spec.state_dim} entries ({spec.state_names})"
            )
        if len(self.action_weight) != spec.action_dim:
            raise ValueError(f"task {self.name}: action_weight needs {spec.action_dim} entries ({spec.action_names})")


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
    if spec.name not in DEFAULT_TASKS:
        raise KeyError(f"no default task for vehicle {spec.name!r}; known: {sorted(DEFAULT_TASKS)}")
    task = DEFAULT_TASKS[spec.name](spec)
    task.check(spec)
    return task
