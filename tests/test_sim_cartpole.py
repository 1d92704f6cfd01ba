"""Cart-pole physics and the motor board SITL process, driven over real UDP like a companion would."""

from __future__ import annotations

import itertools
import math
import queue
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from dreamlink.firmware_bridge.link import Link, LinkConfig, LinkTimeout, mavlink
from dreamlink.sim.cartpole_physics import CartpoleParams, step
from dreamlink.sim.launcher import SitlError, SitlProcess
from dreamlink.sim.mavlink_udp import new_parser

PARAMS = CartpoleParams()
PERIOD_S = 0.02
BOARD = (1, 1)


def run(state: list[float], force_n: float, seconds: float) -> np.ndarray:
    s = np.array(state, dtype=np.float64)
    for _ in range(round(seconds / PERIOD_S)):
        s = step(s, force_n, PERIOD_S, PARAMS)
    return s


def energy_j(s: np.ndarray) -> float:
    """Gymnasium's cart-pole is a cart plus a uniform rod pinned at its end (inertia 4/3 m l^2)."""
    m, big_m, l, g = PARAMS.pole_mass_kg, PARAMS.cart_mass_kg, PARAMS.pole_half_length_m, PARAMS.gravity_mps2
    _, xd, th, thd = s
    return float(0.5 * (big_m + m) * xd**2 + m * l * xd * thd * math.cos(th) + (2 / 3) * m * l**2 * thd**2
                 + m * g * l * math.cos(th))


# -- physics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.1, -0.1])
def test_unforced_pole_falls_away_from_upright(angle: float) -> None:
    s = run([0.0, 0.0, angle, 0.0], 0.0, 0.4)
    assert abs(s[2]) > 2 * abs(angle)
    assert np.sign(s[2]) == np.sign(angle) and np.sign(s[3]) == np.sign(angle)


def test_free_swing_keeps_energy_and_input_untouched() -> None:
    start = np.array([0.0, 0.0, 0.1, 0.0])
    s, e0, worst = start.copy(), energy_j(start), 0.0
    for _ in range(150):  # 3 s: down through the bottom and back
        s = step(s, 0.0, PERIOD_S, PARAMS)
        worst = max(worst, abs(energy_j(s) - e0))
    assert np.array_equal(start, [0.0, 0.0, 0.1, 0.0])
    assert abs(s[2]) > 1.0  # it really swung
    assert worst < 0.02 * e0


@pytest.mark.parametrize("force_n", [10.0, -4.0])
def test_force_pushes_cart_its_way(force_n: float) -> None:
    s = run([0.0, 0.0, 0.0, 0.0], force_n, 0.2)
    assert np.sign(s[0]) == np.sign(force_n) and np.sign(s[1]) == np.sign(force_n)
    assert np.sign(s[2]) == -np.sign(force_n)  # the pole lags behind the cart


def test_force_beyond_motor_limit_is_saturated() -> None:
    assert np.array_equal(run([0, 0, 0, 0], 1000.0, 0.1), run([0, 0, 0, 0], PARAMS.max_force_n, 0.1))


def test_end_stop_clamps_then_lets_go() -> None:
    s = run([2.3, 3.0, 0.0, 0.0], 10.0, 1.0)
    assert s[0] == PARAMS.track_limit_m and s[1] == 0.0
    back = run(list(s), -10.0, 0.2)
    assert back[0] < PARAMS.track_limit_m and back[1] < 0
    assert run([-2.3, -3.0, 0.0, 0.0], -10.0, 1.0)[0] == -PARAMS.track_limit_m


def test_batched_step_equals_one_by_one() -> None:
    states = np.random.default_rng(0).uniform(-0.2, 0.2, (5, 4))
    forces = np.linspace(-10, 10, 5)
    batched = step(states, forces, PERIOD_S, PARAMS)
    for i in range(5):
        np.testing.assert_allclose(batched[i], step(states[i], forces[i], PERIOD_S, PARAMS), rtol=0, atol=1e-15)


def test_bad_params_and_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="pole_mass_kg"):
        CartpoleParams(pole_mass_kg=-0.1)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4\]"):
        step(np.zeros(3), 0.0, PERIOD_S, PARAMS)


# -- the SITL process --------------------------------------------------------------------------------


class Board:
    """A companion-side test harness: a Link plus a queue of (time_usec, data[0:7]) states."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.states: queue.Queue[tuple[int, list[float]]] = queue.Queue()
        link.subscribe("DEBUG_FLOAT_ARRAY", lambda m, _t: self.states.put((m.time_usec, list(m.data[:7]))))

    def command(self, command: int, *params: float, timeout_s: float = 2.0) -> int:
        return self.link.command_long(*BOARD, command, params, timeout_s=timeout_s)

    def target(self, value: float) -> None:
        self.link.mav.set_actuator_control_target_send(0, 0, *BOARD, [value] + [0.0] * 7)

    def arm(self) -> int:
        """Arm; returns the board time of the state sent right after arming."""
        assert self.command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 1) == mavlink.MAV_RESULT_ACCEPTED
        t_usec, data = self.states.get(timeout=2.0)
        while data[5] != 1.0:  # a once-a-second repeat from before the arming may come first
            t_usec, data = self.states.get(timeout=2.0)
        return t_usec

    def drain(self) -> None:
        while not self.states.empty():
            self.states.get_nowait()

    def next_state(self, after_usec: int = -1, timeout_s: float = 2.0) -> tuple[int, list[float]]:
        """The next state stamped later than `after_usec` (skips the once-a-second repeats)."""
        deadline = time.monotonic() + timeout_s
        while True:
            t_usec, data = self.states.get(timeout=max(0.01, deadline - time.monotonic()))
            if t_usec > after_usec:
                return t_usec, data


def open_board(sitl: SitlProcess) -> Board:
    link = Link(LinkConfig(sitl.connect_string)).open()
    board = Board(link)
    assert link.wait_for("HEARTBEAT", 3.0) is not None
    return board


@pytest.fixture(scope="module")
def lockstep() -> Iterator[Board]:
    with SitlProcess("cartpole", lockstep=True, seed=1) as sitl:
        board = open_board(sitl)
        try:
            yield board
        finally:
            board.link.close()


@pytest.mark.sitl
def test_lockstep_each_target_advances_exactly_one_period(lockstep: Board) -> None:
    lockstep.drain()
    t0_usec = t_usec = lockstep.arm()  # the board sends its state right after arming, so a client can start
    for i in range(1, 41):
        lockstep.target(0.5)
        t_usec, data = lockstep.next_state(after_usec=t_usec)
        assert t_usec == t0_usec + i * 20_000
        assert data[4] == pytest.approx(5.0) and data[5] == 1.0
    assert data[1] > 0  # 0.8 s of +5 N moved the cart toward +x
    time.sleep(0.05)
    assert all(t <= t_usec for t, _ in list(lockstep.states.queue))  # nothing advanced without a command


@pytest.mark.sitl
@pytest.mark.parametrize(("value", "applied_n"), [(3.0, 10.0), (-7.0, -10.0), (math.nan, 0.0)])
def test_out_of_range_targets_are_clipped_and_nan_is_zero(lockstep: Board, value: float, applied_n: float) -> None:
    lockstep.drain()
    t_usec = lockstep.arm()
    lockstep.target(value)
    assert lockstep.next_state(after_usec=t_usec)[1][4] == applied_n


@pytest.mark.sitl
def test_disarmed_board_applies_no_force(lockstep: Board) -> None:
    assert lockstep.command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0) == mavlink.MAV_RESULT_ACCEPTED
    lockstep.drain()
    lockstep.target(1.0)
    _, data = lockstep.next_state()
    assert data[4] == 0.0 and data[5] == 0.0


@pytest.mark.sitl
def test_reset_is_near_upright_and_reproducible_from_a_seed(lockstep: Board) -> None:
    starts: list[list[float]] = []
    episodes: list[float] = []
    for seed in (7, 7, 8):
        lockstep.drain()
        assert lockstep.command(mavlink.MAV_CMD_USER_1, seed, 0.02, 0.5) == mavlink.MAV_RESULT_ACCEPTED
        _, data = lockstep.states.get(timeout=2.0)
        while data[6] == (episodes[-1] if episodes else 0.0):  # a repeat from before the reset
            _, data = lockstep.states.get(timeout=2.0)
        assert abs(data[2]) <= 0.02 and abs(data[0]) <= 0.5
        starts.append(data[:4])
        episodes.append(data[6])
    assert episodes[1] == episodes[0] + 1 and episodes[2] == episodes[0] + 2
    assert starts[0] == starts[1] and starts[0] != starts[2]


@pytest.mark.sitl
@pytest.mark.parametrize(("command", "params", "result"), [
    (mavlink.MAV_CMD_USER_1, (math.nan, 0.05, 3.0), mavlink.MAV_RESULT_DENIED),  # start beyond the end stop
    (mavlink.MAV_CMD_USER_1, (-1.0,), mavlink.MAV_RESULT_DENIED),
    (mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, (mavlink.MAVLINK_MSG_ID_HEARTBEAT, 1e5), mavlink.MAV_RESULT_DENIED),
    (mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, (mavlink.MAVLINK_MSG_ID_DEBUG_FLOAT_ARRAY, 0), mavlink.MAV_RESULT_ACCEPTED),
    (mavlink.MAV_CMD_NAV_TAKEOFF, (), mavlink.MAV_RESULT_UNSUPPORTED),
    (mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (2.0,), mavlink.MAV_RESULT_DENIED),
])
def test_command_results(lockstep: Board, command: int, params: tuple[float, ...], result: int) -> None:
    assert lockstep.command(command, *params) == result


@pytest.mark.sitl
def test_commands_for_another_system_are_not_answered(lockstep: Board) -> None:
    with pytest.raises(LinkTimeout, match="MAV_CMD_COMPONENT_ARM_DISARM"):
        lockstep.link.command_long(7, 1, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1,), timeout_s=0.3, retries=0)


@pytest.mark.sitl
def test_sitl_survives_garbage_datagrams() -> None:
    with SitlProcess("cartpole", lockstep=True) as sitl, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", sitl.port))
        sock.settimeout(3.0)
        _, board_addr = sock.recvfrom(65536)  # its heartbeat tells us where it listens
        encoder = mavlink.MAVLink(None, srcSystem=1, srcComponent=191)
        arm = encoder.command_long_encode(1, 1, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0, 1, 0, 0, 0, 0, 0, 0)
        frame = bytes(arm.pack(encoder))
        rng = np.random.default_rng(3)
        garbage = [rng.bytes(n) for n in (1, 17, 300, 2000)] + [frame[:-4], frame[:5], b"\xfd" * 40,
                                                                  frame[:-1] + bytes([frame[-1] ^ 0xFF])]
        for datagram in garbage:
            sock.sendto(datagram, board_addr)
        sock.sendto(frame, board_addr)
        parser, deadline = new_parser(), time.monotonic() + 3.0
        acks: list[Any] = []
        while not acks and time.monotonic() < deadline:
            msgs = parser.parse_buffer(sock.recv(65536)) or []
            acks = [m for m in msgs if m.get_type() == "COMMAND_ACK"]
        assert acks and acks[0].result == mavlink.MAV_RESULT_ACCEPTED
        assert sitl.returncode is None


@pytest.mark.sitl
def test_realtime_streams_states_and_board_time_advances() -> None:
    with SitlProcess("cartpole", seed=2) as sitl:
        board = open_board(sitl)
        try:
            first, _ = board.next_state()
            times = [board.next_state()[0] for _ in range(5)]
            assert first < times[0] and all(a < b for a, b in itertools.pairwise(times))
            assert all(t % 20_000 == 0 for t in times)  # board time counts whole control periods
        finally:
            board.link.close()


@pytest.mark.sitl
def test_realtime_command_timeout_zeroes_force() -> None:
    with SitlProcess("cartpole", seed=3) as sitl:
        board = open_board(sitl)
        try:
            assert board.command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 1) == mavlink.MAV_RESULT_ACCEPTED
            pushed = None
            for _ in range(30):  # command until the board shows it applied the force
                board.target(1.0)
                pushed = board.link.wait_for("DEBUG_FLOAT_ARRAY", 0.1, lambda m: m.data[4] == 10.0)
                if pushed is not None:
                    break
            assert pushed is not None
            time.sleep(0.5)
            latest = board.link.latest("DEBUG_FLOAT_ARRAY")
            assert latest is not None and latest[0].data[4] == 0.0 and latest[0].data[5] == 1.0
        finally:
            board.link.close()


@pytest.mark.sitl
def test_launcher_reports_a_process_that_dies_with_its_output() -> None:
    with pytest.raises(SitlError, match="rate-hz"), SitlProcess("cartpole", extra_args=("--rate-hz", "nope")):
        pass


@pytest.mark.sitl
def test_sigterm_stops_the_board_cleanly() -> None:
    sitl = SitlProcess("cartpole", lockstep=True).start()
    try:
        assert sitl.stop() == 0
        assert "board stopped" in sitl.output_tail()
    finally:
        sitl.close()


@pytest.mark.sitl
def test_a_chosen_port_taken_before_start_is_chosen_again() -> None:
    # Flights side by side: another process's socket may take the port SitlProcess chose before start() binds it.
    sitl = SitlProcess("cartpole", lockstep=True)
    taken = sitl.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        with sitl:
            assert sitl.port != taken and sitl.returncode is None and sitl.vehicle_address is not None
        # a port the caller named is the caller's to fix
        with pytest.raises(SitlError, match=rf"udp:127\.0\.0\.1:{taken} is not free"):
            SitlProcess("cartpole", port=taken).start()
