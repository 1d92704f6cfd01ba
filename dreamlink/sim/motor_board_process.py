"""The motor board SITL process: one `MotorBoard` (motor_board.py) served on a UDP socket, on the wall clock.

Real time: physics advances one control period per period of the monotonic clock (skipping ahead, counted, if
the process falls more than `MAX_LAG_S` behind), telemetry goes out at the board's stream interval, a heartbeat
every second. Lockstep: the board advances only on actuator targets; this loop adds the heartbeat and one state
sample a wall-clock second, so a client can find the board before it ticks.

Entry: `python -m dreamlink.sim cartpole --out udp:127.0.0.1:PORT [--lockstep] [--seed N] [--rate-hz 50]
[--signing-key-file KEY]` (or `gym --vehicle FILE`); `main(argv)` is what `dreamlink sitl cartpole|gym ...`
calls. SIGTERM/SIGINT exit 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Sequence

from dreamlink.firmware_bridge.security import load_signing_key
from dreamlink.sim import udp_process
from dreamlink.sim.cartpole_physics import CartpoleParams
from dreamlink.sim.motor_board import BoardConfig, BoardCounters, MotorBoard, make_plant
from dreamlink.spec import SpecError, load_vehicle

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD_S = 1.0
MAX_LAG_S = 0.25  # further behind the wall clock than this (process stalled): skip ahead, don't burst


def run_board(config: BoardConfig, should_stop: Callable[[], bool], wake_socks: Sequence[socket.socket] = (),
              clock: Callable[[], float] = time.monotonic) -> BoardCounters:
    """Serve one board on UDP until `should_stop()`; `wake_socks` are drained when readable (signal wake-up)."""
    key = load_signing_key(config.signing_key_file) if config.signing_key_file else None
    sock, out_addr = udp_process.open_udp(config.out_host, config.out_port, config.bind_host, config.bind_port)
    try:
        counters = BoardCounters()
        plant = make_plant(config)
        board = MotorBoard(config, lambda frame: _sendto(sock, frame, out_addr, counters), counters, key,
                           plant=plant)
        log.info("%s board on udp:%s:%d -> udp:%s:%d (%s, %.0f Hz, seed %d%s)",
                 plant.spec.name if plant is not None else "cart-pole motor", *sock.getsockname(),
                 *out_addr, "lockstep" if config.lockstep else "real time", config.rate_hz, config.seed,
                 f", signing with key {key.key_id}" if key is not None else "")
        _serve(board, sock, should_stop, wake_socks, clock)
        return board.counters
    finally:
        sock.close()


def _sendto(sock: socket.socket, frame: bytes, addr: tuple[str, int], counters: BoardCounters) -> None:
    try:
        sock.sendto(frame, addr)
    except OSError:  # nobody listening yet (ICMP refused) or buffer full: UDP, the client catches up
        counters.tx_errors += 1


def _serve(board: MotorBoard, sock: socket.socket, should_stop: Callable[[], bool],
           wake_socks: Sequence[socket.socket], clock: Callable[[], float]) -> None:
    period_s = board.config.period_us / 1e6
    realtime = not board.config.lockstep
    start = clock()
    next_heartbeat, next_step = start, start + period_s
    next_telemetry, telemetry_interval_us = next_step, board.stream_interval_us
    while not should_stop():
        now = clock()
        if now >= next_heartbeat:
            board.send_heartbeat()
            if not realtime:
                board.send_state()
            next_heartbeat = _next_deadline(next_heartbeat, HEARTBEAT_PERIOD_S, now)
        deadline = next_heartbeat
        if realtime:
            if now - next_step > MAX_LAG_S:
                board.counters.wall_clock_skips += 1
                log.warning("physics %.3f s behind the wall clock: skipping ahead", now - next_step)
                next_step = now
            while now >= next_step:
                board.advance()
                next_step += period_s
            if board.stream_interval_us != telemetry_interval_us:
                telemetry_interval_us, next_telemetry = board.stream_interval_us, now
            if telemetry_interval_us is not None:
                if now >= next_telemetry:
                    board.send_state()
                    next_telemetry = _next_deadline(next_telemetry, telemetry_interval_us / 1e6, now)
                deadline = min(deadline, next_telemetry)
            deadline = min(deadline, next_step)
        udp_process.wait_for_datagrams(sock, wake_socks, board.receive, deadline - clock())


def _next_deadline(deadline: float, period_s: float, now: float) -> float:
    """Keep the phase while on time; after a stall, restart from now instead of bursting to catch up."""
    deadline += period_s
    return deadline if deadline > now else now + period_s


def _parse_param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    names = [f.name for f in dataclasses.fields(CartpoleParams)]
    if not sep or name not in names:
        raise argparse.ArgumentTypeError(f"--param: expected NAME=VALUE with NAME one of {names}, got {text!r}")
    try:
        return name, (int(value) if name == "substeps" else float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param {name}: expected a number, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dreamlink.sim cartpole|gym",
                                description="A board SITL speaking MAVLink 2 over UDP: dreamlink's cart-pole, or "
                                            "any continuous-action Gymnasium environment a vehicle file names.")
    p.add_argument("vehicle", nargs="?", default="cartpole", choices=["cartpole", "gym"])
    p.add_argument("--vehicle", dest="vehicle_file", default="", metavar="FILE",
                   help="gym: the vehicle file ([sim] gym_env, [link] telemetry); its control period is the rate")
    p.add_argument("--env", default="", metavar="ID", help="gym: the Gymnasium environment (default: the file's)")
    udp_process.add_link_arguments(p, lockstep_help="advance one period per actuator target")
    p.add_argument("--rate-hz", type=float, default=50.0, help="control/physics rate; telemetry default")
    p.add_argument("--sensor-noise-std", type=float, default=0.0)
    p.add_argument("--command-timeout-s", type=float, default=0.2)
    p.add_argument("--no-hold", action="store_true", help="let the pole fall from start, before the first arming")
    p.add_argument("--param", type=_parse_param, action="append", default=[], metavar="NAME=VALUE",
                   help="override a CartpoleParams field, e.g. pole_mass_kg=0.12 (repeatable)")
    return p


def main(argv: list[str]) -> int:
    """Run the SITL board until SIGTERM/SIGINT; returns the process exit code."""
    args = udp_process.parse_process_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    rate_hz = args.rate_hz
    try:
        if args.vehicle == "gym" or args.vehicle_file:
            if not args.vehicle_file:
                raise ValueError("gym: --vehicle FILE is required (a vehicle file whose [sim] names the environment)")
            rate_hz = load_vehicle(args.vehicle_file).rate_hz
        config = BoardConfig(**udp_process.link_fields(args), rate_hz=rate_hz,
                             sensor_noise_std=args.sensor_noise_std, vehicle_file=args.vehicle_file,
                             gym_env=args.env, command_timeout_s=args.command_timeout_s,
                             hold_until_armed=not args.no_hold, physics=CartpoleParams(**dict(args.param)))
    except (ValueError, TypeError, SpecError) as exc:
        log.error("bad argument: %s", exc)
        return 2
    code, counters = udp_process.serve_until_signalled(
        lambda should_stop, wake_socks: run_board(config, should_stop, wake_socks), "board")
    if code == 0:
        log.info("board stopped: %s", counters)
    return code
