"""Calibration as a user runs it on a cart-pole model (physics data, no SITL: seconds): precisions judged
against fp32 on held-out data, the horizon read from measured drift, the disagreement threshold and
device budget written to the manifest, and the runtime and doctor reading the same budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx_models import linear_world_model
from test_quantize import train_bundle

from dreamlink.bundle import BundleError, load_bundle, write_bundle
from dreamlink.calibration.accuracy import measure_accuracy
from dreamlink.calibration.budget import SweepConfig, SweepPoint, fit_budget
from dreamlink.calibration.calibrate import CalibrateConfig, calibrate
from dreamlink.calibration.horizon import AcceptTolerance, judge_precisions
from dreamlink.campaign.collect import cartpole_random_force_transitions
from dreamlink.deploy.budget import judge_budget
from dreamlink.runtime.budget import check_rate, recorded_budget
from dreamlink.spec import CARTPOLE

TINY_SWEEP = SweepConfig(samples=(8, 16), horizons=(4,), steps=3, warmup=1)


def test_a_model_trained_on_a_tenth_of_the_data_gets_a_shorter_horizon(tmp_path: Path) -> None:
    full = cartpole_random_force_transitions(100, 40, seed=0)
    tenth = full.subset(np.flatnonzero(full.episode < 10))
    holdout = cartpole_random_force_transitions(10, 40, seed=99)
    tol = AcceptTolerance(kstep_tolerance=0.1)
    horizons = {}
    for name, data in (("full", full), ("tenth", tenth)):
        model = train_bundle(tmp_path / name, data) / "world_model.onnx"
        horizon, _ = judge_precisions(measure_accuracy({"fp32": model}, holdout, max_k=30), tol)
        horizons[name] = horizon
    assert horizons["tenth"] < horizons["full"], horizons
    assert horizons["full"] >= 3, horizons  # the full model's imagined future holds for a while


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("calib")
    train = cartpole_random_force_transitions(60, 40, seed=0)
    holdout = cartpole_random_force_transitions(8, 40, seed=99)
    train.save(tmp / "train.npz")
    holdout.save(tmp / "holdout.npz")
    return train_bundle(tmp / "bundle", train), tmp / "train.npz", tmp / "holdout.npz"


def test_a_precision_failing_the_tolerance_is_refused_and_fp32_kept(model_and_data, tmp_path: Path) -> None:
    bundle, train, holdout = model_and_data
    strict = AcceptTolerance(kstep_tolerance=0.1, max_kstep_excess=0.0, max_action_error=1e-7)
    config = CalibrateConfig(precisions=("fp32", "int8_dynamic", "int8_static"), methods=("minmax",),
                             tolerance=strict, max_k=12, sweep=TINY_SWEEP, speed_point=(16, 4), speed_steps=3)
    result = calibrate(bundle, [train], tmp_path / "out", config, holdout_paths=[holdout])

    assert result.chosen == "fp32"
    assert set(result.refused) == {"int8_dynamic", "int8_static_minmax"}
    assert all("planner action differs from fp32's" in why for why in result.refused.values())
    calibrated = load_bundle(result.calibrated_bundle)
    cal = calibrated.manifest.calibration
    assert cal["quantization"]["chosen"] == "fp32" and cal["budget"]["precision"] == "fp32"
    assert calibrated.manifest.files["planner"].precision == "fp32"
    assert cal["quantization"]["refused"]["int8_dynamic"] == result.refused["int8_dynamic"]
    # the same measurements under the default tolerance accept int8: the refusal was the tolerance's doing
    _, lenient = judge_precisions(result.accuracy, AcceptTolerance(kstep_tolerance=0.1))
    assert lenient["int8_dynamic"].accepted and lenient["int8_static_minmax"].accepted
    # the source bundle is left as it was
    assert "quantization" not in load_bundle(bundle).manifest.calibration


def test_calibration_writes_what_the_runtime_and_doctor_read(model_and_data, tmp_path: Path) -> None:
    from dreamlink.calibration.report import write_report

    bundle, train, holdout = model_and_data
    config = CalibrateConfig(precisions=("fp32", "int8_static"), methods=("minmax", "percentile"), max_k=12,
                             tolerance=AcceptTolerance(kstep_tolerance=0.1), sweep=TINY_SWEEP, speed_point=(16, 4),
                             speed_steps=3)
    result = calibrate(bundle, [train], tmp_path / "out", config, holdout_paths=[holdout])
    manifest = load_bundle(result.calibrated_bundle).manifest
    cal = manifest.calibration
    assert np.isfinite(cal["disagreement_threshold"]) and cal["disagreement_threshold"] > 0
    assert 1 <= cal["kstep"]["recommended_horizon"] <= 12 and cal["kstep"]["tolerance"] == 0.1
    assert cal["planner"]["samples"] == cal["budget"]["samples"] and cal["planner"]["horizon"] <= result.horizon
    rb = recorded_budget(manifest)
    assert rb is not None and rb.section == "calibration.budget" and rb.share == 0.5
    assert (rb.samples, rb.horizon, rb.precision) == (cal["budget"]["samples"], cal["budget"]["horizon"], result.chosen)
    assert rb.max_rate_hz == pytest.approx(0.5 * 1e3 / cal["budget"]["p99_ms"], rel=1e-3)
    # doctor's verdict and the runtime's refusal agree on the same record
    verdict = judge_budget(manifest, rb.device or "")
    if verdict.fits:
        check_rate(manifest, CARTPOLE.rate_hz)
    else:
        with pytest.raises(BundleError):
            check_rate(manifest, CARTPOLE.rate_hz)
    report = write_report(result.out_dir, result.to_dict(), result.curves)
    text = report.read_text()
    assert "Chosen precision" in text and "int8_static" in text and "Speed at the reference point" in text
    assert (result.out_dir / "kstep_error.png").is_file() and (result.out_dir / "latency_vs_k.png").is_file()
    assert json.loads((result.out_dir / "calibration.json").read_text())["chosen"] == result.chosen


def budget_bundle(path: Path, budget: dict | None) -> Path:
    onnx_path = linear_world_model(path.parent / f"{path.name}.onnx", np.eye(4, dtype=np.float32),
                                   np.zeros((4, 1), np.float32))
    write_bundle(path, CARTPOLE, {"world_model": (onnx_path, {"opset": 17})},
                 calibration={"budget": budget} if budget else {})
    return path


def test_runtime_refuses_a_rate_the_budget_cannot_hold(tmp_path: Path) -> None:
    from dreamlink.runtime.onboard import RunConfig, fly

    record = {"device": "Test CPU", "precision": "int8_static_minmax", "samples": 512, "horizon": 15,
              "p99_ms": 30.0, "share": 0.5}
    slow = budget_bundle(tmp_path / "slow", record)
    manifest = load_bundle(slow).manifest
    with pytest.raises(BundleError, match=r"largest rate this budget fits is 16\.7 Hz") as e:
        check_rate(manifest, 50.0)
    assert "K=512 x H=15" in str(e.value) and "p99 30.00 ms" in str(e.value) and "10.00 ms" in str(e.value)
    check_rate(manifest, 16.0)  # fits
    verdict = judge_budget(manifest, "Test CPU")
    assert not verdict.fits and "max rate 16.7 Hz" in verdict.message
    # the runtime refuses at start, before it opens a link
    with pytest.raises(BundleError, match=r"16\.7 Hz"):
        fly(RunConfig(bundle=slow, connect="udpin:127.0.0.1:9", out_dir=tmp_path / "flight"))
    check_rate(load_bundle(budget_bundle(tmp_path / "none", None)).manifest, 1000.0)  # uncalibrated: allowed


def test_a_budget_under_names_dreamlink_does_not_write_is_refused(tmp_path: Path) -> None:
    """`dreamlink calibrate` writes calibration.budget with p99_ms, samples, device...; another name for a field
    is refused, naming the file, the field and the key dreamlink writes, rather than read or ignored."""
    seconds = {"device": "Test CPU", "samples": 512, "horizon": 15, "p99_s": 0.030, "share": 0.5}
    manifest = load_bundle(budget_bundle(tmp_path / "seconds", seconds)).manifest
    said = r"manifest\.json calibration\.budget\.p99_s: not a key dreamlink writes; the budget records p99_ms"
    with pytest.raises(BundleError, match=said):
        check_rate(manifest, 50.0)
    with pytest.raises(BundleError, match=said):
        judge_budget(manifest, "Test CPU")
    letters = {"device": "Test CPU", "K": 512, "H": 15, "p99_ms": 30.0}
    with pytest.raises(BundleError, match=r"calibration\.budget\.(K|H): not a key .* records (samples|horizon)"):
        check_rate(load_bundle(budget_bundle(tmp_path / "letters", letters)).manifest, 50.0)
    onnx_path = linear_world_model(tmp_path / "wm.onnx", np.eye(4, dtype=np.float32), np.zeros((4, 1), np.float32))
    section = write_bundle(tmp_path / "section", CARTPOLE, {"world_model": (onnx_path, {"opset": 17})},
                           calibration={"device_budget": {"device": "Test CPU", "p99_ms": 30.0}})
    with pytest.raises(BundleError, match=r"manifest\.json calibration\.device_budget: not a field dreamlink "
                                          r"writes; the device budget is calibration\.budget"):
        check_rate(section.manifest, 50.0)


def test_budget_is_the_largest_setting_whose_p99_fits() -> None:
    pts = [SweepPoint("int8", k, h, p99 * 0.8, p99, 0.0, 0.0)
           for k, h, p99 in ((64, 10, 3.0), (128, 10, 6.0), (64, 20, 5.0), (256, 10, 12.0), (128, 20, 9.9))]
    best = fit_budget(pts, "int8", period_s=0.02, share=0.5)
    assert best is not None and (best.samples, best.horizon) == (128, 20)
    assert fit_budget(pts, "int8", 0.02, 0.5, max_horizon=10).samples == 128
    assert fit_budget(pts, "int8", 0.002, 0.5) is None


def _outcomes(rmse_by_precision: dict[str, list[float]], failed: tuple[str, int] | None = None) -> list:
    from dreamlink.calibration.closed_loop import FlightOutcome

    return [FlightOutcome(name, seed, (name, seed) != failed, r if (name, seed) != failed else float("nan"),
                          (name, seed) != failed)
            for name, rmses in rmse_by_precision.items() for seed, r in enumerate(rmses, start=1)]


def test_closed_loop_refusals_name_ratio_landing_and_unflown() -> None:
    from dreamlink.calibration.calibrate import closed_loop_refusals
    from dreamlink.calibration.closed_loop import summarise

    fp32 = [0.20, 0.30, 0.25, 0.25]
    summary = summarise(_outcomes({"fp32": fp32, "a": [r * 1.05 for r in fp32], "b": [r * 1.2 for r in fp32]}))
    assert summary["a"]["ratio_to_fp32"] == pytest.approx(1.05) and summary["b"]["ratio_to_fp32"] == pytest.approx(1.2)
    refused = closed_loop_refusals(summary, ["fp32", "a", "b", "c"], max_ratio=1.10)
    assert set(refused) == {"b", "c"}
    assert "1.20x" in refused["b"] and "allowed 1.10x" in refused["b"] and "not flown" in refused["c"]
    assert closed_loop_refusals(summary, ["fp32", "a", "b"], max_ratio=1.25) == {}
    # a precision that did not land a flight fp32 landed is refused even when its other seeds track well
    crashed = summarise(_outcomes({"fp32": fp32, "a": fp32}, failed=("a", 2)))
    assert crashed["a"]["seeds_compared"] == 3 and crashed["a"]["ratio_to_fp32"] == pytest.approx(1.0)
    assert "landed 3 of 4" in closed_loop_refusals(crashed, ["fp32", "a"], 1.10)["a"]


def test_closed_loop_gate_refuses_int8_that_flies_worse_and_keeps_fp32(model_and_data, tmp_path: Path) -> None:
    """The gate on a real calibration (cart-pole, seconds) with injected flights: the same int8 model is kept
    when it flies within 10 % of fp32 and refused, with fp32 in the calibrated bundle, when it does not."""
    import copy

    from dreamlink.calibration.calibrate import apply_closed_loop_gate
    from dreamlink.calibration.closed_loop import summarise
    from dreamlink.calibration.report import write_report

    bundle, train, holdout = model_and_data
    config = CalibrateConfig(precisions=("fp32", "int8_static"), methods=("minmax",), max_k=12,
                             tolerance=AcceptTolerance(kstep_tolerance=0.1), sweep=TINY_SWEEP, speed_point=(16, 4),
                             speed_steps=3)
    calibrated = calibrate(bundle, [train], tmp_path / "out", config, holdout_paths=[holdout])
    int8 = "int8_static_minmax"
    assert calibrated.quantization["candidates"] == ["fp32", int8], calibrated.refused
    # A sweep in which int8 holds the larger budget (measured timings would make the choice load-dependent).
    calibrated.points = [SweepPoint(n, k, h, p99 * 0.8, p99, 0.0, 0.0) for h in calibrated.sweep_config.horizons
                         for n, k, p99 in (("fp32", 8, 4.0), ("fp32", 16, 12.0), (int8, 8, 2.0), (int8, 16, 6.0))]
    fp32 = [0.20, 0.30, 0.25]
    flights = {"seeds": [1, 2, 3], "laps": 1.0, "flavour": "ardupilot", "planner": {"samples": 16, "horizon": 4}}

    kept = apply_closed_loop_gate(copy.deepcopy(calibrated), {
        **flights, "summary": summarise(_outcomes({"fp32": fp32, int8: [r * 1.05 for r in fp32]}))})
    assert kept.chosen == int8 and int8 not in kept.refused
    assert load_bundle(kept.calibrated_bundle).manifest.files["planner"].precision == "int8"

    gated = apply_closed_loop_gate(calibrated, {
        **flights, "summary": summarise(_outcomes({"fp32": fp32, int8: [r * 1.3 for r in fp32]}))})
    assert gated.chosen == "fp32" and gated.refused[int8].startswith("closed loop: mean figure-eight RMSE")
    assert not gated.verdicts[int8].accepted
    manifest = load_bundle(gated.calibrated_bundle).manifest
    cal = manifest.calibration
    assert manifest.files["planner"].precision == "fp32" and cal["budget"]["precision"] == "fp32"
    assert cal["quantization"]["chosen"] == "fp32" and int8 in cal["quantization"]["refused"]
    assert cal["closed_loop"]["chosen_before"] == int8 and cal["closed_loop"]["ratios"][int8] == pytest.approx(1.3)
    assert json.loads((gated.out_dir / "calibration.json").read_text())["chosen"] == "fp32"
    text = write_report(gated.out_dir, gated.to_dict(), gated.curves).read_text()
    assert "REFUSED" in text and f"was {int8} before the flights" in text
    assert (gated.out_dir / "closed_loop.png").is_file()
