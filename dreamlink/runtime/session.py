"""`ModelSession`: the one object that hides ONNX Runtime from the rest of the runtime."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    Memory arena on, memory pattern off. The pattern is one block for all of a graph's
    intermediates, planned from the first run and allocated at the second: on the fused planner
    (K=512, H=15, hidden 256) ~6 MB on top of the arena, which already reuses its blocks, for no
    measurable step time. Without the arena the intermediates go back to the OS after every run
    and come back as ~1,200 page faults a step (~1.5% more CPU, and jitter), with the same peak.
    A bundle may choose otherwise (manifest `calibration.session`, `from_calibration`).
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = True
    graph_optimization: str = "all"
    mem_arena: bool = True  # ORT's CPU arena: keeps intermediates' memory for the next run
    mem_pattern: bool = False  # ORT's memory pattern: one pre-planned block for all intermediates

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise ValueError(f"SessionConfig: thread counts must be >= 1, got {self}")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ValueError(f"SessionConfig.graph_optimization: expected one of {sorted(_OPT_LEVELS)}")
        for name in ("allow_spinning", "mem_arena", "mem_pattern"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SessionConfig.{name}: expected true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_calibration(cls, raw: Mapping[str, Any]) -> SessionConfig:
        """The settings a bundle records (manifest `calibration.session`); keys that are not settings
        of this class (`optimized_offline`, `onnxruntime`) are notes for people, and missing ones
        take the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def make_session(path: Path, config: SessionConfig) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.intra_op_threads
    opts.inter_op_num_threads = config.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    opts.enable_cpu_mem_arena = config.mem_arena
    opts.enable_mem_pattern = config.mem_pattern
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
