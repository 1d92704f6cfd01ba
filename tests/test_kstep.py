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
