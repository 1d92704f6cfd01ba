"""The fault-injecting proxy: each fault happens at about its rate, from a seed, in the real process."""

from __future__ import annotations

import itertools
import math
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

from dreamlink.firmware_bridge.link import Link, LinkConfig, mavlink
from dreamlink.sim.fault_proxy import FaultInjector, FaultSpec
from dreamlink.sim.launcher import free_udp_port
from dreamlink.sim.proxy_launcher import FaultProxy, SitlBehindProxy

N = 400
COPIES = 11  # a datagram is its sequence number 11 times: up to 3 flipped bytes cannot hide which one it was


def datagram(seq: int) -> bytes:
    return struct.pack("<I", seq) * COPIES


def decode(data: bytes) -> tuple[int, bool]:
    """(sequence number by majority, whether the datagram was altered)."""
    words = [data[i:i + 4] for i in range(0, 4 * COPIES, 4)]
    word, _ = Counter(words).most_common(1)[0]
    return struct.unpack("<I", word)[0], len(data) != 4 * COPIES or len(set(words)) > 1


def run_injector(spec: FaultSpec, seed: int = 0, n: int = 2000, gap_s: float = 0.001) -> list[tuple[float, bytes]]:
    injector = FaultInjector(spec, np.random.default_rng(seed))
    out: list[tuple[float, bytes]] = []
    for i in range(n):
        out += injector.decide(datagram(i), i * gap_s)
    out += injector.due_held(math.inf)
    return out


def inversions(seqs: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seqs) if b < a)


# -- the injector, in process ------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "measure", "expected", "tolerance"), [
    (FaultSpec(drop_rate=0.2), lambda out: 1 - len({decode(d)[0] for _, d in out}) / 2000, 0.2, 0.04),
    (FaultSpec(duplicate_rate=0.1), lambda out: len(out) / 2000 - 1, 0.1, 0.03),
    (FaultSpec(corrupt_rate=0.15), lambda out: sum(decode(d)[1] for _, d in out) / 2000, 0.15, 0.03),
    (FaultSpec(reorder_rate=0.1), lambda out: inversions([decode(d)[0] for _, d in out]) / 2000, 0.1, 0.03),
])
def test_each_fault_happens_at_about_its_rate(spec: FaultSpec, measure: Any, expected: float,
                                              tolerance: float) -> None:
    assert measure(run_injector(spec)) == pytest.approx(expected, abs=tolerance)
    assert measure(run_injector(FaultSpec())) == 0


def test_corruption_flips_one_to_three_bytes_and_keeps_the_length() -> None:
    altered = [d for _, d in run_injector(FaultSpec(corrupt_rate=1.0), n=300)]
    flipped = [sum(a != b for a, b in zip(d, datagram(decode(d)[0]), strict=True)) for d in altered]
    assert all(len(d) == 4 * COPIES for d in altered)
    assert set(flipped) <= {1, 2, 3} and len(set(flipped)) == 3  # two flips may hit the same byte: still >= 1


def test_delay_and_jitter_stay_in_their_band_and_jitter_reorders() -> None:
    out = run_injector(FaultSpec(delay_ms=40.0, jitter_ms=10.0), n=500, gap_s=0.002)
    lateness_s = np.array([t - decode(d)[0] * 0.002 for t, d in out])
    assert lateness_s.min() >= 0.030 - 1e-9 and lateness_s.max() <= 0.050 + 1e-9
    assert abs(lateness_s.mean() - 0.040) < 0.002
    release_order = [decode(d)[0] for _, d in sorted(out, key=lambda td: td[0])]
    assert inversions(release_order) > 50  # +/-10 ms of jitter on 2 ms spacing shuffles


def test_cut_window_loses_everything_inside_it_and_nothing_outside() -> None:
    out = run_injector(FaultSpec(cut_start_s=0.5, cut_duration_s=0.25), n=1000)  # 1 ms apart
    kept = {decode(d)[0] for _, d in out}
    assert kept == set(range(500)) | set(range(750, 1000))


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    spec = FaultSpec(drop_rate=0.3, duplicate_rate=0.1, corrupt_rate=0.1, reorder_rate=0.1, jitter_ms=3)
    assert run_injector(spec, seed=5) == run_injector(spec, seed=5)
    assert run_injector(spec, seed=5) != run_injector(spec, seed=6)


def test_fault_spec_text_round_trip_and_errors() -> None:
    spec = FaultSpec(drop_rate=0.05, delay_ms=200, cut_start_s=2, cut_duration_s=2)
    assert FaultSpec.parse(spec.to_text()) == spec
    assert FaultSpec.parse("delay_ms=5", base=spec) == FaultSpec(drop_rate=0.05, delay_ms=5, cut_start_s=2,
                                                                 cut_duration_s=2)
    with pytest.raises(ValueError, match=r"drop_rate: expected a probability in \[0, 1\], got 1.5"):
        FaultSpec.parse("drop_rate=1.5")
    with pytest.raises(ValueError, match=r"'lag=3' is not KEY=VALUE with KEY one of"):
        FaultSpec.parse("lag=3")
    with pytest.raises(ValueError, match="delay_ms must be a number, got 'soon'"):
        FaultSpec.parse("delay_ms=soon")
    with pytest.raises(ValueError, match="jitter_ms: expected >= 0"):
        FaultSpec(jitter_ms=-1)


# -- the proxy process between two sockets -----------------------------------------------------------------


class Endpoint:
    """A UDP socket that records what it receives (with arrival time) on a thread."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.got: list[tuple[float, bytes, tuple[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, ConnectionRefusedError):
                continue
            self.got.append((time.monotonic(), data, addr))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def settle(endpoints: list[Endpoint], quiet_s: float = 0.3, timeout_s: float = 5.0) -> None:
    """Wait until nothing arrived for `quiet_s` (delayed and held-back datagrams are out)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        count = sum(len(e.got) for e in endpoints)
        if count == last:
            return
        last = count
        time.sleep(quiet_s)


@pytest.mark.sitl
def test_proxy_process_applies_each_direction_its_own_faults_and_reports_them() -> None:
    vehicle, runtime = Endpoint(), Endpoint()
    to_runtime = FaultSpec(drop_rate=0.2, duplicate_rate=0.1, reorder_rate=0.1, corrupt_rate=0.1, delay_ms=5)
    to_vehicle = FaultSpec(drop_rate=0.5)
    try:
        with FaultProxy(runtime.port, to_runtime_faults=to_runtime, to_vehicle_faults=to_vehicle, seed=7,
                        vehicle_addr=("127.0.0.1", vehicle.port)) as proxy:
            assert proxy.runtime_side_port is not None
            for i in range(N):
                vehicle.sock.sendto(datagram(i), ("127.0.0.1", proxy.listen_vehicle))
                runtime.sock.sendto(datagram(i), ("127.0.0.1", proxy.runtime_side_port))
                time.sleep(0.0005)
            settle([vehicle, runtime])
            counters = proxy.stop()
    finally:
        vehicle.close()
        runtime.close()
    assert counters is not None
    up, down = counters["to_runtime"], counters["to_vehicle"]
    seqs = [decode(d) for _, d, _ in runtime.got]
    distinct = {s for s, _ in seqs}
    assert up["received"] == N and up["forwarded"] == len(runtime.got)
    assert up["dropped"] == N - len(distinct)
    assert 40 <= up["dropped"] <= 120  # 20 % of 400, +/- 5 sigma
    assert 10 <= up["duplicated"] <= 60 and len(runtime.got) - len(distinct) == up["duplicated"]
    assert 10 <= up["corrupted"] <= 60 and sum(altered for _, altered in seqs) >= up["corrupted"] - up["duplicated"]
    assert 10 <= inversions([s for s, _ in seqs]) <= 70 and up["reordered"] > 0
    assert up["delayed"] == N - up["dropped"]
    assert {addr[1] for _, _, addr in runtime.got} == {proxy.runtime_side_port}  # the runtime sees only the proxy
    assert down["received"] == N and 140 <= down["dropped"] <= 260 and down["forwarded"] == len(vehicle.got)
    assert down["corrupted"] == down["duplicated"] == down["reordered"] == 0
    assert all(not decode(d)[1] for _, d, _ in vehicle.got)
    assert {addr[1] for _, _, addr in vehicle.got} == {proxy.listen_vehicle}


@pytest.mark.sitl
def test_proxy_process_honours_the_cut_window() -> None:
    vehicle, runtime = Endpoint(), Endpoint()
    sent: list[tuple[float, int]] = []
    try:
        with FaultProxy(runtime.port, to_runtime_faults=FaultSpec(cut_start_s=0.4, cut_duration_s=0.6)) as proxy:
            start = time.monotonic()  # the proxy's clock started a little earlier: margins below are loose
            for i in range(140):
                sent.append((time.monotonic() - start, i))
                vehicle.sock.sendto(datagram(i), ("127.0.0.1", proxy.listen_vehicle))
                time.sleep(0.01)
            settle([runtime], quiet_s=0.2)
    finally:
        vehicle.close()
        runtime.close()
    arrived = {decode(d)[0] for _, d, _ in runtime.got}
    before = [i for t, i in sent if t < 0.25]
    inside = [i for t, i in sent if 0.55 <= t < 0.85]
    after = [i for t, i in sent if t >= 1.15]
    assert before and inside and after
    assert len(arrived & set(before)) >= 0.9 * len(before)
    assert not arrived & set(inside)
    assert len(arrived & set(after)) >= 0.9 * len(after)
    assert proxy.counters is not None and proxy.counters["to_runtime"]["cut"] >= len(inside)


@pytest.mark.sitl
@pytest.mark.parametrize(("args", "message"), [
    (["--faults", "drop_rate=7"], r"drop_rate: expected a probability in \[0, 1\], got 7"),
    (["--faults-to-vehicle", "lag=3"], r"'lag=3' is not KEY=VALUE"),
])
def test_proxy_command_line_refuses_bad_faults_clearly(args: list[str], message: str) -> None:
    cmd = [sys.executable, "-m", "dreamlink.sim.fault_proxy", "--listen-vehicle", str(free_udp_port()),
           "--to-runtime", str(free_udp_port()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and re.search(message, proc.stderr)


# -- a SITL behind the proxy -------------------------------------------------------------------------------


@pytest.mark.sitl
def test_runtime_link_through_a_lossy_corrupting_proxy_still_commands_the_board() -> None:
    telemetry: list[Any] = []
    faults = FaultSpec(drop_rate=0.3, corrupt_rate=0.2)
    with SitlBehindProxy("cartpole", to_runtime_faults=faults, to_vehicle_faults=FaultSpec(drop_rate=0.3),
                         seed=2) as sim, Link(LinkConfig(sim.connect_string)) as link:
        link.subscribe("DEBUG_FLOAT_ARRAY", lambda msg, _t: telemetry.append(msg))
        assert link.command_long(1, 1, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1,), timeout_s=0.3,
                                 retries=8) == mavlink.MAV_RESULT_ACCEPTED
        time.sleep(1.0)
        stats = link.stats
    counters = sim.proxy_counters
    assert counters is not None
    up = counters["to_runtime"]
    assert up["received"] > 50 and 0.15 < up["dropped"] / up["received"] < 0.45
    assert stats.rx_bad > 0  # corrupted frames fail their CRC and are counted, not delivered
    assert telemetry and all(m.name == "CARTPOLE" and all(math.isfinite(v) for v in m.data[:7]) for m in telemetry)
    assert any(m.data[5] == 1.0 for m in telemetry)  # armed through 30 % command loss
