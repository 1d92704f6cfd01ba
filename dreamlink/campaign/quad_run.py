"""One quadrotor flight as a user runs it: the SITL vehicle and `dreamlink run`, each in its own process.

The demo, the policy distillation and the calibration's closed loop all fly this way, so a flight there is
exactly what `dreamlink run` does against a vehicle on UDP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def fly_quad_process(bundle: str | os.PathLike[str], flavour: str, sitl_seed: int, out: Path, *, laps: float = 1.0,
                     lockstep: bool = True, run_seed: int | None = None, run_args: Sequence[str] = (),
                     sitl_args: Sequence[str] = (), timeout_s: float | None = 900.0) -> dict[str, Any]:
    """Fly `bundle` once against a new quad SITL of `flavour` whose vehicle is drawn from `sitl_seed`; the flight
    folder `out` gets the runtime's logs and its `summary.json`, which is returned.

    `run_seed`: the runtime's `--seed` (planner noise; None: its default). A lockstep run's output is captured
    and quoted on failure; a real-time run prints as it flies. Raises RuntimeError naming the exit code."""
    from dreamlink.runtime.onboard import SUMMARY_NAME
    from dreamlink.sim.launcher import SitlProcess

    with SitlProcess("quad", lockstep=lockstep, seed=sitl_seed, extra_args=("--flavour", flavour, *sitl_args)) as sitl:
        cmd = [sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(bundle), "--connect", sitl.connect_string,
               "--autopilot", flavour, "--laps", str(laps), "--out", str(out)]
        cmd += ["--lockstep"] if lockstep else []
        cmd += ["--seed", str(run_seed)] if run_seed is not None else []
        proc = subprocess.run([*cmd, *run_args], capture_output=lockstep, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "")[-1500:] if lockstep else ""
        raise RuntimeError(f"flight {out}: dreamlink run exited {proc.returncode} {tail}".rstrip())
    summary: dict[str, Any] = json.loads((out / SUMMARY_NAME).read_text())
    return summary
