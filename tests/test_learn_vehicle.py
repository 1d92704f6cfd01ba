"""Learning the vehicle you fly: real flight logs in (../shared/data/sitl-logs: real ArduCopter and PX4 SITL),
fine-tuning a model of one vehicle on another's data, a bundle that records which vehicle it learned, and
`run` checking that against the vehicle it connects to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_logs import ARDUPILOT_LOG, PX4_LOG, needs_logs

from dreamlink.bundle import load_bundle, update_manifest
from dreamlink.calibration.kstep import kstep_curve
from dreamlink.cli import main
from dreamlink.firmware_bridge.vehicle_id import VehicleIdentity, compare_identity, identity_from_tlog
from dreamlink.learn import split_holdout, transitions_from_logs
from dreamlink.learning.train import TrainConfig, load_checkpoint, train_world_model
from dreamlink.learning.world_model import WorldModelConfig
from dreamlink.spec import QUAD

SMALL = WorldModelConfig(hidden=32, layers=2, ensemble_size=2, ignore_inputs=("pos_n_m", "pos_e_m", "pos_d_m",
                                                                              "yaw_rad"))


def _pos_error(model, holdout, k: int = 25) -> float:
    def predict(s, a):
        with torch.no_grad():
            return model(torch.from_numpy(s), torch.from_numpy(a)).numpy()

    curve = kstep_curve(predict, holdout.episodes(), QUAD, k)
    idx = [QUAD.state_index(n) for n in ("pos_n_m", "pos_e_m", "pos_d_m")]
    return float(np.sqrt(np.sum(curve.rmse[k - 1, idx] ** 2)))


@needs_logs
def test_flight_logs_become_chunked_transitions_that_know_their_vehicle() -> None:
    data = transitions_from_logs([PX4_LOG])
    assert len(data) > 7000 and len(np.unique(data.episode)) >= 25  # 146 s of excitation in 5 s pieces
    vehicle = data.meta["vehicle"]
    assert vehicle["family"] == "px4" and vehicle["firmware"] == "1.16.0" and vehicle["git"] == "6ea35391"
    assert vehicle["airframe"] == {"SYS_AUTOSTART": 10040.0}  # an INT32 parameter, bytewise in PARAM_VALUE
    assert vehicle["params"]["MPC_XY_VEL_P_ACC"] == pytest.approx(1.8)
    with pytest.raises(ValueError, match="different autopilots"):
        transitions_from_logs([PX4_LOG, ARDUPILOT_LOG])


@needs_logs
def test_train_on_a_tlog_then_export_records_the_vehicle_and_the_logs(tmp_path: Path) -> None:
    ckpt, bundle = tmp_path / "m.pt", tmp_path / "bundle"
    assert main(["train", "--data", str(ARDUPILOT_LOG), "--out", str(ckpt), "--epochs", "2", "--hidden", "16",
                 "--ensemble", "2"]) == 0
    model = load_checkpoint(ckpt)
    assert float(model.input_mask[QUAD.state_index("pos_n_m")]) == 0.0  # a quad's position is not an input
    assert model.provenance["vehicle"]["family"] == "ardupilot"
    assert model.provenance["logs"][0]["sha256"] and 2.0 < model.provenance["data_minutes"] < 3.0
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(bundle)]) == 0
    learned = load_bundle(bundle).manifest.training["vehicle"]
    assert learned["summary"].startswith("ardupilot 4.8.0-dev (git 64a9c787)")


@pytest.mark.slow
@needs_logs
def test_fine_tuning_adapts_a_model_of_one_vehicle_to_another() -> None:
    """A model of ArduCopter's closed loop, fine-tuned on part of a PX4 flight, predicts the rest of that flight
    better than before; its shape and normalisation are the initial model's, and the initial model is untouched."""
    ardupilot = transitions_from_logs([ARDUPILOT_LOG])
    px4_train, px4_hold = split_holdout(transitions_from_logs([PX4_LOG]), 0.25)
    base = train_world_model(ardupilot, SMALL, TrainConfig(epochs=8, seed=0, holdout_fraction=0.0)).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = train_world_model(px4_train, WorldModelConfig(hidden=8), TrainConfig(epochs=8, seed=0, lr=3e-4,
                                                                                 holdout_fraction=0.0),
                              init=base).model
    assert tuned.config == base.config  # the init's shape wins over the config passed
    for name in ("state_mean", "state_std", "delta_mean", "delta_std", "action_std"):
        assert torch.equal(getattr(tuned, name), before[name])
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())  # init left alone
    err_base, err_tuned = _pos_error(base, px4_hold), _pos_error(tuned, px4_hold)
    assert err_tuned < 0.8 * err_base, (err_base, err_tuned)


def test_fine_tuning_refuses_a_model_of_another_vehicle_description() -> None:
    from dreamlink.campaign.collect import cartpole_random_force_transitions
    from dreamlink.learning.world_model import EnsembleWorldModel

    cartpole = cartpole_random_force_transitions(4, 20, 0)
    with pytest.raises(ValueError, match="same vehicle description"):
        train_world_model(cartpole, SMALL, TrainConfig(epochs=1), init=EnsembleWorldModel(QUAD, SMALL))


@needs_logs
def test_identities_compare_family_firmware_and_shaping_parameters() -> None:
    ardupilot, px4 = identity_from_tlog(ARDUPILOT_LOG), identity_from_tlog(PX4_LOG)
    mismatches, _ = compare_identity(px4, ardupilot)
    assert mismatches == ["the bundle learned a px4 vehicle; this is ardupilot"]
    retuned = VehicleIdentity.from_dict({**ardupilot.to_dict(), "firmware": "4.9.0",
                                         "params": {**ardupilot.params, "WP_ACC": 5.0}})
    mismatches, differences = compare_identity(ardupilot, retuned)
    assert mismatches == [] and differences == ["firmware 4.8.0-dev learned, 4.9.0 here",
                                                "parameter WP_ACC = 2.5 learned, 5 here"]
    assert compare_identity(ardupilot, ardupilot) == ([], [])


@pytest.mark.sitl
@pytest.mark.slow
def test_run_warns_about_another_vehicle_and_refuses_it_when_strict(quad_bundle: Path, tmp_path: Path) -> None:
    from dreamlink.sim.launcher import SitlProcess

    bundle = tmp_path / "px4-learned"
    import shutil

    shutil.copytree(quad_bundle, bundle)
    update_manifest(load_bundle(bundle), training={"vehicle": {"family": "px4", "firmware": "1.16.0",
                                                               "summary": "px4 1.16.0"}})
    with SitlProcess("quad", lockstep=True, seed=4, extra_args=("--flavour", "ardupilot")) as sitl:
        proc = subprocess.run([sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(bundle), "--connect",
                               sitl.connect_string, "--lockstep", "--autopilot", "ardupilot", "--strict-vehicle",
                               "--out", str(tmp_path / "f")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "learned px4 1.16.0, not this vehicle (ardupilot" in proc.stderr
    assert "the bundle learned a px4 vehicle; this is ardupilot" in proc.stderr
    events = [json.loads(line) for line in (tmp_path / "f" / "events.jsonl").read_text().splitlines()]
    assert not any(e["event"] == "armed" for e in events)  # refused before arming


def test_integer_parameters_are_decoded_the_way_each_autopilot_encodes_them() -> None:
    """PX4 copies an INT32's bytes into PARAM_VALUE's float; ArduPilot casts (its FRAME_CLASS 1 arrives as 1.0)."""
    import struct
    from types import SimpleNamespace

    from dreamlink.firmware_bridge.vehicle_id import param_value

    int32, int8, real32 = 6, 2, 9
    bytewise = struct.unpack("<f", struct.pack("<i", 10040))[0]
    assert param_value(SimpleNamespace(param_value=bytewise, param_type=int32), "px4") == 10040.0
    assert param_value(SimpleNamespace(param_value=1.0, param_type=int8), "ardupilot") == 1.0
    assert param_value(SimpleNamespace(param_value=2.5, param_type=real32), "px4") == 2.5


def test_positions_integrated_from_velocity_drop_the_estimators_wander_and_keep_episodes_whole() -> None:
    """A logged position that drifts against the logged velocity (an estimator pulled by GPS) is replaced by the
    velocity's integral from each episode's first sample; the rows still chain, so k-step rollouts still work."""
    from dreamlink.learn import QUAD_KINEMATICS
    from dreamlink.learning.transitions import TransitionSet

    rng = np.random.default_rng(0)
    n, dt = 40, QUAD.control_period_s
    states = np.zeros((n + 1, QUAD.state_dim), np.float32)
    states[:, QUAD.state_index("vel_n_mps")] = 1.0
    states[:, QUAD.state_index("pos_n_m")] = np.arange(n + 1) * dt * 1.0 + np.cumsum(rng.normal(0, 0.02, n + 1))
    states[:, QUAD.state_index("pos_e_m")] = 3.0
    actions = np.zeros((n, QUAD.action_dim), np.float32)
    ep = np.r_[np.zeros(20), np.ones(20)].astype(np.int64)
    data = TransitionSet(QUAD, states[:-1], actions, states[1:], ep)
    fixed = data.with_integrated_positions(QUAD_KINEMATICS)
    pn = QUAD.state_index("pos_n_m")
    np.testing.assert_allclose(fixed.next_state[:, pn] - fixed.state[:, pn], dt, rtol=1e-5)
    assert fixed.state[0, pn] == data.state[0, pn] and fixed.state[20, pn] == data.state[20, pn]  # each run's start
    np.testing.assert_allclose(fixed.state[:, QUAD.state_index("pos_e_m")], 3.0)
    assert [len(a) for _, a in fixed.episodes()] == [20, 20]
