"""Calibration data for static quantization: states and actions from flight logs and SITL campaigns.

`TransitionReader` is an ONNX Runtime `CalibrationDataReader` over a `TransitionSet`: it feeds the
world model's own inputs (`state [B,S]`, `action [B,A]`, raw units; normalisation is inside the graph),
so the activation ranges ORT records are those the model sees on board. `load_transitions` reads
`.tlog` flight logs (through `tlog_to_transitions`, i.e. the same profile functions the runtime uses)
and `.npz` transition sets written by SITL campaigns (`TransitionSet.save`) into one set.

The planner does not only feed recorded actions: it feeds warm-start actions plus noise, clipped to
the limits. A range calibrated on recorded actions alone would clip the planner's bolder samples, so
a share of the batches (`random_action_share`) pairs recorded states with actions drawn uniformly
within the spec's limits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from dreamlink.calibration.tlog_data import TlogDataConfig, tlog_to_transitions
from dreamlink.learning.transitions import TransitionSet
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)


class TransitionReader(CalibrationDataReader):
    """Batches of {"state": [B,S], "action": [B,A]} float32 from `data`; `rewind()` starts over."""

    def __init__(self, data: TransitionSet, batch: int = 256, max_batches: int = 32,
                 random_action_share: float = 0.25, seed: int = 0) -> None:
        if len(data) == 0:
            raise ValueError("TransitionReader: the transition set is empty; nothing to calibrate on")
        if batch < 1 or max_batches < 1:
            raise ValueError(f"TransitionReader: batch and max_batches must be >= 1, got {batch}, {max_batches}")
        if not 0.0 <= random_action_share <= 1.0:
            raise ValueError(f"TransitionReader.random_action_share: expected [0, 1], got {random_action_share}")
        rng = np.random.default_rng(seed)
        spec = data.spec
        n_batches = min(max_batches, max(1, len(data) // batch))
        rows = rng.permutation(len(data))[: n_batches * batch] if len(data) >= batch else np.arange(len(data))
        self.batches: list[dict[str, np.ndarray]] = []
        for i, chunk in enumerate(np.array_split(rows, n_batches)):
            state = data.state[chunk].astype(np.float32)
            action = data.action[chunk].astype(np.float32)
            if i < round(random_action_share * n_batches):
                action = rng.uniform(spec.action_low, spec.action_high, action.shape).astype(np.float32)
            self.batches.append({"state": state, "action": action})
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return self.batches[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.batches)


def load_transitions(paths: Sequence[str | os.PathLike[str]], spec: VehicleSpec, profile_kind: str = "ardupilot",
                     tlog_config: TlogDataConfig | None = None, on_error: str = "raise") -> TransitionSet:
    """One `TransitionSet` from `.tlog` logs and `.npz` transition sets (episodes kept apart per file).

    `on_error` goes to the .tlog reader: "raise" (a damaged log is an error naming the file and offset), "stop"
    (keep the readable part before the damage) or "skip" (skip damaged records and read on)."""
    if not paths:
        raise ValueError("load_transitions: no calibration data given (.tlog logs or .npz transition sets)")
    sets: list[TransitionSet] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: calibration data not found (expected a .tlog or a .npz transition set)")
        if p.suffix == ".tlog":
            ts = tlog_to_transitions(p, spec, profile_kind, config=tlog_config or TlogDataConfig(),
                                     on_error=on_error)  # type: ignore[arg-type]
        elif p.suffix == ".npz":
            ts = TransitionSet.load(p)
        else:
            raise ValueError(f"{p}: unknown calibration data format {p.suffix!r}; expected .tlog or .npz")
        if ts.spec.state_names != spec.state_names or ts.spec.action_names != spec.action_names:
            raise ValueError(f"{p}: transitions for {ts.spec.name!r} {ts.spec.state_names}, the bundle is "
                             f"{spec.name!r} {spec.state_names}")
        if len(ts) == 0:
            log.warning("%s: no transitions", p)
            continue
        sets.append(ts)
        log.info("%s: %d transitions, %d episodes", p, len(ts), ts.n_episodes)
    if not sets:
        raise ValueError(f"load_transitions: {len(paths)} files gave no transitions")
    return TransitionSet.concat(sets)
