"""The campaign file (TOML): what to fly, what to randomise, which faults to inject, what counts as success.

    [campaign]
    vehicle = "quad"            # the only vehicle campaigns fly today
    task = "figure8"
    autopilot = "ardupilot"     # or "px4"
    control = "planner"         # or "baseline": the autopilot's own position control
    flights = 200
    seed = 0
    timeout_s = 240.0           # a flight not done by then is failed ("timeout")

    [mission]                   # `dreamlink run`'s multirotor mission
    altitude_m = 2.0
    half_width_m = 3.0
    speed_mps = 2.0
    laps = 0.25

    [randomise]                 # [low, high], drawn uniformly per flight; a number fixes the value
    mass_scale = [0.8, 1.2]     # names: dreamlink.sim.quadrotor.randomisation.RandomisationRanges
    wind_speed_mps = [0.0, 3.0]

    [faults]                    # link faults through the fault proxy, on a fraction of the flights
    probability = 0.25
    to_runtime = { drop_rate = [0.0, 0.05], delay_ms = [0.0, 20.0] }   # names: dreamlink.sim.fault_proxy.FaultSpec
    to_vehicle = { delay_ms = [0.0, 10.0] }

    [success]
    max_tracking_rmse_m = 1.0
    require_landed = true
    max_fence_breaches = 0

    [collect]                   # `campaign collect`: excitation seconds per flight
    seconds = 40.0

Everything is validated before any flight: an unknown key, a negative or inverted range, an unknown fault
is refused with `CampaignError` naming the file and the key. `draw_flight(spec, index)` is pure: flight
`index` of a campaign gets the same seed, parameters and faults on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.sim.fault_proxy import DIRECTIONS, FaultSpec
from dreamlink.sim.quadrotor.randomisation import DomainParams, RandomisationRanges, Span, sample

if sys.version_info >= (3, 11):
    import tomllib
else:  # the backport, as dreamlink.deploy.config
    import tomli as tomllib

VEHICLES = ("quad",)
TASKS = ("figure8",)
AUTOPILOTS = ("ardupilot", "px4")
CONTROLS = ("planner", "baseline")
RANDOMISED = tuple(f.name for f in dataclasses.fields(RandomisationRanges))
FAULTS = tuple(f.name for f in dataclasses.fields(FaultSpec))


class CampaignError(ValueError):
    """A campaign file (or option) that cannot be flown; the message names the file and the key."""


@dataclass(frozen=True)
class MissionSpec:
    altitude_m: float = 2.0
    half_width_m: float = 3.0
    speed_mps: float = 2.0
    laps: float = 0.25


@dataclass(frozen=True)
class SuccessSpec:
    max_tracking_rmse_m: float = 1.0
    require_landed: bool = True
    max_fence_breaches: int = 0


@dataclass(frozen=True)
class FaultRanges:
    probability: float = 0.0  # of a flight having link faults at all
    to_runtime: tuple[tuple[str, Span], ...] = ()
    to_vehicle: tuple[tuple[str, Span], ...] = ()


@dataclass(frozen=True)
class CollectSpec:
    seconds: float = 40.0


@dataclass(frozen=True)
class CampaignSpec:
    vehicle: str = "quad"
    task: str = "figure8"
    autopilot: str = "ardupilot"
    control: str = "planner"
    flights: int = 200
    seed: int = 0
    timeout_s: float = 240.0
    mission: MissionSpec = field(default_factory=MissionSpec)
    randomise: RandomisationRanges = field(default_factory=RandomisationRanges)
    faults: FaultRanges = field(default_factory=FaultRanges)
    success: SuccessSpec = field(default_factory=SuccessSpec)
    collect: CollectSpec = field(default_factory=CollectSpec)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["randomise"] = {k: [v["low"], v["high"]] for k, v in d["randomise"].items()}
        for direction in DIRECTIONS:
            d["faults"][direction] = {k: [s.low, s.high] for k, s in getattr(self.faults, direction)}
        return d

    def digest(self) -> str:
        """sha256 of the resolved spec except `flights`: a campaign may be extended, not changed."""
        d = self.to_dict()
        d.pop("flights")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class FlightDraw:
    """What flight `index` flies: its seed, the simulator's parameters, the link faults per direction."""

    index: int
    seed: int
    domain: DomainParams
    faults: dict[str, str]  # direction -> FaultSpec text ("" = none); empty dict: no proxy

    def params(self) -> dict[str, float]:
        """The randomised parameters as flat table columns."""
        d = self.domain
        return {
            "mass_scale": d.mass_scale, "drag_scale": d.drag_scale, "motor_time_constant_s": d.motor_time_constant_s,
            "wind_speed_mps": math.hypot(d.wind_mean_ned_mps[0], d.wind_mean_ned_mps[1]),
            "wind_gust_sigma_mps": d.wind_gust_sigma_mps[0], "pos_noise_m": d.pos_noise_m,
            "vel_noise_mps": d.vel_noise_mps, "att_noise_rad": d.att_noise_rad, "gyro_noise_radps": d.gyro_noise_radps,
            "accel_noise_mps2": d.accel_noise_mps2, "telemetry_latency_s": d.telemetry_latency_s,
        }


def draw_flight(spec: CampaignSpec, index: int) -> FlightDraw:
    """Flight `index`'s draw, from (campaign seed, index) alone."""
    rng = np.random.default_rng([spec.seed, index])
    seed = int(rng.integers(2**31 - 1))
    domain = sample(rng, spec.randomise, seed=seed)
    faults: dict[str, str] = {}
    if spec.faults.probability > 0 and rng.random() < spec.faults.probability:
        for direction in DIRECTIONS:
            values = {name: span.draw(rng) for name, span in getattr(spec.faults, direction)}
            faults[direction] = FaultSpec(**values).to_text()
    return FlightDraw(index, seed, domain, faults)


def load_campaign(path: str | Path) -> CampaignSpec:
    """Read and validate a campaign file; `CampaignError` names the file and the key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise CampaignError(f"{p}: no such campaign file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CampaignError(f"{p}: not a readable TOML file ({exc})") from None
    return parse_campaign(data, str(p))


def parse_campaign(data: dict[str, Any], source: str = "campaign") -> CampaignSpec:
    """Validate a campaign's TOML table (what `load_campaign` read) into a `CampaignSpec`."""
    _known(data, ("campaign", "mission", "randomise", "faults", "success", "collect"), source, "")
    base = CampaignSpec()
    c = _table(data, "campaign", source)
    _known(c, ("vehicle", "task", "autopilot", "control", "flights", "seed", "timeout_s"), source, "campaign.")
    top: dict[str, Any] = {
        "vehicle": _choice(c, "vehicle", VEHICLES, base.vehicle, source),
        "task": _choice(c, "task", TASKS, base.task, source),
        "autopilot": _choice(c, "autopilot", AUTOPILOTS, base.autopilot, source),
        "control": _choice(c, "control", CONTROLS, base.control, source),
        "flights": int(_number(c, "flights", base.flights, source, "campaign.", integer=True)),
        "seed": int(_number(c, "seed", base.seed, source, "campaign.", integer=True)),
        "timeout_s": _number(c, "timeout_s", base.timeout_s, source, "campaign.", positive=True),
    }
    return CampaignSpec(
        **top,
        mission=_section(data, "mission", MissionSpec, source, positive=("half_width_m", "speed_mps", "laps",
                                                                          "altitude_m")),
        randomise=_randomise(_table(data, "randomise", source), source),
        faults=_faults(_table(data, "faults", source), source),
        success=_section(data, "success", SuccessSpec, source, positive=("max_tracking_rmse_m",)),
        collect=_section(data, "collect", CollectSpec, source, positive=("seconds",)),
    )


def _table(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise CampaignError(f"{source}: [{name}] must be a table, got {value!r}")
    return value


def _known(table: dict[str, Any], names: tuple[str, ...], source: str, prefix: str) -> None:
    for key in table:
        if key not in names:
            raise CampaignError(f"{source}: unknown key {prefix}{key!r}; expected one of {', '.join(names)}")


def _choice(table: dict[str, Any], key: str, choices: tuple[str, ...], default: str, source: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise CampaignError(f"{source}: campaign.{key} = {value!r}; expected one of {', '.join(choices)}")
    return str(value)


def _number(table: dict[str, Any], key: str, default: float, source: str, prefix: str, integer: bool = False,
            positive: bool = False) -> float:
    value = table.get(key, default)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < 0 or (positive and value <= 0):
        kind = "an integer" if integer else "a number"
        raise CampaignError(f"{source}: {prefix}{key} = {value!r}; expected {kind} {'> 0' if positive else '>= 0'}")
    return float(value)


def _section(data: dict[str, Any], name: str, cls: Any, source: str, positive: tuple[str, ...] = ()) -> Any:
    table = _table(data, name, source)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _known(table, tuple(fields), source, f"{name}.")
    base = cls()
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(base, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise CampaignError(f"{source}: {name}.{key} = {value!r}; expected true or false")
            values[key] = value
        else:
            number = _number(table, key, default, source, f"{name}.", integer=isinstance(default, int),
                             positive=key in positive)
            values[key] = int(number) if isinstance(default, int) else number
    return cls(**values)


def _span(value: Any, source: str, key: str) -> Span:
    pair = value if isinstance(value, list) else [value, value]
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pair):
        raise CampaignError(f"{source}: {key} = {value!r}; expected [low, high] or one number")
    low, high = float(pair[0]), float(pair[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < 0:
        raise CampaignError(f"{source}: {key} = {value!r}; expected a range of finite values >= 0")
    if low > high:
        raise CampaignError(f"{source}: {key} = {value!r}; expected low <= high")
    return Span(low, high)


def _randomise(table: dict[str, Any], source: str) -> RandomisationRanges:
    _known(table, RANDOMISED, source, "randomise.")
    spans = {key: _span(value, source, f"randomise.{key}") for key, value in table.items()}
    try:
        return RandomisationRanges(**spans)
    except ValueError as exc:
        raise CampaignError(f"{source}: [randomise] {exc}") from None


def _faults(table: dict[str, Any], source: str) -> FaultRanges:
    _known(table, ("probability", *DIRECTIONS), source, "faults.")
    probability = _number(table, "probability", 0.0, source, "faults.")
    if probability > 1:
        raise CampaignError(f"{source}: faults.probability = {probability!r}; expected a probability in [0, 1]")
    per_direction: dict[str, tuple[tuple[str, Span], ...]] = {}
    for direction in DIRECTIONS:
        faults = table.get(direction, {})
        if not isinstance(faults, dict):
            raise CampaignError(f"{source}: faults.{direction} must be a table of fault = [low, high]")
        for name in faults:
            if name not in FAULTS:
                raise CampaignError(f"{source}: unknown fault faults.{direction}.{name!r}; expected one of "
                                    f"{', '.join(FAULTS)}")
        spans = tuple((name, _span(v, source, f"faults.{direction}.{name}")) for name, v in faults.items())
        for name, span in spans:
            try:
                FaultSpec(**{name: span.high})
            except ValueError as exc:
                raise CampaignError(f"{source}: faults.{direction}.{name}: {exc}") from None
        per_direction[direction] = spans
    return FaultRanges(probability, per_direction["to_runtime"], per_direction["to_vehicle"])
