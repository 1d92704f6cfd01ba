"""Frame admission: which received MAVLink frames a receiver acts on, which it drops, and where each drop counts.

One rule for both ends of the wire: the onboard `Link` and the SITL vehicles (`dreamlink.sim`) take what
arrives through a `FrameAdmission`, so a frame the runtime refuses, the simulated vehicle refuses the same
way, under the same counter. A received chunk (a UDP datagram, or what a byte stream had) goes through:

- Parsing (pymavlink's, robust): garbage, CRC failures, pymavlink's own exceptions and, on a datagram
  transport, a frame cut short at the datagram's end (a datagram holds whole frames) are malformed:
  dropped and counted in `rx_bad`, and the parser starts afresh after an error. On a byte stream
  pymavlink resynchronises on the next start marker.
- Undecoded ids (the receiver's dialect cannot read them; an autopilot streams dozens of types) are
  never acted on and count in `rx_unknown`. A receiver that passes them on (`pass_undecoded`: the Link
  logs them to its .tlog byte for byte) first checks them like any frame: their CRC when pymavlink knows
  the id (`dialect.known_ids`; a bad one is `rx_bad`), then signing and sources below. One that neither
  acts on them nor logs them (a SITL) counts them and checks nothing more.
- Signing (with an `Authenticator`): a signed frame passes only if its signature is good
  (`rx_bad_signature`) and newer than its stream's last one (`rx_replayed`); an unsigned one only if
  `Admission.unsigned_ok` (`rx_unsigned_rejected`). Decoded signed frames that pass count in `rx_signed`.
- Sources: with `allowed_sources`, command messages from any other (system, component) are dropped and
  counted in `rx_source_rejected`; telemetry from anyone still flows.
- Decoded frames that pass count in `rx_frames` and `rx_by_type`.

What must be signed when signing is on (`Admission.unsigned_ok`):
- every command message (COMMAND_LONG, COMMAND_INT, every SET_*, parameter writes, mission upload,
  manual control, RC override, SETUP_SIGNING: `command_message_ids`), always;
- everything else too, unless the receiver accepts unsigned telemetry (`accept_unsigned`), which is
  for a flight controller that cannot sign yet: its telemetry flows, its commands still do not;
- RADIO_STATUS may come unsigned: telemetry radios inject it and hold no key (as the spec says).
A frame whose signature is *wrong* is never accepted, whatever the policy.

Every drop is logged through the receiver's `RateLimitedLog`: garbage arrives at line rate, the
counters keep the totals. Standard library only (the receiver passes its pymavlink dialect module in),
like `security`, so the SITL processes use it too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from dreamlink.firmware_bridge.dialect.known_ids import KNOWN_IDS
from dreamlink.firmware_bridge.security import Authenticator, Verdict

# Messages that ask the receiver to act (besides every SET_*): they are "commands" for signing and
# for `allowed_sources`. Names, not ids, so the set follows whatever dialect the caller parses with.
COMMAND_MESSAGE_NAMES: frozenset[str] = frozenset({
    "COMMAND_LONG", "COMMAND_INT", "PARAM_SET", "PARAM_EXT_SET", "MANUAL_CONTROL", "RC_CHANNELS_OVERRIDE",
    "MISSION_ITEM", "MISSION_ITEM_INT", "MISSION_COUNT", "MISSION_CLEAR_ALL", "MISSION_SET_CURRENT",
    "SETUP_SIGNING",
})
RADIO_STATUS_ID = 109


def command_message_ids(names_by_id: Mapping[int, str]) -> frozenset[int]:
    """The ids of command messages in a dialect ({id: NAME}): COMMAND_MESSAGE_NAMES and every SET_*."""
    return frozenset(i for i, name in names_by_id.items() if name in COMMAND_MESSAGE_NAMES or name.startswith("SET_"))


@dataclass(frozen=True)
class Admission:
    """Which received frames a link delivers (see the module docstring for the signing policy).

    `allowed_sources`: (system id, component id) pairs whose command messages are accepted; () = any.
    """

    command_ids: frozenset[int]
    accept_unsigned: bool = False
    allowed_sources: tuple[tuple[int, int], ...] = ()

    def unsigned_ok(self, msg_id: int) -> bool:
        """With signing on, may an unsigned frame of `msg_id` be delivered?"""
        if msg_id == RADIO_STATUS_ID:
            return True
        return self.accept_unsigned and msg_id not in self.command_ids

    def source_ok(self, msg_id: int, system: int, component: int) -> bool:
        if not self.allowed_sources or msg_id not in self.command_ids:
            return True
        return (system, component) in self.allowed_sources


@dataclass
class AdmissionCounts:
    """What the admission rule counts, by name: the one set of receive counters the Link and both SITLs carry
    (each adds its own fields; a receiver with `allowed_sources` also needs `rx_source_rejected`)."""

    rx_frames: int = 0  # admitted and decoded
    rx_bad: int = 0  # malformed: garbage, bad CRC, cut short, parser errors
    rx_unknown: int = 0  # ids the dialect does not decode
    rx_signed: int = 0  # signing on: frames whose signature was good
    rx_unsigned_rejected: int = 0  # signing on: unsigned frames the policy does not allow, dropped
    rx_bad_signature: int = 0  # signing on: signature does not match our key, dropped
    rx_replayed: int = 0  # signing on: good signature but not newer than its stream, dropped
    rx_by_type: dict[str, int] = field(default_factory=dict)


class RateLimitedLog:
    """Logs at most one warning per `period_s` for each `key`; the caller's message carries the running totals."""

    def __init__(self, logger: logging.Logger, period_s: float = 5.0) -> None:
        self._logger, self._period_s = logger, period_s
        self._last: dict[str, float] = {}

    def warning(self, msg: str, *args: object, key: str = "") -> None:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self._period_s:
            self._last[key] = now
            self._logger.warning(msg, *args)


@dataclass(frozen=True)
class Admitted:
    """A frame that passed: `msg` to act on, or None for an undecoded frame (to log as it came, never to act on)."""

    frame: bytes  # the whole frame, header to signature, as received
    msg: Any
    verdict: Verdict
    checked: bool  # decoded, or its CRC verified: its sender provably speaks MAVLink


def new_parser(dialect: Any) -> Any:
    """A parser of `dialect` (a pymavlink-generated module) that turns garbage into BAD_DATA messages instead of
    raising."""
    parser = dialect.MAVLink(None, srcSystem=0, srcComponent=0)
    parser.robust_parsing = True
    return parser


class FrameAdmission:
    """One receiver's admission: its parser, its signature checks, the policy, where it counts and warns.

    Not thread-safe: one receiving thread owns it. `lock` (the receiver's) is held while counting, for
    whoever reads the counters from another thread. `where` (" on udp:...") goes into the warnings."""

    def __init__(self, dialect: Any, policy: Admission, counters: AdmissionCounts, warnings: RateLimitedLog, *,
                 authenticator: Authenticator | None = None, datagrams: bool = True, pass_undecoded: bool = False,
                 lock: AbstractContextManager[Any] | None = None, where: str = "") -> None:
        self._dialect = dialect
        self._policy = policy
        self._counters = counters
        self._warnings = warnings
        self._auth = authenticator
        self._datagrams = datagrams
        self._pass_undecoded = pass_undecoded
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        self._where = where
        self._parser = new_parser(dialect)

    def admit(self, chunk: bytes) -> list[Admitted]:
        """The frames of `chunk` that pass, in order; every other one is dropped, counted and logged."""
        bad, reason = 0, ""
        try:
            messages = self._parser.parse_buffer(chunk) or []
            if self._datagrams and self._parser.buf_len() > 0:
                bad, reason = 1, "frame cut short at the datagram's end"
                self._parser = new_parser(self._dialect)
        except Exception as exc:  # pymavlink raises more than MAVError on hostile bytes
            messages, bad, reason = [], 1, f"parser error: {exc}"
            self._parser = new_parser(self._dialect)
        admitted = []
        for msg in messages:
            msg_id = msg.get_msgId()
            if msg_id == self._dialect.MAVLINK_MSG_ID_BAD_DATA:
                bad, reason = bad + 1, str(getattr(msg, "reason", "bad data"))
                continue
            undecoded = msg_id == self._dialect.MAVLINK_MSG_ID_UNKNOWN
            if undecoded and not self._pass_undecoded:  # nothing acts on it, nothing logs it
                with self._lock:
                    self._counters.rx_unknown += 1
                continue
            frame = bytes(msg.get_msgbuf())
            header = _frame_header(frame)
            crc = _crc_ok(frame, header, self._dialect) if undecoded else True  # pymavlink checked a decoded one's
            if crc is False:
                bad, reason = bad + 1, f"invalid MAVLink CRC in msgID {header[0]}"
                continue
            verdict = self._judge(frame, header, _undecoded_name(header[0]) if undecoded else msg.get_type())
            if verdict is None:
                continue
            with self._lock:
                if undecoded:
                    self._counters.rx_unknown += 1
                else:
                    msg_type = msg.get_type()
                    self._counters.rx_frames += 1
                    self._counters.rx_by_type[msg_type] = self._counters.rx_by_type.get(msg_type, 0) + 1
                    if verdict is Verdict.SIGNED:
                        self._counters.rx_signed += 1
            admitted.append(Admitted(frame, None if undecoded else msg, verdict, crc is True))
        if bad:
            self.drop_malformed(bad, reason)
        return admitted

    def drop_malformed(self, count: int, reason: str) -> None:
        """Count `count` malformed frames, `reason` the latest; also for what a receiver finds malformed past
        parsing (a well-formed frame with absurd values)."""
        with self._lock:
            self._counters.rx_bad += count
            total = self._counters.rx_bad
        self._warnings.warning("dropped malformed MAVLink data%s (%d so far; latest: %s)", self._where, total, reason)

    def _judge(self, frame: bytes, header: tuple[int, int, int], what: str) -> Verdict | None:
        """The frame's verdict if it passes signing and sources, else None (counted, rate-limited warning).
        `header` is (message id, system id, component id); `what` names the frame in the warning."""
        msg_id, system, component = header
        verdict = Verdict.UNSIGNED
        reject: tuple[str, str] | None = None
        if self._auth is not None:
            verdict = self._auth.check(frame)
            if verdict is Verdict.UNSIGNED and not self._policy.unsigned_ok(msg_id):
                reject = ("rx_unsigned_rejected", "unsigned")
            elif verdict is Verdict.BAD_SIGNATURE:
                reject = ("rx_bad_signature", "signature does not match our key")
            elif verdict is Verdict.REPLAYED:
                reject = ("rx_replayed", "replayed (timestamp not newer than its stream)")
        if reject is None and not self._policy.source_ok(msg_id, system, component):
            reject = ("rx_source_rejected", "a command from a source not in allowed_sources")
        if reject is not None:
            counter, why = reject
            with self._lock:
                total = getattr(self._counters, counter) + 1
                setattr(self._counters, counter, total)
            self._warnings.warning(f"dropped %s from %d/%d%s: {why} (%s: %d so far)", what, system, component,
                                   self._where, counter, total, key=counter)
            return None
        return verdict


def _frame_header(frame: bytes) -> tuple[int, int, int]:
    """(message id, system id, component id) from a whole MAVLink 2 or 1 frame's header."""
    if frame[0] == 0xFD:
        return int.from_bytes(frame[7:10], "little"), frame[5], frame[6]
    return frame[5], frame[3], frame[4]


def _undecoded_name(msg_id: int) -> str:
    known = KNOWN_IDS.get(msg_id)
    return f"{known[0]} (not decoded here)" if known is not None else f"message id {msg_id}"


def _crc_ok(frame: bytes, header: tuple[int, int, int], dialect: Any) -> bool | None:
    """The CRC of a whole frame pymavlink has delimited, checked with its id's CRC_EXTRA; None if no
    dialect pymavlink ships knows the id (then nothing can check it)."""
    known = KNOWN_IDS.get(header[0])
    if known is None:
        return None
    end = (10 if frame[0] == 0xFD else 6) + frame[1]  # header + payload; the CRC follows
    crc = dialect.x25crc(frame[1:end] + bytes([known[1]])).crc
    return bool(crc == int.from_bytes(frame[end:end + 2], "little"))
