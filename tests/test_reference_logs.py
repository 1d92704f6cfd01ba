"""Where the real SITL logs are looked for: `../shared/data/sitl-logs` beside the repository root (the folder with
pyproject.toml), wherever the clone is, or DREAMLINK_SITL_LOGS; absent, one line says which files and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamlink.calibration.reference_logs import (
    ENV_VAR,
    FLIGHT_LOGS,
    missing_sitl_logs,
    repository_root,
    require_sitl_logs,
    sitl_logs_dir,
)


@pytest.fixture()
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone somewhere else: elsewhere/repo/pyproject.toml, tests/ inside; no environment override."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    repo = tmp_path / "elsewhere" / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return repo


def test_the_logs_are_looked_for_beside_the_repository_root(clone: Path) -> None:
    assert repository_root(clone / "tests" / "test_x.py") == clone.resolve()
    assert sitl_logs_dir(clone / "tests") == clone.resolve().parent / "shared" / "data" / "sitl-logs"


def test_absent_logs_are_named_in_one_line_with_the_folder_looked_in(clone: Path) -> None:
    message = missing_sitl_logs(FLIGHT_LOGS.values(), clone / "tests")
    folder = clone.resolve().parent / "shared" / "data" / "sitl-logs"
    assert message is not None and "\n" not in message
    assert str(folder) in message and FLIGHT_LOGS["px4"] in message and ENV_VAR in message
    with pytest.raises(FileNotFoundError, match="are not in"):
        require_sitl_logs(FLIGHT_LOGS.values(), clone / "tests")


def test_present_logs_are_found(clone: Path) -> None:
    folder = clone.parent / "shared" / "data" / "sitl-logs"
    folder.mkdir(parents=True)
    (folder / FLIGHT_LOGS["ardupilot"]).write_bytes(b"")
    assert missing_sitl_logs([FLIGHT_LOGS["ardupilot"]], clone) is None
    assert require_sitl_logs([FLIGHT_LOGS["ardupilot"]], clone) == folder.resolve()
    assert FLIGHT_LOGS["px4"] in (missing_sitl_logs(FLIGHT_LOGS.values(), clone) or "")


def test_the_environment_names_another_folder(clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "logs"))
    assert sitl_logs_dir(clone) == tmp_path / "logs"
    assert f"from {ENV_VAR}" in (missing_sitl_logs(FLIGHT_LOGS.values(), clone) or "")
