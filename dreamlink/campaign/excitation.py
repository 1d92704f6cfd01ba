"""Exploratory velocity setpoints for a multirotor, after the reference ArduPilot/PX4 logs.

Blocks of 15-25 s alternate between *random steps* (a velocity held 0.5-2 s: horizontal speed
0.3-3 m/s in a random direction, vertical +/-1 m/s and zero a quarter of the time, one hold in
eight a full stop) and *smooth random sums of sines* (three per axis, 0.1-1 Hz log-uniform). A step
that would leave the box has the offending component flipped toward the centre, so the vehicle
stays in a known volume. Pure given its generator: `next(pos_ned_m, t_s) -> [3]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExcitationConfig:
    max_speed_xy_mps: float = 3.0
    max_speed_z_mps: float = 1.0
    box_min_ned_m: tuple[float, float, float] = (-8.0, -8.0, -9.0)
    box_max_ned_m: tuple[float, float, float] = (8.0, 8.0, -3.0)
    block_s: tuple[float, float] = (15.0, 25.0)
    hold_s: tuple[float, float] = (0.5, 2.0)
    lookahead_s: float = 1.5  # a command that would cross the box within this is flipped


class VelocityExcitation:
    def __init__(self, config: ExcitationConfig, rng: np.random.Generator) -> None:
        self.c, self.rng = config, rng
        self._block_end_s = -1.0
        self._kind = "steps"
        self._hold_end_s = -1.0
        self._v = np.zeros(3)
        self._sines: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def _new_block(self, t_s: float) -> None:
        self._kind = "sines" if self._kind == "steps" else "steps"
        self._block_end_s = t_s + self.rng.uniform(*self.c.block_s)
        self._hold_end_s = -1.0
        freqs = np.exp(self.rng.uniform(math.log(0.1), math.log(1.0), size=(3, 3)))  # [axis, sine]
        phases = self.rng.uniform(0, 2 * math.pi, size=(3, 3))
        amps = self.rng.uniform(0.2, 1.0, size=(3, 3))
        amps[:2] *= self.c.max_speed_xy_mps / 2.2
        amps[2] *= self.c.max_speed_z_mps / 2.2
        self._sines = [(freqs[i], phases[i], amps[i]) for i in range(3)]

    def _new_step(self, t_s: float) -> None:
        self._hold_end_s = t_s + self.rng.uniform(*self.c.hold_s)
        if self.rng.random() < 1 / 8:
            self._v = np.zeros(3)
            return
        speed = self.rng.uniform(0.3, self.c.max_speed_xy_mps)
        heading = self.rng.uniform(0, 2 * math.pi)
        vz = 0.0 if self.rng.random() < 0.25 else self.rng.uniform(-self.c.max_speed_z_mps, self.c.max_speed_z_mps)
        self._v = np.array([speed * math.cos(heading), speed * math.sin(heading), vz])

    def next(self, pos_ned_m: np.ndarray, t_s: float) -> np.ndarray:
        """The setpoint [vn, ve, vd] (m/s) at time `t_s` from position `pos_ned_m` [3]."""
        if t_s >= self._block_end_s:
            self._new_block(t_s)
        if self._kind == "steps":
            if t_s >= self._hold_end_s:
                self._new_step(t_s)
            v = self._v.copy()
        else:
            v = np.array([float(np.sum(a * np.sin(2 * math.pi * f * t_s + p))) for f, p, a in self._sines])
            centre = (np.asarray(self.c.box_min_ned_m) + np.asarray(self.c.box_max_ned_m)) / 2
            v += 0.05 * (centre - pos_ned_m)  # drift back toward the centre over a block
        lo, hi = np.asarray(self.c.box_min_ned_m), np.asarray(self.c.box_max_ned_m)
        ahead = pos_ned_m + v * self.c.lookahead_s
        out_hi, out_lo = ahead > hi, ahead < lo
        v[out_hi] = -np.abs(v[out_hi])
        v[out_lo] = np.abs(v[out_lo])
        if self._kind == "steps":
            self._v = v.copy()  # keep the flip for the rest of the hold
        limit = np.array([self.c.max_speed_xy_mps, self.c.max_speed_xy_mps, self.c.max_speed_z_mps])
        horizontal = math.hypot(v[0], v[1])
        if horizontal > limit[0]:
            v[:2] *= limit[0] / horizontal
        return np.clip(v, -limit, limit).astype(np.float32)
