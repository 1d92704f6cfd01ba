"""What every SITL vehicle process does the same way: its link arguments, its one UDP socket, the wait on it,
and the `main` that serves until SIGTERM/SIGINT with the same exit codes.

The motor board (`motor_board_process`) and the quadrotor (`quadrotor/process.py`) differ in what they serve,
not in how they sit on the wire, so a user's `--out`, `--bind`, `--lockstep`, `--seed`, `--signing-key-file`
and `--log-level` mean the same for both, and a launcher reads both exits alike: 0 after a signal, 2 for a bad
argument (argparse's own usage errors included), 1 when the socket cannot serve.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import select
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dreamlink.firmware_bridge.security import SigningKeyError
from dreamlink.sim.mavlink_udp import drain, stop_on_signals, udp_address

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
T = TypeVar("T")


def add_link_arguments(p: argparse.ArgumentParser, lockstep_help: str, seed_help: str | None = None) -> None:
    """The arguments every SITL takes: `--out`, `--bind`, `--lockstep`, `--seed`, `--signing-key-file`,
    `--log-level`; the vehicle says, in the help, what its lockstep tick is and what its seed draws."""
    p.add_argument("--out", required=True, type=lambda s: udp_address(s, "--out"),
                   help="where to send, e.g. udp:127.0.0.1:14540 (the companion's listening port)")
    p.add_argument("--bind", type=lambda s: udp_address(s, "--bind"), default=None,
                   help="own socket, HOST:PORT (default: loopback or all interfaces, any free port)")
    p.add_argument("--lockstep", action="store_true", help=lockstep_help)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--signing-key-file", default="", metavar="KEY",
                   help="MAVLink 2 signing key (32 bytes, chmod 600): sign all, act only on signed frames")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def link_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the link arguments give (`out_host`, `out_port`, `bind_host`, `bind_port`, `lockstep`,
    `seed`, `signing_key_file`), named as both SITL configs name them."""
    return {"out_host": args.out[0], "out_port": args.out[1], "bind_host": args.bind[0] if args.bind else "",
            "bind_port": args.bind[1] if args.bind else 0, "lockstep": args.lockstep, "seed": args.seed,
            "signing_key_file": args.signing_key_file}


def check_link_fields(owner: str, out_port: int, bind_port: int, seed: int) -> None:
    """Refuse link fields out of range, naming `owner`'s field (e.g. `BoardConfig.out_port`)."""
    if not 0 < out_port < 65536:
        raise ValueError(f"{owner}.out_port: expected 1..65535, got {out_port!r}")
    if not 0 <= bind_port < 65536:
        raise ValueError(f"{owner}.bind_port: expected 0..65535, got {bind_port!r}")
    if seed < 0:
        raise ValueError(f"{owner}.seed: expected an integer >= 0, got {seed!r}")


def parse_process_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """The arguments, with logging set up at `--log-level`; or the exit code argparse chose (it printed why)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    return args


def open_udp(out_host: str, out_port: int, bind_host: str, bind_port: int) -> tuple[socket.socket, tuple[str, int]]:
    """The process's one socket, bound and non-blocking, and the address everything is sent to. An empty
    `bind_host` is loopback when `out_host` is loopback, else all interfaces. Raises OSError."""
    out_addr = (socket.gethostbyname(out_host), out_port)
    host = bind_host or ("127.0.0.1" if ipaddress.ip_address(out_addr[0]).is_loopback else "0.0.0.0")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, bind_port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, out_addr


def wait_for_datagrams(sock: socket.socket, wake_socks: Sequence[socket.socket], receive: Callable[[bytes], None],
                       timeout_s: float) -> None:
    """Wait up to `timeout_s` for `sock` or a wake-up socket; hand what `sock` holds to `receive`, swallow the
    wake-up bytes (a signal's: the loop then checks whether to stop)."""
    readable, _, _ = select.select([sock, *wake_socks], [], [], max(0.0, timeout_s))
    for ready in readable:
        if ready is sock:
            drain(receive, sock)
        else:
            try:
                ready.recv(4096)
            except OSError:
                pass


def serve_until_signalled(serve: Callable[[Callable[[], bool], Sequence[socket.socket]], T],
                          what: str) -> tuple[int, T | None]:
    """Run `serve(should_stop, wake_socks)` until SIGTERM/SIGINT. Returns the exit code and what `serve`
    returned: (0, result) after a signal; (2, None) for a signing key file that cannot be used, (1, None)
    when the UDP socket cannot serve `what` (both logged)."""
    with stop_on_signals() as (stop, wake_r):
        try:
            return 0, serve(stop.is_set, (wake_r,))
        except SigningKeyError as exc:
            log.error("--signing-key-file: %s", exc)
            return 2, None
        except OSError as exc:
            log.error("cannot serve the %s on udp (%s); is --bind free and --out a reachable host?", what, exc)
            return 1, None
