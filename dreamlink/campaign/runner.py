"""Campaign orchestration on Ray: one flight = one task, results recorded durably as they arrive.

The same code runs on a laptop (a local Ray started here, the default) and on a cluster (`address`, or
`RAY_ADDRESS`; `ray://HEAD:10001` needs `ray[client]`). A campaign folder holds everything:

    campaign.json   the resolved campaign (spec, its digest, the bundle's sha256)
    bundle.tar      the bundle flown (sent to every worker through Ray's object store; replay uses it)
    jobs.jsonl      every flight's job (seed, parameters, faults), written before any flight starts
    results.csv     one row per finished flight, fsynced (see `table`)
    tlogs/          eval: flight-NNNN.tlog of each flight
    data/           collect: shard-NNNN.npz and manifest.json (see `shards`)

Started again on the same folder, a campaign skips every flight already in results.csv; a folder
made with a different campaign file or bundle is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamlink.campaign.flight import FlightJob, FlightOutput, run_job
from dreamlink.campaign.spec import CampaignError, CampaignSpec, FlightDraw, draw_flight
from dreamlink.campaign.table import EVAL_COLUMNS, ResultsTable

log = logging.getLogger(__name__)

CAMPAIGN_NAME = "campaign.json"
BUNDLE_NAME = "bundle.tar"
JOBS_NAME = "jobs.jsonl"
RESULTS_NAME = "results.csv"
TLOG_DIR = "tlogs"
# Beyond a flight's own timeout (enforced in the task), how long the driver waits for a worker that
# neither answers nor fails: a worker lost with its machine.
WORKER_GRACE_S = 60.0


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray started here
    num_cpus: int | None = None  # local Ray only (None: all cores)
    object_store_bytes: int = 128 * 2**20  # local Ray only; flights move little data
    max_concurrent: int = 0  # flights in the air at once; 0: one per CPU of the cluster


@dataclass
class Progress:
    """What a progress bar shows; `flights_per_min` counts this run's flights since its first start."""

    total: int
    done: int = 0
    successes: int = 0
    failures: int = 0  # flew, missed the success criteria
    errors: int = 0  # broke: exception, timeout, worker died
    started_s: float = field(default_factory=time.monotonic)
    new: int = 0

    @property
    def flights_per_min(self) -> float:
        elapsed = time.monotonic() - self.started_s
        return 60.0 * self.new / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class Phase:
    """Flights up to (not including) `until_index` flown with at most `max_concurrent` at once."""

    until_index: int
    max_concurrent: int


@dataclass(frozen=True)
class PhaseResult:
    flights: int
    seconds: float
    max_concurrent: int

    @property
    def flights_per_min(self) -> float:
        return 60.0 * self.flights / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class CampaignFolder:
    root: Path
    spec: CampaignSpec
    kind: str  # "eval" or "collect"

    @property
    def results(self) -> Path:
        return self.root / RESULTS_NAME

    def jobs(self) -> dict[int, FlightJob]:
        path = self.root / JOBS_NAME
        if not path.exists():
            return {}
        jobs = {}
        for line in path.read_text().splitlines():
            if line.strip():
                job = FlightJob.from_dict(json.loads(line))
                jobs[job.index] = job
        return jobs

    def bundle_tar(self) -> bytes | None:
        path = self.root / BUNDLE_NAME
        return path.read_bytes() if path.exists() else None


def bundle_to_tar(path: Path) -> bytes:
    """A bundle folder (or an existing .tar of one) as .tar bytes, with reproducible member order."""
    path = Path(path)
    if path.is_file():
        return path.read_bytes()
    if not (path / "manifest.json").exists():
        raise CampaignError(f"{path}: not a bundle (expected a folder with manifest.json, or a .tar of one)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member in sorted(path.iterdir()):
            info = tar.gettarinfo(str(member), arcname=member.name)
            info.mtime = 0
            with open(member, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def open_campaign(root: Path, spec: CampaignSpec, kind: str, bundle: Path | None,
                  source_text: str | None = None) -> CampaignFolder:
    """Create the campaign folder, or check that an existing one was made with the same spec and bundle."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tar = bundle_to_tar(bundle) if bundle is not None else None
    if tar is not None:
        from dreamlink.bundle import load_bundle

        probe = root / (BUNDLE_NAME + ".check")
        probe.write_bytes(tar)
        try:
            load_bundle(probe)  # refuse a bad bundle before any flight, with the bundle's own error
        finally:
            probe.unlink()
    record = {"kind": kind, "digest": spec.digest(), "spec": spec.to_dict(),
              "bundle_sha256": hashlib.sha256(tar).hexdigest() if tar is not None else None}
    path = root / CAMPAIGN_NAME
    if path.exists():
        old = json.loads(path.read_text())
        for key, what in (("kind", "a campaign of another kind"), ("digest", "another campaign file"),
                          ("bundle_sha256", "another bundle")):
            if old.get(key) != record[key]:
                raise CampaignError(f"{root} holds {what} ({key} {old.get(key)!r}, now {record[key]!r}); "
                                    f"resume it with the same inputs or use another --out folder")
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    if tar is not None and not (root / BUNDLE_NAME).exists():
        atomic_write(root / BUNDLE_NAME, tar)
    if source_text is not None:
        atomic_write(root / "campaign.toml", source_text)
    return CampaignFolder(root, spec, kind)


def load_campaign_folder(root: Path) -> CampaignFolder:
    """An existing campaign folder (for replay and reports)."""
    from dreamlink.campaign.spec import parse_campaign

    path = Path(root) / CAMPAIGN_NAME
    if not path.exists():
        raise CampaignError(f"{root}: not a campaign folder (no {CAMPAIGN_NAME})")
    record = json.loads(path.read_text())
    spec = parse_campaign(_toml_shaped(record["spec"]), str(path))
    return CampaignFolder(Path(root), spec, record["kind"])


def make_job(spec: CampaignSpec, draw: FlightDraw, kind: str) -> FlightJob:
    return FlightJob(kind=kind, index=draw.index, seed=draw.seed, domain=draw.domain.to_dict(), faults=draw.faults,
                     autopilot=spec.autopilot, control=spec.control, mission=dataclasses.asdict(spec.mission),
                     success=dataclasses.asdict(spec.success), collect_seconds=spec.collect.seconds,
                     timeout_s=spec.timeout_s)


def plan_jobs(folder: CampaignFolder, flights: int) -> list[FlightJob]:
    """Jobs 0..flights-1: those already in jobs.jsonl as recorded, the others drawn and appended (fsynced)."""
    jobs = folder.jobs()
    new = [make_job(folder.spec, draw_flight(folder.spec, i), folder.kind) for i in range(flights) if i not in jobs]
    if new:
        with open(folder.root / JOBS_NAME, "a") as f:
            for job in new:
                f.write(json.dumps(job.to_dict()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        jobs.update({job.index: job for job in new})
    return [jobs[i] for i in range(flights)]


def start_ray(options: RayOptions) -> bool:
    """Connect to the cluster or start a local Ray; True if this call started it (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=options.num_cpus, object_store_memory=options.object_store_bytes,
                 include_dashboard=False, log_to_driver=False)
    log.info("ray: %s", ray.cluster_resources())
    return True


def run_flights(
    jobs: Sequence[FlightJob],
    bundle_tar: bytes | None,
    record: Callable[[FlightJob, FlightOutput], None],
    options: RayOptions,
    phases: Sequence[Phase] = (),
    progress: Callable[[Progress, FlightJob, FlightOutput], None] | None = None,
    total: int | None = None,
) -> list[PhaseResult]:
    """Fly `jobs` as Ray tasks, calling `record(job, output)` on the driver as each one ends.

    A task that raises or whose worker dies, or that gives no answer within its timeout plus a grace,
    is recorded as an error with the reason; the others go on. `phases` caps the flights in the air per
    index range (a scaling measurement); without phases, `options.max_concurrent` caps them."""
    import ray

    started = start_ray(options)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_job)
        default_limit = options.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 1)))
        blob = ray.put(bundle_tar) if bundle_tar is not None else None
        state = Progress(total=total if total is not None else len(jobs))
        results: list[PhaseResult] = []
        bounds = list(phases) or [Phase(max((j.index for j in jobs), default=-1) + 1, default_limit)]
        low = 0
        for phase in bounds:
            batch = [j for j in jobs if low <= j.index < phase.until_index]
            low = phase.until_index
            if not batch:
                continue
            t0 = time.monotonic()
            _run_batch(task, batch, blob, record, phase.max_concurrent or default_limit, state, progress)
            results.append(PhaseResult(len(batch), time.monotonic() - t0, phase.max_concurrent or default_limit))
        return results
    finally:
        if started:
            ray.shutdown()


def _run_batch(task: Any, jobs: Sequence[FlightJob], blob: Any, record: Callable[[FlightJob, FlightOutput], None],
               limit: int, state: Progress, progress: Callable[[Progress, FlightJob, FlightOutput], None] | None
               ) -> None:
    import ray

    queue = list(jobs)
    pending: dict[Any, tuple[FlightJob, float]] = {}
    while queue or pending:
        while queue and len(pending) < limit:
            job = queue.pop(0)
            pending[task.remote(job, blob)] = (job, time.monotonic())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        finished: list[tuple[FlightJob, FlightOutput]] = []
        for ref in ready:
            job, _ = pending.pop(ref)
            try:
                output = ray.get(ref)
            except ray.exceptions.RayError as exc:
                reason = "worker died" if isinstance(exc, ray.exceptions.WorkerCrashedError) else "task failed"
                output = FlightOutput({"outcome": "error", "reason": reason, "error": _first_line(exc)})
            finished.append((job, output))
        now = time.monotonic()
        for ref, (job, submitted_s) in list(pending.items()):
            if now - submitted_s > job.timeout_s + WORKER_GRACE_S:
                ray.cancel(ref, force=True)
                del pending[ref]
                finished.append((job, FlightOutput({
                    "outcome": "error", "reason": f"timeout: no answer from its worker within "
                                                  f"{job.timeout_s + WORKER_GRACE_S:g} s"})))
        for job, output in finished:
            record(job, output)
            state.done += 1
            state.new += 1
            outcome = output.row.get("outcome")
            state.successes += outcome == "success"
            state.failures += outcome == "failure"
            state.errors += outcome == "error"
            if progress is not None:
                progress(state, job, output)


def eval_row(job: FlightJob, output: FlightOutput) -> dict[str, Any]:
    """The results-table row of an eval flight: the job's draw and what the flight measured."""
    from dreamlink.sim.quadrotor.randomisation import DomainParams

    draw = FlightDraw(job.index, job.seed, DomainParams.from_dict(job.domain), job.faults)
    return {"index": job.index, "seed": job.seed, **draw.params(),
            "faults_to_runtime": job.faults.get("to_runtime", ""),
            "faults_to_vehicle": job.faults.get("to_vehicle", ""), **output.row}


def run_eval(
    folder: CampaignFolder,
    flights: int,
    options: RayOptions,
    phases: Sequence[Phase] = (),
    progress: Callable[[Progress, FlightJob, FlightOutput], None] | None = None,
) -> list[PhaseResult]:
    """Fly flights 0..flights-1 of an eval campaign that are not recorded yet; rows and .tlogs as they end."""
    table = ResultsTable(folder.results, EVAL_COLUMNS)
    done = table.recorded()
    jobs = [j for j in plan_jobs(folder, flights) if j.index not in done]
    (folder.root / TLOG_DIR).mkdir(exist_ok=True)
    log.info("%s: %d flights recorded, %d to fly", folder.root, len(done), len(jobs))

    def record(job: FlightJob, output: FlightOutput) -> None:
        if output.tlog is not None:
            atomic_write(folder.root / TLOG_DIR / f"flight-{job.index:04d}.tlog", output.tlog)
        table.append(eval_row(job, output))

    return run_flights(jobs, folder.bundle_tar(), record, options, phases, progress, total=len(jobs))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _toml_shaped(spec: dict[str, Any]) -> dict[str, Any]:
    """`CampaignSpec.to_dict()` back in the campaign file's layout (for `parse_campaign`)."""
    top = {k: spec[k] for k in ("vehicle", "task", "autopilot", "control", "flights", "seed", "timeout_s")}
    return {"campaign": top, **{k: spec[k] for k in ("mission", "randomise", "faults", "success", "collect")}}
