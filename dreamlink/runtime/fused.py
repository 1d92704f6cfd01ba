"""`FusedPlanner`: one ONNX Runtime run per control tick through the fused planner graph.

Same contract as `MppiPlanner` (`initial_plan()`, `plan(state, warm, t_s) -> Plan`), same
semantics (sample 0 is the warm start, ensemble-mean rollout, `trajectory_cost`, a non-finite sample
costs +inf and weighs nothing, exp(-cost/T) weighting; or CEM's elite mean), but the rollout, cost
and update all happen inside the graph made by `dreamlink.export.planner_graph`. Everything is
allocated at start: the input and output buffers are bound to the session once (I/O binding on raw
pointers), and the tick only writes the state and the warm start into their buffers, fills the
noise buffer from the seeded generator and runs. The only per-tick allocations are the immutable `Plan`'s own arrays.

Drawing the noise with the same generator call as `MppiPlanner` means the two planners, seeded
alike, see the same samples: that is how the tests hold the graph to the numpy reference.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.bundle import Bundle, BundleError
from dreamlink.runtime.mppi import MppiConfig, Plan, seed_with_prior, smooth_noise
from dreamlink.runtime.planner_defaults import bundle_planner
from dreamlink.runtime.session import SessionConfig, make_session
from dreamlink.runtime.tasks import QuadraticTask
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

_SCALAR: tuple[int, ...] = ()


def task_inputs(task: QuadraticTask, spec: VehicleSpec) -> dict[str, np.ndarray]:
    """A task as the planner graph's inputs: walls become a per-component limit (+inf: none);
    `target` [S] (the graph takes it per step, [H,S], filled by the planner)."""
    task.check(spec)
    wall_limit = np.full(spec.state_dim, np.inf, np.float32)
    for index, limit in task.walls:
        if not 0 <= index < spec.state_dim:
            raise ValueError(f"task {task.name}: wall on state index {index}, spec has {spec.state_dim} components")
        if math.isfinite(wall_limit[index]):
            raise ValueError(
                f"task {task.name}: two walls on {spec.state_names[index]!r}; the planner graph takes one limit "
                "per component, merge them into one"
            )
        wall_limit[index] = limit
    return {
        "target": np.asarray(task.target, np.float32),
        "state_weight": np.asarray(task.state_weight, np.float32),
        "action_weight": np.asarray(task.action_weight, np.float32),
        "terminal_weight": np.asarray(task.terminal_weight, np.float32),
        "wall_limit": wall_limit,
        "wall_penalty": np.asarray(task.wall_penalty, np.float32),
    }


class FusedPlanner:
    """Holds the planner-graph session and its bound buffers; `plan()` is one planning step.

    `config.samples` and `config.horizon` must match the graph's (they are baked into its shapes);
    `noise_sigma` and `temperature` are graph inputs and take effect as given.
    """

    def __init__(
        self,
        graph_path: str | Path,
        spec: VehicleSpec,
        task: QuadraticTask,
        config: MppiConfig,
        rng: np.random.Generator,
        session: SessionConfig | None = None,
    ) -> None:
        self.path = Path(graph_path)
        self.spec, self.config, self.rng = spec, config, rng
        self.session_config = session or SessionConfig()
        self._session = make_session(self.path, self.session_config)
        K, H, S, A = config.samples, config.horizon, spec.state_dim, spec.action_dim
        inputs = {i.name: [d if isinstance(d, int) else -1 for d in i.shape] for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        self.method = "cem" if "elite_std" in outputs else "mppi"
        want = {
            "state": [S], "warm": [H, A], "noise": [K, H, A], "sigma": [A], "temperature": [],
            "target": [H, S], "state_weight": [S], "action_weight": [A], "terminal_weight": [],
            "wall_limit": [S], "wall_penalty": [],
        }
        for name, shape in want.items():
            if name not in inputs:
                raise ValueError(
                    f"{self.path.name}: not a planner graph, missing input {name!r} (has {sorted(inputs)})"
                )
            if inputs[name] != shape:
                raise ValueError(
                    f"{self.path.name}: input {name!r} is {inputs[name]}, this planner needs {shape} "
                    f"(samples={K}, horizon={H}, spec {spec.name!r}); export a planner graph for these settings"
                )
        missing = {"plan", "costs", "imagined", "disagreement"} - outputs
        if missing:
            raise ValueError(f"{self.path.name}: not a planner graph, missing outputs {sorted(missing)}")
        self._low, self._high = spec.action_low, spec.action_high
        # Inputs, written in place; bound once by address.
        self._in: dict[str, np.ndarray] = {name: np.zeros(shape, np.float32) for name, shape in want.items()}
        self._in["sigma"][:] = config.noise_sigma * (self._high - self._low) / 2.0
        self._in["temperature"][...] = config.temperature
        self._state, self._warm, self._noise = self._in["state"], self._in["warm"], self._in["noise"]
        self._target = self._in["target"]
        self.set_task(task)
        # Outputs, written by the run; bound once by address.
        out_shapes: dict[str, tuple[int, ...]] = {
            "plan": (H, A), "costs": (K,), "imagined": (H + 1, S), "disagreement": _SCALAR,
        }
        if self.method == "cem":
            out_shapes["elite_std"] = (H, A)
        self._out = {name: np.zeros(shape, np.float32) for name, shape in out_shapes.items()}
        # The count of non-finite samples; a graph exported before it has none (None: the count is unknown,
        # and a NaN from the model there reaches the plan, where the loop refuses it as before).
        self._nonfinite: np.ndarray | None = np.zeros((), np.int64) if "nonfinite" in outputs else None
        self._binding = self._session.io_binding()
        for name, arr in self._in.items():
            self._binding.bind_input(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
        for name, arr in self._out.items():
            self._binding.bind_output(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
        if self._nonfinite is not None:
            self._binding.bind_output("nonfinite", "cpu", 0, np.int64, [], self._nonfinite.ctypes.data)
        log.info("fused %s planner %s: K=%d H=%d threads=%d", self.method, self.path.name, K, H,
                 self.session_config.intra_op_threads)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        task: QuadraticTask,
        rng: np.random.Generator,
        config: MppiConfig | None = None,
        session: SessionConfig | None = None,
    ) -> FusedPlanner:
        """The bundle's planner graph with the settings it was packed with (manifest `calibration.planner`
        and `calibration.session`), each overridable."""
        if not bundle.has("planner"):
            raise BundleError(f"{bundle.root}: no 'planner' file; pack one with dreamlink.export.planner_graph_pack")
        calib = bundle.manifest.calibration
        if config is None:
            config = bundle_planner(bundle.spec, task, calib.get("planner", {}))
        if session is None:
            session = SessionConfig.from_calibration(calib.get("session", {}))
        return cls(bundle.path_of("planner"), bundle.spec, task, config, rng, session)

    def set_task(self, task: QuadraticTask) -> None:
        """Change the task's parameters (target, weights, walls) for the next ticks; no re-binding."""
        for name, value in task_inputs(task, self.spec).items():
            self._in[name][...] = value
        self.task = task
        self._fixed_target = self._target.copy()  # [H,S], restored when a tick brings no reference
        self._tracking = False

    def initial_plan(self) -> np.ndarray:
        """A plan of hold actions (zeros clipped to the limits). [H,A]"""
        zero = np.clip(np.zeros(self.spec.action_dim, dtype=np.float32), self._low, self._high)
        return np.repeat(zero[None], self.config.horizon, axis=0)

    @property
    def costs(self) -> np.ndarray:
        """The last step's sample costs [K] (a read-only view, overwritten by the next step)."""
        view = self._out["costs"].view()
        view.flags.writeable = False
        return view

    @property
    def elite_std(self) -> np.ndarray:
        """CEM: the elites' std [H,A] from the last step (a read-only view)."""
        if self.method != "cem":
            raise AttributeError("elite_std: this is an MPPI planner graph")
        view = self._out["elite_std"].view()
        view.flags.writeable = False
        return view

    def plan(self, state: np.ndarray, warm: np.ndarray, t_s: float, reference: np.ndarray | None = None,
             prior: np.ndarray | None = None) -> Plan:
        """One planning iteration from `state` [S] around the warm-start plan `warm` [H,A];
        `reference` [H,S] is the per-step target of a tracking task (None: the task's own);
        `prior` [H,A] seeds samples 1..`config.prior_rows()` through the noise input (no graph change)."""
        np.copyto(self._state, state, casting="same_kind")
        np.copyto(self._warm, warm, casting="same_kind")
        if reference is not None:
            np.copyto(self._target, reference, casting="same_kind")
            self._tracking = True
        elif self._tracking:
            np.copyto(self._target, self._fixed_target)
            self._tracking = False
        self.rng.standard_normal(dtype=np.float32, out=self._noise)
        smooth_noise(self._noise, self.config.noise_smoothing)  # the graph scales by sigma, as MppiPlanner
        if prior is not None:
            seed_with_prior(self._noise, prior, self._warm, self.config.prior_rows(), self._in["sigma"])
        self._session.run_with_iobinding(self._binding)
        costs = self._out["costs"]
        return Plan(
            actions=self._out["plan"].copy(),
            made_at_s=t_s,
            from_state=self._state.copy(),
            imagined=self._out["imagined"].copy(),
            best_cost=float(costs.min()),
            disagreement=float(self._out["disagreement"]),
            nonfinite_samples=int(self._nonfinite) if self._nonfinite is not None else 0,
            samples=self.config.samples if self._nonfinite is not None else 0,
        )

    def describe(self) -> dict[str, Any]:
        """What this planner runs with, for logs and benchmark headers."""
        return {
            "graph": str(self.path),
            "method": self.method,
            "planner": json.loads(json.dumps(self.config.__dict__)),
            "session": dict(self.session_config.__dict__),
        }
