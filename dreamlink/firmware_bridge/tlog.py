"""Reading `.tlog` telemetry logs (MAVProxy, QGroundControl, dreamlink's flight recorder) record by record.

Format (QGC dev guide "MAVLink Log File Format"; the log README under ../shared/data/sitl-logs): a plain
sequence of records, each an 8-byte big-endian count of microseconds since 1970 followed by one raw
MAVLink 1 or 2 frame. There is no index or record length, so the reader walks the frames by their own
headers (v2: 10-byte header, payload, 2-byte CRC, 13-byte signature when flagged; v1: 6-byte header) and
checks each frame's CRC with pymavlink's decoder (dialect "all", MAVLink 2: a log may hold any
autopilot's messages; the live `link` decodes only dreamlink's own ~20-message dialect, same ids).

- Unknown message ids (PX4 sends 8, 380, 410, 411 that pymavlink 2.4.50 does not define) are stepped over
  by their length and counted in `TlogReport.unknown_ids`; their CRC cannot be checked.
- Link bits: MAVProxy writes the link number into the low 2 bits of each stamp (`usec = (usec & ~3) |
  linknum` in MAVProxy/modules/mavproxy_link.py: 0 for its first master, 3 for what MAVProxy itself sends;
  forwarded client traffic keeps the plain time). `t_unix_s` has those bits cleared (<= 3 us) and
  `TlogRecord.link` keeps them; they mean a link number only in MAVProxy's logs.
- Damage: a record without a MAVLink start marker after its stamp, a CRC failure, or a stamp jumping by more
  than `max_jump_s` is *corrupt*; a record cut short by the end of the file is *truncation* (a logger
  killed mid-write). Both name the byte offset of the record. `on_error` chooses: "raise" (a `TlogError`
  whose `report` holds every record read before it), "stop" (end there, recorded in the report) or "skip"
  (corrupt records are skipped and reading resynchronises on the next record with a start marker, a
  plausible stamp and a valid CRC; all offsets are recorded).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pymavlink.dialects.v20 import all as _all_dialect

log = logging.getLogger(__name__)
mavlink: Any = _all_dialect

OnError = Literal["raise", "stop", "skip"]
STAMP_BYTES = 8
LINK_BITS = 0b11
_V1, _V2 = 0xFE, 0xFD
_SIGNED = 0x01  # MAVLINK_IFLAG_SIGNED
_MAX_UNIX_S = 7.3e9  # year 2200: a stamp beyond it is a damaged one


class TlogError(ValueError):
    """A .tlog is corrupt or truncated at `offset`; `report` holds what was readable before it."""

    def __init__(self, path: Path, offset: int, reason: str, report: TlogReport) -> None:
        self.path, self.offset, self.reason, self.report = path, offset, reason, report
        super().__init__(f"{path}: {reason} at byte {offset} (after {report.records_read} readable records); "
                         f"read_tlog(path, on_error='stop') keeps the part before it, on_error='skip' also "
                         f"resynchronises after it")


@dataclass(frozen=True)
class TlogRecord:
    """One record: its time (s since 1970, MAVProxy's link bits cleared), the decoded message, where it starts."""

    t_unix_s: float
    msg: Any
    offset: int  # byte offset of the record's time stamp in the file
    link: int = 0  # the stamp's low 2 bits (MAVProxy: link number)

    @property
    def type(self) -> str:
        return str(self.msg.get_type())

    @property
    def src(self) -> tuple[int, int]:
        return int(self.msg.get_srcSystem()), int(self.msg.get_srcComponent())


@dataclass
class TlogReport:
    """What reading a .tlog found. Iterating it yields the kept records."""

    path: Path
    n_bytes: int
    records: list[TlogRecord] = field(default_factory=list)
    records_read: int = 0  # valid records (CRC checked), kept or filtered out by `types`
    unknown_ids: dict[int, int] = field(default_factory=dict)  # message id -> count, stepped over
    bad_offsets: list[int] = field(default_factory=list)  # corrupt records (skipped, or where reading stopped)
    errors: list[str] = field(default_factory=list)  # one reason per bad offset, and the truncation
    truncated_at: int | None = None  # offset of a record cut short by the end of the file
    backwards: int = 0  # stamps earlier than the one before (allowed up to max_jump_s)

    @property
    def complete(self) -> bool:
        return not self.bad_offsets and self.truncated_at is None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for record in self.records:
            out[record.type] = out.get(record.type, 0) + 1
        return out

    def __iter__(self) -> Iterator[TlogRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


def _frame_length(data: bytes, head: int) -> int | None:
    """Length of the frame starting at `head` from its header, or None if no start marker is there."""
    magic = data[head]
    if magic == _V2:
        return 10 + data[head + 1] + 2 + (13 if data[head + 2] & _SIGNED else 0)
    if magic == _V1:
        return 6 + data[head + 1] + 2
    return None


def _msg_id(data: bytes, head: int) -> int:
    if data[head] == _V2:
        return data[head + 7] | data[head + 8] << 8 | data[head + 9] << 16
    return data[head + 5]


class _Reader:
    """One pass over the bytes of a .tlog; `step(pos)` parses the record at `pos`."""

    def __init__(self, data: bytes, max_jump_s: float, wanted_ids: frozenset[int] | None) -> None:
        self.data = data
        self.max_jump_s = max_jump_s
        self.wanted_ids = wanted_ids
        self.decoder = mavlink.MAVLink(None, srcSystem=0, srcComponent=0)
        self.prev_t: float | None = None

    @staticmethod
    def crc_ok(frame: bytes, msg_id: int) -> bool:
        """The frame's CRC (with its message's CRC_EXTRA), checked without decoding the payload."""
        end = len(frame) - 2 - (13 if frame[0] == _V2 and frame[2] & _SIGNED else 0)
        extra = mavlink.mavlink_map[msg_id].crc_extra
        return bool(mavlink.x25crc(frame[1:end] + bytes([extra])).crc == frame[end] | frame[end + 1] << 8)

    def step(self, pos: int) -> tuple[str, Any, int]:
        """("ok", record, next) | ("skipped", None, next) | ("unknown", msg_id, next) | ("truncated", reason, pos)
        | ("bad", reason, pos)."""
        data, n = self.data, len(self.data)
        head = pos + STAMP_BYTES
        if head >= n:
            return "truncated", f"record cut short: {n - pos} bytes left, not even a time stamp and a frame", pos
        header_bytes = {_V2: 10, _V1: 6}.get(data[head])
        if header_bytes is None:
            return "bad", f"no MAVLink start marker after the time stamp (byte 0x{data[head]:02x})", pos
        if head + header_bytes > n:
            return "truncated", f"record cut short: {n - head} bytes of a {header_bytes}-byte frame header", pos
        flen = _frame_length(data, head)
        assert flen is not None
        if head + flen > n:
            return "truncated", f"record cut short: the frame needs {flen} bytes, the file ends {n - head} in", pos
        stamp = int.from_bytes(data[pos:head], "big")
        t = (stamp & ~LINK_BITS) / 1e6
        if not 0.0 <= t <= _MAX_UNIX_S or (self.prev_t is not None and abs(t - self.prev_t) > self.max_jump_s):
            return "bad", f"time stamp {stamp} us jumps from the previous record's {self.prev_t!r} s", pos
        msg_id = _msg_id(data, head)
        if msg_id not in mavlink.mavlink_map:
            self.prev_t = t
            return "unknown", msg_id, head + flen
        if self.wanted_ids is not None and msg_id not in self.wanted_ids:  # checked, not decoded: 3x faster
            if not self.crc_ok(data[head:head + flen], msg_id):
                return "bad", f"frame does not decode (invalid MAVLink CRC in msgID {msg_id})", pos
            self.prev_t = t
            return "skipped", None, head + flen
        try:
            msg = self.decoder.decode(bytearray(data[head:head + flen]))
        except mavlink.MAVError as exc:
            return "bad", f"frame does not decode ({exc})", pos
        msg._timestamp = t  # what pymavlink's own log reader sets
        self.prev_t = t
        return "ok", TlogRecord(t, msg, pos, stamp & LINK_BITS), head + flen

    def resync(self, pos: int) -> int | None:
        """The next offset after `pos` where a whole valid record starts, or None."""
        data, start = self.data, pos + 1
        while True:
            hits = [i for i in (data.find(_V2, start + STAMP_BYTES), data.find(_V1, start + STAMP_BYTES)) if i >= 0]
            if not hits:
                return None
            candidate = min(hits) - STAMP_BYTES
            kind, _, _ = self.step(candidate)
            if kind in ("ok", "skipped"):  # both passed the CRC
                return candidate
            start = candidate + 1


def iter_tlog(path: str | os.PathLike[str], on_error: OnError = "raise", types: Collection[str] | None = None,
              report: TlogReport | None = None, max_jump_s: float = 3600.0) -> Iterator[TlogRecord]:
    """Yield the records of a .tlog in file order (only `types`, if given); see the module docstring for
    `on_error`. `report`, if given, is filled with counts, unknown ids and damage (not with records)."""
    if on_error not in ("raise", "stop", "skip"):
        raise ValueError(f"iter_tlog: on_error must be 'raise', 'stop' or 'skip', got {on_error!r}")
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"{p}: cannot read the .tlog ({exc.strerror or exc})") from None
    rep = report if report is not None else TlogReport(p, len(data))
    rep.path, rep.n_bytes = p, len(data)
    wanted_ids = None
    if types is not None:
        ids = {name: cls.id for cls in mavlink.mavlink_map.values() for name in (cls.msgname,)}
        unknown = sorted(set(types) - set(ids))
        if unknown:
            raise ValueError(f"iter_tlog: types {unknown} are not MAVLink messages of the 'all' dialect")
        wanted_ids = frozenset(ids[name] for name in types)
    reader = _Reader(data, max_jump_s, wanted_ids)
    pos = 0
    while pos < len(data):
        prev_t = reader.prev_t
        kind, value, nxt = reader.step(pos)
        if kind in ("ok", "skipped"):
            rep.records_read += 1
            if prev_t is not None and reader.prev_t is not None and reader.prev_t < prev_t:
                rep.backwards += 1
            if kind == "ok":
                yield value
        elif kind == "unknown":
            rep.unknown_ids[value] = rep.unknown_ids.get(value, 0) + 1
        elif kind == "truncated":
            rep.truncated_at = pos
            rep.errors.append(f"byte {pos}: {value}")
            if on_error == "raise":
                raise TlogError(p, pos, value, rep)
            log.warning("%s: %s at byte %d; keeping the %d records before it", p, value, pos, rep.records_read)
            return
        else:
            rep.bad_offsets.append(pos)
            rep.errors.append(f"byte {pos}: {value}")
            if on_error == "raise":
                raise TlogError(p, pos, value, rep)
            if on_error == "stop":
                log.warning("%s: %s at byte %d; keeping the %d records before it", p, value, pos, rep.records_read)
                return
            resumed = reader.resync(pos)
            log.warning("%s: %s at byte %d; %s", p, value, pos,
                        f"resuming at byte {resumed}" if resumed is not None else "no valid record after it")
            if resumed is None:
                return
            nxt = resumed
        pos = nxt


def read_tlog(path: str | os.PathLike[str], on_error: OnError = "raise", types: Collection[str] | None = None,
              max_jump_s: float = 3600.0) -> TlogReport:
    """Read a whole .tlog into a `TlogReport` (records in file order, only `types` if given).

    on_error="raise" raises `TlogError` naming the byte offset of the first damaged record, with the records
    read before it in `error.report`; "stop" returns them with the damage recorded; "skip" reads on past it."""
    p = Path(path)
    report = TlogReport(p, 0)
    try:
        for record in iter_tlog(p, on_error, types, report, max_jump_s):
            report.records.append(record)
    except TlogError as exc:
        exc.report = report
        raise
    if report.unknown_ids:
        log.info("%s: stepped over %d records with unknown message ids %s", p, sum(report.unknown_ids.values()),
                 sorted(report.unknown_ids))
    return report
