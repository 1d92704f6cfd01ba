"""One campaign flight: its own lockstep SITL process (behind the fault proxy if it has faults) on free
loopback ports, with the drawn parameters, and the onboard runtime (or the data collector) against it.

Process tree of a flight, so that a hung flight is ended whole and nothing outlives it::

    Ray worker  ── run_job() ──>  python -m dreamlink.campaign.flight JOB.json   (own session / process group)
                                    ├─ SITL process (--lockstep --domain-json-in ...)
                                    └─ fault proxy process (only with faults)

`run_job` waits at most `job.timeout_s`, then kills the group and reports the flight failed with the reason.
The flight process also dies with its worker (PR_SET_PDEATHSIG on Linux, SIGTERM, then its context
managers stop the SITL). Everything a flight produced comes back in the returned `FlightOutput` (the
row, the .tlog bytes, the shard bytes), so workers on other machines need no shared filesystem.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
OUTCOMES = ("success", "failure", "error")  # error: the flight broke (exception, timeout, worker died)
# One core per flight, and the same float reductions in a Ray worker, a replay on a laptop and CI.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# The runtime's lockstep clock nudges the vehicle one step when a sample is later than a few typical
# answers: right for lost packets, but on a loaded worker a scheduling stall does the same, and the
# flight stops being a function of its seed. A campaign wants the same flight on a busy worker and on
# a laptop (replay), so it waits this long before nudging.
LOCKSTEP_RETRY_S = 2.0


@dataclass(frozen=True)
class FlightJob:
    """Everything one flight needs, JSON-serialisable: replay re-flies a recorded job as it is."""

    kind: str  # "eval" or "collect"
    index: int
    seed: int
    domain: dict[str, Any]  # DomainParams.to_dict()
    faults: dict[str, str] = field(default_factory=dict)  # direction -> FaultSpec text; {}: no proxy
    autopilot: str = "ardupilot"
    control: str = "planner"
    mission: dict[str, Any] = field(default_factory=dict)  # MissionSpec fields
    success: dict[str, Any] = field(default_factory=dict)  # SuccessSpec fields
    collect_seconds: float = 40.0
    timeout_s: float = 240.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FlightJob:
        return FlightJob(**d)


@dataclass(frozen=True)
class FlightOutput:
    row: dict[str, Any]  # the measured columns (outcome, reason, RMSE, ...)
    tlog: bytes | None = None
    shard: bytes | None = None  # collect: the TransitionSet .npz


def run_job(job: FlightJob, bundle_tar: bytes | None, work_root: str | None = None) -> FlightOutput:
    """Fly `job` in its own process group within `job.timeout_s`; never raises for a flight that broke.

    `bundle_tar` (a bundle as a .tar) is cached by hash under the temp folder, once per machine."""
    t0 = time.monotonic()
    bundle_path = _cached_bundle(bundle_tar) if bundle_tar is not None else None
    with tempfile.TemporaryDirectory(prefix=f"dreamlink-flight-{job.index}-{job.seed}-", dir=work_root) as tmp:
        work = Path(tmp)
        (work / "job.json").write_text(json.dumps({"job": job.to_dict(), "bundle": str(bundle_path or "")}))
        log_path = work / "flight.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "dreamlink.campaign.flight", str(work / "job.json")],
                                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    env={**os.environ, **ONE_THREAD}, start_new_session=True,
                                    preexec_fn=_die_with_parent)
            try:
                proc.wait(job.timeout_s)
                reason = ""
            except subprocess.TimeoutExpired:
                reason = f"timeout: flight not done within {job.timeout_s:g} s (SITL or runtime hung)"
                _kill_group(proc)
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
        result_file = work / RESULT_NAME
        if result_file.exists():
            row = json.loads(result_file.read_text())
        else:
            tail = log_path.read_bytes()[-1500:].decode("utf-8", errors="replace")
            row = {"outcome": "error", "reason": reason or f"crashed: flight process exit code {proc.returncode}",
                   "error": tail.strip().splitlines()[-1] if tail.strip() else ""}
        row["wall_s"] = round(time.monotonic() - t0, 3)
        row["node"] = _node_name()
        tlog = work / "flight" / "flight.tlog"
        shard = work / "shard.npz"
        return FlightOutput(row, tlog.read_bytes() if tlog.exists() else None,
                            shard.read_bytes() if shard.exists() else None)


def fly_here(job: FlightJob, bundle: Path | None, work: Path) -> dict[str, Any]:
    """The flight process's work: start the SITL, fly or collect, judge. Returns the measured columns."""
    from dreamlink.sim.fault_proxy import FaultSpec
    from dreamlink.sim.launcher import SitlProcess
    from dreamlink.sim.proxy_launcher import SitlBehindProxy

    domain_file = work / "domain.json"
    domain_file.write_text(json.dumps(job.domain))
    extra = ("--flavour", job.autopilot, "--domain-json-in", str(domain_file), "--log-level", "WARNING")
    sim: Any
    if job.faults:
        sim = SitlBehindProxy("quad", FaultSpec.parse(job.faults.get("to_runtime", "")),
                              FaultSpec.parse(job.faults.get("to_vehicle", "")), lockstep=True, seed=job.seed,
                              extra_args=extra)
    else:
        sim = SitlProcess("quad", lockstep=True, seed=job.seed, extra_args=extra)
    with sim:
        try:
            if job.kind == "collect":
                return _collect(job, sim.connect_string, work)
            return _fly(job, bundle, sim.connect_string, work)
        finally:
            # The SITL takes seconds to exit on SIGTERM; its logs are of no use to a campaign.
            (sim.sitl if job.faults else sim).stop(timeout_s=0.5)


def _fly(job: FlightJob, bundle: Path | None, connect: str, work: Path) -> dict[str, Any]:
    from dreamlink.reports import load_ticks, quad_summary
    from dreamlink.runtime.onboard import MissionConfig, RunConfig, fly

    if bundle is None:
        raise ValueError("an eval flight needs a bundle")
    m = job.mission
    config = RunConfig(bundle=bundle, connect=connect, lockstep=True, lockstep_retry_s=LOCKSTEP_RETRY_S,
                       out_dir=work / "flight", seed=job.seed,
                       autopilot=job.autopilot,
                       mission=MissionConfig(takeoff_altitude_m=m["altitude_m"], half_width_m=m["half_width_m"],
                                             speed_mps=m["speed_mps"], laps=m["laps"],
                                             baseline=job.control == "baseline"))
    result = fly(config)
    summary = json.loads((result.out_dir / "summary.json").read_text())
    q = quad_summary(load_ticks(result.out_dir / "ticks.npz"), summary["mission"])
    stats = summary["stats"]
    row = {
        "tracking_rmse_m": q["tracking_rmse_m"], "max_deviation_m": q["max_deviation_m"],
        "min_fence_margin_m": q["min_fence_margin_m"], "fence_breaches": q["fence_breaches"],
        "landed": bool(q["landed_disarmed"]), "ticks": stats["ticks"],
        "fallbacks": int(sum(stats["fallbacks"].values())), "overruns": stats["overruns"],
        "stale_ticks": stats["stale_ticks"], "shield_fenced": stats["shield_fenced"],
    }
    return {**row, **judge(row, job.success)}


def judge(row: dict[str, Any], success: dict[str, Any]) -> dict[str, str]:
    """Outcome and reason of a flight that flew to the end, against the campaign's success criteria."""
    reasons = []
    rmse = row["tracking_rmse_m"]
    if not rmse <= success["max_tracking_rmse_m"]:  # NaN fails too
        reasons.append(f"tracking RMSE {rmse:.2f} m > {success['max_tracking_rmse_m']:g} m")
    if row["fence_breaches"] > success["max_fence_breaches"]:
        reasons.append(f"{row['fence_breaches']} fence breaches")
    if success["require_landed"] and not row["landed"]:
        reasons.append("not landed and disarmed")
    return {"outcome": "failure" if reasons else "success", "reason": "; ".join(reasons)}


def _collect(job: FlightJob, connect: str, work: Path) -> dict[str, Any]:
    import numpy as np

    from dreamlink.campaign.collect import QuadCollectConfig, collect_quad
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.profiles import make_profile
    from dreamlink.firmware_bridge.vehicle_id import read_vehicle_identity
    from dreamlink.learning.transitions import TransitionSet
    from dreamlink.spec import QUAD

    with Link(LinkConfig(connect)) as link:
        profile = make_profile(QUAD, link, job.autopilot, lockstep=True)
        profile.connect(timeout_s=30)
        vehicle = {**read_vehicle_identity(profile).to_dict(), "source": "dreamlink quad SITL"}
        d = collect_quad(profile, QUAD, QuadCollectConfig(seconds=job.collect_seconds, seed=job.seed,
                                                          takeoff_altitude_m=job.mission.get("altitude_m", 5.0)),
                         meta={"flavour": job.autopilot, "flight": job.index, "domain": job.domain,
                               "vehicle": vehicle})
    data = TransitionSet(d.spec, d.state, d.action, d.next_state, np.full(len(d), job.index, np.int64), d.meta)
    data.save(work / "shard.npz")
    return {"outcome": "success", "reason": "", "transitions": len(data)}


def _node_name() -> str:
    """The host, and the Ray node when in a Ray task (one host can run several nodes)."""
    name = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            name += ":" + ray.get_runtime_context().get_node_id()[:8]
    except ImportError:
        pass
    return name


def _cached_bundle(tar: bytes) -> Path:
    digest = hashlib.sha256(tar).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "dreamlink-campaign-bundles"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"bundle-{digest}.tar"
    if not path.exists():
        tmp = cache / f".{digest}.{os.getpid()}.tmp"
        tmp.write_bytes(tar)
        os.replace(tmp, path)
    return path


def _die_with_parent() -> None:
    """In the child: SIGTERM when the worker that started it dies (Linux), so no flight outlives its worker."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def main(argv: list[str]) -> int:
    """`python -m dreamlink.campaign.flight JOB.json`: fly it, write result.json beside it."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # unwinds through the SITL's context manager

    signal.signal(signal.SIGTERM, stop)
    path = Path(argv[0])
    spec = json.loads(path.read_text())
    job = FlightJob.from_dict(spec["job"])
    work = path.parent
    try:
        row = fly_here(job, Path(spec["bundle"]) if spec["bundle"] else None, work)
    except Exception as exc:  # a flight that broke is a result, with its reason
        log.exception("flight %d broke", job.index)
        row = {"outcome": "error", "reason": f"{type(exc).__name__}", "error": str(exc)[:500]}
    tmp = work / (RESULT_NAME + ".tmp")
    tmp.write_text(json.dumps(row, default=float))
    os.replace(tmp, work / RESULT_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
