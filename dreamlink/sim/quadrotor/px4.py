"""PX4's MAVLink behaviour (1.16, as in the PX4 v1.16.0 SIH log under ../shared/data/sitl-logs).

Sources: src/modules/commander/Commander.cpp (handle_command: DO_SET_MODE, ARM_DISARM, NAV_TAKEOFF / LAND /
RETURN_TO_LAUNCH, printRejectMode), UserModeIntention.cpp (mode changes always allowed while disarmed, else
only if the mode can run; the mode restored after disarming), HealthAndArmingChecks/checks/offboardCheck.cpp
(offboard signal = a setpoint within COM_OF_LOSS_T), failsafe/failsafe.cpp + framework.cpp (what offboard loss
does), docs/en/flight_modes/offboard.md (accepted setpoint combinations and frames), PX4 PR #27343 (the
premature DO_SET_MODE ACK), and the log.

- Boots in AUTO.LOITER ("Hold"). HEARTBEAT system_status: ACTIVE when armed (CRITICAL while a failsafe
  holds the vehicle), STANDBY when disarmed and armable, UNINIT when disarmed and not (the log shows 0 after
  landing in OFFBOARD with no stream). vtol_state MAV_VTOL_STATE_UNDEFINED (0).
- DO_SET_MODE: param2 = main mode, param3 = sub mode. PX4 1.16.0 answers twice: mavlink_receiver ACKs
  ACCEPTED at once, then Commander ACKs the real result (fixed later by PR #27343; `px4_double_set_mode_ack`).
  Any mode is accepted while disarmed; armed, only one that can run, else TEMPORARILY_REJECTED (its
  "Switching to X is currently not available" STATUSTEXT goes out only for QGC, source component 190).
  Numbers that match no mode are ACCEPTED and change nothing, as in Commander.cpp.
- OFFBOARD can run while a setpoint (SET_POSITION_TARGET_LOCAL_NED or SET_ATTITUDE_TARGET, any mode) arrived
  within COM_OF_LOSS_T = 1 s (the 1.16 default; the docs' "> 2 Hz" dates from the old 0.5 s timeout). So
  switching to OFFBOARD in flight without a stream is rejected, and arming in OFFBOARD without one is denied.
- Offboard loss while armed: COM_OBL_RC_ACT = 0 asks for Position mode, which needs manual control; without
  RC or joystick (this SITL, and the log's COM_RC_IN_MODE) checkModeFallback goes Position -> Altitude ->
  Stabilized -> Return, so the vehicle switches to AUTO.RTL at once (mode fallbacks are not delayed by
  COM_FAIL_ACT_T) with a CRITICAL STATUSTEXT "Failsafe activated". The user's mode stays OFFBOARD: when
  setpoints resume the failsafe clears and the vehicle goes back to OFFBOARD.
- ARM: TEMPORARILY_REJECTED with "Preflight Fail: <reason>" and "Arming denied: Resolve system health
  failures first" when the estimator is not ready, the mode cannot run or prevents arming (Land, Return);
  ACCEPTED + "Armed by external command" otherwise. DISARM in the air: TEMPORARILY_REJECTED unless forced.
- NAV_TAKEOFF -> Takeoff mode (param7 = AMSL altitude, NaN -> MIS_TAKEOFF_ALT 2.5 m above home), climb at
  MPC_TKO_SPEED, then Hold. NAV_LAND -> Land ("Landing at current position"), NAV_RETURN_TO_LAUNCH -> Return
  ("Returning to launch"). Landed: "Landing detected", disarm after COM_DISARM_LAND 2 s ("Disarmed by
  landing"), and the mode goes back to the last one chosen that allows arming (OFFBOARD in the log).
  Armed but never airborne: disarm after COM_DISARM_PRFLT 10 s.
- Offboard setpoints are used as sent, per axis (no shaping); position+velocity(+acceleration) feed forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dreamlink.sim.quadrotor.autopilot import (
    FORCE_ARM_DISARM,
    MAV_RESULT_ACCEPTED,
    MAV_RESULT_TEMPORARILY_REJECTED,
    MAV_RESULT_UNSUPPORTED,
    MAV_SEVERITY_CRITICAL,
    MAV_SEVERITY_INFO,
    MAV_STATE_ACTIVE,
    MAV_STATE_CRITICAL,
    MAV_STATE_STANDBY,
    MAV_STATE_UNINIT,
    MAV_TYPE_QUADROTOR,
    Autopilot,
    AutopilotConfig,
    GuidanceLimits,
    to_local_ned,
)
from dreamlink.sim.quadrotor.controller import ControlTarget
from dreamlink.sim.quadrotor.modes import (
    PX4_LAND,
    PX4_LOITER,
    PX4_MISSION,
    PX4_NEEDS_MANUAL,
    PX4_OFFBOARD,
    PX4_PREVENTS_ARMING,
    PX4_RTL,
    PX4_TAKEOFF,
    Px4AutoSub,
    Px4Main,
    Px4Mode,
    px4_base_mode,
    px4_mode_from_command,
)
from dreamlink.sim.quadrotor.physics import QuadState, yaw_of
from dreamlink.sim.quadrotor.setpoints import (
    PX4_FRAMES,
    decode_attitude_target_mask,
    decode_position_target_mask,
    masked,
    px4_offboard_control,
)

MAV_AUTOPILOT_PX4 = 12
MIS_TAKEOFF_ALT_M = 2.5
MAV_COMP_ID_MISSIONPLANNER = 190  # QGC: the only source PX4 prints DO_SET_MODE rejections for


class Px4Autopilot(Autopilot):
    """PX4's modes, offboard rules and MAVLink command semantics."""

    # MPC_ACC_HOR 3, MPC_JERK_AUTO 4, MPC_ACC_DOWN_MAX 3, MPC_XY_CRUISE 5, MPC_TKO_SPEED 1.5,
    # MPC_Z_V_AUTO_DN 1.5, MPC_LAND_SPEED 0.7 below MPC_LAND_ALT2 5 m (values in the log)
    limits = GuidanceLimits(accel_xy_mps2=3.0, jerk_xy_mps3=4.0, accel_z_mps2=3.0, cruise_mps=5.0, climb_mps=1.5,
                            descend_mps=1.5, land_mps=0.7, land_slow_below_m=5.0)
    vtol_state = 0
    # RTL_RETURN_ALT 30, RTL_DESCEND_ALT 10, RTL_CONE_ANG 45 deg (log)
    rtl_return_alt_m = 30.0
    rtl_descend_alt_m = 10.0

    def __init__(self, config: AutopilotConfig, home_alt_amsl_m: float = 0.0) -> None:
        super().__init__(config)
        self.home_alt_amsl_m = home_alt_amsl_m
        self.user_mode: Px4Mode = PX4_LOITER
        self.nav_mode: Px4Mode = PX4_LOITER
        self.mode_after_disarm: Px4Mode = PX4_LOITER
        self.failsafe = False
        self._landed_at_s: float | None = None
        self._takeoff_alt_m = MIS_TAKEOFF_ALT_M

    # -- reporting ------------------------------------------------------------------------------------------------

    @property
    def mode_name(self) -> str:
        return self.nav_mode.name

    def heartbeat(self) -> tuple[int, int, int, int, int]:
        if self.armed:
            status = MAV_STATE_CRITICAL if self.failsafe else MAV_STATE_ACTIVE
        else:
            status = MAV_STATE_STANDBY if self.arm_failure(self._now) is None else MAV_STATE_UNINIT
        return (MAV_TYPE_QUADROTOR, MAV_AUTOPILOT_PX4, px4_base_mode(self.nav_mode, self.armed),
                self.nav_mode.custom_mode, status)

    def prearm_ok(self, now_s: float) -> bool:
        return self.arm_failure(now_s) is None

    @property
    def _now(self) -> float:
        return self._last_update_s if self._last_update_s is not None else 0.0

    def offboard_ok(self, now_s: float) -> bool:
        return self.client is not None and now_s - self.client_time_s < self.config.offboard_loss_timeout_s

    def can_run(self, mode: Px4Mode, now_s: float) -> bool:
        if not self.estimator_ok(now_s) or mode in PX4_NEEDS_MANUAL or mode == PX4_MISSION:
            return False
        if mode == PX4_OFFBOARD:
            return self.offboard_ok(now_s)
        return mode in (PX4_TAKEOFF, PX4_LOITER, PX4_LAND, PX4_RTL)

    def arm_failure(self, now_s: float) -> str | None:
        """Why arming would be refused now (PX4's health and arming check texts), or None."""
        mode = self.user_mode
        if not self.estimator_ok(now_s):
            return "No valid local position estimate"
        if mode in PX4_PREVENTS_ARMING:
            return "Mode not suitable for arming"
        if mode in PX4_NEEDS_MANUAL:
            return "No manual control input"
        if mode == PX4_MISSION:
            return "No valid mission"
        if mode == PX4_OFFBOARD and not self.offboard_ok(now_s):
            return "No offboard signal"
        return None

    def rtl_altitude_m(self, state: QuadState) -> float:
        dist = math.hypot(float(state.pos_ned_m[0]), float(state.pos_ned_m[1]))
        cone_alt = min(self.rtl_return_alt_m, max(self.rtl_descend_alt_m, dist))  # 45 deg cone: alt = distance
        return max(cone_alt, -float(state.pos_ned_m[2]))

    # -- commands -----------------------------------------------------------------------------------------------

    def set_mode_command(self, params: Sequence[float], now_s: float, state: QuadState,
                         source_component: int) -> list[int]:
        first = [MAV_RESULT_ACCEPTED] if self.config.px4_double_set_mode_ack else []
        return [*first, self._do_set_mode(params, now_s, state, source_component)]

    def takeoff_command(self, param7: float, frame: int | None, now_s: float, state: QuadState) -> int:
        """param7: AMSL altitude (m); NaN takes off to MIS_TAKEOFF_ALT above home."""
        self._takeoff_alt_m = param7 - self.home_alt_amsl_m if math.isfinite(param7) else MIS_TAKEOFF_ALT_M
        return self._command_mode(PX4_TAKEOFF, now_s, state, "")

    def land_command(self, now_s: float, state: QuadState) -> int:
        return self._command_mode(PX4_LAND, now_s, state, "Landing at current position")

    def return_command(self, now_s: float, state: QuadState) -> int:
        return self._command_mode(PX4_RTL, now_s, state, "Returning to launch")

    def set_mode_message(self, base_mode: int, custom_mode: int, now_s: float, state: QuadState) -> list[int]:
        """mavlink_receiver turns SET_MODE into a DO_SET_MODE command; Commander's answer is acked."""
        main, sub = (custom_mode >> 16) & 0xFF, (custom_mode >> 24) & 0xFF
        return [self._do_set_mode((base_mode, main, sub), now_s, state, 0)]

    def _do_set_mode(self, params: Sequence[float], now_s: float, state: QuadState, source_component: int) -> int:
        base, main, sub = int(params[0]) & 0xFF, int(params[1]) & 0xFF, int(params[2]) & 0xFF
        if base & 1 and main == Px4Main.AUTO and sub > 0 and sub not in {int(s) for s in Px4AutoSub}:
            self.text(MAV_SEVERITY_CRITICAL, "Unsupported auto mode\t")
            return MAV_RESULT_TEMPORARILY_REJECTED
        mode = px4_mode_from_command(base, main, sub)
        if mode is None:
            return MAV_RESULT_ACCEPTED  # no branch matched: PX4 acks and does nothing
        if self.change_intent(mode, now_s, state):
            return MAV_RESULT_ACCEPTED
        if source_component == MAV_COMP_ID_MISSIONPLANNER:
            self.text(MAV_SEVERITY_CRITICAL, f"Switching to {mode.name} is currently not available\t")
        return MAV_RESULT_TEMPORARILY_REJECTED

    def _command_mode(self, mode: Px4Mode, now_s: float, state: QuadState, info: str) -> int:
        if self.change_intent(mode, now_s, state):
            if info:
                self.text(MAV_SEVERITY_INFO, info + "\t")
            return MAV_RESULT_ACCEPTED
        self.text(MAV_SEVERITY_CRITICAL, f"Switching to {mode.name} is currently not available\t")
        return MAV_RESULT_TEMPORARILY_REJECTED

    def change_intent(self, mode: Px4Mode, now_s: float, state: QuadState) -> bool:
        """UserModeIntention::change: always allowed disarmed, else only if the mode can run."""
        if self.armed and not self.can_run(mode, now_s):
            return False
        self.user_mode = mode
        if mode not in PX4_PREVENTS_ARMING:
            self.mode_after_disarm = mode
        if self.armed or mode != self.nav_mode:
            self._enter(mode, now_s, state)
        return True

    def _enter(self, mode: Px4Mode, now_s: float, state: QuadState) -> None:
        self.nav_mode = mode
        if not self.armed:
            self.start_task("idle", now_s, state)
        elif mode == PX4_OFFBOARD:
            self.start_task("client", now_s, state)
        elif mode == PX4_TAKEOFF:
            alt = max(self._takeoff_alt_m, -float(state.pos_ned_m[2]))
            self.start_task("takeoff", now_s, state, target_alt_m=alt)
        elif mode == PX4_LAND:
            self.start_task("land", now_s, state)
        elif mode == PX4_RTL:
            self.start_task("rtl", now_s, state)
        else:
            self.start_task("idle" if self.landed else "hold", now_s, state)

    def arm_disarm(self, action: float, param2: float, now_s: float, state: QuadState) -> int:
        act = round(action) if math.isfinite(action) else -1
        if act == 1:
            if self.armed:
                return MAV_RESULT_ACCEPTED
            reason = self.arm_failure(now_s)  # external commands are always checked, forced or not
            if reason is not None:
                self.text(MAV_SEVERITY_CRITICAL, f"Preflight Fail: {reason}\t")
                self.text(MAV_SEVERITY_CRITICAL, "Arming denied: Resolve system health failures first\t")
                return MAV_RESULT_TEMPORARILY_REJECTED
            self.set_armed(True, now_s, state)
            self._landed_at_s = None
            self.text(MAV_SEVERITY_INFO, "Armed by external command\t")
            self._enter(self.user_mode, now_s, state)
            return MAV_RESULT_ACCEPTED
        if act == 0:
            if not self.armed:
                return MAV_RESULT_ACCEPTED
            if not self.landed and param2 != FORCE_ARM_DISARM:
                self.text(MAV_SEVERITY_CRITICAL, "Disarming denied: not landed\t")
                return MAV_RESULT_TEMPORARILY_REJECTED
            self._disarm(now_s, state, "Disarmed by external command")
            return MAV_RESULT_ACCEPTED
        self.text(MAV_SEVERITY_CRITICAL, f"Unsupported ARM_DISARM param: {action:.3f}\t")
        return MAV_RESULT_UNSUPPORTED

    def _disarm(self, now_s: float, state: QuadState, why: str) -> None:
        self.set_armed(False, now_s, state)
        self.failsafe = False
        self.text(MAV_SEVERITY_INFO, why + "\t")
        self.user_mode = self.mode_after_disarm  # UserModeIntention::onDisarm
        self.nav_mode = self.user_mode

    # -- setpoints ------------------------------------------------------------------------------------------------

    def position_target(self, type_mask: int, frame: int, pos: tuple[float, float, float],
                        vel: tuple[float, float, float], acc: tuple[float, float, float], yaw: float,
                        yaw_rate: float, now_s: float, state: QuadState) -> None:
        self.counters.setpoints += 1
        mask = decode_position_target_mask(type_mask)
        kind = px4_offboard_control(mask) if frame in PX4_FRAMES else None
        if kind is None:
            self.counters.setpoints_invalid += 1
            return
        body = frame == 8
        yaw_sp = (yaw + (yaw_of(state.q_ned_frd) if body else 0.0)) if mask.yaw else math.nan
        self.client = ControlTarget(
            "trajectory", pos_ned=masked(to_local_ned(frame, pos, state, True), mask.position),
            vel_ned=masked(to_local_ned(frame, vel, state, False), mask.velocity),
            acc_ned=masked(to_local_ned(frame, acc, state, False), mask.acceleration),
            yaw_rad=yaw_sp, yaw_rate_radps=yaw_rate if mask.yaw_rate else math.nan)
        self.client_kind = kind
        self.client_time_s = now_s

    def attitude_target(self, type_mask: int, q: tuple[float, float, float, float],
                        rates: tuple[float, float, float], thrust: float, now_s: float, state: QuadState,
                        thrust_body: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        self.counters.setpoints += 1
        mask = decode_attitude_target_mask(type_mask)
        thrust_frac = -thrust_body[2] if mask.thrust_body else thrust
        if mask.attitude:
            self.client = ControlTarget("attitude", q_ned_frd=q,
                                        body_rates_frd_radps=(0.0, 0.0, rates[2] if mask.body_rates[2] else 0.0),
                                        thrust_frac=thrust_frac)
            self.client_kind = "attitude"
        elif all(mask.body_rates):
            self.client = ControlTarget("attitude", body_rates_frd_radps=rates, thrust_frac=thrust_frac)
            self.client_kind = "body_rate"
        else:
            self.counters.setpoints_invalid += 1
            return
        self.client_time_s = now_s

    def client_target(self, now_s: float, state: QuadState, dt: float) -> ControlTarget:
        assert self.client is not None
        return self.client

    # -- mode logic ---------------------------------------------------------------------------------------------

    def update_mode(self, now_s: float, state: QuadState) -> None:
        if not self.armed:
            self.failsafe = False
            self.nav_mode = self.user_mode
            return
        if self.can_run(self.user_mode, now_s):
            if self.nav_mode != self.user_mode:  # failsafe condition cleared: back to the user's mode
                self.failsafe = False
                self._enter(self.user_mode, now_s, state)
            return
        fallback = {"rtl": PX4_RTL, "land": PX4_LAND, "hold": PX4_LOITER}[self.config.px4_offboard_loss_mode] \
            if self.user_mode == PX4_OFFBOARD else PX4_RTL
        if self.nav_mode != fallback:
            self.failsafe = True
            self.counters.failsafes += 1
            self.text(MAV_SEVERITY_CRITICAL, "Failsafe activated\t")
            self._enter(fallback, now_s, state)

    def on_takeoff_complete(self, now_s: float, state: QuadState) -> None:
        if self.nav_mode == PX4_TAKEOFF:  # the navigator hands over to Hold
            self.change_intent(PX4_LOITER, now_s, state)
            self.task.point_ned = state.pos_ned_m.copy()

    def on_takeoff_detected(self, now_s: float) -> None:
        self.text(MAV_SEVERITY_INFO, "Takeoff detected\t")

    def on_landing_detected(self, now_s: float) -> None:
        self._landed_at_s = now_s
        self.text(MAV_SEVERITY_INFO, "Landing detected\t")

    def wants_takeoff(self, target: ControlTarget, state: QuadState) -> bool:
        if self.task.kind == "takeoff":
            return True
        if self.task.kind in ("land", "rtl", "hold", "idle"):
            return False
        return super().wants_takeoff(target, state)

    def auto_disarm(self, now_s: float, state: QuadState, target: ControlTarget) -> None:
        if not (self.armed and self.landed):
            return
        if self.ever_airborne:
            if self._landed_at_s is not None and now_s - self._landed_at_s >= self.config.land_disarm_s:
                self._disarm(now_s, state, "Disarmed by landing")
        elif now_s - self._armed_at_s >= self.config.preflight_disarm_s:
            self._disarm(now_s, state, "Disarmed by auto preflight disarming")
