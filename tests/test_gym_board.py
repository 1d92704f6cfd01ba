"""Any Gymnasium environment behind the board's MAVLink face, flown through the generic board profile; a policy
flown alone. Real SITL processes, real UDP on loopback, real ONNX Runtime sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dreamlink.export.onnx_file import bundle_onnx
from dreamlink.firmware_bridge.link import Link, LinkConfig
from dreamlink.firmware_bridge.motor_board import BoardProfile
from dreamlink.runtime.onboard import RunConfig, fly
from dreamlink.sim.launcher import SitlProcess
from dreamlink.spec import load_vehicle

pytestmark = pytest.mark.sitl

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PENDULUM_FILE = EXAMPLES / "pendulum" / "pendulum.toml"
PENDULUM = load_vehicle(PENDULUM_FILE)


@pytest.fixture
def pendulum_board() -> Iterator[BoardProfile]:
    with SitlProcess("gym", lockstep=True, seed=5, extra_args=("--vehicle", str(PENDULUM_FILE))) as sitl, \
            Link(LinkConfig(sitl.connect_string)) as link:
        profile = BoardProfile(link, PENDULUM)
        profile.connect(timeout_s=5.0)
        yield profile
        profile.release()


def gym_steps(state: np.ndarray, torques: list[float]) -> list[np.ndarray]:
    """The same environment stepped in this process from `state` ([theta, theta_dot])."""
    env = gymnasium.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    env.state = np.array(state, dtype=np.float64)
    return [env.step(np.array([u], np.float32))[0] for u in torques]


def test_the_unmodified_environment_steps_behind_the_board_as_in_process(pendulum_board: BoardProfile) -> None:
    profile = pendulum_board
    profile.arm()
    profile.request_sim_reset(seed=3, param2=0.0)  # the vehicle file's start: hanging, at rest
    t_s, x, _ = profile.state()
    np.testing.assert_allclose(x, [-1.0, 0.0, 0.0], atol=1e-6)
    torques = [2.0, -1.0, 0.5, 3.0]  # 3 N m is past the limit: sent normalised, clipped to 2 N m
    seen = []
    for u in torques:
        profile.send(np.array([u], np.float32))
        assert profile.wait_state_after(t_s + PENDULUM.control_period_s / 2, 2.0)
        t_s, x, _ = profile.state()
        seen.append(x)
    expected = gym_steps(np.array([np.pi, 0.0]), [2.0, -1.0, 0.5, 2.0])
    np.testing.assert_allclose(np.array(seen), np.array(expected), atol=1e-5)


def test_a_collection_reset_starts_inside_the_explore_box(pendulum_board: BoardProfile) -> None:
    rates = []
    for seed in range(8):
        pendulum_board.request_sim_reset(seed=seed, param2=1.0)
        _, x, _ = pendulum_board.state()
        assert abs(x[0] ** 2 + x[1] ** 2 - 1.0) < 1e-5  # a real pendulum's (cos, sin)
        rates.append(x[2])
    assert max(np.abs(rates)) <= 8.0 and np.std(rates) > 1.0  # drawn across the box, not the env's own start


def test_a_board_described_with_manual_control_is_driven_by_it(tmp_path: Path) -> None:
    text = PENDULUM_FILE.read_text().replace('command = "SET_ACTUATOR_CONTROL_TARGET"', 'command = "MANUAL_CONTROL"')
    manual = tmp_path / "pendulum-manual.toml"
    manual.write_text(text)
    spec = load_vehicle(manual)
    with SitlProcess("gym", lockstep=True, seed=1, extra_args=("--vehicle", str(manual))) as sitl, \
            Link(LinkConfig(sitl.connect_string)) as link:
        profile = BoardProfile(link, spec)
        profile.connect(timeout_s=5.0)
        profile.arm()
        profile.request_sim_reset(seed=1, param2=0.0)
        t_s, _, _ = profile.state()
        profile.send(np.array([1.5], np.float32))  # 750 of 1000 on the x axis
        assert profile.wait_state_after(t_s + 0.025, 2.0)
        _, x, _ = profile.state()
        applied = link.latest("DEBUG_FLOAT_ARRAY")[0].data[3]  # data[S]: the torque the board applied
        profile.release()
    assert applied == pytest.approx(1.5, abs=1e-3)
    np.testing.assert_allclose(x, gym_steps(np.array([np.pi, 0.0]), [1.5])[0], atol=1e-4)


def constant_policy(path: Path, torque_nm: float) -> Path:
    """A policy ONNX (state [B,3] -> action [B,1]) that always asks for `torque_nm`."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["state", "w"], ["zero"]), helper.make_node("Add", ["zero", "u"], ["action"])],
        "constant_policy",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["B", 3])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", 1])],
        [numpy_helper.from_array(np.zeros((3, 1), np.float32), "w"),
         numpy_helper.from_array(np.array([torque_nm], np.float32), "u")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_a_policy_alone_flies_through_the_shield_and_the_report_counts_what_it_changed(tmp_path: Path) -> None:
    bundle = bundle_onnx(tmp_path / "bundle", PENDULUM, policy=constant_policy(tmp_path / "p.onnx", 5.0))
    assert bundle.has("policy") and not bundle.has("world_model")
    with SitlProcess("gym", lockstep=True, seed=2, extra_args=("--vehicle", str(PENDULUM_FILE))) as sitl:
        result = fly(RunConfig(bundle=bundle.root, connect=sitl.connect_string, lockstep=True, ticks=30,
                               out_dir=tmp_path / "flight"))
    summary = json.loads((tmp_path / "flight" / "summary.json").read_text())
    assert summary["planner"] == "PolicyPlanner"
    assert result.stats.ticks == 30 and result.stats.fallbacks == {}
    assert result.stats.shield_changed_ticks == 30  # 5 N m asked every tick, 2 N m the limit
    ticks = np.load(tmp_path / "flight" / "ticks.npz")
    np.testing.assert_allclose(ticks["action"], 2.0)
    assert np.ptp(ticks["state"][:, 2]) > 0.5  # the torque reached the pendulum: it swings


@pytest.mark.slow
def test_a_vehicle_file_alone_takes_a_gym_environment_through_every_command(tmp_path: Path) -> None:
    """collect, train, export, sitl gym, run: the pendulum, no Python written for it."""

    def dreamlink(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "dreamlink.cli", *args], capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    vehicle = str(PENDULUM_FILE)
    dreamlink("collect", vehicle, "--out", str(tmp_path / "data.npz"), "--transitions", "1500", "--seed", "0")
    dreamlink("collect", vehicle, "--out", str(tmp_path / "hold.npz"), "--transitions", "400", "--seed", "1")
    dreamlink("train", "--data", str(tmp_path / "data.npz"), "--out", str(tmp_path / "m.pt"), "--epochs", "3",
              "--ensemble", "2", "--hidden", "32")
    dreamlink("export", "--checkpoint", str(tmp_path / "m.pt"), "--vehicle", vehicle, "--data",
              str(tmp_path / "hold.npz"), "--out", str(tmp_path / "bundle"))
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["spec"]["task"]["name"] == "swing_up"
    assert manifest["calibration"]["planner"]["samples"] == 256  # derived: nobody tuned this model
    with SitlProcess("gym", lockstep=True, seed=4, extra_args=("--vehicle", vehicle)) as sitl:
        dreamlink("run", "--bundle", str(tmp_path / "bundle"), "--connect", sitl.connect_string, "--lockstep",
                  "--ticks", "40", "--out", str(tmp_path / "flight"))
    ticks = np.load(tmp_path / "flight" / "ticks.npz")
    state = ticks["state"]
    assert state.shape == (40, 3)
    np.testing.assert_allclose(state[:, 0] ** 2 + state[:, 1] ** 2, 1.0, atol=1e-4)
    assert np.all(np.abs(ticks["action"]) <= 2.0) and np.ptp(state[:, 2]) > 0.1
