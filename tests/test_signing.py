"""MAVLink 2 signing on the Link and the motor-board SITL: who may talk to the vehicle, and who may not."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually

from dreamlink.firmware_bridge.link import Link, LinkConfig, LinkError, mavlink
from dreamlink.firmware_bridge.security import (
    Authenticator,
    SigningKey,
    SigningKeyError,
    Verdict,
    load_signing_key,
    signing_timestamp,
    write_signing_key,
)
from dreamlink.sim.launcher import SitlError, SitlProcess, free_udp_port

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(32))
ARM = mavlink.MAV_CMD_COMPONENT_ARM_DISARM


def encoder(system: int, component: int, key: bytes | None = None, link_id: int = 7) -> Any:
    """A bare pymavlink encoder, signing with `key` if given: what an intruder or a test tool has."""
    mav = mavlink.MAVLink(None, srcSystem=system, srcComponent=component)
    if key is not None:
        mav.signing.secret_key, mav.signing.link_id, mav.signing.sign_outgoing = key, link_id, True
        mav.signing.timestamp = signing_timestamp(time.time())
    return mav


def arm_frame(mav: Any, arm: bool, target: tuple[int, int] = (1, 1)) -> bytes:
    return bytes(mav.command_long_encode(*target, ARM, 0, 1.0 if arm else 0.0, 0, 0, 0, 0, 0, 0).pack(mav))


def heartbeat_frame(mav: Any) -> bytes:
    return bytes(mav.heartbeat_encode(mavlink.MAV_TYPE_GCS, mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0).pack(mav))


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    write_signing_key(tmp_path / "mavlink.key", KEY)
    return tmp_path / "mavlink.key"


# -- key files ---------------------------------------------------------------------------------------------


def test_key_file_readable_by_others_is_refused_naming_file_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(KEY)
    path.chmod(0o644)
    with pytest.raises(SigningKeyError, match=r"k\.key has mode 0644.*chmod 600") as info:
        load_signing_key(path)
    assert KEY.hex() not in str(info.value)
    link = Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}", signing_key_file=str(path)))
    with pytest.raises(LinkError, match=r"signing_key_file.*k\.key has mode 0644"):
        link.open()
    assert not link.is_open
    path.chmod(0o600)
    assert load_signing_key(path).secret == KEY


def test_key_file_formats_and_bad_contents(tmp_path: Path) -> None:
    hex_file = tmp_path / "hex.key"
    hex_file.write_text(KEY.hex() + "\n")
    hex_file.chmod(0o600)
    assert load_signing_key(hex_file).secret == KEY
    short = tmp_path / "short.key"
    short.write_bytes(KEY[:16])
    short.chmod(0o600)
    with pytest.raises(SigningKeyError, match=r"short\.key: expected 32 raw bytes or 64 hex digits, got 16"):
        load_signing_key(short)
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_signing_key(tmp_path / "missing.key")
    with pytest.raises(SigningKeyError, match="already exists"):
        write_signing_key(hex_file)
    assert (os.stat(write_signing_key(tmp_path / "new.key").source).st_mode & 0o777) == 0o600


@pytest.mark.sitl
def test_sitl_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "board.key"
    path.write_bytes(KEY)
    path.chmod(0o640)
    with pytest.raises(SitlError, match=r"exited with code 2[\s\S]*board\.key has mode 0640"):
        SitlProcess("cartpole", extra_args=("--signing-key-file", str(path)), heartbeat_timeout_s=10).start()


# -- the link on its own -----------------------------------------------------------------------------------


def test_link_config_security_fields_are_checked_and_normalised() -> None:
    config = LinkConfig("udp:127.0.0.1:14540", allowed_sources=[[255, 190], [1, 0]])  # as TOML gives them
    assert config.allowed_sources == ((255, 190), (1, 0))
    for bad, match in [({"allowed_sources": [(0, 1)]}, r"allowed_sources: .*got the entry \(0, 1\)"),
                       ({"allowed_sources": "255:190"}, "allowed_sources: expected a list"),
                       ({"link_id": 256}, r"link_id: expected 0\.\.255"),
                       ({"accept_unsigned": "yes"}, "accept_unsigned: expected true or false")]:
        with pytest.raises(ValueError, match=match):
            LinkConfig("udp:127.0.0.1:14540", **bad)  # type: ignore[arg-type]


@pytest.fixture()
def signed_listener(key_file: Path) -> Iterator[tuple[Link, int, list[Any]]]:
    """A signed listening link accepting commands only from the ground station 255/190."""
    port = free_udp_port()
    commands: list[Any] = []
    link = Link(LinkConfig(f"udp:127.0.0.1:{port}", signing_key_file=str(key_file), heartbeat_period_s=0,
                           allowed_sources=((255, 190),))).open()
    link.subscribe("COMMAND_LONG", lambda msg, _t: commands.append(msg))
    try:
        yield link, port, commands
    finally:
        link.close()


def send_raw(port: int, *frames: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for frame in frames:
            raw.sendto(frame, ("127.0.0.1", port))


@pytest.mark.sitl
def test_only_signed_commands_from_allowed_sources_are_delivered(signed_listener: tuple[Link, int, list]) -> None:
    link, port, commands = signed_listener
    send_raw(port, arm_frame(encoder(255, 190), True))  # right source, no signature
    send_raw(port, arm_frame(encoder(255, 190, OTHER_KEY), True))  # right source, wrong key
    send_raw(port, arm_frame(encoder(66, 1, KEY), True))  # right key, source not allowed
    assert eventually(lambda: (link.stats.rx_unsigned_rejected, link.stats.rx_bad_signature,
                               link.stats.rx_source_rejected) == (1, 1, 1))
    gcs = encoder(255, 190, KEY)
    send_raw(port, heartbeat_frame(encoder(66, 1, KEY)), arm_frame(gcs, True))  # telemetry from anyone is fine
    assert eventually(lambda: len(commands) == 1)
    assert commands[0].get_srcSystem() == 255 and commands[0].get_signed() is False  # parsed without pymavlink's check
    assert link.latest("HEARTBEAT")[0].get_srcSystem() == 66  # type: ignore[index]
    stats = link.stats
    assert stats.rx_frames == 2 and stats.rx_signed == 2 and stats.rx_by_type == {"HEARTBEAT": 1, "COMMAND_LONG": 1}


@pytest.mark.sitl
def test_replayed_and_forged_future_frames_are_dropped_and_do_not_lock_out_the_sender(
        signed_listener: tuple[Link, int, list]) -> None:
    link, port, commands = signed_listener
    gcs = encoder(255, 190, KEY)
    first = arm_frame(gcs, True)
    send_raw(port, first)
    assert eventually(lambda: len(commands) == 1)
    send_raw(port, first)  # a recording played back
    forged = bytearray(arm_frame(gcs, False))
    forged[-12:-6] = ((1 << 48) - 1).to_bytes(6, "little")  # far future: pymavlink 2.4.50 would lock the stream
    send_raw(port, bytes(forged))
    assert eventually(lambda: link.stats.rx_replayed == 1 and link.stats.rx_bad_signature == 1)
    send_raw(port, arm_frame(gcs, False))  # the real ground station still gets through
    assert eventually(lambda: len(commands) == 2)
    assert [c.param1 for c in commands] == [1.0, 0.0]


def test_authenticator_accepts_new_streams_only_from_the_last_minute() -> None:
    key = SigningKey(KEY)
    now = time.time()
    auth = Authenticator(key, clock=lambda: now)
    old = encoder(255, 190, KEY, link_id=3)
    old.signing.timestamp = signing_timestamp(now - 120)
    assert auth.check(heartbeat_frame(old)) is Verdict.REPLAYED
    fresh = encoder(255, 190, KEY, link_id=4)
    frames = [heartbeat_frame(fresh) for _ in range(3)]
    assert [auth.check(f) for f in frames] == [Verdict.SIGNED] * 3
    assert auth.check(frames[1]) is Verdict.REPLAYED
    assert auth.check(heartbeat_frame(encoder(255, 190))) is Verdict.UNSIGNED
    assert auth.newest_timestamp == int.from_bytes(frames[-1][-12:-6], "little")


@pytest.mark.sitl
def test_frames_the_link_signs_verify_with_pymavlinks_own_checker(key_file: Path) -> None:
    """Two implementations agree: our sender through pymavlink's signer, pymavlink's receive check."""
    port = free_udp_port()
    sent: list[bytes] = []
    with Link(LinkConfig(f"udpout:127.0.0.1:{port}", signing_key_file=str(key_file), heartbeat_period_s=0,
                         link_id=9), tap=lambda d, _t, b: sent.append(b) if d == "tx" else None) as link:
        assert link.signing
        for _ in range(3):
            link.mav.heartbeat_send(mavlink.MAV_TYPE_ONBOARD_CONTROLLER, mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0)
    checker = mavlink.MAVLink(None)
    checker.signing.secret_key = KEY
    decoded = [checker.parse_buffer(frame)[0] for frame in sent]
    assert [m.get_type() for m in decoded] == ["HEARTBEAT"] * 3
    assert all(m.get_signed() and m._link_id == 9 for m in decoded)
    timestamps = [int.from_bytes(f[-12:-6], "little") for f in sent]
    assert timestamps == sorted(set(timestamps)) and abs(timestamps[0] - signing_timestamp(time.time())) < 10 * 100_000


@pytest.mark.sitl
def test_the_key_never_reaches_logs_reprs_or_the_flight_log(key_file: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_udp_port()
    tapped: list[bytes] = []
    config = LinkConfig(f"udp:127.0.0.1:{port}", signing_key_file=str(key_file))
    with Link(config, tap=lambda _d, _t, frame: tapped.append(frame)) as link:
        send_raw(port, heartbeat_frame(encoder(255, 190, KEY)), heartbeat_frame(encoder(255, 190, OTHER_KEY)),
                 heartbeat_frame(encoder(255, 190)), b"\x00garbage")
        assert eventually(lambda: link.stats.rx_signed == 1 and link.stats.rx_bad == 1)
        link.mav.setup_signing_send(1, 1, KEY, 0)  # a key on the wire: must not end up in a .tlog
        texts = [repr(config), repr(link), repr(load_signing_key(key_file)), str(load_signing_key(key_file))]
    bad = tmp_path / "loose.key"
    bad.write_bytes(KEY)
    bad.chmod(0o604)
    with pytest.raises(LinkError) as info:
        Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}", signing_key_file=str(bad))).open()
    texts += [str(info.value), caplog.text]
    assert "signing with key" in caplog.text  # the key id is logged, so logging did run
    needles = [KEY.hex(), KEY.hex().upper(), repr(KEY)[2:-1], KEY.decode("latin-1")]
    assert not [n for n in needles for t in texts if n in t]
    assert tapped and not any(KEY in frame for frame in tapped)
    with pytest.raises(TypeError):
        __import__("pickle").dumps(load_signing_key(key_file))


# -- a signed link and a signed SITL -----------------------------------------------------------------------


def board_counters(sitl: SitlProcess) -> str:
    sitl.stop()
    return sitl.output_tail(20000)


def telemetry_armed(link: Link, timeout_s: float = 2.0) -> bool:
    msg = link.wait_for("DEBUG_FLOAT_ARRAY", timeout_s)
    assert msg is not None, "no telemetry"
    return msg.data[5] == 1.0


@pytest.mark.sitl
def test_signed_runtime_flies_signed_sitl_and_spoofers_are_ignored(key_file: Path) -> None:
    board_port = free_udp_port()
    args = ("--signing-key-file", str(key_file), "--bind", f"127.0.0.1:{board_port}")
    with SitlProcess("cartpole", seed=1, extra_args=args) as sitl, \
            Link(LinkConfig(sitl.connect_string, signing_key_file=str(key_file))) as link:
        assert not telemetry_armed(link, 5.0)
        assert link.command_long(1, 1, ARM, (1,), timeout_s=1.0) == mavlink.MAV_RESULT_ACCEPTED
        assert eventually(lambda: telemetry_armed(link))

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            intruder.settimeout(0.5)
            for key in (None, OTHER_KEY):  # pretends to be the runtime (1/191): no key, then a wrong one
                intruder.sendto(arm_frame(encoder(1, 191, key), False), ("127.0.0.1", board_port))
            with pytest.raises(TimeoutError):  # no COMMAND_ACK, no telemetry for the intruder
                intruder.recvfrom(4096)
            assert telemetry_armed(link)  # the spoofed disarms did nothing

            runtime_port = int(sitl.connect_string.rsplit(":", 1)[1])
            fake = encoder(1, 1)  # and pretends to be the board towards the runtime
            fake_state = bytes(fake.debug_float_array_encode(0, b"CARTPOLE", 0, [9.0] * 58).pack(fake))
            intruder.sendto(fake_state, ("127.0.0.1", runtime_port))
            intruder.sendto(arm_frame(fake, False, target=(1, 191)), ("127.0.0.1", runtime_port))
            assert eventually(lambda: link.stats.rx_unsigned_rejected == 2)
        assert link.latest("DEBUG_FLOAT_ARRAY")[0].data[0] != 9.0  # type: ignore[index]
        # the link still answers the board, not the intruder's address
        assert link.command_long(1, 1, ARM, (0,), timeout_s=1.0) == mavlink.MAV_RESULT_ACCEPTED
        assert eventually(lambda: not telemetry_armed(link))
        stats = link.stats
        assert stats.rx_signed == stats.rx_frames > 10 and stats.rx_bad_signature == 0
        log_text = board_counters(sitl)
    assert "rx_unsigned_rejected=1" in log_text and "rx_bad_signature=1" in log_text


@pytest.mark.sitl
@pytest.mark.parametrize("accept_unsigned", [False, True])
def test_a_signed_link_and_an_unsigned_board(key_file: Path, accept_unsigned: bool) -> None:
    """An autopilot that cannot sign yet: its telemetry flows only with accept_unsigned; commands to
    the runtime never do unsigned."""
    with SitlProcess("cartpole", seed=2) as sitl, \
            Link(LinkConfig(sitl.connect_string, signing_key_file=str(key_file),
                            accept_unsigned=accept_unsigned)) as link:
        telemetry = link.wait_for("DEBUG_FLOAT_ARRAY", 1.0)  # streamed at 50 Hz
        assert (telemetry is not None) is accept_unsigned
        assert (link.stats.rx_unsigned_rejected == 0) is accept_unsigned
        runtime_port = int(sitl.connect_string.rsplit(":", 1)[1])
        before = link.stats.rx_unsigned_rejected
        send_raw(runtime_port, arm_frame(encoder(1, 1), False, target=(1, 191)))
        assert eventually(lambda: link.stats.rx_unsigned_rejected > before, 1.0)
        time.sleep(0.1)
        assert link.latest("COMMAND_LONG") is None
