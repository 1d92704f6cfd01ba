"""A short quadrotor flight in lockstep, as a user runs it: a world model learned from a lockstep
ArduPilot-flavour SITL, then `dreamlink run` in its own process takes off, tracks a figure-eight
by imagined replanning, and lands; PX4 flies the same mission through OFFBOARD with the
position-setpoint baseline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.sitl, pytest.mark.slow]

# Where tracking stands on this short test flight (a smaller model than the demo's, 1 lap, one seed:
# 0.39 m measured): the bound a regression must not cross; the demo's figures are in the README.
TRACKING_RMSE_BOUND_M = 0.8


def fly(bundle, tmp_path, flavour: str, *extra: str) -> tuple[dict, dict]:
    from dreamlink.reports import load_ticks, quad_summary
    from dreamlink.sim.launcher import SitlProcess

    out = tmp_path / flavour
    with SitlProcess("quad", lockstep=True, seed=21, extra_args=("--flavour", flavour)) as sitl:
        cmd = [sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(bundle), "--connect", sitl.connect_string,
               "--lockstep", "--autopilot", flavour, "--laps", "1", "--out", str(out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    return summary, quad_summary(load_ticks(out / "ticks.npz"), summary["mission"])


def test_ardupilot_take_off_track_figure_eight_by_planning_and_land(quad_bundle, tmp_path):
    summary, flight = fly(quad_bundle, tmp_path, "ardupilot")
    assert flight["landed_disarmed"] is True
    assert flight["fence_breaches"] == 0 and flight["min_fence_margin_m"] > 0
    assert flight["tracking_rmse_m"] < TRACKING_RMSE_BOUND_M, flight
    assert summary["stats"]["fallbacks"] == {} and summary["stats"]["ticks"] == flight["ticks"]


def test_px4_offboard_mission_with_the_position_baseline_lands(quad_bundle, tmp_path):
    summary, flight = fly(quad_bundle, tmp_path, "px4", "--baseline")
    assert flight["landed_disarmed"] is True and flight["fence_breaches"] == 0
    assert flight["tracking_rmse_m"] < 3.0, flight  # the autopilot's own controller, for comparison
    assert summary["mission"]["autopilot"] == "px4" and summary["mission"]["baseline"] is True
