"""Offset-free tracking: the position's drift from the velocity's integral, and the reference shifted against it."""

from __future__ import annotations

import numpy as np
import pytest

from dreamlink.runtime.mission import DriftEstimator, shift_for_drift
from dreamlink.spec import QUAD

P = [QUAD.state_index(f"pos_{a}_m") for a in "ned"]
V = [QUAD.state_index(f"vel_{a}_mps") for a in "ned"]


def _state(pos: np.ndarray, vel: np.ndarray) -> np.ndarray:
    x = np.zeros(QUAD.state_dim, np.float32)
    x[P], x[V] = pos, vel
    return x


def test_a_position_that_moves_faster_than_its_velocity_says_gives_that_drift() -> None:
    est = DriftEstimator(QUAD, window_s=1.0)
    vel = np.array([1.0, -0.5, 0.0])
    wander = np.array([0.3, 0.2, 0.0])  # m/s the estimate moves beyond the velocity's integral
    for i in range(60):
        t = 0.02 * i
        drift = est.update(t, _state((vel + wander) * t, vel))
        est.update(t, _state((vel + wander) * t, vel))  # a repeated sample changes nothing
    np.testing.assert_allclose(drift, wander, atol=1e-4)
    consistent = DriftEstimator(QUAD)
    for i in range(60):
        d = consistent.update(0.02 * i, _state(vel * 0.02 * i, vel))
    np.testing.assert_allclose(d, 0.0, atol=1e-5)


def test_drift_is_clipped_reset_by_a_reboot_and_silent_until_the_window_fills() -> None:
    est = DriftEstimator(QUAD, window_s=1.0, max_mps=0.5)
    assert np.all(est.update(0.0, _state(np.zeros(3), np.zeros(3))) == 0)
    assert np.all(est.update(0.3, _state(np.array([3.0, 0, 0]), np.zeros(3))) == 0)  # window not half full
    d = est.update(0.6, _state(np.array([6.0, 0, 0]), np.zeros(3)))
    assert np.linalg.norm(d) == pytest.approx(0.5)
    est.update(0.62, _state(np.full(3, np.nan), np.zeros(3)))  # a NaN state is ignored
    np.testing.assert_allclose(est.update(0.1, _state(np.zeros(3), np.zeros(3))), d)  # an old sample: ignored
    assert np.all(est.update(-5.0, _state(np.zeros(3), np.zeros(3))) == 0)  # clock back > 1 s, a reboot: restart


def test_the_reference_is_shifted_against_the_drift_step_by_step() -> None:
    ref = np.zeros((3, QUAD.state_dim), np.float32)
    ref[:, P[0]] = [1.0, 2.0, 3.0]
    ref[:, V[0]] = 2.0
    out = shift_for_drift(ref, np.array([0.5, 0.0, 0.0]), QUAD, 0.02)
    np.testing.assert_allclose(out[:, P[0]], [1.0 - 0.01, 2.0 - 0.02, 3.0 - 0.03], rtol=1e-6)
    np.testing.assert_allclose(out[:, V[0]], 1.5)
    np.testing.assert_allclose(out[:, P[1]], 0.0)
    np.testing.assert_allclose(ref[:, P[0]], [1, 2, 3])  # the input is left alone
