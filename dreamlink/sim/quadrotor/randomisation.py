"""Seeded domain randomisation of the simulated quadrotor, recorded with every flight.

`sample(rng, ranges)` draws one `DomainParams` (mass and drag scale, motor time constant, mean wind and gust
intensity, sensor noise, telemetry latency); `DomainParams.to_dict()` is the JSON a data set stores next to
the flight, and `DomainParams.from_dict()` replays it. The draws happen in a fixed order from one generator,
so `sample(np.random.default_rng(seed), ranges)` is the same on every machine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from dreamlink.sim.quadrotor.physics import QuadParams, WindParams


@dataclass(frozen=True)
class Span:
    """A closed interval [low, high] to draw uniformly from (low == high: a fixed value)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"Span: expected finite low <= high, got [{self.low}, {self.high}]")

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high)) if self.high > self.low else self.low


@dataclass(frozen=True)
class RandomisationRanges:
    """What varies between flights. Defaults: +-20 % mass, 0.7-1.4x drag, 15-40 ms motors, wind up to 3 m/s
    with up to 0.8 m/s gusts, EKF-like output noise and up to 40 ms of telemetry latency."""

    mass_scale: Span = Span(0.8, 1.2)
    drag_scale: Span = Span(0.7, 1.4)
    motor_time_constant_s: Span = Span(0.015, 0.04)
    wind_speed_mps: Span = Span(0.0, 3.0)
    wind_gust_sigma_mps: Span = Span(0.0, 0.8)
    pos_noise_m: Span = Span(0.0, 0.02)
    vel_noise_mps: Span = Span(0.0, 0.05)
    att_noise_rad: Span = Span(0.0, 0.005)
    gyro_noise_radps: Span = Span(0.0, 0.01)
    accel_noise_mps2: Span = Span(0.0, 0.1)
    telemetry_latency_s: Span = Span(0.0, 0.04)

    def __post_init__(self) -> None:
        for f in fields(self):
            span = getattr(self, f.name)
            if not isinstance(span, Span):
                raise ValueError(f"RandomisationRanges.{f.name}: expected a Span, got {span!r}")
            if span.low < 0:
                raise ValueError(f"RandomisationRanges.{f.name}: expected values >= 0, got [{span.low}, {span.high}]")
        if self.mass_scale.low <= 0 or self.drag_scale.low < 0 or self.motor_time_constant_s.low <= 0:
            raise ValueError("RandomisationRanges: mass_scale and motor_time_constant_s must be > 0")


def fixed_ranges(nominal: QuadParams) -> RandomisationRanges:
    """No randomisation: the nominal airframe, no wind, no noise, no latency."""
    zero = Span(0.0, 0.0)
    return RandomisationRanges(mass_scale=Span(1.0, 1.0), drag_scale=Span(1.0, 1.0),
                               motor_time_constant_s=Span(nominal.motor_time_constant_s, nominal.motor_time_constant_s),
                               wind_speed_mps=zero, wind_gust_sigma_mps=zero, pos_noise_m=zero, vel_noise_mps=zero,
                               att_noise_rad=zero, gyro_noise_radps=zero, accel_noise_mps2=zero,
                               telemetry_latency_s=zero)


@dataclass(frozen=True)
class DomainParams:
    """One flight's draw. Noise values are standard deviations added to the telemetry (not to what the
    autopilot controls on); latency delays every telemetry message by that much vehicle time."""

    seed: int
    mass_scale: float = 1.0
    drag_scale: float = 1.0
    motor_time_constant_s: float = QuadParams().motor_time_constant_s
    wind_mean_ned_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wind_gust_sigma_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pos_noise_m: float = 0.0
    vel_noise_mps: float = 0.0
    att_noise_rad: float = 0.0
    gyro_noise_radps: float = 0.0
    accel_noise_mps2: float = 0.0
    telemetry_latency_s: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            for v in value if isinstance(value, tuple) else (value,):
                if not math.isfinite(v):
                    raise ValueError(f"DomainParams.{f.name}: expected finite values, got {value!r}")
        if self.mass_scale <= 0 or self.motor_time_constant_s <= 0 or self.telemetry_latency_s < 0:
            raise ValueError(f"DomainParams: mass_scale and motor_time_constant_s must be > 0 and "
                             f"telemetry_latency_s >= 0, got {self}")

    def quad_params(self, nominal: QuadParams) -> QuadParams:
        return nominal.scaled(mass=self.mass_scale, drag=self.drag_scale,
                              motor_time_constant_s=self.motor_time_constant_s)

    def wind_params(self) -> WindParams:
        return WindParams(mean_ned_mps=self.wind_mean_ned_mps, gust_sigma_mps=self.wind_gust_sigma_mps)

    def with_wind(self, speed_mps: float | None = None, gust_sigma_mps: float | None = None) -> DomainParams:
        """The same draw with the mean wind speed (its direction kept, or north if it was calm) and/or the gust
        intensity overridden (`--wind-mps`, `--gust-mps`)."""
        out = self
        if speed_mps is not None:
            n, e, _ = self.wind_mean_ned_mps
            h = math.hypot(n, e)
            direction = (n / h, e / h) if h > 0 else (1.0, 0.0)
            out = replace(out, wind_mean_ned_mps=(direction[0] * speed_mps, direction[1] * speed_mps, 0.0))
        if gust_sigma_mps is not None:
            out = replace(out, wind_gust_sigma_mps=(gust_sigma_mps, gust_sigma_mps, 0.5 * gust_sigma_mps))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wind_mean_ned_mps"] = list(self.wind_mean_ned_mps)
        d["wind_gust_sigma_mps"] = list(self.wind_gust_sigma_mps)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> DomainParams:
        names = {f.name for f in fields(DomainParams)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"DomainParams: unknown keys {sorted(unknown)}; expected some of {sorted(names)}")
        values = dict(d)
        for key in ("wind_mean_ned_mps", "wind_gust_sigma_mps"):
            if key in values:
                if len(values[key]) != 3:
                    raise ValueError(f"DomainParams.{key}: expected 3 values, got {values[key]!r}")
                values[key] = tuple(float(v) for v in values[key])
        return DomainParams(**values)


def sample(rng: np.random.Generator, ranges: RandomisationRanges, seed: int = 0) -> DomainParams:
    """Draw one flight's parameters. The wind direction is uniform; gusts are weaker vertically (half)."""
    mass = ranges.mass_scale.draw(rng)
    drag = ranges.drag_scale.draw(rng)
    tau = ranges.motor_time_constant_s.draw(rng)
    speed = ranges.wind_speed_mps.draw(rng)
    heading = float(rng.uniform(0.0, 2 * math.pi))
    gust = ranges.wind_gust_sigma_mps.draw(rng)
    return DomainParams(
        seed=seed, mass_scale=mass, drag_scale=drag, motor_time_constant_s=tau,
        wind_mean_ned_mps=(speed * math.cos(heading), speed * math.sin(heading), 0.0),
        wind_gust_sigma_mps=(gust, gust, 0.5 * gust),
        pos_noise_m=ranges.pos_noise_m.draw(rng), vel_noise_mps=ranges.vel_noise_mps.draw(rng),
        att_noise_rad=ranges.att_noise_rad.draw(rng), gyro_noise_radps=ranges.gyro_noise_radps.draw(rng),
        accel_noise_mps2=ranges.accel_noise_mps2.draw(rng),
        telemetry_latency_s=ranges.telemetry_latency_s.draw(rng))
