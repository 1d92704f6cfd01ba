"""The simulated flight controller's MAVLink face: parse what arrives, answer commands, schedule telemetry.

Transport-free: `MavlinkFace.receive(datagram)` takes one UDP datagram, `after_frame()` is called after every
10 ms vehicle frame, and every packed frame goes to the `write` callable. The process (process.py) owns the
socket and the clock; what each telemetry message says is telemetry.py's, this is when and whether it goes.

Protocol, as the real autopilots do it (see ardupilot.py / px4.py for modes and commands):

- Identity sysid 1, compid 1 (MAV_COMP_ID_AUTOPILOT1), MAVLink 2. Messages and commands are taken when
  their target_system is 0 or 1 and target_component 0 or 1.
- HEARTBEAT once a second of vehicle time (type, autopilot, base_mode, custom_mode, system_status per flavour,
  mavlink_version 3).
- Streams, scheduled in vehicle time, at most one sample per 10 ms frame: LOCAL_POSITION_NED, ATTITUDE,
  ATTITUDE_QUATERNION, HIGHRES_IMU, ODOMETRY (PX4 only: ArduCopter has no ap_message for id 331 and answers
  DENIED with STATUSTEXT "No ap_message for mavlink id (331)", as in its log), SYS_STATUS, EXTENDED_SYS_STATE,
  GLOBAL_POSITION_INT, POSITION_TARGET_LOCAL_NED, ATTITUDE_TARGET, SERVO_OUTPUT_RAW, HOME_POSITION,
  GPS_GLOBAL_ORIGIN (home is the local frame's origin: both at NED 0, 0, 0).
  "Default rate" (SET_MESSAGE_INTERVAL param2 = 0): 50 Hz for the five state messages, 2 Hz SYS_STATUS /
  EXTENDED_SYS_STATE, 5 Hz GLOBAL_POSITION_INT, 10 Hz the target echoes and SERVO_OUTPUT_RAW, 0.5 Hz
  HOME_POSITION and GPS_GLOBAL_ORIGIN. PX4 streams its set from boot (like PX4's onboard link); ArduPilot sends
  only HEARTBEAT until a client asks (SET_MESSAGE_INTERVAL or REQUEST_DATA_STREAM), exactly as its log shows, unless
  `streams_at_boot`. param2 -1 stops a stream, > 0 is the interval in us (below 10 ms: every frame).
  Unstreamable ids: ArduPilot DENIED + STATUSTEXT, PX4 FAILED.
- MAV_CMD_REQUEST_MESSAGE (512) sends one message (AUTOPILOT_VERSION, HOME_POSITION or any streamable one),
  MAV_CMD_GET_HOME_POSITION (410) and MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES (520) likewise. Every other
  command the flavour does not know: MAV_RESULT_UNSUPPORTED. COMMAND_ACK goes to the sender's sysid/compid.
- STATUSTEXT longer than 50 bytes goes out in MAVLink 2 chunks (same `id`, `chunk_seq` 0, 1, ...) as PX4
  does; PX4's texts end in a tab, as in its log. Reasons for a refused command precede its COMMAND_ACK.
- The mission protocol (MISSION_*: mission, fence, rally points, up and down) is `mission_store.MissionStore`.
- TIMESYNC with tc1 = 0 is answered with tc1 = vehicle time (ns), ts1 echoed (both autopilots do).
- Telemetry (with the randomised sensor noise, telemetry.py) is held back by the randomised latency (vehicle
  time); HEARTBEAT, COMMAND_ACK and STATUSTEXT are not delayed.
- Malformed input (garbage, CRC errors, a frame cut short at the datagram end, unknown ids) is dropped and
  counted, never fatal.
- Estimator health reports (telemetry.py): ArduPilot streams EKF_STATUS_REPORT, PX4 ESTIMATOR_STATUS, each at
  the 2 Hz default.
- Faults (set by the process's schedule): `telemetry_frozen` stops HEARTBEAT and every stream (their schedule
  runs on unsent, counted in `tx_frozen`); TIMESYNC answers, COMMAND_ACK and STATUSTEXT still go out, so a
  lockstep client can still step the vehicle and learn its time.
- Signing (`signing_key`, as the motor board): every frame sent is signed; a received frame is acted on only
  with a good signature newer than its stream's last (unsigned, wrongly signed and replayed frames are
  dropped and counted: `rx_unsigned_rejected`, `rx_bad_signature`, `rx_replayed`). Admission is the Link's
  own rule (`dreamlink.firmware_bridge.admission`), malformed input above included.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamlink.firmware_bridge.admission import (
    AdmissionCounts,
)
from dreamlink.firmware_bridge.security import SigningKey
from dreamlink.sim.mavlink_udp import SitlEnd, mavlink
from dreamlink.sim.quadrotor.autopilot import (
    FLIGHT_COMMANDS,
    MAV_RESULT_ACCEPTED,
    MAV_RESULT_DENIED,
    MAV_RESULT_FAILED,
    MAV_RESULT_UNSUPPORTED,
    MAV_SEVERITY_INFO,
)
from dreamlink.sim.quadrotor.mission_store import MISSION_MESSAGES, MissionStore
from dreamlink.sim.quadrotor.params import MAV_PARAM_TYPE_REAL32, PARAM_REQUESTS, handle_param_message
from dreamlink.sim.quadrotor.telemetry import STATE_MESSAGES, Telemetry, global_position
from dreamlink.sim.quadrotor.vehicle import FRAME_US, SimVehicle

log = logging.getLogger(__name__)

SYSTEM_ID = 1
COMPONENT_ID = 1

MSG = {name: getattr(mavlink, f"MAVLINK_MSG_ID_{name}") for name in (
    "LOCAL_POSITION_NED", "ATTITUDE", "ATTITUDE_QUATERNION", "HIGHRES_IMU", "ODOMETRY", "SYS_STATUS",
    "EXTENDED_SYS_STATE", "GLOBAL_POSITION_INT", "POSITION_TARGET_LOCAL_NED", "ATTITUDE_TARGET",
    "SERVO_OUTPUT_RAW", "HOME_POSITION", "AUTOPILOT_VERSION", "HEARTBEAT", "EKF_STATUS_REPORT", "ESTIMATOR_STATUS",
    "GPS_GLOBAL_ORIGIN")}
DEFAULT_RATE_HZ = {"LOCAL_POSITION_NED": 50.0, "ATTITUDE": 50.0, "ATTITUDE_QUATERNION": 50.0, "HIGHRES_IMU": 50.0,
                   "ODOMETRY": 50.0, "SYS_STATUS": 2.0, "EXTENDED_SYS_STATE": 2.0, "GLOBAL_POSITION_INT": 5.0,
                   "POSITION_TARGET_LOCAL_NED": 10.0, "ATTITUDE_TARGET": 10.0, "SERVO_OUTPUT_RAW": 10.0,
                   "HOME_POSITION": 0.5, "EKF_STATUS_REPORT": 2.0, "ESTIMATOR_STATUS": 2.0, "GPS_GLOBAL_ORIGIN": 0.5}
BOOT_STREAMS = ("LOCAL_POSITION_NED", "ATTITUDE", "ATTITUDE_QUATERNION", "HIGHRES_IMU", "ODOMETRY", "SYS_STATUS",
                "EXTENDED_SYS_STATE", "GLOBAL_POSITION_INT", "HOME_POSITION")
# ArduPilot's legacy stream groups (REQUEST_DATA_STREAM), reduced to the messages this SITL has
DATA_STREAM_GROUPS = {1: ("HIGHRES_IMU",), 2: ("SYS_STATUS", "EXTENDED_SYS_STATE"),
                      6: ("LOCAL_POSITION_NED", "GLOBAL_POSITION_INT"), 10: ("ATTITUDE",)}
# Per-flavour estimator report: ArduPilot's EKF_STATUS_REPORT (ardupilotmega), PX4's ESTIMATOR_STATUS (common)
ESTIMATOR_REPORT = {"ardupilot": "EKF_STATUS_REPORT", "px4": "ESTIMATOR_STATUS"}


@dataclass
class IoCounters(AdmissionCounts):
    """Traffic the face counted since start (logged at exit): the admission's counts, then the face's own."""

    rx_not_for_us: int = 0
    tx_frames: int = 0
    ticks: int = 0
    tx_frozen: int = 0  # telemetry frames not sent during a freeze


class MavlinkFace:
    """MAVLink in and out for one `SimVehicle`. `on_tick` is called for each lockstep tick message."""

    def __init__(self, vehicle: SimVehicle, write: Callable[[bytes], None], lockstep: bool = False,
                 streams_at_boot: bool | None = None, on_tick: Callable[[], None] | None = None,
                 signing_key: SigningKey | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.vehicle = vehicle
        self.telemetry_frozen = False  # a fault: no HEARTBEAT, no streams (TIMESYNC and ACKs still go out)
        self.flavour = vehicle.flavour
        self.lockstep = lockstep
        self.on_tick = on_tick
        self.counters = IoCounters()
        self._write = write
        self._end = SitlEnd(self._send_frame, SYSTEM_ID, COMPONENT_ID, self.counters, log, signing_key, wall_clock)
        self._mav, self._auth = self._end.mav, self._end.auth
        if self._auth is not None:  # as the motor board: sign everything, act on good signatures only
            self._mav.send = self._send_signed
        self._delay_us = round(vehicle.domain.telemetry_latency_s * 1e6)
        self._delayed: deque[tuple[int, Any]] = deque()  # (due us, packed frame or, signing, the message)
        self._delaying = False
        self._released: dict[int, bytes] = {}  # newest frame written per message id (the snapshot resends it)
        self._telemetry = Telemetry(vehicle, self._mav)  # telemetry.py: what each message says
        self.interval_us: dict[str, int] = {}
        self._next_due_us: dict[str, int] = {}
        boot = self.flavour == "px4" if streams_at_boot is None else streams_at_boot
        if boot:
            for name in BOOT_STREAMS:
                if self.streamable(name):
                    self.set_interval(name, 0)
        self._next_heartbeat_us = 0
        self.missions = MissionStore(self.flavour, self._mav,  # mission_store.py
                                     lambda: global_position(vehicle.home, np.zeros(3)))

    # -- streams ------------------------------------------------------------------------------------------------

    def streamable(self, name: str) -> bool:
        if name in ESTIMATOR_REPORT.values():
            return name == ESTIMATOR_REPORT[self.flavour]
        return name in DEFAULT_RATE_HZ and not (name == "ODOMETRY" and self.flavour == "ardupilot")

    def set_interval(self, name: str, interval_us: float) -> None:
        if interval_us < 0:
            self.interval_us.pop(name, None)
            return
        if interval_us == 0:
            interval_us = 1e6 / DEFAULT_RATE_HZ[name]
        self.interval_us[name] = max(round(interval_us), 1)
        self._next_due_us[name] = self.vehicle.time_us

    def after_frame(self) -> None:
        """Send what is due at the current vehicle time: heartbeat, streams, texts, delayed telemetry."""
        now_us = self.vehicle.time_us
        self.missions.poll()
        if now_us >= self._next_heartbeat_us:
            self.send_heartbeat()
            self._next_heartbeat_us = now_us + 1_000_000
        if self.telemetry_frozen:
            for name, interval in list(self.interval_us.items()):  # the streams' schedule runs on, unsent
                if now_us >= self._next_due_us.get(name, now_us):
                    self._next_due_us[name] = now_us + interval
                    self.counters.tx_frozen += 1
            self.flush_texts()
            return
        self._delaying = self._delay_us > 0
        try:
            for name, interval in list(self.interval_us.items()):
                due = self._next_due_us.get(name, now_us)
                if now_us >= due:
                    self.send_message(name)
                    self._next_due_us[name] = due + interval if due + interval > now_us else now_us + interval
        finally:
            self._delaying = False
        self.flush_texts()
        while self._delayed and self._delayed[0][0] <= now_us:
            item = self._delayed.popleft()[1]
            if isinstance(item, bytes):
                self._write_now(item)
            else:
                self._send_signed(item)

    def send_state_snapshot(self) -> None:
        """One sample of every enabled state stream (lockstep: with the wall-clock heartbeat, so a client
        that has not ticked yet still sees where the vehicle is).

        A stream already flowing is repeated as last released, never sampled afresh: with telemetry
        latency a fresh sample would be stamped ahead of the delayed stream, and a lockstep client
        waiting for "a sample newer than the newest" would then wait on the wall clock every tick."""
        if self.telemetry_frozen:
            return
        for name in (*STATE_MESSAGES, "EXTENDED_SYS_STATE"):
            if name in self.interval_us:
                frame = self._released.get(getattr(mavlink, f"MAVLINK_MSG_ID_{name}"))
                if frame is not None and self._auth is None:  # a signed frame sent twice is a replay
                    self._write_now(frame)
                else:
                    self.send_message(name)

    # -- outgoing -------------------------------------------------------------------------------------------------

    def _send_frame(self, frame: bytes) -> None:
        if self._delaying:
            self._delayed.append((self.vehicle.time_us + self._delay_us, bytes(frame)))
        else:
            self._write_now(frame)

    def _send_signed(self, msg: Any, force_mavlink1: bool = False) -> None:
        # timestamps never behind the wall clock nor the newest a peer signed (the spec's rules)
        assert self._auth is not None
        if self._delaying:  # signed when it goes out: a frame signed now and sent later would be a replay
            self._delayed.append((self.vehicle.time_us + self._delay_us, msg))
            return
        self._end.send_signed_now(msg, force_mavlink1)

    def _write_now(self, frame: bytes) -> None:
        self.counters.tx_frames += 1
        if len(frame) > 10 and frame[0] == 0xFD:  # MAVLink 2: message id in bytes 7..9
            self._released[int.from_bytes(frame[7:10], "little")] = frame
        self._write(frame)

    def send_heartbeat(self) -> None:
        if self.telemetry_frozen:
            self.counters.tx_frozen += 1
            return
        mav_type, autopilot, base_mode, custom_mode, status = self.vehicle.autopilot.heartbeat()
        self._mav.heartbeat_send(mav_type, autopilot, base_mode, custom_mode, status, 3)

    def flush_texts(self) -> None:
        for severity, text in self.vehicle.autopilot.take_texts():
            self.statustext(severity, text)

    def statustext(self, severity: int, text: str) -> None:
        log.info("STATUSTEXT %d: %s", severity, text.rstrip())
        data = text.encode("utf-8")
        if len(data) <= 50:
            self._mav.statustext_send(severity, data)
            return
        chunk_id = zlib.crc32(data) % 0xFFFF + 1
        for seq, start in enumerate(range(0, len(data), 50)):
            self._mav.statustext_send(severity, data[start:start + 50], chunk_id, seq)


    def send_message(self, name: str) -> bool:
        """Send one message by name now (streams, requests); False if this SITL cannot produce it."""
        return self._telemetry.send(name)

    # -- incoming -------------------------------------------------------------------------------------------------

    def receive(self, datagram: bytes) -> None:
        """Handle one UDP datagram (a whole number of MAVLink frames; anything else is dropped and counted)."""
        for admitted in self._end.admission.admit(datagram):
            msg_type = admitted.msg.get_type()
            try:
                self._dispatch(msg_type, admitted.msg)
            except (ValueError, TypeError, OverflowError) as exc:  # a well-formed frame with absurd values
                self._end.admission.drop_malformed(1, f"{msg_type}: {exc}")

    def _for_me(self, msg: Any) -> bool:
        ok = msg.target_system in (0, SYSTEM_ID) and msg.target_component in (0, COMPONENT_ID)
        if not ok:
            self.counters.rx_not_for_us += 1
        return bool(ok)

    def _tick(self) -> None:
        if self.lockstep and self.on_tick is not None:
            self.counters.ticks += 1
            self.on_tick()

    def _dispatch(self, msg_type: str, msg: Any) -> None:
        v, ap = self.vehicle, self.vehicle.autopilot
        if msg_type == "SET_POSITION_TARGET_LOCAL_NED":
            if self._for_me(msg):
                ap.position_target(int(msg.type_mask), int(msg.coordinate_frame), (msg.x, msg.y, msg.z),
                                   (msg.vx, msg.vy, msg.vz), (msg.afx, msg.afy, msg.afz), msg.yaw, msg.yaw_rate,
                                   v.time_s, v.state)
                self._tick()
        elif msg_type == "SET_ATTITUDE_TARGET":
            if self._for_me(msg):
                q, rates = tuple(msg.q), (msg.body_roll_rate, msg.body_pitch_rate, msg.body_yaw_rate)
                if self.flavour == "px4":
                    thrust_body = tuple(getattr(msg, "thrust_body", (0.0, 0.0, 0.0)))
                    ap.attitude_target(int(msg.type_mask), q, rates, msg.thrust, v.time_s, v.state,  # type: ignore[call-arg]
                                       thrust_body=thrust_body)
                else:
                    ap.attitude_target(int(msg.type_mask), q, rates, msg.thrust, v.time_s, v.state)
                self._tick()
        elif msg_type == "TIMESYNC":
            if msg.tc1 == 0:
                self._tick()
                self._mav.timesync_send(v.time_us * 1000, msg.ts1)
        elif msg_type in ("COMMAND_LONG", "COMMAND_INT"):
            if self._for_me(msg):
                self._command(msg, msg_type == "COMMAND_INT")
        elif msg_type == "SET_MODE":
            if msg.target_system in (0, SYSTEM_ID):
                for result in ap.set_mode_message(int(msg.base_mode), int(msg.custom_mode), v.time_s, v.state):
                    self._mav.command_ack_send(mavlink.MAV_CMD_DO_SET_MODE, result, 0, 0, msg.get_srcSystem(),
                                               msg.get_srcComponent())
                self._after_state_change()
        elif msg_type == "REQUEST_DATA_STREAM":
            if self.flavour == "ardupilot" and self._for_me(msg):
                self._request_data_stream(int(msg.req_stream_id), float(msg.req_message_rate), int(msg.start_stop))
        elif msg_type in PARAM_REQUESTS and getattr(ap, "params", None) is not None and self._for_me(msg):
            handle_param_message(msg_type, msg, ap.params, self._send_param_value)
        elif msg_type in MISSION_MESSAGES and self._for_me(msg):
            self.missions.handle(msg_type, msg)

    def _send_param_value(self, name: str, value: float, count: int, index: int) -> None:
        self._mav.param_value_send(name.encode("ascii"), value, MAV_PARAM_TYPE_REAL32, count, index)

    def _command(self, msg: Any, is_int: bool) -> None:
        v, ap = self.vehicle, self.vehicle.autopilot
        command = int(msg.command)
        if is_int:
            params = (msg.param1, msg.param2, msg.param3, msg.param4, float(msg.x), float(msg.y), float(msg.z))
            frame: int | None = int(msg.frame)
        else:
            params = (msg.param1, msg.param2, msg.param3, msg.param4, msg.param5, msg.param6, msg.param7)
            frame = None
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        results = ap.command(command, params, v.time_s, v.state, source_component=src[1], frame=frame)
        after: str | None = None
        if results is None:
            result, after = self._stream_command(command, params)
            results = [result]
        if after is not None and self.flavour == "px4":  # PX4 sends the message, then the ACK (log)
            self.send_message(after)
            after = None
        self.flush_texts()  # the reasons first, so a client that stops reading at the ACK has them
        for result in results:
            self._mav.command_ack_send(command, result, 0, 0, src[0], src[1])
        if after is not None:
            self.send_message(after)
        if command in FLIGHT_COMMANDS:
            self._after_state_change()

    def _after_state_change(self) -> None:
        """Lockstep: time may not move for a while, so show the new arming/mode state at once."""
        self.flush_texts()
        if self.lockstep:
            self.send_heartbeat()

    def _stream_command(self, command: int, params: tuple[float, ...]) -> tuple[int, str | None]:
        if command == mavlink.MAV_CMD_SET_MESSAGE_INTERVAL:
            name = self._message_name(params[0])
            if name is None or not self.streamable(name):
                if self.flavour == "ardupilot":
                    self.statustext(MAV_SEVERITY_INFO, f"No ap_message for mavlink id ({int(params[0])})")
                    return MAV_RESULT_DENIED, None
                return MAV_RESULT_FAILED, None
            if not math.isfinite(params[1]) or params[1] < -1:
                return MAV_RESULT_DENIED, None
            self.set_interval(name, params[1])
            return MAV_RESULT_ACCEPTED, None
        if command in (mavlink.MAV_CMD_REQUEST_MESSAGE, mavlink.MAV_CMD_GET_HOME_POSITION,
                       mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES):
            wanted = {mavlink.MAV_CMD_GET_HOME_POSITION: "HOME_POSITION",
                      mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES: "AUTOPILOT_VERSION"}.get(command)
            wanted = wanted or self._message_name(params[0])
            if wanted is None or not (self.streamable(wanted) or wanted == "AUTOPILOT_VERSION"):
                return (MAV_RESULT_FAILED if self.flavour == "ardupilot" else MAV_RESULT_DENIED), None
            return MAV_RESULT_ACCEPTED, wanted
        return MAV_RESULT_UNSUPPORTED, None

    @staticmethod
    def _message_name(msg_id: float) -> str | None:
        if not math.isfinite(msg_id):
            return None
        for name, number in MSG.items():
            if number == int(msg_id):
                return name
        return None

    def _request_data_stream(self, stream_id: int, rate_hz: float, start: int) -> None:
        names = [n for n in BOOT_STREAMS if self.streamable(n)] if stream_id == 0 else \
            list(DATA_STREAM_GROUPS.get(stream_id, ()))
        for name in names:
            if start and rate_hz > 0:
                self.set_interval(name, 1e6 / rate_hz)
            else:
                self.set_interval(name, -1)
        if stream_id == 0 and not start:
            self.interval_us.clear()

    # -- lockstep helpers ------------------------------------------------------------------------------------------

    @property
    def frame_us(self) -> int:
        return FRAME_US
