"""ArduCopter's MAVLink behaviour (4.x, as in the ArduCopter V4.8.0-dev log under ../shared/data/sitl-logs).

Sources: ArduCopter/GCS_MAVLink_Copter.cpp (base_mode, system status, landed state, NAV_TAKEOFF,
SET_POSITION_TARGET_LOCAL_NED / SET_ATTITUDE_TARGET handlers), ArduCopter/mode_guided.cpp (GUID_TIMEOUT),
ArduCopter/AP_Arming.cpp (arming messages), libraries/GCS_MAVLink/GCS_Common.cpp (DO_SET_MODE), the dev page
"Copter Commands in Guided Mode" (ardupilot.org/dev/docs/copter-commands-in-guided-mode.html) and the log.

- Boots in STABILIZE (custom_mode 0). HEARTBEAT system_status is STANDBY while landed (`ap.land_complete`),
  ACTIVE in the air. EXTENDED_SYS_STATE vtol_state is MAV_VTOL_STATE_MC (3), as in the log.
- ARM: FAILED with a CRITICAL STATUSTEXT "PreArm: Waiting for Nav Checks" until the estimator is ready, or
  "Arm: Mode not armable" in RTL/LAND/BRAKE; ACCEPTED + "Arming motors" otherwise (param2 21196 skips checks).
  DISARM in the air: FAILED unless forced with 21196.
- DO_SET_MODE: param1 must carry MAV_MODE_FLAG_CUSTOM_MODE_ENABLED (else DENIED), param2 = mode number. A
  position mode without a position estimate is FAILED with "Mode change to GUIDED failed: requires position";
  an unknown number with "No such mode N". The SET_MODE message does the same without a COMMAND_ACK (AP
  stopped acking it, ArduPilot PR #14452).
- NAV_TAKEOFF (param7 = altitude above home, m; COMMAND_INT needs MAV_FRAME_GLOBAL_RELATIVE_ALT): armed,
  landed, in GUIDED or LOITER, above the current altitude -> ACCEPTED and climb at WPNAV_SPEED_UP; else FAILED.
  EXTENDED_SYS_STATE says TAKEOFF until the altitude is reached; GUIDED then holds there.
- NAV_LAND / NAV_RETURN_TO_LAUNCH switch to LAND / RTL. LAND disarms at touchdown ("Disarming motors").
  Landed and idle in any other mode: disarm after DISARM_DELAY (10 s).
- SET_POSITION_TARGET_LOCAL_NED only in GUIDED (silently ignored otherwise). Frames LOCAL_NED, LOCAL_OFFSET_NED,
  BODY_NED, BODY_OFFSET_NED. Whole groups: pos+vel(+acc), vel(+acc), acc, pos; anything else, NaN / >1000
  velocities or FORCE_SET with acceleration stop the vehicle (position hold). Setpoints never lift a landed
  vehicle: GUIDED needs NAV_TAKEOFF (`is_disarmed_or_landed()` keeps the motors at ground idle).
- Velocity / acceleration / attitude targets time out after GUID_TIMEOUT (3 s): the velocity target is set
  to zero and the vehicle brakes to a stop and holds, still in GUIDED (mode_guided.cpp velaccel_control_run).
  Position targets do not time out. Inputs are shaped with WPNAV_ACCEL 2.5 m/s^2 and PSC_JERK_NE 5 m/s^3.
- EKF failsafe (ArduCopter/ekf_check.cpp): once the estimator has been unhealthy for 1 s (10 checks at
  10 Hz) while armed and flying, "EKF variance" and the FS_EKF_ACTION default, LAND ("EKF Failsafe: changed
  to LAND Mode"); position modes are refused meanwhile ("requires position").
- SET_ATTITUDE_TARGET (GUIDED): quaternion (unit length within 1e-3) and/or all three body rates; thrust is a
  climb rate by default: 0.5 holds altitude, 1 climbs at WPNAV_SPEED_UP, 0 descends at WPNAV_SPEED_DN.
  A positive climb rate takes a landed vehicle off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from dreamlink.sim.quadrotor.autopilot import (
    FORCE_ARM_DISARM,
    MAV_RESULT_ACCEPTED,
    MAV_RESULT_DENIED,
    MAV_RESULT_FAILED,
    MAV_RESULT_UNSUPPORTED,
    MAV_SEVERITY_CRITICAL,
    MAV_SEVERITY_INFO,
    MAV_SEVERITY_WARNING,
    MAV_STATE_ACTIVE,
    MAV_STATE_STANDBY,
    MAV_TYPE_QUADROTOR,
    Autopilot,
    AutopilotConfig,
    GuidanceLimits,
    to_local_ned,
)
from dreamlink.sim.quadrotor.controller import IDLE, NAN3, ControlTarget
from dreamlink.sim.quadrotor.modes import (
    COPTER_NOT_ARMABLE,
    COPTER_REQUIRES_POSITION,
    COPTER_SIMULATED,
    MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
    CopterMode,
    copter_base_mode,
    copter_mode_name,
)
from dreamlink.sim.quadrotor.params import ParamTable
from dreamlink.sim.quadrotor.physics import QuadState, yaw_of
from dreamlink.sim.quadrotor.setpoints import (
    ARDUPILOT_FRAMES,
    ardupilot_guided_submode,
    decode_attitude_target_mask,
    decode_position_target_mask,
)

MAV_AUTOPILOT_ARDUPILOTMEGA = 3
MAV_FRAME_GLOBAL_RELATIVE_ALT = 3
_TAKEOFF_MODES = (CopterMode.GUIDED, CopterMode.LOITER, CopterMode.POSHOLD)
# WPNAV_SPEED_UP / _DN (m/s): the climb-rate reading of SET_ATTITUDE_TARGET.thrust
_SPEED_UP_MPS, _SPEED_DN_MPS = 2.5, 1.5
EKF_CHECK_S = 1.0  # EKF_CHECK_ITERATIONS_MAX (10) checks at 10 Hz


class ArduCopterAutopilot(Autopilot):
    """ArduCopter's modes and MAVLink command semantics."""

    # The parameters (names and defaults as in the 4.8-dev log) that shape guided flight, settable over MAVLink
    # (sim/quadrotor/params.py); LAND_SPD_MS 0.5 below LAND_ALT_LOW_M 10 stay fixed.
    PARAM_DEFAULTS: ClassVar[Mapping[str, float]] = {
        "WP_ACC": 2.5, "PSC_JERK_NE": 5.0, "WP_ACC_Z": 1.0, "WP_SPD": 10.0, "WP_SPD_UP": 2.5, "WP_SPD_DN": 1.5}

    @property
    def limits(self) -> GuidanceLimits:  # type: ignore[override]
        """From the parameters, rebuilt only after a PARAM_SET (read at the physics rate)."""
        p = self.params
        if self._limits_at != p.sets:
            self._limits = GuidanceLimits(
                accel_xy_mps2=p["WP_ACC"], jerk_xy_mps3=p["PSC_JERK_NE"], accel_z_mps2=p["WP_ACC_Z"],
                cruise_mps=p["WP_SPD"], climb_mps=p["WP_SPD_UP"], descend_mps=p["WP_SPD_DN"], land_mps=0.5,
                land_slow_below_m=10.0)
            self._limits_at = p.sets
        return self._limits
    vtol_state = 3  # MAV_VTOL_STATE_MC, as ArduCopter reports it
    rtl_alt_m = 15.0  # RTL_ALT_M
    rtl_loiter_time_s = 5.0  # RTL_LOIT_TIME

    def __init__(self, config: AutopilotConfig) -> None:
        super().__init__(config)
        self.params = ParamTable(self.PARAM_DEFAULTS)
        self._limits_at = -1
        self.mode = int(CopterMode.STABILIZE)
        self._client_pos = np.zeros(3)
        self._client_vel = np.zeros(3)
        self._client_acc = np.zeros(3)
        self._client_yaw = math.nan
        self._client_yaw_rate = math.nan
        self._timed_out = False

    # -- reporting ------------------------------------------------------------------------------------------------

    @property
    def mode_name(self) -> str:
        return copter_mode_name(self.mode)

    def heartbeat(self) -> tuple[int, int, int, int, int]:
        status = MAV_STATE_STANDBY if self.landed else MAV_STATE_ACTIVE
        base_mode = copter_base_mode(self.mode, self.armed)
        return MAV_TYPE_QUADROTOR, MAV_AUTOPILOT_ARDUPILOTMEGA, base_mode, self.mode, status

    def prearm_ok(self, now_s: float) -> bool:
        return self.estimator_ok(now_s) and self.mode not in COPTER_NOT_ARMABLE

    def rtl_altitude_m(self, state: QuadState) -> float:
        return max(self.rtl_alt_m, -float(state.pos_ned_m[2]))

    def rtl_loiter_s(self) -> float:
        return self.rtl_loiter_time_s

    # -- commands -----------------------------------------------------------------------------------------------

    def set_mode_command(self, params: Sequence[float], now_s: float, state: QuadState,
                         source_component: int) -> list[int]:
        if not int(params[0]) & MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
            return [MAV_RESULT_DENIED]
        return [MAV_RESULT_ACCEPTED if self.set_mode(int(params[1]), now_s, state) else MAV_RESULT_FAILED]

    def takeoff_command(self, param7: float, frame: int | None, now_s: float, state: QuadState) -> int:
        """param7: altitude above home (m); COMMAND_INT only in MAV_FRAME_GLOBAL_RELATIVE_ALT."""
        if frame is not None and frame != MAV_FRAME_GLOBAL_RELATIVE_ALT:
            return MAV_RESULT_DENIED
        return MAV_RESULT_ACCEPTED if self._user_takeoff(param7, now_s, state) else MAV_RESULT_FAILED

    def land_command(self, now_s: float, state: QuadState) -> int:
        return MAV_RESULT_ACCEPTED if self.set_mode(CopterMode.LAND, now_s, state) else MAV_RESULT_FAILED

    def return_command(self, now_s: float, state: QuadState) -> int:
        return MAV_RESULT_ACCEPTED if self.set_mode(CopterMode.RTL, now_s, state) else MAV_RESULT_FAILED

    def set_mode_message(self, base_mode: int, custom_mode: int, now_s: float, state: QuadState) -> list[int]:
        if base_mode & MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
            self.set_mode(custom_mode, now_s, state)
        return []  # ArduCopter no longer acks the SET_MODE message

    def arm_disarm(self, action: float, param2: float, now_s: float, state: QuadState) -> int:
        forced = param2 == FORCE_ARM_DISARM
        if action == 1.0:
            if self.armed:
                return MAV_RESULT_ACCEPTED
            if not forced:
                if not self.estimator_ok(now_s):
                    self.text(MAV_SEVERITY_CRITICAL, "PreArm: Waiting for Nav Checks")
                    return MAV_RESULT_FAILED
                if self.mode in COPTER_NOT_ARMABLE:
                    self.text(MAV_SEVERITY_CRITICAL, "Arm: Mode not armable")
                    return MAV_RESULT_FAILED
            self.set_armed(True, now_s, state)
            self.text(MAV_SEVERITY_INFO, "Arming motors")
            self._enter(self.mode, now_s, state)
            return MAV_RESULT_ACCEPTED
        if action == 0.0:
            if not self.armed:
                return MAV_RESULT_ACCEPTED
            if not (self.landed or forced):
                return MAV_RESULT_FAILED
            self._disarm(now_s, state)
            return MAV_RESULT_ACCEPTED
        return MAV_RESULT_UNSUPPORTED

    def _disarm(self, now_s: float, state: QuadState) -> None:
        self.set_armed(False, now_s, state)
        self.text(MAV_SEVERITY_INFO, "Disarming motors")

    def set_mode(self, mode: int, now_s: float, state: QuadState) -> bool:
        try:
            copter_mode = CopterMode(mode)
        except ValueError:
            self.text(MAV_SEVERITY_WARNING, f"No such mode {mode}")
            return False
        if mode == self.mode:
            return True
        if copter_mode not in COPTER_SIMULATED:
            self.text(MAV_SEVERITY_WARNING, f"Mode change to {copter_mode.name} failed: not simulated by this SITL")
            return False
        if copter_mode in COPTER_REQUIRES_POSITION and not self.estimator_ok(now_s):
            self.text(MAV_SEVERITY_WARNING, f"Mode change to {copter_mode.name} failed: requires position")
            return False
        self.mode = int(copter_mode)
        self._enter(self.mode, now_s, state)
        return True

    def _enter(self, mode: int, now_s: float, state: QuadState) -> None:
        self.client_kind = ""
        self._timed_out = False
        if not self.armed or self.landed:
            landing = mode in (CopterMode.LAND, CopterMode.RTL) and self.armed
            self.start_task("land" if landing else "idle", now_s, state)
            return
        kind = {CopterMode.GUIDED: "hold", CopterMode.LOITER: "hold", CopterMode.POSHOLD: "hold",
                CopterMode.BRAKE: "brake", CopterMode.LAND: "land", CopterMode.RTL: "rtl",
                CopterMode.STABILIZE: "descend", CopterMode.ALT_HOLD: "descend"}[CopterMode(mode)]
        self.start_task(kind, now_s, state)

    def _user_takeoff(self, alt_m: float, now_s: float, state: QuadState) -> bool:
        """Mode::do_user_takeoff: armed, landed, a mode with user takeoff, and a target above us."""
        if not (self.armed and self.landed and self.mode in _TAKEOFF_MODES and math.isfinite(alt_m)):
            return False
        if alt_m <= -float(state.pos_ned_m[2]):
            return False
        self.start_task("takeoff", now_s, state, target_alt_m=alt_m)
        return True

    def on_takeoff_complete(self, now_s: float, state: QuadState) -> None:
        t = self.task
        hold_at = np.array([t.point_ned[0], t.point_ned[1], -t.target_alt_m])
        self.start_task("hold", now_s, state)
        self.task.point_ned = hold_at

    def update_mode(self, now_s: float, state: QuadState) -> None:
        bad_since = self.estimator_bad_since_s
        if (bad_since is not None and now_s - bad_since >= EKF_CHECK_S and self.armed and not self.landed
                and self.mode != CopterMode.LAND):
            self.counters.failsafes += 1
            self.text(MAV_SEVERITY_CRITICAL, "EKF variance")
            self.mode = int(CopterMode.LAND)
            self._enter(self.mode, now_s, state)
            self.text(MAV_SEVERITY_CRITICAL, "EKF Failsafe: changed to LAND Mode")

    # -- setpoints ------------------------------------------------------------------------------------------------

    def position_target(self, type_mask: int, frame: int, pos: tuple[float, float, float],
                        vel: tuple[float, float, float], acc: tuple[float, float, float], yaw: float,
                        yaw_rate: float, now_s: float, state: QuadState) -> None:
        self.counters.setpoints += 1
        if self.mode != CopterMode.GUIDED:
            self.counters.setpoints_ignored += 1
            return
        mask = decode_position_target_mask(type_mask)
        submode = ardupilot_guided_submode(mask) if frame in ARDUPILOT_FRAMES else None
        if submode is not None and submode in ("pos_vel_accel", "vel_accel") and not all(
                math.isfinite(v) and abs(v) <= 1000 for v in vel):
            submode = None
        if submode is None:
            self.counters.setpoints_invalid += 1
            self._stop(now_s, state)
            return
        self._client_pos = np.array(to_local_ned(frame, pos, state, True)) if "pos" in submode else np.zeros(3)
        self._client_vel = np.array(to_local_ned(frame, vel, state, False)) if "vel" in submode else np.zeros(3)
        self._client_acc = np.array(to_local_ned(frame, acc, state, False)) if all(mask.acceleration) else np.zeros(3)
        body = frame in (8, 9)
        self._client_yaw = (yaw + (state_yaw(state) if body else 0.0)) if mask.yaw else math.nan
        self._client_yaw_rate = yaw_rate if mask.yaw_rate else math.nan
        self._begin_client(submode, now_s, state)

    def attitude_target(self, type_mask: int, q: tuple[float, float, float, float],
                        rates: tuple[float, float, float], thrust: float, now_s: float, state: QuadState) -> None:
        self.counters.setpoints += 1
        if self.mode != CopterMode.GUIDED:
            self.counters.setpoints_ignored += 1
            return
        mask = decode_attitude_target_mask(type_mask)
        qn = math.sqrt(sum(c * c for c in q))
        bad = (not mask.thrust or (mask.attitude and abs(qn - 1.0) > 1e-3)
               or (any(mask.body_rates) and not all(mask.body_rates)) or not (mask.attitude or all(mask.body_rates)))
        if bad:
            self.counters.setpoints_invalid += 1
            self._stop(now_s, state)
            return
        t = min(max(thrust, 0.0), 1.0)
        climb = (t - 0.5) * 2.0 * _SPEED_UP_MPS if t >= 0.5 else (t - 0.5) * 2.0 * _SPEED_DN_MPS
        self.client = ControlTarget("attitude", q_ned_frd=q if mask.attitude else (math.nan,) * 4,  # type: ignore[arg-type]
                                    body_rates_frd_radps=rates if all(mask.body_rates) else NAN3,
                                    vel_ned=(math.nan, math.nan, -climb))
        self._begin_client("angle", now_s, state)

    def _begin_client(self, submode: str, now_s: float, state: QuadState) -> None:
        if self.task.kind != "client" or self.client_kind in ("angle",) or submode == "angle":
            self.start_task("client", now_s, state)
        self.client_kind = submode
        self.client_time_s = now_s
        self._timed_out = False

    def _stop(self, now_s: float, state: QuadState) -> None:
        """mode_guided.init(true): hold at the stopping point."""
        self.client_kind = ""
        self.start_task("hold" if not self.landed else "idle", now_s, state)

    def client_target(self, now_s: float, state: QuadState, dt: float) -> ControlTarget:
        kind = self.client_kind
        timed_out = kind != "pos" and now_s - self.client_time_s > self.config.guided_timeout_s
        if timed_out and not self._timed_out:
            self._timed_out = True
            self.counters.guided_timeouts += 1
        yaw, yaw_rate = self._client_yaw, (math.nan if timed_out else self._client_yaw_rate)
        if kind == "angle":
            assert self.client is not None
            if timed_out:  # level at the current heading, hold altitude
                psi = state_yaw(state)
                return ControlTarget("attitude", q_ned_frd=(math.cos(psi / 2), 0.0, 0.0, math.sin(psi / 2)),
                                     vel_ned=(math.nan, math.nan, 0.0))
            return self.client
        if kind == "pos":
            self.task.yaw_rad = yaw if math.isfinite(yaw) else self.task.yaw_rad
            target = self._goto(self._client_pos, self.limits.cruise_mps, state, dt)
            return _with_yaw(target, yaw, yaw_rate)
        if kind == "accel" and not timed_out:
            return ControlTarget("trajectory", acc_ned=tuple(self._client_acc), yaw_rad=yaw,  # type: ignore[arg-type]
                                 yaw_rate_radps=yaw_rate)
        vel = np.zeros(3) if timed_out or kind == "accel" else self._client_vel.copy()
        acc = np.zeros(3) if timed_out else self._client_acc
        if kind == "pos_vel_accel" and not timed_out:
            vel = vel + 1.0 * (self._client_pos - self._shaped_pos)  # PSC_NE_POS_P / PSC_D_POS_P = 1
        return self._shaped(vel, dt, state, yaw_rad=yaw, yaw_rate=yaw_rate, acc_ff=acc)

    def wants_takeoff(self, target: ControlTarget, state: QuadState) -> bool:
        if self.task.kind == "takeoff":
            return True
        if self.task.kind == "client" and self.client_kind == "angle":
            return super().wants_takeoff(target, state)
        return False

    def auto_disarm(self, now_s: float, state: QuadState, target: ControlTarget) -> None:
        if not (self.armed and self.landed):
            self._ground_idle_since = None
            return
        if self.mode == CopterMode.LAND or (self.mode == CopterMode.RTL and self.landing()):
            self._disarm(now_s, state)
            return
        if target is not IDLE:
            self._ground_idle_since = None
            return
        if self._ground_idle_since is None:
            self._ground_idle_since = now_s
        elif now_s - self._ground_idle_since >= self.config.preflight_disarm_s:
            self._disarm(now_s, state)


def state_yaw(state: QuadState) -> float:
    return yaw_of(state.q_ned_frd)


def _with_yaw(target: ControlTarget, yaw: float, yaw_rate: float) -> ControlTarget:
    if target.kind != "trajectory" or not (math.isfinite(yaw) or math.isfinite(yaw_rate)):
        return target
    return ControlTarget("trajectory", pos_ned=target.pos_ned, vel_ned=target.vel_ned, acc_ned=target.acc_ned,
                         yaw_rad=yaw, yaw_rate_radps=yaw_rate)
