""".tlog -> calibration data on a log a SITL flight wrote: a real-time ArduPilot-flavour quad SITL flown
with velocity setpoints through the runtime's own profile and link, every frame recorded to a .tlog by
the runtime's flight recorder; the log becomes transitions through the same profile functions, and
those feed static quantization.

Real time, not lockstep: a .tlog stamps frames with wall-clock time, and in lockstep the simulator's
clock runs faster than the wall, so only a real-time flight gives a log like a real one. (Damaged logs:
tests/test_tlog.py covers truncated and corrupt files, the offset in the error and the part kept.)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from dreamlink.spec import QUAD

pytestmark = [pytest.mark.sitl]

SETPOINTS_MPS = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (-1.0, 0.0, 0.5))  # north/east/down, 2 s each


@pytest.fixture(scope="module")
def flight_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.profiles import make_profile
    from dreamlink.runtime.recorder import TLOG_NAME, FlightRecorder
    from dreamlink.sim.launcher import SitlProcess

    out = tmp_path_factory.mktemp("flight")
    recorder = FlightRecorder(out, QUAD, horizon=1, max_ticks=1)
    sent = []
    try:
        with SitlProcess("quad", lockstep=False, seed=3, extra_args=("--flavour", "ardupilot", "--nominal")) as sitl, \
                Link(LinkConfig(sitl.connect_string), tap=recorder.tap) as link:
            profile = make_profile(QUAD, link, "ardupilot", lockstep=False)
            profile.connect(timeout_s=30)
            profile.enter_control_mode()
            profile.arm()
            profile.takeoff(3.0)
            period = QUAD.control_period_s
            next_t = time.monotonic()
            for v in SETPOINTS_MPS:
                for _ in range(round(2.0 / period)):
                    action = np.array(v, np.float32)
                    profile.send(action)
                    sent.append(action)
                    next_t += period
                    time.sleep(max(0.0, next_t - time.monotonic()))
            profile.land()
    finally:
        recorder.close()
    return out / TLOG_NAME, np.unique(np.stack(sent), axis=0)


def test_tlog_of_a_sitl_flight_becomes_calibration_data(flight_log, tmp_path: Path) -> None:
    from dreamlink.calibration.quantize import QuantizeConfig, quantize_world_model
    from dreamlink.calibration.reader import TransitionReader, load_transitions

    tlog, sent = flight_log
    data = load_transitions([tlog], QUAD, "ardupilot")
    # ~6 s of setpoints at 50 Hz, less the grid points around mode changes and gaps
    assert 150 <= len(data) <= 320, len(data)
    assert data.meta["format"] == "tlog" and data.meta["truncated_at"] is None
    # the actions are the setpoints the client sent, read back from the log through the profile
    assert {tuple(a) for a in np.round(data.action, 3)} <= {tuple(a) for a in np.round(sent, 3)}
    # the state follows them: flying north, the north velocity is positive well into the first leg
    vn = data.state[:, QUAD.state_index("vel_n_mps")]
    north = (data.action[:, 0] > 0.5)
    assert north.sum() > 50 and np.median(vn[north][len(vn[north]) // 2:]) > 0.3
    # consecutive transitions join up: the data set is a time series, not a bag of samples
    same_ep = data.episode[1:] == data.episode[:-1]
    np.testing.assert_allclose(data.next_state[:-1][same_ep], data.state[1:][same_ep], atol=1e-5)

    model = quad_world_model(tmp_path / "wm.onnx")
    out = quantize_world_model(model, tmp_path / "int8.onnx", QuantizeConfig("int8_static", "percentile"),
                               lambda: TransitionReader(data, batch=64))
    assert out.is_file() and out.stat().st_size > 0


def quad_world_model(path: Path) -> Path:
    import torch

    from dreamlink.export.onnx_export import export_world_model
    from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig

    torch.manual_seed(0)
    model = EnsembleWorldModel(QUAD, WorldModelConfig(hidden=16, layers=2, ensemble_size=2)).eval()
    return Path(export_world_model(model, QUAD, path))
