"""The fault matrix: one lockstep quad flight per fault kind and rate, judged from both ends.

    python -m dreamlink.campaign.faults [--flavour ardupilot|px4] [--out DIR] [--only NAME ...] [--seed N]

Each row flies `dreamlink run`'s own `fly()` (take off, figure-eight, land) against the quad SITL of the
chosen autopilot flavour (ArduPilot by default, or PX4) in lockstep, with one fault injected: packet loss
and latency and a link cut through the fault proxy (`sim.proxy_launcher`), a reboot, a telemetry freeze
and a bad estimator inside the SITL, a model that emits NaN or is slow (`campaign.fault_bundles`), an
e-stop and a spoofer from a ground-station socket.
The quad bundle is one dreamlink trains itself, cached under the output folder.

Judged per flight:
- outcome, from the vehicle's side (the SITL's FINAL line, its true state): "landed" (disarmed on the
  ground, or rebooted there), "holding" (armed, in the air, slower than 0.5 m/s in a position mode),
  "failsafe" (the autopilot flies its own RTL/LAND), "terminated" (the e-stop stopped the motors, which is
  what flight termination asks for: the vehicle falls, and the SITL is stepped on until it lands, to
  report the impact); anything else, or a runtime error, is "UNSAFE".
- fallbacks the loop used (counts by reason), e-stops, stale ticks, failsafe requests.
- the geofence: the smallest margin to the fence of any recorded state, and breaches (commands are
  fenced by the shield: a breach would be a state outside it).
- log records lost: the .tlog read back with pymavlink against the number of frames the link handed the
  recorder (rx delivered + tx); 0 expected for a process that exits normally. The kill -9 row runs
  `dreamlink run` as its own process and SIGKILLs it mid-flight: nobody is left to count, so the file is
  walked record by record (8-byte time + one whole MAVLink frame) and a torn record at its end is the one
  record lost; pymavlink must read back every whole one. The vehicle then goes on (a ground-station
  socket keeps the lockstep SITL stepping with TIMESYNC, as time would in flight): ArduPilot's GUID_TIMEOUT
  brakes it and it holds; PX4's offboard-loss failsafe (COM_OF_LOSS_T) takes it over.

The overrun row runs in real time, not lockstep: in lockstep the vehicle waits for the planner, so a slow
plan is counted but flown (`ControlLoop`), which is the point of lockstep and hides what an overrun does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dreamlink.campaign.fault_judging import (
    SAFE,
    fence_margin,
    judge,
    sitl_final,
    tlog_fence_margin,
    tlog_records,
    tlog_walk,
)

log = logging.getLogger(__name__)

OUT = Path("runs/faults")
FLAVOURS = ("ardupilot", "px4")


@dataclass(frozen=True)
class FaultRow:
    """One flight of the matrix."""

    name: str
    rate: str  # as printed in the table
    to_runtime: str = ""  # FaultSpec text for the proxy (vehicle -> runtime)
    to_vehicle: str = ""  # FaultSpec text (runtime -> vehicle)
    sitl_args: tuple[str, ...] = ()
    bundle: str = "trained"  # trained | nan | slow
    lockstep: bool = True
    estop_after_s: float = 0.0  # wall seconds after the loop starts; 0 = no e-stop
    spoof: bool = False
    ticks: int = 0  # 0: one lap
    altitude_m: float = 5.0  # take-off altitude
    kill_after_s: float = 0.0  # SIGKILL `dreamlink run` (its own process) this long after the loop started


def matrix() -> list[FaultRow]:
    rows = [FaultRow("none", "-")]
    for p in (5, 20, 50):
        spec = f"drop_rate={p / 100:g}"
        rows.append(FaultRow("packet loss", f"{p}% each way", to_runtime=spec, to_vehicle=spec))
    rows += [
        FaultRow("latency", "200 ms each way", to_runtime="delay_ms=200", to_vehicle="delay_ms=200"),
        FaultRow("link cut", "2 s (wall)", to_runtime="cut_start_s=12,cut_duration_s=2",
                 to_vehicle="cut_start_s=12,cut_duration_s=2"),
        FaultRow("telemetry freeze", "2 s at t=8 s", sitl_args=("--freeze-telemetry", "8:2")),
        FaultRow("bad estimator", "3 s at t=8 s", sitl_args=("--bad-estimator", "8:3")),
        FaultRow("SITL reboot", "at t=8 s", sitl_args=("--reboot-at-s", "8")),
        FaultRow("NaN model", "vel_n beyond 1 m/s", bundle="nan"),
        FaultRow("planning overrun", "slow model, real time", bundle="slow", lockstep=False, ticks=400),
        FaultRow("e-stop", "DO_FLIGHTTERMINATION", estop_after_s=3.0),
        FaultRow("spoofed commands", "unsigned + bad key", spoof=True),
        FaultRow("runtime kill -9", "mid-flight", kill_after_s=3.0),
    ]
    return rows


@dataclass
class FlightReport:
    name: str
    rate: str
    outcome: str
    safe: bool
    fallbacks: dict[str, int] = field(default_factory=dict)
    min_fence_margin_m: float = math.nan
    fence_breaches: int = 0
    records_counted: int = 0
    records_read: int = 0
    records_lost: int = 0
    wall_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


# -- flight ------------------------------------------------------------------------------------------


def _ground_station(port: int, frames: list[bytes], delay_s: float, stop: threading.Event) -> threading.Thread:
    """Send `frames` to 127.0.0.1:`port` after `delay_s` (a ground station / an attacker on its own socket)."""

    def run() -> None:
        if stop.wait(delay_s):
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for frame in frames:
                s.sendto(frame, ("127.0.0.1", port))
                time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True, name="ground-station")
    thread.start()
    return thread


def _spoof_frames(wrong_key: bytes) -> list[bytes]:
    """Unsigned and wrongly signed COMMAND_LONGs: force-disarm, set LAND, arm; 255/190 as a GCS would be."""
    from dreamlink.firmware_bridge.link import mavlink

    frames = []
    for key in (None, wrong_key):
        mav = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
        if key is not None:
            mav.signing.secret_key, mav.signing.sign_outgoing, mav.signing.link_id = key, True, 7
            mav.signing.timestamp = int((time.time() - 1_420_070_400) * 100_000)
        for target in ((1, 1), (1, 191)):
            for cmd, params in ((400, (0, 21196)), (176, (1, 9)), (400, (1, 0))):
                p = list(params) + [0] * (7 - len(params))
                frames.append(bytes(mav.command_long_encode(*target, cmd, 0, *p).pack(mav)))
    return frames


def _keep_stepping(vehicle_addr: tuple[str, int], seconds: float) -> None:
    """Tick a lockstep SITL with TIMESYNC requests for `seconds` of vehicle time (20 ms each)."""
    from dreamlink.firmware_bridge.link import mavlink

    gcs = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(round(seconds / 0.02)):
            s.sendto(bytes(gcs.timesync_encode(0, time.monotonic_ns()).pack(gcs)), vehicle_addr)
            time.sleep(0.002)


def kill_row(row: FaultRow, bundles: dict[str, Path], flight_dir: Path, seed: int,
             flavour: str = "ardupilot") -> tuple[dict[str, Any], str]:
    """`dreamlink run` in its own process, SIGKILLed mid-flight; returns (the SITL's final state, error)."""
    import signal
    import subprocess

    from dreamlink.sim.launcher import SitlProcess

    out = flight_dir / "flight"
    with SitlProcess("quad", lockstep=True, seed=seed, extra_args=("--flavour", flavour)) as sitl:
        cmd = [sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(bundles[row.bundle]), "--connect",
               sitl.connect_string, "--lockstep", "--autopilot", flavour, "--laps", "1", "--out", str(out)]
        with open(flight_dir / "runtime.log", "wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
            events = out / "events.jsonl"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None and not (
                    events.exists() and '"armed"' in events.read_text()):
                time.sleep(0.05)
            time.sleep(row.kill_after_s)
            if proc.poll() is not None:
                return {}, f"dreamlink run exited ({proc.returncode}) before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert sitl.vehicle_address is not None
        _keep_stepping(sitl.vehicle_address, 6.0)  # past GUID_TIMEOUT (3 s) and the brake; COM_OF_LOSS_T (1 s)
        sitl.stop(timeout_s=15.0)
        return sitl_final(sitl.output_tail(20000)), ""


def fly_row(row: FaultRow, bundles: dict[str, Path], out: Path, seed: int = 21,
            flavour: str = "ardupilot") -> FlightReport:
    """Fly one row; never raises for a flight that went wrong (that is a row in the table)."""
    from dreamlink.reports import load_ticks
    from dreamlink.runtime.onboard import MissionConfig, RunConfig, fly
    from dreamlink.sim.fault_proxy import FaultSpec
    from dreamlink.sim.launcher import SitlProcess
    from dreamlink.sim.proxy_launcher import SitlBehindProxy

    flight_dir = out / row.name.replace(" ", "-").replace("%", "") / row.rate.split()[0].replace("%", "pct")
    if flight_dir.exists():
        import shutil

        shutil.rmtree(flight_dir)
    flight_dir.mkdir(parents=True)
    sitl_args: tuple[str, ...] = ("--flavour", flavour, *row.sitl_args)
    key_file = ""
    if row.spoof:
        from dreamlink.firmware_bridge.security import write_signing_key

        key_file = str(flight_dir / "signing.key")
        write_signing_key(key_file)
        sitl_args += ("--signing-key-file", key_file)
    started = time.monotonic()
    if row.kill_after_s:
        return _killed_report(row, bundles, flight_dir, seed, started, flavour)
    sim: Any
    if row.to_runtime or row.to_vehicle:
        sim = SitlBehindProxy("quad", FaultSpec.parse(row.to_runtime), FaultSpec.parse(row.to_vehicle),
                              lockstep=row.lockstep, seed=seed, extra_args=sitl_args)
    else:
        sim = SitlProcess("quad", lockstep=row.lockstep, seed=seed, extra_args=sitl_args)
    mission = MissionConfig(laps=1.0, takeoff_altitude_m=row.altitude_m)
    config = RunConfig(bundle=bundles[row.bundle], connect="", lockstep=row.lockstep, out_dir=flight_dir / "flight",
                       seed=seed, autopilot=flavour, mission=mission, ticks=row.ticks, signing_key_file=key_file,
                       connect_timeout_s=60.0)
    error = ""
    stop_gs = threading.Event()
    summary: dict[str, Any] = {}
    final: dict[str, Any] = {}
    try:
        with sim:
            config = replace(config, connect=sim.connect_string)
            runtime_port = int(sim.connect_string.rsplit(":", 1)[1])
            threads = []
            if row.estop_after_s or row.spoof:
                threads.append(threading.Thread(target=_when_flying, daemon=True, args=(
                    config.out_dir, row, runtime_port, getattr(sim, "vehicle_address", None), stop_gs)))
                threads[-1].start()
            try:
                fly(config)
            except Exception as exc:  # a flight that fails is a row that says so
                error = f"{type(exc).__name__}: {exc}"
                log.error("%s %s: flight failed: %s", row.name, row.rate, error)
            stop_gs.set()
            for t in threads:
                t.join(timeout=5)
            sitl = sim.sitl if isinstance(sim, SitlBehindProxy) else sim
            if row.estop_after_s and sitl.vehicle_address is not None:
                _keep_stepping(sitl.vehicle_address, 3.0)  # lockstep time stopped with the runtime: let it fall
            sitl.stop(timeout_s=15.0)  # SIGTERM: it prints its FINAL line; close() would drop its output
            final = sitl_final(sitl.output_tail(20000))
    except Exception as exc:
        error = error or f"{type(exc).__name__}: {exc}"
    wall_s = time.monotonic() - started
    summary_path = config.out_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
    stats = summary.get("stats", {})
    estopped = bool(stats.get("estops"))
    outcome = judge(final, estopped) if not error else f"UNSAFE ({error[:60]})"
    report = FlightReport(row.name, row.rate, outcome, outcome in SAFE, dict(stats.get("fallbacks", {})),
                          wall_s=round(wall_s, 1))
    ticks_path = config.out_dir / "ticks.npz"
    if ticks_path.exists() and summary.get("mission", {}).get("fence_min_ned_m") is not None:
        report.min_fence_margin_m, report.fence_breaches = fence_margin(load_ticks(ticks_path), summary["mission"])
    link = summary.get("link", {})
    report.records_counted = int(link.get("rx_frames", 0)) + int(link.get("tx_frames", 0))
    report.records_read = tlog_records(config.out_dir / "flight.tlog")
    report.records_lost = max(0, report.records_counted - report.records_read)
    report.detail = {"sitl": final, "stale_ticks": stats.get("stale_ticks"),
                     "failsafe_requests": stats.get("failsafes"),
                     "estops": stats.get("estops"), "overruns": stats.get("overruns"),
                     "plan_latency_p50_ms": stats.get("plan_latency_p50_ms"), "ticks": stats.get("ticks"),
                     "link_rejected": {k: link.get(k) for k in ("rx_unsigned_rejected", "rx_bad_signature",
                                                                "rx_replayed", "rx_source_rejected")},
                     "error": error}
    if isinstance(sim, SitlBehindProxy):
        report.detail["proxy"] = sim.proxy_counters
    (flight_dir / "report.json").write_text(json.dumps(report.__dict__, indent=2, default=str) + "\n")
    return report


def _killed_report(row: FaultRow, bundles: dict[str, Path], flight_dir: Path, seed: int,
                   started: float, flavour: str) -> FlightReport:
    try:
        final, error = kill_row(row, bundles, flight_dir, seed, flavour)
    except Exception as exc:
        final, error = {}, f"{type(exc).__name__}: {exc}"
    outcome = judge(final, False) if not error else f"UNSAFE ({error[:60]})"
    tlog = flight_dir / "flight" / "flight.tlog"
    whole, torn = tlog_walk(tlog)
    report = FlightReport(row.name, row.rate, outcome, outcome in SAFE, wall_s=round(time.monotonic() - started, 1))
    report.records_read = tlog_records(tlog)
    report.records_counted = whole + (1 if torn else 0)
    report.records_lost = report.records_counted - report.records_read
    report.min_fence_margin_m, report.fence_breaches = tlog_fence_margin(flight_dir / "flight")
    report.detail = {"sitl": final, "error": error, "torn_bytes": torn, "killed": True,
                     "link_rejected": {}, "ticks": None}
    (flight_dir / "report.json").write_text(json.dumps(report.__dict__, indent=2, default=str) + "\n")
    return report


def _when_flying(flight_out: Path, row: FaultRow, runtime_port: int, vehicle_addr: tuple[str, int] | None,
                 stop: threading.Event) -> None:
    """Once the flight's loop has started, play the ground station (e-stop) or the spoofer."""
    events = flight_out / "events.jsonl"
    while not stop.is_set() and not (events.exists() and '"armed"' in events.read_text()):
        stop.wait(0.05)
    if stop.wait(row.estop_after_s or 0.1):  # the spoofer: at once, while the loop runs
        return
    from dreamlink.firmware_bridge.link import mavlink

    if row.estop_after_s:
        gcs = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
        frame = bytes(gcs.command_long_encode(1, 191, mavlink.MAV_CMD_DO_FLIGHTTERMINATION, 0, 1, 0, 0, 0, 0, 0, 0)
                      .pack(gcs))
        _ground_station(runtime_port, [frame], 0.0, stop).join()
        return
    frames = _spoof_frames(os.urandom(32))
    _ground_station(runtime_port, frames, 0.0, stop).join()
    if vehicle_addr is not None:
        _ground_station(vehicle_addr[1], frames, 0.0, stop).join()


# -- matrix ------------------------------------------------------------------------------------------


def build_bundles(out: Path, flavour: str = "ardupilot") -> dict[str, Path]:
    from dreamlink.campaign.fault_bundles import nan_bundle, slow_bundle, trained_quad_bundle
    from dreamlink.spec import QUAD

    trained = trained_quad_bundle(out / "bundles", flavour=flavour)
    bundles = {"trained": trained}
    nan_dir, slow_dir = out / "bundles" / "quad-nan", out / "bundles" / "quad-slow"
    bundles["nan"] = nan_dir if (nan_dir / "manifest.json").exists() else \
        nan_bundle(trained, nan_dir, QUAD.state_index("vel_n_mps"), 1.0)
    bundles["slow"] = slow_dir if (slow_dir / "manifest.json").exists() else slow_bundle(trained, slow_dir, 768, 3)
    return bundles


def run_matrix(out: Path = OUT, only: list[str] | None = None, seed: int = 21,
               progress: Callable[[FlightReport], None] | None = None, flavour: str = "ardupilot"
               ) -> list[FlightReport]:
    bundles = build_bundles(out, flavour)
    reports = []
    for row in matrix():
        if only and row.name not in only:
            continue
        report = fly_row(row, bundles, out, seed, flavour)
        reports.append(report)
        if progress is not None:
            progress(report)
    return reports


def table(reports: list[FlightReport]) -> str:
    """The matrix as a markdown table."""
    lines = ["| fault | rate | flights | safe outcomes | fallbacks used | min geofence margin (m), breaches "
             "| log records lost |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        fallbacks = ", ".join(f"{k} {v}" for k, v in sorted(r.fallbacks.items())) or "none"
        extra = []
        d = r.detail
        if d.get("estops"):
            extra.append(f"e-stops {d['estops']}, motors off, ground impact "
                         f"{(d.get('sitl') or {}).get('impact_mps', math.nan):.1f} m/s")
        if r.name == "planning overrun" and d.get("plan_latency_p50_ms"):
            p50 = d["plan_latency_p50_ms"]
            extra.append(f"plan p50 {p50:.0f} ms = {p50 / 20:.1f}x the 20 ms period")
        if d.get("failsafe_requests"):
            extra.append(f"failsafe requests {d['failsafe_requests']}")
        rej = {k: v for k, v in (d.get("link_rejected") or {}).items() if v}
        sitl_c = (d.get("sitl") or {}).get("counters", {})
        if rej or sitl_c.get("rx_unsigned_rejected") or sitl_c.get("rx_bad_signature"):
            extra.append(f"runtime rejected {rej or 0}; SITL rejected unsigned {sitl_c.get('rx_unsigned_rejected', 0)}"
                         f", bad signature {sitl_c.get('rx_bad_signature', 0)}")
        if extra:
            fallbacks += "; " + "; ".join(extra)
        margin = f"{r.min_fence_margin_m:.2f}, {r.fence_breaches}" if math.isfinite(r.min_fence_margin_m) else "-"
        lost = f"{r.records_lost} of {r.records_counted}"
        if d.get("killed"):
            lost += f" (the torn last one: {d.get('torn_bytes', 0)} bytes)" if r.records_lost else " (none torn)"
        lines.append(f"| {r.name} | {r.rate} | 1 | {1 if r.safe else 0} ({r.outcome}) | {fallbacks} | {margin} "
                     f"| {lost} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dreamlink.campaign.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--flavour", default="ardupilot", choices=FLAVOURS, help="the quad SITL's autopilot")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {OUT}, {OUT}-px4 for PX4)")
    p.add_argument("--only", nargs="*", default=None, help="fault names to fly (default: all)")
    p.add_argument("--seed", type=int, default=21)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = OUT if args.flavour == "ardupilot" else OUT.with_name(f"{OUT.name}-{args.flavour}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    started = time.monotonic()

    def progress(r: FlightReport) -> None:
        sys.stdout.write(f"{r.name:18s} {r.rate:24s} {r.outcome:28s} {r.wall_s:6.1f} s\n")
        sys.stdout.flush()

    reports = run_matrix(args.out, args.only, args.seed, progress, args.flavour)
    text = table(reports)
    wall = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.md").write_text(text + "\n")
    record = {"flavour": args.flavour, "wall_s": wall, "rows": [r.__dict__ for r in reports]}
    (args.out / "faults.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    sys.stdout.write("\n" + text + f"\n\n{len(reports)} {args.flavour} flights in {wall:.0f} s; {args.out}/faults.md, "
                     "faults.json\n")
    return 0 if all(r.safe and r.fence_breaches == 0 and r.records_lost <= (1 if r.detail.get("killed") else 0)
                    for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
