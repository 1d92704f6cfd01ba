"""The flight recorder: every MAVLink frame into a `.tlog`, events into JSON lines, ticks into npz.

The `.tlog` is the format MAVProxy writes and pymavlink's tools read (`mavlogdump.py`):
each record is an 8-byte big-endian count of microseconds since 1970, then one raw
MAVLink frame. Every record (and every event line) goes to the kernel in one `os.write`
on an O_APPEND descriptor, with no user-space buffer: a process killed with SIGKILL at any
moment leaves every record it wrote whole, except possibly the one being written at that
instant. (Power loss is a different matter: that needs fsync, which costs milliseconds a
tick on SD cards; the deploy layer rotates and syncs logs between flights.)
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

TLOG_NAME = "flight.tlog"
EVENTS_NAME = "events.jsonl"
TICKS_NAME = "ticks.npz"


class FlightRecorder:
    """One flight's logs in `out_dir`. `tap` is handed to the Link; `tick`/`event` to the loop."""

    def __init__(self, out_dir: Path, spec: VehicleSpec, horizon: int, max_ticks: int) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self._lock = threading.Lock()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._tlog_fd: int | None = os.open(self.out_dir / TLOG_NAME, flags, 0o644)
        self._events_fd: int | None = os.open(self.out_dir / EVENTS_NAME, flags, 0o644)
        self.frames_written = 0
        self._last_stamp_us = 0
        n, S, A = max(max_ticks, 1), spec.state_dim, spec.action_dim
        # Preallocated: the tick only fills rows. A flight longer than max_ticks keeps its
        # first max_ticks rows here; the .tlog keeps everything.
        self._t = np.full(n, np.nan)
        self._state = np.full((n, S), np.nan, dtype=np.float32)
        self._action = np.full((n, A), np.nan, dtype=np.float32)
        self._imagined = np.full((n, horizon + 1, S), np.nan, dtype=np.float32)
        self._latency = np.full(n, np.nan)
        self._lateness = np.full(n, np.nan)
        self._source = np.zeros(n, dtype=np.int8)
        self._rows = 0

    def tap(self, direction: str, unix_time_s: float, frame: bytes) -> None:
        """Link tap: one .tlog record per frame, both directions.

        The send and receive threads stamp their frames before taking the lock, so a frame may reach it stamped
        a little earlier than the one written before it; it is written at that one's time instead. A .tlog's
        records never go back in time (mavlogdump-based tools, and the log-to-data path, expect that)."""
        stamp_us = int(unix_time_s * 1e6)
        with self._lock:
            if self._tlog_fd is None:
                return
            stamp_us = max(stamp_us, self._last_stamp_us)
            self._last_stamp_us = stamp_us
            os.write(self._tlog_fd, struct.pack(">Q", stamp_us) + frame)
            self.frames_written += 1

    def event(self, kind: str, t_s: float, **fields: Any) -> None:
        record = {"t_s": round(t_s, 6), "wall": round(time.time(), 6), "event": kind, **fields}
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._lock:
            if self._events_fd is not None:
                os.write(self._events_fd, line)

    def tick(
        self,
        t_s: float,
        state: np.ndarray,
        action: np.ndarray,
        imagined: np.ndarray | None,
        latency_s: float,
        lateness_s: float,
        source: int,
    ) -> None:
        i = self._rows
        if i < len(self._t):
            self._t[i], self._latency[i], self._lateness[i], self._source[i] = t_s, latency_s, lateness_s, source
            self._state[i] = state
            self._action[i] = action
            if imagined is not None:
                self._imagined[i] = imagined
            self._rows += 1

    def close(self) -> Path:
        n = self._rows
        path = self.out_dir / TICKS_NAME
        np.savez_compressed(
            path,
            t_s=self._t[:n],
            state=self._state[:n],
            action=self._action[:n],
            imagined=self._imagined[:n],
            plan_latency_s=self._latency[:n],
            lateness_s=self._lateness[:n],
            source=self._source[:n],
            spec=np.array(json.dumps(self.spec.to_dict())),
        )
        with self._lock:
            for fd in (self._tlog_fd, self._events_fd):
                if fd is not None:
                    os.close(fd)
            self._tlog_fd = self._events_fd = None
        log.info("flight log: %s (%d frames, %d ticks)", self.out_dir, self.frames_written, n)
        return path
