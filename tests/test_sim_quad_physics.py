"""Quadrotor physics (rotorpy aerodynamics, our integrator), the autopilot's controller, and randomisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rotorpy.vehicles.multirotor import Multirotor

from dreamlink.sim.quadrotor.controller import ARDUPILOT_GAINS, PX4_GAINS, Controller, ControlTarget
from dreamlink.sim.quadrotor.physics import (
    SUBSTEP_S,
    DrydenWind,
    QuadParams,
    QuadPhysics,
    QuadState,
    WindParams,
    euler_of,
    yaw_of,
)
from dreamlink.sim.quadrotor.randomisation import DomainParams, RandomisationRanges, Span, fixed_ranges, sample

NOMINAL = QuadParams()


def airborne(params: QuadParams = NOMINAL, wind: WindParams | None = None, seed: int = 0) -> QuadPhysics:
    state = QuadState()
    state.pos_ned_m[2] = -10.0
    state.on_ground = False
    state.rotor_speeds_radps[:] = params.hover_rotor_speed_radps
    return QuadPhysics(params, DrydenWind(wind or WindParams(), np.random.default_rng(seed)), state)


def fly(physics: QuadPhysics, seconds: float, cmd: np.ndarray) -> QuadState:
    for _ in range(round(seconds / SUBSTEP_S)):
        physics.step(cmd)
    return physics.state


def test_hover_thrust_holds_altitude_in_calm_air() -> None:
    s = fly(airborne(), 2.0, np.full(4, NOMINAL.hover_rotor_speed_radps))
    assert abs(s.pos_ned_m[2] + 10.0) < 0.01 and np.abs(s.vel_ned_mps).max() < 0.01


def test_less_thrust_sinks_more_thrust_climbs() -> None:
    w = NOMINAL.hover_rotor_speed_radps
    assert fly(airborne(), 1.0, np.full(4, 0.9 * w)).vel_ned_mps[2] > 0.5
    assert fly(airborne(), 1.0, np.full(4, 1.1 * w)).vel_ned_mps[2] < -0.5


def test_wind_pushes_the_vehicle_downwind_but_slower_than_the_wind() -> None:
    s = fly(airborne(wind=WindParams(mean_ned_mps=(0.0, 4.0, 0.0))), 2.0, np.full(4, NOMINAL.hover_rotor_speed_radps))
    assert 0.3 < s.vel_ned_mps[1] < 4.0 and abs(s.vel_ned_mps[0]) < 0.05


def test_motor_lag_follows_the_time_constant() -> None:
    slow = NOMINAL.scaled(motor_time_constant_s=0.05)
    physics = airborne(slow)
    physics.state.rotor_speeds_radps[:] = 0.0
    s = fly(physics, 0.05, np.full(4, 500.0))  # one time constant: 1 - 1/e of the step
    assert s.rotor_speeds_radps[0] == pytest.approx(500.0 * (1 - math.exp(-1)), rel=0.01)


def test_fixed_step_integration_agrees_with_rotorpys_own_rk45() -> None:
    """Same airframe, same open-loop rotor commands (a roll and yaw doublet): our 2.5 ms semi-implicit step
    against rotorpy's Multirotor.step (scipy RK45), both starting at hover, 0.5 s."""
    physics = airborne()
    vehicle = Multirotor(NOMINAL.rotorpy_params(), control_abstraction="cmd_motor_speeds", aero=True)
    w = NOMINAL.hover_rotor_speed_radps
    rp = {"x": np.array([0.0, 0.0, 10.0]), "v": np.zeros(3), "q": np.array([0.0, 0.0, 0.0, 1.0]), "w": np.zeros(3),
          "wind": np.zeros(3), "rotor_speeds": np.full(4, w)}
    cmd = np.array([1.03 * w, 0.99 * w, 1.01 * w, 1.0 * w])
    for _ in range(round(0.5 / SUBSTEP_S)):
        physics.step(cmd)
        rp = vehicle.step(rp, {"cmd_motor_speeds": cmd}, SUBSTEP_S)
    ours = physics.state
    # rotorpy's world is z-up / body FLU: flip y and z into NED / FRD
    assert ours.pos_ned_m == pytest.approx([rp["x"][0], -rp["x"][1], -rp["x"][2]], abs=2e-3)
    assert ours.vel_ned_mps == pytest.approx([rp["v"][0], -rp["v"][1], -rp["v"][2]], abs=1e-2)
    assert ours.rates_frd_radps == pytest.approx([rp["w"][0], -rp["w"][1], -rp["w"][2]], abs=1e-2)
    assert abs(euler_of(ours.q_ned_frd)[0]) > 0.05  # it really rolled


def test_ground_holds_an_idle_vehicle_and_keeps_its_heading() -> None:
    physics = QuadPhysics(NOMINAL, DrydenWind(WindParams(), np.random.default_rng(0)))
    physics.state.q_ned_frd = np.array([math.cos(0.4), 0.0, 0.0, math.sin(0.4)])
    s = fly(physics, 1.0, np.full(4, 0.3 * NOMINAL.hover_rotor_speed_radps))
    assert s.on_ground and s.pos_ned_m[2] == 0.0 and yaw_of(s.q_ned_frd) == pytest.approx(0.8)


def test_dryden_gusts_are_seeded_and_centred_on_the_mean() -> None:
    wind = WindParams(mean_ned_mps=(2.0, 0.0, 0.0), gust_sigma_mps=(1.0, 1.0, 0.5))
    a = np.array([DrydenWind(wind, np.random.default_rng(7)).sample(SUBSTEP_S) for _ in range(3)])
    samples = [DrydenWind(wind, np.random.default_rng(7)) for _ in range(2)]
    x = np.array([samples[0].sample(SUBSTEP_S) for _ in range(4000)])
    y = np.array([samples[1].sample(SUBSTEP_S) for _ in range(4000)])
    assert np.array_equal(x, y) and a.shape == (3, 3)
    long = DrydenWind(wind, np.random.default_rng(8))
    z = np.array([long.sample(SUBSTEP_S) for _ in range(200_000)])  # 500 s, many correlation times
    assert abs(z[:, 0].mean() - 2.0) < 0.3
    assert z[:, 0].std() == pytest.approx(1.0, rel=0.3) and z[:, 2].std() == pytest.approx(0.5, rel=0.3)


@pytest.mark.parametrize("gains", [ARDUPILOT_GAINS, PX4_GAINS], ids=["ardupilot", "px4"])
def test_controller_holds_position_with_a_heavier_draggier_airframe_in_wind(gains: object) -> None:
    truth = NOMINAL.scaled(mass=1.2, drag=1.4, motor_time_constant_s=0.04)
    physics = airborne(truth, WindParams(mean_ned_mps=(3.0, -2.0, 0.0), gust_sigma_mps=(0.5, 0.5, 0.2)))
    controller = Controller(NOMINAL, gains)  # type: ignore[arg-type]
    target = ControlTarget("trajectory", pos_ned=(1.0, 2.0, -8.0), vel_ned=(0.0, 0.0, 0.0), yaw_rad=0.5)
    errors = []
    for k in range(round(15.0 / SUBSTEP_S)):
        physics.step(controller.update(target, physics.state, SUBSTEP_S))
        if k * SUBSTEP_S > 11.0:
            errors.append(np.linalg.norm(physics.state.pos_ned_m - [1.0, 2.0, -8.0]))
    assert max(errors) < 0.3  # the velocity integrator has taken up the mass error and the wind
    assert yaw_of(physics.state.q_ned_frd) == pytest.approx(0.5, abs=0.05)


def test_controller_tracks_a_velocity_setpoint_within_its_tilt_limit() -> None:
    physics = airborne()
    controller = Controller(NOMINAL, ARDUPILOT_GAINS)
    target = ControlTarget("trajectory", vel_ned=(3.0, 0.0, 0.0), yaw_rad=0.0)
    tilts = []
    for _ in range(round(6.0 / SUBSTEP_S)):
        physics.step(controller.update(target, physics.state, SUBSTEP_S))
        roll, pitch, _ = euler_of(physics.state.q_ned_frd)
        tilts.append(math.hypot(roll, pitch))
    assert physics.state.vel_ned_mps[0] == pytest.approx(3.0, abs=0.1)
    assert max(tilts) <= ARDUPILOT_GAINS.max_tilt_rad + 0.05


def test_randomisation_is_seeded_within_its_ranges_and_replays_from_json() -> None:
    ranges = RandomisationRanges()
    a, b = sample(np.random.default_rng(3), ranges, seed=3), sample(np.random.default_rng(3), ranges, seed=3)
    assert a == b and a != sample(np.random.default_rng(4), ranges, seed=4)
    draws = [sample(np.random.default_rng(s), ranges, seed=s) for s in range(50)]
    assert all(0.8 <= d.mass_scale <= 1.2 and 0.015 <= d.motor_time_constant_s <= 0.04 for d in draws)
    assert all(math.hypot(*d.wind_mean_ned_mps[:2]) <= 3.0 + 1e-9 for d in draws)
    assert len({round(d.mass_scale, 6) for d in draws}) == 50
    assert DomainParams.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.quad_params(NOMINAL).mass_kg == pytest.approx(NOMINAL.mass_kg * a.mass_scale)


def test_fixed_ranges_draw_the_nominal_airframe_and_wind_override_keeps_direction() -> None:
    d = sample(np.random.default_rng(1), fixed_ranges(NOMINAL), seed=1)
    assert d.quad_params(NOMINAL) == NOMINAL and d.wind_mean_ned_mps == (0.0, 0.0, 0.0)
    windy = sample(np.random.default_rng(1), RandomisationRanges(wind_speed_mps=Span(2.0, 2.0)), seed=1)
    stronger = windy.with_wind(speed_mps=5.0)
    assert math.hypot(*stronger.wind_mean_ned_mps[:2]) == pytest.approx(5.0)
    assert math.atan2(stronger.wind_mean_ned_mps[1], stronger.wind_mean_ned_mps[0]) == pytest.approx(
        math.atan2(windy.wind_mean_ned_mps[1], windy.wind_mean_ned_mps[0]))


def test_bad_parameters_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="mass_kg"):
        QuadParams(mass_kg=-1.0)
    with pytest.raises(ValueError, match="cannot lift"):
        QuadParams(rotor_speed_max_radps=400.0)
    with pytest.raises(ValueError, match="unknown keys"):
        DomainParams.from_dict({"seed": 1, "mass": 2.0})
    with pytest.raises(ValueError, match="Span"):
        Span(2.0, 1.0)
