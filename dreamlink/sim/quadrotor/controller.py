"""The autopilot's own cascaded controller: position -> velocity -> acceleration/thrust -> attitude -> rates -> motors.

Why our own rather than rotorpy's `SE3Control`: SE3Control is a geometric position controller (Lee et al.) that
(a) is handed the true mass and inertia, so a randomised airframe would never show model error, (b) has no
integrator, so wind and mass error leave a steady offset, and (c) takes a full position+velocity+acceleration
reference, while MAVLink setpoints arrive per axis with any of position, velocity or acceleration missing, or as
an attitude + thrust target. Real autopilots are cascades that can be entered at any level; this one follows the
structure of PX4's `mc_pos_control` (PositionControl.cpp: P position loop, PID velocity loop producing an
acceleration, thrust vector with vertical priority under a tilt limit, `bodyzToAttitude`), `mc_att_control`
(quaternion attitude P to a rate setpoint) and `mc_rate_control` (rate PI), with physical units: the
controller knows the *nominal* airframe (`QuadParams` before randomisation), so its hover-thrust guess is wrong
by the randomised mass error until the velocity integrator takes it up, as on a real vehicle.

Rates: the position/velocity loop runs at 100 Hz (every `OUTER_EVERY` substeps, PX4's mc_pos_control rate),
attitude, rates and mixer at 400 Hz (every physics substep).

Setpoint convention (the one PX4 uses inside, `trajectory_setpoint`): NaN means "not controlled". Per axis:
a finite position is tracked with the velocity as feed-forward; otherwise a finite velocity is tracked with
the acceleration as feed-forward; otherwise a finite acceleration is applied; an axis with nothing holds zero
velocity. Yaw: a finite yaw is tracked (yaw rate as feed-forward), else a finite yaw rate is integrated, else
the heading is held.

Gains are per flavour (`ARDUPILOT_GAINS`, `PX4_GAINS`), taken from the stock parameters in the two real logs
under ../shared/data/sitl-logs (PSC_* for ArduCopter 4.8, MPC_*/MC_* for PX4 1.16) where the units carry
over, and tuned for this airframe where they do not (the rate loops: real ones are normalised to actuator
range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rotorpy.vehicles.multirotor import Multirotor

from dreamlink.sim.quadrotor.physics import (
    GRAVITY_MPS2,
    QuadParams,
    QuadState,
    cross,
    quat_multiply,
    quat_to_rotation,
    yaw_of,
)

NAN3 = (math.nan, math.nan, math.nan)
OUTER_EVERY = 4  # substeps per position/velocity-loop update
_FLU = np.array([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class ControllerGains:
    """Loop gains (1/s unless stated) and limits of one autopilot flavour."""

    pos_p_xy: float
    pos_p_z: float
    vel_p_xy: float
    vel_i_xy: float
    vel_d_xy: float
    vel_p_z: float
    vel_i_z: float
    vel_i_limit_mps2: float
    max_speed_xy_mps: float
    max_climb_mps: float
    max_descent_mps: float
    max_tilt_rad: float
    att_p_rp: float
    att_p_yaw: float
    max_rate_rp_radps: float
    max_rate_yaw_radps: float
    rate_p_rp: float
    rate_i_rp: float
    rate_p_yaw: float
    rate_i_yaw: float
    idle_thrust_frac: float = 0.05  # armed on the ground (MOT_SPIN_ARM / PX4 idle)
    min_thrust_frac: float = 0.08  # flying (MOT_SPIN_MIN / MPC_THR_MIN)


# ArduCopter 4.8 defaults from the log: PSC_NE_POS_P 1, PSC_NE_VEL_P 2 / I 1 / D 0.25, PSC_D_POS_P 1,
# PSC_D_VEL_P 5, ANGLE_MAX 30 deg, ATC_ANG_*_P 4.5, WPNAV speeds 10 / 2.5 / 1.5 m/s.
ARDUPILOT_GAINS = ControllerGains(
    pos_p_xy=1.0, pos_p_z=1.0, vel_p_xy=2.0, vel_i_xy=1.0, vel_d_xy=0.25, vel_p_z=5.0, vel_i_z=2.0,
    vel_i_limit_mps2=3.0, max_speed_xy_mps=10.0, max_climb_mps=2.5, max_descent_mps=1.5,
    max_tilt_rad=math.radians(30.0), att_p_rp=4.5, att_p_yaw=4.5, max_rate_rp_radps=math.radians(200.0),
    max_rate_yaw_radps=math.radians(90.0), rate_p_rp=20.0, rate_i_rp=10.0, rate_p_yaw=8.0, rate_i_yaw=2.0)

# PX4 1.16 defaults from the log: MPC_XY_P 0.95, MPC_XY_VEL_P/I/D_ACC 1.8/0.4/0.2, MPC_Z_P 1,
# MPC_Z_VEL_P/I_ACC 4/2, MPC_TILTMAX_AIR 45 deg, MC_ROLL_P 6.5, MC_YAW_P 2.8, MC_*RATE_MAX 220/200 deg/s,
# MPC_XY_VEL_MAX 12, MPC_Z_VEL_MAX_UP 3, MPC_Z_VEL_MAX_DN 1.5.
PX4_GAINS = ControllerGains(
    pos_p_xy=0.95, pos_p_z=1.0, vel_p_xy=1.8, vel_i_xy=0.4, vel_d_xy=0.2, vel_p_z=4.0, vel_i_z=2.0,
    vel_i_limit_mps2=4.0, max_speed_xy_mps=12.0, max_climb_mps=3.0, max_descent_mps=1.5,
    max_tilt_rad=math.radians(45.0), att_p_rp=6.5, att_p_yaw=2.8, max_rate_rp_radps=math.radians(220.0),
    max_rate_yaw_radps=math.radians(200.0), rate_p_rp=25.0, rate_i_rp=10.0, rate_p_yaw=8.0, rate_i_yaw=2.0)


@dataclass(frozen=True)
class ControlTarget:
    """What the autopilot asks of the controller for the next substeps. Kinds:

    - "trajectory": per-axis position / velocity / acceleration (NED) and yaw, NaN = not controlled;
    - "attitude": `q_ned_frd` (w-x-y-z; NaN = rates only) and/or `body_rates_frd_radps`, with either
      `thrust_frac` (0..1 of maximum thrust) or, when that is NaN, a climb rate `vel_ned[2]` held by the
      vertical velocity loop (ArduPilot's default reading of SET_ATTITUDE_TARGET.thrust);
    - "idle": armed on the ground, motors at idle; "off": disarmed, motors stopped.
    """

    kind: str = "off"
    pos_ned: tuple[float, float, float] = NAN3
    vel_ned: tuple[float, float, float] = NAN3
    acc_ned: tuple[float, float, float] = NAN3
    yaw_rad: float = math.nan
    yaw_rate_radps: float = math.nan
    q_ned_frd: tuple[float, float, float, float] = (math.nan, math.nan, math.nan, math.nan)
    body_rates_frd_radps: tuple[float, float, float] = NAN3
    thrust_frac: float = math.nan

    def __post_init__(self) -> None:
        if self.kind not in ("trajectory", "attitude", "idle", "off"):
            raise ValueError(f"ControlTarget.kind: expected trajectory|attitude|idle|off, got {self.kind!r}")


OFF = ControlTarget("off")
IDLE = ControlTarget("idle")


def hold_position(pos_ned: np.ndarray, yaw_rad: float) -> ControlTarget:
    return ControlTarget("trajectory", pos_ned=(float(pos_ned[0]), float(pos_ned[1]), float(pos_ned[2])),
                         vel_ned=(0.0, 0.0, 0.0), yaw_rad=yaw_rad)


def attitude_from_thrust_dir(z_body_ned: np.ndarray, yaw_rad: float) -> np.ndarray:
    """Rotation (FRD -> NED) whose body z axis is `z_body_ned` (unit) and whose heading is `yaw_rad`
    (PX4 ControlMath::bodyzToAttitude)."""
    x_c = np.array([math.cos(yaw_rad), math.sin(yaw_rad), 0.0])
    y_b = cross(z_body_ned, x_c)
    n = float(np.linalg.norm(y_b))
    y_b = y_b / n if n > 1e-6 else np.array([-math.sin(yaw_rad), math.cos(yaw_rad), 0.0])
    x_b = cross(y_b, z_body_ned)
    return np.column_stack([x_b, y_b, z_body_ned])


def rotation_to_quat(r: np.ndarray) -> np.ndarray:
    """3x3 rotation -> w-x-y-z unit quaternion with w >= 0 (Shepperd's method)."""
    tr = r[0, 0] + r[1, 1] + r[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    out = np.array(q)
    return -out if out[0] < 0 else out


def thrust_vector(acc_sp_ned: np.ndarray, mass_kg: float, max_tilt_rad: float, min_thrust_n: float,
                  max_thrust_n: float) -> np.ndarray:
    """Force (NED, N) the rotors must produce for `acc_sp_ned`, tilt-limited with vertical priority and clamped
    to the thrust range (PX4 PositionControl::_accelerationControl + ControlMath::limitTilt)."""
    f = mass_kg * (acc_sp_ned - np.array([0.0, 0.0, GRAVITY_MPS2]))
    f_up = max(-f[2], min_thrust_n)  # always push upwards
    horiz = math.hypot(f[0], f[1])
    max_horiz = f_up * math.tan(max_tilt_rad)
    scale = max_horiz / horiz if horiz > max_horiz and horiz > 0 else 1.0
    f = np.array([f[0] * scale, f[1] * scale, -f_up])
    norm = float(np.linalg.norm(f))
    if norm > max_thrust_n:  # keep the vertical part first, give what is left to the horizontal
        f_up = min(f_up, max_thrust_n)
        room = math.sqrt(max(max_thrust_n**2 - f_up**2, 0.0))
        horiz = math.hypot(f[0], f[1])
        k = min(1.0, room / horiz) if horiz > 0 else 1.0
        f = np.array([f[0] * k, f[1] * k, -f_up])
    return f


@dataclass
class ControllerOutput:
    """What the controller did last substep: motor commands and the targets it derived (telemetry echoes)."""

    rotor_speed_cmd_radps: np.ndarray = field(default_factory=lambda: np.zeros(4))
    q_sp_ned_frd: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    rates_sp_frd_radps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    thrust_frac: float = 0.0
    vel_sp_ned: np.ndarray = field(default_factory=lambda: np.zeros(3))
    acc_sp_ned: np.ndarray = field(default_factory=lambda: np.zeros(3))


class Controller:
    """The cascade with its integrators. `update(target, state, dt)` -> rotor speed commands (rad/s, [4])."""

    def __init__(self, nominal: QuadParams, gains: ControllerGains) -> None:
        self.nominal = nominal
        self.gains = gains
        self._alloc = Multirotor(nominal.rotorpy_params(), control_abstraction="cmd_motor_speeds").TM_to_f
        self._inertia = np.diag(nominal.inertia_kgm2)
        self._f_max = nominal.thrust_coeff * nominal.rotor_speed_max_radps**2
        self.output = ControllerOutput()
        self._outer: tuple[np.ndarray, float, float] | None = None  # (q_sp, yaw_rate_ff, thrust_n) held between runs
        self._outer_target: ControlTarget | None = None
        self._outer_age = 0
        self.reset(None)

    def reset(self, state: QuadState | None) -> None:
        """Zero the integrators and latch the heading (on the ground, at arming, on a mode change)."""
        self._vel_int = np.zeros(3)
        self._rate_int = np.zeros(3)
        self._outer = None
        self._yaw_ref = yaw_of(state.q_ned_frd) if state is not None else 0.0

    def update(self, target: ControlTarget, state: QuadState, dt: float) -> np.ndarray:
        out = self.output
        if target.kind == "off":
            out.rotor_speed_cmd_radps = np.zeros(4)
            out.thrust_frac = 0.0
            self.reset(state)
            return out.rotor_speed_cmd_radps
        if target.kind == "idle":
            self.reset(state)
            return self._mix(self.gains.idle_thrust_frac * self.nominal.max_thrust_n, np.zeros(3))
        if target.kind == "trajectory":
            # the position/velocity loop runs every OUTER_EVERY substeps (100 Hz, PX4's mc_pos_control rate),
            # or at once for a new target; attitude and rates run every substep
            self._outer_age += 1
            if self._outer is None or target is not self._outer_target or self._outer_age >= OUTER_EVERY:
                self._outer = self._trajectory(target, state, dt * max(self._outer_age, 1))
                self._outer_target, self._outer_age = target, 0
            q_sp, yaw_rate_ff, thrust_n = self._outer
            rates_sp = self._attitude(q_sp, yaw_rate_ff, state)
        else:
            q_sp, rates_sp, thrust_n = self._attitude_target(target, state, dt)
        return self._mix(thrust_n, self._rates(rates_sp, state, dt))

    # -- position / velocity -------------------------------------------------------------------------------

    def _trajectory(self, t: ControlTarget, state: QuadState, dt: float) -> tuple[np.ndarray, float, float]:
        g = self.gains
        pos_sp, vel_ff, acc_ff = np.array(t.pos_ned), np.array(t.vel_ned), np.array(t.acc_ned)
        kp = np.array([g.pos_p_xy, g.pos_p_xy, g.pos_p_z])
        vel_sp = np.where(np.isfinite(pos_sp), kp * (_zero_nan(pos_sp) - state.pos_ned_m) + _zero_nan(vel_ff), vel_ff)
        acc_only = ~np.isfinite(vel_sp) & np.isfinite(acc_ff)
        vel_sp = np.where(np.isfinite(vel_sp) | acc_only, vel_sp, 0.0)  # nothing on an axis: hold still
        horiz = math.hypot(vel_sp[0], vel_sp[1]) if not acc_only[:2].any() else 0.0
        if horiz > g.max_speed_xy_mps:
            vel_sp[:2] *= g.max_speed_xy_mps / horiz
        if math.isfinite(vel_sp[2]):
            vel_sp[2] = min(max(vel_sp[2], -g.max_climb_mps), g.max_descent_mps)
        self.output.vel_sp_ned = vel_sp.copy()
        err = _zero_nan(vel_sp) - state.vel_ned_mps
        kp_v = np.array([g.vel_p_xy, g.vel_p_xy, g.vel_p_z])
        ki_v = np.array([g.vel_i_xy, g.vel_i_xy, g.vel_i_z])
        kd_v = np.array([g.vel_d_xy, g.vel_d_xy, 0.0])
        acc_sp = kp_v * err + self._vel_int - kd_v * state.accel_ned_mps2 + _zero_nan(acc_ff)
        acc_sp = np.where(acc_only, acc_ff, acc_sp)
        f = thrust_vector(acc_sp, self.nominal.mass_kg, g.max_tilt_rad, g.min_thrust_frac * self.nominal.max_thrust_n,
                          self.nominal.max_thrust_n)
        # integrate only while the thrust is not saturated in that direction (PX4's anti-windup)
        achieved = f / self.nominal.mass_kg + np.array([0.0, 0.0, GRAVITY_MPS2])
        unsaturated = np.abs(achieved - acc_sp) < 0.5
        self._vel_int = np.where(~acc_only & unsaturated, self._vel_int + ki_v * err * dt, self._vel_int)
        self._vel_int = np.clip(self._vel_int, -g.vel_i_limit_mps2, g.vel_i_limit_mps2)
        self.output.acc_sp_ned = acc_sp
        yaw_rate_ff = 0.0
        if math.isfinite(t.yaw_rad):
            self._yaw_ref = t.yaw_rad
            yaw_rate_ff = t.yaw_rate_radps if math.isfinite(t.yaw_rate_radps) else 0.0
        elif math.isfinite(t.yaw_rate_radps):
            yaw_rate_ff = max(-g.max_rate_yaw_radps, min(g.max_rate_yaw_radps, t.yaw_rate_radps))
            self._yaw_ref = _wrap(self._yaw_ref + yaw_rate_ff * dt)
        thrust_n = float(np.linalg.norm(f))  # PX4 commands the full norm along body z, not a projection
        q_sp = rotation_to_quat(attitude_from_thrust_dir(-f / thrust_n, self._yaw_ref))
        return q_sp, yaw_rate_ff, thrust_n

    # -- attitude ---------------------------------------------------------------------------------------------

    def _attitude_target(self, t: ControlTarget, state: QuadState, dt: float
                         ) -> tuple[np.ndarray, np.ndarray, float]:
        g = self.gains
        rates_ff = _zero_nan(np.array(t.body_rates_frd_radps))
        q_t = np.array(t.q_ned_frd)
        if np.all(np.isfinite(q_t)):
            q_sp = q_t / np.linalg.norm(q_t)
            rates_sp = self._attitude(q_sp, 0.0, state) + rates_ff
            self._yaw_ref = yaw_of(q_sp)
        else:
            q_sp = state.q_ned_frd.copy()
            rates_sp = rates_ff
        rates_sp = np.clip(rates_sp, [-g.max_rate_rp_radps] * 2 + [-g.max_rate_yaw_radps],
                           [g.max_rate_rp_radps] * 2 + [g.max_rate_yaw_radps])
        if math.isfinite(t.thrust_frac):
            thrust_n = min(max(t.thrust_frac, 0.0), 1.0) * self.nominal.max_thrust_n
        else:  # climb-rate reading: the vertical velocity loop makes the thrust, tilt comes from q_sp
            climb = t.vel_ned[2] if math.isfinite(t.vel_ned[2]) else 0.0
            err = climb - state.vel_ned_mps[2]
            acc_z = g.vel_p_z * err + self._vel_int[2]
            self._vel_int[2] = float(np.clip(self._vel_int[2] + g.vel_i_z * err * dt, -g.vel_i_limit_mps2,
                                             g.vel_i_limit_mps2))
            z_body = quat_to_rotation(state.q_ned_frd)[:, 2]
            tilt_cos = max(float(z_body[2]), 0.5)
            thrust_n = self.nominal.mass_kg * (GRAVITY_MPS2 - acc_z) / tilt_cos
        self.output.q_sp_ned_frd = q_sp
        return q_sp, rates_sp, float(thrust_n)

    def _attitude(self, q_sp: np.ndarray, yaw_rate_ff: float, state: QuadState) -> np.ndarray:
        g = self.gains
        self.output.q_sp_ned_frd = q_sp
        q = state.q_ned_frd
        q_err = quat_multiply(np.array([q[0], -q[1], -q[2], -q[3]]), q_sp)
        if q_err[0] < 0:
            q_err = -q_err
        rates = 2.0 * np.array([g.att_p_rp, g.att_p_rp, g.att_p_yaw]) * q_err[1:]
        # yaw-rate feed-forward is about the world z axis; express it in the body
        rates += quat_to_rotation(q)[2, :] * yaw_rate_ff
        return np.clip(rates, [-g.max_rate_rp_radps] * 2 + [-g.max_rate_yaw_radps],
                       [g.max_rate_rp_radps] * 2 + [g.max_rate_yaw_radps])

    def _rates(self, rates_sp: np.ndarray, state: QuadState, dt: float) -> np.ndarray:
        g = self.gains
        self.output.rates_sp_frd_radps = rates_sp
        w = state.rates_frd_radps
        err = rates_sp - w
        kp = np.array([g.rate_p_rp, g.rate_p_rp, g.rate_p_yaw])
        ki = np.array([g.rate_i_rp, g.rate_i_rp, g.rate_i_yaw])
        self._rate_int = np.clip(self._rate_int + ki * err * dt, -5.0, 5.0)
        alpha = kp * err + self._rate_int
        return self._inertia @ alpha + cross(w, self._inertia @ w)

    # -- mixer -------------------------------------------------------------------------------------------------

    def _mix(self, thrust_n: float, moment_frd: np.ndarray) -> np.ndarray:
        """Rotor forces from rotorpy's allocation; the moments are scaled back until no motor saturates
        (collective thrust first, as with PX4's mixer with airmode off)."""
        thrust_n = min(max(thrust_n, 0.0), self.nominal.max_thrust_n)
        f_t = self._alloc @ np.array([thrust_n, 0.0, 0.0, 0.0])
        f_m = self._alloc @ np.concatenate(([0.0], _FLU * moment_frd))
        k = 1.0
        for ft, fm in zip(f_t, f_m, strict=True):
            if fm > 0 and ft + fm > self._f_max:
                k = min(k, max(self._f_max - ft, 0.0) / fm)
            elif fm < 0 and ft + fm < 0.0:
                k = min(k, ft / -fm)
        forces = np.clip(f_t + k * f_m, 0.0, self._f_max)
        self.output.thrust_frac = thrust_n / self.nominal.max_thrust_n
        self.output.rotor_speed_cmd_radps = np.sqrt(forces / self.nominal.thrust_coeff)
        return self.output.rotor_speed_cmd_radps


def _zero_nan(v: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(v), v, 0.0)


def _wrap(angle_rad: float) -> float:
    return (angle_rad + math.pi) % (2 * math.pi) - math.pi
