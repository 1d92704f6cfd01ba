"""The device budget a bundle's calibration recorded, read tolerantly from the manifest.

Calibration (`dreamlink calibrate`) measures on a device the largest samples x horizon whose
p99 planning latency fits the control period, and records it in the manifest's
`calibration` section. Install and doctor compare that record with this device: a budget
measured on another CPU is a warning (re-calibrate here), a recorded p99 over the control
period is a refusal (the bundle's own numbers say it cannot keep the rate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dreamlink.bundle import Manifest

_SECTIONS = ("budget", "device_budget", "timing")
_ALIASES = {
    "device": ("device", "cpu", "cpu_model", "machine"),
    "p99_ms": ("p99_ms", "plan_p99_ms", "latency_p99_ms"),
    "p99_s": ("p99_s", "plan_p99_s", "latency_p99_s"),
    "samples": ("samples", "K", "k"),
    "horizon": ("horizon", "H", "h"),
    "rate_hz": ("rate_hz", "max_rate_hz"),
}


@dataclass(frozen=True)
class RecordedBudget:
    section: str  # where in `calibration` it was found
    device: str | None
    p99_ms: float | None
    samples: int | None
    horizon: int | None
    rate_hz: float | None


def _pick(d: Mapping[str, Any], key: str) -> Any:
    for alias in _ALIASES[key]:
        if alias in d:
            return d[alias]
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _device_name(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        name = _pick(v, "device")
        return name if isinstance(name, str) else None
    return None


def recorded_budget(manifest: Manifest) -> RecordedBudget | None:
    """The calibrated budget, or None when the bundle was not calibrated on any device."""
    cal = manifest.calibration
    for section in _SECTIONS:
        raw = cal.get(section)
        if isinstance(raw, Mapping) and raw:
            p99_ms = _number(_pick(raw, "p99_ms"))
            if p99_ms is None and (p99_s := _number(_pick(raw, "p99_s"))) is not None:
                p99_ms = p99_s * 1e3
            samples, horizon = _number(_pick(raw, "samples")), _number(_pick(raw, "horizon"))
            return RecordedBudget(
                section=f"calibration.{section}",
                device=_device_name(_pick(raw, "device")) or _device_name(cal.get("device")),
                p99_ms=p99_ms,
                samples=int(samples) if samples is not None else None,
                horizon=int(horizon) if horizon is not None else None,
                rate_hz=_number(_pick(raw, "rate_hz")),
            )
    return None


@dataclass(frozen=True)
class BudgetVerdict:
    fits: bool  # False: the recorded numbers say this bundle cannot keep its control rate
    same_device: bool | None  # None: unknown (no device recorded)
    message: str


def judge_budget(manifest: Manifest, this_cpu: str) -> BudgetVerdict:
    """Compare the recorded budget with the bundle's control period and this device's CPU."""
    rb = recorded_budget(manifest)
    period_ms = manifest.spec.control_period_s * 1e3
    if rb is None:
        return BudgetVerdict(True, None, "not calibrated (no budget in the manifest's calibration section)")
    parts = [f"{rb.section}:"]
    if rb.samples is not None and rb.horizon is not None:
        parts.append(f"K={rb.samples} x H={rb.horizon},")
    fits = True
    if rb.p99_ms is not None:
        fits = rb.p99_ms <= period_ms
        parts.append(f"p99 {rb.p99_ms:.2f} ms vs control period {period_ms:.2f} ms,")
    if rb.rate_hz is not None and rb.rate_hz < manifest.spec.rate_hz:
        fits = False
        parts.append(f"max rate {rb.rate_hz:.1f} Hz < the spec's {manifest.spec.rate_hz:.1f} Hz,")
    same = None if rb.device is None else _same_cpu(rb.device, this_cpu)
    if rb.device is None:
        parts.append("device not recorded")
    else:
        parts.append(f"measured on {rb.device!r}" + ("" if same else f", this device is {this_cpu!r}"))
    return BudgetVerdict(fits, same, " ".join(parts))


def _same_cpu(recorded: str, this_cpu: str) -> bool:
    norm = [" ".join(s.lower().split()) for s in (recorded, this_cpu)]
    return norm[0] == norm[1] or norm[0] in norm[1] or norm[1] in norm[0]
