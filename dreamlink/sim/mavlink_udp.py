"""What every SITL process shares on its side of the wire: MAVLink 2 through pymavlink, a parser that
never raises on garbage, a bounded socket drain, and the `udp:HOST:PORT` argument type."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

# pymavlink chooses MAVLink 1 or 2 when mavutil is first imported (and flips a process-wide global
# if it later sees a v2 frame). DEBUG_FLOAT_ARRAY has id 350, which MAVLink 1 cannot carry, so ask
# for MAVLink 2 before the import; if someone imported mavutil earlier without it, reload the v2
# dialect once here rather than let it switch mid-flight.
os.environ.setdefault("MAVLINK20", "1")
from pymavlink import mavutil

if mavutil.mavlink.WIRE_PROTOCOL_VERSION != "2.0":
    mavutil.set_dialect(mavutil.current_dialect)
mavlink: Any = mavutil.mavlink


def new_parser() -> Any:
    """A MAVLink 2 parser that turns garbage into BAD_DATA messages instead of raising."""
    parser = mavlink.MAVLink(None, srcSystem=0, srcComponent=0)
    parser.robust_parsing = True
    return parser


def admitted_frames(parser: Any, datagram: bytes, counters: Any, authentic: Callable[[Any], bool] | None
                    ) -> tuple[list[tuple[str, Any]], int, str, Any]:
    """The frames of one datagram a SITL may act on, as (type, message), with the count of malformed ones,
    the latest reason and the parser to use next (a fresh one after an error: datagrams never continue).

    Unknown ids count on `counters.rx_unknown`; `authentic(msg)` (signing on) drops and counts the rest;
    admitted frames count on `counters.rx_frames` and `counters.rx_by_type`."""
    bad, reason = 0, ""
    try:
        messages = parser.parse_buffer(datagram) or []
        if parser.buf_len() > 0:
            bad, reason, parser = 1, "truncated frame at datagram end", new_parser()
    except Exception as exc:  # pymavlink raises more than MAVError on hostile bytes
        messages, bad, reason, parser = [], 1, f"parser error: {exc}", new_parser()
    frames = []
    for msg in messages:
        msg_type = msg.get_type()
        if msg_type == "BAD_DATA":
            bad, reason = bad + 1, str(getattr(msg, "reason", "bad data"))
            continue
        if msg.get_msgId() == mavlink.MAVLINK_MSG_ID_UNKNOWN:
            counters.rx_unknown += 1
            continue
        if authentic is not None and not authentic(msg):
            continue
        counters.rx_frames += 1
        counters.rx_by_type[msg_type] = counters.rx_by_type.get(msg_type, 0) + 1
        frames.append((msg_type, msg))
    return frames, bad, reason, parser


def drain(receive: Callable[[bytes], None], sock: socket.socket, max_datagrams: int = 256) -> None:
    """Hand every waiting datagram to `receive`; bounded, so a flood cannot starve the physics clock."""
    for _ in range(max_datagrams):
        try:
            datagram = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # e.g. ECONNREFUSED reported for an earlier send: not about this datagram
            continue
        receive(datagram)


def udp_address(text: str, what: str) -> tuple[str, int]:
    """`udp:HOST:PORT`, `udpout:HOST:PORT` or `HOST:PORT` -> (host, port); an argparse error otherwise."""
    address = text
    for prefix in ("udpout:", "udp:"):
        if address.startswith(prefix):
            address = address[len(prefix):]
            break
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{what}: expected udp:HOST:PORT, got {text!r}")
    return host, int(port)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[tuple[threading.Event, socket.socket]]:
    """SIGTERM / SIGINT set the yielded event, and wake a `select` on the yielded socket. For a SITL
    process's `main`: the process is on its way out when the block ends.

    After the block both signals are ignored, not restored: a second SIGTERM during shutdown (a
    test's kill, then the launcher's `terminate()`) must not hit the default action and kill the
    process before it writes its FINAL line or while Python finalises (which resets every Python
    handler to the default, but leaves an ignored signal ignored). SIGKILL still ends it. Off the
    main thread no handler can be installed and only the event is there.
    """
    stop = threading.Event()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_wakeup = -1
    if in_main_thread:
        previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop, wake_r
    finally:
        if in_main_thread:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            signal.set_wakeup_fd(previous_wakeup)  # before the socket it names is closed
        wake_r.close()
        wake_w.close()
