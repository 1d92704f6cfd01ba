"""The flight controller's logic, transport-free: arming, modes, setpoints, timeouts, land detection, guidance.

`Autopilot` holds what both families share: the guidance tasks a mode runs (hold, take off, land, return,
brake, follow the companion's setpoints), the land detector and the landed state it reports, which commands
are flight commands, the setpoint store and the STATUSTEXT outbox. `ArduCopterAutopilot` (ardupilot.py) and
`Px4Autopilot` (px4.py) implement each family's mode table, command results and failsafes. Time is injected:
every input and `update` carries the vehicle clock `now_s`; nothing reads a wall clock, so lockstep and real
time run the same code.

The autopilot steers with the *true* state (a perfect estimator); telemetry noise is added on the way out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dreamlink.sim.quadrotor.controller import IDLE, OFF, ControlTarget
from dreamlink.sim.quadrotor.modes import FLAVOURS
from dreamlink.sim.quadrotor.physics import QuadState, yaw_of
from dreamlink.sim.quadrotor.setpoints import MAV_FRAME_BODY_NED, MAV_FRAME_BODY_OFFSET_NED, MAV_FRAME_LOCAL_OFFSET_NED

MAV_RESULT_ACCEPTED = 0
MAV_RESULT_TEMPORARILY_REJECTED = 1
MAV_RESULT_DENIED = 2
MAV_RESULT_UNSUPPORTED = 3
MAV_RESULT_FAILED = 4

MAV_SEVERITY_CRITICAL = 2
MAV_SEVERITY_WARNING = 4
MAV_SEVERITY_INFO = 6

MAV_STATE_UNINIT = 0
MAV_STATE_STANDBY = 3
MAV_STATE_ACTIVE = 4
MAV_STATE_CRITICAL = 5

MAV_LANDED_STATE_ON_GROUND = 1
MAV_LANDED_STATE_IN_AIR = 2
MAV_LANDED_STATE_TAKEOFF = 3
MAV_LANDED_STATE_LANDING = 4

FORCE_ARM_DISARM = 21196.0  # param2 magic number of both autopilots
MAV_TYPE_QUADROTOR = 2
# The commands `Autopilot.command` answers: ARM_DISARM, DO_SET_MODE, NAV_TAKEOFF, NAV_LAND, NAV_RETURN_TO_LAUNCH
FLIGHT_COMMANDS = (400, 176, 22, 21, 20)


@dataclass(frozen=True)
class AutopilotConfig:
    """Behaviour parameters; the defaults are the stock values in the two real logs."""

    flavour: str
    estimator_init_s: float = 1.0  # vehicle time until the estimator is usable (arming / position modes)
    guided_timeout_s: float = 3.0  # ArduCopter GUID_TIMEOUT
    offboard_loss_timeout_s: float = 1.0  # PX4 COM_OF_LOSS_T
    px4_offboard_loss_mode: str = "rtl"  # what COM_OBL_RC_ACT=0 resolves to without manual control, see px4.py
    px4_double_set_mode_ack: bool = True  # PX4 1.16.0 acks DO_SET_MODE twice, see px4.py
    preflight_disarm_s: float = 10.0  # ArduCopter DISARM_DELAY, PX4 COM_DISARM_PRFLT
    land_disarm_s: float = 2.0  # PX4 COM_DISARM_LAND (ArduCopter's LAND disarms at touchdown)
    land_detect_s: float = 1.0  # PX4 LNDMC_TRIG_TIME, ArduCopter LAND_DETECTOR_TRIGGER_SEC

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"AutopilotConfig.flavour: expected one of {FLAVOURS}, got {self.flavour!r}")
        if self.px4_offboard_loss_mode not in ("rtl", "land", "hold"):
            raise ValueError(f"AutopilotConfig.px4_offboard_loss_mode: expected rtl|land|hold, "
                             f"got {self.px4_offboard_loss_mode!r}")
        for name in ("estimator_init_s", "guided_timeout_s", "offboard_loss_timeout_s", "preflight_disarm_s",
                     "land_disarm_s", "land_detect_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"AutopilotConfig.{name}: expected a finite value >= 0 s, got {value!r}")


@dataclass(frozen=True)
class GuidanceLimits:
    """Kinematic limits of the autopilot's own trajectories (take-off, landing, return, braking, shaping)."""

    accel_xy_mps2: float
    jerk_xy_mps3: float
    accel_z_mps2: float
    cruise_mps: float
    climb_mps: float
    descend_mps: float
    land_mps: float  # final descent
    land_slow_below_m: float


def shape_velocity(vel: np.ndarray, acc: np.ndarray, vel_demand: np.ndarray, limits: GuidanceLimits,
                   dt: float) -> tuple[np.ndarray, np.ndarray]:
    """One step of an acceleration- and jerk-limited velocity reference toward `vel_demand` (a kinematic
    shaper in the spirit of ArduPilot's AC_PosControl input_vel_accel). Returns the new (velocity, accel)."""
    err = vel_demand - vel
    acc_want = 3.0 * err  # first-order approach, then limited
    h = math.hypot(acc_want[0], acc_want[1])
    if h > limits.accel_xy_mps2:
        acc_want[:2] *= limits.accel_xy_mps2 / h
    acc_want[2] = min(max(acc_want[2], -limits.accel_z_mps2), limits.accel_z_mps2)
    step = acc_want - acc
    max_step = limits.jerk_xy_mps3 * dt
    hs = math.hypot(step[0], step[1])
    if hs > max_step:
        step[:2] *= max_step / hs
    acc = acc + step
    vel = vel + acc * dt
    # never overshoot the demand on an axis the shaper is closing
    for i in range(3):
        if (vel[i] - vel_demand[i]) * err[i] > 0:
            vel[i], acc[i] = vel_demand[i], 0.0
    return vel, acc


def sqrt_controller(error: float, gain: float, accel: float) -> float:
    """ArduPilot's sqrt_controller (AP_Math/control.cpp): proportional close in, and beyond that the speed
    from which `accel` can still stop within the error, so references arrive without overshoot."""
    linear = accel / gain**2
    if error <= linear:
        return gain * error
    return math.sqrt(2.0 * accel * (error - 0.5 * linear))


@dataclass
class Task:
    """What the active mode is doing. `kind`: idle | client | hold | takeoff | land | rtl | brake | descend."""

    kind: str = "idle"
    point_ned: np.ndarray = field(default_factory=lambda: np.zeros(3))
    yaw_rad: float = 0.0
    target_alt_m: float = 0.0
    z_ref: float = 0.0
    phase: str = ""
    phase_since_s: float = 0.0
    done: bool = False


@dataclass
class AutopilotCounters:
    commands: int = 0
    setpoints: int = 0
    setpoints_ignored: int = 0
    setpoints_invalid: int = 0
    guided_timeouts: int = 0
    failsafes: int = 0


class Autopilot:
    """Shared logic; see the flavour subclasses for modes and command semantics."""

    limits: GuidanceLimits
    vtol_state: int = 0

    def __init__(self, config: AutopilotConfig) -> None:
        self.config = config
        self.armed = False
        self.landed = True
        self.ever_airborne = False
        self.task = Task()
        self.texts: list[tuple[int, str]] = []
        self.counters = AutopilotCounters()
        self.client: ControlTarget | None = None  # the companion's latest setpoint, as a control target
        self.client_kind = ""  # flavour-specific reading of it (e.g. "vel_accel", "velocity", "attitude")
        self.client_time_s = -math.inf
        self.last_target: ControlTarget = OFF
        self._shaped_pos = np.zeros(3)
        self._shaped_vel = np.zeros(3)
        self._shaped_acc = np.zeros(3)
        self._landed_candidate_since: float | None = None
        self._armed_at_s = 0.0
        self._ground_idle_since: float | None = None
        self._last_update_s: float | None = None
        self.estimator_fault = False  # set by the SITL's fault schedule: the EKF reports itself unhealthy
        self.estimator_bad_since_s: float | None = None

    # -- queries ------------------------------------------------------------------------------------------------

    def estimator_ok(self, now_s: float) -> bool:
        return now_s >= self.config.estimator_init_s and not self.estimator_fault

    def set_estimator_fault(self, bad: bool, now_s: float) -> None:
        """The estimator turns unhealthy (or recovers): health bits and reports follow, failsafes per flavour."""
        if bad and not self.estimator_fault:
            self.estimator_bad_since_s = now_s
        elif not bad:
            self.estimator_bad_since_s = None
        self.estimator_fault = bad

    def text(self, severity: int, message: str) -> None:
        self.texts.append((severity, message))

    def take_texts(self) -> list[tuple[int, str]]:
        out, self.texts = self.texts, []
        return out

    def landed_state(self) -> int:
        """EXTENDED_SYS_STATE.landed_state, as both families report it."""
        if self.landed:
            return MAV_LANDED_STATE_ON_GROUND
        if self.task.kind == "takeoff" and not self.task.done:
            return MAV_LANDED_STATE_TAKEOFF
        if self.landing():
            return MAV_LANDED_STATE_LANDING
        return MAV_LANDED_STATE_IN_AIR

    # -- commands -----------------------------------------------------------------------------------------------

    def command(self, command: int, params: Sequence[float], now_s: float, state: QuadState,
                source_component: int = 0, frame: int | None = None) -> list[int] | None:
        """Results to ACK (one per COMMAND_ACK), or None when the command is not a flight command. `frame` is
        COMMAND_INT's (None for COMMAND_LONG); what each command does is the flavour's."""
        self.counters.commands += 1
        if command == 400:  # MAV_CMD_COMPONENT_ARM_DISARM
            return [self.arm_disarm(params[0], params[1], now_s, state)]
        if command == 176:  # MAV_CMD_DO_SET_MODE
            return self.set_mode_command(params, now_s, state, source_component)
        if command == 22:  # MAV_CMD_NAV_TAKEOFF
            return [self.takeoff_command(params[6], frame, now_s, state)]
        if command == 21:  # MAV_CMD_NAV_LAND
            return [self.land_command(now_s, state)]
        if command == 20:  # MAV_CMD_NAV_RETURN_TO_LAUNCH
            return [self.return_command(now_s, state)]
        return None

    # -- guidance tasks ------------------------------------------------------------------------------------------

    def start_task(self, kind: str, now_s: float, state: QuadState, target_alt_m: float = 0.0) -> None:
        self.task = Task(kind=kind, point_ned=state.pos_ned_m.copy(), yaw_rad=yaw_of(state.q_ned_frd),
                         target_alt_m=target_alt_m, z_ref=float(state.pos_ned_m[2]), phase_since_s=now_s)
        self.reset_shaper(state)
        if kind == "rtl":
            self.task.phase = "climb"
            self.task.target_alt_m = self.rtl_altitude_m(state)
        if kind == "hold":  # hold where a braking vehicle would stop, not where the mode was entered
            speed = state.vel_ned_mps
            self.task.point_ned = state.pos_ned_m + speed * np.abs(speed) / (2 * self.limits.accel_xy_mps2)

    def rtl_altitude_m(self, state: QuadState) -> float:
        raise NotImplementedError

    def _shaped(self, vel_demand: np.ndarray, dt: float, state: QuadState, yaw_rad: float = math.nan,
                yaw_rate: float = math.nan, acc_ff: np.ndarray | None = None) -> ControlTarget:
        """Shape `vel_demand` and integrate it into a position reference that the position loop tracks (the
        kinematic target of ArduPilot's AC_PosControl; the reference stays within 2 m of the vehicle, PX4's
        MPC_XY_ERR_MAX), so a zero demand holds position instead of drifting."""
        self._shaped_vel, self._shaped_acc = shape_velocity(self._shaped_vel, self._shaped_acc, vel_demand,
                                                            self.limits, dt)
        self._shaped_pos = self._shaped_pos + self._shaped_vel * dt
        lag = self._shaped_pos - state.pos_ned_m
        n = float(np.linalg.norm(lag))
        if n > 2.0:
            self._shaped_pos = state.pos_ned_m + lag * (2.0 / n)
        acc = self._shaped_acc + (acc_ff if acc_ff is not None else 0.0)
        return ControlTarget("trajectory", pos_ned=_tuple(self._shaped_pos), vel_ned=_tuple(self._shaped_vel),
                             acc_ned=_tuple(acc), yaw_rad=yaw_rad, yaw_rate_radps=yaw_rate)

    def reset_shaper(self, state: QuadState) -> None:
        self._shaped_pos = state.pos_ned_m.copy()
        self._shaped_vel = state.vel_ned_mps.copy()
        self._shaped_acc = np.zeros(3)

    def _goto(self, point: np.ndarray, speed_mps: float, state: QuadState, dt: float) -> ControlTarget:
        """Fly toward `point` at up to `speed_mps` horizontally: a P law on the *reference* position (not the
        measured one), shaped, so the reference is a smooth kinematic trajectory the controller tracks."""
        err = point - self._shaped_pos
        demand = np.zeros(3)
        h = math.hypot(err[0], err[1])
        if h > 1e-6:
            demand[:2] = err[:2] / h * min(speed_mps, sqrt_controller(h, 1.0, 0.5 * self.limits.accel_xy_mps2))
        vz = sqrt_controller(abs(float(err[2])), 1.0, 0.5 * self.limits.accel_z_mps2)
        demand[2] = min(vz, self.limits.climb_mps) * -1.0 if err[2] < 0 else min(vz, self.limits.descend_mps)
        return self._shaped(demand, dt, state, yaw_rad=self.task.yaw_rad)

    def land_speed_mps(self, altitude_m: float) -> float:
        lim = self.limits
        return lim.land_mps if altitude_m < lim.land_slow_below_m else lim.descend_mps

    def task_target(self, now_s: float, state: QuadState, dt: float) -> ControlTarget:
        """The control target of the active task (the flavour fills in "client")."""
        t, lim = self.task, self.limits
        alt = -float(state.pos_ned_m[2])
        if t.kind == "idle":
            return IDLE
        if t.kind == "hold":
            return ControlTarget("trajectory", pos_ned=_tuple(t.point_ned), vel_ned=(0.0, 0.0, 0.0), yaw_rad=t.yaw_rad)
        if t.kind == "takeoff":
            target_z = -t.target_alt_m
            t.z_ref = max(t.z_ref - lim.climb_mps * dt, target_z)
            climbing = t.z_ref > target_z
            if not climbing and abs(state.pos_ned_m[2] - target_z) < 0.3 and not t.done:
                t.done = True
                self.on_takeoff_complete(now_s, state)
            return ControlTarget("trajectory", pos_ned=(float(t.point_ned[0]), float(t.point_ned[1]), t.z_ref),
                                 vel_ned=(0.0, 0.0, -lim.climb_mps if climbing else 0.0), yaw_rad=t.yaw_rad)
        if t.kind == "land":
            return ControlTarget("trajectory", pos_ned=(float(t.point_ned[0]), float(t.point_ned[1]), math.nan),
                                 vel_ned=(0.0, 0.0, self.land_speed_mps(alt)), yaw_rad=t.yaw_rad)
        if t.kind == "brake":
            target = self._shaped(np.zeros(3), dt, state, yaw_rad=t.yaw_rad)
            if float(np.linalg.norm(state.vel_ned_mps)) < 0.2 and float(np.linalg.norm(self._shaped_vel)) < 0.05:
                t.kind, t.point_ned = "hold", state.pos_ned_m.copy()
            return target
        if t.kind == "descend":  # level, descending at the maximum rate (no pilot throttle)
            return ControlTarget("attitude", q_ned_frd=(math.cos(t.yaw_rad / 2), 0.0, 0.0, math.sin(t.yaw_rad / 2)),
                                 vel_ned=(0.0, 0.0, lim.descend_mps))
        if t.kind == "rtl":
            return self._rtl_target(now_s, state, dt)
        raise AssertionError(f"task {t.kind!r} has no target here")

    def _rtl_target(self, now_s: float, state: QuadState, dt: float) -> ControlTarget:
        t, lim = self.task, self.limits
        home = np.zeros(3)
        if t.phase == "climb":
            point = np.array([t.point_ned[0], t.point_ned[1], -t.target_alt_m])
            if state.pos_ned_m[2] <= point[2] + 0.3:
                t.phase, t.phase_since_s = "return", now_s
            else:
                return self._goto(point, lim.cruise_mps, state, dt)
        if t.phase == "return":
            point = np.array([home[0], home[1], -t.target_alt_m])
            if math.hypot(*(state.pos_ned_m[:2] - point[:2])) < 0.5 and float(np.linalg.norm(state.vel_ned_mps)) < 0.3:
                t.phase, t.phase_since_s, t.point_ned = "loiter", now_s, point
            else:
                return self._goto(point, lim.cruise_mps, state, dt)
        if t.phase == "loiter":
            if now_s - t.phase_since_s >= self.rtl_loiter_s():
                t.phase, t.point_ned = "land", np.array([home[0], home[1], 0.0])
            else:
                return ControlTarget("trajectory", pos_ned=_tuple(t.point_ned), vel_ned=(0.0, 0.0, 0.0),
                                     yaw_rad=t.yaw_rad)
        return ControlTarget("trajectory", pos_ned=(float(home[0]), float(home[1]), math.nan),
                             vel_ned=(0.0, 0.0, self.land_speed_mps(-float(state.pos_ned_m[2]))), yaw_rad=t.yaw_rad)

    def rtl_loiter_s(self) -> float:
        return 0.0

    def landing(self) -> bool:
        return self.task.kind == "land" or (self.task.kind == "rtl" and self.task.phase == "land")

    # -- land detector, arming bookkeeping -----------------------------------------------------------------

    def update_land_detector(self, now_s: float, state: QuadState) -> None:
        alt = -float(state.pos_ned_m[2])
        if self.landed:
            if self.armed and (alt > 0.3 or (alt > 0.05 and state.vel_ned_mps[2] < -0.5)):
                self.landed = False
                self.ever_airborne = True
                self._landed_candidate_since = None
                self.on_takeoff_detected(now_s)
            return
        quiet = alt < 0.05 and abs(float(state.vel_ned_mps[2])) < 0.25 and math.hypot(*state.vel_ned_mps[:2]) < 1.5
        if not quiet:
            self._landed_candidate_since = None
            return
        if self._landed_candidate_since is None:
            self._landed_candidate_since = now_s
        elif now_s - self._landed_candidate_since >= self.config.land_detect_s:
            self.landed = True
            self._landed_candidate_since = None
            self._ground_idle_since = now_s
            self.on_landing_detected(now_s)

    def set_armed(self, armed: bool, now_s: float, state: QuadState) -> None:
        self.armed = armed
        self._armed_at_s = now_s
        self._ground_idle_since = now_s if armed else None
        if not armed:
            self.task = Task()
            self.ever_airborne = False
            self.landed = bool(state.on_ground or -state.pos_ned_m[2] < 0.05) or self.landed

    def wants_takeoff(self, target: ControlTarget, state: QuadState) -> bool:
        """Would this target lift a landed vehicle? (Otherwise the motors stay at ground idle.)"""
        if target.kind == "attitude":
            if math.isfinite(target.thrust_frac):
                return target.thrust_frac > 0.2
            return math.isfinite(target.vel_ned[2]) and target.vel_ned[2] < -0.1
        if target.kind != "trajectory":
            return False
        z_sp, vz_sp, az_sp = target.pos_ned[2], target.vel_ned[2], target.acc_ned[2]
        if math.isfinite(z_sp):
            return z_sp < float(state.pos_ned_m[2]) - 0.1
        if math.isfinite(vz_sp):
            return vz_sp < -0.1
        return math.isfinite(az_sp) and az_sp < -0.5

    def update(self, now_s: float, state: QuadState) -> ControlTarget:
        """Run the mode logic for one guidance period and return what the controller should do."""
        dt = 0.0 if self._last_update_s is None else max(now_s - self._last_update_s, 0.0)
        self._last_update_s = now_s
        self.update_land_detector(now_s, state)
        self.update_mode(now_s, state)
        if not self.armed:
            self.last_target = OFF
            return OFF
        target = self.client_target(now_s, state, dt) if self.task.kind == "client" else \
            self.task_target(now_s, state, dt)
        if self.landed and not self.wants_takeoff(target, state):
            target = IDLE
        self.last_target = target
        self.auto_disarm(now_s, state, target)
        return target if self.armed else OFF

    # -- flavour hooks -------------------------------------------------------------------------------------------

    def arm_disarm(self, action: float, param2: float, now_s: float, state: QuadState) -> int:
        """MAV_CMD_COMPONENT_ARM_DISARM (param1 1 arm / 0 disarm, param2 `FORCE_ARM_DISARM` forces)."""
        raise NotImplementedError

    def set_mode_command(self, params: Sequence[float], now_s: float, state: QuadState,
                         source_component: int) -> list[int]:
        """MAV_CMD_DO_SET_MODE: the results to ACK (PX4 1.16 ACKs twice)."""
        raise NotImplementedError

    def takeoff_command(self, param7: float, frame: int | None, now_s: float, state: QuadState) -> int:
        """MAV_CMD_NAV_TAKEOFF; `param7` is the altitude in the flavour's reference."""
        raise NotImplementedError

    def land_command(self, now_s: float, state: QuadState) -> int:
        raise NotImplementedError

    def return_command(self, now_s: float, state: QuadState) -> int:
        raise NotImplementedError

    def update_mode(self, now_s: float, state: QuadState) -> None:
        """Timeouts, failsafes and mode completions (flavour)."""

    def client_target(self, now_s: float, state: QuadState, dt: float) -> ControlTarget:
        raise NotImplementedError

    def auto_disarm(self, now_s: float, state: QuadState, target: ControlTarget) -> None:
        raise NotImplementedError

    def on_takeoff_complete(self, now_s: float, state: QuadState) -> None:
        pass

    def on_takeoff_detected(self, now_s: float) -> None:
        pass

    def on_landing_detected(self, now_s: float) -> None:
        pass


def to_local_ned(frame: int, values: tuple[float, float, float], state: QuadState, is_position: bool
                 ) -> tuple[float, float, float]:
    """A setpoint vector in MAV_FRAME_LOCAL_NED. BODY_NED / BODY_OFFSET_NED rotate x/y by the heading; offset
    and body frames add the current position to positions (ArduCopter's handler; PX4 reads BODY_NED alike)."""
    x, y, z = values
    if frame in (MAV_FRAME_BODY_NED, MAV_FRAME_BODY_OFFSET_NED):
        yaw = yaw_of(state.q_ned_frd)
        x, y = math.cos(yaw) * x - math.sin(yaw) * y, math.sin(yaw) * x + math.cos(yaw) * y
    if is_position and frame in (MAV_FRAME_LOCAL_OFFSET_NED, MAV_FRAME_BODY_NED, MAV_FRAME_BODY_OFFSET_NED):
        x, y, z = x + state.pos_ned_m[0], y + state.pos_ned_m[1], z + state.pos_ned_m[2]
    return float(x), float(y), float(z)


def _tuple(v: np.ndarray) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])
