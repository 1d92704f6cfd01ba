"""What every SITL process shares on its side of the wire: MAVLink 2 through pymavlink, its own MAVLink end
(`SitlEnd`: the encoder it sends with, signing, and the admission of what it receives, the Link's own rule
from `dreamlink.firmware_bridge.admission`), a parser that never raises on garbage, a bounded socket drain,
and the `udp:HOST:PORT` argument type."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from dreamlink.firmware_bridge import admission
from dreamlink.firmware_bridge.admission import (
    Admission,
    AdmissionCounts,
    FrameAdmission,
    RateLimitedLog,
    command_message_ids,
)
from dreamlink.firmware_bridge.security import Authenticator, SigningKey, signing_timestamp

# pymavlink chooses MAVLink 1 or 2 when mavutil is first imported (and flips a process-wide global
# if it later sees a v2 frame). DEBUG_FLOAT_ARRAY has id 350, which MAVLink 1 cannot carry, so ask
# for MAVLink 2 before the import; if someone imported mavutil earlier without it, reload the v2
# dialect once here rather than let it switch mid-flight.
os.environ.setdefault("MAVLINK20", "1")
from pymavlink import mavutil

if mavutil.mavlink.WIRE_PROTOCOL_VERSION != "2.0":
    mavutil.set_dialect(mavutil.current_dialect)
mavlink: Any = mavutil.mavlink


class _Writer:
    """The file-like object pymavlink's encoder writes packed frames to."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


class SitlEnd:
    """A SITL's own MAVLink end, the same for the motor board and the quadrotor: `mav`, the encoder whose packed
    frames go to `send_frame`; with a signing key, `auth` and every frame signed (the owner routes `mav.send`
    through its own path to `send_signed_now`); and `admission`, which decides which received frames it acts on
    and counts the rest in `counters`."""

    def __init__(self, send_frame: Callable[[bytes], None], system: int, component: int, counters: AdmissionCounts,
                 log: logging.Logger, signing_key: SigningKey | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.mav = mavlink.MAVLink(_Writer(send_frame), srcSystem=system, srcComponent=component)
        self._wall_clock = wall_clock
        self.auth: Authenticator | None = None
        if signing_key is not None:
            signing = self.mav.signing  # pymavlink signs what the encoder packs
            signing.secret_key, signing.link_id, signing.sign_outgoing = signing_key.secret, 0, True
            signing.timestamp = signing_timestamp(wall_clock())
            self.auth = Authenticator(signing_key, wall_clock)
        self.admission = FrameAdmission(
            mavlink, Admission(command_message_ids({i: c.msgname for i, c in mavlink.mavlink_map.items()})),
            counters, RateLimitedLog(log), authenticator=self.auth)

    def send_signed_now(self, msg: Any, force_mavlink1: bool = False) -> None:
        """Sign and send `msg`. Signing timestamps must not fall behind the wall clock (a client that connects
        later refuses a stream more than a minute old) nor behind the newest accepted from a peer."""
        assert self.auth is not None
        signing = self.mav.signing
        signing.timestamp = max(signing.timestamp, signing_timestamp(self._wall_clock()),
                                self.auth.newest_timestamp + 1)
        type(self.mav).send(self.mav, msg, force_mavlink1=force_mavlink1)


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
