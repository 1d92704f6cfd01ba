"""Re-fly one recorded flight of a campaign, alone, from its recorded job (seed, parameters, faults)
and the campaign's own copy of the bundle: a failure found at scale, debugged on a laptop.

Lockstep flights are deterministic given the job: the simulator draws from the flight's seed, the
planner from the same seed, and time moves only with the runtime's ticks. Wall-clock figures
(overruns, wall time) are the only columns expected to differ.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamlink.campaign.flight import FlightOutput, run_job
from dreamlink.campaign.runner import RESULTS_NAME, eval_row, load_campaign_folder
from dreamlink.campaign.spec import CampaignError
from dreamlink.campaign.table import ResultsTable

log = logging.getLogger(__name__)

COMPARED = ("outcome", "tracking_rmse_m", "max_deviation_m", "min_fence_margin_m", "fence_breaches", "landed",
            "ticks", "fallbacks")


@dataclass(frozen=True)
class Replay:
    recorded: dict[str, Any] | None  # the campaign's row (None if the flight was never recorded)
    replayed: dict[str, Any]
    tlog: Path | None

    def differences(self, rtol: float = 1e-6) -> dict[str, tuple[Any, Any]]:
        """Compared columns that differ between the recorded and the replayed flight."""
        if self.recorded is None:
            return {}
        out = {}
        for key in COMPARED:
            a, b = self.recorded.get(key), self.replayed.get(key)
            if isinstance(a, float) and isinstance(b, float):
                same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)
            else:
                same = a == b
            if not same:
                out[key] = (a, b)
        return out


def replay_flight(campaign: Path, index: int, out: Path | None = None) -> Replay:
    """Fly flight `index` of `campaign` again (no Ray); its .tlog goes to `out` (default CAMPAIGN/replays)."""
    folder = load_campaign_folder(campaign)
    jobs = folder.jobs()
    if index not in jobs:
        raise CampaignError(f"{campaign}: no flight {index} (recorded jobs: 0..{max(jobs, default=-1)})")
    job = jobs[index]
    if job.kind != "eval":
        raise CampaignError(f"{campaign}: flight {index} is a {job.kind} flight; replay re-flies eval flights")
    out = Path(out) if out is not None else Path(campaign) / "replays"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dreamlink-replay-") as tmp:
        output: FlightOutput = run_job(job, folder.bundle_tar(), work_root=tmp)
    tlog = None
    if output.tlog is not None:
        tlog = out / f"flight-{index:04d}.tlog"
        tlog.write_bytes(output.tlog)
    recorded = None
    if (Path(campaign) / RESULTS_NAME).exists():
        recorded = ResultsTable(Path(campaign) / RESULTS_NAME).recorded().get(index)
    replayed = {k: v for k, v in eval_row(job, output).items()}
    return Replay(recorded, _as_recorded(replayed), tlog)


def _as_recorded(row: dict[str, Any]) -> dict[str, Any]:
    """The row as it reads back from the CSV (ints as ints, floats as floats)."""
    from dreamlink.campaign.table import typed

    return typed({k: "" if v is None else ("nan" if isinstance(v, float) and math.isnan(v) else str(v))
                  for k, v in row.items()})
