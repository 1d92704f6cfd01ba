"""Pack a bundle from torch modules: export, check parity, write through `dreamlink.bundle`.

The parity check is a gate, not a report: a graph that disagrees with its torch module is
never written into a bundle. Its figures go into the manifest's `training` section
(`world_model_parity`, `policy_parity`) beside the caller's training results.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from dreamlink.bundle import Bundle, library_versions, load_bundle, write_bundle
from dreamlink.export.onnx_export import (
    ExportError,
    ParityResult,
    check_parity,
    export_policy,
    export_world_model,
    read_metadata,
)
from dreamlink.learning.transitions import json_default
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

EXPORTER = "torch.onnx TorchScript (dynamo=False)"


def pack_bundle(
    out_dir: str | os.PathLike[str],
    spec: VehicleSpec,
    world_model: nn.Module,
    training: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    policy: nn.Module | None = None,
    opset: int = 17,
) -> tuple[Bundle, ParityResult]:
    """Export `world_model` (and `policy`), refuse on a parity failure, write and verify the bundle at `out_dir`.

    Returns the loaded bundle and the world model's parity figures. Raises `ExportError` if a graph
    disagrees with torch, `dreamlink.bundle.BundleError` if the written bundle does not load back.
    """
    with tempfile.TemporaryDirectory(prefix="dreamlink-export-") as tmp:
        wm_path = export_world_model(world_model, spec, Path(tmp) / "world_model.onnx", opset=opset)
        wm_meta = read_metadata(wm_path)
        ensemble_size = int(wm_meta["dreamlink.ensemble_size"])
        wm_parity = _gate(world_model, wm_path, spec, "world model")
        files = {"world_model": (wm_path, {"precision": "fp32", "opset": opset, "ensemble_size": ensemble_size})}
        sections: dict[str, Any] = {"world_model_parity": asdict(wm_parity)}
        if policy is not None:
            pol_path = export_policy(policy, spec, Path(tmp) / "policy.onnx", opset=opset)
            sections["policy_parity"] = asdict(_gate(policy, pol_path, spec, "policy"))
            files["policy"] = (pol_path, {"precision": "fp32", "opset": opset, "ensemble_size": 1})
        bundle = write_bundle(
            out_dir,
            spec,
            files,
            training={**_jsonable(dict(training or {}), "training"),
                      "exporter": wm_meta.get("dreamlink.exporter", EXPORTER), **sections},
            calibration=_jsonable(dict(calibration or {}), "calibration"),
            versions=library_versions(),
        )
    log.info("packed bundle %s (ensemble %d, parity max abs err %.2e)", bundle.root, ensemble_size,
             wm_parity.max_abs_err)
    return bundle, wm_parity


def add_policy(bundle: Bundle, policy: nn.Module, training: Mapping[str, Any] | None = None, opset: int = 17) -> Bundle:
    """Export `policy`, gate it on parity, and rewrite `bundle` with it (its other files and manifest
    sections kept). The new folder is written beside the old and swapped in, so a failure leaves the
    old bundle as it was."""
    root = bundle.root
    with tempfile.TemporaryDirectory(prefix="dreamlink-export-") as tmp:
        pol_path = export_policy(policy, bundle.spec, Path(tmp) / "policy.onnx", opset=opset)
        parity = _gate(policy, pol_path, bundle.spec, "policy")
        files = {role: (bundle.path_of(role), {"precision": f.precision, "opset": f.opset,
                                               "ensemble_size": f.ensemble_size})
                 for role, f in bundle.manifest.files.items() if role != "policy"}
        files["policy"] = (pol_path, {"precision": "fp32", "opset": opset, "ensemble_size": 1})
        m = bundle.manifest
        staged = root.parent / f".{root.name}-with-policy"
        if staged.exists():
            shutil.rmtree(staged)
        write_bundle(staged, m.spec, files,
                     training={**m.training, **_jsonable(dict(training or {}), "training"), "policy_parity":
                               asdict(parity)},
                     calibration=m.calibration, versions={**m.versions, **library_versions()})
    old = root.parent / f".{root.name}-old"
    if old.exists():
        shutil.rmtree(old)  # left by an interrupted swap
    os.replace(root, old)
    os.replace(staged, root)
    shutil.rmtree(old)
    log.info("added a distilled policy to %s (parity max abs err %.2e)", root, parity.max_abs_err)
    return load_bundle(root)


def _gate(module: nn.Module, path: Path, spec: VehicleSpec, what: str) -> ParityResult:
    result = check_parity(module, path, spec)
    if not result.ok:
        raise ExportError(
            f"{path.name}: {what} ONNX output disagrees with torch (max abs err {result.max_abs_err:.3g}, "
            f"max rel err {result.max_rel_err:.3g}; tolerance atol {result.atol:g} + rtol {result.rtol:g} x |torch| "
            f"over {result.n_samples} samples); not packing. Check the module for ops that trace badly "
            "(data-dependent control flow, in-place updates of buffers) or export with dynamo=True"
        )
    return result


def _jsonable(section: dict[str, Any], name: str) -> dict[str, Any]:
    """numpy scalars/arrays and Paths become JSON values; anything else unserialisable is refused by name."""
    try:
        out: dict[str, Any] = json.loads(json.dumps(section, default=json_default))
    except (TypeError, ValueError) as e:
        raise ExportError(f"manifest section {name!r}: {e}") from None
    return out
