"""The planner, the shield and the session on models of known dynamics (no torch, no SITL)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import POINT, double_integrator, linear_world_model

from dreamlink.runtime.mppi import MppiConfig, MppiPlanner, mppi_weights, shift_plan
from dreamlink.runtime.session import ModelSession
from dreamlink.runtime.shield import ShieldLimits, shield
from dreamlink.runtime.tasks import QuadraticTask, trajectory_cost

GO_TO_ZERO = QuadraticTask(
    name="go_to_zero", target=(0.0, 0.0), state_weight=(10.0, 1.0), action_weight=(0.01,), terminal_weight=5.0
)


def test_shift_plan_drops_the_executed_step_and_repeats_the_last():
    plan = np.arange(6, dtype=np.float32).reshape(3, 2)
    shifted = shift_plan(plan)
    np.testing.assert_array_equal(shifted, [[2, 3], [4, 5], [4, 5]])
    np.testing.assert_array_equal(plan, np.arange(6).reshape(3, 2))  # input untouched


def test_mppi_weights_favour_low_cost_and_sum_to_one():
    w = mppi_weights(np.array([3.0, 1.0, 2.0, 1000.0]), temperature=1.0)
    assert w.sum() == pytest.approx(1.0)
    assert np.argmax(w) == 1 and w[3] < 1e-100


def test_walls_cost_every_step_outside():
    task = QuadraticTask("t", (0.0, 0.0), (0.0, 0.0), (0.0,), walls=((0, 1.0),), wall_penalty=100.0)
    traj = np.zeros((2, 4, 2), np.float32)
    traj[1, 1:, 0] = [0.5, 1.5, 2.0]  # two steps past the wall
    cost = trajectory_cost(task, traj, np.zeros((2, 3, 1), np.float32))
    np.testing.assert_allclose(cost, [0.0, 200.0])


def test_shield_clips_and_replaces_non_finite():
    limits = ShieldLimits.from_spec(POINT)
    r = shield(np.array([5.0], np.float32), limits)
    assert r.clipped and not r.nonfinite and r.action[0] == pytest.approx(2.0)
    r = shield(np.array([np.nan], np.float32), limits)
    assert r.nonfinite and r.action[0] == 0.0
    r = shield(np.array([1.0, 1.0], np.float32), limits)  # wrong shape: never sent as is
    assert r.nonfinite and r.action.shape == (1,)


def test_session_presents_a_single_model_as_one_member_ensemble(tmp_path):
    F, G = double_integrator()
    session = ModelSession(linear_world_model(tmp_path / "m.onnx", F, G), POINT)
    out = session.predict(np.array([[1.0, 2.0]], np.float32), np.array([[0.5]], np.float32))
    assert out.shape == (1, 1, 2)
    np.testing.assert_allclose(out[0, 0], F @ [1.0, 2.0] + G @ [0.5], rtol=1e-6)


def test_mppi_closed_loop_brings_a_point_mass_home(tmp_path):
    F, G = double_integrator()
    session = ModelSession(linear_world_model(tmp_path / "m.onnx", F, G, ensemble=3, spread=0.0), POINT)
    planner = MppiPlanner(session, POINT, GO_TO_ZERO, MppiConfig(samples=128, horizon=25), np.random.default_rng(0))
    x = np.array([1.0, 0.0], np.float32)
    warm = planner.initial_plan()
    for k in range(250):
        plan = planner.plan(x, warm, k * 0.02)
        assert plan.actions.shape == (25, 1) and plan.imagined.shape == (26, 2)
        assert np.all(plan.actions >= -2.0) and np.all(plan.actions <= 2.0)
        x = (F @ x + G @ plan.actions[0]).astype(np.float32)
        warm = shift_plan(plan.actions)
    assert abs(x[0]) < 0.05 and abs(x[1]) < 0.1, x


def test_mppi_reports_ensemble_disagreement(tmp_path):
    F, G = double_integrator()
    agree = ModelSession(linear_world_model(tmp_path / "a.onnx", F, G, ensemble=3, spread=0.0), POINT)
    disagree = ModelSession(linear_world_model(tmp_path / "d.onnx", F, G, ensemble=3, spread=0.5), POINT)
    x = np.array([1.0, 0.0], np.float32)
    plans = []
    for session in (agree, disagree):
        planner = MppiPlanner(session, POINT, GO_TO_ZERO, MppiConfig(samples=16, horizon=5), np.random.default_rng(0))
        plans.append(planner.plan(x, planner.initial_plan(), 0.0))
    assert plans[0].disagreement == pytest.approx(0.0, abs=1e-6)
    # members differ by 0, 0.5, 1.0 in every component: std 0.408, over the state scale 5
    assert plans[1].disagreement == pytest.approx(np.std([0.0, 0.5, 1.0]) / 5.0, rel=1e-4)


def test_mppi_is_reproducible_from_a_seed(tmp_path):
    F, G = double_integrator()
    session = ModelSession(linear_world_model(tmp_path / "m.onnx", F, G), POINT)
    x = np.array([0.3, -0.2], np.float32)
    runs = []
    for _ in range(2):
        planner = MppiPlanner(session, POINT, GO_TO_ZERO, MppiConfig(samples=64, horizon=10), np.random.default_rng(7))
        runs.append(planner.plan(x, planner.initial_plan(), 0.0).actions)
    np.testing.assert_array_equal(runs[0], runs[1])
