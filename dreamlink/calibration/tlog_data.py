"""Flight logs -> transitions: a `.tlog` of an ArduPilot or PX4 flight flown with velocity setpoints becomes a
`TransitionSet` (state, action, next_state) at the control period, through the same pure functions the
vehicle profiles use on board (`fill_from_local_position`, `fill_from_attitude`, `action_from_setpoint`), so a
model fitted or checked on logs sees the vectors the runtime will feed it.

How (the logs under ../shared/data/sitl-logs are the reference):

- Time axis: the record time (MAVProxy's receive clock). The autopilot stamps its own samples with
  time_boot_ms, but a client's setpoints carry the client's clock, so the only clock common to state and
  action is the record time.
- Each state sample is placed at its autopilot time (time_boot_ms) mapped onto the record clock: the
  offset record - boot time is taken from its lower envelope (the least-delayed sample of each 2 s chunk,
  interpolated between chunks), which removes transport jitter and follows the drift between the two
  clocks (1 % in the PX4 SIH log, 1.7 s over the flight). On the ArduPilot log this halves the mismatch
  between LOCAL_POSITION_NED's velocity and its position differences against raw record times.
- States are resampled onto a `period_s` grid by linear interpolation, per stream (LOCAL_POSITION_NED for
  position/velocity, ATTITUDE for attitude/rates; angles unwrapped first). Sampling the newest message
  instead would, with 50 Hz streams on a 50 Hz grid, turn some steps into 0 ms and others into 40 ms. A
  grid point needs samples on both sides no further apart than `max_gap_s`.
- The action in force at grid time t is the newest SET_POSITION_TARGET_LOCAL_NED from the client (src
  `client`, 1/191 in the logs, targeted at the autopilot) at or before t, if it is a pure velocity setpoint
  (type_mask 2503-like) no older than `max_setpoint_age_s`. Position holds and take-off ramps (2552, 2496
  in the PX4 log) are other closed loops and end an episode.
- Only the armed part of the flight in the profile's control mode (GUIDED for ArduPilot, OFFBOARD for
  PX4, from the autopilot's HEARTBEAT) counts. A client command that changes the flight (DO_SET_MODE,
  NAV_LAND, NAV_RETURN_TO_LAUNCH, NAV_TAKEOFF, ARM_DISARM) cuts the data from its record time until the
  next HEARTBEAT, which may trail the mode change by up to a second on PX4.
- Transition k joins grid points k and k+1 that both qualify, with a valid action at k; runs of them shorter
  than `min_episode_steps` are dropped, the rest are episodes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.ardupilot import COPTER_MODES
from dreamlink.firmware_bridge.link import mavlink
from dreamlink.firmware_bridge.messages import (
    action_from_setpoint,
    fill_from_attitude,
    fill_from_local_position,
    quad_layout,
)
from dreamlink.firmware_bridge.px4 import OFFBOARD, px4_mode_parts
from dreamlink.firmware_bridge.tlog import OnError, iter_tlog, read_tlog
from dreamlink.learning.transitions import TransitionSet
from dreamlink.spec import QUAD, VehicleSpec

log = logging.getLogger(__name__)

_AUTOPILOTS = {"ardupilot": mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA, "px4": mavlink.MAV_AUTOPILOT_PX4}
_IN_CONTROL_MODE: dict[str, Callable[[int], bool]] = {
    "ardupilot": lambda custom_mode: custom_mode == COPTER_MODES["GUIDED"],
    "px4": lambda custom_mode: px4_mode_parts(custom_mode)[0] == OFFBOARD,
}
_CUTTING_COMMANDS = frozenset({mavlink.MAV_CMD_DO_SET_MODE, mavlink.MAV_CMD_NAV_LAND,
                               mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, mavlink.MAV_CMD_NAV_TAKEOFF,
                               mavlink.MAV_CMD_COMPONENT_ARM_DISARM})
_ANGLES = frozenset({"roll_rad", "pitch_rad", "yaw_rad"})
_TYPES = ("LOCAL_POSITION_NED", "ATTITUDE", "HEARTBEAT", "SET_POSITION_TARGET_LOCAL_NED", "COMMAND_LONG")


class TlogDataError(ValueError):
    """A log cannot give transitions for this profile; the message names the file and what is missing."""


@dataclass(frozen=True)
class TlogDataConfig:
    autopilot: tuple[int, int] = (1, 1)  # sysid/compid of the flight controller
    client: tuple[int, int] = (1, 191)  # sysid/compid of whoever sent the velocity setpoints
    max_gap_s: float = 0.1  # a longer hole in either state stream cuts the episode
    max_setpoint_age_s: float = 0.25  # an older setpoint is no longer "the action in force"
    min_episode_steps: int = 10

    def __post_init__(self) -> None:
        for key in ("autopilot", "client"):
            ids = getattr(self, key)
            if not (isinstance(ids, tuple) and len(ids) == 2 and all(isinstance(i, int) and 0 <= i <= 255
                                                                       for i in ids)):
                raise ValueError(f"TlogDataConfig.{key}: expected (sysid, compid) in 0..255, got {ids!r}")
        for key in ("max_gap_s", "max_setpoint_age_s"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ValueError(f"TlogDataConfig.{key}: expected seconds > 0, got {getattr(self, key)!r}")
        if not (isinstance(self.min_episode_steps, int) and self.min_episode_steps >= 1):
            raise ValueError(f"TlogDataConfig.min_episode_steps: expected an int >= 1, got {self.min_episode_steps!r}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_autopilot(path: str | os.PathLike[str], autopilot: tuple[int, int] = (1, 1)) -> str:
    """"ardupilot" or "px4": the family in the flight controller's HEARTBEAT in a log; TlogDataError if none."""
    kinds = {v: k for k, v in _AUTOPILOTS.items()}
    for record in iter_tlog(path, on_error="skip", types=("HEARTBEAT",)):
        if record.src == autopilot and int(record.msg.autopilot) in kinds:
            return kinds[int(record.msg.autopilot)]
    raise TlogDataError(f"{path}: no ArduPilot or PX4 HEARTBEAT from {autopilot[0]}/{autopilot[1]}; is this a log "
                        f"of a multirotor autopilot?")


def _matches(ids: tuple[int, int], system: int, component: int) -> bool:
    return (ids[0] == 0 or system == ids[0]) and (ids[1] == 0 or component == ids[1])


def _bracketed(t_samples: np.ndarray, grid: np.ndarray, max_gap_s: float) -> np.ndarray:
    """[K] bool: grid time lies between two samples at most `max_gap_s` apart."""
    i = np.searchsorted(t_samples, grid, side="right") - 1
    ok = (i >= 0) & (i + 1 < t_samples.size)
    j = np.clip(i, 0, max(t_samples.size - 2, 0))
    return ok & (t_samples[np.minimum(j + 1, t_samples.size - 1)] - t_samples[j] <= max_gap_s)


def _sample_times(record_t: np.ndarray, boot_t: np.ndarray, chunk_s: float = 2.0) -> np.ndarray:
    """[N] autopilot sample times (boot s) on the record clock, via the lower envelope of record - boot time.

    A reboot or a long silence (boot time going back, or jumping by > 10 s) starts a new segment."""
    out = np.empty_like(record_t)
    breaks = np.flatnonzero((np.diff(boot_t) < 0) | (np.diff(boot_t) > 10.0)) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, boot_t.size], strict=True):
        b, offset = boot_t[lo:hi], record_t[lo:hi] - boot_t[lo:hi]
        chunk = np.floor((b - b[0]) / chunk_s).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, np.diff(chunk) > 0])
        lows = np.array([s + int(np.argmin(offset[s:e])) for s, e in zip(starts, np.r_[starts[1:], b.size],
                                                                            strict=True)])
        out[lo:hi] = b + np.interp(b, b[lows], offset[lows])
    return out


def _interpolate(t_samples: np.ndarray, values: np.ndarray, grid: np.ndarray, angle: bool) -> np.ndarray:
    if angle:
        out = np.interp(grid, t_samples, np.unwrap(values))
        return (out + math.pi) % (2 * math.pi) - math.pi
    return np.interp(grid, t_samples, values)


def _newest(t_events: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """[K] index of the newest event at or before each grid time (-1 if none)."""
    return np.searchsorted(t_events, grid, side="right") - 1


def tlog_to_transitions(path: str | os.PathLike[str], spec: VehicleSpec = QUAD, profile_kind: str = "ardupilot",
                        period_s: float | None = None, config: TlogDataConfig = TlogDataConfig(),
                        on_error: OnError = "raise") -> TransitionSet:
    """Transitions at `period_s` (default: the spec's control period) from one .tlog; see the module docstring.

    `profile_kind` "ardupilot" or "px4" picks the control mode and is checked against the autopilot's
    HEARTBEAT. `on_error` is passed to `read_tlog` ("stop" uses the readable part of a damaged log)."""
    p = Path(path)
    if profile_kind not in _AUTOPILOTS:
        raise ValueError(f"tlog_to_transitions: profile_kind must be one of {sorted(_AUTOPILOTS)}, got "
                         f"{profile_kind!r}")
    period = spec.control_period_s if period_s is None else float(period_s)
    if not (math.isfinite(period) and 0 < period < 10):
        raise ValueError(f"tlog_to_transitions: period_s must be seconds in (0, 10), got {period_s!r}")
    layout = quad_layout(spec)
    report = read_tlog(p, on_error=on_error, types=_TYPES)

    S = spec.state_dim
    position_t: list[float] = []
    position_boot: list[float] = []
    position_rows: list[np.ndarray] = []
    attitude_t: list[float] = []
    attitude_boot: list[float] = []
    attitude_rows: list[np.ndarray] = []
    yaws: list[float] = []
    heartbeat_t: list[float] = []
    heartbeat_ok: list[bool] = []
    autopilot_types: set[int] = set()
    setpoint_t: list[float] = []
    setpoint_actions: list[np.ndarray] = []
    cut_t: list[float] = []
    in_mode = _IN_CONTROL_MODE[profile_kind]
    nan_action = np.full(spec.action_dim, np.nan, dtype=np.float32)
    for record in report:
        msg: Any = record.msg
        system, component = record.src
        kind = record.type
        if _matches(config.autopilot, system, component):
            if kind == "LOCAL_POSITION_NED":
                row = np.full(S, np.nan)
                fill_from_local_position(row, msg, layout)
                position_t.append(record.t_unix_s)
                position_boot.append(msg.time_boot_ms / 1000.0)
                position_rows.append(row)
            elif kind == "ATTITUDE":
                row = np.full(S, np.nan)
                fill_from_attitude(row, msg, layout)
                attitude_t.append(record.t_unix_s)
                attitude_boot.append(msg.time_boot_ms / 1000.0)
                attitude_rows.append(row)
                yaws.append(float(msg.yaw))
            elif kind == "HEARTBEAT" and msg.autopilot != mavlink.MAV_AUTOPILOT_INVALID:
                autopilot_types.add(int(msg.autopilot))
                armed = bool(msg.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED)
                heartbeat_t.append(record.t_unix_s)
                heartbeat_ok.append(armed and in_mode(int(msg.custom_mode)))
        elif _matches(config.client, system, component):
            if kind == "SET_POSITION_TARGET_LOCAL_NED" and _matches(config.autopilot, msg.target_system or 0,
                                                                    msg.target_component or 0):
                yaw = yaws[-1] if yaws else None
                action = action_from_setpoint(msg, spec, yaw)
                setpoint_t.append(record.t_unix_s)
                setpoint_actions.append(nan_action if action is None else action)
            elif kind == "COMMAND_LONG" and msg.command in _CUTTING_COMMANDS:
                cut_t.append(record.t_unix_s)

    where = f"{p} (autopilot {config.autopilot[0]}/{config.autopilot[1]})"
    if not heartbeat_t:
        raise TlogDataError(f"{where}: no autopilot HEARTBEAT; is the flight controller another sysid/compid? "
                            f"(TlogDataConfig.autopilot)")
    wanted = _AUTOPILOTS[profile_kind]
    if wanted not in autopilot_types:
        names = sorted(mavlink.enums["MAV_AUTOPILOT"][a].name for a in autopilot_types
                       if a in mavlink.enums["MAV_AUTOPILOT"])
        raise TlogDataError(f"{where}: the HEARTBEAT says {names}, not {profile_kind}; pass the matching "
                            f"profile_kind")
    for name, times in (("LOCAL_POSITION_NED", position_t), ("ATTITUDE", attitude_t)):
        if len(times) < 2:
            raise TlogDataError(f"{where}: {len(times)} {name} records; the state needs that stream")
    if not setpoint_t:
        raise TlogDataError(f"{where}: no SET_POSITION_TARGET_LOCAL_NED from client {config.client[0]}/"
                            f"{config.client[1]}; who sent the setpoints? (TlogDataConfig.client)")

    t_pos = _sample_times(np.asarray(position_t), np.asarray(position_boot))
    t_att = _sample_times(np.asarray(attitude_t), np.asarray(attitude_boot))
    pos_rows, att_rows = np.stack(position_rows), np.stack(attitude_rows)
    if np.any(np.diff(t_pos) < 0) or np.any(np.diff(t_att) < 0):  # a reboot mid-log: keep file order
        t_pos, t_att = np.maximum.accumulate(t_pos), np.maximum.accumulate(t_att)
    t0, t1 = max(t_pos[0], t_att[0]), min(t_pos[-1], t_att[-1])
    grid = t0 + period * np.arange(math.floor((t1 - t0) / period) + 1)
    states = np.full((grid.size, S), np.nan)
    for i, _ in layout.position_index:
        states[:, i] = _interpolate(t_pos, pos_rows[:, i], grid, spec.state_names[i] in _ANGLES)
    for i, _ in layout.attitude_index:
        states[:, i] = _interpolate(t_att, att_rows[:, i], grid, spec.state_names[i] in _ANGLES)
    point_ok = _bracketed(t_pos, grid, config.max_gap_s) & _bracketed(t_att, grid, config.max_gap_s)

    t_hb = np.asarray(heartbeat_t)
    hb = _newest(t_hb, grid)
    point_ok &= (hb >= 0) & np.asarray(heartbeat_ok)[np.maximum(hb, 0)]
    for c in cut_t:
        after = t_hb[t_hb > c]
        point_ok &= ~((grid >= c) & (grid < (after[0] if after.size else math.inf)))

    t_sp = np.asarray(setpoint_t)
    sp = _newest(t_sp, grid)
    actions = np.stack(setpoint_actions)[np.maximum(sp, 0)]
    action_ok = (sp >= 0) & (grid - t_sp[np.maximum(sp, 0)] <= config.max_setpoint_age_s)
    action_ok &= np.all(np.isfinite(actions), axis=1)

    step_ok = point_ok[:-1] & point_ok[1:] & action_ok[:-1]
    rows: list[np.ndarray] = []
    episode_ids: list[np.ndarray] = []
    starts_unix_s: list[float] = []
    edges = np.flatnonzero(np.diff(np.r_[0, step_ok.astype(np.int8), 0]))
    for lo, hi in zip(edges[::2], edges[1::2], strict=True):
        if hi - lo >= config.min_episode_steps:
            rows.append(np.arange(lo, hi))
            episode_ids.append(np.full(hi - lo, len(starts_unix_s), dtype=np.int64))
            starts_unix_s.append(float(grid[lo]))
    index = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    action_rows = actions[index]
    outside = int(np.sum(np.any((action_rows < spec.action_low) | (action_rows > spec.action_high), axis=1)))
    if outside:
        log.warning("%s: %d transitions have actions outside the spec's limits (kept as flown)", p, outside)
    meta = {"source": str(p), "format": "tlog", "sha256": _sha256(p), "profile_kind": profile_kind, "period_s": period,
            "autopilot": list(config.autopilot), "client": list(config.client), "records": report.records_read,
            "unknown_ids": {str(k): v for k, v in sorted(report.unknown_ids.items())},
            "bad_offsets": report.bad_offsets, "truncated_at": report.truncated_at,
            "episode_start_unix_s": starts_unix_s, "actions_outside_limits": outside}
    transitions = TransitionSet(spec, states[index], action_rows, states[index + 1],
                                np.concatenate(episode_ids) if episode_ids else np.zeros(0, dtype=np.int64), meta)
    log.info("%s: %d transitions in %d episodes at %.0f ms (%s)", p, len(transitions), len(starts_unix_s),
             period * 1e3, profile_kind)
    return transitions
