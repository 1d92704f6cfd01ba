"""The quadrotor SITL process: one simulated flight controller on a real UDP socket.

    python -m dreamlink.sim.quadrotor.process --flavour ardupilot|px4 --out udp:127.0.0.1:PORT
        [--lockstep] [--seed N] [--wind-mps X] [--gust-mps X] [--nominal] [--estimator-init-s S]
        [--streams-at-boot] [--domain-json PATH] [--domain-json-in PATH] [--bind HOST:PORT]
        [--reboot-at-s T] [--freeze-telemetry START:DURATION] [--bad-estimator START:DURATION]
        [--signing-key-file KEY]

`main(argv)` is the entry point (`python -m dreamlink.sim quad ...` passes the arguments after "quad"; a
leading "quad" is accepted too). SIGTERM / SIGINT end it with exit code 0.

Transport (as PX4 SITL and the cart-pole board): one UDP socket; everything goes to `--out`, whatever
arrives on the socket is taken. The client listens on `--out`'s port. The link arguments, the socket and
the exit codes are the ones every SITL process shares (`dreamlink.sim.udp_process`).

Start: the domain parameters are drawn from `--seed` (unless `--nominal`), `--wind-mps` / `--gust-mps`
override the wind, and the draw is printed on stdout as one line `DOMAIN {json}` (and written to
`--domain-json`) before the first heartbeat, so a data set can record it.

Faults, scheduled in vehicle time (so a lockstep flight meets them at the same step every run):

- `--reboot-at-s T`: at vehicle time T the flight controller reboots, as a SITL process restarted under the
  same socket: a fresh vehicle (disarmed, on the ground at home: a real mid-air reboot drops the airframe,
  which no companion can prevent; what is tested is what the companion does next), vehicle time from 0
  again, the boot banner, ArduPilot back to sending only HEARTBEAT until asked for streams.
- `--freeze-telemetry START:DURATION`: no HEARTBEAT and no streams in that window (TIMESYNC answers and
  command ACKs still go out, see mavlink_io.py).
- `--bad-estimator START:DURATION`: the estimator reports itself unhealthy in that window (SYS_STATUS AHRS
  bit, EKF_STATUS_REPORT / ESTIMATOR_STATUS); the autopilot reacts as its family does (ArduPilot's EKF
  failsafe LANDs after 1 s; PX4's position modes cannot run and its failsafe takes over).
- `--signing-key-file KEY`: MAVLink 2 signing on the link (mavlink_io.py).

At exit the process prints one line `FINAL {json}` on stdout: vehicle time, armed, mode, landed, the true
position and speed, the largest tilt and the ground-impact speed seen, reboots and the link counters, so a
campaign can judge the outcome from the vehicle's side.

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
import json
import logging
import math
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.security import SigningKey, load_signing_key
from dreamlink.sim import udp_process
from dreamlink.sim.quadrotor.autopilot import AutopilotConfig
from dreamlink.sim.quadrotor.mavlink_io import IoCounters, MavlinkFace
from dreamlink.sim.quadrotor.modes import FLAVOURS
from dreamlink.sim.quadrotor.physics import QuadParams, quat_to_rotation
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
    reboot_at_s: float | None = None
    freeze_telemetry: tuple[float, float] | None = None  # (start s, duration s), vehicle time
    bad_estimator: tuple[float, float] | None = None
    signing_key_file: str = ""

    def __post_init__(self) -> None:
        if self.reboot_at_s is not None and not (math.isfinite(self.reboot_at_s) and self.reboot_at_s > 0):
            raise ValueError(f"ProcessConfig.reboot_at_s: expected a vehicle time > 0 s, got {self.reboot_at_s!r}")
        for name in ("freeze_telemetry", "bad_estimator"):
            window = getattr(self, name)
            if window is not None and not (len(window) == 2 and all(math.isfinite(v) and v >= 0 for v in window)):
                raise ValueError(f"ProcessConfig.{name}: expected (start_s, duration_s) >= 0, got {window!r}")
        if self.flavour not in FLAVOURS:
            raise ValueError(f"ProcessConfig.flavour: expected one of {FLAVOURS}, got {self.flavour!r}")
        udp_process.check_link_fields("ProcessConfig", self.out_port, self.bind_port, self.seed)
        for name in ("wind_mps", "gust_mps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ProcessConfig.{name}: expected a finite value >= 0 m/s, got {value!r}")

    def domain(self, nominal: QuadParams) -> DomainParams:
        ranges = fixed_ranges(nominal) if self.nominal else RandomisationRanges()
        drawn = sample(np.random.default_rng(self.seed), ranges, seed=self.seed)
        return drawn.with_wind(self.wind_mps, self.gust_mps)


def build_vehicle(config: ProcessConfig, domain: DomainParams | None = None) -> SimVehicle:
    """The vehicle with `domain` (explicit parameters, e.g. a campaign's draw), else drawn from the config."""
    nominal = QuadParams()
    return SimVehicle(AutopilotConfig(config.flavour, estimator_init_s=config.estimator_init_s),
                      domain if domain is not None else config.domain(nominal), nominal)


def read_domain_json(path: Path) -> DomainParams:
    """Parameters from `--domain-json-in`: a `DomainParams` dict, or a record as `--domain-json` writes it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--domain-json-in {path}: cannot read a JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--domain-json-in {path}: expected a JSON object, got {type(data).__name__}")
    return DomainParams.from_dict(data.get("domain", data))


def _in_window(window: tuple[float, float] | None, t_s: float) -> bool:
    return window is not None and window[0] <= t_s < window[0] + window[1]


class _Sitl:
    """The vehicle and its MAVLink face, replaceable as a whole (a reboot), with the fault schedule."""

    def __init__(self, config: ProcessConfig, vehicle: SimVehicle, send: Callable[[bytes], None],
                 key: SigningKey | None) -> None:
        self.config, self.send, self.key = config, send, key
        self.reboots = 0
        self.max_tilt_rad = 0.0
        self.impact_mps = 0.0
        self._was_on_ground = True
        self._speed_mps = 0.0
        self._boot(vehicle)

    def _boot(self, vehicle: SimVehicle) -> None:
        self.vehicle = vehicle
        self.face = MavlinkFace(vehicle, self.send, lockstep=self.config.lockstep,
                                streams_at_boot=self.config.streams_at_boot, on_tick=self.tick, signing_key=self.key)
        if self.config.flavour == "ardupilot":  # the banner ArduCopter sends at boot (log)
            self.face.statustext(6, "ArduCopter V4.8.0-dev (dreamlink SITL)")
            self.face.statustext(6, "Frame: QUAD/X")
        self.apply_faults()
        self.face.after_frame()

    def tick(self) -> None:
        for _ in range(TICK_FRAMES):
            self.frame()

    def frame(self) -> None:
        self.vehicle.advance_frame()
        self._watch()
        self.apply_faults()
        self.face.after_frame()

    def _watch(self) -> None:
        s = self.vehicle.state
        r = quat_to_rotation(s.q_ned_frd)
        self.max_tilt_rad = max(self.max_tilt_rad, math.acos(max(-1.0, min(1.0, float(r[2, 2])))))
        on_ground = bool(s.on_ground)
        speed = float(np.linalg.norm(s.vel_ned_mps))
        if on_ground and not self._was_on_ground:  # the speed of the frame before contact (contact stops it)
            self.impact_mps = max(self.impact_mps, self._speed_mps, speed)
        self._was_on_ground, self._speed_mps = on_ground, speed

    def apply_faults(self) -> None:
        t_s, c = self.vehicle.time_s, self.config
        frozen = _in_window(c.freeze_telemetry, t_s) and self.reboots == 0
        if frozen != self.face.telemetry_frozen:
            log.warning("telemetry %s at vehicle time %.2f s", "frozen" if frozen else "resumes", t_s)
            self.face.telemetry_frozen = frozen
        bad = _in_window(c.bad_estimator, t_s) and self.reboots == 0
        if bad != self.vehicle.autopilot.estimator_fault:
            log.warning("estimator %s at vehicle time %.2f s", "unhealthy" if bad else "healthy again", t_s)
            self.vehicle.autopilot.set_estimator_fault(bad, t_s)

    def reboot_due(self) -> bool:
        return self.config.reboot_at_s is not None and self.reboots == 0 and \
            self.vehicle.time_s >= self.config.reboot_at_s

    def reboot(self) -> None:
        log.warning("REBOOT at vehicle time %.2f s (%s, %s)", self.vehicle.time_s, self.vehicle.autopilot.mode_name,
                    "armed" if self.vehicle.autopilot.armed else "disarmed")
        counters = self.face.counters
        self.reboots += 1
        self._boot(build_vehicle(self.config, self.vehicle.domain))  # same airframe, fresh state
        self.face.counters = counters  # one process: its link counters carry on

    def final(self) -> dict[str, Any]:
        v, ap = self.vehicle, self.vehicle.autopilot
        s = v.state
        return {"time_s": v.time_s, "armed": ap.armed, "mode": ap.mode_name, "landed": ap.landed,
                "failsafe": bool(getattr(ap, "failsafe", False)) or ap.counters.failsafes > 0,
                "pos_ned_m": [round(float(x), 3) for x in s.pos_ned_m],
                "speed_mps": float(np.linalg.norm(s.vel_ned_mps)), "altitude_m": -float(s.pos_ned_m[2]),
                "max_tilt_deg": math.degrees(self.max_tilt_rad), "impact_mps": self.impact_mps,
                "reboots": self.reboots,
                "counters": {k: v for k, v in self.face.counters.__dict__.items() if k != "rx_by_type"},
                "autopilot": dict(ap.counters.__dict__)}


def run(config: ProcessConfig, should_stop: Callable[[], bool], wake_socks: Sequence[socket.socket] = (),
        clock: Callable[[], float] = time.monotonic, vehicle: SimVehicle | None = None,
        final: dict[str, Any] | None = None) -> IoCounters:
    """Serve one vehicle on UDP until `should_stop()`; `wake_socks` are drained when readable (signals).
    `final`, if given, is filled with the vehicle's end state (see the module docstring)."""
    vehicle = vehicle if vehicle is not None else build_vehicle(config)
    key = load_signing_key(config.signing_key_file) if config.signing_key_file else None
    sock, out_addr = udp_process.open_udp(config.out_host, config.out_port, config.bind_host, config.bind_port)
    tx_errors = [0]

    def send(frame: bytes) -> None:
        try:
            sock.sendto(frame, out_addr)
        except OSError:  # nobody listening yet (ICMP refused) or buffer full: UDP, the client catches up
            tx_errors[0] += 1

    try:
        log.info("quadrotor SITL (%s) on udp:%s:%d -> udp:%s:%d, %s, seed %d%s", config.flavour, *sock.getsockname(),
                 *out_addr, "lockstep" if config.lockstep else "real time", config.seed,
                 f", signing with key {key.key_id}" if key is not None else "")
        sitl = _Sitl(config, vehicle, send, key)
        try:
            _serve(sitl, sock, should_stop, wake_socks, clock, config.lockstep)
        finally:
            if final is not None:
                final.update(sitl.final())
        return sitl.face.counters
    finally:
        if tx_errors[0]:
            log.info("%d datagrams could not be sent (no listener yet)", tx_errors[0])
        sock.close()


def _serve(sitl: _Sitl, sock: socket.socket, should_stop: Callable[[], bool],
           wake_socks: Sequence[socket.socket], clock: Callable[[], float], lockstep: bool) -> None:
    frame_s = FRAME_US / 1e6
    start = clock()
    next_frame = start + frame_s
    next_wall_heartbeat = start + WALL_HEARTBEAT_S
    skips = 0
    while not should_stop():
        if sitl.reboot_due():
            sitl.reboot()
        face = sitl.face
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
                sitl.frame()
                next_frame += frame_s
                if sitl.reboot_due():
                    break
            deadline = next_frame
        udp_process.wait_for_datagrams(sock, wake_socks, lambda datagram: sitl.face.receive(datagram),
                                       deadline - clock())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dreamlink.sim quad",
                                description="Quadrotor flight-controller SITL (ArduCopter or PX4 behaviour) on UDP.")
    p.add_argument("vehicle", nargs="?", default="quad", choices=["quad"])
    p.add_argument("--flavour", required=True, choices=list(FLAVOURS), help="which autopilot to behave like")
    udp_process.add_link_arguments(p, lockstep_help="advance 20 ms per setpoint or TIMESYNC request",
                       seed_help="domain randomisation and noise seed")
    p.add_argument("--nominal", action="store_true", help="no randomisation: nominal airframe, calm, no noise")
    p.add_argument("--wind-mps", type=float, default=None, help="override the mean wind speed (m/s)")
    p.add_argument("--gust-mps", type=float, default=None, help="override the Dryden gust intensity (m/s)")
    p.add_argument("--estimator-init-s", type=float, default=1.0,
                   help="vehicle seconds before the estimator is ready (arming refused until then)")
    p.add_argument("--streams-at-boot", action="store_true",
                   help="ardupilot: stream the default set from boot (real ArduPilot waits to be asked)")
    p.add_argument("--reboot-at-s", type=float, default=None, metavar="T",
                   help="fault: the flight controller reboots at vehicle time T (s)")
    p.add_argument("--freeze-telemetry", type=_window, default=None, metavar="START:DURATION",
                   help="fault: no HEARTBEAT or streams in this vehicle-time window (s)")
    p.add_argument("--bad-estimator", type=_window, default=None, metavar="START:DURATION",
                   help="fault: the estimator reports itself unhealthy in this vehicle-time window (s)")
    p.add_argument("--domain-json", type=Path, default=None, help="also write the drawn parameters here")
    p.add_argument("--domain-json-in", type=Path, default=None,
                   help="fly these parameters (a --domain-json record) instead of drawing them from --seed")
    return p


def _window(text: str) -> tuple[float, float]:
    start, sep, duration = text.partition(":")
    try:
        window = (float(start), float(duration))
    except ValueError:
        window = (math.nan, math.nan)
    if not sep or not all(math.isfinite(v) and v >= 0 for v in window):
        raise argparse.ArgumentTypeError(f"expected START:DURATION in seconds >= 0, like 8:2, got {text!r}")
    return window


def main(argv: list[str]) -> int:
    """Run the quadrotor SITL until SIGTERM/SIGINT; returns the process exit code."""
    args = udp_process.parse_process_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        config = ProcessConfig(flavour=args.flavour, **udp_process.link_fields(args), nominal=args.nominal,
                               wind_mps=args.wind_mps, gust_mps=args.gust_mps, estimator_init_s=args.estimator_init_s,
                               streams_at_boot=True if args.streams_at_boot else None,
                               reboot_at_s=args.reboot_at_s, freeze_telemetry=args.freeze_telemetry,
                               bad_estimator=args.bad_estimator)
        if config.signing_key_file:
            load_signing_key(config.signing_key_file)  # a bad key file is a bad argument (SigningKeyError names it)
        vehicle = build_vehicle(config, read_domain_json(args.domain_json_in) if args.domain_json_in else None)
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
    final: dict[str, Any] = {}
    code, counters = udp_process.serve_until_signalled(
        lambda should_stop, wake_socks: run(config, should_stop, wake_socks, vehicle=vehicle, final=final), "vehicle")
    if code:
        return code
    log.info("quadrotor SITL stopped at vehicle time %.2f s: %s", final.get("time_s", math.nan), counters)
    sys.stdout.write("FINAL " + json.dumps(final, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
