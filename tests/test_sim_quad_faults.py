"""The quad SITL's fault modes against the runtime's own profile and lockstep clock, real processes in lockstep:
a flight controller that reboots, telemetry that freezes, an estimator that reports itself bad, a signed link
that drops unsigned commands, and a lockstep clock that keeps stepping through 50% packet loss."""

from __future__ import annotations

import json
import socket

import pytest

from dreamlink.firmware_bridge.autopilot_config import AutopilotConfig
from dreamlink.firmware_bridge.link import Link, LinkConfig, mavlink
from dreamlink.firmware_bridge.profiles import make_profile
from dreamlink.firmware_bridge.security import write_signing_key
from dreamlink.runtime.clock import LockstepClock
from dreamlink.sim.fault_proxy import FaultSpec
from dreamlink.sim.launcher import SitlProcess
from dreamlink.sim.proxy_launcher import SitlBehindProxy
from dreamlink.spec import QUAD

pytestmark = pytest.mark.sitl

PERIOD_S = QUAD.control_period_s


def connected(sitl, flavour: str, command_timeout_s: float = 1.0, wait_ready: bool = True, **link):
    link_obj = Link(LinkConfig(sitl.connect_string, **link)).open()
    profile = make_profile(QUAD, link_obj, flavour, lockstep=True)
    profile.config = AutopilotConfig(lockstep=True, command_timeout_s=command_timeout_s)
    profile.connect(timeout_s=30, wait_ready=wait_ready)
    return link_obj, profile


def tick_until(profile, clock: LockstepClock, t_s: float, hold: tuple[float, float, float] | None = None) -> None:
    """Step the vehicle like the control loop does: a setpoint (or nothing), then sleep to the next deadline."""
    deadline = clock.now()
    while clock.now() < t_s:
        if hold is not None:
            profile.send_position(hold, (0.0, 0.0, 0.0))
        deadline += PERIOD_S
        clock.sleep_until(deadline)


def final_line(sitl: SitlProcess) -> dict:
    sitl.stop()
    line = [s for s in sitl.output_tail(20000).splitlines() if s.startswith("FINAL ")][-1]
    return json.loads(line[len("FINAL "):])


def test_a_rebooting_flight_controller_is_not_flown_on_and_the_clock_runs_on():
    with SitlProcess("quad", lockstep=True, seed=1, extra_args=("--flavour", "ardupilot", "--reboot-at-s", "2.5")) \
            as sitl:
        link, profile = connected(sitl, "ardupilot")
        with link:
            profile.enter_control_mode()
            profile.arm()
            clock = LockstepClock(profile)
            before = clock.now()
            tick_until(profile, clock, 4.0)
            assert profile.reboots == 1 and profile.rebooted and clock.reboots == 1
            _, _, age = profile.state()
            assert age == float("inf")  # no state from a rebooted autopilot until connected again
            assert clock.now() >= 4.0 > before  # the clock's time never went back
            assert profile.wait_state_after(0.0, 0.2) is False
            assert not profile.armed  # its boot HEARTBEAT: disarmed
            # back in its boot mode, disarmed: a reboot, not a pilot taking over (the loop's failsafe path answers)
            assert profile.taken_over is None and profile.takeovers == 0
        final = final_line(sitl)
    assert final["reboots"] == 1 and final["armed"] is False and final["time_s"] < 2.0


def test_frozen_telemetry_goes_stale_while_the_clock_steps_through_the_window():
    with SitlProcess("quad", lockstep=True, seed=2, extra_args=("--flavour", "px4", "--freeze-telemetry",
                                                                 "2:1")) as sitl:
        link, profile = connected(sitl, "px4")
        with link:
            clock = LockstepClock(profile)
            tick_until(profile, clock, 2.3)
            t_frozen, _, _ = profile.state()
            assert t_frozen < 2.05  # nothing stamped inside the window arrived
            tick_until(profile, clock, 2.8)
            assert profile.state()[0] == t_frozen and clock.nudges > 0
            tick_until(profile, clock, 3.3)
            assert profile.state()[0] >= 3.0  # streams resume after the window
        final = final_line(sitl)
    assert final["counters"]["tx_frozen"] > 0


@pytest.mark.parametrize("flavour, report", [("ardupilot", "EKF_STATUS_REPORT"), ("px4", "ESTIMATOR_STATUS")])
def test_a_bad_estimator_is_reported_as_the_autopilot_reports_it(flavour, report):
    with SitlProcess("quad", lockstep=True, seed=3, extra_args=("--flavour", flavour, "--bad-estimator", "2:1.5")) \
            as sitl:
        link, profile = connected(sitl, flavour)
        with link:
            clock = LockstepClock(profile)
            tick_until(profile, clock, 1.9)
            assert profile.estimator_ok
            tick_until(profile, clock, 3.0)
            assert not profile.estimator_ok and report in profile.estimator_problem
            tick_until(profile, clock, 4.5)
            assert profile.estimator_ok, profile.estimator_problem


def test_signed_quad_link_flies_and_drops_unsigned_and_wrongly_signed_commands(tmp_path):
    key = tmp_path / "signing.key"
    write_signing_key(key)
    with SitlProcess("quad", lockstep=True, seed=4, extra_args=("--flavour", "ardupilot", "--signing-key-file",
                                                                 str(key))) as sitl:
        link, profile = connected(sitl, "ardupilot", signing_key_file=str(key))
        with link:
            profile.enter_control_mode()  # signed commands are acted on
            attacker = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
            forger = mavlink.MAVLink(None, srcSystem=255, srcComponent=190)
            forger.signing.secret_key, forger.signing.sign_outgoing = bytes(32), True
            forger.signing.timestamp = 10**12
            frames = [bytes(m.command_long_encode(1, 1, mavlink.MAV_CMD_DO_SET_MODE, 0, 1, 9, 0, 0, 0, 0, 0)
                            .pack(m)) for m in (attacker, forger)]
            assert sitl.vehicle_address is not None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for frame in frames:
                    s.sendto(frame, sitl.vehicle_address)  # to the flight controller
                    s.sendto(frame, ("127.0.0.1", sitl.port))  # to the runtime
            clock = LockstepClock(profile)
            tick_until(profile, clock, clock.now() + 0.5)
            assert profile.mode == "GUIDED"  # LAND was never taken
            stats = link.stats
        final = final_line(sitl)
    assert stats.rx_unsigned_rejected >= 1 and stats.rx_bad_signature >= 1 and stats.rx_signed > 0
    assert final["counters"]["rx_unsigned_rejected"] >= 1 and final["counters"]["rx_bad_signature"] >= 1
    assert final["mode"] == "GUIDED"


def test_lockstep_clock_keeps_stepping_through_half_the_packets_lost():
    """50% of the datagrams dropped each way: setpoints, samples and TIMESYNC answers go missing, and the
    clock retries with TIMESYNC instead of waiting for ever."""
    lossy = FaultSpec(drop_rate=0.5)
    args = ("--flavour", "px4", "--estimator-init-s", "0.1")
    with SitlBehindProxy("quad", lossy, lossy, lockstep=True, seed=5, extra_args=args) as sim:
        # stream requests are lost too: retry them fast; pre-arm checks are not this test's business
        link, profile = connected(sim, "px4", command_timeout_s=0.2, wait_ready=False)
        with link:
            clock = LockstepClock(profile)
            start = clock.now()
            (n, e, d), _ = profile._position_and_yaw()
            tick_until(profile, clock, start + 0.6, hold=(n, e, d))
            assert clock.now() >= start + 0.6 and clock.nudges > 0 and clock.reboots == 0
    dropped = sim.proxy_counters
    assert dropped["to_runtime"]["dropped"] > 0 and dropped["to_vehicle"]["dropped"] > 0
