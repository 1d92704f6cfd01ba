"""What every SITL process shares on its side of the wire: MAVLink 2 through pymavlink, a parser that
never raises on garbage, a bounded socket drain, and the `udp:HOST:PORT` argument type. Which received
frames a SITL acts on is the Link's own rule, `dreamlink.firmware_bridge.admission`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dreamlink.firmware_bridge import admission

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
    return admission.new_parser(mavlink)


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
