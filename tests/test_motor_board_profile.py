"""The motor-board profile against the SITL process: what the runtime sees of a cart-pole."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from dreamlink.firmware_bridge.link import CommandRefused, Link, LinkConfig, LinkTimeout, mavlink
from dreamlink.firmware_bridge.motor_board import MotorBoardConfig, MotorBoardError, MotorBoardProfile
from dreamlink.sim.launcher import SitlProcess, free_udp_port
from dreamlink.spec import CARTPOLE, Component, VehicleSpec

pytestmark = pytest.mark.sitl


@pytest.fixture(scope="module")
def lockstep() -> Iterator[MotorBoardProfile]:
    with SitlProcess("cartpole", lockstep=True, seed=4) as sitl, Link(LinkConfig(sitl.connect_string)) as link:
        profile = MotorBoardProfile(link, CARTPOLE)
        profile.connect(timeout_s=5.0)
        yield profile


def test_lockstep_flight_connect_arm_send_release(lockstep: MotorBoardProfile) -> None:
    profile = lockstep
    assert profile.lockstep is True
    with pytest.raises(MotorBoardError, match="not armed"):
        profile.enter_control_mode()
    profile.arm()
    profile.enter_control_mode()
    t_s, x, age_s = profile.state()
    assert profile.wait_state_after(t_s, 2.0)
    t_s, x, age_s = profile.state()
    assert math.isfinite(t_s) and math.isfinite(age_s) and x.dtype == np.float32 and np.all(np.isfinite(x))
    start_t_s = t_s
    for tick in range(1, 26):
        profile.send(np.array([4.0], dtype=np.float32))
        assert profile.wait_state_after(start_t_s + tick * CARTPOLE.control_period_s, 2.0)
        t_s, x, age_s = profile.state()
        assert t_s == pytest.approx(start_t_s + tick * 0.02, abs=1e-9)
    assert x[CARTPOLE.state_index("cart_vel_mps")] > 0  # 0.5 s of +4 N
    assert not profile.wait_state_after(t_s + 0.02, 0.1)  # lockstep: no command, no new state
    x[0] = 99.0
    assert profile.state()[1][0] != 99.0  # state() hands out a copy

    heartbeat = profile.link.wait_for("HEARTBEAT", 2.5)
    assert heartbeat is not None and heartbeat.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED
    profile.release()
    assert not profile.armed
    heartbeat = profile.link.wait_for("HEARTBEAT", 2.5)
    assert heartbeat is not None and not heartbeat.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED


def test_sim_reset_starts_near_upright(lockstep: MotorBoardProfile) -> None:
    lockstep.request_sim_reset(seed=11, max_angle_rad=0.01, max_pos_m=0.3)  # returns with the new state in
    _, x, _ = lockstep.state()
    assert abs(x[CARTPOLE.state_index("pole_angle_rad")]) <= 0.01
    assert abs(x[CARTPOLE.state_index("cart_pos_m")]) <= 0.3
    with pytest.raises(CommandRefused, match="MAV_RESULT_DENIED"):
        lockstep.request_sim_reset(seed=None, max_pos_m=5.0)
    with pytest.raises(ValueError, match="seed"):
        lockstep.request_sim_reset(seed=2**30)


def test_action_of_the_wrong_shape_is_refused(lockstep: MotorBoardProfile) -> None:
    with pytest.raises(ValueError, match=r"action shape \(1,\)"):
        lockstep.send(np.zeros(2, dtype=np.float32))


def test_realtime_state_stream_is_fresh_and_force_is_applied() -> None:
    with SitlProcess("cartpole", seed=5) as sitl, Link(LinkConfig(sitl.connect_string)) as link:
        profile = MotorBoardProfile(link, CARTPOLE, MotorBoardConfig(stream_rate_hz=25.0))
        profile.connect()
        assert profile.lockstep is False
        profile.arm()
        t0, _, _ = profile.state()
        assert profile.wait_state_after(t0 + 0.1, 2.0)
        t1, x, age_s = profile.state()
        assert t1 > t0 and math.isfinite(age_s) and np.all(np.isfinite(x))
        pushed = None
        for _ in range(40):
            profile.send(np.array([-10.0], dtype=np.float32))
            pushed = link.wait_for("DEBUG_FLOAT_ARRAY", 0.1, lambda m: m.data[4] == -10.0)
            if pushed is not None:
                break
        assert pushed is not None
        profile.release()
        assert not profile.armed


def test_nothing_received_yet_and_no_board() -> None:
    with Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}")) as link:
        profile = MotorBoardProfile(link, CARTPOLE)
        t_s, x, age_s = profile.state()
        assert math.isnan(t_s) and np.all(np.isnan(x)) and age_s == math.inf and x.shape == (4,)
        with pytest.raises(LinkTimeout, match="no HEARTBEAT from motor board 1/1"):
            profile.connect(timeout_s=0.2)
        profile.release()  # a dead link: logs, never raises
    profile.release()  # a closed link too


def test_spec_without_cartpole_names_is_refused() -> None:
    spec = VehicleSpec("rover", (Component("speed_mps", "m/s", -1, 1),), (Component("throttle", "1", -1, 1),), 0.02)
    with Link(LinkConfig(f"udp:127.0.0.1:{free_udp_port()}")) as link, pytest.raises(ValueError, match="cart_pos_m"):
        MotorBoardProfile(link, spec)
