"""The fused planner graph against the numpy reference: same noise in, same costs and plan out.

`FusedPlanner` and `MppiPlanner` draw their noise with the same generator call, so seeded alike
they score the same K samples; any difference is the graph's arithmetic (float32 reduction order),
held to the tolerances below. The world models are a user-written linear ensemble (onnx.helper,
not made by dreamlink) and a dreamlink `EnsembleWorldModel` export.

Tolerances (float32 throughout): costs within 1e-5 of the largest cost (relative); plans within
1e-4 of the action half range; imagined trajectories within 1e-4 of the state half range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx_models import POINT, double_integrator, linear_world_model

from dreamlink.export.onnx_export import export_world_model
from dreamlink.export.pack import pack_bundle
from dreamlink.export.planner_graph import (
    PlannerGraphConfig,
    PlannerGraphError,
    compose_planner,
    matmul_flops,
    write_planner,
)
from dreamlink.export.planner_graph_pack import pack_planner_bundle
from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig
from dreamlink.runtime.fused import FusedPlanner
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner, shift_plan
from dreamlink.runtime.session import ModelSession
from dreamlink.runtime.tasks import QuadraticTask, cartpole_balance, trajectory_cost
from dreamlink.spec import CARTPOLE, VehicleSpec

COST_RTOL = 1e-5
PLAN_TOL = 1e-4  # x action half range
STATE_TOL = 1e-4  # x state half range

POINT_TASK = QuadraticTask(
    "reach", target=(1.0, 0.0), state_weight=(1.0, 0.1), action_weight=(0.01,), terminal_weight=3.0,
    walls=((0, 0.5),), wall_penalty=10.0,  # the wall sits between start and target: some samples pay it
)


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    F, G = double_integrator(0.1)
    return linear_world_model(tmp_path_factory.mktemp("lin") / "wm.onnx", F, G, ensemble=3, spread=0.01)


@pytest.fixture(scope="module")
def dreamlink_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EnsembleWorldModel]:
    torch.manual_seed(0)
    model = EnsembleWorldModel(CARTPOLE, WorldModelConfig(hidden=32, layers=2, ensemble_size=3))
    rng = np.random.default_rng(0)
    # Non-trivial normalisation, so the graph's Sub/Div inside the model is exercised too.
    model.set_normalisation(rng.normal(0.1, 0.5, (256, 4)), rng.normal(0.0, 3.0, (256, 1)),
                            rng.normal(0.0, 0.02, (256, 4)))
    path = export_world_model(model, CARTPOLE, tmp_path_factory.mktemp("dl") / "wm.onnx")
    return path, model


def _half(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (high - low) / 2.0


def _compare_mppi(wm: Path, spec: VehicleSpec, task: QuadraticTask, graph_cfg: PlannerGraphConfig,
                  state: np.ndarray, tmp_path: Path, ticks: int = 4, noise_smoothing: float = 0.0,
                  prior: np.ndarray | None = None) -> None:
    cfg = MppiConfig(samples=graph_cfg.samples, horizon=graph_cfg.horizon, noise_sigma=0.5, temperature=0.5,
                     noise_smoothing=noise_smoothing)
    graph = write_planner(wm, spec, graph_cfg, tmp_path / "planner.onnx")
    ref = MppiPlanner(ModelSession(wm, spec), spec, task, cfg, np.random.default_rng(7))
    fused = FusedPlanner(graph, spec, task, cfg, np.random.default_rng(7))
    warm_ref = warm_fused = np.clip(np.full((cfg.horizon, spec.action_dim), 0.4, np.float32),
                                    spec.action_low, spec.action_high)
    # A tracking reference [H,S] on the middle tick; the ticks around it use the task's fixed target.
    ramp = np.linspace(0.0, 1.0, cfg.horizon, dtype=np.float32)[:, None]
    tracking = (ramp * (spec.state_high - spec.state_low) * 0.1).astype(np.float32)
    for tick in range(ticks):  # several ticks: warm start and generator stay in step
        reference = tracking if tick == 1 else None
        a = ref.plan(state, warm_ref, 0.0, reference, prior)
        b = fused.plan(state, warm_fused, 0.0, reference, prior)
        ref_costs = trajectory_cost(task, ref._traj, ref._samples, reference)
        np.testing.assert_allclose(fused.costs, ref_costs, rtol=0, atol=COST_RTOL * np.abs(ref_costs).max())
        np.testing.assert_allclose(b.actions, a.actions, rtol=0,
                                   atol=PLAN_TOL * _half(spec.action_low, spec.action_high).max())
        np.testing.assert_allclose(b.imagined, a.imagined, rtol=0,
                                   atol=STATE_TOL * _half(spec.state_low, spec.state_high).max())
        assert b.best_cost == pytest.approx(a.best_cost, rel=COST_RTOL)
        assert b.disagreement == pytest.approx(a.disagreement, rel=1e-4, abs=1e-7)
        assert b.made_at_s == 0.0 and np.array_equal(b.from_state, state)
        warm_ref, warm_fused = shift_plan(a.actions), shift_plan(b.actions)
    # The update did something: the new plan is not the warm start, and not every sample cost the same.
    assert np.ptp(fused.costs) > 0
    assert np.abs(b.actions - 0.4).max() > 1e-3


@pytest.mark.parametrize(
    "graph_cfg",
    [
        PlannerGraphConfig(64, 10, chunk=0),
        PlannerGraphConfig(64, 10, chunk=24),  # 24 + 24 + 16: a ragged last chunk
        PlannerGraphConfig(64, 10, rollout="loop"),
    ],
    ids=["unrolled", "unrolled-chunked", "loop"],
)
def test_fused_mppi_matches_reference_on_user_written_model(linear_model: Path, graph_cfg: PlannerGraphConfig,
                                                            tmp_path: Path) -> None:
    _compare_mppi(linear_model, POINT, POINT_TASK, graph_cfg, np.array([0.2, -0.3], np.float32), tmp_path)


def test_fused_mppi_matches_reference_with_smooth_noise(linear_model: Path, tmp_path: Path) -> None:
    _compare_mppi(linear_model, POINT, POINT_TASK, PlannerGraphConfig(32, 10), np.array([0.2, -0.3], np.float32),
                  tmp_path, noise_smoothing=0.8)


def test_fused_mppi_matches_reference_with_a_policy_prior(linear_model: Path, tmp_path: Path) -> None:
    prior = np.linspace(-1.5, 1.5, 10, dtype=np.float32)[:, None]  # far from the warm start's 0.4
    _compare_mppi(linear_model, POINT, POINT_TASK, PlannerGraphConfig(32, 10), np.array([0.2, -0.3], np.float32),
                  tmp_path, noise_smoothing=0.5, prior=prior)


def test_a_prior_seeds_its_share_of_the_samples_and_sample_one_is_the_prior(linear_model: Path) -> None:
    cfg = MppiConfig(samples=40, horizon=10, noise_sigma=0.1, temperature=0.5, prior_share=0.25)
    planner = MppiPlanner(ModelSession(linear_model, POINT), POINT, POINT_TASK, cfg, np.random.default_rng(3))
    warm = np.full((10, 1), 0.4, np.float32)
    prior = np.full((10, 1), -1.5, np.float32)
    planner.plan(np.array([0.2, -0.3], np.float32), warm, 0.0, None, prior)
    samples = planner._samples[:, :, 0]
    assert cfg.prior_rows() == 10
    assert np.array_equal(samples[0], warm[:, 0]) and np.array_equal(samples[1], prior[:, 0])
    around_prior = samples[2:11].mean(axis=1)
    around_warm = samples[11:].mean(axis=1)
    assert np.all(np.abs(around_prior + 1.5) < 0.5) and np.all(np.abs(around_warm - 0.4) < 0.5)


@pytest.mark.parametrize("rollout", ["unrolled", "loop"])
def test_fused_mppi_matches_reference_on_dreamlink_model(dreamlink_model: tuple[Path, EnsembleWorldModel],
                                                         rollout: str, tmp_path: Path) -> None:
    wm, _ = dreamlink_model
    _compare_mppi(wm, CARTPOLE, cartpole_balance(CARTPOLE), PlannerGraphConfig(48, 8, rollout=rollout, chunk=32),
                  np.array([0.1, 0.0, 0.05, -0.2], np.float32), tmp_path)


def _cem_reference(session: ModelSession, spec: VehicleSpec, task: QuadraticTask, state: np.ndarray,
                   warm: np.ndarray, noise: np.ndarray, sigma: np.ndarray, n_elite: int) -> dict[str, np.ndarray]:
    """A plain numpy CEM step: samples around the warm start (sample 0 = warm), ensemble-mean
    rollout, trajectory_cost, mean and std of the n lowest-cost samples."""
    K, H, _ = noise.shape
    scaled = noise * sigma
    scaled[0] = 0.0
    samples = np.clip(warm[None] + scaled, spec.action_low, spec.action_high)
    traj = np.empty((K, H + 1, spec.state_dim), np.float32)
    traj[:, 0] = state
    for h in range(H):
        traj[:, h + 1] = session.predict(traj[:, h], np.ascontiguousarray(samples[:, h])).mean(axis=0)
    costs = trajectory_cost(task, traj, samples)
    elite = samples[np.argsort(costs, kind="stable")[:n_elite]]
    return {"costs": costs, "plan": elite.mean(axis=0), "std": elite.std(axis=0),
            "imagined": traj[int(np.argmin(costs))]}


@pytest.mark.parametrize("which", ["user-written", "dreamlink"])
def test_fused_cem_matches_numpy_reference(which: str, linear_model: Path,
                                           dreamlink_model: tuple[Path, EnsembleWorldModel], tmp_path: Path) -> None:
    if which == "user-written":
        wm, spec, task, state = linear_model, POINT, POINT_TASK, np.array([0.2, -0.3], np.float32)
    else:
        wm, spec, task = dreamlink_model[0], CARTPOLE, cartpole_balance(CARTPOLE)
        state = np.array([0.1, 0.0, 0.05, -0.2], np.float32)
    K, H, n_elite = 64, 8, 6
    cfg = MppiConfig(samples=K, horizon=H, noise_sigma=0.4, temperature=1.0)
    graph = write_planner(wm, spec, PlannerGraphConfig(K, H, method="cem", elites=n_elite, chunk=40),
                          tmp_path / "cem.onnx")
    fused = FusedPlanner(graph, spec, task, cfg, np.random.default_rng(11))
    assert fused.method == "cem"
    warm = np.clip(np.full((H, spec.action_dim), 0.3, np.float32), spec.action_low, spec.action_high)
    plan = fused.plan(state, warm, 1.5)
    noise = np.random.default_rng(11).standard_normal((K, H, spec.action_dim), dtype=np.float32)
    sigma = (cfg.noise_sigma * _half(spec.action_low, spec.action_high)).astype(np.float32)
    ref = _cem_reference(ModelSession(wm, spec), spec, task, state, warm, noise, sigma, n_elite)
    np.testing.assert_allclose(fused.costs, ref["costs"], rtol=0, atol=COST_RTOL * np.abs(ref["costs"]).max())
    a_tol = PLAN_TOL * _half(spec.action_low, spec.action_high).max()
    np.testing.assert_allclose(plan.actions, ref["plan"], rtol=0, atol=a_tol)
    np.testing.assert_allclose(fused.elite_std, ref["std"], rtol=0, atol=a_tol)
    np.testing.assert_allclose(plan.imagined, ref["imagined"], rtol=0,
                               atol=STATE_TOL * _half(spec.state_low, spec.state_high).max())
    assert plan.made_at_s == 1.5
    assert fused.elite_std.max() > 0  # the elites differ: a refit, not a copy


def test_cem_needs_a_cem_graph_for_elite_std(linear_model: Path, tmp_path: Path) -> None:
    graph = write_planner(linear_model, POINT, PlannerGraphConfig(16, 4), tmp_path / "p.onnx")
    fused = FusedPlanner(graph, POINT, POINT_TASK, MppiConfig(samples=16, horizon=4), np.random.default_rng(0))
    with pytest.raises(AttributeError, match="MPPI"):
        _ = fused.elite_std


def test_graph_shapes_must_match_the_planner_config(linear_model: Path, tmp_path: Path) -> None:
    graph = write_planner(linear_model, POINT, PlannerGraphConfig(32, 5), tmp_path / "p.onnx")
    with pytest.raises(ValueError, match=r"'noise'.*samples=64, horizon=5"):
        FusedPlanner(graph, POINT, POINT_TASK, MppiConfig(samples=64, horizon=5), np.random.default_rng(0))


def test_compose_refuses_a_model_that_breaks_the_contract(tmp_path: Path) -> None:
    F, G = double_integrator()
    point_model = linear_world_model(tmp_path / "w.onnx", F, G)
    with pytest.raises(PlannerGraphError, match="state/action widths 2/1, but spec 'cartpole' has 4/1"):
        compose_planner(point_model, CARTPOLE, PlannerGraphConfig(8, 3))
    inconsistent = linear_world_model(tmp_path / "bad.onnx", F, G, state_dim=3)
    with pytest.raises(PlannerGraphError, match=r"next_state is \['B', 2\]; expected \[B,3\]"):
        compose_planner(inconsistent, POINT, PlannerGraphConfig(8, 3))
    model = onnx.load(str(linear_world_model(tmp_path / "ok.onnx", F, G)))
    model.graph.input[1].name = "act"
    with pytest.raises(PlannerGraphError, match=r"inputs are \['act', 'state'\]"):
        compose_planner(model, POINT, PlannerGraphConfig(8, 3))


def test_task_walls_become_one_limit_per_component(linear_model: Path, tmp_path: Path) -> None:
    graph = write_planner(linear_model, POINT, PlannerGraphConfig(16, 4), tmp_path / "p.onnx")
    twice = QuadraticTask("x", (0.0, 0.0), (1.0, 1.0), (0.0,), walls=((0, 1.0), (0, 2.0)))
    with pytest.raises(ValueError, match="two walls on 'pos_m'"):
        FusedPlanner(graph, POINT, twice, MppiConfig(samples=16, horizon=4), np.random.default_rng(0))


def test_set_task_moves_the_target_without_rebuilding(linear_model: Path, tmp_path: Path) -> None:
    graph = write_planner(linear_model, POINT, PlannerGraphConfig(128, 10), tmp_path / "p.onnx")
    cfg = MppiConfig(samples=128, horizon=10, noise_sigma=0.5, temperature=0.1)
    fused = FusedPlanner(graph, POINT, POINT_TASK, cfg, np.random.default_rng(0))
    state = np.zeros(2, np.float32)
    ahead = fused.plan(state, fused.initial_plan(), 0.0)
    fused.set_task(QuadraticTask("back", (-1.0, 0.0), (1.0, 0.1), (0.01,)))
    behind = fused.plan(state, fused.initial_plan(), 0.0)
    assert ahead.actions[0, 0] > 0 > behind.actions[0, 0]  # accelerate towards whichever target


def test_matmul_flops_counts_the_ensemble_layers(dreamlink_model: tuple[Path, EnsembleWorldModel]) -> None:
    wm, _ = dreamlink_model
    E, hidden, S, A = 3, 32, 4, 1
    # dreamlink's per-member layout carries layer 0's bias as a weight row on a ones column: +1 input
    expected = 2 * 10 * E * ((S + A + 1) * hidden + hidden * hidden + hidden * S)
    assert matmul_flops(wm, batch=10) == expected


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_planner_bundle_round_trip(dreamlink_model: tuple[Path, EnsembleWorldModel], precision: str,
                                   tmp_path: Path) -> None:
    _, model = dreamlink_model
    src, _ = pack_bundle(tmp_path / "src", CARTPOLE, model, calibration={"horizon": 8})
    cfg = PlannerGraphConfig(64, 8)
    bundle = pack_planner_bundle(src.root, tmp_path / "out", cfg, noise_sigma=0.25, temperature=2.0,
                                 precision=precision)
    assert bundle.manifest.files["planner"].precision == precision
    calib = bundle.manifest.calibration
    assert calib["horizon"] == 8 and calib["planner"]["samples"] == 64 and calib["planner"]["temperature"] == 2.0
    assert calib["session"]["intra_op_threads"] == 1 and calib["session"]["graph_optimization"] == "disable"
    task = cartpole_balance(CARTPOLE)
    fused = FusedPlanner.from_bundle(bundle, task, np.random.default_rng(5))
    assert (fused.config.samples, fused.config.horizon, fused.config.noise_sigma) == (64, 8, 0.25)
    state = np.array([0.0, 0.1, 0.02, 0.0], np.float32)
    plan = fused.plan(state, fused.initial_plan(), 0.0)
    ref = MppiPlanner(ModelSession(bundle.path_of("world_model"), CARTPOLE), CARTPOLE, task, fused.config,
                      np.random.default_rng(5)).plan(state, fused.initial_plan(), 0.0)
    assert np.all(np.isfinite(plan.actions))
    assert np.all(plan.actions >= CARTPOLE.action_low) and np.all(plan.actions <= CARTPOLE.action_high)
    # fp32 is the reference update; int8 may move the plan, but by a small share of the action range.
    tol = PLAN_TOL if precision == "fp32" else 0.05
    np.testing.assert_allclose(plan.actions, ref.actions, rtol=0, atol=tol * 10.0)


def test_from_bundle_without_planner_says_how_to_get_one(dreamlink_model: tuple[Path, EnsembleWorldModel],
                                                         tmp_path: Path) -> None:
    from dreamlink.bundle import BundleError

    src, _ = pack_bundle(tmp_path / "src", CARTPOLE, dreamlink_model[1])
    with pytest.raises(BundleError, match="no 'planner' file"):
        FusedPlanner.from_bundle(src, cartpole_balance(CARTPOLE), np.random.default_rng(0))
