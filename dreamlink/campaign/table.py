"""The results table: one CSV row per flight, appended and fsynced one at a time.

A campaign killed at any moment keeps every row it finished: each row goes to the kernel in one
`os.write` on an O_APPEND descriptor and is fsynced before the next flight is recorded. A row cut short
by a crash mid-write (no newline at the end of the file) is dropped when the table is opened again, so
that flight is flown again.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARAM_COLUMNS = ("mass_scale", "drag_scale", "motor_time_constant_s", "wind_speed_mps", "wind_gust_sigma_mps",
                 "pos_noise_m", "vel_noise_mps", "att_noise_rad", "gyro_noise_radps", "accel_noise_mps2",
                 "telemetry_latency_s")
EVAL_COLUMNS = ("index", "seed", "outcome", "reason", "tracking_rmse_m", "max_deviation_m", "min_fence_margin_m",
                "fence_breaches", "landed", "fallbacks", "overruns", "stale_ticks", "shield_fenced", "ticks",
                "wall_s", *PARAM_COLUMNS, "faults_to_runtime", "faults_to_vehicle", "node", "error")
INT_COLUMNS = ("index", "seed", "fence_breaches", "fallbacks", "overruns", "stale_ticks", "shield_fenced", "ticks")
FLOAT_COLUMNS = ("tracking_rmse_m", "max_deviation_m", "min_fence_margin_m", "wall_s", *PARAM_COLUMNS)


class ResultsTable:
    """`results.csv` of a campaign folder. `recorded()` reads it back typed; `append(row)` is durable."""

    def __init__(self, path: Path, columns: Sequence[str] = EVAL_COLUMNS) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self._repair()
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write_line(self.columns)
        else:
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != self.columns:
                raise ValueError(f"{self.path}: its columns {header} are not this campaign's {list(self.columns)}; "
                                 f"use another --out folder")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[: data.rfind(b"\n") + 1]
            log.warning("%s: dropping a row cut short by a crash (%d bytes)", self.path, len(data) - len(keep))
            with open(self.path, "r+b") as f:
                f.truncate(len(keep))
                os.fsync(f.fileno())

    def _write_line(self, values: Iterable[Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, buf.getvalue().encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, row: dict[str, Any]) -> None:
        self._write_line(_cell(row.get(c, "")) for c in self.columns)

    def recorded(self) -> dict[int, dict[str, Any]]:
        """Rows by flight index (a flight recorded twice keeps its last row)."""
        with open(self.path, newline="") as f:
            return {int(r["index"]): typed(r) for r in csv.DictReader(f)}


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return value


def typed(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row with numbers and booleans back in their types (empty: None)."""
    out: dict[str, Any] = dict(row)
    for key, value in row.items():
        if value == "":
            out[key] = None
        elif key in INT_COLUMNS:
            out[key] = int(value)
        elif key in FLOAT_COLUMNS:
            out[key] = float(value)
        elif key == "landed":
            out[key] = value == "True"
    return out
