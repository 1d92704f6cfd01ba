"""Vehicle files: a robot described in TOML, the shipped two among them; errors name the file and the field;
planner settings derived from the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dreamlink.runtime.planner_defaults import bundle_planner, cost_scale, derived_planner
from dreamlink.runtime.tasks import cartpole_balance, default_task, quad_tracking
from dreamlink.spec import CARTPOLE, QUAD, SpecError, VehicleSpec, load_vehicle, with_vehicle_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PENDULUM = EXAMPLES / "pendulum" / "pendulum.toml"
CAR = EXAMPLES / "mountain_car" / "mountain_car.toml"

ROVER = """
name = "rover"
control_period_s = 0.1
state = [
  { name = "speed_mps", unit = "m/s", low = -2.0, high = 2.0, from = "NAMED_VALUE_FLOAT:speed" },
  { name = "heading_rad", unit = "rad", low = -3.2, high = 3.2, from = "ATTITUDE.yaw" },
]
action = [
  { name = "throttle", unit = "1", low = 0.0, high = 1.0 },
  { name = "steer_rad", unit = "rad", low = -0.5, high = 0.5 },
]
[link]
command = "MANUAL_CONTROL"
system_id = 7
[task]
target = { speed_mps = 1.0 }
state_weight = { speed_mps = 2.0 }
"""


def write(tmp_path: Path, text: str, name: str = "v.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_vehicles_are_files_with_their_tasks() -> None:
    assert load_vehicle("cartpole") == CARTPOLE and load_vehicle("quad") == QUAD
    assert default_task(CARTPOLE) == cartpole_balance(CARTPOLE)
    assert default_task(QUAD) == quad_tracking(QUAD)
    assert CARTPOLE.link is not None and CARTPOLE.link.array_name == "CARTPOLE"
    assert (CARTPOLE.link.armed_index, CARTPOLE.link.episode_index) == (5, 6)  # the board's data[5], data[6]
    assert QUAD.link is None  # an autopilot profile speaks to it


@pytest.mark.parametrize("spec", [CARTPOLE, QUAD, load_vehicle(PENDULUM), load_vehicle(CAR)], ids=lambda s: s.name)
def test_a_vehicle_travels_whole_through_a_manifest(spec: VehicleSpec) -> None:
    assert VehicleSpec.from_dict(spec.to_dict()) == spec


def test_a_users_file_with_sources_per_component_and_other_commands(tmp_path: Path) -> None:
    rover = load_vehicle(write(tmp_path, ROVER))
    assert rover.link is not None
    assert [s.text() for s in rover.link.telemetry] == ["NAMED_VALUE_FLOAT:speed", "ATTITUDE.yaw"]
    assert rover.link.command == "MANUAL_CONTROL" and rover.link.system_id == 7
    assert rover.link.armed_index == -1  # no array board: armed from the HEARTBEAT
    task = default_task(rover)
    assert task.target == (1.0, 0.0) and task.state_weight == (2.0, 0.0) and task.action_weight == (0.0, 0.0)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace('control_period_s = 0.1', 'control_period_s = "fast"'), r"control_period_s: expected"),
    (lambda t: "colour = 1\n" + t, r"unknown key 'colour'"),
    (lambda t: t + "\ncolour = 1\n", r"\[task\]\.colour: unknown key"),
    (lambda t: t.replace('"ATTITUDE.yaw"', '"ATTITUDE:yaw"'), r"state\[1\] \(heading_rad\)\.from: .*'.' before"),
    (lambda t: t.replace('NAMED_VALUE_FLOAT:speed', 'NAMED_VALUE_FLOAT:speed_over_ground'), r"at most 10 char"),
    (lambda t: t.replace('target = { speed_mps = 1.0 }', 'target = { sped_mps = 1.0 }'),
     r"\[task\]\.target: no component 'sped_mps'"),
    (lambda t: t.replace('state_weight = { speed_mps = 2.0 }', 'state_weight = { speed_mps = 0.0 }'),
     r"every weight is 0"),
    (lambda t: t.replace('"MANUAL_CONTROL"', '"PWM"'), r"\[link\]\.command: expected one of"),
    (lambda t: t.replace('low = 0.0, high = 1.0', 'low = 1.0, high = 0.0'), r"action\[0\]: expected finite low < high"),
    (lambda t: t.replace('[task]', '[task\n'), r"not valid TOML"),
])
def test_a_bad_vehicle_file_is_refused_naming_the_file_and_field(tmp_path: Path, edit, message) -> None:
    path = write(tmp_path, edit(ROVER))
    with pytest.raises(SpecError, match=message) as err:
        load_vehicle(path)
    assert str(path) in str(err.value)


def test_unknown_names_and_missing_files_say_what_there_is(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"unknown vehicle 'boat'.*ships cartpole, quad"):
        load_vehicle("boat")
    with pytest.raises(SpecError, match=r"cannot read the vehicle file"):
        load_vehicle(tmp_path / "gone.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SpecError, match=r"bin\.toml: not a text file"):
        load_vehicle(tmp_path / "bin.toml")


def test_a_reference_trajectory_from_csv_is_read_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text("t_s,speed_mps\n0,0\n1,1.5\n2,1.5\n")
    spec = load_vehicle(write(tmp_path, ROVER.replace("[task]", '[task]\nreference_csv = "ref.csv"')))
    rows = default_task(spec).reference
    assert [r[:2] for r in rows] == [(0.0, 0.0), (1.0, 1.5), (2.0, 1.5)]
    assert all(math.isnan(r[2]) for r in rows)  # heading not in the CSV: the fixed target holds
    assert VehicleSpec.from_dict(spec.to_dict()) == spec  # NaN travels as null
    (tmp_path / "ref.csv").write_text("t_s,speed_mps\n0,0\n0,1\n")
    with pytest.raises(SpecError, match=r"ref\.csv line 3: .*t_s rising"):
        load_vehicle(tmp_path / "v.toml")


def test_planner_defaults_derive_from_the_file() -> None:
    pendulum = load_vehicle(PENDULUM)
    task = default_task(pendulum)
    cfg = derived_planner(pendulum, task, 15)
    assert (cfg.samples, cfg.horizon, cfg.noise_sigma) == (256, 15, 1.0)  # noise: the action's half range
    # temperature relative to the task's cost scale: a tenth of each half range off, the whole horizon long
    scale = (1.0 * 0.1**2 + 1.0 * 0.1**2 + 0.1 * 0.8**2) * 15
    assert cost_scale(task, pendulum, 15) == pytest.approx(scale)
    assert cfg.temperature == pytest.approx(0.2 * scale)
    doubled = VehicleSpec.from_dict({**pendulum.to_dict(), "task": {**task.to_dict(pendulum), "state_weight": {
        n: 2 * w for n, w in zip(pendulum.state_names, task.state_weight, strict=True)}}})
    assert derived_planner(doubled, default_task(doubled), 15).temperature == pytest.approx(2 * cfg.temperature)


def test_the_file_and_then_the_bundle_override_the_derived_settings() -> None:
    car = load_vehicle(CAR)
    cfg = derived_planner(car, default_task(car))
    assert (cfg.horizon, cfg.noise_smoothing, cfg.samples) == (80, 0.9, 256)  # the file's, then derived
    assert derived_planner(car, default_task(car), 40).horizon == 40  # a person's (or calibration's) choice wins
    calibrated = bundle_planner(car, default_task(car), {"samples": 64, "temperature": 0.5})
    assert (calibrated.samples, calibrated.temperature, calibrated.horizon) == (64, 0.5, 80)
    cartpole = derived_planner(CARTPOLE, default_task(CARTPOLE))
    assert (cartpole.samples, cartpole.horizon, cartpole.noise_sigma, cartpole.temperature) == (128, 30, 0.2, 0.3)


def test_an_edited_file_applies_to_a_trained_model_only_with_the_same_vectors(tmp_path: Path) -> None:
    pendulum = load_vehicle(PENDULUM)
    trained = VehicleSpec(pendulum.name, pendulum.state, pendulum.action, pendulum.control_period_s)
    assert with_vehicle_file(trained, pendulum) == pendulum
    with pytest.raises(SpecError, match=r"other state/action vectors"):
        with_vehicle_file(trained, load_vehicle(CAR))
    assert np.all(np.isfinite(CARTPOLE.action_high))


def test_a_table_reference_interpolates_and_keeps_the_target_where_it_is_silent(tmp_path: Path) -> None:
    from dreamlink.runtime.mission import TableReference

    (tmp_path / "ref.csv").write_text("t_s,speed_mps\n0,0\n1,2\n")
    spec = load_vehicle(write(tmp_path, ROVER.replace("[task]", '[task]\nreference_csv = "ref.csv"')))
    task = default_task(spec)
    ref = TableReference(task.reference, (1.0, 0.25), 0.25, 6, start_s=10.0)
    window = ref(10.0)  # the next 6 steps: 0.25 .. 1.5 s into the table
    np.testing.assert_allclose(window[:, 0], [0.5, 1.0, 1.5, 2.0, 2.0, 2.0])  # held at its end
    np.testing.assert_allclose(window[:, 1], 0.25)  # heading: not in the table, the target's
    assert window.dtype == np.float32 and np.all(np.isfinite(window))
