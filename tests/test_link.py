"""The MAVLink Link over real loopback UDP: garbage in, taps, commands, timeouts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from waiting import eventually

from dreamlink.firmware_bridge.link import Link, LinkConfig, LinkError, LinkTimeout, mavlink
from dreamlink.sim.launcher import free_udp_port

pytestmark = pytest.mark.sitl  # real sockets


@pytest.fixture()
def pair() -> Iterator[tuple[Link, Link, list[tuple[str, float, bytes]]]]:
    """A listening link (tapped) and a peer sending to it, as a vehicle would (sysid 42)."""
    port = free_udp_port()
    frames: list[tuple[str, float, bytes]] = []
    listener = Link(LinkConfig(f"udp:127.0.0.1:{port}"), tap=lambda d, t, b: frames.append((d, t, b))).open()
    peer = Link(LinkConfig(f"udpout:127.0.0.1:{port}", source_system=42, source_component=1,
                           heartbeat_period_s=0.0)).open()
    try:
        yield listener, peer, frames
    finally:
        peer.close()
        listener.close()


def peer_heartbeat(peer: Link) -> None:
    peer.mav.heartbeat_send(mavlink.MAV_TYPE_GENERIC, mavlink.MAV_AUTOPILOT_GENERIC, 0, 0, mavlink.MAV_STATE_STANDBY)


def test_garbage_is_dropped_and_counted_and_the_link_keeps_working(pair: tuple[Link, Link, list]) -> None:
    listener, peer, _ = pair
    port = int(listener.config.connect.rsplit(":", 1)[1])
    encoder = mavlink.MAVLink(None, srcSystem=42, srcComponent=1)
    valid = bytes(encoder.heartbeat_encode(mavlink.MAV_TYPE_GENERIC, mavlink.MAV_AUTOPILOT_GENERIC, 0, 0, 0)
                  .pack(encoder))
    rng = np.random.default_rng(0)
    noise = b"\x00" + rng.bytes(200)  # no start marker first: certainly garbage
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for datagram in (noise, valid[:-3]):
            before = listener.stats.rx_bad
            raw.sendto(datagram, ("127.0.0.1", port))
            assert eventually(lambda: listener.stats.rx_bad > before)  # noqa: B023
    assert listener.stats.rx_frames == 0
    peer_heartbeat(peer)
    assert eventually(lambda: listener.latest("HEARTBEAT") is not None)
    heard, _ = listener.latest("HEARTBEAT")  # type: ignore[misc]
    assert heard.get_srcSystem() == 42
    assert listener.stats.rx_by_type == {"HEARTBEAT": 1}


def test_unknown_message_ids_are_stepped_over(pair: tuple[Link, Link, list]) -> None:
    listener, peer, _ = pair
    port = int(listener.config.connect.rsplit(":", 1)[1])
    msg_id = 60123  # not in the dialect: CRC cannot be checked, the frame is well formed
    unknown = bytes([0xFD, 2, 0, 0, 0, 42, 1]) + msg_id.to_bytes(3, "little") + b"\x01\x02" + b"\x00\x00"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(unknown, ("127.0.0.1", port))
    assert eventually(lambda: listener.stats.rx_unknown == 1)
    peer_heartbeat(peer)
    assert eventually(lambda: listener.stats.rx_frames == 1)
    assert listener.stats.rx_bad == 0


def test_tap_sees_rx_and_tx_frames_that_parse_back(pair: tuple[Link, Link, list]) -> None:
    listener, peer, frames = pair
    peer_heartbeat(peer)  # the listener learns where to reply
    assert eventually(lambda: listener.latest("HEARTBEAT") is not None)
    listener.mav.named_value_float_send(0, b"probe", 1.5)
    assert eventually(lambda: peer.latest("NAMED_VALUE_FLOAT") is not None)
    t_now = time.time()
    parser = mavlink.MAVLink(None)
    seen = set()
    for direction, t_unix, frame in list(frames):
        msgs = parser.parse_buffer(frame)
        assert msgs is not None and len(msgs) == 1 and msgs[0].get_type() != "BAD_DATA"
        assert abs(t_now - t_unix) < 30.0
        seen.add((direction, msgs[0].get_type()))
    assert ("rx", "HEARTBEAT") in seen and ("tx", "NAMED_VALUE_FLOAT") in seen and ("tx", "HEARTBEAT") in seen
    assert listener.stats.tx_frames == sum(1 for d, _, _ in frames if d == "tx")


def test_command_long_retries_then_returns_the_ack(pair: tuple[Link, Link, list]) -> None:
    listener, peer, _ = pair
    confirmations: list[int] = []

    def vehicle(msg: Any, _t: float) -> None:  # answers only the second try
        confirmations.append(msg.confirmation)
        if msg.confirmation >= 1:
            peer.mav.command_ack_send(msg.command, mavlink.MAV_RESULT_TEMPORARILY_REJECTED, 0, 0, 1, 191)

    peer.subscribe("COMMAND_LONG", vehicle)
    peer_heartbeat(peer)
    assert eventually(lambda: listener.latest("HEARTBEAT") is not None)
    result = listener.command_long(42, 1, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1,), timeout_s=0.3, retries=2)
    assert result == mavlink.MAV_RESULT_TEMPORARILY_REJECTED
    assert confirmations[:2] == [0, 1]


def test_command_long_without_answer_raises_naming_the_command() -> None:
    with Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}")) as link, \
            pytest.raises(LinkTimeout, match=r"MAV_CMD_COMPONENT_ARM_DISARM \(400\).*2 tries"):
        link.command_long(1, 1, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1,), timeout_s=0.1, retries=1)


def test_a_failing_subscriber_does_not_stop_reception(pair: tuple[Link, Link, list]) -> None:
    listener, peer, _ = pair
    def broken(msg: Any, recv_s: float) -> None:
        raise ZeroDivisionError

    listener.subscribe("HEARTBEAT", broken)
    for _ in range(2):
        peer_heartbeat(peer)
    assert eventually(lambda: listener.stats.rx_by_type.get("HEARTBEAT") == 2)


@pytest.mark.parametrize("connect", ["", "flight.tlog", "udp:localhost", "serial:/dev/ttyX:fast"])
def test_bad_connect_strings_are_refused_clearly(connect: str) -> None:
    with pytest.raises((ValueError, LinkError), match=r"connect|expected"):
        Link(LinkConfig(connect)).open()


def test_sending_on_a_closed_link_says_so() -> None:
    link = Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}"))
    with pytest.raises(LinkError, match="not open"):
        link.mav.heartbeat_send(0, 0, 0, 0, 0)


def test_a_listening_link_answers_only_the_peer_that_sent_valid_mavlink(pair: tuple[Link, Link, list]) -> None:
    """Garbage from another address must not make the link send it our commands."""
    listener, peer, _ = pair
    port = int(listener.config.connect.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.settimeout(0.3)
        peer_heartbeat(peer)
        assert eventually(lambda: listener.latest("HEARTBEAT") is not None)
        stranger.sendto(b"\x00not mavlink at all", ("127.0.0.1", port))
        assert eventually(lambda: listener.stats.rx_bad == 1)
        listener.mav.command_long_send(42, 1, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0, 1, 0, 0, 0, 0, 0, 0)
        assert eventually(lambda: peer.latest("COMMAND_LONG") is not None)
        with pytest.raises(TimeoutError):
            stranger.recvfrom(4096)
