"""The shield is the last word: whatever the planner outputs, what is sent stays in limits and
cannot carry the vehicle out of the geofence within the lookahead."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamlink.runtime.shield import Geofence, ShieldLimits, shield
from dreamlink.spec import QUAD

FENCE = Geofence.for_velocity_setpoints(QUAD, (-10.0, -10.0, -12.0), (10.0, 10.0, -1.0), lookahead_s=1.0)
LIMITS = ShieldLimits.from_spec(QUAD, max_step_change=(0.1, 0.1, 0.05), geofence=FENCE)
anything = st.floats(allow_nan=True, allow_infinity=True, width=32)


def quad_state(n: float, e: float, d: float) -> np.ndarray:
    x = np.zeros(QUAD.state_dim, np.float32)
    x[[QUAD.state_index("pos_n_m"), QUAD.state_index("pos_e_m"), QUAD.state_index("pos_d_m")]] = (n, e, d)
    return x


@settings(max_examples=400, deadline=None)
@given(
    action=st.lists(anything, min_size=3, max_size=3),
    pos=st.tuples(st.floats(-10, 10), st.floats(-10, 10), st.floats(-12, -1)),
    previous=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
)
def test_whatever_the_planner_says_the_command_stays_in_limits_and_fence(action, pos, previous):
    state = quad_state(*pos)
    prev = np.array(previous, np.float32)
    out = shield(np.array(action, np.float32), LIMITS, state, prev)
    assert np.all(np.isfinite(out.action))
    assert np.all(out.action >= QUAD.action_low) and np.all(out.action <= QUAD.action_high)
    ahead = np.array(pos) + out.action * FENCE.lookahead_s
    assert np.all(ahead >= np.array(FENCE.min_ned_m) - 1e-4) and np.all(ahead <= np.array(FENCE.max_ned_m) + 1e-4)


def test_a_vehicle_outside_the_fence_is_sent_back_in():
    out = shield(np.array([3.0, 0.0, 0.0], np.float32), LIMITS, quad_state(11.0, 0.0, -5.0))
    assert out.fenced and out.action[0] < 0  # north of the fence: the only allowed way is south


def test_setpoints_change_no_faster_than_the_acceleration_limit():
    out = shield(np.array([3.0, -3.0, 1.0], np.float32), LIMITS, quad_state(0, 0, -5), np.zeros(3, np.float32))
    np.testing.assert_allclose(out.action, [0.1, -0.1, 0.05], rtol=1e-6)
    assert out.clipped and not out.fenced


def test_non_finite_becomes_the_hold_action():
    out = shield(np.array([np.nan, 1.0, 0.0], np.float32), ShieldLimits.from_spec(QUAD))
    assert out.nonfinite
    np.testing.assert_array_equal(out.action, [0.0, 0.0, 0.0])


def test_fence_config_is_checked():
    with pytest.raises(ValueError, match="min must be below"):
        Geofence.for_velocity_setpoints(QUAD, (1.0, 0.0, 0.0), (0.0, 1.0, 1.0))
