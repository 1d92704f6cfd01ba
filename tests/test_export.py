"""torch -> ONNX export: parity with ONNX Runtime, the I/O contract, and the spec in metadata_props."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dreamlink.bundle import check_onnx_contract
from dreamlink.export.onnx_export import ExportError, check_parity, export_policy, export_world_model, read_metadata
from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig
from dreamlink.spec import CARTPOLE, VehicleSpec

ATOL, RTOL = 1e-4, 1e-3


def ensemble(E: int = 5, hidden: int = 64) -> EnsembleWorldModel:
    torch.manual_seed(0)
    model = EnsembleWorldModel(CARTPOLE, WorldModelConfig(hidden=hidden, ensemble_size=E))
    # Cart-pole-like statistics, so the normalisation buffers are not the identity.
    rng = np.random.default_rng(0)
    state = rng.normal([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.5, 3.0], size=(500, 4))
    model.set_normalisation(state, rng.uniform(-10, 10, size=(500, 1)), rng.normal(0, [0.02, 0.2, 0.05, 0.4], (500, 4)))
    return model


class TwoLayerMLP(nn.Module):
    """What a user brings: a plain MLP predicting the next state, no dreamlink base class."""

    def __init__(self, S: int = 4, A: int = 1, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(S + A, hidden)
        self.fc2 = nn.Linear(hidden, S)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return state + self.fc2(torch.tanh(self.fc1(torch.cat([state, action], dim=-1))))


def test_ensemble_parity(tmp_path):
    model = ensemble()
    path = export_world_model(model, CARTPOLE, tmp_path / "wm.onnx")
    result = check_parity(model, path, CARTPOLE, n_samples=1024, atol=ATOL, rtol=RTOL)
    print(f"ensemble parity: {result}, size {path.stat().st_size} B")
    assert result.ok and result.n_samples == 1024
    assert result.max_abs_err < ATOL
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["state", "action"]
    assert sess.get_outputs()[0].name == "next_state"
    assert sess.get_outputs()[0].shape[0] == 5 and sess.get_outputs()[0].shape[2] == 4
    check_onnx_contract(path, "world_model", CARTPOLE, ensemble_size=5)
    assert model.training  # export and parity restore the caller's mode


def test_user_two_layer_mlp_parity(tmp_path):
    torch.manual_seed(1)
    mlp = TwoLayerMLP()
    path = export_world_model(mlp, CARTPOLE, tmp_path / "mlp.onnx")
    result = check_parity(mlp, path, CARTPOLE, atol=ATOL, rtol=RTOL)
    print(f"user MLP parity: {result}")
    assert result.ok and result.max_abs_err < ATOL
    check_onnx_contract(path, "world_model", CARTPOLE, ensemble_size=1)
    assert read_metadata(path)["dreamlink.ensemble_size"] == "1"
    out = ort.InferenceSession(str(path)).run(None, {"state": np.zeros((300, 4), np.float32),
                                                     "action": np.zeros((300, 1), np.float32)})[0]
    assert out.shape == (300, 4)


def test_single_member_ensemble_exports_as_b_s(tmp_path):
    model = ensemble(E=1, hidden=16)
    path = export_world_model(model, CARTPOLE, tmp_path / "one.onnx")
    check_onnx_contract(path, "world_model", CARTPOLE, ensemble_size=1)
    assert check_parity(model, path, CARTPOLE).ok


def test_metadata_props_carry_the_spec(tmp_path):
    path = export_world_model(ensemble(hidden=16), CARTPOLE, tmp_path / "wm.onnx", ensemble_size=5)
    meta = read_metadata(path)
    assert VehicleSpec.from_dict(json.loads(meta["dreamlink.spec"])) == CARTPOLE
    assert json.loads(meta["dreamlink.state_names"]) == list(CARTPOLE.state_names)
    assert json.loads(meta["dreamlink.state_units"]) == ["m", "m/s", "rad", "rad/s"]
    assert json.loads(meta["dreamlink.action_names"]) == ["cart_force_n"]
    assert json.loads(meta["dreamlink.action_units"]) == ["N"]
    assert meta["dreamlink.ensemble_size"] == "5"
    assert meta["dreamlink.role"] == "world_model"


def test_wrong_ensemble_size_and_wrong_shapes_are_refused(tmp_path):
    with pytest.raises(ExportError, match="ensemble_size=3 given, but the module returns 5"):
        export_world_model(ensemble(hidden=16), CARTPOLE, tmp_path / "a.onnx", ensemble_size=3)
    with pytest.raises(ExportError, match=r"forward failed on state \[3,4\], action \[3,1\]"):
        export_world_model(TwoLayerMLP(S=3), CARTPOLE, tmp_path / "b.onnx")


def test_parity_catches_a_graph_that_differs_from_torch(tmp_path):
    class Counting(TwoLayerMLP):
        """Python state the tracer bakes in as a constant: eager and ONNX drift apart."""

        calls = 0

        def forward(self, state, action):
            self.calls += 1
            return super().forward(state, action) + 0.01 * self.calls

    mlp = Counting()
    path = export_world_model(mlp, CARTPOLE, tmp_path / "drift.onnx")
    result = check_parity(mlp, path, CARTPOLE)
    assert not result.ok and result.max_abs_err > 1e-3


def test_policy_export_parity(tmp_path):
    policy = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    path = export_policy(policy, CARTPOLE, tmp_path / "policy.onnx")
    check_onnx_contract(path, "policy", CARTPOLE)
    assert check_parity(policy, path, CARTPOLE).ok


def test_dynamo_exporter_keeps_the_contract(tmp_path):
    model = ensemble(hidden=16)
    path = export_world_model(model, CARTPOLE, tmp_path / "dyn.onnx", dynamo=True)
    assert not (tmp_path / "dyn.onnx.data").exists()  # weights embedded: a bundle carries one file
    check_onnx_contract(path, "world_model", CARTPOLE, ensemble_size=5)
    assert check_parity(model, path, CARTPOLE).ok


@pytest.mark.parametrize(("activation", "E", "ignore"), [("silu", 5, ()), ("relu", 1, ()), ("tanh", 3, ("cart_pos_m",)),
                                                          ("gelu", 2, ("pole_rate_radps",))])
def test_per_member_layout_keeps_the_function(tmp_path, activation: str, E: int, ignore: tuple[str, ...]):
    """dreamlink's own ensemble is written per member (2-D weights, normalisation folded into layer 0, bias on a
    ones column, transposed output layer); whatever the activation, member count or masked inputs, it computes
    what torch does, and the literal torch.onnx graph of the same module agrees with it."""
    torch.manual_seed(2)
    model = EnsembleWorldModel(CARTPOLE, WorldModelConfig(hidden=24, ensemble_size=E, activation=activation,
                                                          ignore_inputs=ignore))
    rng = np.random.default_rng(1)
    model.set_normalisation(rng.normal(0.5, 2.0, (300, 4)), rng.normal(1.0, 4.0, (300, 1)),
                            rng.normal(0.0, 0.3, (300, 4)))
    path = export_world_model(model, CARTPOLE, tmp_path / "members.onnx")
    assert check_parity(model, path, CARTPOLE, atol=ATOL, rtol=RTOL).ok
    graph = onnx.load(str(path)).graph
    assert all(len(init.dims) <= 2 for init in graph.initializer)  # no batched [E,in,out] weights
    assert sum(n.op_type == "Gemm" for n in graph.node) == E  # the output layers, transposed
    assert read_metadata(path)["dreamlink.exporter"].startswith("dreamlink per-member")
    check_onnx_contract(path, "world_model", CARTPOLE, ensemble_size=E)
    literal = export_world_model(model, CARTPOLE, tmp_path / "literal.onnx", literal=True)
    state, action = (rng.uniform(-2, 2, (64, 4)).astype(np.float32), rng.uniform(-10, 10, (64, 1)).astype(np.float32))
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"state": state,
                                                                                        "action": action})[0]
            for p in (path, literal))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    if ignore:  # a masked input changes nothing
        moved = state.copy()
        moved[:, CARTPOLE.state_names.index(ignore[0])] += 3.0
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"state": moved, "action": action})[0]
        np.testing.assert_allclose(out - moved, a - state, rtol=1e-4, atol=1e-4)
