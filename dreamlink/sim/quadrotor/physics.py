"""Quadrotor rigid-body physics: rotorpy's multirotor aerodynamics, integrated at a fixed step in NED/FRD.

What comes from rotorpy (https://github.com/spencerfolk/rotorpy, `rotorpy==3.0.*`):

- the vehicle model `rotorpy.vehicles.multirotor.Multirotor`: rotor thrust (k_eta w^2), yaw moments (k_m w^2),
  parasitic drag (c_D |v| v, body axes), rotor drag / H-force (k_d), induced inflow (k_z), translational lift
  (k_h), blade flapping (k_flap), all in `Multirotor.compute_body_wrench`; its control allocation matrix
  `TM_to_f` (collective thrust + body moments -> rotor forces) is what the autopilot's mixer uses;
- the default airframe, `rotorpy.vehicles.hummingbird_params` (AscTec Hummingbird), see `QuadParams`;
- the Dryden gust filter `rotorpy.wind.dryden_utils.GustModelBase` and its altitude-dependent length scales.

What is ours, and why:

- Integration. `Multirotor.step` calls scipy's adaptive RK45 (`solve_ivp`) for every step: ~0.9 ms per 2.5 ms
  step here, 7 ms of CPU per 20 ms of flight. We integrate the same forces with a fixed 2.5 ms semi-implicit Euler
  step (rotor speeds with the exact first-order-lag solution, attitude with the exact quaternion exponential),
  ~0.15 ms per step, so lockstep runs many times faster than real time and is bit-for-bit reproducible. A test
  checks our trajectory against `Multirotor.step` on the same inputs.
- Frames. rotorpy's world is z-up and its body is FLU; MAVLink is NED/FRD. The state here is NED/FRD and only
  the body airspeed, rates and the returned wrench are converted (y and z flip sign) around
  `compute_body_wrench`.
- Randomness. rotorpy's gusts draw from numpy's global generator; `DrydenWind` subclasses its filter to draw
  from a seeded `numpy.random.Generator` instead, so a flight replays from its seed, and scales that noise so
  the gust standard deviation is the configured one (see `_SeededGust`).
- Ground. Same rule as rotorpy's `enable_ground`: at or below z = 0 (NED down) the vehicle is held on the
  plane, sinking velocity is removed, horizontal velocity is damped by `ground_friction` and roll/pitch are
  levelled (yaw kept), but only while the thrust cannot lift it.

Importing this module imports rotorpy and through it torch (~1.2 s): rotorpy lists torch as optional, but
`rotorpy.wind.dryden_utils` imports it unconditionally, so the `sim` extra pins torch==2.13.0. Nothing here
uses torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from rotorpy.vehicles.hummingbird_params import quad_params as _HUMMINGBIRD
from rotorpy.vehicles.multirotor import Multirotor
from rotorpy.wind.dryden_utils import GustModelBase

GRAVITY_MPS2 = 9.81  # rotorpy's value
SUBSTEP_S = 0.0025  # 400 Hz, ArduCopter's main-loop rate; the autopilot controller runs every substep
_FLU = np.array([1.0, -1.0, -1.0])  # FRD <-> FLU: y and z change sign


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"QuadParams.{name}: expected a finite value > 0, got {value!r}")


@dataclass(frozen=True)
class QuadParams:
    """One airframe. Defaults are rotorpy's AscTec Hummingbird with two changes, both to look like a typical
    small camera quad rather than a racing frame: `rotor_speed_max_radps` 1500 -> 750 (thrust-to-weight 10 -> 2.5,
    hover at ~40 % thrust) and `motor_time_constant_s` 0.005 -> 0.02 (PX4 SIH uses 0.05)."""

    mass_kg: float = float(_HUMMINGBIRD["mass"])
    inertia_kgm2: tuple[float, float, float] = (float(_HUMMINGBIRD["Ixx"]), float(_HUMMINGBIRD["Iyy"]),
                                                float(_HUMMINGBIRD["Izz"]))
    arm_length_m: float = 0.17
    parasitic_drag: tuple[float, float, float] = (float(_HUMMINGBIRD["c_Dx"]), float(_HUMMINGBIRD["c_Dy"]),
                                                  float(_HUMMINGBIRD["c_Dz"]))  # N/(m/s)^2, body axes
    rotor_drag: float = float(_HUMMINGBIRD["k_d"])  # N/(rad*m/s^2), H-force per rotor
    induced_inflow: float = float(_HUMMINGBIRD["k_z"])
    translational_lift: float = float(_HUMMINGBIRD["k_h"])
    thrust_coeff: float = float(_HUMMINGBIRD["k_eta"])  # N/(rad/s)^2
    yaw_moment_coeff: float = float(_HUMMINGBIRD["k_m"])  # Nm/(rad/s)^2
    motor_time_constant_s: float = 0.02
    rotor_speed_max_radps: float = 750.0
    ground_friction: float = 0.3  # rotorpy's ground_friction_beta: fraction of horizontal speed lost per step

    def __post_init__(self) -> None:
        for name in ("mass_kg", "arm_length_m", "thrust_coeff", "yaw_moment_coeff", "motor_time_constant_s",
                     "rotor_speed_max_radps"):
            _positive(name, getattr(self, name))
        for i, value in enumerate(self.inertia_kgm2):
            _positive(f"inertia_kgm2[{i}]", value)
        for name in ("rotor_drag", "induced_inflow", "translational_lift"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"QuadParams.{name}: expected a finite value >= 0, got {getattr(self, name)!r}")
        if any(not (math.isfinite(c) and c >= 0) for c in self.parasitic_drag):
            raise ValueError(f"QuadParams.parasitic_drag: expected three finite values >= 0, got {self.parasitic_drag}")
        if not 0.1 <= self.ground_friction <= 0.5:
            raise ValueError(f"QuadParams.ground_friction: expected 0.1..0.5 (rotorpy's range), "
                             f"got {self.ground_friction!r}")
        if self.max_thrust_n <= self.mass_kg * GRAVITY_MPS2:
            raise ValueError(f"QuadParams: max thrust {self.max_thrust_n:.2f} N cannot lift "
                             f"{self.mass_kg:.3f} kg; raise rotor_speed_max_radps or thrust_coeff")

    @property
    def max_thrust_n(self) -> float:
        return 4.0 * self.thrust_coeff * self.rotor_speed_max_radps**2

    @property
    def hover_rotor_speed_radps(self) -> float:
        return math.sqrt(self.mass_kg * GRAVITY_MPS2 / (4.0 * self.thrust_coeff))

    def scaled(self, mass: float = 1.0, drag: float = 1.0, motor_time_constant_s: float | None = None) -> QuadParams:
        """A copy with the mass and every drag coefficient scaled (domain randomisation)."""
        return replace(self, mass_kg=self.mass_kg * mass,
                       parasitic_drag=tuple(c * drag for c in self.parasitic_drag),  # type: ignore[arg-type]
                       rotor_drag=self.rotor_drag * drag, induced_inflow=self.induced_inflow * drag,
                       motor_time_constant_s=(self.motor_time_constant_s if motor_time_constant_s is None
                                              else motor_time_constant_s))

    def rotorpy_params(self) -> dict[str, object]:
        """The same airframe as rotorpy's `quad_params` dict (x configuration, rotor 1 front left)."""
        d = self.arm_length_m / math.sqrt(2.0)
        return {
            "mass": self.mass_kg, "Ixx": self.inertia_kgm2[0], "Iyy": self.inertia_kgm2[1],
            "Izz": self.inertia_kgm2[2], "Ixy": 0.0, "Iyz": 0.0, "Ixz": 0.0,
            "num_rotors": 4, "rotor_radius": 0.10,
            "rotor_pos": {"r1": np.array([d, d, 0.0]), "r2": np.array([d, -d, 0.0]),
                          "r3": np.array([-d, -d, 0.0]), "r4": np.array([-d, d, 0.0])},
            "rotor_directions": np.array([1, -1, 1, -1]), "rI": np.zeros(3),
            "c_Dx": self.parasitic_drag[0], "c_Dy": self.parasitic_drag[1], "c_Dz": self.parasitic_drag[2],
            "k_eta": self.thrust_coeff, "k_m": self.yaw_moment_coeff, "k_d": self.rotor_drag,
            "k_z": self.induced_inflow, "k_h": self.translational_lift, "k_flap": 0.0,
            "tau_m": self.motor_time_constant_s, "rotor_speed_min": 0.0,
            "rotor_speed_max": self.rotor_speed_max_radps, "motor_noise_std": 0.0,
            "ground_friction_beta": self.ground_friction,
        }


@dataclass(frozen=True)
class WindParams:
    """Mean wind (NED, m/s) plus Dryden turbulence intensity per axis (m/s) at `altitude_m`."""

    mean_ned_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gust_sigma_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    altitude_m: float = 5.0

    def __post_init__(self) -> None:
        if any(not math.isfinite(v) for v in self.mean_ned_mps):
            raise ValueError(f"WindParams.mean_ned_mps: expected finite values, got {self.mean_ned_mps}")
        if any(not (math.isfinite(s) and s >= 0) for s in self.gust_sigma_mps):
            raise ValueError(f"WindParams.gust_sigma_mps: expected values >= 0, got {self.gust_sigma_mps}")
        _positive("altitude_m (WindParams)", self.altitude_m)


GUST_AIRSPEED_MPS = 5.0  # the airspeed V in the Dryden length/time scales (rotorpy passes 1 m/s)


class _SeededGust(GustModelBase):  # type: ignore[misc]
    """rotorpy's Dryden gust filter (its bilinear-transform coefficients) driven by seeded white noise.

    rotorpy feeds one uniform(-1, 1) draw per step, which makes the gust strength depend on the step size
    (about 1.5 % of sigma at 400 Hz). Here the input is unit-intensity white noise, N(0, 1) * sqrt(pi / dt)
    for the pi in Dryden's spectra, so the output standard deviation is the configured sigma at any step."""

    def __init__(self, length_m: float, sigma_mps: float, rng: np.random.Generator) -> None:
        super().__init__(GUST_AIRSPEED_MPS, length_m, sigma_mps, SUBSTEP_S)
        self._rng = rng
        self.u_km1: float = 0.0
        self.u_km2: float = 0.0
        self.y_km1: float = 0.0
        self.y_km2: float = 0.0

    def run(self, dt: float) -> float:
        c1 = 1.0 + 2 * self.delta / dt + 4 * self.gamma / dt / dt
        c2 = 2.0 - 8 * self.gamma / dt / dt
        c3 = 1.0 - 2 * self.delta / dt + 4 * self.gamma / dt / dt
        c4 = self.alpha + 2 * self.beta / dt
        c5 = 2 * self.alpha
        c6 = self.alpha - 2 * self.beta / dt
        u_k = float(self._rng.standard_normal()) * math.sqrt(math.pi / dt)
        y_k = (c4 * u_k + c5 * self.u_km1 + c6 * self.u_km2 - c2 * self.y_km1 - c3 * self.y_km2) / c1
        self.u_km2, self.u_km1, self.y_km2, self.y_km1 = self.u_km1, u_k, self.y_km1, y_k
        return y_k


class DrydenWind:
    """Mean wind plus Dryden gusts, as `rotorpy.wind.dryden_utils.DrydenWind` but seeded. `sample(dt)` -> NED."""

    def __init__(self, params: WindParams, rng: np.random.Generator) -> None:
        self.params = params
        self._mean = np.array(params.mean_ned_mps, dtype=np.float64)
        lz_ft = 3.281 * params.altitude_m  # rotorpy's (MIL-F-8785C) low-altitude length scales
        lx_ft = lz_ft / ((0.177 + 0.000823 * lz_ft) ** 1.2)
        lengths = (lx_ft / 3.281, lx_ft / 3.281, lz_ft / 3.281)
        self._gusts = [_SeededGust(length, sigma, rng) if sigma > 0 else None
                       for length, sigma in zip(lengths, params.gust_sigma_mps, strict=True)]
        self._out = np.zeros(3)

    def sample(self, dt: float) -> np.ndarray:
        for i, gust in enumerate(self._gusts):
            self._out[i] = self._mean[i] + (gust.integrate(dt) if gust is not None else 0.0)
        return self._out.copy()


@dataclass
class QuadState:
    """The true vehicle state. NED world (origin on the ground at take-off), FRD body, quaternion w-x-y-z
    rotating FRD into NED. `accel_ned_mps2` is the kinematic acceleration over the last step."""

    pos_ned_m: np.ndarray = field(default_factory=lambda: np.zeros(3))
    vel_ned_mps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    q_ned_frd: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    rates_frd_radps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotor_speeds_radps: np.ndarray = field(default_factory=lambda: np.zeros(4))
    accel_ned_mps2: np.ndarray = field(default_factory=lambda: np.zeros(3))
    wind_ned_mps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    on_ground: bool = True

    def copy(self) -> QuadState:
        return QuadState(self.pos_ned_m.copy(), self.vel_ned_mps.copy(), self.q_ned_frd.copy(),
                         self.rates_frd_radps.copy(), self.rotor_speeds_radps.copy(), self.accel_ned_mps2.copy(),
                         self.wind_ned_mps.copy(), self.on_ground)


def quat_to_rotation(q: np.ndarray) -> np.ndarray:
    """w-x-y-z unit quaternion -> 3x3 rotation matrix (body -> world)."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def yaw_of(q: np.ndarray) -> float:
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def euler_of(q: np.ndarray) -> tuple[float, float, float]:
    """Roll, pitch, yaw (rad; ZYX, the MAVLink ATTITUDE convention) of a w-x-y-z quaternion."""
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    return roll, pitch, yaw_of(q)


def quat_from_yaw(yaw_rad: float) -> np.ndarray:
    return np.array([math.cos(yaw_rad / 2), 0.0, 0.0, math.sin(yaw_rad / 2)])


class QuadPhysics:
    """One simulated airframe in one wind field. `step(cmd, dt)` advances the true state; not thread-safe."""

    def __init__(self, params: QuadParams, wind: DrydenWind, state: QuadState | None = None) -> None:
        self.params = params
        self.wind = wind
        self.vehicle = Multirotor(params.rotorpy_params(), control_abstraction="cmd_motor_speeds", aero=True,
                                  enable_ground=True)
        self.state = state if state is not None else QuadState()
        self._inertia = np.diag(params.inertia_kgm2)
        self._inv_inertia = np.diag([1.0 / i for i in params.inertia_kgm2])
        self._gravity = np.array([0.0, 0.0, GRAVITY_MPS2])
        self.substeps = 0

    def step(self, rotor_speed_cmd_radps: np.ndarray, dt: float = SUBSTEP_S) -> QuadState:
        """Advance `dt` seconds holding the rotor speed command (clipped to the motors' range)."""
        p, s = self.params, self.state
        cmd = np.clip(rotor_speed_cmd_radps, 0.0, p.rotor_speed_max_radps)
        s.rotor_speeds_radps = s.rotor_speeds_radps + (1.0 - math.exp(-dt / p.motor_time_constant_s)) * (
            cmd - s.rotor_speeds_radps)
        s.wind_ned_mps = self.wind.sample(dt)
        rot = quat_to_rotation(s.q_ned_frd)
        airspeed_flu = _FLU * (rot.T @ (s.vel_ned_mps - s.wind_ned_mps))
        force_flu, moment_flu = self.vehicle.compute_body_wrench(_FLU * s.rates_frd_radps, s.rotor_speeds_radps,
                                                                 airspeed_flu)
        accel = self._gravity + rot @ (_FLU * force_flu) / p.mass_kg
        on_ground = s.pos_ned_m[2] >= -1e-3
        if on_ground and accel[2] > 0.0:  # ground reaction: it cannot push the vehicle through the plane
            accel[2] = 0.0
        w = s.rates_frd_radps
        w_dot = self._inv_inertia @ (_FLU * moment_flu - cross(w, self._inertia @ w))
        vel_before = s.vel_ned_mps
        s.vel_ned_mps = vel_before + accel * dt
        s.rates_frd_radps = w + w_dot * dt
        s.pos_ned_m = s.pos_ned_m + s.vel_ned_mps * dt
        s.q_ned_frd = _integrate_quat(s.q_ned_frd, s.rates_frd_radps, dt)
        s.on_ground = s.pos_ned_m[2] >= -1e-3
        if s.on_ground and s.vel_ned_mps[2] >= 0.0:
            s.pos_ned_m[2] = 0.0
            s.vel_ned_mps[2] = 0.0
            s.vel_ned_mps[:2] *= 1.0 - p.ground_friction
            s.rates_frd_radps = np.zeros(3)
            s.q_ned_frd = quat_from_yaw(yaw_of(s.q_ned_frd))
        s.accel_ned_mps2 = (s.vel_ned_mps - vel_before) / dt
        self.substeps += 1
        return s


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3-vector cross product (numpy's is ~20x slower on single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _integrate_quat(q: np.ndarray, rates_body: np.ndarray, dt: float) -> np.ndarray:
    angle = float(np.linalg.norm(rates_body)) * dt
    if angle < 1e-12:
        return q
    axis = rates_body / np.linalg.norm(rates_body)
    half = 0.5 * angle
    dq = np.array([math.cos(half), *(math.sin(half) * axis)])
    out = quat_multiply(q, dq)
    return out / np.linalg.norm(out)
