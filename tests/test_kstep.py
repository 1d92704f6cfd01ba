"""The compounding-error curve and the horizon it recommends."""

from __future__ import annotations

import numpy as np
from onnx_models import POINT, double_integrator, linear_world_model

from dreamlink.calibration.kstep import kstep_curve, recommend_horizon
from dreamlink.runtime.session import ModelSession


def _episodes(F, G, n=6, T=60, seed=0):
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        x = rng.uniform(-1, 1, 2).astype(np.float32)
        states, actions = [x], []
        for _ in range(T):
            u = rng.uniform(-2, 2, 1).astype(np.float32)
            x = (F @ x + G @ u).astype(np.float32)
            states.append(x)
            actions.append(u)
        eps.append((np.array(states), np.array(actions)))
    return eps


def test_exact_model_has_no_compounding_error(tmp_path):
    F, G = double_integrator()
    session = ModelSession(linear_world_model(tmp_path / "m.onnx", F, G), POINT)
    curve = kstep_curve(session.predict, _episodes(F, G), POINT, max_k=20)
    assert curve.normalised_rmse.max() < 1e-4
    assert recommend_horizon(curve, 0.1) == 20


def test_a_wrong_model_drifts_more_with_k_and_gets_a_shorter_horizon(tmp_path):
    F, G = double_integrator()
    eps = _episodes(F, G)
    slightly = ModelSession(linear_world_model(tmp_path / "a.onnx", F, G, bias=np.array([0.0, 0.002])), POINT)
    badly = ModelSession(linear_world_model(tmp_path / "b.onnx", F, G, bias=np.array([0.0, 0.01])), POINT)
    c1 = kstep_curve(slightly.predict, eps, POINT, max_k=40)
    c2 = kstep_curve(badly.predict, eps, POINT, max_k=40)
    assert np.all(np.diff(c1.normalised_rmse) > 0)  # compounding: error grows with every step
    assert c2.normalised_rmse[0] > c1.normalised_rmse[0]
    assert recommend_horizon(c2, 0.05) < recommend_horizon(c1, 0.05)
    assert c1.starts[0] == 6 * 60 and c1.starts[-1] == 6 * (60 - 40 + 1)


def test_the_task_horizon_is_where_the_decision_relevant_error_leaves_its_tolerance() -> None:
    """A quad's horizon follows its position error in metres, not the normalised error of every component: a
    noisy roll rate that dominates the normalised curve must not shorten how far the planner looks ahead."""
    import pytest

    from dreamlink.calibration.horizon import recommend_task_horizon
    from dreamlink.calibration.kstep import KStepCurve

    k = np.arange(1, 61)
    names = ("pos_n_m", "pos_e_m", "roll_rate_radps")
    rmse = np.stack([0.005 * k, 0.005 * k, np.full(60, 5.0)], axis=1)  # 3-D position error 0.00707 m per step
    curve = KStepCurve(k, rmse, np.full(60, 3.0), np.ones(3), np.full(60, 100), names)
    tol = {"pos_n_m": 0.3, "pos_e_m": 0.3}
    assert recommend_task_horizon(curve, tol, 10, 60) == 42  # 42 * 0.00707 = 0.297 m; at 43, 0.304 m
    assert recommend_task_horizon(curve, tol, 10, 30) == 30 and recommend_task_horizon(curve, tol, 50, 60) == 50
    assert recommend_horizon(curve, 0.4) == 1  # the normalised rule would have planned one step ahead
    with pytest.raises(ValueError, match="pos_d_m"):
        recommend_task_horizon(curve, {"pos_d_m": 0.3}, 10, 60)
