"""The device budget a bundle's calibration recorded, judged against this device.

Calibration (`dreamlink calibrate`) measures on a device the largest samples x horizon whose
p99 planning latency fits a share of the control period, and records it in the manifest's
`calibration.budget`. `dreamlink.runtime.budget` is the one reader of that record (the runtime's
rate check uses it too, so doctor, install and the runtime cannot disagree). Install and doctor
compare it with this device: a budget measured on another CPU is a warning (re-calibrate here), a
recorded p99 over the period's share is a refusal (the bundle's own numbers say it cannot keep the rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from dreamlink.bundle import Manifest
from dreamlink.runtime.budget import RecordedBudget, recorded_budget

__all__ = ["BudgetVerdict", "RecordedBudget", "judge_budget", "recorded_budget"]


@dataclass(frozen=True)
class BudgetVerdict:
    fits: bool  # False: the recorded numbers say this bundle cannot keep its control rate
    same_device: bool | None  # None: unknown (no device recorded)
    message: str


def judge_budget(manifest: Manifest, this_cpu: str) -> BudgetVerdict:
    """Compare the recorded budget with the bundle's control period and this device's CPU; a record in a form
    dreamlink does not write raises `BundleError` (see `recorded_budget`)."""
    rb = recorded_budget(manifest)
    period_ms = manifest.spec.control_period_s * 1e3
    if rb is None:
        return BudgetVerdict(True, None, "not calibrated (no budget in the manifest's calibration section)")
    parts = [f"{rb.section}:"]
    if rb.samples is not None and rb.horizon is not None:
        parts.append(f"K={rb.samples} x H={rb.horizon},")
    fits = True
    if rb.p99_ms is not None:
        fits = rb.p99_ms <= rb.share * period_ms
        share = "" if rb.share == 1.0 else f" ({rb.share:.0%}: {rb.share * period_ms:.2f} ms)"
        parts.append(f"p99 {rb.p99_ms:.2f} ms vs control period {period_ms:.2f} ms{share},")
    max_rate = rb.max_rate_hz
    if max_rate is not None and max_rate < manifest.spec.rate_hz * (1 - 1e-9):
        fits = False
        parts.append(f"max rate {max_rate:.1f} Hz < the spec's {manifest.spec.rate_hz:.1f} Hz,")
    same = None if rb.device is None else _same_cpu(rb.device, this_cpu)
    if rb.device is None:
        parts.append("device not recorded")
    else:
        parts.append(f"measured on {rb.device!r}" + ("" if same else f", this device is {this_cpu!r}"))
    return BudgetVerdict(fits, same, " ".join(parts))


def _same_cpu(recorded: str, this_cpu: str) -> bool:
    norm = [" ".join(s.lower().split()) for s in (recorded, this_cpu)]
    return norm[0] == norm[1] or norm[0] in norm[1] or norm[1] in norm[0]
