"""From a composed planner graph to files onboard: ONNX Runtime's offline optimisation, the world model's
dynamic int8 quantization, and packing the planner into a bundle with the session settings it was measured with.

Composition itself (any contract-keeping world model -> one planner graph) is `planner_graph`; this module
only turns its output into what a device loads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import ModelProto

from dreamlink.bundle import Bundle, library_versions, load_bundle, write_bundle
from dreamlink.export.planner_graph import PlannerGraphConfig, inspect_world_model, write_planner

# ---------------------------------------------------------------------------------------------
# Files: optimise offline, quantize
# ---------------------------------------------------------------------------------------------


def optimize_offline(src: str | os.PathLike[str], dst: str | os.PathLike[str], level: str = "extended") -> Path:
    """Let ONNX Runtime optimise `src` once and save the result (`SessionOptions.optimized_model_filepath`).

    "extended" fuses what ORT fuses on CPU (e.g. MatMul+Add, SiLU patterns) into contrib ops that any
    CPU build of ORT runs; "all" adds layout transforms tied to this machine's CPU, so a file meant
    for another device should stay at "extended". A session on the result can skip optimisation
    at start (`graph_optimization="disable"`), which shortens start-to-first-command.
    """
    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if level not in levels:
        raise ValueError(f"optimize_offline level: expected one of {sorted(levels)}, got {level!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"],
                         disabled_optimizers=keep_unfused(onnx.load(str(src), load_external_data=False)))
    return Path(dst)


def keep_unfused(model: ModelProto) -> list[str]:
    """ORT fusions to leave out for `model`: MatMulAddFusion when a MatMul reads dequantized weights.

    ORT fuses MatMul + bias Add into Gemm before its QDQ pass; a Gemm fed by DequantizeLinear then
    runs in float on weights dequantized every run, and the int8 speed is lost. Without that
    fusion the DQ -> MatMul pairs become MatMulIntegerToFloat as intended (tests/test_quantize.py).
    """
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    qdq_matmul = any(n.op_type == "MatMul" and any(i in dequantized for i in n.input) for n in model.graph.node)
    return ["MatMulAddFusion"] if qdq_matmul else []


def quantize_world_model_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Dynamic int8 quantization of the world model's MatMul weights (activations quantized per run).

    Done on the world model before composing, so the planner graph around it is the same code
    path as fp32 and the weights are quantized once, not once per unrolled step.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    model = onnx.load(str(dst))
    src_meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    have = {p.key for p in model.metadata_props}
    for key, value in src_meta.items():
        if key not in have:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))
    return Path(dst)


# ---------------------------------------------------------------------------------------------
# Bundles with a planner graph
# ---------------------------------------------------------------------------------------------

# The session settings a planner bundle records (manifest `calibration.session`), and why:
# one intra-op thread (the other core belongs to the MAVLink receive thread and, in SITL, the
# simulator; on a 2-core box a second planner thread makes every step hostage to whatever else
# runs, see docs/performance.md); no spinning (with one thread there is no pool to spin; with two,
# spinning workers keep a core busy after each run, which measured here slowed the next thing on
# that core by up to 2x); and no optimisation at load, because the file is already ORT-optimised
# offline (`optimize_offline`, "extended": contrib fusions that any CPU build runs, no CPU-specific
# layouts), which shortens start-up.
DEFAULT_SESSION = {
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "allow_spinning": False,
    "graph_optimization": "disable",
    "optimized_offline": "extended",
    "mem_arena": True,  # SessionConfig's defaults, written out: a bundle says how it was measured
    "mem_pattern": False,
}


def pack_planner_bundle(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PlannerGraphConfig,
    noise_sigma: float = 0.3,
    temperature: float = 1.0,
    precision: str = "fp32",
    session: dict[str, object] | None = None,
) -> Bundle:
    """A new bundle at `out_dir`: `src`'s files plus a fused planner graph (role "planner").

    `precision="int8"` composes the planner around a dynamically quantized copy of the world model
    (the bundle's `world_model` file itself stays fp32). The planner settings go into
    `calibration.planner` and the session settings into `calibration.session`, so
    `FusedPlanner.from_bundle` runs exactly what was packed.
    """
    if precision not in ("fp32", "int8"):
        raise ValueError(f"pack_planner_bundle precision: expected 'fp32' or 'int8', got {precision!r}")
    bundle = load_bundle(src)
    spec = bundle.spec
    sess = {**DEFAULT_SESSION, **(session or {})}
    with tempfile.TemporaryDirectory(prefix="dreamlink-planner-") as tmp:
        wm = bundle.path_of("world_model")
        if precision == "int8":
            wm = quantize_world_model_int8(wm, Path(tmp) / "world_model_int8.onnx")
        plain = write_planner(wm, spec, config, Path(tmp) / "planner_plain.onnx")
        planner = optimize_offline(plain, Path(tmp) / "planner.onnx", str(sess["optimized_offline"]))
        info = inspect_world_model(onnx.load(str(bundle.path_of("world_model"))))
        files = {
            role: (bundle.path_of(role), f.to_dict())
            for role, f in bundle.manifest.files.items() if role != "planner"
        }
        files["planner"] = (planner, {"precision": precision, "opset": info.opset, "ensemble_size": info.ensemble_size})
        calibration = {
            **bundle.manifest.calibration,
            "planner": {
                **dict(bundle.manifest.calibration.get("planner", {})),
                "samples": config.samples, "horizon": config.horizon, "noise_sigma": noise_sigma,
                "temperature": temperature, "method": config.method,
                "elites": config.elite_count if config.method == "cem" else 0,
                "rollout": config.rollout, "chunk": config.chunk,
            },
            "session": {**sess, "onnxruntime": ort.__version__},
        }
        return write_bundle(out_dir, spec, files, training=bundle.manifest.training, calibration=calibration,
                            versions={**bundle.manifest.versions, **library_versions()})
