"""`ModelSession`: the one object that hides ONNX Runtime from the rest of the runtime."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime settings, chosen for a control loop on a small CPU.

    One intra-op thread by default: the planner's batches are small, and the other core
    belongs to the MAVLink receive thread (and, in SITL, the simulator).
    Sequential execution: the graphs are chains, parallel branches buy nothing.
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = True
    graph_optimization: str = "all"

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise ValueError(f"SessionConfig: thread counts must be >= 1, got {self}")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ValueError(f"SessionConfig.graph_optimization: expected one of {sorted(_OPT_LEVELS)}")


def make_session(path: Path, config: SessionConfig) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.intra_op_threads
    opts.inter_op_num_threads = config.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class ModelSession:
    """A world model that keeps the ONNX contract: state [B,S], action [B,A] -> next_state [E,B,S].

    A model with a `[B,S]` output is presented as a one-member ensemble, so planners see
    one shape whatever the user brought.
    """

    def __init__(self, path: Path, spec: VehicleSpec, config: SessionConfig | None = None) -> None:
        self.path = Path(path)
        self.spec = spec
        self.config = config or SessionConfig()
        self._session = make_session(self.path, self.config)
        out = self._session.get_outputs()[0]
        self._is_ensemble = len(out.shape) == 3
        self.ensemble_size = int(out.shape[0]) if self._is_ensemble and isinstance(out.shape[0], int) else 1
        self._out_names = ["next_state"]
        log.info(
            "world model %s: ensemble_size=%d threads=%d",
            self.path.name,
            self.ensemble_size,
            self.config.intra_op_threads,
        )

    def predict(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """state [B,S], action [B,A] float32 -> next_state [E,B,S] float32."""
        (out,) = self._session.run(self._out_names, {"state": state, "action": action})
        return out if self._is_ensemble else out[None]
