"""sd_notify over a real datagram socket, as systemd's NOTIFY_SOCKET receives it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from dreamlink.deploy.sdnotify import SdNotifier, WatchdogPet, watchdog_interval_s


@pytest.fixture()
def listener(tmp_path: Path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def test_ready_status_watchdog_reach_the_socket(listener) -> None:
    path, sock = listener
    n = SdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("flying cartpole at 50 Hz")
    assert sock.recv(4096) == b"READY=1\nSTATUS=flying cartpole at 50 Hz"
    assert n.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping() and sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"dreamlink-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert SdNotifier(f"@{name}").ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_outside_systemd_everything_is_a_no_op(tmp_path: Path) -> None:
    n = SdNotifier.from_environ({})
    assert not n.enabled and not n.ready() and not n.watchdog()
    gone = SdNotifier(str(tmp_path / "nobody-listens"))
    assert gone.enabled and not gone.ready()  # a vanished socket is logged, never raised


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None


def test_pet_sends_at_most_every_half_interval(listener) -> None:
    path, sock = listener
    now = [0.0]
    pet = WatchdogPet(SdNotifier(path), now_s=lambda: now[0], environ={"WATCHDOG_USEC": "2000000"})
    sent = 0
    sock.setblocking(False)
    for _ in range(300):  # 3 s of 100 Hz ticks
        pet()
        now[0] += 0.01
        try:
            while sock.recv(64) == b"WATCHDOG=1":
                sent += 1
        except BlockingIOError:
            pass
    assert sent == 3  # t = 0, 1, 2 s
