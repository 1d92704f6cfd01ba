"""The quadrotor SITL as a process on real UDP, driven like a companion computer (lockstep for speed)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dreamlink.sim.launcher import SitlProcess

os.environ.setdefault("MAVLINK20", "1")
from pymavlink import mavutil

mavlink: Any = mavutil.mavlink

pytestmark = pytest.mark.sitl

OFFBOARD = 0x00060000
AUTO_LOITER = 0x03040000
AUTO_RTL = 0x05040000


def QuadSitl(flavour: str, extra_args: tuple[str, ...] = (), lockstep: bool = True, seed: int = 0) -> SitlProcess:
    """The shared launcher (start, first heartbeat, cleanup), as users start the quadrotor."""
    return SitlProcess("quad", lockstep=lockstep, seed=seed, extra_args=("--flavour", flavour, *extra_args))


class Companion:
    """A synchronous MAVLink client on the SITL's --out port (sysid 1, compid 191 like the log's client)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.peer: tuple[str, int] | None = None
        self.mav = mavlink.MAVLink(self, srcSystem=1, srcComponent=191)
        self.parser = mavlink.MAVLink(None)
        self.parser.robust_parsing = True
        self.latest: dict[str, Any] = {}
        self.texts: list[str] = []
        self.seen: list[str] = []
        self._sync = 0

    def write(self, frame: bytes) -> None:  # pymavlink's encoder writes here
        assert self.peer is not None, "no datagram from the SITL yet"
        self.sock.sendto(frame, self.peer)

    def raw(self, data: bytes) -> None:
        assert self.peer is not None
        self.sock.sendto(data, self.peer)

    def close(self) -> None:
        self.sock.close()

    def recv_until(self, pred: Callable[[Any], bool], timeout_s: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.peer = addr
            for msg in self.parser.parse_buffer(data) or []:
                kind = msg.get_type()
                self.seen.append(kind)
                self.latest[kind] = msg
                if kind == "STATUSTEXT":
                    self.texts.append(msg.text)
                if pred(msg):
                    return msg
        raise TimeoutError("no matching message")

    def heartbeat(self) -> Any:
        """The next HEARTBEAT (lockstep sends one right after a command that changes mode or arming)."""
        return self.recv_until(lambda m: m.get_type() == "HEARTBEAT")

    @property
    def hb(self) -> Any:
        """The latest HEARTBEAT (one per second of vehicle time)."""
        return self.latest["HEARTBEAT"]

    def command(self, command: int, *params: float, acks: int = 1) -> list[int]:
        full = [*params, *([0.0] * (7 - len(params)))]
        self.mav.command_long_send(1, 1, command, 0, *full)
        return [self.recv_until(lambda m: m.get_type() == "COMMAND_ACK" and m.command == command).result
                for _ in range(acks)]

    def tick(self, seconds: float = 0.02) -> None:
        """Lockstep: let vehicle time pass without a setpoint (TIMESYNC requests, 20 ms each)."""
        for _ in range(max(1, round(seconds / 0.02))):
            self._sync += 1
            self.mav.timesync_send(0, self._sync)
            self.recv_until(lambda m: m.get_type() == "TIMESYNC" and m.ts1 == self._sync)

    def setpoints(self, seconds: float, type_mask: int, pos: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  vel: tuple[float, float, float] = (0.0, 0.0, 0.0), yaw: float = 0.0) -> None:
        """Stream SET_POSITION_TARGET_LOCAL_NED, one per 20 ms lockstep tick, each answered by its state."""
        for _ in range(round(seconds / 0.02)):
            before: int = self.latest["LOCAL_POSITION_NED"].time_boot_ms
            self.mav.set_position_target_local_ned_send(0, 1, 1, mavlink.MAV_FRAME_LOCAL_NED, type_mask, *pos, *vel,
                                                        0.0, 0.0, 0.0, yaw, 0.0)
            self.next_state(after_ms=before)

    def next_state(self, after_ms: int) -> Any:
        return self.recv_until(lambda m: bool(m.get_type() == "LOCAL_POSITION_NED" and m.time_boot_ms > after_ms))

    def tick_until(self, pred: Callable[[Companion], bool], max_s: float) -> float:
        for k in range(round(max_s / 0.1)):
            if pred(self):
                return k * 0.1
            self.tick(0.1)
        raise AssertionError(f"condition not met within {max_s} s of vehicle time")

    @property
    def alt_m(self) -> float:
        return -float(self.latest["LOCAL_POSITION_NED"].z)


@pytest.fixture
def flight(request: pytest.FixtureRequest) -> Iterator[tuple[QuadSitl, Companion]]:
    flavour, *extra = request.param
    sitl = QuadSitl(flavour, tuple(extra))
    with sitl:
        client = Companion(sitl.port)
        try:
            client.heartbeat()
            yield sitl, client
        finally:
            client.close()


@pytest.mark.parametrize("flight", [("ardupilot", "--nominal")], indirect=True)
def test_ardupilot_handshake_guided_takeoff_velocity_timeout_and_land(flight: tuple[QuadSitl, Companion]) -> None:
    _, c = flight
    hb = c.heartbeat()
    assert (hb.type, hb.autopilot, hb.base_mode, hb.custom_mode) == (2, 3, 81, 0)  # STABILIZE, as ArduCopter boots
    c.tick(0.5)
    assert "LOCAL_POSITION_NED" not in c.seen  # ArduPilot streams nothing until asked
    assert c.command(mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, 331, 20000) == [mavlink.MAV_RESULT_DENIED]
    assert "No ap_message for mavlink id (331)" in c.texts
    for msg_id, interval_us in ((32, 20000), (30, 20000), (31, 20000), (105, 20000), (245, 500000)):
        assert c.command(mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, msg_id, interval_us) == [mavlink.MAV_RESULT_ACCEPTED]
    c.tick(0.1)
    assert c.latest["LOCAL_POSITION_NED"].time_boot_ms == 600

    assert c.command(400, 1) == [mavlink.MAV_RESULT_FAILED]  # estimator still starting (1 s of vehicle time)
    assert "PreArm: Waiting for Nav Checks" in c.texts
    c.tick(0.5)
    assert c.command(176, 1, 9) == [mavlink.MAV_RESULT_ACCEPTED]  # LAND
    assert c.command(400, 1) == [mavlink.MAV_RESULT_FAILED] and "Arm: Mode not armable" in c.texts
    assert c.command(176, 1, 4) == [mavlink.MAV_RESULT_ACCEPTED]  # GUIDED
    assert c.command(400, 1) == [mavlink.MAV_RESULT_ACCEPTED]
    hb = c.heartbeat()
    assert (hb.base_mode, hb.custom_mode) == (217, 4)
    assert c.command(22, 0, 0, 0, 0, 0, 0, 6.0) == [mavlink.MAV_RESULT_ACCEPTED]
    c.tick_until(lambda cl: cl.latest["EXTENDED_SYS_STATE"].landed_state == 2, max_s=10)  # TAKEOFF -> IN_AIR
    assert c.alt_m == pytest.approx(6.0, abs=0.3)

    c.setpoints(4.0, type_mask=2503, vel=(1.5, -1.0, 0.0))
    lpn = c.latest["LOCAL_POSITION_NED"]
    assert (lpn.vx, lpn.vy) == (pytest.approx(1.5, abs=0.15), pytest.approx(-1.0, abs=0.15))
    c.tick(2.5)  # GUID_TIMEOUT is 3 s: still flying the last velocity
    assert c.latest["LOCAL_POSITION_NED"].vx > 1.3
    c.tick(3.0)
    lpn = c.latest["LOCAL_POSITION_NED"]
    assert math.hypot(lpn.vx, lpn.vy) < 0.2 and c.hb.custom_mode == 4  # stopped, still GUIDED

    assert c.command(21) == [mavlink.MAV_RESULT_ACCEPTED]
    assert c.heartbeat().custom_mode == 9
    c.tick_until(lambda cl: cl.latest["EXTENDED_SYS_STATE"].landed_state == 4, max_s=2)  # LANDING
    c.tick_until(lambda cl: "Disarming motors" in cl.texts, max_s=25)
    c.tick_until(lambda cl: not cl.hb.base_mode & 128, max_s=1.1)
    assert c.latest["EXTENDED_SYS_STATE"].landed_state == 1 and c.alt_m < 0.05
    assert c.hb.system_status == mavlink.MAV_STATE_STANDBY
    assert c.command(31337) == [mavlink.MAV_RESULT_UNSUPPORTED]


@pytest.mark.parametrize("flight", [("px4", "--nominal")], indirect=True)
def test_px4_offboard_needs_a_stream_falls_out_to_rtl_and_lands_by_command(flight: tuple[QuadSitl, Companion]) -> None:
    _, c = flight
    hb = c.heartbeat()
    assert (hb.type, hb.autopilot, hb.base_mode, hb.custom_mode) == (2, 12, 29, AUTO_LOITER)
    c.tick(1.2)  # PX4 streams from boot; the estimator is ready after 1 s
    assert c.latest["LOCAL_POSITION_NED"].time_boot_ms == 1200 and "ODOMETRY" in c.latest

    assert c.command(22, 0, 0, 0, math.nan, math.nan, math.nan, 489.383 + 4.0) == [0]  # AMSL 4 m above home
    assert c.command(400, 1) == [mavlink.MAV_RESULT_ACCEPTED] and "Armed by external command\t" in c.texts
    c.tick_until(lambda cl: cl.hb.custom_mode == AUTO_LOITER and cl.alt_m > 3.7, max_s=8)  # Takeoff -> Hold
    assert "Takeoff detected\t" in c.texts

    # in flight, OFFBOARD without a setpoint stream is refused; PX4 1.16.0 ACKs ACCEPTED first, then the result
    assert c.command(176, 1, 6, acks=2) == [mavlink.MAV_RESULT_ACCEPTED, mavlink.MAV_RESULT_TEMPORARILY_REJECTED]
    c.setpoints(0.5, type_mask=2552, pos=(0.0, 0.0, -4.0))
    assert c.command(176, 1, 6, acks=2) == [mavlink.MAV_RESULT_ACCEPTED, mavlink.MAV_RESULT_ACCEPTED]
    assert c.heartbeat().custom_mode == OFFBOARD
    c.setpoints(3.0, type_mask=2503, vel=(1.0, 0.5, 0.0))
    lpn = c.latest["LOCAL_POSITION_NED"]
    assert (lpn.vx, lpn.vy) == (pytest.approx(1.0, abs=0.15), pytest.approx(0.5, abs=0.15))

    lost_after = c.tick_until(lambda cl: "Failsafe activated\t" in cl.texts, max_s=2)
    assert 0.9 <= lost_after <= 1.1  # COM_OF_LOSS_T = 1 s
    c.tick_until(lambda cl: cl.hb.custom_mode == AUTO_RTL, max_s=1.1)
    assert c.hb.system_status == mavlink.MAV_STATE_CRITICAL
    c.setpoints(1.1, type_mask=2503)  # the stream is back: so is OFFBOARD (seen at the next heartbeat)
    assert c.hb.custom_mode == OFFBOARD

    assert c.command(21, 0, 0, 0, math.nan, math.nan, math.nan, math.nan) == [mavlink.MAV_RESULT_ACCEPTED]
    c.tick_until(lambda cl: cl.latest["EXTENDED_SYS_STATE"].landed_state == 1, max_s=20)
    c.tick_until(lambda cl: "Disarmed by landing\t" in cl.texts, max_s=3)  # COM_DISARM_LAND 2 s
    assert "Landing detected\t" in c.texts
    c.tick_until(lambda cl: not cl.hb.base_mode & 128, max_s=1.1)
    assert (c.hb.custom_mode, c.hb.system_status) == (OFFBOARD, mavlink.MAV_STATE_UNINIT)  # as in the log
    c.tick(0.6)  # the next SYS_STATUS: pre-arm check failing, the estimator (AHRS bit) still good, as in the log
    health = c.latest["SYS_STATUS"].onboard_control_sensors_health
    assert health & mavlink.MAV_SYS_STATUS_AHRS and not health & mavlink.MAV_SYS_STATUS_PREARM_CHECK


@pytest.mark.parametrize("flight", [("px4", "--wind-mps", "2.5")], indirect=True)
def test_garbage_is_dropped_and_counted_and_sigterm_exits_cleanly(flight: tuple[QuadSitl, Companion]) -> None:
    sitl, c = flight
    c.tick(0.1)
    good = mavlink.MAVLink_command_long_message(1, 1, 31337, 0, 0, 0, 0, 0, 0, 0, 0).pack(c.mav)
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    for junk in (b"\x00\x01garbage", bytes(corrupt), good[:7], b"\xfd" + bytes(300)):
        c.raw(junk)
    assert c.command(31337) == [mavlink.MAV_RESULT_UNSUPPORTED]  # still answering
    c.tick(0.1)
    # SIGTERM again and again until it exits: one arriving during shutdown must not kill it before FINAL
    deadline = time.monotonic() + 5.0
    while sitl.returncode is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sitl.pid, signal.SIGTERM)
        time.sleep(0.001)
    assert sitl.stop(timeout_s=5.0) == 0
    assert "FINAL {" in sitl.output_tail(20000)
    output = sitl.output_tail(20000)
    assert "rx_bad=" in output and "rx_bad=0" not in output
    record = json.loads(next(line for line in output.splitlines() if line.startswith("DOMAIN "))[7:])
    assert record["flavour"] == "px4" and record["domain"]["seed"] == 0
    assert math.hypot(*record["domain"]["wind_mean_ned_mps"][:2]) == pytest.approx(2.5)


def test_real_time_mode_runs_on_the_wall_clock_without_ticks() -> None:
    sitl = QuadSitl("px4", lockstep=False)
    with sitl:
        c = Companion(sitl.port)
        try:
            first = c.recv_until(lambda m: m.get_type() == "LOCAL_POSITION_NED").time_boot_ms
            time.sleep(0.5)
            later = c.recv_until(lambda m: m.get_type() == "LOCAL_POSITION_NED" and m.time_boot_ms > first + 300)
            assert later.time_boot_ms > first
        finally:
            c.close()
