"""The safety shield: the last function every command passes before `send`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamlink.spec import VehicleSpec


@dataclass(frozen=True)
class ShieldLimits:
    """Hard limits on the action vector, in spec units; defaults to the spec's own."""

    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    hold_action: tuple[float, ...]  # sent instead of anything non-finite

    @staticmethod
    def from_spec(spec: VehicleSpec) -> ShieldLimits:
        hold = np.clip(np.zeros(spec.action_dim), spec.action_low, spec.action_high)
        return ShieldLimits(
            tuple(map(float, spec.action_low)), tuple(map(float, spec.action_high)), tuple(map(float, hold))
        )


@dataclass(frozen=True)
class ShieldResult:
    action: np.ndarray  # [A], safe to send
    clipped: bool  # some component was outside the limits
    nonfinite: bool  # NaN/Inf replaced by the hold action


def shield(action: np.ndarray, limits: ShieldLimits) -> ShieldResult:
    """Clip to limits; replace any non-finite action by the hold action. Never raises."""
    a = np.asarray(action, dtype=np.float32)
    if a.shape != (len(limits.action_low),) or not np.all(np.isfinite(a)):
        return ShieldResult(np.asarray(limits.hold_action, dtype=np.float32), False, True)
    low = np.asarray(limits.action_low, dtype=np.float32)
    high = np.asarray(limits.action_high, dtype=np.float32)
    out = np.clip(a, low, high)
    return ShieldResult(out, bool(np.any(out != a)), False)
