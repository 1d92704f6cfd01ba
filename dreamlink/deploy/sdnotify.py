"""sd_notify without libsystemd: one datagram per message on the socket systemd names in NOTIFY_SOCKET.

The unit is `Type=notify` with `WatchdogSec=`: the runtime says READY=1 once the bundle is
loaded and the first tick ran, then WATCHDOG=1 from the control loop itself (never from a
side thread: a hung loop must stop petting the watchdog so systemd restarts it). Outside
systemd (no NOTIFY_SOCKET) every call is a cheap no-op, so the same code runs on a laptop.

Wiring in `dreamlink run` (cli)::

    notify = SdNotifier.from_environ()
    pet = WatchdogPet(notify, now_s=time.monotonic)   # per tick: pet(); rate-limited inside
    ... load bundle, connect, first tick ...
    notify.ready("flying bundle <name> at 50 Hz")
    ... loop: pet() each tick ...
    notify.stopping()
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd set for this process (WATCHDOG_USEC), or None when there is none."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. a wrapper that exec'd us)
    return int(usec) / 1e6


class SdNotifier:
    """The notify socket of this service, opened once. `send` never raises: notifying is best effort."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            if address.startswith("@"):  # abstract namespace
                address = "\0" + address[1:]
            if not address.startswith(("/", "\0")):
                log.warning("NOTIFY_SOCKET %r is not a unix socket path; sd_notify disabled", self.address)
                return
            self._target = address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, message: str) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto(message.encode(), self._target)
            return True
        except OSError as e:
            log.warning("sd_notify %r failed: %s", message.split("\n", 1)[0], e)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogPet:
    """Call once per control tick; sends WATCHDOG=1 at most every half watchdog interval."""

    def __init__(
        self,
        notifier: SdNotifier,
        now_s: Callable[[], float],
        interval_s: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.notifier, self.now_s = notifier, now_s
        timeout = interval_s if interval_s is not None else watchdog_interval_s(environ)
        self.every_s = None if timeout is None or not notifier.enabled else timeout / 2
        self._last_s = float("-inf")

    def __call__(self) -> None:
        if self.every_s is None:
            return
        now = self.now_s()
        if now - self._last_s >= self.every_s:
            self.notifier.watchdog()
            self._last_s = now
