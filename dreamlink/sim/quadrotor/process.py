"""The quadrotor SITL process: one simulated flight controller on a real UDP socket.

    python -m dreamlink.sim.quadrotor.process --flavour ardupilot|px4 --out udp:127.0.0.1:PORT
        [--lockstep] [--seed N] [--wind-mps X] [--gust-mps X] [--nominal] [--estimator-init-s S]
        [--streams-at-boot] [--domain-json PATH] [--bind HOST:PORT]

`main(argv)` is the entry point (`python -m dreamlink.sim quad ...` passes the arguments after "quad"; a
leading "quad" is accepted too). SIGTERM / SIGINT end it with exit code 0.

Transport (as PX4 SITL and the cart-pole board): one UDP socket; everything goes to `--out`, whatever
arrives on the socket is taken. The client listens on `--out`'s port.

Start: the domain parameters are drawn from `--seed` (unless `--nominal`), `--wind-mps` / `--gust-mps`
override the wind, and the draw is printed on stdout as one line `DOMAIN {json}` (and written to
`--domain-json`) before the first heartbeat, so a data set can record it.

Timing:

- Real time (default): the vehicle advances 10 ms frames on the monotonic clock (skipping ahead, counted,
  if the process falls more than 0.25 s behind); telemetry, heartbeat and timeouts run in vehicle time.
- Lockstep (`--lockstep`): vehicle time moves only when the client ticks. A tick is one of the messages a
  companion sends anyway: SET_POSITION_TARGET_LOCAL_NED, SET_ATTITUDE_TARGET, or a TIMESYNC request
  (tc1 = 0). Each tick applies the setpoint (if any), advances exactly 20 ms (two frames) emitting the
  streams that fall due, then answers the TIMESYNC. So the control loop ticks with its setpoints, and a
  client that waits (estimator start-up, NAV_TAKEOFF, LAND, a failsafe) ticks with TIMESYNC at its own pace;
  against a real autopilot the same TIMESYNC stream is harmless. Commands are answered at once without moving
  time, followed by a HEARTBEAT so a mode or arming change is visible immediately. Once per wall-clock second
  the process also sends a HEARTBEAT and one sample of each enabled state stream, so a client can find the
  vehicle before it ticks. GUID_TIMEOUT, COM_OF_LOSS_T, the land detector and auto-disarm all count vehicle
  time, so they behave identically in both modes.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import math
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.sim.mavlink_udp import drain, udp_address
from dreamlink.sim.quadrotor.autopilot import AutopilotConfig
from dreamlink.sim.quadrotor.mavlink_io import IoCounters, MavlinkFace
from dreamlink.sim.quadrotor.modes import FLAVOURS
from dreamlink.sim.quadrotor.physics import QuadParams
from dreamlink.sim.quadrotor.randomisation import DomainParams, RandomisationRanges, fixed_ranges, sample
from dreamlink.sim.quadrotor.vehicle import FRAME_US, SimVehicle

log = logging.getLogger(__name__)

TICK_FRAMES = 2  # one lockstep tick = 20 ms
MAX_LAG_S = 0.25
WALL_HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class ProcessConfig:
    """How one quadrotor SITL process runs."""

    flavour: str
    out_host: str = "127.0.0.1"
    out_port: int = 14540
    bind_host: str = ""  # "" = loopback when out_host is loopback, else all interfaces
    bind_port: int = 0
    lockstep: bool = False
    seed: int = 0
    nominal: bool = False
    wind_mps: float | None = None
    gust_mps: float | None = None
    estimator_init_s: float = 1.0
    streams_at_boot: bool | None = None

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"ProcessConfig.flavour: expected one of {FLAVOURS}, got {self.flavour!r}")
        if not 0 < self.out_port < 65536:
            raise ValueError(f"ProcessConfig.out_port: expected 1..65535, got {self.out_port!r}")
        if not 0 <= self.bind_port < 65536:
            raise ValueError(f"ProcessConfig.bind_port: expected 0..65535, got {self.bind_port!r}")
        if self.seed < 0:
            raise ValueError(f"ProcessConfig.seed: expected an integer >= 0, got {self.seed!r}")
        for name in ("wind_mps", "gust_mps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ProcessConfig.{name}: expected a finite value >= 0 m/s, got {value!r}")

    def domain(self, nominal: QuadParams) -> DomainParams:
        ranges = fixed_ranges(nominal) if self.nominal else RandomisationRanges()
        drawn = sample(np.random.default_rng(self.seed), ranges, seed=self.seed)
        return drawn.with_wind(self.wind_mps, self.gust_mps)


def build_vehicle(config: ProcessConfig) -> SimVehicle:
    nominal = QuadParams()
    return SimVehicle(AutopilotConfig(config.flavour, estimator_init_s=config.estimator_init_s),
                      config.domain(nominal), nominal)


def run(config: ProcessConfig, should_stop: Callable[[], bool], wake_socks: Sequence[socket.socket] = (),
        clock: Callable[[], float] = time.monotonic, vehicle: SimVehicle | None = None) -> IoCounters:
    """Serve one vehicle on UDP until `should_stop()`; `wake_socks` are drained when readable (signals)."""
    vehicle = vehicle if vehicle is not None else build_vehicle(config)
    out_addr = (socket.gethostbyname(config.out_host), config.out_port)
    bind_host = config.bind_host or ("127.0.0.1" if ipaddress.ip_address(out_addr[0]).is_loopback else "0.0.0.0")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx_errors = [0]

    def send(frame: bytes) -> None:
        try:
            sock.sendto(frame, out_addr)
        except OSError:  # nobody listening yet (ICMP refused) or buffer full: UDP, the client catches up
            tx_errors[0] += 1

    def tick() -> None:
        for _ in range(TICK_FRAMES):
            vehicle.advance_frame()
            face.after_frame()

    try:
        sock.bind((bind_host, config.bind_port))
        sock.setblocking(False)
        face = MavlinkFace(vehicle, send, lockstep=config.lockstep, streams_at_boot=config.streams_at_boot,
                           on_tick=tick)
        log.info("quadrotor SITL (%s) on udp:%s:%d -> udp:%s:%d, %s, seed %d", config.flavour, *sock.getsockname(),
                 *out_addr, "lockstep" if config.lockstep else "real time", config.seed)
        if config.flavour == "ardupilot":  # the banner ArduCopter sends at boot (log)
            face.statustext(6, "ArduCopter V4.8.0-dev (dreamlink SITL)")
            face.statustext(6, "Frame: QUAD/X")
        face.after_frame()
        _serve(face, sock, should_stop, wake_socks, clock, config.lockstep)
        return face.counters
    finally:
        if tx_errors[0]:
            log.info("%d datagrams could not be sent (no listener yet)", tx_errors[0])
        sock.close()


def _serve(face: MavlinkFace, sock: socket.socket, should_stop: Callable[[], bool],
           wake_socks: Sequence[socket.socket], clock: Callable[[], float], lockstep: bool) -> None:
    vehicle = face.vehicle
    frame_s = FRAME_US / 1e6
    start = clock()
    next_frame = start + frame_s
    next_wall_heartbeat = start + WALL_HEARTBEAT_S
    skips = 0
    readers = [sock, *wake_socks]
    while not should_stop():
        now = clock()
        if lockstep:
            if now >= next_wall_heartbeat:
                face.send_heartbeat()
                face.send_state_snapshot()
                next_wall_heartbeat = now + WALL_HEARTBEAT_S
            deadline = next_wall_heartbeat
        else:
            if now - next_frame > MAX_LAG_S:
                skips += 1
                log.warning("physics %.3f s behind the wall clock: skipping ahead (%d so far)", now - next_frame, skips)
                next_frame = now
            while now >= next_frame:
                vehicle.advance_frame()
                face.after_frame()
                next_frame += frame_s
            deadline = next_frame
        readable, _, _ = select.select(readers, [], [], max(0.0, deadline - clock()))
        for ready in readable:
            if ready is sock:
                drain(face.receive, sock)
            else:
                try:
                    ready.recv(4096)
                except OSError:
                    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dreamlink.sim quad",
                                description="Quadrotor flight-controller SITL (ArduCopter or PX4 behaviour) on UDP.")
    p.add_argument("vehicle", nargs="?", default="quad", choices=["quad"])
    p.add_argument("--flavour", required=True, choices=list(FLAVOURS), help="which autopilot to behave like")
    p.add_argument("--out", required=True, type=lambda s: udp_address(s, "--out"),
                   help="where to send, e.g. udp:127.0.0.1:14540 (the companion's listening port)")
    p.add_argument("--bind", type=lambda s: udp_address(s, "--bind"), default=None,
                   help="own socket HOST:PORT (default: loopback or all interfaces, any free port)")
    p.add_argument("--lockstep", action="store_true", help="advance 20 ms per setpoint or TIMESYNC request")
    p.add_argument("--seed", type=int, default=0, help="domain randomisation and noise seed")
    p.add_argument("--nominal", action="store_true", help="no randomisation: nominal airframe, calm, no noise")
    p.add_argument("--wind-mps", type=float, default=None, help="override the mean wind speed (m/s)")
    p.add_argument("--gust-mps", type=float, default=None, help="override the Dryden gust intensity (m/s)")
    p.add_argument("--estimator-init-s", type=float, default=1.0,
                   help="vehicle seconds before the estimator is ready (arming refused until then)")
    p.add_argument("--streams-at-boot", action="store_true",
                   help="ardupilot: stream the default set from boot (real ArduPilot waits to be asked)")
    p.add_argument("--domain-json", type=Path, default=None, help="also write the drawn parameters here")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str]) -> int:
    """Run the quadrotor SITL until SIGTERM/SIGINT; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        config = ProcessConfig(flavour=args.flavour, out_host=args.out[0], out_port=args.out[1],
                               bind_host=args.bind[0] if args.bind else "", bind_port=args.bind[1] if args.bind else 0,
                               lockstep=args.lockstep, seed=args.seed, nominal=args.nominal, wind_mps=args.wind_mps,
                               gust_mps=args.gust_mps, estimator_init_s=args.estimator_init_s,
                               streams_at_boot=True if args.streams_at_boot else None)
        vehicle = build_vehicle(config)
    except (ValueError, TypeError) as exc:
        log.error("bad argument: %s", exc)
        return 2
    record: dict[str, Any] = {"flavour": config.flavour, "lockstep": config.lockstep,
                              "domain": vehicle.domain.to_dict()}
    sys.stdout.write("DOMAIN " + json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()
    if args.domain_json is not None:
        try:
            args.domain_json.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            log.error("cannot write --domain-json %s: %s", args.domain_json, exc)
            return 2
    stop = threading.Event()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, Any] = {}
    previous_wakeup = -1
    if in_main_thread:
        previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        counters = run(config, stop.is_set, wake_socks=(wake_r,), vehicle=vehicle)
    except OSError as exc:
        log.error("cannot serve the vehicle on udp (%s); is --bind free and --out a reachable host?", exc)
        return 1
    finally:
        if in_main_thread:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        wake_r.close()
        wake_w.close()
    log.info("quadrotor SITL stopped at vehicle time %.2f s: %s; autopilot %s", vehicle.time_s, counters,
             vehicle.autopilot.counters)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
