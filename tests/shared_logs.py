"""The real autopilot SITL logs for the tests that read them, found by `dreamlink.calibration.reference_logs`
(`../shared/data/sitl-logs` beside the repository root, or DREAMLINK_SITL_LOGS). Without them those tests skip,
naming the folder looked in."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamlink.calibration.reference_logs import FLIGHT_LOGS, missing_sitl_logs, sitl_logs_dir

LOGS = sitl_logs_dir(Path(__file__))
ARDUPILOT_LOG = LOGS / FLIGHT_LOGS["ardupilot"]
PX4_LOG = LOGS / FLIGHT_LOGS["px4"]


def needs_log(*logs: Path) -> pytest.MarkDecorator:
    """Skip unless every one of `logs` is there; the reason names what is missing and where it was looked for."""
    reason = missing_sitl_logs([log.name for log in logs], Path(__file__))
    return pytest.mark.skipif(reason is not None, reason=reason or "")


needs_logs = needs_log(ARDUPILOT_LOG, PX4_LOG)
