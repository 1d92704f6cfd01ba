"""The device budget a bundle's calibration recorded, and the rate it allows.

`dreamlink calibrate` sweeps samples x horizon on a device and records, in the manifest's
`calibration.budget`, the largest setting whose p99 planning latency fits `share` of the control
period (the rest of the period belongs to telemetry, the shield and the send). This module is the one
reader of that record: the runtime refuses a rate the budget cannot hold (`check_rate`), and
`dreamlink doctor` judges the same record (`dreamlink.deploy.budget`). Pure functions of the
manifest; no onnxruntime, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dreamlink.bundle import BundleError, Manifest

_SECTIONS = ("budget", "device_budget", "timing")
_ALIASES = {
    "device": ("device", "cpu", "cpu_model", "machine"),
    "p99_ms": ("p99_ms", "plan_p99_ms", "latency_p99_ms"),
    "p99_s": ("p99_s", "plan_p99_s", "latency_p99_s"),
    "samples": ("samples", "K", "k"),
    "horizon": ("horizon", "H", "h"),
    "rate_hz": ("rate_hz", "max_rate_hz"),
    "share": ("share", "period_share"),
    "precision": ("precision",),
}


@dataclass(frozen=True)
class RecordedBudget:
    section: str  # where in `calibration` it was found
    device: str | None
    p99_ms: float | None
    samples: int | None
    horizon: int | None
    rate_hz: float | None  # the largest rate the record allows, as recorded (None: derive from p99 and share)
    share: float = 1.0  # the share of the control period planning may take
    precision: str | None = None

    @property
    def max_rate_hz(self) -> float | None:
        """The largest control rate at which p99 planning latency fits `share` of the period."""
        if self.rate_hz is not None:
            return self.rate_hz
        if self.p99_ms is not None and self.p99_ms > 0:
            return self.share * 1e3 / self.p99_ms
        return None

    def describe(self) -> str:
        parts = [self.section]
        if self.samples is not None and self.horizon is not None:
            parts.append(f"K={self.samples} x H={self.horizon}")
        if self.precision:
            parts.append(self.precision)
        if self.p99_ms is not None:
            parts.append(f"p99 {self.p99_ms:.2f} ms")
        if self.device:
            parts.append(f"on {self.device!r}")
        return ", ".join(parts)


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
            share = _number(_pick(raw, "share"))
            precision = _pick(raw, "precision")
            return RecordedBudget(
                section=f"calibration.{section}",
                device=_device_name(_pick(raw, "device")) or _device_name(cal.get("device")),
                p99_ms=p99_ms,
                samples=int(samples) if samples is not None else None,
                horizon=int(horizon) if horizon is not None else None,
                rate_hz=_number(_pick(raw, "rate_hz")),
                share=share if share is not None and 0 < share <= 1 else 1.0,
                precision=precision if isinstance(precision, str) else None,
            )
    return None


def check_rate(manifest: Manifest, rate_hz: float) -> None:
    """Refuse (BundleError) a control rate the recorded budget cannot hold; no budget recorded: allowed
    (`dreamlink doctor` warns about an uncalibrated bundle)."""
    rb = recorded_budget(manifest)
    if rb is None:
        return
    max_rate = rb.max_rate_hz
    if max_rate is None or rate_hz <= max_rate * (1 + 1e-9):
        return
    period_ms = 1e3 / rate_hz
    raise BundleError(
        f"{rb.describe()}: planning needs {rb.p99_ms if rb.p99_ms is not None else float('nan'):.2f} ms at p99, "
        f"but at {rate_hz:g} Hz it gets {rb.share:.0%} of the {period_ms:.2f} ms period "
        f"({rb.share * period_ms:.2f} ms); the largest rate this budget fits is {max_rate:.1f} Hz. "
        f"Use a bundle calibrated for fewer samples/horizon (dreamlink calibrate on this device), "
        f"or a lower rate with a model trained for it"
    )
