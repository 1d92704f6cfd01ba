"""Small world models built directly with onnx.helper, for tests that need a model of known
dynamics without torch: next_state = state @ F^T + action @ G^T (+ bias), per ensemble member."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dreamlink.spec import Component, VehicleSpec


def linear_world_model(
    path: Path,
    F: np.ndarray,
    G: np.ndarray,
    bias: np.ndarray | None = None,
    ensemble: int = 1,
    spread: float = 0.0,
    state_dim: int | None = None,
) -> Path:
    """Write a linear world model keeping the dreamlink ONNX contract.

    With ensemble > 1 the output is [E,B,S]; member e adds e*spread to every output, so the
    ensemble's disagreement is known. `state_dim` overrides the declared input width (to craft
    a model that breaks the contract).
    """
    S, A = F.shape[0], G.shape[1]
    s_decl = state_dim or S
    bias = np.zeros(S, np.float32) if bias is None else bias.astype(np.float32)
    inits = [
        numpy_helper.from_array(F.T.astype(np.float32), "Ft"),
        numpy_helper.from_array(G.T.astype(np.float32), "Gt"),
        numpy_helper.from_array(bias, "bias"),
    ]
    nodes = [
        helper.make_node("MatMul", ["state", "Ft"], ["xs"]),
        helper.make_node("MatMul", ["action", "Gt"], ["us"]),
        helper.make_node("Add", ["xs", "us"], ["lin"]),
    ]
    if ensemble == 1:
        nodes.append(helper.make_node("Add", ["lin", "bias"], ["next_state"]))
        out_shape: list = ["B", S]
    else:
        offsets = (np.arange(ensemble, dtype=np.float32) * spread)[:, None, None] + bias[None, None, :]
        inits.append(numpy_helper.from_array(offsets.astype(np.float32), "offsets"))
        nodes.append(helper.make_node("Unsqueeze", ["lin", "axis0"], ["lin3"]))
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
        nodes.append(helper.make_node("Add", ["lin3", "offsets"], ["next_state"]))
        out_shape = [ensemble, "B", S]
    graph = helper.make_graph(
        nodes,
        "linear_world_model",
        [
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["B", s_decl]),
            helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", A]),
        ],
        [helper.make_tensor_value_info("next_state", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if state_dim is None:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


POINT = VehicleSpec(
    name="point",
    state=(Component("pos_m", "m", -5.0, 5.0), Component("vel_mps", "m/s", -5.0, 5.0)),
    action=(Component("accel_mps2", "m/s^2", -2.0, 2.0),),
    control_period_s=0.02,
)


def double_integrator(dt: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """A point mass on a line, exactly linear: x' = F x + G u for POINT's state and action."""
    F = np.array([[1.0, dt], [0.0, 1.0]], np.float32)
    G = np.array([[0.5 * dt * dt], [dt]], np.float32)
    return F, G
