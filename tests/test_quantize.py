"""Quantization as a user runs it: calibration data from transitions feeds ONNX Runtime's static
quantization, and the quantized world model keeps the contract and stays close to fp32.

The model is a small cart-pole ensemble trained on cart-pole physics (no SITL: seconds)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from dreamlink.calibration.accuracy import one_step_error, predictor
from dreamlink.calibration.quantize import QuantizeConfig, matmul_groups, matmul_nodes, quantize_world_model
from dreamlink.calibration.reader import TransitionReader, load_transitions
from dreamlink.campaign.collect import cartpole_random_force_transitions
from dreamlink.export.planner_graph_pack import optimize_offline
from dreamlink.learning.transitions import TransitionSet
from dreamlink.spec import CARTPOLE, QUAD


def train_bundle(path: Path, data: TransitionSet, hidden: int = 32, epochs: int = 10) -> Path:
    import torch

    from dreamlink.export.pack import pack_bundle
    from dreamlink.learning.train import TrainConfig, train_world_model
    from dreamlink.learning.world_model import WorldModelConfig

    torch.manual_seed(0)
    result = train_world_model(data, WorldModelConfig(hidden=hidden, layers=2, ensemble_size=3),
                               TrainConfig(epochs=epochs, seed=0, threads=1))
    planner = {"samples": 32, "horizon": 10, "noise_sigma": 0.3, "temperature": 1.0}
    bundle, parity = pack_bundle(path, CARTPOLE, result.model, calibration={"planner": planner})
    assert parity.ok
    return bundle.root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TransitionSet, TransitionSet]:
    train = cartpole_random_force_transitions(60, 40, seed=0)
    holdout = cartpole_random_force_transitions(8, 40, seed=99)
    root = train_bundle(tmp_path_factory.mktemp("quant") / "bundle", train)
    return root / "world_model.onnx", train, holdout


def _scales(path: Path) -> dict[str, float]:
    g = onnx.load(str(path)).graph
    return {i.name: float(numpy_helper.to_array(i).ravel()[0]) for i in g.initializer
            if i.name.endswith("_scale") and "weights" not in i.name}


def test_reader_batches_come_from_the_data_and_rewind(model) -> None:
    _, train, _ = model
    reader = TransitionReader(train, batch=100, max_batches=5, random_action_share=0.4, seed=3)
    batches = []
    while (b := reader.get_next()) is not None:
        batches.append(b)
    assert len(batches) == 5 and reader.get_next() is None
    rows = {tuple(r) for r in train.state.round(5)}
    for b in batches:
        assert b["state"].shape == (100, 4) and b["action"].shape == (100, 1) and b["state"].dtype == np.float32
        assert all(tuple(r) in rows for r in b["state"].round(5))
    # two batches pair recorded states with actions drawn over the whole action range (the planner's)
    spread = [float(np.ptp(b["action"])) for b in batches]
    assert min(spread[:2]) > 15.0 and all(np.all(np.abs(b["action"]) <= 10.0) for b in batches)
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["state"], batches[0]["state"])


def test_calibration_reader_feeds_static_quantization(model, tmp_path: Path) -> None:
    src, train, holdout = model
    calls = []

    def factory() -> TransitionReader:
        calls.append(1)
        return TransitionReader(train, batch=128, max_batches=8)

    out = quantize_world_model(src, tmp_path / "int8.onnx", QuantizeConfig("int8_static", "minmax"), factory)
    ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    # dreamlink's per-member layout, 3 members: each member's two hidden MatMuls quantized (the members share
    # the first one's input, so 1 + 3 activation QuantizeLinears); the transposed output Gemm stays float;
    # outputs left float
    assert calls and ops["QuantizeLinear"] == 1 + 3 and ops["MatMul"] == 2 * 3 and ops["Gemm"] == 3
    # the ranges are the data's: a reader over other data gives other scales
    other = quantize_world_model(src, tmp_path / "other.onnx", QuantizeConfig("int8_static", "minmax"),
                                 lambda: TransitionReader(cartpole_random_force_transitions(5, 10, seed=5).subset(
                                     np.arange(20)), batch=20, random_action_share=0.0))
    assert _scales(out) != _scales(other)
    # ORT turns each quantized MatMul into an integer MatMul (MatMulIntegerToFloat; QLinearMatMul where a ReLU
    # lets the int8 output feed the next layer), once its MatMul+Add -> Gemm fusion is kept off: that fusion
    # runs first and leaves a float (Fused)Gemm on dequantized weights
    optimize_offline(out, tmp_path / "opt.onnx")
    fused = Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    integer = fused["MatMulIntegerToFloat"] + fused["QLinearMatMul"]
    assert integer == 2 * 3 and fused["MatMul"] == 0 and fused["Gemm"] + fused["FusedGemm"] == 3
    unguarded = ort.SessionOptions()
    unguarded.optimized_model_filepath = str(tmp_path / "unguarded.onnx")
    ort.InferenceSession(str(out), unguarded, providers=["CPUExecutionProvider"])
    unguarded_ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "unguarded.onnx")).graph.node)
    assert unguarded_ops["MatMulIntegerToFloat"] + unguarded_ops["QLinearMatMul"] == 3
    assert unguarded_ops["Gemm"] + unguarded_ops["FusedGemm"] == 2 * 3
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["dreamlink.precision"] == "int8_static_minmax" and "dreamlink.spec" in meta
    fp32, int8 = one_step_error(predictor(src), holdout), one_step_error(predictor(out), holdout)
    assert int8 != fp32 and abs(int8 - fp32) < 0.1 * fp32 + 0.01


def test_entropy_and_percentile_choose_their_own_ranges(model, tmp_path: Path) -> None:
    src, train, _ = model
    scales = {m: _scales(quantize_world_model(src, tmp_path / f"{m}.onnx", QuantizeConfig("int8_static", m),
                                              lambda: TransitionReader(train, batch=128, max_batches=6)))
              for m in ("minmax", "entropy", "percentile")}
    assert scales["entropy"] != scales["minmax"] and scales["percentile"] != scales["minmax"]
    # percentile and entropy clip outliers: never a wider range than MinMax's
    for m in ("entropy", "percentile"):
        assert all(scales[m][k] <= scales["minmax"][k] * 1.001 for k in scales["minmax"])


def test_keep_float_leaves_the_named_matmul_in_fp32(model, tmp_path: Path) -> None:
    src, train, _ = model
    last = matmul_nodes(src)[-1]
    out = quantize_world_model(src, tmp_path / "keep.onnx", QuantizeConfig("int8_static", keep_float=(last,)),
                               lambda: TransitionReader(train))
    g = onnx.load(str(out)).graph
    producers = {o: n.op_type for n in g.node for o in n.output}
    kept = next(n for n in g.node if n.name == last)
    assert all(producers.get(i) != "DequantizeLinear" for i in kept.input)
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) == 1 + 3 - 1  # its input is no longer quantized
    # the calibration's fallback keeps a layer of every member in float at once
    assert matmul_groups(src) == [tuple(f"m{e}/mm{layer}" for e in range(3)) for layer in (0, 1)]
    with pytest.raises(ValueError, match="not MatMul nodes"):
        quantize_world_model(src, tmp_path / "bad.onnx", QuantizeConfig("int8_static", keep_float=("nope",)),
                             lambda: TransitionReader(train))


def test_static_without_data_and_bad_sources_are_refused(model, tmp_path: Path) -> None:
    src, _, _ = model
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize_world_model(src, tmp_path / "x.onnx", QuantizeConfig("int8_static"))
    with pytest.raises(ValueError, match="precision"):
        QuantizeConfig("int4")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"data\.csv.*expected \.tlog or \.npz"):
        load_transitions([tmp_path / "data.csv"], CARTPOLE)
    with pytest.raises(FileNotFoundError, match=r"missing\.tlog"):
        load_transitions([tmp_path / "missing.tlog"], CARTPOLE)
    sets = tmp_path / "cartpole.npz"
    cartpole_random_force_transitions(2, 10, seed=1).save(sets)
    with pytest.raises(ValueError, match="the bundle is 'quad'"):
        load_transitions([sets], QUAD)
