"""The device budget a bundle's calibration recorded, and the rate it allows.

`dreamlink calibrate` sweeps samples x horizon on a device and records, in the manifest's
`calibration.budget`, the largest setting whose p99 planning latency fits `share` of the control
period (the rest of the period belongs to telemetry, the shield and the send). This module is the one
reader of that record: the runtime refuses a rate the budget cannot hold (`check_rate`), and
`dreamlink doctor` judges the same record (`dreamlink.deploy.budget`). It reads the record in the one
form `dreamlink calibrate` writes it and refuses other names for its fields, naming the key it expects.
Pure functions of the manifest; no onnxruntime, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dreamlink.bundle import MANIFEST, BundleError, Manifest

# The one form dreamlink writes (`dreamlink.calibration.budget.budget_record`): `calibration.budget` with
# these keys (among others this reader does not need), each what it means in the error that asks for it.
_WRITTEN = {
    "device": "the CPU model it was measured on, a string",
    "precision": "the world model's precision",
    "samples": "the sampled plans K",
    "horizon": "the planning horizon H in steps",
    "p99_ms": "the p99 planning latency in milliseconds",
    "share": "the share of the control period planning may take",
    "rate_hz": "the largest control rate the p99 fits, in Hz",
}
# Other names for them, which dreamlink never writes: refused, naming the key it does write (a record read
# under a name it was not measured for would be trusted wrongly, or silently ignored).
_NOT_WRITTEN = {
    "cpu": "device", "cpu_model": "device", "machine": "device",
    "plan_p99_ms": "p99_ms", "latency_p99_ms": "p99_ms", "p99_s": "p99_ms", "plan_p99_s": "p99_ms",
    "latency_p99_s": "p99_ms", "K": "samples", "k": "samples", "H": "horizon", "h": "horizon",
    "max_rate_hz": "rate_hz", "period_share": "share",
}
_NOT_WRITTEN_SECTIONS = {"device_budget": "budget", "timing": "budget", "device": "budget.device"}


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


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _refuse_other_names(cal: Mapping[str, Any], raw: Mapping[str, Any] | None) -> None:
    """Refuse a budget record in a form dreamlink does not write, naming the field and the key it expects."""
    for section, instead in _NOT_WRITTEN_SECTIONS.items():
        if section in cal:
            raise BundleError(f"{MANIFEST} calibration.{section}: not a field dreamlink writes; the device budget "
                              f"is calibration.{instead}. Run `dreamlink calibrate` again, or move it there")
    if raw is None:
        return
    for key in raw:
        if key in _NOT_WRITTEN:
            written = _NOT_WRITTEN[key]
            raise BundleError(f"{MANIFEST} calibration.budget.{key}: not a key dreamlink writes; the budget records "
                              f"{written} ({_WRITTEN[written]}). Run `dreamlink calibrate` again, or rename the key "
                              "(converting its value)")
    if "device" in raw and not isinstance(raw["device"], str):
        raise BundleError(f"{MANIFEST} calibration.budget.device: expected {_WRITTEN['device']}, got "
                          f"{raw['device']!r}; run `dreamlink calibrate` again")


def recorded_budget(manifest: Manifest) -> RecordedBudget | None:
    """The calibrated budget, or None when the bundle was not calibrated on any device.

    Reads `calibration.budget` as `dreamlink calibrate` writes it; other names for its fields are refused
    (`BundleError` naming the field and the key dreamlink writes), never guessed at."""
    cal = manifest.calibration
    raw = cal.get("budget")
    _refuse_other_names(cal, raw if isinstance(raw, Mapping) else None)
    if not isinstance(raw, Mapping) or not raw:
        return None
    samples, horizon = _number(raw.get("samples")), _number(raw.get("horizon"))
    share = _number(raw.get("share"))
    precision = raw.get("precision")
    return RecordedBudget(
        section="calibration.budget",
        device=raw.get("device"),
        p99_ms=_number(raw.get("p99_ms")),
        samples=int(samples) if samples is not None else None,
        horizon=int(horizon) if horizon is not None else None,
        rate_hz=_number(raw.get("rate_hz")),
        share=share if share is not None and 0 < share <= 1 else 1.0,
        precision=precision if isinstance(precision, str) else None,
    )


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
