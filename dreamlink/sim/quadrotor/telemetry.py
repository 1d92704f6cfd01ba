"""What the simulated flight controller's telemetry says: each message, by name, filled from the vehicle.

`Telemetry.send(name)` packs one message now through the face's encoder; `MavlinkFace` (mavlink_io.py)
decides when, how often and whether (streams, requests, latency, a freeze, signing). Here is what the
messages carry, as the two autopilots fill them (the sets and numbers are copied from their logs):

- One noisy estimate per 10 ms vehicle frame, the "EKF output" shared by every message of that frame: the
  true state plus the randomised sensor noise of the vehicle's domain (position, velocity, attitude, rates,
  specific force). The autopilot itself steers with the true state.
- Home is the local frame's origin (NED 0, 0, 0): HOME_POSITION and GPS_GLOBAL_ORIGIN report it, and global
  positions are local ones on a flat earth around it (`global_position`).
- Estimator health, as each autopilot reports it: SYS_STATUS's MAV_SYS_STATUS_AHRS health bit, and
  EKF_STATUS_REPORT (ArduPilot: flags 831 and variances ~0.05 when healthy; variances >= 0.8, the
  FS_EKF_THRESH default, and the position flags cleared when not) or ESTIMATOR_STATUS (PX4: test ratios > 1
  and GPS_GLITCH when not). The fault is in the report only: the position telemetry stays what it was.
- SYS_STATUS's pre-arm bit is cleared while the vehicle cannot arm; SERVO_OUTPUT_RAW idles at each family's
  PWM; AUTOPILOT_VERSION carries each family's capabilities and version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamlink.sim.mavlink_udp import mavlink
from dreamlink.sim.quadrotor.controller import ControlTarget
from dreamlink.sim.quadrotor.physics import GRAVITY_MPS2, euler_of, quat_multiply, quat_to_rotation
from dreamlink.sim.quadrotor.vehicle import SimVehicle

EARTH_RADIUS_M = 6378137.0
STATE_MESSAGES = ("LOCAL_POSITION_NED", "ATTITUDE", "ATTITUDE_QUATERNION", "HIGHRES_IMU", "ODOMETRY")
# SYS_STATUS sensor bit sets copied from the logs; the pre-arm bit is cleared while the vehicle cannot arm, the AHRS
# bit while the estimator is not ok (starting up, or a fault)
SYS_STATUS_BITS = {"ardupilot": (0x5371FC2F, 0x52619C2F, 0x57719C2F), "px4": (0x0300402F, 0x0301402F, 0x1320C83F)}
PREARM_CHECK = 0x10000000  # MAV_SYS_STATUS_PREARM_CHECK
AHRS_HEALTH = 0x00200000  # MAV_SYS_STATUS_AHRS: the estimator's health bit in SYS_STATUS
# EKF_STATUS_FLAGS / ESTIMATOR_STATUS_FLAGS (same bits): attitude, horizontal and vertical velocity, relative and
# absolute horizontal position, absolute vertical position, predicted relative / absolute horizontal position
# (ArduPilot reports 831 = 0x33F when healthy). Unhealthy: only attitude, velocity and vertical position left.
ESTIMATOR_FLAGS_OK = 0x33F
ESTIMATOR_FLAGS_BAD = 0x027
VERSION = {"ardupilot": (64495, 67633152, 0), "px4": (59647, 17826047, 17826047)}


@dataclass
class _Estimate:
    """The noisy 'EKF output' of one frame, shared by all telemetry of that frame."""

    pos: np.ndarray
    vel: np.ndarray
    q: np.ndarray
    rates: np.ndarray
    specific_force_frd: np.ndarray


class Telemetry:
    """The telemetry of one `SimVehicle`, packed by `mav` (the face's pymavlink encoder: its frames go the
    face's way out, delayed, frozen or signed as the face decides)."""

    def __init__(self, vehicle: SimVehicle, mav: Any) -> None:
        self.vehicle = vehicle
        self.flavour = vehicle.flavour
        self._mav = mav
        self._noise_rng = np.random.default_rng([vehicle.domain.seed, 2])
        self._estimate: _Estimate | None = None
        self._estimate_frame = -1

    def _estimate_now(self) -> _Estimate:
        v = self.vehicle
        if self._estimate is not None and self._estimate_frame == v.frames:
            return self._estimate
        s, d, rng = v.state, v.domain, self._noise_rng
        q = s.q_ned_frd
        if d.att_noise_rad > 0:
            rot = rng.normal(0.0, d.att_noise_rad, 3)
            q = quat_multiply(q, np.array([1.0, *(0.5 * rot)]))
            q = q / np.linalg.norm(q)
        accel = s.accel_ned_mps2 - np.array([0.0, 0.0, GRAVITY_MPS2])
        est = _Estimate(
            pos=s.pos_ned_m + (rng.normal(0.0, d.pos_noise_m, 3) if d.pos_noise_m > 0 else 0.0),
            vel=s.vel_ned_mps + (rng.normal(0.0, d.vel_noise_mps, 3) if d.vel_noise_mps > 0 else 0.0),
            q=q, rates=s.rates_frd_radps + (rng.normal(0.0, d.gyro_noise_radps, 3) if d.gyro_noise_radps > 0 else 0.0),
            specific_force_frd=quat_to_rotation(s.q_ned_frd).T @ accel
            + (rng.normal(0.0, d.accel_noise_mps2, 3) if d.accel_noise_mps2 > 0 else 0.0))
        self._estimate, self._estimate_frame = est, v.frames
        return est

    def send(self, name: str) -> bool:
        """Pack one message by name now; False if this SITL cannot produce it."""
        v = self.vehicle
        ms, us = v.time_us // 1000, v.time_us
        m = self._mav
        if name in STATE_MESSAGES or name == "GLOBAL_POSITION_INT":
            e = self._estimate_now()
        if name == "LOCAL_POSITION_NED":
            m.local_position_ned_send(ms, *e.pos, *e.vel)
        elif name == "ATTITUDE":
            m.attitude_send(ms, *euler_of(e.q), *e.rates)
        elif name == "ATTITUDE_QUATERNION":
            m.attitude_quaternion_send(ms, *e.q, *e.rates, [0.0, 0.0, 0.0, 0.0])
        elif name == "ODOMETRY":
            nan = math.nan
            m.odometry_send(us, mavlink.MAV_FRAME_LOCAL_NED, mavlink.MAV_FRAME_LOCAL_NED, *e.pos, list(e.q), *e.vel,
                            *e.rates, [nan] * 21, [nan] * 21, 0, mavlink.MAV_ESTIMATOR_TYPE_AUTOPILOT, 100)
        elif name == "HIGHRES_IMU":
            f = e.specific_force_frd
            mag = quat_to_rotation(e.q).T @ np.array([0.21, 0.01, 0.43])  # a fixed earth field, gauss
            alt_amsl = v.home[2] - float(e.pos[2])
            pressure_hpa = 1013.25 * (1 - 2.25577e-5 * alt_amsl) ** 5.25588
            m.highres_imu_send(us, *f, *e.rates, *mag, pressure_hpa, 0.0, alt_amsl, 25.0, 0x1FFF, 0)
        elif name == "SYS_STATUS":
            present, enabled, health = SYS_STATUS_BITS[self.flavour]
            # Two separate bits, as in the real logs (../shared/data/sitl-logs): after a landing PX4's pre-arm bit
            # goes bad while its AHRS bit stays good; the AHRS bit follows the estimator only (its start-up, a fault).
            if not v.autopilot.prearm_ok(v.time_s) and not v.autopilot.armed:
                health &= ~PREARM_CHECK
            if not v.autopilot.estimator_ok(v.time_s):
                health &= ~AHRS_HEALTH
            m.sys_status_send(present, enabled, health, 0, 12600 if self.flavour == "ardupilot" else 16200, -1, 100,
                              0, 0, 0, 0, 0, 0)
        elif name == "EXTENDED_SYS_STATE":
            m.extended_sys_state_send(v.autopilot.vtol_state, v.autopilot.landed_state())
        elif name == "GLOBAL_POSITION_INT":
            lat, lon, alt = global_position(v.home, e.pos)
            hdg = round(math.degrees(euler_of(e.q)[2]) % 360 * 100)
            m.global_position_int_send(ms, lat, lon, int(alt * 1000), round(-e.pos[2] * 1000),
                                       *(round(c * 100) for c in e.vel), hdg)
        elif name in ("HOME_POSITION", "GPS_GLOBAL_ORIGIN"):  # home is the local frame's origin here
            lat, lon, alt = global_position(v.home, np.zeros(3))
            if name == "GPS_GLOBAL_ORIGIN":
                m.gps_global_origin_send(lat, lon, round(alt * 1000), us)
            else:
                m.home_position_send(lat, lon, int(alt * 1000), 0.0, 0.0, 0.0, [1.0, 0.0, 0.0, 0.0], 0.0, 0.0, 0.0, us)
        elif name == "POSITION_TARGET_LOCAL_NED":
            self._send_position_target(ms, v.target)
        elif name == "ATTITUDE_TARGET":
            out = v.controller.output
            m.attitude_target_send(ms, 0, list(out.q_sp_ned_frd), *out.rates_sp_frd_radps, out.thrust_frac)
        elif name == "SERVO_OUTPUT_RAW":
            frac = (v.state.rotor_speeds_radps / v.true_params.rotor_speed_max_radps) ** 2
            low = 1000 if self.flavour == "ardupilot" else 900
            pwm = [int(1000 + 1000 * f) if v.autopilot.armed else low for f in frac]
            m.servo_output_raw_send(us & 0xFFFFFFFF, 0, *pwm, 0, 0, 0, 0)
        elif name == "EKF_STATUS_REPORT":  # variances are test ratios: >= 0.8 is FS_EKF_THRESH's "bad"
            bad = v.autopilot.estimator_fault
            var = 1.2 if bad else 0.05
            m.ekf_status_report_send(ESTIMATOR_FLAGS_BAD if bad else ESTIMATOR_FLAGS_OK, var, var, 0.05, var, 0.0)
        elif name == "ESTIMATOR_STATUS":  # ratios: > 1 is a failed innovation test
            bad = v.autopilot.estimator_fault
            ratio = 1.5 if bad else 0.1
            flags = (ESTIMATOR_FLAGS_BAD | mavlink.ESTIMATOR_GPS_GLITCH) if bad else ESTIMATOR_FLAGS_OK
            m.estimator_status_send(us, flags, ratio, 0.1, ratio, 0.1, 0.0, 0.0, 0.5, 0.5)
        elif name == "AUTOPILOT_VERSION":
            caps, flight, middle = VERSION[self.flavour]
            m.autopilot_version_send(caps, flight, middle, 0, 0, [0] * 8, [0] * 8, [0] * 8, 0, 0, 0xD7EA3110C,
                                     [0] * 18)
        else:
            return False
        return True

    def _send_position_target(self, ms: int, t: ControlTarget) -> None:
        if t.kind != "trajectory":
            return
        mask = 0
        for i, bit in enumerate((1, 2, 4)):
            mask |= bit if not math.isfinite(t.pos_ned[i]) else 0
            mask |= bit * 8 if not math.isfinite(t.vel_ned[i]) else 0
            mask |= bit * 64 if not math.isfinite(t.acc_ned[i]) else 0
        mask |= 1024 if not math.isfinite(t.yaw_rad) else 0
        mask |= 2048 if not math.isfinite(t.yaw_rate_radps) else 0
        self._mav.position_target_local_ned_send(ms, mavlink.MAV_FRAME_LOCAL_NED, mask, *t.pos_ned, *t.vel_ned,
                                                 *t.acc_ned, t.yaw_rad, t.yaw_rate_radps)


def global_position(home: tuple[float, float, float], pos_ned: np.ndarray) -> tuple[int, int, float]:
    """(lat degE7, lon degE7, alt m AMSL) of a local NED position, on a flat earth around `home` (deg, deg, m)."""
    lat0, lon0, alt0 = home
    lat = lat0 + math.degrees(float(pos_ned[0]) / EARTH_RADIUS_M)
    lon = lon0 + math.degrees(float(pos_ned[1]) / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
    return round(lat * 1e7), round(lon * 1e7), alt0 - float(pos_ned[2])
