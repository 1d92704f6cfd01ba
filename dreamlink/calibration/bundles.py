"""A bundle whose planner graph is composed around a world model at a chosen precision.

Like `dreamlink.export.planner_graph_pack.pack_planner_bundle`, but the world model is quantized by
`dreamlink.calibration.quantize` first (any precision, including int8 static with its calibration).
The bundle's `world_model` stays fp32 (the bundle format's roles are world_model, policy, planner);
the quantized world model is kept beside the calibration report.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from dreamlink.bundle import Bundle, library_versions, load_bundle, write_bundle
from dreamlink.export.planner_graph import PlannerGraphConfig, inspect_world_model, write_planner
from dreamlink.export.planner_graph_pack import DEFAULT_SESSION, optimize_offline

FILE_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8_dynamic": "int8", "int8_static": "int8"}


def file_precision(name: str) -> str:
    """The bundle file's precision field (fp32/fp16/int8) for a precision name like `int8_static_minmax`."""
    for prefix, value in FILE_PRECISION.items():
        if name == prefix or name.startswith(prefix + "_"):
            return value
    raise ValueError(f"unknown precision {name!r}; expected one of {sorted(FILE_PRECISION)} (with a suffix)")


def pack_precision_bundle(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    world_model: str | os.PathLike[str],
    precision: str,
    planner: Mapping[str, Any],
    calibration: Mapping[str, Any] | None = None,
) -> Bundle:
    """A new bundle at `out_dir`: `src`'s files and a planner graph around `world_model` (the quantized
    copy). `planner` holds samples, horizon, noise_sigma, temperature (and noise_smoothing);
    `calibration` entries are merged into the manifest's calibration section."""
    bundle = load_bundle(src)
    spec = bundle.spec
    cfg = PlannerGraphConfig(int(planner["samples"]), int(planner["horizon"]))
    info = inspect_world_model(onnx.load(str(world_model)), str(world_model))
    with tempfile.TemporaryDirectory(prefix="dreamlink-calib-pack-") as tmp:
        plain = write_planner(world_model, spec, cfg, Path(tmp) / "planner_plain.onnx")
        graph = optimize_offline(plain, Path(tmp) / "planner.onnx", str(DEFAULT_SESSION["optimized_offline"]))
        entry = {"precision": file_precision(precision), "opset": info.opset, "ensemble_size": info.ensemble_size}
        files = {role: (bundle.path_of(role), f.to_dict()) for role, f in bundle.manifest.files.items()
                 if role != "planner"}
        files["planner"] = (graph, entry)
        cal = {
            **bundle.manifest.calibration,
            **dict(calibration or {}),
            "planner": {**dict(bundle.manifest.calibration.get("planner", {})), **dict(planner),
                        "method": "mppi", "rollout": cfg.rollout, "chunk": cfg.chunk, "precision": precision},
            "session": {**DEFAULT_SESSION, "onnxruntime": ort.__version__},
        }
        return write_bundle(out_dir, spec, files, training=bundle.manifest.training, calibration=cal,
                            versions={**bundle.manifest.versions, **library_versions()})
