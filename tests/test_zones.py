"""Keep-out zones enter twice: as a cost the planner goes around in its imagined futures, and as a hard
check in the shield, which refuses any setpoint whose lookahead enters a zone and counts it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx_models import linear_world_model

from dreamlink.runtime.loop import ControlLoop, LoopConfig
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner, shift_plan
from dreamlink.runtime.session import ModelSession
from dreamlink.runtime.shield import Geofence, ShieldLimits, shield
from dreamlink.runtime.tasks import QuadraticTask
from dreamlink.runtime.zone_geometry import Polygon
from dreamlink.runtime.zones import KeepOutCircle, KeepOutPolygon, ZoneCost, Zones, segment_enters, zone_cost
from dreamlink.spec import QUAD, Component, VehicleSpec

SQUARE = KeepOutPolygon(((0.0, 0.0), (0.0, 2.0), (2.0, 2.0), (2.0, 0.0)))
# Concave: two 1 m wide arms along north and east from the origin; its notch (north > 1, east > 1) is outside.
L_SHAPE = KeepOutPolygon(((0.0, 0.0), (0.0, 3.0), (1.0, 3.0), (1.0, 1.0), (3.0, 1.0), (3.0, 0.0)))
CIRCLE = KeepOutCircle((10.0, 0.0), 2.0)
POS_NE = [QUAD.state_index("pos_n_m"), QUAD.state_index("pos_e_m")]
VEL_NE = [QUAD.state_index("vel_n_mps"), QUAD.state_index("vel_e_mps")]
LOOKAHEAD_S = 1.0


def quad_state(n: float, e: float, vel_ne: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    x = np.zeros(QUAD.state_dim, np.float32)
    x[POS_NE], x[VEL_NE] = (n, e), vel_ne
    x[QUAD.state_index("pos_d_m")] = -5.0
    return x


# --- geometry ---------------------------------------------------------------------------------------------


def test_a_square_knows_inside_outside_and_its_edge():
    sd = SQUARE.signed_distance_m(np.array([[1.0, 1.0], [1.0, 0.5], [3.0, 1.0], [3.0, 3.0], [0.0, 1.0], [2.0, 2.0]]))
    np.testing.assert_allclose(sd, [-1.0, -0.5, 1.0, math.sqrt(2.0), 0.0, 0.0])
    bare = Zones((SQUARE,), margin_m=0.0)
    assert bare.inside(np.array([[1.0, 1.0], [3.0, 1.0], [0.0, 1.0]])).tolist() == [True, False, False]  # edge: out


def test_a_concave_l_shape_leaves_its_notch_outside():
    points = np.array([[0.5, 2.5], [2.5, 0.5], [2.0, 2.0], [1.5, 1.5], [1.0, 2.0], [-1.0, 1.0]])
    sd = L_SHAPE.signed_distance_m(points)
    np.testing.assert_allclose(sd, [-0.5, -0.5, 1.0, 0.5, 0.0, 1.0])
    assert Zones((L_SHAPE,), margin_m=0.0).inside(points).tolist() == [True, True, False, False, False, False]


def test_a_circle_and_the_margin_inflate_every_zone():
    zones = Zones((CIRCLE, SQUARE), margin_m=0.5)
    sd = zones.signed_distance_m(np.array([[10.0, 0.0], [12.0, 0.0], [12.4, 0.0], [12.6, 0.0], [-0.4, 1.0]]))
    np.testing.assert_allclose(sd, [-2.5, -0.5, -0.1, 0.1, -0.1])
    assert zones.inside(np.array([[12.4, 0.0], [12.6, 0.0], [-0.4, 1.0], [-0.6, 1.0]])).tolist() == [
        True, False, True, False]
    assert np.all(Zones(()).signed_distance_m(np.zeros((3, 2))) == np.inf)  # no zones: nothing is inside


def test_a_straight_line_through_the_notch_of_an_l_enters_though_both_ends_are_outside():
    zones = Zones((L_SHAPE,), margin_m=0.0)
    assert segment_enters((0.5, 4.0), (0.5, 3.5), zones) is False
    assert segment_enters((0.0, 3.5), (3.5, 0.0), zones) is True  # crosses both arms between the ends
    assert segment_enters((0.5, 4.0), (4.0, 0.5), zones) is False  # passes the notch's corners 0.35 m off
    assert segment_enters((0.5, 4.0), (4.0, 0.5), Zones((L_SHAPE,), margin_m=0.5)) is True
    assert segment_enters((2.0, 2.0), (4.0, 4.0), zones) is False  # from the notch, away
    buffered = Zones((SQUARE,), margin_m=1.0)
    assert segment_enters((-1.5, -2.0), (-1.5, 4.0), buffered) is False  # passes 1.5 m off the square
    assert segment_enters((-0.5, -2.0), (-0.5, 4.0), buffered) is True  # 0.5 m off: inside the 1 m buffer
    assert segment_enters((-2.0, 3.0), (4.0, 3.0), buffered) is False  # exactly 1 m off: touching is allowed
    assert segment_enters((-2.0, 2.9), (4.0, 2.9), buffered) is True
    assert segment_enters((-2.0, -2.0), (-0.5, -0.5), buffered) is True  # ends 0.71 m from the corner


def test_polygons_are_checked_when_made():
    with pytest.raises(ValueError, match="simple polygon"):
        KeepOutPolygon(((0.0, 0.0), (2.0, 2.0), (2.0, 0.0), (0.0, 3.0)))  # a bow tie
    with pytest.raises(ValueError, match="at least 3"):
        KeepOutPolygon(((0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(ValueError, match="radius_m"):
        KeepOutCircle((0.0, 0.0), 0.0)
    with pytest.raises(ValueError, match="margin_m"):
        Zones((SQUARE,), margin_m=-1.0)
    closed = KeepOutPolygon(((0.0, 0.0), (0.0, 2.0), (2.0, 2.0), (2.0, 0.0), (0.0, 0.0)))  # a closed ring
    assert closed.vertices_ne_m == SQUARE.vertices_ne_m


def test_the_mission_path_goes_around_the_outline_of_the_same_zones():
    """A polygon's outline is its vertices; a circle's is the 16-gon circumscribing it, so a path that keeps its
    clearance from the outline keeps it from the circle too."""
    np.testing.assert_array_equal(L_SHAPE.outline_ne_m, np.array(L_SHAPE.vertices_ne_m))
    outline = Polygon(CIRCLE.outline_ne_m)
    angle = np.linspace(0.0, 2.0 * math.pi, 720, endpoint=False)
    on_circle = np.asarray(CIRCLE.centre_ne_m) + CIRCLE.radius_m * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    assert outline.distance_m(on_circle).max() <= 1e-12  # the circle is inside the outline, touching its edges
    corners = CIRCLE.signed_distance_m(CIRCLE.outline_ne_m)
    np.testing.assert_allclose(corners, CIRCLE.radius_m / math.cos(math.pi / 16) - CIRCLE.radius_m)
    points = np.random.default_rng(0).uniform(-2.0, 5.0, (500, 2))
    np.testing.assert_array_equal(Polygon(L_SHAPE.outline_ne_m).distance_m(points),
                                  np.maximum(L_SHAPE.signed_distance_m(points), 0.0))  # one geometry for both


# --- the cost in the imagined futures ---------------------------------------------------------------------


def test_a_future_through_a_zone_costs_more_than_one_around_it_and_deeper_costs_more():
    zones = Zones((SQUARE,), margin_m=0.5)
    h = np.linspace(-3.0, 5.0, 41)
    traj = np.zeros((4, 41, QUAD.state_dim), np.float32)
    traj[:, :, POS_NE[0]] = h
    traj[0, :, POS_NE[1]] = 1.0  # straight through the middle
    traj[1, :, POS_NE[1]] = 2.3  # through the buffer only
    traj[2, :, POS_NE[1]] = np.where((h > -1.0) & (h < 3.0), 3.0, 1.0)  # around it (a detour, teleporting aside)
    traj[3, :, POS_NE[1]] = 5.0  # far away
    cost = zone_cost(traj, QUAD, zones, weight=100.0)
    assert np.all(np.isfinite(cost))
    assert cost[0] > cost[1] > cost[2] == cost[3] == 0.0
    assert cost[1] >= 100.0 * np.sum(np.abs(h[1:] - 1.0) < 1.5)  # at least the weight for every step inside


def test_the_planner_goes_around_a_keep_out_square_it_would_otherwise_fly_through(tmp_path: Path):
    """A point mass (exact double integrator) at rest at the origin, its target 10 m north, a 2 m square
    keep-out zone halfway: MPPI with the zone cost never imagines its best future inside and flies around."""
    dt = 0.1
    planar = VehicleSpec(
        "planar",
        state=(Component("pos_n_m", "m", -20, 20), Component("pos_e_m", "m", -20, 20),
               Component("vel_n_mps", "m/s", -5, 5), Component("vel_e_mps", "m/s", -5, 5)),
        action=(Component("acc_n_mps2", "m/s^2", -2, 2), Component("acc_e_mps2", "m/s^2", -2, 2)),
        control_period_s=dt,
    )
    F = np.eye(4, dtype=np.float32)
    F[0, 2] = F[1, 3] = dt
    G = np.zeros((4, 2), np.float32)
    G[0, 0] = G[1, 1] = 0.5 * dt * dt
    G[2, 0] = G[3, 1] = dt
    model = linear_world_model(tmp_path / "planar.onnx", F, G)
    task = QuadraticTask("reach", target=(10.0, 0.0, 0.0, 0.0), state_weight=(1.0, 1.0, 0.1, 0.1),
                         action_weight=(0.01, 0.01), terminal_weight=5.0)
    zones = Zones((KeepOutPolygon(((4.0, -1.0), (4.0, 1.0), (6.0, 1.0), (6.0, -1.0))),), margin_m=0.5)
    config = MppiConfig(samples=128, horizon=30, noise_sigma=0.5, temperature=1.0, noise_smoothing=0.8)

    def fly(extra_cost: ZoneCost | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        planner = MppiPlanner(ModelSession(model, planar), planar, task, config, np.random.default_rng(0),
                              extra_cost=extra_cost)
        x, warm = np.zeros(4, np.float32), planner.initial_plan()
        flown, imagined = [x[:2].copy()], []
        for k in range(120):
            plan = planner.plan(x, warm, k * dt)
            imagined.append(plan.imagined[:, :2])
            x = (F @ x + G @ plan.actions[0]).astype(np.float32)
            flown.append(x[:2].copy())
            warm = shift_plan(plan.actions)
        return np.array(flown), np.array(imagined), x

    flown, imagined, x = fly(ZoneCost(planar, zones))
    assert not zones.inside(imagined).any()  # the best imagined future, every tick
    assert not zones.inside(flown).any()
    assert np.hypot(x[0] - 10.0, x[1]) < 0.5  # and still arrives
    flown, imagined, _ = fly(None)
    assert zones.inside(flown).any()  # without the cost it flies straight through
    assert zones.inside(imagined).any()


# --- the hard check in the shield -------------------------------------------------------------------------


@st.composite
def keep_outs(draw: st.DrawFn) -> KeepOutPolygon | KeepOutCircle:
    """A circle, or a star-shaped polygon around a centre: convex with equal radii, concave otherwise."""
    centre = (draw(st.floats(-10, 10)), draw(st.floats(-10, 10)))
    if draw(st.booleans()):
        return KeepOutCircle(centre, draw(st.floats(0.3, 4.0)))
    n = draw(st.integers(3, 9))
    gaps = np.array(draw(st.lists(st.floats(0.3, 1.0), min_size=n, max_size=n)))
    angles = np.cumsum(gaps) / gaps.sum() * 2 * math.pi
    radius = draw(st.floats(0.5, 4.0))
    radii = np.full(n, radius) if draw(st.booleans()) else np.array(
        draw(st.lists(st.floats(0.3, 4.0), min_size=n, max_size=n)))
    return KeepOutPolygon(tuple(
        (centre[0] + r * math.cos(a), centre[1] + r * math.sin(a)) for r, a in zip(radii, angles, strict=True)))


zone_sets = st.builds(Zones, st.lists(keep_outs(), min_size=1, max_size=3).map(tuple), st.floats(0.0, 1.5))
setpoints = st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(-1, 1))


def lookahead(p0: np.ndarray, vel_ne: np.ndarray, n: int = 600) -> tuple[np.ndarray, float]:
    """Points along the straight lookahead [n,2] and their spacing (m)."""
    t = np.linspace(0.0, LOOKAHEAD_S, n)[:, None]
    return p0 + t * vel_ne, float(np.hypot(*vel_ne)) * LOOKAHEAD_S / (n - 1)


def first_centre(zones: Zones) -> np.ndarray:
    first = zones.keep_out[0]
    return np.asarray(first.centre_ne_m if isinstance(first, KeepOutCircle) else np.mean(first.vertices_ne_m, axis=0))


def near_first_zone(zones: Zones, offset: tuple[float, float], vel_ne: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    return quad_state(*(first_centre(zones) + np.asarray(offset)), vel_ne)


def towards(state: np.ndarray, zones: Zones, asked: tuple[float, float, float]) -> np.ndarray:
    """`asked` turned to head for the first zone's centre (at most 3 m/s), where a planner's mistakes go."""
    heading = first_centre(zones) - state[POS_NE]
    speed = min(float(np.hypot(asked[0], asked[1])), 3.0)
    v = speed * heading / max(float(np.hypot(*heading)), 1e-9)
    return np.array([v[0], v[1], asked[2]], np.float32)


@settings(max_examples=300, deadline=None)
@given(zones=zone_sets, offset=st.tuples(st.floats(-6, 6), st.floats(-6, 6)), asked=setpoints, head_in=st.booleans())
def test_no_accepted_setpoints_lookahead_enters_a_zone_whatever_the_planner_asks(zones, offset, asked, head_in):
    state = near_first_zone(zones, offset)
    p0 = state[POS_NE].astype(np.float64)
    assume(zones.signed_distance_m(p0) > 0)
    limits = ShieldLimits.from_spec(QUAD, zones=zones, zone_lookahead_s=LOOKAHEAD_S)
    a = towards(state, zones, asked) if head_in else np.array(asked, np.float32)
    out = shield(a, limits, state)
    v_out = out.action[:2].astype(np.float64)
    points, _ = lookahead(p0, v_out)
    assert zones.signed_distance_m(points).min() >= -1e-5  # what is sent never carries the vehicle in
    assert np.hypot(*v_out) <= np.hypot(*a[:2]) + 1e-6  # replaced by something no faster
    assert out.action[2] == a[2]  # zones are prisms: the vertical setpoint is not theirs
    points, spacing = lookahead(p0, a[:2].astype(np.float64))
    clearance = zones.signed_distance_m(points).min()
    if clearance >= spacing / 2 + 1e-6:  # safe between the samples too (the distance is 1-Lipschitz)
        assert not out.zoned
        np.testing.assert_array_equal(out.action, a)  # a safe request passes unchanged
    elif clearance < 0:
        assert out.zoned and not np.array_equal(out.action, a)


@settings(max_examples=200, deadline=None)
@given(zones=zone_sets, offset=st.tuples(st.floats(-3, 3), st.floats(-3, 3)), asked=setpoints)
def test_from_inside_a_zone_holding_and_leaving_are_allowed_and_nothing_goes_deeper(zones, offset, asked):
    state = near_first_zone(zones, offset)
    p0 = state[POS_NE].astype(np.float64)
    assume(zones.signed_distance_m(p0) < 0)
    limits = ShieldLimits.from_spec(QUAD, zones=zones, zone_lookahead_s=LOOKAHEAD_S)
    hold = shield(np.zeros(3, np.float32), limits, state)
    assert not hold.zoned and np.all(hold.action == 0.0)
    out = shield(np.array(asked, np.float32), limits, state)
    points, _ = lookahead(p0, out.action[:2].astype(np.float64))
    for z in zones.keep_out:  # per zone: keep the margin from those it is clear of, get no deeper into the others
        keep = min(float(z.signed_distance_m(p0)), zones.margin_m)
        assert z.signed_distance_m(points).min() >= keep - 1e-5


@settings(max_examples=150, deadline=None)
@given(zones=zone_sets, offset=st.tuples(st.floats(-6, 6), st.floats(-6, 6)), asked=setpoints,
       vel_ne=st.tuples(st.floats(-3, 3), st.floats(-3, 3)), previous=setpoints, head_in=st.booleans())
def test_the_slew_from_the_current_velocity_is_checked_too(zones, offset, asked, vel_ne, previous, head_in):
    """While the vehicle slews from its velocity w to the setpoint v, a first-order lag of time constant up to
    `zone_slew_s` keeps it in p0 + a v + c w (a in [0, T], c in [0, slew]): all of that must stay clear, unless the
    shield is holding (zero horizontal velocity, always sent: it can do no more). With a slew limit and a fence."""
    state = near_first_zone(zones, offset, vel_ne)
    p0 = state[POS_NE].astype(np.float64)
    assume(zones.signed_distance_m(p0) > 0)
    fence = Geofence.for_velocity_setpoints(QUAD, (-30.0, -30.0, -12.0), (30.0, 30.0, -1.0))
    limits = ShieldLimits.from_spec(QUAD, max_step_change=(0.5, 0.5, 0.2), geofence=fence, zones=zones,
                                    zone_lookahead_s=LOOKAHEAD_S, zone_slew_s=0.5)
    a = towards(state, zones, asked) if head_in else np.array(asked, np.float32)
    out = shield(a, limits, state, np.array(previous, np.float32))
    v = out.action[:2].astype(np.float64)
    if np.all(v == 0.0):
        return
    a, c = np.meshgrid(np.linspace(0.0, LOOKAHEAD_S, 80), np.linspace(0.0, 0.5, 40))
    region = p0 + a.reshape(-1, 1) * v + c.reshape(-1, 1) * state[VEL_NE].astype(np.float64)
    assert zones.signed_distance_m(region).min() >= -1e-5


def test_from_inside_a_zone_a_setpoint_leading_out_is_accepted_and_one_going_deeper_is_not():
    limits = ShieldLimits.from_spec(QUAD, zones=Zones((SQUARE, CIRCLE), margin_m=1.0))
    inside_square = quad_state(1.7, 1.0)  # 0.3 m from its north edge, 1.3 m inside the buffer
    out = shield(np.array([3.0, 0.0, 0.5], np.float32), limits, inside_square)  # north, out through that edge
    assert not out.zoned and out.action.tolist() == [3.0, 0.0, 0.5]
    out = shield(np.array([-3.0, 0.0, 0.0], np.float32), limits, inside_square)  # south, deeper first
    assert out.zoned and out.action[0] > -0.5
    inside_circle = quad_state(9.0, 0.0)
    out = shield(np.array([0.0, 0.0, 0.0], np.float32), limits, inside_circle)
    assert not out.zoned
    out = shield(np.array([-2.0, 0.0, 0.0], np.float32), limits, inside_circle)  # away from the centre
    assert not out.zoned and out.action[0] == -2.0


def test_a_vehicle_that_keeps_asking_to_fly_through_stops_at_the_buffer_and_slides_along():
    """A vehicle whose velocity follows its setpoint with a 0.3 s lag, asking 3 m/s north (and a little east)
    into a square for 10 s: the shield refuses tick after tick, and the vehicle never crosses the buffer."""
    zones = Zones((KeepOutPolygon(((4.0, -2.0), (4.0, 2.0), (8.0, 2.0), (8.0, -2.0))),), margin_m=1.0)
    limits = ShieldLimits.from_spec(QUAD, zones=zones, zone_lookahead_s=1.0, zone_slew_s=0.5)
    x, dt, lag_s = quad_state(0.0, 0.0), 0.02, 0.3
    closest, refused = np.inf, 0
    for _ in range(500):
        out = shield(np.array([3.0, 0.3, 0.0], np.float32), limits, x)
        refused += out.zoned
        x[VEL_NE] += (out.action[:2] - x[VEL_NE]) * dt / lag_s
        x[POS_NE] += x[VEL_NE] * dt
        closest = min(closest, float(zones.signed_distance_m(x[POS_NE])))
    assert 0.0 <= closest < 0.1  # right up to the buffer, never into it
    assert refused > 400
    assert x[POS_NE[1]] > 1.0  # the eastward part of the request still flies: it slides along the face


def test_the_loop_counts_every_zoned_tick(tmp_path: Path):
    F = np.eye(QUAD.state_dim, dtype=np.float32)
    G = np.zeros((QUAD.state_dim, QUAD.action_dim), np.float32)
    G[POS_NE, [0, 1]] = QUAD.control_period_s
    planner = MppiPlanner(
        ModelSession(linear_world_model(tmp_path / "quad.onnx", F, G), QUAD), QUAD,
        QuadraticTask("north", target=tuple(10.0 if i == POS_NE[0] else 0.0 for i in range(QUAD.state_dim)),
                      state_weight=tuple(1.0 if i in POS_NE else 0.0 for i in range(QUAD.state_dim)),
                      action_weight=(0.0, 0.0, 0.0)),
        MppiConfig(samples=32, horizon=10), np.random.default_rng(0),
    )

    class Hovering:  # next to the zone, its target straight through it
        def state(self) -> tuple[float, np.ndarray, float]:
            return 0.0, quad_state(2.8, 1.0), 0.0

        def send(self, action: np.ndarray) -> None:
            pass

    class Clock:
        def now(self) -> float:
            return 0.0

        def sleep_until(self, t_s: float) -> None:
            pass

    limits = ShieldLimits.from_spec(QUAD, zones=Zones((KeepOutPolygon(((4.0, 0.0), (4.0, 2.0), (6.0, 2.0),
                                                                        (6.0, 0.0))),), margin_m=1.0))
    loop = ControlLoop(Hovering(), planner, limits, Clock(), LoopConfig())  # type: ignore[arg-type]
    for k in range(5):
        loop.tick(k * QUAD.control_period_s, 0.0)
    assert loop.counters.shield_zoned == 5
    assert loop.stats(1.0).shield_zoned == 5
