"""`dreamlink calibrate` / `quantize` on a real SITL flight log with one damaged record in the middle: by default
the command stops with an error naming the file; `--on-log-error skip` reads on past the record and calibrates on
the whole flight, as `dreamlink train --on-log-error skip` does.

The world model is a stand-in (a linear quad model written with onnx.helper): what is tested is the data path,
so the rest of calibration runs at its smallest (fp32 only, a 2-point sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx_models import linear_world_model
from shared_logs import ARDUPILOT_LOG, needs_log

from dreamlink.bundle import write_bundle
from dreamlink.calibration.tlog_data import tlog_to_transitions
from dreamlink.cli import main
from dreamlink.firmware_bridge.tlog import read_tlog
from dreamlink.spec import QUAD

pytestmark = needs_log(ARDUPILOT_LOG)

CHEAP = ["--precisions", "fp32", "--samples", "8", "--horizons", "4", "--steps", "3", "--speed-point", "8x4",
         "--max-k", "5"]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A copy of the ArduPilot log with one LOCAL_POSITION_NED payload byte flipped halfway: (path, its offset)."""
    records = read_tlog(ARDUPILOT_LOG, types={"LOCAL_POSITION_NED"}).records
    offset = records[len(records) // 2].offset
    data = bytearray(ARDUPILOT_LOG.read_bytes())
    data[offset + 8 + 10 + 5] ^= 0xFF  # 8-byte stamp, 10-byte v2 header: a payload byte, so the CRC fails
    path = tmp_path_factory.mktemp("logs") / "damaged.tlog"
    path.write_bytes(bytes(data))
    return path, offset


@pytest.fixture(scope="module")
def quad_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bundle")
    model = linear_world_model(tmp / "wm.onnx", np.eye(QUAD.state_dim, dtype=np.float32),
                               np.zeros((QUAD.state_dim, QUAD.action_dim), np.float32))
    return write_bundle(tmp / "quad", QUAD, {"world_model": (model, {"opset": 17})}).root


def test_calibrate_stops_at_a_damaged_record_by_default_naming_the_file(
        damaged: tuple[Path, int], quad_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, offset = damaged
    code = main(["calibrate", "--bundle", str(quad_bundle), "--data", str(log), "--out", str(tmp_path / "out"),
                 *CHEAP])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{log}: " in err and f"at byte {offset}" in err and "--on-log-error skip" in err
    assert not (tmp_path / "out" / "calibration.json").exists()


def test_calibrate_on_log_error_skip_salvages_the_flight(damaged: tuple[Path, int], quad_bundle: Path,
                                                         tmp_path: Path) -> None:
    log, offset = damaged
    out = tmp_path / "out"
    # The log is one episode (a skipped record is no gap), so the intact original is the held-out data.
    code = main(["calibrate", "--bundle", str(quad_bundle), "--data", str(log), "--holdout", str(ARDUPILOT_LOG),
                 "--out", str(out), "--on-log-error", "skip", *CHEAP])
    assert code in (0, 1)  # 1: the budget does not fit this machine's load; the data path is what is tested
    data = json.loads((out / "calibration.json").read_text())["data"]
    assert data["on_log_error"] == "skip"
    assert data["log_damage"] == [{"source": str(log), "bad_offsets": [offset], "truncated_at": None}]
    # The records after the damage were used: more transitions than the part before it gives, as many as
    # reading on past the record gives.
    before = tlog_to_transitions(log, QUAD, "ardupilot", on_error="stop")
    past = tlog_to_transitions(log, QUAD, "ardupilot", on_error="skip")
    assert data["train"] == len(past) > len(before) > 0
    assert len(past) > 1.5 * len(before)  # the damage sits halfway: the second half is there too


def test_quantize_takes_the_same_choice(damaged: tuple[Path, int], quad_bundle: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    log, offset = damaged
    args = ["quantize", "--bundle", str(quad_bundle), "--data", str(log), "--out", str(tmp_path / "q.onnx")]
    assert main(args) == 2
    assert f"at byte {offset}" in capsys.readouterr().err and not (tmp_path / "q.onnx").exists()
    assert main([*args, "--on-log-error", "skip"]) == 0
    assert (tmp_path / "q.onnx").is_file()
