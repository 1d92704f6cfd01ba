"""The distilled policy: it learns the planner's actions, exports with its target input, loads from a bundle,
and onboard it is the first fallback and seeds a share of the samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_models import POINT, double_integrator, linear_world_model

from dreamlink.bundle import BundleError, load_bundle, write_bundle
from dreamlink.export.pack import add_policy
from dreamlink.learning.policy import DistilledPolicy, PolicyConfig, distill_policy, planner_labels
from dreamlink.runtime.loop import SOURCE_HOLD, SOURCE_POLICY, ControlLoop, LoopConfig
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner
from dreamlink.runtime.policy import PolicySession
from dreamlink.runtime.session import ModelSession
from dreamlink.runtime.shield import ShieldLimits
from dreamlink.runtime.tasks import QuadraticTask

TASK = QuadraticTask("reach", target=(1.0, 0.0), state_weight=(1.0, 0.1), action_weight=(0.01,), terminal_weight=3.0)


def _expert(state: np.ndarray, target: np.ndarray) -> np.ndarray:
    """What a planner on the point mass does, near enough: PD toward the target, within the limits."""
    return np.clip(2.0 * (target[:, :1] - state[:, :1]) - 1.5 * state[:, 1:], -2.0, 2.0).astype(np.float32)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
    target = np.zeros_like(state)
    target[:, 0] = rng.uniform(-2, 2, n)
    return state, target, _expert(state, target)


@pytest.fixture(scope="module")
def trained() -> DistilledPolicy:
    state, target, action = _data(3000, 0)
    result = distill_policy(POINT, state, target, action, PolicyConfig(hidden=32, epochs=25, lookahead_steps=3))
    # it learned the law: far better than always answering the mean action
    assert result.holdout_rmse["accel_mps2"] < 0.2 * result.holdout_baseline_rmse["accel_mps2"], result
    return result.model


@pytest.fixture()
def bundle_with_policy(trained: DistilledPolicy, tmp_path: Path) -> Path:
    F, G = double_integrator(0.02)
    wm = linear_world_model(tmp_path / "wm.onnx", F, G)
    bundle = write_bundle(tmp_path / "bundle", POINT, {"world_model": (wm, {"precision": "fp32", "opset": 17})},
                          calibration={"planner": {"samples": 32, "horizon": 8}})
    return add_policy(bundle, trained, {"policy_lookahead_steps": 3}).root


def test_distil_refuses_mismatched_shapes() -> None:
    state, target, action = _data(100, 1)
    with pytest.raises(ValueError, match="expected"):
        distill_policy(POINT, state, target[:, :1], action, PolicyConfig(epochs=1))


def test_the_policy_never_commands_outside_the_action_limits() -> None:
    policy = DistilledPolicy(POINT, PolicyConfig(hidden=8))
    with torch.no_grad():
        for p in policy.parameters():
            p.fill_(50.0)  # saturate on purpose
        out = policy(torch.full((4, 2), 3.0), torch.full((4, 2), -3.0)).numpy()
    assert np.all(out >= -2.0) and np.all(out <= 2.0)


def test_bundle_keeps_the_policy_with_its_target_input_and_onnx_matches_torch(bundle_with_policy: Path,
                                                                             trained: DistilledPolicy) -> None:
    bundle = load_bundle(bundle_with_policy)
    assert set(bundle.manifest.files) == {"world_model", "policy"}
    assert bundle.manifest.training["policy_parity"]["ok"] is True
    session = PolicySession.from_bundle(bundle)
    assert session is not None and session.lookahead_steps == 3
    state, target, _ = _data(16, 2)
    with torch.no_grad():
        want = trained(torch.from_numpy(state), torch.from_numpy(target)).numpy()
    got = np.stack([session.act(s, g) for s, g in zip(state, target, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_bundle_without_policy_gives_no_session_and_a_bad_lookahead_is_refused(bundle_with_policy: Path,
                                                                              tmp_path: Path) -> None:
    from dreamlink.bundle import update_manifest

    F, G = double_integrator(0.02)
    wm = linear_world_model(tmp_path / "wm2.onnx", F, G)
    plain = write_bundle(tmp_path / "plain", POINT, {"world_model": (wm, {"precision": "fp32", "opset": 17})})
    assert PolicySession.from_bundle(plain) is None
    bad = update_manifest(load_bundle(bundle_with_policy), training={"policy_lookahead_steps": -2})
    with pytest.raises(BundleError, match="policy_lookahead_steps"):
        PolicySession.from_bundle(bad)


def test_prior_follows_the_imagined_states_and_the_reference(bundle_with_policy: Path) -> None:
    session = PolicySession.from_bundle(load_bundle(bundle_with_policy))
    assert session is not None
    imagined = np.stack([np.linspace(0, 1, 9), np.zeros(9)], axis=1).astype(np.float32)  # [H+1,S], H = 8
    reference = np.zeros((8, 2), np.float32)
    reference[:, 0] = 1.0
    prior = session.prior(np.array([-1.0, 0.0], np.float32), imagined, reference, np.zeros(2, np.float32), 8)
    assert prior.shape == (8, 1)
    # the first step acts on the real state (far from the target: push hard), later ones on imagined states
    # closing in on it (push less)
    assert prior[0, 0] > prior[-1, 0] + 0.5


class _Profile:
    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []

    def state(self) -> tuple[float, np.ndarray, float]:
        return 0.0, np.array([-1.0, 0.0], np.float32), 0.0

    def send(self, action: np.ndarray) -> None:
        self.sent.append(np.array(action))

    def emergency_stop(self) -> None:
        pass


class _FailingPlanner(MppiPlanner):
    def plan(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise RuntimeError("session died")


def _loop(bundle_dir: Path, policy: PolicySession | None) -> tuple[ControlLoop, _Profile]:
    bundle = load_bundle(bundle_dir)
    planner = _FailingPlanner(ModelSession(bundle.path_of("world_model"), POINT), POINT, TASK,
                              MppiConfig(samples=16, horizon=8), np.random.default_rng(0))
    profile = _Profile()

    class _Clock:
        def now(self) -> float:
            return 0.0

        def sleep_until(self, t_s: float) -> None:
            pass

    return ControlLoop(profile, planner, ShieldLimits.from_spec(POINT), _Clock(), LoopConfig(), policy=policy), profile


def test_when_planning_fails_the_policy_flies_first_then_the_hold(bundle_with_policy: Path) -> None:
    policy = PolicySession.from_bundle(load_bundle(bundle_with_policy))
    assert policy is not None
    loop, profile = _loop(bundle_with_policy, policy)
    action = loop.tick(0.0, 0.0)
    want = policy.act(np.array([-1.0, 0.0], np.float32), np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(action, want, atol=1e-6)
    assert action[0] > 0.5  # toward the task's target at +1
    np.testing.assert_array_equal(profile.sent[-1], action)
    assert loop.counters.fallbacks == {"planner_error": 1}
    no_policy, _ = _loop(bundle_with_policy, None)
    no_policy.tick(0.0, 0.0)
    assert no_policy.counters.fallbacks == {"planner_error": 1}
    assert SOURCE_POLICY != SOURCE_HOLD


def test_planner_labels_keep_only_the_planners_own_ticks() -> None:
    ticks = {"source": np.array([0, 2, 0, 3]), "state": np.arange(8, dtype=np.float32).reshape(4, 2),
             "action": np.arange(4, dtype=np.float32).reshape(4, 1), "t_s": np.arange(4.0)}
    state, target, action = planner_labels(ticks, None, 3, np.array([1.0, 0.0], np.float32))
    assert action[:, 0].tolist() == [0.0, 2.0] and target.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert state.tolist() == [[0.0, 1.0], [4.0, 5.0]]
    _, target, _ = planner_labels(ticks, lambda t: np.full((5, 2), t, np.float32), 3, np.zeros(2, np.float32))
    assert target[:, 0].tolist() == [0.0, 2.0]


def test_a_slow_failsafe_request_does_not_stop_the_loop_and_the_e_stop_still_acts(bundle_with_policy: Path) -> None:
    """Asking the vehicle for its failsafe waits for acks (seconds on a bad link): the loop keeps holding on
    its own thread meanwhile, asks once per request in flight, and an e-stop acts at the next tick."""
    import threading

    loop, profile = _loop(bundle_with_policy, None)
    answer = threading.Event()
    asked: list[float] = []

    def slow_failsafe() -> str:
        asked.append(1.0)
        answer.wait(10.0)
        return "RTL"

    stopped: list[bool] = []
    profile.state = lambda: (0.0, np.array([-1.0, 0.0], np.float32), 99.0)  # type: ignore[method-assign]
    profile.emergency_stop = lambda: stopped.append(True)  # type: ignore[method-assign]
    loop.failsafe, loop.estop = slow_failsafe, threading.Event()
    period = loop.config.period_s
    for i in range(200):  # 4 s of stale telemetry at 50 Hz, the request unanswered all along
        loop.tick(i * period, 0.0)
    assert loop.counters.ticks == 200 and loop.counters.stale_ticks == 200
    assert loop.counters.failsafes == 1 and len(asked) == 1
    assert not loop.wait_for_failsafe_request(0.05)  # still waiting for the vehicle
    loop.estop.set()
    loop.tick(200 * period, 0.0)
    assert stopped == [True] and loop.stopped_by_estop
    answer.set()
    assert loop.wait_for_failsafe_request(5.0)
