"""ArduPilot Copter profile: GUIDED mode, velocity setpoints, the autopilot's own take-off, hold and landing.

Follows ArduPilot's documented MAVLink interface and the ArduCopter 4.8 SITL log under
../shared/data/sitl-logs (a companion computer's flight: GUIDED, arm, NAV_TAKEOFF, 25 Hz velocity
setpoints, LAND):

- Modes are HEARTBEAT.custom_mode numbers (ArduCopter/mode.h; FLTMODE1 in the Copter parameter list;
  ardupilot.org/dev/docs/mavlink-get-set-flightmode.html). They are set with MAV_CMD_DO_SET_MODE,
  param1 = MAV_MODE_FLAG_CUSTOM_MODE_ENABLED (1), param2 = the number, as in the log. ArduPilot ACKs it and
  sends a HEARTBEAT at once (log: ACK and HEARTBEAT 1 ms apart); the profile waits for that HEARTBEAT.
- Control: SET_POSITION_TARGET_LOCAL_NED in GUIDED only (ignored in other modes), type_mask 2503 (velocity
  + yaw) in MAV_FRAME_LOCAL_NED, "Copter Commands in Guided Mode"
  (ardupilot.org/dev/docs/copter-commands-in-guided-mode.html). Velocity targets time out after
  GUID_TIMEOUT (3 s): the vehicle stops and holds, still in GUIDED, so a dead runtime brakes by itself.
  Setpoints never lift a landed copter: take-off is MAV_CMD_NAV_TAKEOFF (param7 = altitude above home, m)
  in GUIDED after arming, as in the log (8 m, ACCEPTED; landed_state TAKEOFF then IN_AIR).
- Streams: MAV_CMD_SET_MESSAGE_INTERVAL (ArduPilot >= 4.0). Before any request ArduPilot sends nothing
  but HEARTBEAT on a link (the log). If the interval is refused, the profile falls back to
  REQUEST_DATA_STREAM for the stream group holding the message (POSITION: LOCAL_POSITION_NED and
  GLOBAL_POSITION_INT; EXTRA1: ATTITUDE; EXTENDED_STATUS: SYS_STATUS, and EXTENDED_SYS_STATE where a
  version streams it), the way MAVProxy and
  Mission Planner ask (ardupilot.org/dev/docs/mavlink-requesting-data.html; ArduCopter/GCS_Mavlink.cpp).
- hold() = BRAKE (17): stops and holds position with no pilot input. LOITER would take the pilot's
  throttle as a climb rate, which a companion computer without RC cannot centre.
- failsafe() = the configured modes in order (RTL, then LAND), ArduPilot's own GCS-failsafe actions.
- land() = LAND mode (as in the log); ArduPilot disarms by itself on touchdown ("Disarming motors").

Recommended order: connect() -> enter_control_mode() -> arm() -> takeoff(alt) -> send() at the control
rate -> land() (or release(), which lands when flying and disarms when not).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from dreamlink.firmware_bridge.autopilot import AutopilotError, AutopilotProfile
from dreamlink.firmware_bridge.autopilot_config import AutopilotConfig
from dreamlink.firmware_bridge.link import Link, mavlink
from dreamlink.firmware_bridge.params import set_param
from dreamlink.spec import QUAD, VehicleSpec

log = logging.getLogger(__name__)

# ArduCopter flight modes (ArduCopter/mode.h `enum class Number`), the HEARTBEAT custom_mode.
COPTER_MODES: Mapping[str, int] = {
    "STABILIZE": 0, "ACRO": 1, "ALT_HOLD": 2, "AUTO": 3, "GUIDED": 4, "LOITER": 5, "RTL": 6, "CIRCLE": 7,
    "LAND": 9, "DRIFT": 11, "SPORT": 13, "FLIP": 14, "AUTOTUNE": 15, "POSHOLD": 16, "BRAKE": 17, "THROW": 18,
    "AVOID_ADSB": 19, "GUIDED_NOGPS": 20, "SMART_RTL": 21, "FLOWHOLD": 22, "FOLLOW": 23, "ZIGZAG": 24,
    "SYSTEMID": 25, "AUTOROTATE": 26, "AUTO_RTL": 27, "TURTLE": 28,
}
_MODE_NAMES = {number: name for name, number in COPTER_MODES.items()}
# REQUEST_DATA_STREAM groups holding each message (ArduCopter/GCS_Mavlink.cpp STREAM_*_msgs).
STREAM_GROUPS: Mapping[int, int] = {
    mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED: mavlink.MAV_DATA_STREAM_POSITION,
    mavlink.MAVLINK_MSG_ID_ATTITUDE: mavlink.MAV_DATA_STREAM_EXTRA1,
    mavlink.MAVLINK_MSG_ID_EXTENDED_SYS_STATE: mavlink.MAV_DATA_STREAM_EXTENDED_STATUS,
    mavlink.MAVLINK_MSG_ID_SYS_STATUS: mavlink.MAV_DATA_STREAM_EXTENDED_STATUS,
    mavlink.MAVLINK_MSG_ID_EKF_STATUS_REPORT: mavlink.MAV_DATA_STREAM_EXTRA3,
}
WPNAV_SPEED_UP_MPS = 2.5  # ArduCopter's default climb speed; sizes the take-off timeout


def copter_mode_name(custom_mode: int) -> str:
    return _MODE_NAMES.get(custom_mode, f"MODE_{custom_mode}")


class ArduPilotCopterProfile(AutopilotProfile):
    """The runtime's view of an ArduCopter flight controller: `state()` in, velocity setpoints in GUIDED out."""

    FAMILY = "ArduPilot"
    AUTOPILOT = mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA
    CONTROL_MODE = "GUIDED"
    ESTIMATOR_REPORT = "EKF_STATUS_REPORT"
    # Modes ArduCopter will not arm in (Mode::allows_arming false), so its pre-arm checks fail there after a landing
    # left it in LAND; enter_control_mode() switches to GUIDED before arming.
    PREARM_FAILS_IN_MODES = frozenset({"RTL", "LAND", "BRAKE", "CIRCLE", "SMART_RTL", "AVOID_ADSB", "AUTOTUNE"})
    # Guided-mode velocity shaping (read when GUIDED starts): the defaults WP_ACC 2.5 m/s^2 and PSC_JERK_NE
    # 5 m/s^3 cannot follow a 3 m figure-eight at 2 m/s (3.3 m/s^2 peak), and whatever the planner asks
    # beyond them the autopilot silently smooths away. 5.0 is WP_ACC's documented maximum.
    GUIDED_TUNING: ClassVar[Mapping[str, float]] = {"WP_ACC": 5.0, "PSC_JERK_NE": 10.0}

    def __init__(self, link: Link, spec: VehicleSpec = QUAD, config: AutopilotConfig | None = None) -> None:
        config = config if config is not None else AutopilotConfig()
        unknown = [m for m in config.failsafe_modes if m not in COPTER_MODES]
        if unknown:
            raise ValueError(f"AutopilotConfig.failsafe_modes: {unknown} are not ArduCopter modes; "
                             f"expected names from {sorted(COPTER_MODES)}")
        super().__init__(link, spec, config)

    def mode_name(self, custom_mode: int) -> str:
        return copter_mode_name(custom_mode)

    def set_mode(self, name: str) -> None:
        """Switch to an ArduCopter mode by name (DO_SET_MODE) and wait until the HEARTBEAT shows it."""
        if name not in COPTER_MODES:
            raise ValueError(f"unknown ArduCopter mode {name!r}; expected one of {sorted(COPTER_MODES)}")
        number = COPTER_MODES[name]
        self._set_mode((float(mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED), float(number)),
                       lambda custom_mode: custom_mode == number, name)

    # -- profile contract --------------------------------------------------------------------------

    def enter_control_mode(self) -> None:
        """GUIDED (tuned by `GUIDED_TUNING` first), holding the current heading in every setpoint. Works armed
        or not, on the ground or flying."""
        for name, value in self.GUIDED_TUNING.items():
            set_param(self.link, self.config.target_system, self.config.target_component, name, value,
                      timeout_s=self.command_timeout_s, retries=self.command_retries)
        self.set_mode("GUIDED")
        self.hold_yaw()

    def send(self, action: np.ndarray) -> None:
        """action [A] NED velocity (m/s) -> SET_POSITION_TARGET_LOCAL_NED, type_mask 2503, yaw held."""
        self._check_action(action)
        self._send_setpoint(self._setpoint_for(action))
        if self.config.lockstep:
            return
        mode = self.custom_mode
        if mode is not None and mode != COPTER_MODES["GUIDED"]:
            self._warn("ArduPilot ignores setpoints outside GUIDED and is in %s", self.mode_name(mode))

    def takeoff(self, altitude_m: float, timeout_s: float | None = None) -> None:
        """MAV_CMD_NAV_TAKEOFF to `altitude_m` above home; returns when within `altitude_tolerance_m`, measured as
        the climb in LOCAL_POSITION_NED.z since the command. Needs GUIDED and armed; re-latches the held yaw."""
        if not (math.isfinite(altitude_m) and altitude_m > 0):
            raise ValueError(f"takeoff: altitude_m must be > 0, got {altitude_m!r}")
        if not self.armed:
            raise AutopilotError("ArduPilot take-off needs an armed vehicle: call arm() first (and take off within "
                                 "DISARM_DELAY, 10 s, or ArduPilot disarms again)")
        if self.mode != "GUIDED":
            raise AutopilotError(f"ArduPilot take-off is taken in GUIDED (mode is {self.mode}); call "
                                 f"enter_control_mode() first")
        (_, _, z0), _ = self._position_and_yaw()
        self._command(mavlink.MAV_CMD_NAV_TAKEOFF, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, float(altitude_m)),
                      f"taking off to {altitude_m:g} m")
        target_d = z0 - altitude_m + self.config.altitude_tolerance_m
        self._wait_until(lambda: self._position_ned[2] <= target_d,
                         timeout_s if timeout_s is not None else 15.0 + 2.0 * altitude_m / WPNAV_SPEED_UP_MPS,
                         f"climb to {altitude_m:g} m")
        self.hold_yaw()
        log.info("ArduPilot %s took off to %.1f m", self._target, z0 - self._position_ned[2])

    def hold(self) -> None:
        """BRAKE: the autopilot stops and holds where it is, whatever the runtime does."""
        if not self._left_to_pilot("holding"):
            self.set_mode("BRAKE")

    def land(self, timeout_s: float | None = None) -> None:
        """LAND mode, then wait until ArduPilot disarmed itself on the ground (not if a pilot took the vehicle)."""
        if self._left_to_pilot("landing"):
            return
        self.set_mode("LAND")
        self._wait_disarmed_on_ground(timeout_s)

    def failsafe(self) -> str:
        """Ask for the autopilot's own failsafe: the first of `failsafe_modes` it accepts. Returns its name;
        raises the last refusal if none was accepted."""
        if self._left_to_pilot("asking for a failsafe mode"):
            return "PILOT"
        return self._first_failsafe(self.set_mode)

    def release(self) -> None:
        """LAND if flying, else disarm; returns without waiting for touchdown. Never raises."""

        def land() -> None:
            self._command(mavlink.MAV_CMD_DO_SET_MODE,
                          (float(mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED), float(COPTER_MODES["LAND"])),
                          "switching to LAND", 0.5, 1)

        self._release_safely(land)

    # -- streams -----------------------------------------------------------------------------------

    def _stream_fallback(self, msg_id: int, rate_hz: float, result: int | None) -> None:
        group = STREAM_GROUPS.get(msg_id)
        if group is None:
            return super()._stream_fallback(msg_id, rate_hz, result)
        log.info("ArduPilot %s: SET_MESSAGE_INTERVAL for message %d %s; asking for stream group %d at %.0f Hz "
                 "with REQUEST_DATA_STREAM", self._target, msg_id, "unanswered" if result is None else
                 f"refused ({result})", group, rate_hz)
        self._data_stream_fallback.add(msg_id)
        self._reassert(msg_id)

    def _reassert(self, msg_id: int) -> None:
        """A stream this ArduPilot would not take an interval for is asked for again by its stream group."""
        group = STREAM_GROUPS.get(msg_id)
        if msg_id not in self._data_stream_fallback or group is None:
            return super()._reassert(msg_id)
        self.link.mav.request_data_stream_send(self.config.target_system, self.config.target_component, group,
                                               max(1, round(self._stream_requests[msg_id])), 1)
