"""Campaigns as a user runs them: short lockstep quadrotor flights as Ray tasks on a local Ray, the same
seeds on a two-node Ray cluster, a campaign killed mid-way and resumed, a flight whose worker dies, and
a recorded flight replayed.

The bundle is a linear velocity-response world model written with onnx.helper (no training), so the
flights are short and the planner still tracks; what is under test is the campaign machinery."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from onnx_models import linear_world_model
from waiting import eventually

from dreamlink.campaign.flight import OUTCOMES
from dreamlink.campaign.replay import replay_flight
from dreamlink.campaign.report import write_report
from dreamlink.campaign.runner import RayOptions, open_campaign, run_eval
from dreamlink.campaign.spec import load_campaign
from dreamlink.campaign.table import ResultsTable
from dreamlink.spec import QUAD

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.sitl, pytest.mark.slow]

CAMPAIGN = """
[campaign]
flights = 4
seed = 11
timeout_s = 120

[mission]
altitude_m = 2.0
laps = 0.25

[randomise]
mass_scale = [0.85, 1.15]
wind_speed_mps = [0.0, 2.0]
telemetry_latency_s = [0.0, 0.02]

[success]
max_tracking_rmse_m = 1.0
"""
OBJECT_STORE_BYTES = 80 * 2**20


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from dreamlink.bundle import write_bundle

    S, A, dt = QUAD.state_dim, QUAD.action_dim, QUAD.control_period_s
    F, G = np.eye(S, dtype=np.float32), np.zeros((S, A), np.float32)
    for i in range(3):  # position integrates velocity; velocity follows the setpoint (first order)
        F[i, 3 + i], F[3 + i, 3 + i], G[3 + i, i] = dt, 0.85, 0.15
    root = tmp_path_factory.mktemp("quad-linear")
    model = linear_world_model(root / "wm.onnx", F, G)
    planner = {"samples": 64, "horizon": 20, "noise_sigma": 0.3, "temperature": 3.0, "noise_smoothing": 0.9}
    return write_bundle(root / "bundle", QUAD, {"world_model": (model, {"opset": 17})},
                        calibration={"planner": planner}).root


@pytest.fixture(scope="module")
def campaign_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("campaign") / "campaign.toml"
    path.write_text(CAMPAIGN)
    return path


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def local_campaign(bundle, campaign_file, local_ray, tmp_path_factory):
    spec = load_campaign(campaign_file)
    folder = open_campaign(tmp_path_factory.mktemp("local") / "c", spec, "eval", bundle)
    run_eval(folder, spec.flights, RayOptions())
    return folder


def _rows(folder) -> dict[int, dict]:
    return ResultsTable(folder.results).recorded()


def test_four_flight_campaign_on_local_ray_records_every_flight_and_reports(local_campaign):
    rows = _rows(local_campaign)
    assert sorted(rows) == [0, 1, 2, 3]
    assert len({r["seed"] for r in rows.values()}) == 4
    for r in rows.values():
        assert r["outcome"] in OUTCOMES and r["outcome"] != "error", r
        assert math.isfinite(r["tracking_rmse_m"]) and r["ticks"] > 0
        assert 0.85 <= r["mass_scale"] <= 1.15
        assert (local_campaign.root / "tlogs" / f"flight-{r['index']:04d}.tlog").stat().st_size > 0
    assert sum(r["outcome"] == "success" for r in rows.values()) >= 3  # the linear model tracks within 1 m
    summary = write_report(local_campaign.root, list(rows.values()), worst=2, keep_all_tlogs=True)
    low, high = summary["success_rate_95ci"]
    assert low <= summary["success_rate"] <= high and summary["flights"] == 4
    assert (local_campaign.root / "plots" / "success_vs_params.png").exists()
    assert "success rate" in (local_campaign.root / "report.md").read_text()
    # Started again, the campaign has nothing left to fly.
    calls = []
    run_eval(local_campaign, 4, RayOptions(), progress=lambda *a: calls.append(a))
    assert calls == [] and len(_rows(local_campaign)) == 4


def test_replay_of_a_recorded_flight_reproduces_its_outcome(local_campaign, tmp_path):
    replay = replay_flight(local_campaign.root, 2, tmp_path)
    assert replay.recorded is not None and replay.recorded["index"] == 2
    assert replay.replayed["outcome"] == replay.recorded["outcome"]
    assert replay.differences() == {}, replay.differences()
    assert replay.tlog is not None and replay.tlog.stat().st_size > 0


def _flight_processes(seeds: set[int]) -> list[int]:
    """Flight processes of these seeds (their work folder is named after the seed; other campaigns may run)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"dreamlink.campaign.flight" in cmd and any(f"-{s}-".encode() in b"".join(cmd) for s in seeds):
                pids.append(int(entry.name))
    return pids


def _ray_worker_parent(pid: int) -> int | None:
    """The Ray worker that started flight process `pid` (None once the flight was orphaned)."""
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        cmd = Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return parent if parent > 1 and (b"ray::" in cmd or b"default_worker" in cmd) else None


def test_killed_campaign_loses_no_row_and_resumes_past_a_dead_worker(bundle, campaign_file, local_ray, tmp_path):
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "dreamlink.campaign.cli_commands", "campaign", "eval", "--campaign",
           str(campaign_file), "--bundle", str(bundle), "--flights", "2", "--max-concurrent", "1", "--address",
           local_ray, "--out", str(out)]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    results = out / "results.csv"
    try:
        assert eventually(lambda: results.exists() and len(results.read_text().splitlines()) >= 2, 150), \
            driver.stderr.read().decode() if driver.poll() is not None else "no row"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver, as Ctrl-C twice or the OOM killer would
        driver.wait()
    before = results.read_text()
    first = ResultsTable(results).recorded()
    assert 1 <= len(first) <= 2 and all(r["outcome"] in OUTCOMES for r in first.values())

    # Resume here, and kill the Ray worker of the first flight that takes off.
    killed: list[int] = []
    done = threading.Event()

    def workers() -> list[int]:
        return [w for w in map(_ray_worker_parent, _flight_processes(seeds)) if w is not None]

    def kill_a_worker() -> None:
        while not done.is_set() and not killed:
            found = workers()
            if found:
                os.kill(found[0], signal.SIGKILL)
                killed.append(found[0])
            done.wait(0.01)

    spec = load_campaign(campaign_file)
    folder = open_campaign(out, spec, "eval", bundle)
    seeds = {job.seed for job in folder.jobs().values()}
    # The killed driver's flight in the air ends with its worker (Ray ends a dead driver's workers).
    assert eventually(lambda: not _flight_processes(seeds), 30)
    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    try:
        run_eval(folder, 2, RayOptions(max_concurrent=1))
    finally:
        done.set()
        killer.join(5)
    rows = ResultsTable(results).recorded()
    assert sorted(rows) == [0, 1]
    assert results.read_text().startswith(before)  # completed rows untouched
    assert len(list(csv.reader(results.open()))) == 3  # header + one row per flight, none twice
    if len(first) == 1:  # flight 1 was flown by the resumed campaign, and its worker killed
        assert killed and rows[1]["outcome"] == "error" and rows[1]["reason"] == "worker died", rows[1]
    assert eventually(lambda: not _flight_processes(seeds), 10)  # nothing outlived its worker


def test_two_node_cluster_gives_the_same_results_for_the_same_seeds(local_campaign, bundle, campaign_file,
                                                                    tmp_path):
    from ray.cluster_utils import Cluster

    local = _rows(local_campaign)
    ray.shutdown()  # the local Ray of the tests above
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
        ray.init(address=cluster.address, log_to_driver=False)
        spec = load_campaign(campaign_file)
        folder = open_campaign(tmp_path / "c", spec, "eval", bundle)
        run_eval(folder, 2, RayOptions())
        remote = _rows(folder)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert sorted(remote) == [0, 1]
    assert len({r["node"] for r in remote.values()}) == 2  # one flight on each node
    for i, r in remote.items():
        for key in ("seed", "outcome", "ticks", "landed", "mass_scale", "wind_speed_mps"):
            assert r[key] == local[i][key], (i, key)
        assert r["tracking_rmse_m"] == pytest.approx(local[i]["tracking_rmse_m"], rel=1e-9)
