"""Against a live vehicle in real time (dreamlink's quad SITL as its own process, not lockstep): the excitation
flight of `dreamlink collect quad`, and a flight of `dreamlink run` with the real MAVProxy (from PyPI) between
the SITL and the runtime, asking for its 4 Hz data streams as it does at its defaults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamlink.campaign.live import LiveCollectConfig, collect_live
from dreamlink.firmware_bridge.tlog import read_tlog
from dreamlink.sim.launcher import SitlProcess, free_udp_port
from dreamlink.spec import QUAD

pytestmark = [pytest.mark.sitl, pytest.mark.slow]


def test_collect_flies_a_bounded_excitation_in_real_time_and_reads_its_own_log(tmp_path: Path) -> None:
    with SitlProcess("quad", lockstep=False, seed=5, extra_args=("--flavour", "px4")) as sitl:
        phases: list[str] = []
        result = collect_live(LiveCollectConfig(sitl.connect_string, "px4", tmp_path, minutes=0.25,
                                                takeoff_altitude_m=4.0, box_half_width_m=3.0,
                                                box_altitude_m=(2.5, 6.0)), on_phase=phases.append)
    data = result.transitions
    assert len(data) >= 0.9 * 0.25 * 60 * 50, len(data)  # nearly every tick became a transition
    assert result.stats.stale_ticks == 0 and result.stats.ticks == 750
    assert np.all(data.action >= QUAD.action_low - 1e-6) and np.all(data.action <= QUAD.action_high + 1e-6)
    assert float(np.std(data.action[:, 0])) > 0.3  # excited, not hovering
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    box = next(e for e in events if e["event"] == "excitation")
    pos = data.state[:, [QUAD.state_index(n) for n in ("pos_n_m", "pos_e_m", "pos_d_m")]]
    assert np.all(pos >= np.asarray(box["fence_min_ned_m"])) and np.all(pos <= np.asarray(box["fence_max_ned_m"]))
    assert result.vehicle["family"] == "px4" and phases[-1] == "excitation done: landing"
    assert (tmp_path / "transitions.npz").is_file()
    report = read_tlog(tmp_path / "flight.tlog")
    assert report.bad_offsets == [] and report.truncated_at is None
    stamps = np.array([r.t_unix_s for r in report])
    assert np.all(np.diff(stamps) >= 0)


def _mavproxy() -> str:
    found = shutil.which("mavproxy.py") or str(Path(sys.executable).with_name("mavproxy.py"))
    if not Path(found).exists():
        pytest.fail("mavproxy.py is not installed: it is in the dev extra (pip install -e '.[dev]')")
    return found


def test_run_through_mavproxy_at_its_defaults_keeps_the_state_fresh(quad_bundle: Path, tmp_path: Path) -> None:
    """MAVProxy at its defaults asks the autopilot for every data stream at 4 Hz, which on ArduPilot resets the
    50 Hz message intervals dreamlink asked for; the runtime must notice and ask again, keeping stale ticks under
    1 % where the unwatched profile went stale one tick in two."""
    out = tmp_path / "flight"
    master, client = free_udp_port(), free_udp_port()
    with SitlProcess("quad", port=master, lockstep=False, seed=8, extra_args=("--flavour", "ardupilot")):
        proxy = subprocess.Popen([_mavproxy(), f"--master=udpin:127.0.0.1:{master}",
                                  f"--out=udpout:127.0.0.1:{client}", "--daemon", "--non-interactive",
                                  f"--state-basedir={tmp_path}"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc = subprocess.run([sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(quad_bundle),
                                   "--connect", f"udp:127.0.0.1:{client}", "--autopilot", "ardupilot", "--laps", "1.5",
                                   "--out", str(out)], capture_output=True, text=True, timeout=240)
        finally:
            os.killpg(proxy.pid, signal.SIGTERM)
            proxy.wait(10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    stats, streams = summary["stats"], summary["mission"]["telemetry"]["streams"]
    assert summary["mission"]["landed_disarmed"] is True
    assert stats["stale_ticks"] <= 0.01 * stats["ticks"], (stats, streams)
    assert streams["LOCAL_POSITION_NED"]["reasserts"] >= 1, streams  # MAVProxy did lower it, and it was re-asserted
    assert streams["LOCAL_POSITION_NED"]["measured_hz"] > 45.0
