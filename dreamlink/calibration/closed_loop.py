"""Closed-loop quality per precision: the quadrotor's figure-eight in lockstep SITL, N seeds each.

Each flight is what a user runs: a lockstep quad SITL process (its domain parameters drawn from the
seed) and `dreamlink run --lockstep` in its own process, then the tracking RMSE is read from the
flight's ticks against the figure-eight (`dreamlink.reports.quad_summary`). Every precision flies
the same seeds, so the comparison is paired: seed by seed, the same vehicle, wind and planner noise.
Lockstep makes the result independent of how busy the machine is, so flights may run side by side
(`workers`). How noisy the figure is: fly fp32 twice under two names, the second with its planner noise
seed moved (`noise_offsets`), everything else the same.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
                     laps: float = 1.0, timeout_s: float = 900.0, run_seed: int | None = None) -> dict[str, Any]:
    """One lockstep flight of `bundle` against the SITL vehicle of `seed`, planner noise from `run_seed`
    (default: `seed`); returns the summary of `quad_summary` plus the loop's fallbacks."""
    from dreamlink.campaign.quad_run import fly_quad_process
    from dreamlink.reports import load_ticks, quad_summary

    summary = fly_quad_process(bundle, flavour, seed, out_dir, laps=laps, timeout_s=timeout_s,
                               run_seed=seed if run_seed is None else run_seed)
    flight = quad_summary(load_ticks(out_dir / "ticks.npz"), summary["mission"])
    flight["fallbacks"] = summary["stats"].get("fallbacks", {})
    return flight


def closed_loop(bundles: Mapping[str, str | os.PathLike[str]], seeds: Sequence[int], out_dir: str | os.PathLike[str],
                flavour: str = "ardupilot", laps: float = 1.0,
                progress: Callable[[FlightOutcome], None] | None = None,
                noise_offsets: Mapping[str, int] | None = None, workers: int = 1) -> list[FlightOutcome]:
    """Fly every bundle (by name) on every seed, seed-major so a cut-short run stays paired; a name in
    `noise_offsets` plans with noise seed `seed + offset` (its SITL vehicle is still `seed`'s).
    Outcomes come back in seed-major order whatever `workers` is."""
    out = Path(out_dir)
    offsets = dict(noise_offsets or {})
    jobs = [(seed, name, bundle) for seed in seeds for name, bundle in bundles.items()]

    def fly(job: tuple[int, str, str | os.PathLike[str]]) -> FlightOutcome:
        seed, name, bundle = job
        folder = out / f"{name}-seed{seed}"
        try:
            f = fly_figure_eight(bundle, folder, seed, flavour, laps, run_seed=seed + offsets.get(name, 0))
            o = FlightOutcome(name, seed, True, float(f["tracking_rmse_m"]), f.get("landed_disarmed"),
                              dict(f["fallbacks"]))
        except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
            log.warning("%s seed %d: flight failed: %s", name, seed, e)
            o = FlightOutcome(name, seed, False, float("nan"), None, {}, f"{type(e).__name__}: {e}"[:500])
        if progress is not None:
            progress(o)
        return o

    if workers <= 1:
        return [fly(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each flight is two processes: threads only wait
        return list(pool.map(fly, jobs))


def ratio_interval(rmse: np.ndarray, ref: np.ndarray, level: float = 0.9, resamples: int = 2000
                   ) -> tuple[float, float]:
    """A paired bootstrap interval of mean(rmse) / mean(ref) over seeds (seeds resampled together):
    how far ten seeds pin the ratio down."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(rmse), (resamples, len(rmse)))
    ratios = rmse[idx].mean(axis=1) / np.maximum(ref[idx].mean(axis=1), 1e-12)
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


def summarise(outcomes: Sequence[FlightOutcome], reference: str = "fp32", max_ratio: float = 1.10
              ) -> dict[str, dict[str, Any]]:
    """Per precision: mean/median RMSE over the seeds every precision completed, the ratio of means to
    `reference`'s (and its paired-bootstrap 90 % interval), success count, and whether it is within
    `max_ratio` (e.g. 1.10: 10% worse at most)."""
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
        low, high = ratio_interval(np.array(rmse), np.array(ref)) if rmse and ref else (float("nan"),) * 2
        mine = [o for o in outcomes if o.precision == n]
        out[n] = {
            "flights": len(mine), "succeeded": sum(o.ok and bool(o.landed_disarmed) for o in mine),
            "seeds_compared": len(common), "rmse_mean_m": round(mean, 4),
            "rmse_median_m": round(float(np.median(rmse)), 4) if rmse else float("nan"),
            "rmse_per_seed_m": {str(s): round(r, 4) for s, r in zip(common, rmse, strict=True)},
            "ratio_to_fp32": round(ratio, 4), "ratio_ci90": [round(low, 4), round(high, 4)],
            "within": bool(np.isfinite(ratio) and ratio <= max_ratio),
            "fallback_ticks": int(sum(sum(o.fallbacks.values()) for o in mine)),
        }
    return out
