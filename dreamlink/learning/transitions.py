"""Data sets of transitions (state, action, next_state), the food of world-model training.

numpy only: the data collector runs on machines without torch (SITL campaigns, the
vehicle itself) and writes these files; training reads them. One file is one `.npz`
holding the four arrays plus the `VehicleSpec` and free-form metadata as JSON, so a
data set stays self-describing and loads without pickle.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.spec import SpecError, VehicleSpec

log = logging.getLogger(__name__)

FORMAT = "dreamlink-transitions"
FORMAT_VERSION = 1
_ARRAYS = ("state", "action", "next_state", "episode")


class TransitionError(ValueError):
    """A transitions file or array set is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class TransitionSet:
    """N transitions of one vehicle. Row i: `state[i]` + `action[i]` -> `next_state[i]`, one control period later.

    state [N, S], action [N, A], next_state [N, S] float32 in the spec's units; episode [N] int64.
    Consecutive rows of one episode share an id and are in time order, so `next_state[i] == state[i + 1]`
    inside an episode (where it is not, e.g. a dropped telemetry sample, `episodes()` cuts the episode).
    Arrays are coerced to float32/int64 on construction and checked against the spec.
    """

    spec: VehicleSpec
    state: np.ndarray
    action: np.ndarray
    next_state: np.ndarray
    episode: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_arrays(self.spec, self.state, self.action, self.next_state, self.episode, where="TransitionSet")
        object.__setattr__(self, "state", np.ascontiguousarray(self.state, dtype=np.float32))
        object.__setattr__(self, "action", np.ascontiguousarray(self.action, dtype=np.float32))
        object.__setattr__(self, "next_state", np.ascontiguousarray(self.next_state, dtype=np.float32))
        object.__setattr__(self, "episode", np.ascontiguousarray(self.episode, dtype=np.int64))
        object.__setattr__(self, "meta", dict(self.meta))

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(np.unique(self.episode).size)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an `.npz` (suffix added if missing), atomically: a reader never sees half a file."""
        p = Path(path)
        if p.suffix != ".npz":
            p = p.with_name(p.name + ".npz")
        try:
            meta_json = json.dumps(self.meta, default=json_default)
        except (TypeError, ValueError) as e:
            raise TransitionError(f"{p}: meta is not JSON-serialisable ({e})") from None
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                state=self.state,
                action=self.action,
                next_state=self.next_state,
                episode=self.episode,
                spec=np.array(json.dumps(self.spec.to_dict())),
                meta=np.array(meta_json),
                format=np.array(FORMAT),
                format_version=np.array(FORMAT_VERSION),
            )
        os.replace(tmp, p)
        log.info("wrote %d transitions (%d episodes) to %s", len(self), self.n_episodes, p)
        return p

    @staticmethod
    def load(path: str | os.PathLike[str]) -> TransitionSet:
        """Read a file written by `save`. Raises `TransitionError` naming the file and the bad field."""
        p = Path(path)
        if not p.is_file():
            raise TransitionError(f"{p}: no such transitions file (expected an .npz written by TransitionSet.save)")
        try:
            with np.load(p, allow_pickle=False) as z:
                fields = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise TransitionError(f"{p}: not a readable .npz ({e})") from None
        for key in (*_ARRAYS, "spec"):
            if key not in fields:
                raise TransitionError(f"{p}: field {key!r} missing (has {sorted(fields)}); expected {_ARRAYS} + 'spec'")
        version = int(fields["format_version"]) if "format_version" in fields else FORMAT_VERSION
        if version != FORMAT_VERSION:
            raise TransitionError(f"{p}: field 'format_version' is {version}, this dreamlink reads {FORMAT_VERSION}")
        try:
            spec = VehicleSpec.from_dict(json.loads(str(fields["spec"])), where="spec")
        except (json.JSONDecodeError, SpecError) as e:
            raise TransitionError(f"{p}: field 'spec' is not a valid vehicle spec ({e})") from None
        meta: Any = {}
        if "meta" in fields:
            try:
                meta = json.loads(str(fields["meta"]))
            except json.JSONDecodeError as e:
                raise TransitionError(f"{p}: field 'meta' is not valid JSON ({e})") from None
            if not isinstance(meta, dict):
                raise TransitionError(f"{p}: field 'meta' must be a JSON object, got {type(meta).__name__}")
        state, action, next_state, episode = (fields[k] for k in _ARRAYS)
        _check_arrays(spec, state, action, next_state, episode, where=str(p))
        return TransitionSet(spec, state, action, next_state, episode, meta=meta)

    def subset(self, mask_or_index: np.ndarray) -> TransitionSet:
        """Rows selected by a boolean mask or an index array (order kept as given)."""
        i = np.asarray(mask_or_index)
        return TransitionSet(
            self.spec, self.state[i], self.action[i], self.next_state[i], self.episode[i], meta=self.meta
        )

    def chunked(self, max_steps: int) -> TransitionSet:
        """The same rows with every episode longer than `max_steps` cut into consecutive pieces of at most that
        many (a 3-minute flight log is one episode; a holdout needs several)."""
        if not (isinstance(max_steps, int) and max_steps >= 1):
            raise ValueError(f"chunked: max_steps must be an int >= 1, got {max_steps!r}")
        new = np.empty_like(self.episode)
        next_id = 0
        for ep in np.unique(self.episode):
            rows = np.flatnonzero(self.episode == ep)
            new[rows] = next_id + np.arange(rows.size) // max_steps
            next_id += (rows.size + max_steps - 1) // max_steps
        return TransitionSet(self.spec, self.state, self.action, self.next_state, new, self.meta)

    def with_integrated_positions(self, pairs: Iterable[tuple[str, str]]) -> TransitionSet:
        """The same rows with each position component replaced by the integral of its velocity (trapezoid rule),
        from each continuous run's first sample: `pairs` are (position name, velocity name).

        Why: an autopilot's position estimate is pulled by GPS fixes and wanders against its own velocity (PX4 SIH
        on the real firmware: 0.18-0.29 m over 0.9 s, a different bias in every flight; ArduPilot SITL 0.04 m), a
        drift no state or action predicts. A model fitted to it learns the one flight's drift; fitted to the
        integral it learns the kinematics, and replanning against fresh telemetry corrects the drift."""
        idx = [(self.spec.state_index(p), self.spec.state_index(v)) for p, v in pairs]
        dt = self.spec.control_period_s
        state, next_state = self.state.copy(), self.next_state.copy()
        starts = np.r_[True, (self.episode[1:] != self.episode[:-1])
                       | ~np.all(np.isclose(self.next_state[:-1], self.state[1:], rtol=1e-5, atol=1e-6), axis=1)]
        for pi, vi in idx:
            step = 0.5 * dt * (self.state[:, vi] + self.next_state[:, vi])  # [N] displacement over each transition
            run = np.cumsum(starts) - 1  # which continuous run each row is in
            first = np.flatnonzero(starts)
            cum = np.cumsum(step)
            before = cum - step  # displacement from the run's start up to this row (exclusive)
            before -= (cum - step)[first][run]
            state[:, pi] = self.state[first, pi][run] + before
            next_state[:, pi] = state[:, pi] + step
        return TransitionSet(self.spec, state.astype(self.state.dtype), self.action, next_state.astype(
            self.next_state.dtype), self.episode, {**self.meta, "positions": "integrated from velocity"})

    def split_by_episode(self, holdout_fraction: float, seed: int) -> tuple[TransitionSet, TransitionSet]:
        """(train, holdout), whole episodes on each side so the holdout is not a near-copy of training rows.

        At least one episode goes to each side when `holdout_fraction > 0`; 0 gives an empty holdout.
        """
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction: expected a fraction in [0, 1), got {holdout_fraction}")
        ids = np.unique(self.episode)
        if holdout_fraction == 0.0:
            return self, self.subset(np.zeros(len(self), dtype=bool))
        if ids.size < 2:
            raise TransitionError(
                f"split_by_episode: need at least 2 episodes for a holdout, have {ids.size}; "
                "collect more episodes or use holdout_fraction=0"
            )
        n_hold = int(np.clip(round(holdout_fraction * ids.size), 1, ids.size - 1))
        held = np.random.default_rng(seed).permutation(ids)[:n_hold]
        in_hold = np.isin(self.episode, held)
        return self.subset(~in_hold), self.subset(in_hold)

    def episodes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per episode, in order of first appearance: states [T+1, S] (the last is the final next_state) and
        actions [T, A], for k-step rollouts. An episode whose `next_state[t] != state[t+1]` is cut there."""
        out: list[tuple[np.ndarray, np.ndarray]] = []
        _, first = np.unique(self.episode, return_index=True)
        for ep in self.episode[np.sort(first)]:
            rows = np.flatnonzero(self.episode == ep)
            s, a, ns = self.state[rows], self.action[rows], self.next_state[rows]
            breaks = np.flatnonzero(~np.all(np.isclose(ns[:-1], s[1:], rtol=1e-5, atol=1e-6), axis=1)) + 1
            if breaks.size:
                log.debug("episode %d: %d discontinuities, cut into %d segments", ep, breaks.size, breaks.size + 1)
            for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
                out.append((np.concatenate([s[lo:hi], ns[hi - 1 : hi]]), a[lo:hi]))
        return out

    @staticmethod
    def concat(sets: Iterable[TransitionSet]) -> TransitionSet:
        """Join data sets of one spec. Episode ids are renumbered so episodes from different sets stay apart."""
        parts = list(sets)
        if not parts:
            raise TransitionError("concat: no transition sets given")
        spec = parts[0].spec
        for i, t in enumerate(parts[1:], start=1):
            if t.spec != spec:
                raise TransitionError(f"concat: set {i} is for spec {t.spec.name!r}, set 0 for {spec.name!r}")
        episodes, offset = [], 0
        for t in parts:
            _, renumbered = np.unique(t.episode, return_inverse=True)
            episodes.append(renumbered.reshape(-1).astype(np.int64) + offset)
            offset += int(renumbered.max()) + 1 if len(t) else 0
        meta = dict(parts[0].meta) if len(parts) == 1 else {"sources": [dict(t.meta) for t in parts]}
        return TransitionSet(
            spec,
            np.concatenate([t.state for t in parts]),
            np.concatenate([t.action for t in parts]),
            np.concatenate([t.next_state for t in parts]),
            np.concatenate(episodes),
            meta=meta,
        )


def provenance(data: TransitionSet) -> dict[str, Any]:
    """What a model trained on `data` learned from, for its bundle: minutes of data, the flight logs (path and
    sha256) and the vehicle they show (the first `vehicle` found in the sets' metadata)."""
    metas = [data.meta, *[m for m in data.meta.get("sources", []) if isinstance(m, Mapping)]]
    logs = [{"source": m.get("source"), "sha256": m["sha256"]} for m in metas if m.get("sha256")]
    vehicle = next((m["vehicle"] for m in metas if m.get("vehicle")), None)
    out: dict[str, Any] = {"data_minutes": round(len(data) * data.spec.control_period_s / 60.0, 3),
                           "transitions": len(data), "logs": logs}
    if vehicle:
        out["vehicle"] = vehicle
    return out


def _check_arrays(
    spec: VehicleSpec, state: Any, action: Any, next_state: Any, episode: Any, where: str
) -> None:
    S, A = spec.state_dim, spec.action_dim
    arrays = {"state": state, "action": action, "next_state": next_state, "episode": episode}
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray):
            raise TransitionError(f"{where}: field {name!r} must be a numpy array, got {type(arr).__name__}")
    n = state.shape[0] if state.ndim >= 1 else -1
    expected = {"state": (n, S), "action": (n, A), "next_state": (n, S), "episode": (n,)}
    for name, arr in arrays.items():
        if arr.shape != expected[name]:
            want = "[N]" if name == "episode" else f"[N,{expected[name][1]}]"
            raise TransitionError(
                f"{where}: field {name!r} has shape {list(arr.shape)}, expected {want} "
                f"(N={n} rows; spec {spec.name!r} has S={S}, A={A})"
            )
    for name in ("state", "action", "next_state"):
        arr = arrays[name]
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise TransitionError(f"{where}: field {name!r} has dtype {arr.dtype}, expected float32")
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise TransitionError(f"{where}: field {name!r} has a non-finite value at row {bad[0]}")
    if not np.issubdtype(episode.dtype, np.integer):
        raise TransitionError(f"{where}: field 'episode' has dtype {episode.dtype}, expected int64 episode ids")


def json_default(o: Any) -> Any:
    """`json.dumps(..., default=)` for what training and export write: numpy values and paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")
