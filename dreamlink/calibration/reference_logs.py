"""Where the reference flight logs are: the real ArduPilot and PX4 SITL logs (`.tlog`) that tests and studies
compare dreamlink with. They are not in the repository; a clone finds them in `../shared/data/sitl-logs`
beside its root (the folder holding pyproject.toml), or wherever DREAMLINK_SITL_LOGS points.

One lookup for everything that reads them (tests skip, commands stop), so each says the same path when they
are absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ENV_VAR = "DREAMLINK_SITL_LOGS"
BESIDE_REPOSITORY = Path("shared") / "data" / "sitl-logs"  # relative to the repository root's parent
FLIGHT_LOGS = {"ardupilot": "ardupilot-copter-excitation.tlog", "px4": "px4-sih-excitation.tlog"}


def repository_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` that holds a pyproject.toml; None when there is none."""
    here = start.resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def sitl_logs_dir(start: Path | None = None) -> Path:
    """The folder the SITL logs are looked for in: $DREAMLINK_SITL_LOGS, else ../shared/data/sitl-logs beside the
    repository root above `start` (default: this file; an installed copy falls back to the working folder's)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    here = start if start is not None else Path(__file__)
    root = repository_root(here) or repository_root(Path.cwd()) or Path.cwd().resolve()
    return root.parent / BESIDE_REPOSITORY


def missing_sitl_logs(names: Iterable[str], start: Path | None = None) -> str | None:
    """None when every file in `names` is in `sitl_logs_dir(start)`; else one line naming what is missing and where
    it was looked for."""
    folder = sitl_logs_dir(start)
    missing = [name for name in names if not (folder / name).is_file()]
    if not missing:
        return None
    how = (f"from {ENV_VAR}" if os.environ.get(ENV_VAR)
           else f"../{BESIDE_REPOSITORY} beside the repository root; {ENV_VAR} names another folder")
    return f"the real SITL logs ({', '.join(missing)}) are not in {folder} ({how})"


def require_sitl_logs(names: Iterable[str], start: Path | None = None) -> Path:
    """`sitl_logs_dir(start)` when it holds every file in `names`; else FileNotFoundError saying which and where."""
    message = missing_sitl_logs(names, start)
    if message is not None:
        raise FileNotFoundError(message)
    return sitl_logs_dir(start)
