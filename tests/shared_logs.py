"""Where the real autopilot SITL logs are: `../shared/data/sitl-logs` beside this repository (DREAMLINK_SITL_LOGS
overrides). Tests that need them skip saying where they looked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOGS = Path(os.environ.get("DREAMLINK_SITL_LOGS", REPO.parent / "shared" / "data" / "sitl-logs"))
ARDUPILOT_LOG = LOGS / "ardupilot-copter-excitation.tlog"
PX4_LOG = LOGS / "px4-sih-excitation.tlog"
needs_logs = pytest.mark.skipif(not (ARDUPILOT_LOG.is_file() and PX4_LOG.is_file()),
                                reason=f"the real SITL logs are not at {LOGS} (../shared beside the repository, "
                                       f"or DREAMLINK_SITL_LOGS)")
