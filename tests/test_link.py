"""The MAVLink Link over real loopback UDP: garbage in, taps, commands, timeouts."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waiting import eventually

from dreamlink.firmware_bridge.link import Link, LinkConfig, LinkError, LinkTimeout, mavlink
from dreamlink.firmware_bridge.security import signing_timestamp, write_signing_key
from dreamlink.sim.launcher import free_udp_port

pytestmark = pytest.mark.sitl  # real sockets

SIGNING_KEY = bytes(range(7, 39))


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


def full_dialect_frames(system: int = 42, component: int = 1, key: bytes | None = None) -> dict[str, bytes]:
    """Frames of messages the link does not decode, as an autopilot sends them (pymavlink's `all` dialect)."""
    from pymavlink.dialects.v20 import all as full

    mav = full.MAVLink(None, srcSystem=system, srcComponent=component)
    if key is not None:
        mav.signing.secret_key, mav.signing.link_id, mav.signing.sign_outgoing = key, 3, True
        mav.signing.timestamp = signing_timestamp(time.time())
    msgs = {
        "GLOBAL_POSITION_INT": mav.global_position_int_encode(1234, 473977420, 85455940, 500000, 12000, 15, -7, 2,
                                                              9000),
        "AHRS2": mav.ahrs2_encode(0.1, -0.2, 1.5, 12.0, 473977420, 85455940),  # ArduPilot's own
        "MISSION_CLEAR_ALL": mav.mission_clear_all_encode(1, 1, 0),  # a command, by the signing policy
    }
    return {name: bytes(msg.pack(mav)) for name, msg in msgs.items()}


NOBODYS_ID = 60123  # in no dialect pymavlink ships: no CRC_EXTRA to check it with
NOBODYS_FRAME = bytes([0xFD, 2, 0, 0, 0, 42, 1]) + NOBODYS_ID.to_bytes(3, "little") + b"\x01\x02" + b"\x00\x00"


def send_raw(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for datagram in datagrams:
            raw.sendto(datagram, ("127.0.0.1", port))


def test_undecoded_frames_are_counted_and_logged_as_received_never_delivered(pair: tuple[Link, Link, list],
                                                                            tmp_path: Path) -> None:
    """An autopilot streams many messages the link does not decode: the .tlog still gets every one,
    byte for byte, readable by pymavlink's own log reader; a CRC that does not match is bad data."""
    listener, peer, frames = pair
    port = int(listener.config.connect.rsplit(":", 1)[1])
    sent = full_dialect_frames()
    assert not {"GLOBAL_POSITION_INT", "AHRS2", "MISSION_CLEAR_ALL"} & {c.msgname for c in mavlink.mavlink_map.values()}
    corrupt = bytearray(sent["GLOBAL_POSITION_INT"])
    corrupt[12] ^= 0x40  # payload changed, CRC kept: pymavlink knows id 33's CRC_EXTRA, so this is caught
    send_raw(port, *sent.values(), NOBODYS_FRAME, bytes(corrupt))
    assert eventually(lambda: listener.stats.rx_unknown == 4 and listener.stats.rx_bad == 1)
    peer_heartbeat(peer)
    assert eventually(lambda: listener.stats.rx_frames == 1)
    assert listener.stats.rx_by_type == {"HEARTBEAT": 1} and listener.latest("GLOBAL_POSITION_INT") is None
    received = [frame for direction, _, frame in frames if direction == "rx"]
    assert received[:4] == [*sent.values(), NOBODYS_FRAME]  # exactly as they came, in order; not the corrupt one
    assert len(received) == 5 and bytes(corrupt) not in received

    from pymavlink import mavutil

    from dreamlink.runtime.recorder import TLOG_NAME, FlightRecorder
    from dreamlink.spec import CARTPOLE

    recorder = FlightRecorder(tmp_path, CARTPOLE, horizon=2, max_ticks=1)
    for direction, t, frame in frames:
        recorder.tap(direction, t, frame)
    recorder.close()
    log = mavutil.mavlink_connection(str(tmp_path / TLOG_NAME), dialect="ardupilotmega")
    types = []
    while (msg := log.recv_match()) is not None:
        types.append(msg.get_type())
        if msg.get_type() == "GLOBAL_POSITION_INT":
            assert (msg.lat, msg.lon, msg.relative_alt, msg.hdg) == (473977420, 85455940, 12000, 9000)
        if msg.get_type() == "AHRS2":
            assert msg.altitude == pytest.approx(12.0)
    assert [t for t in types if t != "HEARTBEAT"] == ["GLOBAL_POSITION_INT", "AHRS2", "MISSION_CLEAR_ALL",
                                                      f"UNKNOWN_{NOBODYS_ID}"]
    assert types.count("HEARTBEAT") >= 2  # ours (tx) and the peer's (rx)


def test_signing_applies_to_undecoded_frames_and_rejected_ones_are_never_logged(tmp_path: Path) -> None:
    key_file = tmp_path / "link.key"
    write_signing_key(key_file, SIGNING_KEY)
    port = free_udp_port()
    frames: list[bytes] = []
    config = LinkConfig(f"udp:127.0.0.1:{port}", signing_key_file=str(key_file), accept_unsigned=True,
                        heartbeat_period_s=0.0)
    with Link(config, tap=lambda d, _t, b: frames.append(b) if d == "rx" else None) as link:
        good = full_dialect_frames(key=SIGNING_KEY)
        forged = full_dialect_frames(key=bytes(32))
        unsigned = full_dialect_frames()
        send_raw(port, good["GLOBAL_POSITION_INT"])
        assert eventually(lambda: link.stats.rx_unknown == 1)
        send_raw(port, forged["GLOBAL_POSITION_INT"], good["GLOBAL_POSITION_INT"], unsigned["MISSION_CLEAR_ALL"])
        assert eventually(lambda: link.stats.rx_bad_signature == 1 and link.stats.rx_replayed == 1
                          and link.stats.rx_unsigned_rejected == 1)
        # Unsigned telemetry is accepted on this link, an unsigned command (decoded or not) never.
        send_raw(port, unsigned["AHRS2"])
        assert eventually(lambda: link.stats.rx_unknown == 2)
        assert link.stats.rx_frames == 0 and link.stats.rx_signed == 0  # counted, logged, not delivered
    assert frames == [good["GLOBAL_POSITION_INT"], unsigned["AHRS2"]]


def test_allowed_sources_apply_to_undecoded_commands() -> None:
    port = free_udp_port()
    frames: list[bytes] = []
    config = LinkConfig(f"udp:127.0.0.1:{port}", allowed_sources=((255, 190),), heartbeat_period_s=0.0)
    with Link(config, tap=lambda _d, _t, b: frames.append(b)) as link:
        stranger, ground = full_dialect_frames(66, 1), full_dialect_frames(255, 190)
        send_raw(port, stranger["MISSION_CLEAR_ALL"], ground["MISSION_CLEAR_ALL"], stranger["AHRS2"])
        assert eventually(lambda: link.stats.rx_source_rejected == 1 and link.stats.rx_unknown == 2)
    assert frames == [ground["MISSION_CLEAR_ALL"], stranger["AHRS2"]]


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


def test_an_ardupilot_specific_message_is_decoded_not_skipped(pair: tuple[Link, Link, list]) -> None:
    """The link's dialect carries ArduPilot's own messages (EKF_STATUS_REPORT: the estimator health)."""
    listener, peer, _ = pair
    peer.mav.ekf_status_report_send(0x1FF, 0.1, 0.2, 0.3, 0.4, 0.0)
    assert eventually(lambda: listener.latest("EKF_STATUS_REPORT") is not None)
    report, _ = listener.latest("EKF_STATUS_REPORT")  # type: ignore[misc]
    assert report.flags == 0x1FF and report.compass_variance == pytest.approx(0.4)
    assert listener.stats.rx_unknown == 0


def test_udpout_resolves_a_host_name() -> None:
    port = free_udp_port()
    with Link(LinkConfig(f"udp:127.0.0.1:{port}", heartbeat_period_s=0.0)) as listener, \
            Link(LinkConfig(f"udpout:localhost:{port}", source_system=42, heartbeat_period_s=0.0)) as peer:
        peer_heartbeat(peer)
        assert eventually(lambda: listener.latest("HEARTBEAT") is not None)


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def heard_from(link: Link, msg_type: str) -> int | None:
    """The system id of the newest `msg_type` message, or None."""
    newest = link.latest(msg_type)
    return None if newest is None else int(newest[0].get_srcSystem())


def test_tcp_links_talk_both_ways_and_a_listener_takes_the_next_client() -> None:
    port = _free_tcp_port()
    with Link(LinkConfig(f"tcpin:127.0.0.1:{port}", heartbeat_period_s=0.0)) as listener:
        listener.mav.heartbeat_send(0, 0, 0, 0, 0)  # no client yet: dropped, not raised
        for sysid in (42, 43):  # the second client comes after the first hung up
            with Link(LinkConfig(f"tcp:127.0.0.1:{port}", source_system=sysid, source_component=1,
                                 heartbeat_period_s=0.0)) as client:
                peer_heartbeat(client)
                assert eventually(lambda: heard_from(listener, "HEARTBEAT") == sysid)  # noqa: B023
                listener.mav.named_value_float_send(0, b"probe", float(sysid))
                assert eventually(lambda: client.latest("NAMED_VALUE_FLOAT") is not None)
                assert client.latest("NAMED_VALUE_FLOAT")[0].value == sysid  # type: ignore[index]
        assert listener.stats.rx_bad == 0 and listener.stats.rx_by_type == {"HEARTBEAT": 2}


def test_serial_device_spellings_reach_the_port_with_the_baud_split_off() -> None:
    pytest.importorskip("serial")
    for connect in ("/dev/ttyDREAMLINKNONE,57600", "/dev/ttyDREAMLINKNONE:57600", "serial:/dev/ttyDREAMLINKNONE:57600"):
        with pytest.raises(LinkError, match="cannot open") as info:
            Link(LinkConfig(connect)).open()
        opened = str(info.value.__cause__)
        assert "/dev/ttyDREAMLINKNONE" in opened and "57600" not in opened


# -- the dialect ------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_the_dialect_has_every_message_and_constant_dreamlink_code_uses() -> None:
    """The link decodes only its own dialect's messages: a profile that subscribes to (or sends) one it
    lacks would wait forever (or fail at the send). `make dialect` after adding it to generate.py."""
    ours = {c.msgname for c in mavlink.mavlink_map.values()}
    method = {name.lower(): name for name in ours}
    missing = []
    for path in sorted((ROOT / "dreamlink").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("dreamlink/sim/", "dreamlink/firmware_bridge/dialect/")) or rel.endswith("/tlog.py"):
            continue  # the simulators speak pymavlink's full dialects; tlog reads logs with `all`
        text = path.read_text()
        names = set(re.findall(r"\b(?:subscribe|latest|wait_for|_expect|_await)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
                               text))
        names |= set(re.findall(r"MAVLINK_MSG_ID_([A-Z][A-Z0-9_]*)\b", text)) - {"BAD_DATA", "UNKNOWN"}
        sends = set(re.findall(r"\.([a-z][a-z0-9_]*)_(?:send|encode)\(", text)) - {"xxx"}
        missing += [f"{rel}: message {n}" for n in sorted(names - ours)]
        missing += [f"{rel}: {s}_send/_encode" for s in sorted(sends) if s not in method]
        if rel.endswith("/link.py") or re.search(r"from dreamlink\.firmware_bridge\.link import[^\n]*\bmavlink\b",
                                                  text):
            consts = set(re.findall(r"\bmavlink\.([A-Z][A-Za-z0-9_]*)\b", text))
            missing += [f"{rel}: mavlink.{c}" for c in sorted(consts) if not hasattr(mavlink, c)]
    assert not missing, missing


def test_the_dialect_matches_pymavlinks_definitions_so_real_autopilots_understand_it() -> None:
    from pymavlink.dialects.v20 import all as full

    from dreamlink.firmware_bridge.dialect.known_ids import KNOWN_IDS

    assert len(mavlink.mavlink_map) >= 20
    for msg_id, ours in mavlink.mavlink_map.items():
        ref = full.mavlink_map[msg_id]
        assert (ours.msgname, ours.crc_extra, ours.ordered_fieldnames, ours.fieldtypes, ours.array_lengths) == (
            ref.msgname, ref.crc_extra, ref.ordered_fieldnames, ref.fieldtypes, ref.array_lengths)
    assert KNOWN_IDS == {i: (c.msgname, c.crc_extra) for i, c in full.mavlink_map.items()}
    # Both ways on the wire: what we send, the full dialect decodes, and the other way round.
    ours_mav, full_mav = mavlink.MAVLink(None, 3, 1), full.MAVLink(None, 3, 1)
    frame = bytes(ours_mav.set_position_target_local_ned_encode(7, 1, 1, 1, 0x0DC7, 0, 0, 0, 1.5, -0.5, 0.25, 0, 0,
                                                                  0, 0, 0).pack(ours_mav))
    decoded = full_mav.decode(bytearray(frame))
    assert decoded.get_type() == "SET_POSITION_TARGET_LOCAL_NED" and (decoded.vx, decoded.vy) == (1.5, -0.5)
    frame = bytes(full_mav.ekf_status_report_encode(0x1FF, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6).pack(full_mav))
    assert mavlink.MAVLink(None).decode(bytearray(frame)).airspeed_variance == pytest.approx(0.6)


def test_the_committed_dialect_is_what_make_dialect_generates(tmp_path: Path) -> None:
    from dreamlink.firmware_bridge.dialect import generate

    generate.generate(tmp_path)
    for name in (generate.XML_NAME, generate.MODULE_NAME, generate.KNOWN_IDS_NAME):
        assert (tmp_path / name).read_text() == (generate.HERE / name).read_text(), f"{name}: run `make dialect`"
