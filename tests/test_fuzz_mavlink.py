"""Fuzzing what a device or an intruder can send: random bytes, mutated frames and hostile field values,
into the Link's parser and into the motor-board SITL over UDP. Nothing crashes, nothing hangs,
everything bad is counted, and both still work afterwards. Bounded: derandomized, a few hundred
examples each, a few seconds for the file."""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamlink.firmware_bridge.link import Link, LinkConfig, mavlink
from dreamlink.firmware_bridge.security import signing_timestamp, write_signing_key
from dreamlink.sim.launcher import SitlProcess, free_udp_port

KEY = bytes(range(7, 39))
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _encoder(key: bytes | None = None) -> Any:
    mav = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
    if key is not None:
        mav.signing.secret_key, mav.signing.link_id, mav.signing.sign_outgoing = key, 1, True
        mav.signing.timestamp = signing_timestamp(time.time())
    return mav


def valid_frames(key: bytes | None = None) -> list[bytes]:
    """One of each kind of frame the runtime and the board exchange."""
    mav = _encoder(key)
    msgs = [
        mav.heartbeat_encode(mavlink.MAV_TYPE_GCS, mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0),
        mav.command_long_encode(1, 1, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0, 1, 0, 0, 0, 0, 0, 0),
        mav.set_actuator_control_target_encode(0, 0, 1, 1, [0.5] + [0.0] * 7),
        mav.debug_float_array_encode(123, b"CARTPOLE", 0, [0.1] * 58),
        mav.command_ack_encode(400, 0, 0, 0, 1, 191),
    ]
    return [bytes(m.pack(mav)) for m in msgs]


UNSIGNED = valid_frames()
SIGNED = valid_frames(KEY)


@st.composite
def mutated(draw: st.DrawFn, pool: list[bytes]) -> bytes:
    """A valid frame with 1-4 bytes XORed, maybe cut short or glued to another frame."""
    frame = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 4))):
        frame[draw(st.integers(0, len(frame) - 1))] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        frame = frame[:draw(st.integers(1, len(frame)))]
    if draw(st.integers(0, 4)) == 0:
        frame += draw(st.sampled_from(pool))
    return bytes(frame)


def accounted(link: Link) -> int:
    s = link.stats
    return (s.rx_frames + s.rx_bad + s.rx_unknown + s.rx_unsigned_rejected + s.rx_bad_signature + s.rx_replayed
            + s.rx_source_rejected)


@pytest.fixture(scope="module")
def plain_link() -> Iterator[Link]:
    with Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}", heartbeat_period_s=0)) as link:
        yield link


@pytest.fixture(scope="module")
def signed_link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    key_file = tmp_path_factory.mktemp("fuzz") / "k.key"
    write_signing_key(key_file, KEY)
    with Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}", heartbeat_period_s=0,
                         signing_key_file=str(key_file))) as link:
        yield link


def still_hears_valid_frames(link: Link, key: bytes | None = None) -> bool:
    before = link.stats.rx_frames
    port = int(link.config.connect.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(valid_frames(key)[0], ("127.0.0.1", port))
    deadline = time.monotonic() + 2.0
    while link.stats.rx_frames == before and time.monotonic() < deadline:
        time.sleep(0.01)
    return link.stats.rx_frames == before + 1


@pytest.mark.sitl
@pytest.mark.timeout(60)
@FUZZ
@given(data=st.one_of(st.binary(min_size=1, max_size=400), mutated(UNSIGNED)))
def test_link_parser_counts_every_hostile_datagram(plain_link: Link, data: bytes) -> None:
    before, bad_before = accounted(plain_link), plain_link.stats.rx_bad
    plain_link._feed(data, ("127.0.0.1", 9))  # the receive thread's path for one datagram
    assert accounted(plain_link) > before  # nothing vanishes uncounted
    if data[:1] not in (b"\xfd", b"\xfe"):
        assert plain_link.stats.rx_bad > bad_before


@pytest.mark.sitl
@pytest.mark.timeout(60)
@FUZZ
@given(data=mutated(SIGNED))
def test_signed_link_never_delivers_a_mutated_signed_frame(signed_link: Link, data: bytes) -> None:
    frames_before, total_before = signed_link.stats.rx_frames, accounted(signed_link)
    signed_link._feed(data, ("127.0.0.1", 9))
    whole = [f for f in SIGNED if f in data]  # a glued-on intact frame passes the first time (then it is a replay)
    assert signed_link.stats.rx_frames - frames_before <= len(whole)
    assert accounted(signed_link) > total_before


@pytest.mark.sitl  # reads what the sitl-marked fuzzing above left: deselected with it
def test_links_still_work_after_fuzzing(plain_link: Link, signed_link: Link) -> None:
    assert still_hears_valid_frames(plain_link)
    assert still_hears_valid_frames(signed_link, KEY)
    assert plain_link.stats.rx_bad > 100 and signed_link.stats.rx_bad + signed_link.stats.rx_bad_signature > 100


# -- the SITL process --------------------------------------------------------------------------------------


class Board:
    def __init__(self, sitl: SitlProcess, link: Link, port: int) -> None:
        self.sitl, self.link, self.port = sitl, link, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, ("127.0.0.1", self.port))
        self.sent += 1
        if self.sent % 50 == 0:
            time.sleep(0.005)  # let the board drain: we fuzz its parser, not the kernel's buffer


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    port = free_udp_port()
    with SitlProcess("cartpole", seed=3, extra_args=("--bind", f"127.0.0.1:{port}")) as sitl, \
            Link(LinkConfig(sitl.connect_string)) as link:
        b = Board(sitl, link, port)
        yield b
        b.sock.close()


finite_or_not = st.one_of(st.sampled_from([math.inf, -math.inf, math.nan, -1.0, 0.0, 1e30, -1e30]),
                          st.floats(allow_nan=True, allow_infinity=True, width=32))


ACTED_ON = {  # param1 values the board acts on, per command; other params are anything
    mavlink.MAV_CMD_COMPONENT_ARM_DISARM: [0.0, 1.0],
    mavlink.MAV_CMD_SET_MESSAGE_INTERVAL: [350.0],  # the telemetry message id
    mavlink.MAV_CMD_USER_1: [0.0, 3.0],  # reset seed
    0: [0.0], 65535: [0.0],
}


@st.composite
def hostile_commands(draw: st.DrawFn) -> bytes:
    """Well-formed frames addressed to the board, with values a buggy or hostile sender could put in them."""
    mav = _encoder()
    command = draw(st.sampled_from(sorted(ACTED_ON)))
    params = [draw(st.one_of(st.sampled_from(ACTED_ON[command]), finite_or_not))]
    params += [draw(finite_or_not) for _ in range(6)]
    target = draw(st.sampled_from([(1, 1), (1, 1), (0, 0), (7, 9)]))
    kind = draw(st.sampled_from(["long", "long", "int", "actuator"]))
    if kind == "long":
        msg = mav.command_long_encode(*target, command, draw(st.integers(0, 255)), *params)
    elif kind == "int":
        msg = mav.command_int_encode(*target, 0, command, 0, 0, *params[:4], draw(st.integers(-2**31, 2**31 - 1)),
                                     draw(st.integers(-2**31, 2**31 - 1)), params[6])
    else:
        msg = mav.set_actuator_control_target_encode(draw(st.integers(0, 2**63)), draw(st.integers(0, 255)), *target,
                                                     [draw(finite_or_not) for _ in range(8)])
    return bytes(msg.pack(mav))


@pytest.mark.sitl
@pytest.mark.timeout(60)
@settings(FUZZ, max_examples=1000)
@given(data=st.one_of(st.binary(min_size=1, max_size=600), mutated(UNSIGNED), hostile_commands(),
                      hostile_commands()))
def test_sitl_survives_hostile_datagrams(board: Board, data: bytes) -> None:
    board.send(data)


@pytest.mark.sitl  # reads what the sitl-marked fuzzing above left: deselected with it
def test_sitl_still_answers_after_fuzzing(board: Board) -> None:
    assert board.sitl.returncode is None, board.sitl.output_tail()
    assert board.link.wait_for("HEARTBEAT", 2.5) is not None
    # whatever the fuzzer armed, reset or stopped, the board still takes commands
    for command, params in [(mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, (350, 0)),
                            (mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1,)), (mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (0,))]:
        assert board.link.command_long(1, 1, command, params, timeout_s=0.5) == mavlink.MAV_RESULT_ACCEPTED
    telemetry = board.link.wait_for("DEBUG_FLOAT_ARRAY", 1.0)
    assert telemetry is not None and telemetry.data[5] == 0.0
    board.sitl.stop()
    assert board.sitl.returncode == 0
    counters = re.search(r"board stopped: BoardCounters\((.*)\)", board.sitl.output_tail(20000))
    assert counters is not None
    fields = dict(re.findall(r"(\w+)=(\d+)", counters.group(1)))
    assert int(fields["rx_bad"]) > 100 and int(fields["rx_frames"]) > 50


def test_fuzz_corpus_sanity(tmp_path: Path) -> None:
    """The pool the mutations start from is valid: otherwise the fuzzing above proves little."""
    parser = mavlink.MAVLink(None)
    assert all(len(parser.parse_buffer(f) or []) == 1 for f in UNSIGNED)
    checker = mavlink.MAVLink(None)
    checker.signing.secret_key = KEY
    assert all(m.get_signed() for f in valid_frames(KEY) for m in checker.parse_buffer(f) or [])
