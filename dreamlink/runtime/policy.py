"""A policy onboard: the planner's first fallback and its sampling prior, or, alone in a bundle, the controller.

One ONNX Runtime session (`state [B,S]`, `target [B,S]` -> `action [B,A]`). Two uses a tick:
- `act(state, target)`: one action when the plan failed, overran or was distrusted (the first
  step of DESIGN.md's fallback chain; a stale state skips it, since it is a function of the state);
- `prior(...)`: the policy's action sequence over the horizon, evaluated in one batched call along
  the previous plan's imagined trajectory (where the vehicle is expected to be at each step), so a
  share of the K samples starts from what the policy would do rather than from the warm start only.
  Rolling the policy through the world model would cost H sequential model calls; the imagined
  trajectory is that rollout's nearest free substitute, and it is fresh every tick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.bundle import Bundle, BundleError
from dreamlink.runtime.session import SessionConfig, make_session
from dreamlink.spec import VehicleSpec


class PolicySession:
    def __init__(self, path: Path, spec: VehicleSpec, lookahead_steps: int = 0,
                 config: SessionConfig | None = None) -> None:
        self.spec, self.lookahead_steps = spec, int(lookahead_steps)
        self.session = make_session(Path(path), config or SessionConfig())
        names = {i.name for i in self.session.get_inputs()}
        self._has_target = "target" in names
        S = spec.state_dim
        self._one_state = np.empty((1, S), np.float32)
        self._one_target = np.empty((1, S), np.float32)
        self._states = np.empty((0, S), np.float32)  # the prior's inputs, sized on first use
        self._targets = np.empty((0, S), np.float32)

    @classmethod
    def from_bundle(cls, bundle: Bundle, config: SessionConfig | None = None) -> PolicySession | None:
        """The bundle's policy, or None when it has none."""
        if not bundle.has("policy"):
            return None
        lookahead = bundle.manifest.training.get("policy_lookahead_steps", 0)
        if not isinstance(lookahead, int) or lookahead < 0:
            raise BundleError(f"{bundle.root}: manifest training.policy_lookahead_steps: expected an integer >= 0, "
                              f"got {json.dumps(lookahead)}")
        return cls(bundle.path_of("policy"), bundle.spec, lookahead, config)

    def _run(self, state: np.ndarray, target: np.ndarray) -> np.ndarray:
        feeds = {"state": state}
        if self._has_target:
            feeds["target"] = target
        out: np.ndarray = self.session.run(None, feeds)[0]
        return out

    def target_at(self, reference: np.ndarray | None, fixed_target: np.ndarray, step: int = 0) -> np.ndarray:
        """The target the policy was trained to see at horizon step `step`: [S]."""
        if reference is None:
            return fixed_target
        return reference[min(step + self.lookahead_steps, len(reference) - 1)]

    def act(self, state: np.ndarray, target: np.ndarray) -> np.ndarray:
        """One action [A] for `state` [S] toward `target` [S]."""
        self._one_state[0] = state
        self._one_target[0] = target
        return self._run(self._one_state, self._one_target)[0]

    def prior(self, state: np.ndarray, imagined: np.ndarray | None, reference: np.ndarray | None,
              fixed_target: np.ndarray, horizon: int) -> np.ndarray:
        """The policy's actions [H,A] along the expected states: the current `state`, then the previous
        plan's imagined trajectory shifted by one tick (`imagined` [H+1,S] from the previous tick)."""
        if self._states.shape[0] != horizon:
            self._states = np.empty((horizon, self.spec.state_dim), np.float32)
            self._targets = np.empty((horizon, self.spec.state_dim), np.float32)
        states, targets = self._states, self._targets
        states[0] = state
        if imagined is not None and np.all(np.isfinite(imagined)):
            n = min(horizon - 1, imagined.shape[0] - 2)
            states[1 : n + 1] = imagined[2 : n + 2]
            states[n + 1 :] = imagined[-1]
        else:
            states[1:] = state
        if reference is None:
            targets[:] = fixed_target
        else:
            last = len(reference) - 1
            n = max(0, min(horizon, last - self.lookahead_steps + 1))  # steps whose target is inside the window
            targets[:n] = reference[self.lookahead_steps : self.lookahead_steps + n]
            targets[n:] = reference[last]
        return self._run(states, targets)


class PolicyPlanner:
    """A trained policy flown alone (a bundle with a policy and no world model): each tick the policy's action
    toward the task's target (or the reference's first step) is a one-step plan, and goes through the same
    loop, shield, fallbacks and recorder as a planned one. Nothing is imagined, so `imagined` is the current
    state and then NaN."""

    def __init__(self, policy: PolicySession, spec: VehicleSpec, target: np.ndarray) -> None:
        from dreamlink.runtime.mppi import MppiConfig  # one planning step of one action: the recorder's horizon

        self.policy, self.spec = policy, spec
        self.target = np.asarray(target, np.float32)
        self.config = MppiConfig(samples=2, horizon=1)
        self._imagined = np.full((2, spec.state_dim), np.nan, np.float32)

    def initial_plan(self) -> np.ndarray:
        """The hold action (zeros clipped to the limits) [1,A]."""
        return np.clip(np.zeros((1, self.spec.action_dim), np.float32), self.spec.action_low, self.spec.action_high)

    def plan(self, state: np.ndarray, warm: np.ndarray, t_s: float, reference: np.ndarray | None = None,
             prior: np.ndarray | None = None) -> Any:
        from dreamlink.runtime.mppi import Plan

        action = self.policy.act(state, self.policy.target_at(reference, self.target))
        imagined = self._imagined.copy()
        imagined[0] = state
        return Plan(actions=np.asarray(action, np.float32)[None].copy(), made_at_s=t_s, from_state=state.copy(),
                    imagined=imagined, best_cost=float("nan"), disagreement=0.0)
