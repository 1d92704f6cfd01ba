"""The fault matrix's parts: the broken bundles it flies (NaN past a trigger, a slow but equal model), how it
judges an outcome from the vehicle's end state, and one real row in lockstep: a signed flight through
`fly()` that an attacker tries to disarm and land with unsigned and wrongly signed commands."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import linear_world_model

from dreamlink.bundle import BundleError, load_bundle, update_manifest, write_bundle
from dreamlink.campaign.fault_bundles import nan_bundle, slow_bundle
from dreamlink.campaign.fault_judging import judge, tlog_records, tlog_walk
from dreamlink.campaign.faults import FaultRow, fly_row, table
from dreamlink.spec import QUAD

VEL_N = QUAD.state_index("vel_n_mps")


def quad_linear_bundle(tmp_path, ensemble: int = 3):
    """A crude but sane quad model: positions integrate velocities, velocities follow the setpoint."""
    dt, S = QUAD.control_period_s, QUAD.state_dim
    F, G = np.eye(S, dtype=np.float32), np.zeros((S, 3), np.float32)
    for i, (p, v) in enumerate((("pos_n_m", "vel_n_mps"), ("pos_e_m", "vel_e_mps"), ("pos_d_m", "vel_d_mps"))):
        F[QUAD.state_index(p), QUAD.state_index(v)] = dt
        F[QUAD.state_index(v), QUAD.state_index(v)] = 0.9
        G[QUAD.state_index(v), QUAD.action_index(f"vel_sp_{'ned'[i]}_mps")] = 0.1
    model = linear_world_model(tmp_path / "quad.onnx", F, G, ensemble=ensemble, spread=0.0)
    bundle = write_bundle(tmp_path / "quad", QUAD, {"world_model": (model, {"ensemble_size": ensemble})})
    planner = {"samples": 32, "horizon": 10, "noise_sigma": 0.3, "temperature": 3.0, "noise_smoothing": 0.9}
    return update_manifest(bundle, calibration={"planner": planner}).root


def run_model(root, state: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(load_bundle(root).path_of("world_model")))
    action = np.zeros((len(state), QUAD.action_dim), np.float32)
    return session.run(None, {"state": state, "action": action})[0]


def test_nan_bundle_emits_nan_only_for_states_past_its_trigger(tmp_path):
    broken = nan_bundle(quad_linear_bundle(tmp_path), tmp_path / "nan", VEL_N, 1.0)
    state = np.zeros((3, QUAD.state_dim), np.float32)
    state[1, VEL_N], state[2, VEL_N] = 0.5, -1.5
    out = run_model(broken, state)  # [E,B,S]
    assert np.all(np.isfinite(out[:, :2])) and np.all(np.isnan(out[:, 2]))
    assert load_bundle(broken).manifest.calibration["planner"]["samples"] == 32  # a bundle like any other


def test_slow_bundle_computes_the_same_next_state(tmp_path):
    plain = quad_linear_bundle(tmp_path)
    slow = slow_bundle(plain, tmp_path / "slow", width=64, layers=2)
    state = np.random.default_rng(0).normal(size=(5, QUAD.state_dim)).astype(np.float32)
    np.testing.assert_allclose(run_model(slow, state), run_model(plain, state), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make", [lambda src, dst: nan_bundle(src, dst, VEL_N, 1.0),
                                  lambda src, dst: slow_bundle(src, dst, width=8)], ids=["nan", "slow"])
def test_a_policy_only_bundle_is_refused_in_one_line_asking_for_a_world_model(tmp_path, make):
    S, A = QUAD.state_dim, QUAD.action_dim
    weights = numpy_helper.from_array(np.zeros((S, A), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["state", "w"], ["action"])], "policy",
                              [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["B", S])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", A])], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "policy.onnx"))
    policy_only = write_bundle(tmp_path / "policy", QUAD, {"policy": (tmp_path / "policy.onnx", {"opset": 17})}).root
    with pytest.raises(BundleError) as refused:
        make(policy_only, tmp_path / "broken")
    message = str(refused.value)
    assert "\n" not in message and str(policy_only) in message
    assert "its files: policy" in message and "give a world-model bundle" in message
    assert not (tmp_path / "broken").exists()


@pytest.mark.parametrize("final, estopped, outcome", [
    ({"armed": False, "altitude_m": 0.0, "speed_mps": 0.0, "mode": "LAND", "landed": True}, False, "landed"),
    ({"armed": True, "altitude_m": 5.0, "speed_mps": 0.1, "mode": "BRAKE", "landed": False}, False, "holding"),
    ({"armed": True, "altitude_m": 5.0, "speed_mps": 1.0, "mode": "RTL", "landed": False}, False, "failsafe"),
    ({"armed": True, "altitude_m": 5.0, "speed_mps": 1.0, "mode": "Return", "landed": False}, False, "failsafe"),  # PX4
    ({"armed": True, "altitude_m": 5.0, "speed_mps": 0.1, "mode": "Hold", "landed": False}, False, "holding"),
    ({"armed": False, "altitude_m": 0.0, "speed_mps": 0.0, "mode": "GUIDED", "landed": True}, True, "terminated"),
    ({"armed": False, "altitude_m": 4.0, "speed_mps": 3.0, "mode": "GUIDED", "landed": False}, False, "UNSAFE"),
    ({"armed": True, "altitude_m": 5.0, "speed_mps": 4.0, "mode": "GUIDED", "landed": False}, False, "UNSAFE"),
    ({}, False, "UNSAFE"),
])
def test_outcomes_are_judged_from_the_vehicles_end_state(final, estopped, outcome):
    assert judge(final, estopped).startswith(outcome)


def test_a_torn_last_record_is_the_only_one_lost(tmp_path):
    """What a kill -9 mid-write leaves: whole records, then part of one; pymavlink reads every whole one."""
    import struct

    from dreamlink.firmware_bridge.link import mavlink

    mav = mavlink.MAVLink(None, srcSystem=1, srcComponent=1)
    frames = [bytes(mav.heartbeat_encode(2, 3, 0, 0, 3).pack(mav)) for _ in range(5)]
    data = b"".join(struct.pack(">Q", 1_700_000_000_000_000 + i) + f for i, f in enumerate(frames))
    path = tmp_path / "flight.tlog"
    path.write_bytes(data + data[: 8 + 7])  # the sixth record cut inside its frame
    assert tlog_walk(path) == (5, 15)
    assert tlog_records(path) == 5


@pytest.mark.sitl
def test_spoofed_commands_are_rejected_on_both_ends_and_the_flight_lands(tmp_path):
    bundle = quad_linear_bundle(tmp_path)
    # long enough that the spoofer's burst (0.1 s after arming) lands while the runtime still listens
    row = FaultRow("spoofed commands", "unsigned + bad key", spoof=True, ticks=500, altitude_m=2.0)
    report = fly_row(row, {"trained": bundle}, tmp_path / "matrix", seed=3)
    assert report.safe and report.outcome == "landed", report
    rejected = report.detail["link_rejected"]
    assert rejected["rx_unsigned_rejected"] >= 1 and rejected["rx_bad_signature"] >= 1
    sitl = report.detail["sitl"]["counters"]
    assert sitl["rx_unsigned_rejected"] >= 1 and sitl["rx_bad_signature"] >= 1
    assert report.fence_breaches == 0 and report.records_lost == 0 and report.records_read > 0
    assert "spoofed commands" in table([report])


@pytest.mark.sitl
def test_px4_takes_off_and_lands_through_20_percent_packet_loss(tmp_path):
    """PX4 wants a setpoint stream before OFFBOARD; in lockstep every streamed setpoint is a step, and a lost one
    (or its answer) must cost a short wait, not half a second: with 0.5 s this row timed out on the ground."""
    bundle = quad_linear_bundle(tmp_path)
    row = FaultRow("packet loss", "20% each way", to_runtime="drop_rate=0.2", to_vehicle="drop_rate=0.2", ticks=150,
                   altitude_m=2.0)
    report = fly_row(row, {"trained": bundle}, tmp_path / "matrix", seed=4, flavour="px4")
    assert report.safe and report.outcome == "landed", report
    assert report.detail["proxy"] and report.fence_breaches == 0 and report.records_lost == 0
