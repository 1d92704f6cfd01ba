"""Reference trajectories a tracking task follows, sampled over the planner's horizon."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dreamlink.spec import VehicleSpec


@dataclass(frozen=True)
class Figure8:
    """A horizontal figure-eight (Lissajous 1:2) around `center_ned_m`, flown at a mean `speed_mps`.

    n(t) = w sin(θ), e(t) = (w/2) sin(2θ), d = center, with θ(t) = ω (t - τ (1 - exp(-t/τ))): the
    path speed ramps up from rest with time constant τ = `ramp_s` (a vehicle hovering at the centre
    cannot jump to the path's 2.9 m/s; without the ramp it starts a second behind and never catches
    up). ω is set so the mean ground speed over a lap at full speed equals `speed_mps` (the peak is
    about 1.45x that, at the crossing).
    """

    center_ned_m: tuple[float, float, float] = (0.0, 0.0, -5.0)
    half_width_m: float = 3.0
    speed_mps: float = 2.0
    ramp_s: float = 1.5

    def __post_init__(self) -> None:
        if not (self.half_width_m > 0 and self.speed_mps > 0 and self.ramp_s >= 0):
            raise ValueError(f"Figure8: half_width_m and speed_mps must be > 0 and ramp_s >= 0, got {self}")

    @property
    def omega_radps(self) -> float:
        theta = np.linspace(0.0, 2 * math.pi, 4001)
        w = self.half_width_m
        dn, de = w * np.cos(theta), w * np.cos(2 * theta)  # d/dtheta of (w sin, w/2 sin 2theta)
        lap_length_m = float(np.trapezoid(np.hypot(dn, de), theta))
        return 2 * math.pi * self.speed_mps / lap_length_m

    @property
    def lap_s(self) -> float:
        return 2 * math.pi / self.omega_radps

    def position_velocity(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """t_s [T] -> positions [T,3] (m, NED), velocities [T,3] (m/s)."""
        om, w, tau = self.omega_radps, self.half_width_m, self.ramp_s
        t = np.maximum(np.asarray(t_s, dtype=np.float64), 0.0)
        if tau > 0:
            ph = om * (t - tau * (1.0 - np.exp(-t / tau)))
            rate = om * (1.0 - np.exp(-t / tau))  # dθ/dt
        else:
            ph, rate = om * t, np.full_like(t, om)
        c = np.asarray(self.center_ned_m)
        pos = np.stack([c[0] + w * np.sin(ph), c[1] + 0.5 * w * np.sin(2 * ph), np.full_like(ph, c[2])], axis=-1)
        vel = np.stack([w * rate * np.cos(ph), w * rate * np.cos(2 * ph), np.zeros_like(ph)], axis=-1)
        return pos, vel


def reference_window(
    path: Figure8, spec: VehicleSpec, t_s: float, horizon: int, period_s: float, start_s: float = 0.0
) -> np.ndarray:
    """The reference state for each of the next `horizon` steps after `t_s`: [H,S] float32.

    Position and velocity from the path (path time = t_s - start_s); every other component 0.
    """
    t = (t_s - start_s) + period_s * np.arange(1, horizon + 1)
    pos, vel = path.position_velocity(t)
    ref = np.zeros((horizon, spec.state_dim), dtype=np.float32)
    for i, name in enumerate(("pos_n_m", "pos_e_m", "pos_d_m")):
        ref[:, spec.state_index(name)] = pos[:, i]
    for i, name in enumerate(("vel_n_mps", "vel_e_mps", "vel_d_mps")):
        ref[:, spec.state_index(name)] = vel[:, i]
    return ref


@dataclass
class DriftEstimator:
    """Offset-free tracking: how fast the reported position moves apart from the reported velocity's integral.

    The world model imagines position as the integral of velocity. A vehicle's position can drift from that for
    reasons no model predicts: an estimator pulled by GPS fixes (PX4 SIH on the real firmware: 0.1-0.5 m/s against
    its own velocity estimate), wind the model never saw. Over the last `window_s` of telemetry, drift = (position
    change - integral of velocity) / elapsed time; the planner's reference is shifted against it
    (`shift_for_drift`), the standard disturbance estimate of offset-free MPC, so the plan aims where the vehicle
    will really be. `update` is fed every tick with the autopilot's time and state; repeated samples are skipped."""

    spec: VehicleSpec
    window_s: float = 1.0
    max_mps: float = 1.0
    _hist: deque[tuple[float, np.ndarray, np.ndarray]] = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.max_mps >= 0):
            raise ValueError(f"DriftEstimator: expected window_s > 0 and max_mps >= 0, got {self.window_s}, "
                             f"{self.max_mps}")
        self._pos = [self.spec.state_index(f"pos_{a}_m") for a in "ned"]
        self._vel = [self.spec.state_index(f"vel_{a}_mps") for a in "ned"]
        self.drift_mps = np.zeros(3)

    def update(self, t_s: float, state: np.ndarray) -> np.ndarray:
        """The drift velocity [3] (m/s, NED) over the window ending at `t_s`."""
        if not (math.isfinite(t_s) and np.all(np.isfinite(state))):
            return self.drift_mps
        if self._hist and t_s <= self._hist[-1][0]:
            if t_s < self._hist[-1][0] - 1.0:
                self._hist.clear()  # the clock went back: a reboot, start over
            else:
                return self.drift_mps
        self._hist.append((t_s, state[self._pos].astype(np.float64), state[self._vel].astype(np.float64)))
        while self._hist and t_s - self._hist[0][0] > self.window_s:
            self._hist.popleft()
        span = t_s - self._hist[0][0]
        if len(self._hist) < 3 or span < 0.5 * self.window_s:
            self.drift_mps = np.zeros(3)
            return self.drift_mps
        t = np.array([h[0] for h in self._hist])
        v = np.stack([h[2] for h in self._hist])
        integral = np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(t)[:, None], axis=0)
        drift = (self._hist[-1][1] - self._hist[0][1] - integral) / span
        norm = float(np.linalg.norm(drift))
        self.drift_mps = drift * (self.max_mps / norm) if norm > self.max_mps else drift
        return self.drift_mps


def shift_for_drift(ref: np.ndarray, drift_mps: np.ndarray, spec: VehicleSpec, period_s: float) -> np.ndarray:
    """The reference [H,S] the imagined (drift-free) trajectory should follow for the real one to follow `ref`:
    positions moved back by the drift accumulated at each step, velocities by the drift itself."""
    out = ref.copy()
    steps = period_s * np.arange(1, ref.shape[0] + 1, dtype=np.float32)
    for i, axis in enumerate("ned"):
        out[:, spec.state_index(f"pos_{axis}_m")] -= np.float32(drift_mps[i]) * steps
        out[:, spec.state_index(f"vel_{axis}_mps")] -= np.float32(drift_mps[i])
    return out


class TableReference:
    """A vehicle file's reference trajectory (its task's `reference` rows: t_s, x_0 .. x_S-1), interpolated
    linearly in time and held at its ends; a component the table leaves out (NaN) keeps the task's target."""

    def __init__(self, rows: tuple[tuple[float, ...], ...], target: tuple[float, ...], period_s: float,
                 horizon: int, start_s: float) -> None:
        table = np.asarray(rows, dtype=np.float64)
        self.t_s, self.values = table[:, 0], table[:, 1:]
        self.target = np.asarray(target, dtype=np.float64)
        self.offsets_s = period_s * np.arange(1, horizon + 1)
        self.start_s = start_s

    def __call__(self, t_s: float) -> np.ndarray:
        """[H,S] float32: the reference at each of the next H steps after `t_s`."""
        t = (t_s - self.start_s) + self.offsets_s
        out = np.empty((len(t), self.values.shape[1]), np.float32)
        for i in range(self.values.shape[1]):
            column = self.values[:, i]
            out[:, i] = self.target[i] if np.isnan(column).all() else np.interp(t, self.t_s, column)
        return out
