"""`campaign collect`: transitions from many randomised lockstep flights, one shard per flight, and a
manifest that training reads.

    DIR/data/shard-0007.npz     a TransitionSet (episode id = flight index, meta = the flight's draw)
    DIR/data/manifest.json      {"schema": 1, "vehicle": ..., "shards": [{"file", "flight", "seed",
                                 "transitions", "sha256", "domain"}, ...]}

The manifest is rewritten atomically after each shard, so an interrupted collection resumes where it
stopped and a reader never sees a shard that is not whole. `load_shards(manifest)` checks every hash
and returns the union as one TransitionSet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dreamlink.campaign.flight import FlightJob, FlightOutput
from dreamlink.campaign.runner import (
    CampaignFolder,
    Phase,
    PhaseResult,
    Progress,
    RayOptions,
    atomic_write,
    eval_row,
    plan_jobs,
    run_flights,
)
from dreamlink.campaign.table import PARAM_COLUMNS, ResultsTable

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
DATA_DIR = "data"
COLLECT_COLUMNS = ("index", "seed", "outcome", "reason", "transitions", "wall_s", "node", "error")


def load_shards(manifest_path: str | os.PathLike[str]) -> Any:
    """The union of a collection's shards as one `TransitionSet` (episode ids = flight indices).

    Raises `TransitionError` (from learning.transitions) on a missing shard or a hash mismatch."""
    from dreamlink.learning.transitions import TransitionError, TransitionSet

    path = Path(manifest_path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TransitionError(f"{path}: not a readable shard manifest ({exc})") from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not shards:
        raise TransitionError(f"{path}: a manifest with no shards; run `dreamlink campaign collect` first")
    sets = []
    for entry in shards:
        shard = path.parent / entry["file"]
        if not shard.exists():
            raise TransitionError(f"{path}: shard {entry['file']} is missing")
        digest = hashlib.sha256(shard.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise TransitionError(f"{shard}: sha256 mismatch (manifest {entry['sha256'][:12]}, file {digest[:12]}); "
                                  f"collect that flight again")
        sets.append(TransitionSet.load(shard))
    return TransitionSet.concat(sets)


def run_collect(
    folder: CampaignFolder,
    flights: int,
    options: RayOptions,
    phases: Sequence[Phase] = (),
    progress: Callable[[Progress, FlightJob, FlightOutput], None] | None = None,
) -> list[PhaseResult]:
    """Collect flights 0..flights-1 not collected yet; shards and the manifest as they arrive."""
    data = folder.root / DATA_DIR
    data.mkdir(exist_ok=True)
    table = ResultsTable(folder.results, COLLECT_COLUMNS + PARAM_COLUMNS)
    manifest_path = data / MANIFEST_NAME
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {
        "schema": 1, "vehicle": folder.spec.vehicle, "shards": []}
    have = {entry["flight"] for entry in manifest["shards"]}
    done = table.recorded()
    jobs = [j for j in plan_jobs(folder, flights) if j.index not in done and j.index not in have]

    def record(job: FlightJob, output: FlightOutput) -> None:
        if output.shard is not None:
            name = f"shard-{job.index:04d}.npz"
            atomic_write(data / name, output.shard)
            manifest["shards"].append({"file": name, "flight": job.index, "seed": job.seed,
                                       "transitions": output.row.get("transitions"),
                                       "sha256": hashlib.sha256(output.shard).hexdigest(), "domain": job.domain})
            manifest["shards"].sort(key=lambda e: e["flight"])
            atomic_write(manifest_path, json.dumps(manifest, indent=1) + "\n")
        table.append(eval_row(job, output))

    return run_flights(jobs, None, record, options, phases, progress, total=len(jobs))
