"""World-model precisions: fp32, fp16, int8 dynamic, int8 static (QDQ) with a calibration method.

Quantization is applied to the world model, before the planner graph is composed around it, so the
weights are quantized once and the planner graph is the same code path at every precision.

Choices, measured on the 2-core EPYC (Zen 4) box, ORT 1.32, quad ensemble 5 x 256 x 2, planner
K=512, H=15, one thread (see the calibration report for the current figures):

- Static int8 keeps only the MatMul *inputs* quantized. ORT's QDQ quantizer also puts a Q/DQ pair on
  each MatMul output; ORT then fuses Q -> QLinearMatMul -> DQ, which requantizes every layer's output
  only to dequantize it for the SiLU that follows (1.7x faster than fp32). Without the output pair ORT
  fuses DQ(x), DQ(W) -> MatMul into MatMulIntegerToFloat, which writes float directly (2.1x) and
  rounds each layer's output once instead of twice.
- Activations uint8 (asymmetric), weights int8 (symmetric): the u8s8 kernels are MLAS's main int8 path
  on x86 and ARM, and SiLU outputs are lopsided (>= -0.28), which an asymmetric range covers better.
- Per-channel weights: the ensemble keeps its weights as one [E, in, out] tensor, batched MatMul. ORT
  quantizes those per channel along one axis and then does not fuse the result into an integer MatMul
  (measured 83 ms against 77 ms fp32), so per-channel is offered but is not the default.
- fp16: ONNX Runtime's CPU execution provider has no fp16 MatMul kernel on x86, so a converted model
  either fails to load or runs through inserted casts; `fp16_support()` measures which, and the
  calibration reports it rather than assuming.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8_static")
METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantizeConfig:
    """One way to store the world model. `keep_float`: MatMul node names left in fp32 (int8 static)."""

    precision: str = "fp32"
    method: str = "minmax"  # int8 static: how activation ranges are read from the calibration data
    per_channel: bool = False
    keep_float: tuple[str, ...] = ()
    percentile: float = 99.99  # "percentile" method: the share of activations the range must cover

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"QuantizeConfig.precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.method not in METHODS:
            raise ValueError(f"QuantizeConfig.method: expected one of {METHODS}, got {self.method!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"QuantizeConfig.percentile: expected a percentage in (50, 100], got {self.percentile}")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    @property
    def name(self) -> str:
        """A short label for tables and file names, e.g. `int8_static_entropy_pc_f1`."""
        if self.precision != "int8_static":
            return self.precision
        name = f"int8_static_{self.method}"
        if self.per_channel:
            name += "_pc"
        if self.keep_float:
            name += f"_f{len(self.keep_float)}"
        return name

    def to_dict(self) -> dict[str, object]:
        return {"precision": self.precision, "method": self.method, "per_channel": self.per_channel,
                "keep_float": list(self.keep_float), "name": self.name}


def matmul_nodes(world_model: str | os.PathLike[str]) -> list[str]:
    """Names of the world model's MatMul nodes, in graph order: what int8 quantizes, and so the candidates
    to keep in float. (Gemm nodes are not quantized: in dreamlink's export that is the output layer.)"""
    g = onnx.load(str(world_model), load_external_data=False).graph
    return [n.name for n in g.node if n.op_type == "MatMul"]


def matmul_groups(world_model: str | os.PathLike[str]) -> list[tuple[str, ...]]:
    """The MatMuls as units to keep in float together: one layer of every member in dreamlink's per-member
    export (nodes `m<e>/<layer>`), otherwise each node alone; in graph order of first appearance."""
    groups: dict[str, list[str]] = {}
    for name in matmul_nodes(world_model):
        match = re.fullmatch(r"m\d+/(.+)", name)
        groups.setdefault(match.group(1) if match else name, []).append(name)
    return [tuple(names) for names in groups.values()]


def quantize_world_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    config: QuantizeConfig,
    reader_factory: Callable[[], object] | None = None,
) -> Path:
    """Write `src` at `config`'s precision to `dst`; keeps the contract and the `dreamlink.*` metadata.

    int8 static needs `reader_factory`: a callable returning a fresh `CalibrationDataReader`
    (see `dreamlink.calibration.reader`)."""
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    if config.precision == "fp32":
        onnx.save(onnx.load(str(src)), str(out))
    elif config.precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        _sort_nodes(model.graph)  # the converter appends its input casts after their consumers
        onnx.save(model, str(out))
    elif config.precision == "int8_dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=config.per_channel)
    else:
        if reader_factory is None:
            raise ValueError("quantize_world_model: int8_static needs calibration data (reader_factory)")
        _quantize_static(Path(src), out, config, reader_factory)
    _copy_metadata(Path(src), out, config)
    log.info("world model %s -> %s (%s)", src, out, config.name)
    return out


def _quantize_static(src: Path, dst: Path, config: QuantizeConfig, reader_factory: Callable[[], object]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    unknown = set(config.keep_float) - set(matmul_nodes(src))
    if unknown:
        raise ValueError(f"QuantizeConfig.keep_float: {sorted(unknown)} are not MatMul nodes of {src} "
                         f"(it has {matmul_nodes(src)})")
    extra: dict[str, object] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if config.method == "percentile":
        extra["CalibPercentile"] = config.percentile
    with tempfile.TemporaryDirectory(prefix="dreamlink-quant-") as tmp:
        if config.method == "entropy":
            extra["TensorQuantOverrides"] = _entropy_ranges(src, Path(tmp), reader_factory)
        raw = Path(tmp) / "qdq.onnx"
        quantize_static(
            str(src), str(raw), reader_factory(),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
            per_channel=config.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=list(config.keep_float),
            calibrate_method=methods["minmax" if config.method == "entropy" else config.method],
            extra_options=extra,
        )
        model = onnx.load(str(raw))
    dropped = strip_output_qdq(model)
    log.debug("int8 static: dropped %d output Q/DQ pairs", dropped)
    onnx.save(model, str(dst))


def _sort_nodes(g: onnx.GraphProto) -> None:
    """Topological order, stable otherwise (the planner composer copies nodes in file order)."""
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ValueError(f"the graph has a cycle or a missing input at {[n.name for n in rest][:3]}")
        for n in done:
            ordered.append(n)
            ready.update(n.output)
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


def _entropy_ranges(src: Path, tmp: Path, reader_factory: Callable[[], object]) -> dict[str, list[dict[str, Any]]]:
    """Activation ranges by ORT's entropy (KL) calibrator, as `TensorQuantOverrides`.

    `quantize_static` runs the entropy calibrator with 128 histogram bins and 128 quantized bins, so its
    threshold search has a single candidate, the full range: measured here, its scales equal MinMax's to the
    last bit. Run directly with 1024 bins the search has something to choose from."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(str(src), ["MatMul"], augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": 1024, "num_quantized_bins": 128})
    calibrator.collect_data(reader_factory())  # type: ignore[arg-type]
    ranges = calibrator.compute_data()
    return {name: [{"rmin": np.asarray(r.range_value[0], np.float32), "rmax": np.asarray(r.range_value[1], np.float32)}]
            for name, r in ranges.items()}


def strip_output_qdq(model: onnx.ModelProto) -> int:
    """Remove the Q -> DQ pair ORT's quantizer puts after each MatMul output (see the module docstring).

    The MatMul then keeps DQ on both inputs and a float output, which ORT fuses to MatMulIntegerToFloat.
    Returns how many pairs were removed."""
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    drop: set[int] = set()
    for n in g.node:
        if n.op_type != "MatMul":
            continue
        out = n.output[0]
        after = consumers.get(out, [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or out in graph_outputs:
            continue
        q = after[0]
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or d.output[0] in graph_outputs for d in dqs):
            continue
        drop.add(id(q))
        for d in dqs:
            drop.add(id(d))
            for c in consumers.get(d.output[0], []):
                for k, name in enumerate(c.input):
                    if name == d.output[0]:
                        c.input[k] = out
    kept = [n for n in g.node if id(n) not in drop]
    removed = (len(g.node) - len(kept)) // 2
    del g.node[:]
    g.node.extend(kept)
    return removed


def _copy_metadata(src: Path, dst: Path, config: QuantizeConfig) -> None:
    model = onnx.load(str(dst))
    have = {p.key for p in model.metadata_props}
    for p in onnx.load(str(src), load_external_data=False).metadata_props:
        if p.key not in have:
            model.metadata_props.add(key=p.key, value=p.value)
    for p in model.metadata_props:
        if p.key == "dreamlink.precision":
            p.value = config.name
            break
    else:
        model.metadata_props.add(key="dreamlink.precision", value=config.name)
    onnx.save(model, str(dst))


@dataclass(frozen=True)
class Fp16Support:
    supported: bool  # loads and runs on the CPU execution provider
    native: bool  # MatMuls run in fp16 (no fp32 casts inserted around them)
    detail: str


def fp16_support(fp16_model: str | os.PathLike[str], state_dim: int, action_dim: int) -> Fp16Support:
    """Measure whether this ONNX Runtime's CPU execution provider runs `fp16_model`, and how."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="dreamlink-fp16-") as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        try:
            sess = ort.InferenceSession(str(fp16_model), sess_options=opts, providers=["CPUExecutionProvider"])
            sess.run(None, {"state": np.zeros((2, state_dim), np.float32),
                            "action": np.zeros((2, action_dim), np.float32)})
        except Exception as e:  # the finding itself: this EP cannot run the fp16 graph
            return Fp16Support(False, False, f"CPU execution provider refused the fp16 model: {type(e).__name__}: "
                                             f"{str(e).splitlines()[0][:200]}")
        optimized = onnx.load(opts.optimized_model_filepath)
    casts = sum(n.op_type == "Cast" for n in optimized.graph.node)
    fp16_mm = _fp16_matmuls(optimized)
    native = fp16_mm > 0
    return Fp16Support(True, native, f"runs on the CPU execution provider; {fp16_mm} MatMuls in fp16, {casts} Cast "
                                     f"nodes after ORT's optimisation" + ("" if native else
                                                                          " (computed in fp32 via casts)"))


def _fp16_matmuls(model: onnx.ModelProto) -> int:
    fp16_values = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    fp16_values |= {v.name for v in model.graph.value_info
                    if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    return sum(n.op_type in ("MatMul", "FusedMatMul", "Gemm") and any(i in fp16_values for i in n.input)
               for n in model.graph.node)


def precision_files(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    configs: Sequence[QuantizeConfig],
    reader_factory: Callable[[], object] | None,
) -> dict[str, Path]:
    """Every config in `configs` written under `out_dir` as `world_model_<name>.onnx`, by name."""
    return {c.name: quantize_world_model(src, Path(out_dir) / f"world_model_{c.name}.onnx", c, reader_factory)
            for c in configs}
