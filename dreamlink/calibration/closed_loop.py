"""Closed-loop quality per precision: the quadrotor's figure-eight in lockstep SITL, N seeds each.

Each flight is what a user runs: a lockstep quad SITL process (its domain parameters drawn from the
seed) and `dreamlink run --lockstep` in its own process, then the tracking RMSE is read from the
flight's ticks against the figure-eight (`dreamlink.reports.quad_summary`). Every precision flies
the same seeds, so the comparison is paired: seed by seed, the same vehicle, wind and planner noise.
Lockstep makes the result independent of how busy the machine is.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlightOutcome:
    precision: str
    seed: int
    ok: bool
    tracking_rmse_m: float
    landed_disarmed: bool | None
    fallbacks: dict[str, int] = field(default_factory=dict)
    error: str = ""


def fly_figure_eight(bundle: str | os.PathLike[str], out_dir: Path, seed: int, flavour: str = "ardupilot",
                     laps: float = 1.0, timeout_s: float = 900.0) -> dict[str, Any]:
    """One lockstep flight of `bundle`; returns the summary of `quad_summary` plus the loop's fallbacks."""
    from dreamlink.reports import load_ticks, quad_summary
    from dreamlink.sim.launcher import SitlProcess

    with SitlProcess("quad", lockstep=True, seed=seed, extra_args=("--flavour", flavour)) as sitl:
        cmd = [sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(bundle), "--connect",
               sitl.connect_string, "--lockstep", "--autopilot", flavour, "--laps", str(laps), "--out",
               str(out_dir), "--seed", str(seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"dreamlink run exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    summary = json.loads((out_dir / "summary.json").read_text())
    flight = quad_summary(load_ticks(out_dir / "ticks.npz"), summary["mission"])
    flight["fallbacks"] = summary["stats"].get("fallbacks", {})
    return flight


def closed_loop(bundles: Mapping[str, str | os.PathLike[str]], seeds: Sequence[int], out_dir: str | os.PathLike[str],
                flavour: str = "ardupilot", laps: float = 1.0,
                progress: Callable[[FlightOutcome], None] | None = None) -> list[FlightOutcome]:
    """Fly every bundle (by precision name) on every seed, seed-major so a cut-short run stays paired."""
    out = Path(out_dir)
    outcomes: list[FlightOutcome] = []
    for seed in seeds:
        for name, bundle in bundles.items():
            folder = out / f"{name}-seed{seed}"
            try:
                f = fly_figure_eight(bundle, folder, seed, flavour, laps)
                o = FlightOutcome(name, seed, True, float(f["tracking_rmse_m"]), f.get("landed_disarmed"),
                                  dict(f["fallbacks"]))
            except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
                log.warning("%s seed %d: flight failed: %s", name, seed, e)
                o = FlightOutcome(name, seed, False, float("nan"), None, {}, f"{type(e).__name__}: {e}"[:500])
            outcomes.append(o)
            if progress is not None:
                progress(o)
    return outcomes


def summarise(outcomes: Sequence[FlightOutcome], reference: str = "fp32", max_ratio: float = 1.10
              ) -> dict[str, dict[str, Any]]:
    """Per precision: mean/median RMSE over the seeds every precision completed, the ratio of means to
    `reference`'s, success count, and whether it is within `max_ratio` (e.g. 1.10: 10% worse at most)."""
    names = list(dict.fromkeys(o.precision for o in outcomes))
    by = {(o.precision, o.seed): o for o in outcomes}
    seeds = sorted({o.seed for o in outcomes})
    common = [s for s in seeds if all(by.get((n, s)) is not None and by[(n, s)].ok for n in names)]
    ref = [by[(reference, s)].tracking_rmse_m for s in common] if reference in names else []
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        rmse = [by[(n, s)].tracking_rmse_m for s in common]
        mean = float(np.mean(rmse)) if rmse else float("nan")
        ratio = mean / float(np.mean(ref)) if rmse and ref else float("nan")
        mine = [o for o in outcomes if o.precision == n]
        out[n] = {
            "flights": len(mine), "succeeded": sum(o.ok and bool(o.landed_disarmed) for o in mine),
            "seeds_compared": len(common), "rmse_mean_m": round(mean, 4),
            "rmse_median_m": round(float(np.median(rmse)), 4) if rmse else float("nan"),
            "rmse_per_seed_m": {str(s): round(r, 4) for s, r in zip(common, rmse, strict=True)},
            "ratio_to_fp32": round(ratio, 4), "within": bool(np.isfinite(ratio) and ratio <= max_ratio),
            "fallback_ticks": int(sum(sum(o.fallbacks.values()) for o in mine)),
        }
    return out
