"""A world model that returns NaN for some inputs: the samples it poisons are left out, not the plan.

The model is a user-written point mass (onnx.helper, not made by dreamlink) whose next state is NaN
wherever the action exceeds a threshold, so which samples are non-finite is known from the samples
themselves. The numpy planner and the fused graph, seeded alike, must leave out the same samples,
count them alike and still plan on the rest; a model that is NaN everywhere makes the loop fall back
(`all_samples_nonfinite`) and nothing non-finite is ever sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import POINT, double_integrator, linear_world_model

from dreamlink.export.planner_graph import PlannerGraphConfig, write_planner
from dreamlink.runtime.fused import FusedPlanner
from dreamlink.runtime.loop import NONFINITE_EVENT_INTERVAL_S, SOURCE_HOLD, SOURCE_PLAN, ControlLoop, LoopConfig
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner, Plan, mppi_weights, shift_plan
from dreamlink.runtime.recorder import EVENTS_NAME, FlightRecorder
from dreamlink.runtime.session import ModelSession
from dreamlink.runtime.shield import ShieldLimits
from dreamlink.runtime.tasks import QuadraticTask, trajectory_cost

NAN_ABOVE = 1.3  # accel_mps2 past which the model's future is NaN
K, H = 64, 10
# sigma 0.6 m/s^2 around a warm start of 0: about one sample in seven crosses NAN_ABOVE somewhere in 10 steps
CONFIG = MppiConfig(samples=K, horizon=H, noise_sigma=0.3, temperature=0.5)
TASK = QuadraticTask("reach", target=(1.0, 0.0), state_weight=(1.0, 0.1), action_weight=(0.01,), terminal_weight=3.0)
STATE = np.array([0.2, -0.3], np.float32)
PLAN_TOL = 1e-4 * 2.0  # x action half range, as tests/test_fused_planner.py


def nan_above_model(path: Path, threshold: float, ensemble: int = 1) -> Path:
    """The double integrator, with next_state NaN for every row whose action exceeds `threshold`."""
    F, G = double_integrator(0.1)
    inits = [
        numpy_helper.from_array(F.T.copy(), "Ft"),
        numpy_helper.from_array(G.T.copy(), "Gt"),
        numpy_helper.from_array(np.array([threshold], np.float32), "threshold"),
        numpy_helper.from_array(np.array([np.nan], np.float32), "nan"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array((np.arange(ensemble, dtype=np.float32) * 0.01)[:, None, None], "offsets"),
    ]
    nodes = [
        helper.make_node("MatMul", ["state", "Ft"], ["xs"]),
        helper.make_node("MatMul", ["action", "Gt"], ["us"]),
        helper.make_node("Add", ["xs", "us"], ["lin"]),
        helper.make_node("Greater", ["action", "threshold"], ["bad"]),  # [B,1]
        helper.make_node("Where", ["bad", "nan", "zero"], ["poison"]),
    ]
    if ensemble == 1:
        nodes.append(helper.make_node("Add", ["lin", "poison"], ["next_state"]))  # [B,2]
    else:
        nodes += [
            helper.make_node("Add", ["lin", "poison"], ["mean_next"]),
            helper.make_node("Unsqueeze", ["mean_next", "axis0"], ["next3"]),
            helper.make_node("Add", ["next3", "offsets"], ["next_state"]),  # [E,B,2]
        ]
    graph = helper.make_graph(
        nodes, "nan_above",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["B", 2]),
         helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", 1])],
        [helper.make_tensor_value_info("next_state", TensorProto.FLOAT, ["B", 2] if ensemble == 1
                                       else [ensemble, "B", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def poisoned(samples: np.ndarray) -> np.ndarray:
    """[K,H,A] -> [K]: which samples the model turns NaN (once NaN, the state stays NaN)."""
    return (samples > NAN_ABOVE).any(axis=(1, 2))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nan_above_model(tmp_path_factory.mktemp("nan") / "wm.onnx", NAN_ABOVE, ensemble=3)


def numpy_planner(model: Path, seed: int = 7, config: MppiConfig = CONFIG) -> MppiPlanner:
    return MppiPlanner(ModelSession(model, POINT), POINT, TASK, config, np.random.default_rng(seed))


def test_weights_leave_out_non_finite_costs_and_are_nan_when_none_is_finite() -> None:
    w = mppi_weights(np.array([2.0, np.nan, 1.0, np.inf]), temperature=1.0)
    assert w[1] == 0.0 and w[3] == 0.0 and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w[[0, 2]], np.exp([-1.0, 0.0]) / np.exp([-1.0, 0.0]).sum())
    assert np.all(np.isnan(mppi_weights(np.array([np.nan, np.inf]), temperature=1.0)))


def test_numpy_planner_plans_on_the_finite_samples_and_counts_the_rest(model: Path) -> None:
    planner = numpy_planner(model)
    warm = planner.initial_plan()
    for tick in range(5):
        plan = planner.plan(STATE, warm, 0.02 * tick)
        bad = poisoned(planner._samples)
        assert 0 < bad.sum() < (K // 2 if tick == 0 else K), bad.sum()  # at first most samples finite, some not
        assert plan.nonfinite_samples == bad.sum() and plan.samples == K and not plan.all_samples_nonfinite
        assert np.all(np.isfinite(plan.actions)) and np.all(np.isfinite(plan.imagined))
        assert np.isfinite(plan.best_cost)
        # the plan is the exp(-cost/T) average of the finite samples alone
        costs = trajectory_cost(TASK, planner._traj[~bad], planner._samples[~bad])
        w = np.exp(-(costs - costs.min()) / CONFIG.temperature)
        want = np.tensordot(w / w.sum(), planner._samples[~bad], axes=1)
        np.testing.assert_allclose(plan.actions, want, rtol=0, atol=1e-5)
        warm = shift_plan(plan.actions)


@pytest.mark.parametrize("rollout", ["unrolled", "loop"])
def test_fused_graph_leaves_out_the_same_samples_as_the_numpy_planner(model: Path, rollout: str,
                                                                      tmp_path: Path) -> None:
    graph = write_planner(model, POINT, PlannerGraphConfig(K, H, rollout=rollout, chunk=24), tmp_path / "p.onnx")
    fused = FusedPlanner(graph, POINT, TASK, CONFIG, np.random.default_rng(7))
    ref = numpy_planner(model)
    warm_ref = warm_fused = ref.initial_plan()
    for _ in range(4):
        a = ref.plan(STATE, warm_ref, 0.0)
        b = fused.plan(STATE, warm_fused, 0.0)
        bad = poisoned(ref._samples)
        assert bad.any()
        assert b.nonfinite_samples == a.nonfinite_samples == bad.sum() and b.samples == K
        assert np.all(np.isinf(fused.costs[bad])) and np.all(np.isfinite(fused.costs[~bad]))
        finite_costs = trajectory_cost(TASK, ref._traj[~bad], ref._samples[~bad])
        np.testing.assert_allclose(fused.costs[~bad], finite_costs, rtol=0, atol=1e-5 * np.abs(finite_costs).max())
        assert np.all(np.isfinite(b.actions))
        np.testing.assert_allclose(b.actions, a.actions, rtol=0, atol=PLAN_TOL)
        np.testing.assert_allclose(b.imagined, a.imagined, rtol=0, atol=1e-4 * 5.0)
        assert b.best_cost == pytest.approx(a.best_cost, rel=1e-5)
        warm_ref, warm_fused = shift_plan(a.actions), shift_plan(b.actions)


def test_fused_cem_picks_its_elites_among_the_finite_samples(model: Path, tmp_path: Path) -> None:
    n_elite = 6
    graph = write_planner(model, POINT, PlannerGraphConfig(K, H, method="cem", elites=n_elite), tmp_path / "c.onnx")
    fused = FusedPlanner(graph, POINT, TASK, CONFIG, np.random.default_rng(7))
    ref = numpy_planner(model)  # same noise, same samples: the numpy planner's arrays are the reference
    warm = np.full((H, 1), 0.5, np.float32)  # closer to the threshold: more than half the samples lost
    plan = fused.plan(STATE, warm, 0.0)
    ref.plan(STATE, warm, 0.0)
    bad = poisoned(ref._samples)
    costs = trajectory_cost(TASK, ref._traj, ref._samples)
    costs[bad] = np.inf
    assert np.isinf(costs).sum() == plan.nonfinite_samples == bad.sum() and K - bad.sum() > n_elite
    elite = ref._samples[np.argsort(costs, kind="stable")[:n_elite]]
    np.testing.assert_allclose(plan.actions, elite.mean(axis=0), rtol=0, atol=PLAN_TOL)
    np.testing.assert_allclose(fused.elite_std, elite.std(axis=0), rtol=0, atol=PLAN_TOL)


def test_fused_cem_with_fewer_finite_samples_than_elites_averages_those(tmp_path: Path) -> None:
    model = nan_above_model(tmp_path / "wm.onnx", 0.45)
    n_elite = 16
    graph = write_planner(model, POINT, PlannerGraphConfig(K, H, method="cem", elites=n_elite), tmp_path / "c.onnx")
    fused = FusedPlanner(graph, POINT, TASK, CONFIG, np.random.default_rng(3))
    ref = numpy_planner(model, seed=3)
    warm = np.full((H, 1), 0.4, np.float32)
    plan = fused.plan(STATE, warm, 0.0)
    ref.plan(STATE, warm, 0.0)
    finite = ~((ref._samples > 0.45).any(axis=(1, 2)))
    assert 0 < finite.sum() < n_elite and plan.nonfinite_samples == K - finite.sum()
    np.testing.assert_allclose(plan.actions, ref._samples[finite].mean(axis=0), rtol=0, atol=PLAN_TOL)


def test_a_graph_exported_before_the_count_still_loads_and_reports_none(model: Path, tmp_path: Path) -> None:
    path = write_planner(model, POINT, PlannerGraphConfig(K, H), tmp_path / "p.onnx")
    old = onnx.load(str(path))
    kept = [o for o in old.graph.output if o.name != "nonfinite"]
    del old.graph.output[:]
    old.graph.output.extend(kept)
    onnx.save(old, str(tmp_path / "old.onnx"))
    plan = FusedPlanner(tmp_path / "old.onnx", POINT, TASK, CONFIG, np.random.default_rng(7)).plan(
        STATE, np.zeros((H, 1), np.float32), 0.0)
    assert plan.nonfinite_samples == 0 and plan.samples == 0 and not plan.all_samples_nonfinite
    assert np.all(np.isfinite(plan.actions))


# --- the loop -----------------------------------------------------------------------------------------


class _Profile:
    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []

    def state(self) -> tuple[float, np.ndarray, float]:
        return 0.0, STATE.copy(), 0.0

    def send(self, action: np.ndarray) -> None:
        self.sent.append(np.array(action))

    def emergency_stop(self) -> None:
        pass


class _StepClock:
    """Simulated time: sleeping to a deadline is arriving there."""

    def __init__(self) -> None:
        self.t_s = 0.0

    def now(self) -> float:
        return self.t_s

    def sleep_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


def _fly(planner: MppiPlanner | FusedPlanner, out: Path, ticks: int) -> tuple[ControlLoop, _Profile, list[dict]]:
    profile = _Profile()
    recorder = FlightRecorder(out, POINT, H, ticks)
    # a generous latency limit: this test is about NaN, not about a loaded machine's timing
    loop = ControlLoop(profile, planner, ShieldLimits.from_spec(POINT), _StepClock(),  # type: ignore[arg-type]
                       LoopConfig(rate_hz=50.0, max_plan_latency_s=10.0), recorder)
    stats = loop.run(ticks)
    recorder.close()
    events = [json.loads(line) for line in (out / EVENTS_NAME).read_text().splitlines()]
    events.append({"event": "_stats", **stats.to_dict()})
    return loop, profile, events


def test_the_loop_flies_plans_with_some_nonfinite_samples_and_counts_them(model: Path, tmp_path: Path) -> None:
    ticks = 150  # 3 s at 50 Hz
    loop, profile, events = _fly(numpy_planner(model), tmp_path / "f", ticks)
    stats = events.pop()
    assert stats["fallbacks"] == {}
    assert 0 < stats["ticks_with_nonfinite"] <= ticks
    assert stats["nonfinite_samples_total"] >= stats["ticks_with_nonfinite"]
    assert np.all(np.isfinite(profile.sent))
    logged = [e for e in events if e["event"] == "nonfinite_samples"]
    # the first tick with one, then at most one a second: not one per tick
    assert 1 <= len(logged) <= ticks * loop.config.period_s / NONFINITE_EVENT_INTERVAL_S + 1
    assert logged[-1]["samples_total"] <= stats["nonfinite_samples_total"]
    assert sum(e["samples_since_last"] for e in logged) == logged[-1]["samples_total"]
    assert all(e["of"] == K for e in logged)


@pytest.mark.parametrize("planner_kind", ["numpy", "fused"])
def test_a_model_nan_everywhere_falls_back_with_that_reason_and_sends_no_nan(planner_kind: str,
                                                                             tmp_path: Path) -> None:
    F, G = double_integrator(0.1)
    wm = linear_world_model(tmp_path / "nan.onnx", F, G, bias=np.full(2, np.nan, np.float32))
    planner: MppiPlanner | FusedPlanner
    if planner_kind == "numpy":
        planner = numpy_planner(wm)
    else:
        graph = write_planner(wm, POINT, PlannerGraphConfig(K, H), tmp_path / "p.onnx")
        planner = FusedPlanner(graph, POINT, TASK, CONFIG, np.random.default_rng(7))
    plan = planner.plan(STATE, planner.initial_plan(), 0.0)
    assert plan.all_samples_nonfinite and plan.nonfinite_samples == K and plan.best_cost == np.inf
    assert not np.any(np.isfinite(plan.actions))  # no plan is made up from nothing
    ticks = 20
    _, profile, events = _fly(planner, tmp_path / "f", ticks)
    stats = events.pop()
    assert stats["fallbacks"] == {"all_samples_nonfinite": ticks}
    assert stats["nonfinite_samples_total"] == ticks * K and stats["ticks_with_nonfinite"] == ticks
    sent = np.array(profile.sent)
    assert sent.shape == (ticks, 1) and np.all(np.isfinite(sent))
    np.testing.assert_array_equal(sent, 0.0)  # the hold action, every tick
    fallbacks = [e for e in events if e["event"] == "fallback"]
    assert len(fallbacks) == ticks and {e["reason"] for e in fallbacks} == {"all_samples_nonfinite"}
    ticks_log = np.load(tmp_path / "f" / "ticks.npz")
    assert set(ticks_log["source"].tolist()) == {SOURCE_HOLD} and SOURCE_HOLD != SOURCE_PLAN


def test_a_plan_without_a_sample_count_keeps_the_old_reason(tmp_path: Path) -> None:
    """A planner graph exported before the count: a NaN plan is refused as `nonfinite_plan`, as it always was."""
    nan_plan = Plan(np.full((H, 1), np.nan, np.float32), 0.0, STATE, np.zeros((H + 1, 2), np.float32),
                    float("nan"), 0.0)
    assert nan_plan.nonfinite_samples == 0 and not nan_plan.all_samples_nonfinite

    class _NanPlanner(MppiPlanner):
        def plan(self, *args: object, **kwargs: object) -> Plan:  # type: ignore[override]
            return nan_plan

    F, G = double_integrator(0.1)
    planner = _NanPlanner(ModelSession(linear_world_model(tmp_path / "wm.onnx", F, G), POINT), POINT, TASK, CONFIG,
                          np.random.default_rng(0))
    _, profile, events = _fly(planner, tmp_path / "f", 5)
    assert events.pop()["fallbacks"] == {"nonfinite_plan": 5}
    assert np.all(np.isfinite(profile.sent))
