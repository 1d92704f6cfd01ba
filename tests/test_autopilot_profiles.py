"""ArduPilot-copter and PX4 profiles: pure message <-> vector functions, and the protocol against a scripted
flight controller on a real UDP socket that answers the way the reference logs show the real ones do
(../shared/data/sitl-logs: ArduCopter 4.8 and PX4 1.16 SITL driven by a companion computer)."""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from waiting import eventually

from dreamlink.calibration.tlog_data import tlog_to_transitions
from dreamlink.firmware_bridge.ardupilot import COPTER_MODES, ArduPilotCopterProfile, copter_mode_name
from dreamlink.firmware_bridge.autopilot import AutopilotError
from dreamlink.firmware_bridge.autopilot_config import AutopilotConfig
from dreamlink.firmware_bridge.link import CommandRefused, Link, LinkConfig, LinkTimeout, mavlink
from dreamlink.firmware_bridge.messages import (
    TYPE_MASK_POSITION_YAW,
    TYPE_MASK_VELOCITY_YAW,
    action_from_setpoint,
    is_velocity_setpoint,
    state_from_messages,
    velocity_setpoint_fields,
)
from dreamlink.firmware_bridge.px4 import Px4Profile, px4_custom_mode, px4_mode_name, px4_mode_parts
from dreamlink.sim.launcher import free_udp_port
from dreamlink.spec import QUAD, Component, VehicleSpec

ARDUPILOT, PX4 = "ardupilot", "px4"
PX4_LOITER, PX4_OFFBOARD, PX4_LAND, PX4_RTL = (px4_custom_mode(4, 3), px4_custom_mode(6), px4_custom_mode(4, 6),
                                               px4_custom_mode(4, 5))
FAST = AutopilotConfig(command_timeout_s=0.3, command_retries=1, mode_confirm_timeout_s=1.0, land_timeout_s=10.0,
                       takeoff_speed_mps=3.0)


# -- pure functions -----------------------------------------------------------------------------------


def msg(**fields: Any) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def test_state_follows_the_spec_order_whatever_it_is() -> None:
    lpn = msg(x=1.0, y=2.0, z=-3.0, vx=0.1, vy=0.2, vz=-0.3, time_boot_ms=1000)
    att = msg(roll=0.01, pitch=-0.02, yaw=0.7, rollspeed=0.4, pitchspeed=0.5, yawspeed=0.6)
    x = state_from_messages(lpn, att)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [1, 2, -3, 0.1, 0.2, -0.3, 0.01, -0.02, 0.7, 0.4, 0.5, 0.6], rtol=1e-6)
    reordered = VehicleSpec("q2", (QUAD.state[8], QUAD.state[2]), QUAD.action[::-1], 0.02)
    np.testing.assert_allclose(state_from_messages(lpn, att, reordered), [0.7, -3.0], rtol=1e-6)
    fields = velocity_setpoint_fields(np.array([-1.0, 0.5, 0.25], np.float32), 0.3, reordered)
    assert (fields["vx"], fields["vy"], fields["vz"]) == (0.25, 0.5, -1.0)


def test_a_spec_an_autopilot_cannot_serve_is_refused() -> None:
    wrong_state = VehicleSpec("w", (Component("airspeed_mps", "m/s", 0, 30),), QUAD.action, 0.02)
    with pytest.raises(ValueError, match="airspeed_mps"):
        state_from_messages(msg(), msg(), wrong_state)
    wrong_action = VehicleSpec("w", QUAD.state, (Component("thrust", "1", 0, 1),), 0.02)
    with pytest.raises(ValueError, match="vel_sp_n_mps"):
        velocity_setpoint_fields(np.zeros(1), 0.0, wrong_action)


def test_velocity_setpoint_is_2503_in_local_ned_and_decodes_back() -> None:
    fields = velocity_setpoint_fields(np.array([1.5, -2.0, 0.5], np.float32), -0.12, time_boot_ms=15032)
    assert fields["type_mask"] == TYPE_MASK_VELOCITY_YAW == 2503
    assert fields["coordinate_frame"] == mavlink.MAV_FRAME_LOCAL_NED
    assert fields["yaw"] == pytest.approx(-0.12) and fields["time_boot_ms"] == 15032
    np.testing.assert_allclose(action_from_setpoint(msg(**fields)), [1.5, -2.0, 0.5])
    no_heading = velocity_setpoint_fields(np.zeros(3), None)
    assert no_heading["type_mask"] == 2503 | mavlink.POSITION_TARGET_TYPEMASK_YAW_IGNORE


@pytest.mark.parametrize(("type_mask", "is_velocity"), [(2503, True), (3527, True), (2496, False), (2552, False),
                                                        (0x0FC7, True), (2503 & ~64, False), (2503 | 8, False)])
def test_type_mask_decoding(type_mask: int, is_velocity: bool) -> None:
    assert is_velocity_setpoint(type_mask) is is_velocity
    sp = msg(type_mask=type_mask, coordinate_frame=1, vx=1.0, vy=0.0, vz=0.0)
    assert (action_from_setpoint(sp) is not None) is is_velocity


def test_body_frame_velocities_are_rotated_by_the_heading() -> None:
    forward = msg(type_mask=2503, coordinate_frame=mavlink.MAV_FRAME_BODY_NED, vx=2.0, vy=0.0, vz=0.5)
    np.testing.assert_allclose(action_from_setpoint(forward, yaw_rad=math.pi / 2), [0.0, 2.0, 0.5], atol=1e-6)
    assert action_from_setpoint(forward) is None  # the heading is not in the message
    assert action_from_setpoint(msg(type_mask=2503, coordinate_frame=mavlink.MAV_FRAME_GLOBAL, vx=1, vy=0,
                                    vz=0)) is None


def test_px4_custom_mode_encoding_matches_the_log() -> None:
    assert px4_custom_mode(6) == 393216  # OFFBOARD, as PX4's HEARTBEAT during the excitation
    assert px4_mode_name(50593792) == "AUTO.LOITER" and px4_mode_name(100925440) == "AUTO.LAND"
    assert px4_mode_parts(px4_custom_mode(4, 5)) == (4, 5) and px4_mode_name(px4_custom_mode(3)) == "POSCTL"
    assert copter_mode_name(4) == "GUIDED" and copter_mode_name(17) == "BRAKE" and COPTER_MODES["LAND"] == 9


@pytest.mark.parametrize(("field", "value", "match"), [
    ("setpoint_rate_hz", 2.0, "PX4 leaves OFFBOARD"), ("offboard_warmup_s", 0.5, "more than a second"),
    ("target_system", 300, "0..255"), ("stream_rate_hz", math.nan, "stream_rate_hz"),
    ("failsafe_modes", (), "failsafe_modes")])
def test_config_errors_name_the_field(field: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AutopilotConfig(**{field: value})


# -- a scripted flight controller ---------------------------------------------------------------------


class ScriptedAutopilot:
    """ArduCopter or PX4 as seen from a companion computer, on a real UDP socket, with point-mass kinematics.

    What it reproduces from the logs: ArduPilot streams nothing until asked, ACKs DO_SET_MODE and sends a
    HEARTBEAT at once, takes off only with NAV_TAKEOFF, lands and disarms in LAND. PX4 sends ATTITUDE from the
    start, ACKs DO_SET_MODE twice (an immediate ACCEPTED, then the real result), accepts OFFBOARD only after
    more than a second of setpoints, falls back to AUTO.RTL when they stop for 1 s (COM_OF_LOSS_T), and lands
    with NAV_LAND. Ground is at d = 0."""

    def __init__(self, flavour: str, port: int, refuse_modes: dict[int, int] | None = None,
                 interval_result: int = mavlink.MAV_RESULT_ACCEPTED, ready_after_s: float = 0.0,
                 position_after_s: float = 0.0) -> None:
        self.flavour = flavour
        self.ready_after_s = ready_after_s
        self.position_after_s = position_after_s  # no state stream before this (an EKF without its origin yet)
        self.silent = False  # True: nothing is sent any more (a dead or unplugged autopilot)
        self.refuse_modes = refuse_modes or {}
        self.interval_result = interval_result
        self.link = Link(LinkConfig(f"udpout:127.0.0.1:{port}", source_system=1, source_component=1,
                                    heartbeat_period_s=0.0))
        self.lock = threading.Lock()
        self.pos = np.array([0.5, -1.0, 0.0])
        self.vel = np.zeros(3)
        self.yaw = 0.7
        self.armed = False
        self.custom_mode = 0 if flavour == ARDUPILOT else PX4_LOITER
        self.intervals_us: dict[int, float] = {} if flavour == ARDUPILOT else {mavlink.MAVLINK_MSG_ID_ATTITUDE: 2e4}
        self.data_streams: list[tuple[int, int]] = []
        self.commands: list[tuple[float, Any]] = []
        self.setpoints: list[tuple[float, Any]] = []
        self.events: list[str] = []
        self.params: dict[str, float] = {}
        self.pending_texts: list[str] = []
        self.target: Any = None  # the newest setpoint in force
        self.takeoff_alt_m: float | None = None
        self.heartbeat_due = 0.0
        self.last_sent: dict[int, float] = {}
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ScriptedAutopilot:
        self.link.open()
        self.link.subscribe("COMMAND_LONG", self._on_command)
        self.link.subscribe("SET_POSITION_TARGET_LOCAL_NED", self._on_setpoint)
        self.link.subscribe("REQUEST_DATA_STREAM", self._on_request_data_stream)
        self.link.subscribe("PARAM_SET", self._on_param_set)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.link.close()

    @property
    def mav(self) -> Any:
        return self.link.mav

    def now_ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def setpoints_between(self, t0: float, t1: float) -> list[tuple[float, Any]]:
        with self.lock:
            return [(t, m) for t, m in self.setpoints if t0 <= t < t1]

    def first_command_time(self, command: int) -> float:
        with self.lock:
            return next(t for t, m in self.commands if m.command == command)

    # -- receiving ---------------------------------------------------------------------------------

    def _on_setpoint(self, m: Any, recv_s: float) -> None:
        with self.lock:
            self.setpoints.append((recv_s, m))
            self.target = (recv_s, m)

    def _on_request_data_stream(self, m: Any, recv_s: float) -> None:
        with self.lock:
            self.data_streams.append((m.req_stream_id, m.req_message_rate))
            group = {mavlink.MAV_DATA_STREAM_POSITION: (mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED,),
                     mavlink.MAV_DATA_STREAM_EXTRA1: (mavlink.MAVLINK_MSG_ID_ATTITUDE,),
                     mavlink.MAV_DATA_STREAM_EXTENDED_STATUS: (mavlink.MAVLINK_MSG_ID_SYS_STATUS,
                                                               mavlink.MAVLINK_MSG_ID_EXTENDED_SYS_STATE)
                     }.get(m.req_stream_id, ())
            for msg_id in group if m.start_stop else ():
                self.intervals_us[msg_id] = 1e6 / m.req_message_rate

    def _on_param_set(self, m: Any, recv_s: float) -> None:
        """The parameter protocol: store and echo as PARAM_VALUE (both autopilots)."""
        raw = m.param_id
        name = (raw.decode() if isinstance(raw, bytes) else str(raw)).split("\x00")[0]
        with self.lock:
            self.params[name] = float(m.param_value)
            self.mav.param_value_send(name.encode(), m.param_value, m.param_type, len(self.params), 65535)

    def _ack(self, command: int, result: int) -> None:
        self.mav.command_ack_send(command, result, 0, 0, 1, 191)

    def _text(self, text: str, severity: int = mavlink.MAV_SEVERITY_INFO) -> None:
        self.mav.statustext_send(severity, (text + ("\t" if self.flavour == PX4 else "")).encode())

    def _on_command(self, m: Any, recv_s: float) -> None:
        with self.lock:
            self.commands.append((recv_s, m))
            result, after = self._handle(m, recv_s)
        if self.flavour == PX4 and m.command == mavlink.MAV_CMD_DO_SET_MODE:
            self._ack(m.command, mavlink.MAV_RESULT_ACCEPTED)  # PX4 1.16's premature ACK
        self._ack(m.command, result)
        if after:
            self._text(after)
        with self.lock:  # ArduPilot: HEARTBEAT at once; PX4 within its 1 Hz schedule (here 0.1 s)
            self.heartbeat_due = time.monotonic() + (0.0 if self.flavour == ARDUPILOT else 0.1)

    def _streaming_for_s(self, now: float) -> float:
        """How long setpoints have arrived without a 0.5 s gap (PX4's offboard signal)."""
        times = [t for t, _ in self.setpoints]
        if not times or now - times[-1] > 0.5:
            return 0.0
        start = times[-1]
        for t in reversed(times):
            if start - t > 0.5:
                break
            start = t
        return now - start

    def _handle(self, m: Any, now: float) -> tuple[int, str | None]:
        c = m.command
        if c == mavlink.MAV_CMD_SET_MESSAGE_INTERVAL:
            if self.interval_result == mavlink.MAV_RESULT_ACCEPTED:
                self.intervals_us[int(m.param1)] = m.param2
            return self.interval_result, None
        if c == mavlink.MAV_CMD_DO_SET_MODE:
            if self.flavour == ARDUPILOT:
                if not int(m.param1) & mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
                    return mavlink.MAV_RESULT_DENIED, None
                mode = int(m.param2)
            else:
                mode = px4_custom_mode(int(m.param2), int(m.param3))
            if self.flavour == ARDUPILOT and mode == COPTER_MODES["GUIDED"] and now - self.t0 < self.ready_after_s:
                return mavlink.MAV_RESULT_FAILED, "Mode change to GUIDED failed: requires position"
            if mode in self.refuse_modes:
                return self.refuse_modes[mode], f"Mode change to {mode} failed: requires position"
            if self.flavour == PX4 and mode == PX4_OFFBOARD and self._streaming_for_s(now) < 1.0:
                return mavlink.MAV_RESULT_TEMPORARILY_REJECTED, None
            self.custom_mode = mode
            return mavlink.MAV_RESULT_ACCEPTED, None
        if c == mavlink.MAV_CMD_COMPONENT_ARM_DISARM:
            if m.param1 < 0.5 and self.pos[2] < -0.05:  # both refuse an unforced disarm in the air
                return (mavlink.MAV_RESULT_FAILED if self.flavour == ARDUPILOT else
                        mavlink.MAV_RESULT_TEMPORARILY_REJECTED), None
            self.armed = m.param1 > 0.5
            return mavlink.MAV_RESULT_ACCEPTED, "Arming motors" if self.armed else "Disarming motors"
        if c == mavlink.MAV_CMD_NAV_TAKEOFF and self.flavour == ARDUPILOT:
            if not (self.armed and self.custom_mode == COPTER_MODES["GUIDED"]):
                return mavlink.MAV_RESULT_FAILED, None
            self.takeoff_alt_m = m.param7
            return mavlink.MAV_RESULT_ACCEPTED, None
        if c == mavlink.MAV_CMD_NAV_LAND and self.flavour == PX4:
            self.custom_mode = PX4_LAND
            return mavlink.MAV_RESULT_ACCEPTED, "Landing at current position"
        return mavlink.MAV_RESULT_UNSUPPORTED, None

    # -- the vehicle -------------------------------------------------------------------------------

    def _velocity_command(self, now: float) -> np.ndarray:
        if not self.armed:
            return np.zeros(3)
        mode = self.custom_mode
        if self.flavour == ARDUPILOT:
            if mode == COPTER_MODES["LAND"]:
                return np.array([0.0, 0.0, 3.0])
            if self.takeoff_alt_m is not None:
                return np.array([0.0, 0.0, -5.0])
            if mode != COPTER_MODES["GUIDED"] or self.target is None or now - self.target[0] > 3.0:
                return np.zeros(3)  # BRAKE, or GUID_TIMEOUT
        else:
            if mode == PX4_LAND:
                return np.array([0.0, 0.0, 3.0])
            if mode != PX4_OFFBOARD or self.target is None:
                return np.zeros(3)
        sp = self.target[1]
        v = np.zeros(3)
        if not sp.type_mask & 56:
            v = np.array([sp.vx, sp.vy, sp.vz])
        if not sp.type_mask & 7:
            v = v + 4.0 * (np.array([sp.x, sp.y, sp.z]) - self.pos)
        return v

    def _step(self, dt: float, now: float) -> None:
        with self.lock:
            if (self.flavour == PX4 and self.custom_mode == PX4_OFFBOARD and self.armed and self.setpoints
                    and now - self.setpoints[-1][0] > 1.0):
                self.custom_mode = PX4_RTL
                self.events.append("offboard lost")
                self.heartbeat_due = now
            self.vel = self._velocity_command(now)
            self.pos += self.vel * dt
            if self.takeoff_alt_m is not None and -self.pos[2] >= self.takeoff_alt_m:
                self.takeoff_alt_m = None
            landing = self.custom_mode in ((COPTER_MODES["LAND"],) if self.flavour == ARDUPILOT else (PX4_LAND,))
            if self.pos[2] >= 0.0:
                self.pos[2], self.vel[2] = 0.0, min(self.vel[2], 0.0)
                if landing and self.armed:
                    self.armed = False
                    self.events.append("landed")
                    self.pending_texts.append("Disarming motors" if self.flavour == ARDUPILOT else
                                              "Disarmed by landing")
                    self.heartbeat_due = now

    def _landed_state(self) -> int:
        if not self.armed or self.pos[2] >= 0.0:
            return mavlink.MAV_LANDED_STATE_ON_GROUND
        return mavlink.MAV_LANDED_STATE_IN_AIR

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.004):
            now = time.monotonic()
            self._step(now - last, now)
            last = now
            with self.lock:
                hb = now >= self.heartbeat_due
                if hb:
                    self.heartbeat_due = now + 1.0
                base = mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | (mavlink.MAV_MODE_FLAG_SAFETY_ARMED if self.armed
                                                                    else 0)
                due = [i for i, us in self.intervals_us.items()
                       if us > 0 and now - self.last_sent.get(i, 0) >= us / 1e6]
                for i in due:
                    self.last_sent[i] = now
                pos, vel, yaw, mode, landed = self.pos.copy(), self.vel.copy(), self.yaw, self.custom_mode, \
                    self._landed_state()
                texts, self.pending_texts = self.pending_texts, []
            if self.silent:
                continue
            for text in texts:
                self._text(text)
            autopilot = mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA if self.flavour == ARDUPILOT else mavlink.MAV_AUTOPILOT_PX4
            if hb:
                self.mav.heartbeat_send(mavlink.MAV_TYPE_QUADROTOR, autopilot, base, mode, mavlink.MAV_STATE_ACTIVE)
            ms = self.now_ms()
            if now - self.t0 < self.position_after_s:
                due = [i for i in due if i not in (mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED,
                                                   mavlink.MAVLINK_MSG_ID_ATTITUDE)]
            if mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED in due:
                self.mav.local_position_ned_send(ms, *pos, *vel)
            if mavlink.MAVLINK_MSG_ID_ATTITUDE in due:
                self.mav.attitude_send(ms, 0.01, -0.02, yaw, 0.4, 0.5, 0.6)
            if mavlink.MAVLINK_MSG_ID_EXTENDED_SYS_STATE in due:
                self.mav.extended_sys_state_send(mavlink.MAV_VTOL_STATE_MC, landed)
            if mavlink.MAVLINK_MSG_ID_SYS_STATUS in due:  # pre-arm checks pass after ready_after_s
                bits = 0x0300402F | (mavlink.MAV_SYS_STATUS_PREARM_CHECK if now - self.t0 >= self.ready_after_s
                                     else 0)
                self.mav.sys_status_send(0x0300402F, 0x0300402F, bits, 0, 12600, -1, 100, 0, 0, 0, 0, 0, 0)


@pytest.fixture()
def port() -> int:
    return free_udp_port()


@pytest.fixture()
def client_link(port: int) -> Iterator[Link]:
    with Link(LinkConfig(f"udp:127.0.0.1:{port}")) as link:
        yield link


# -- ArduPilot ------------------------------------------------------------------------------------------


@pytest.mark.sitl
def test_ardupilot_connect_asks_for_50hz_state_and_waits_until_ready(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(ARDUPILOT, port, ready_after_s=0.6) as fc:
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        t_s, x, age_s = profile.state()
        assert math.isnan(t_s) and np.all(np.isnan(x)) and age_s == math.inf
        profile.connect(timeout_s=3.0)
        assert profile.ready and time.monotonic() - fc.t0 >= 0.6
        profile.enter_control_mode()  # GUIDED "requires position" before the checks pass
        assert fc.intervals_us[mavlink.MAVLINK_MSG_ID_SYS_STATUS] == 500000
        assert fc.intervals_us[mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED] == 20000
        assert fc.intervals_us[mavlink.MAVLINK_MSG_ID_ATTITUDE] == 20000
        assert fc.intervals_us[mavlink.MAVLINK_MSG_ID_EXTENDED_SYS_STATE] == 500000
        t_s, x, age_s = profile.state()
        np.testing.assert_allclose(x, [0.5, -1.0, 0.0, 0, 0, 0, 0.01, -0.02, 0.7, 0.4, 0.5, 0.6], rtol=1e-6)
        assert 0.0 <= age_s < 0.5 and 0.0 < t_s <= fc.now_ms() / 1000
        assert profile.wait_state_after(t_s + 0.1, 2.0) and profile.state()[0] >= t_s + 0.1
        assert profile.mode == "GUIDED" and not profile.armed
        assert profile.landed_state == mavlink.MAV_LANDED_STATE_ON_GROUND


@pytest.mark.sitl
def test_connect_waits_for_the_estimator_while_the_autopilot_is_alive_and_says_why(port: int,
                                                                                   client_link: Link) -> None:
    """Real ArduPilot sends no LOCAL_POSITION_NED until its EKF uses GPS (~40 s in SITL): connect() must outwait
    that for as long as HEARTBEATs come (its timeout bounds silence), telling the user what it waits for."""
    with ScriptedAutopilot(ARDUPILOT, port, position_after_s=2.5) as fc:
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        profile.WAIT_REPORT_S = 0.5
        heard: list[str] = []
        profile.connect(timeout_s=1.5, progress=heard.append)
        assert time.monotonic() - fc.t0 >= 2.5 and np.all(np.isfinite(profile.state()[1]))
        assert heard and "LOCAL_POSITION_NED not sent yet" in heard[0] and "position estimate" in heard[0]


@pytest.mark.sitl
@pytest.mark.parametrize(("flavour", "mode", "name"), [(ARDUPILOT, COPTER_MODES["LAND"], "LAND"),
                                                       (PX4, PX4_OFFBOARD, "OFFBOARD")])
def test_a_landed_vehicle_is_not_waited_on_for_a_prearm_bit_its_mode_withholds(
        port: int, client_link: Link, flavour: str, mode: int, name: str) -> None:
    """After a flight ArduPilot sits disarmed in LAND (a mode it cannot arm in) and PX4 in OFFBOARD (which fails
    its arming check until setpoints stream), both seen on the real SITLs: their pre-arm checks fail until the
    client enters its control mode, so the next flight's connect() must not wait for them there."""
    with ScriptedAutopilot(flavour, port, ready_after_s=1e6) as fc:
        with fc.lock:
            fc.custom_mode = mode
        profile = (ArduPilotCopterProfile if flavour == ARDUPILOT else Px4Profile)(client_link, QUAD, FAST)
        started = time.monotonic()
        profile.connect(timeout_s=2.0)
        assert not profile.ready and profile.mode == name and time.monotonic() - started < 5.0


@pytest.mark.sitl
def test_connect_gives_up_when_the_autopilot_goes_silent(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(ARDUPILOT, port, position_after_s=60.0) as fc:
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        eventually(lambda: client_link.latest("HEARTBEAT") is not None, 3.0)
        fc.silent = True
        started = time.monotonic()
        with pytest.raises(LinkTimeout, match="went silent"):
            profile.connect(timeout_s=1.5)
        assert time.monotonic() - started < 5.0


@pytest.mark.sitl
def test_a_state_stream_lowered_by_another_client_is_asserted_again(port: int, client_link: Link) -> None:
    """MAVProxy's REQUEST_DATA_STREAM (4 Hz) resets ArduPilot's message intervals: the profile notices the late
    samples within a few periods and asks for 50 Hz again, so the state stays fresh."""
    with ScriptedAutopilot(ARDUPILOT, port) as fc:
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        profile.connect(timeout_s=3.0)
        time.sleep(0.3)
        lpn = mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED
        with fc.lock:
            fc.intervals_us[lpn] = 250000.0
        ages = []
        for _ in range(100):  # 2 s of 50 Hz ticks
            ages.append(profile.state()[2])
            time.sleep(0.02)
        assert fc.intervals_us[lpn] == 20000
        assert profile.streams.reasserts("LOCAL_POSITION_NED") >= 1
        assert sum(a > 0.1 for a in ages) <= 2, ages
        report = profile.stream_report()["streams"]["LOCAL_POSITION_NED"]  # type: ignore[index]
        assert report["reasserts"] >= 1 and report["requested_hz"] == 50.0


@pytest.mark.sitl
def test_ardupilot_without_message_intervals_falls_back_to_data_streams(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(ARDUPILOT, port, interval_result=mavlink.MAV_RESULT_UNSUPPORTED) as fc:
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        profile.connect(timeout_s=3.0)
        assert (mavlink.MAV_DATA_STREAM_POSITION, 50) in fc.data_streams
        assert (mavlink.MAV_DATA_STREAM_EXTRA1, 50) in fc.data_streams
        assert (mavlink.MAV_DATA_STREAM_EXTENDED_STATUS, 2) in fc.data_streams
        assert np.all(np.isfinite(profile.state()[1])) and profile.ready


@pytest.mark.sitl
def test_ardupilot_guided_takeoff_velocity_setpoints_brake_and_land(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(ARDUPILOT, port) as fc:
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        profile.connect(timeout_s=3.0)
        profile.enter_control_mode()
        mode_cmd = next(m for _, m in fc.commands if m.command == mavlink.MAV_CMD_DO_SET_MODE)
        assert (mode_cmd.param1, mode_cmd.param2) == (mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, 4)
        assert profile.mode == "GUIDED" and profile.yaw_hold_rad == pytest.approx(0.7)
        assert fc.params == dict(ArduPilotCopterProfile.GUIDED_TUNING)  # tuned before GUIDED was asked for
        with pytest.raises(AutopilotError, match="arm"):
            profile.takeoff(2.0)
        profile.arm()
        profile.takeoff(2.0)
        takeoff = next(m for _, m in fc.commands if m.command == mavlink.MAV_CMD_NAV_TAKEOFF)
        assert takeoff.param7 == 2.0
        assert profile.state()[1][QUAD.state_index("pos_d_m")] <= -1.7
        assert eventually(lambda: profile.in_air)

        fc.yaw = 1.2  # the vehicle turns: setpoints keep the heading held at control start
        sent_at = time.monotonic()
        profile.send(np.array([1.0, -0.5, 0.2], np.float32))
        assert eventually(lambda: len(fc.setpoints_between(sent_at, math.inf)) == 1)
        (_, sp), = fc.setpoints_between(sent_at, math.inf)
        assert (sp.coordinate_frame, sp.type_mask) == (mavlink.MAV_FRAME_LOCAL_NED, 2503)
        assert (sp.target_system, sp.target_component) == (1, 1)
        assert (sp.vx, sp.vy, sp.vz) == pytest.approx((1.0, -0.5, 0.2)) and sp.yaw == pytest.approx(0.7)
        assert eventually(lambda: profile.state()[1][QUAD.state_index("vel_n_mps")] == pytest.approx(1.0))
        profile.send(np.array([np.nan, 0.0, 0.0], np.float32))  # a NaN action never becomes a velocity
        assert eventually(lambda: fc.setpoints[-1][1].type_mask == TYPE_MASK_POSITION_YAW)

        profile.hold()
        assert profile.mode == "BRAKE"
        profile.land(timeout_s=5.0)
        assert not profile.armed and profile.mode == "LAND" and "landed" in fc.events
        assert "Disarming motors" in profile.statustexts


@pytest.mark.sitl
def test_ardupilot_refused_mode_raises_naming_the_command_and_the_reason(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(ARDUPILOT, port, refuse_modes={4: mavlink.MAV_RESULT_DENIED}):
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        profile.connect(timeout_s=3.0)
        with pytest.raises(CommandRefused, match=r"MAV_CMD_DO_SET_MODE \(176\) refused with MAV_RESULT_DENIED.*"
                                                 r"GUIDED.*requires position"):
            profile.enter_control_mode()
        assert profile.mode == "STABILIZE"


@pytest.mark.sitl
def test_ardupilot_failsafe_and_release_land_when_flying_and_disarm_on_the_ground(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(ARDUPILOT, port) as fc:
        profile = ArduPilotCopterProfile(client_link, QUAD, FAST)
        profile.connect(timeout_s=3.0)
        profile.enter_control_mode()
        profile.arm()
        profile.release()  # armed on the ground: disarm
        assert not profile.armed and eventually(lambda: not fc.armed)
        profile.arm()
        profile.takeoff(1.0)
        assert profile.failsafe() == "RTL" and profile.mode == "RTL"
        profile.release()  # flying: LAND
        assert eventually(lambda: fc.custom_mode == COPTER_MODES["LAND"])
    profile.release()  # a dead link: logs, never raises


@pytest.mark.sitl
def test_wrong_family_and_silent_autopilot_are_clear_errors(port: int, client_link: Link) -> None:
    with pytest.raises(LinkTimeout, match="no HEARTBEAT from ArduPilot 1/1"):
        ArduPilotCopterProfile(client_link, QUAD, FAST).connect(timeout_s=0.3)
    with ScriptedAutopilot(PX4, port), pytest.raises(AutopilotError, match="MAV_AUTOPILOT_PX4, not ArduPilot"):
        ArduPilotCopterProfile(client_link, QUAD, FAST).connect(timeout_s=3.0)


@pytest.mark.sitl
def test_a_flight_recorded_by_the_link_tap_becomes_transitions(port: int, tmp_path: Path) -> None:
    tlog = tmp_path / "flight.tlog"
    with open(tlog, "wb") as out, ScriptedAutopilot(ARDUPILOT, port):
        lock = threading.Lock()

        def tap(direction: str, t_unix_s: float, frame: bytes) -> None:  # the flight recorder's format
            with lock:
                out.write(struct.pack(">Q", int(t_unix_s * 1e6)) + frame)

        with Link(LinkConfig(f"udp:127.0.0.1:{port}"), tap=tap) as link:
            profile = ArduPilotCopterProfile(link, QUAD, FAST)
            profile.connect(timeout_s=3.0)
            profile.enter_control_mode()
            profile.arm()
            profile.takeoff(1.0)
            for k in range(60):  # 1.2 s at 50 Hz
                profile.send(np.array([0.5 * math.sin(k / 10), 0.3, 0.0], np.float32))
                time.sleep(0.02)
            profile.land(timeout_s=5.0)
    transitions = tlog_to_transitions(tlog, QUAD, "ardupilot")
    assert 40 <= len(transitions) <= 75 and transitions.n_episodes == 1
    assert np.all(np.abs(transitions.action[:, 1] - 0.3) < 1e-6)
    assert np.all(np.abs(transitions.action[:, 0]) <= 0.5)


# -- PX4 ------------------------------------------------------------------------------------------------


@pytest.mark.sitl
def test_px4_late_refusal_overrides_the_premature_accept(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(PX4, port, refuse_modes={PX4_OFFBOARD: mavlink.MAV_RESULT_TEMPORARILY_REJECTED}) as fc:
        profile = Px4Profile(client_link, QUAD, FAST)
        profile.connect(timeout_s=3.0)
        with pytest.raises(CommandRefused, match=r"TEMPORARILY_REJECTED.*first COMMAND_ACK said ACCEPTED"):
            profile.enter_control_mode()
        assert profile.streaming and profile.mode == "AUTO.LOITER"
        assert profile.failsafe() == "LAND"  # this PX4 does not take NAV_RETURN_TO_LAUNCH: the next action
        assert [m.command for _, m in fc.commands][-2:] == [mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH,
                                                           mavlink.MAV_CMD_NAV_LAND]
        assert not profile.streaming


@pytest.mark.sitl
def test_px4_offboard_flight_streams_first_survives_the_double_ack_and_idling(port: int, client_link: Link) -> None:
    with ScriptedAutopilot(PX4, port) as fc:
        profile = Px4Profile(client_link, QUAD, FAST)
        profile.connect(timeout_s=3.0)
        assert profile.mode == "AUTO.LOITER"
        profile.enter_control_mode()
        asked = fc.first_command_time(mavlink.MAV_CMD_DO_SET_MODE)
        before = fc.setpoints_between(0.0, asked)
        assert len(before) >= 10 and before[-1][0] - before[0][0] >= 0.9
        assert all(m.type_mask == TYPE_MASK_POSITION_YAW for _, m in before)
        assert (before[-1][1].x, before[-1][1].y, before[-1][1].yaw) == pytest.approx((0.5, -1.0, 0.7))
        mode_cmd = next(m for _, m in fc.commands if m.command == mavlink.MAV_CMD_DO_SET_MODE)
        assert (mode_cmd.param1, mode_cmd.param2, mode_cmd.param3) == (1, 6, 0)
        assert profile.mode == "OFFBOARD" and profile.custom_mode == 393216
        profile.arm()  # the second DO_SET_MODE ack must not be taken for the ARM ack or upset it
        assert profile.armed and fc.armed
        climb_from = time.monotonic()
        profile.takeoff(1.5)
        ramp = [m for _, m in fc.setpoints_between(climb_from, math.inf)]
        assert any(m.type_mask == 2496 and m.vz == pytest.approx(-3.0) for m in ramp)
        assert profile.state()[1][QUAD.state_index("pos_d_m")] <= -1.2

        idle_from = time.monotonic()
        profile.send(np.array([0.6, 0.0, -0.1], np.float32))
        time.sleep(1.2)  # the caller does nothing: the stream keeps OFFBOARD
        idle = fc.setpoints_between(idle_from, idle_from + 1.2)
        times = [t for t, _ in idle]
        assert len(idle) >= 15 and max(np.diff(times)) < 0.25
        velocity = [m for _, m in idle if m.type_mask == TYPE_MASK_VELOCITY_YAW]
        assert len(velocity) >= 5 and all(m.vx == pytest.approx(0.6) and m.yaw == pytest.approx(0.7)
                                          for m in velocity)
        assert idle[-1][1].type_mask == TYPE_MASK_POSITION_YAW  # the action expired into a hold
        assert profile.mode == "OFFBOARD" and "offboard lost" not in fc.events

        profile.land(timeout_s=5.0)
        assert not profile.armed and "landed" in fc.events and not profile.streaming
        landed_at = time.monotonic()
        time.sleep(0.3)
        assert not fc.setpoints_between(landed_at, math.inf)
        assert any(m.command == mavlink.MAV_CMD_NAV_LAND and math.isnan(m.param7) for _, m in fc.commands)
