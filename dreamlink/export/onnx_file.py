"""Bundle ONNX files exported elsewhere (plain `torch.onnx.export`, other tools): `dreamlink bundle`.

A model that keeps the contract runs whoever trained it, so a user's file is bundled as it is:
shapes are read from its graph (S, A and the ensemble size E) and checked against the vehicle file,
then it is run once on a batch of 1 and of 3 within the vehicle's limits (a batch size baked into a
reshape, or NaN weights, are found here rather than in flight). There is no torch module to compare
with, so there is no parity check; the manifest's `training` says where the file came from.

External data: torch.onnx writes weights to a `model.onnx.data` side file by default. Side files are
carried into the bundle as `<role>.onnx.data` (rewritten once, so a world model and a policy that both
came with `model.onnx.data` do not collide), or put inside the `.onnx` with `inline=True`. A file
without side files is bundled byte for byte.

Errors are `BundleError`s that name the file as the user gave it, what is wrong and what to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from dreamlink.bundle import (
    Bundle,
    BundleError,
    check_onnx_contract,
    library_versions,
    onnx_side_files,
    sha256_of,
    write_bundle,
)
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

OPSETS = range(17, 21)  # what torch.onnx writes (TorchScript 17, dynamo 18-20) and the pinned ONNX Runtime runs
_PROTOBUF_LIMIT_BYTES = 2**31  # one protobuf message; larger models must keep external data
_QUANTIZED_OPS = {"DequantizeLinear", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeLinear", "QLinearConv"}


@dataclass(frozen=True)
class UserModel:
    """A user's ONNX file that keeps its role's contract for a vehicle, as read from its graph."""

    role: str  # "world_model" or "policy"
    path: Path  # as the user gave it
    opset: int
    ensemble_size: int  # E of next_state [E,B,S]; 1 for [B,S] and for policies
    precision: str  # fp32, fp16 or int8: what its weights are stored as
    side_files: tuple[str, ...]  # external-data locations, relative to the file's folder


def _dims(value_info: Any) -> list[int | str | None]:
    """A graph input/output's shape: ints for fixed dims, names for symbolic ones, None for unknown."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _fmt(dims: list[int | str | None]) -> str:
    return "[" + ",".join(str(d) if isinstance(d, int) else "B" if d else "?" for d in dims) + "]"


def _default_opset(model: onnx.ModelProto, where: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise BundleError(f"{where} declares no ONNX opset (ai.onnx); re-export it with opset_version=17")
    opset = versions[0]
    if opset not in OPSETS:
        raise BundleError(
            f"{where} uses ONNX opset {opset}; dreamlink bundles opsets {OPSETS[0]}-{OPSETS[-1]}: re-export with "
            f"opset_version={OPSETS[0]}, or convert it (onnx.version_converter.convert_version(model, {OPSETS[0]}))"
        )
    return opset


def _precision(model: onnx.ModelProto) -> str:
    if any(n.op_type in _QUANTIZED_OPS for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def _vector(dims: list[int | str | None], width: int, letter: str, what: str, names: tuple[str, ...],
            spec: VehicleSpec, where: str) -> None:
    """Check one [B, width] input or output; `letter` is S or A, as the vehicle file's vector names it."""
    if len(dims) < 2 or dims[-1] != width:
        found = f"{letter}={dims[-1]}" if dims and isinstance(dims[-1], int) else f"shape {_fmt(dims)}"
        raise BundleError(
            f"{where}: {what} is {_fmt(dims)} ({found}), but vehicle {spec.name!r} has {letter}={width} "
            f"({', '.join(names)}); export the model for this vehicle, or give --vehicle the file it was made for"
        )
    if isinstance(dims[-2], int):
        raise BundleError(
            f"{where}: {what} has a fixed batch of {dims[-2]}; export with a dynamic batch axis "
            "(torch.onnx.export(..., dynamic_shapes=...) or dynamic_axes={name: {0: 'B'}})"
        )


def _names_fix(where: str, role: str, inputs: list[str], outputs: list[str]) -> BundleError:
    want = ("inputs 'state' [B,S] and 'action' [B,A], output 'next_state'" if role == "world_model"
            else "input 'state' [B,S], output 'action' [B,A]")
    ins = "['state', 'action']" if role == "world_model" else "['state']"
    out = "'next_state'" if role == "world_model" else "'action'"
    return BundleError(
        f"{where}: has inputs {inputs} and outputs {outputs}; the {role.replace('_', ' ')} contract is {want}: "
        f"export with input_names={ins}, output_names=[{out}]"
    )


def inspect_onnx(path: str | os.PathLike[str], role: str, spec: VehicleSpec) -> UserModel:
    """Read a user's ONNX file and check it against `role`'s contract for `spec`; raises `BundleError`."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise BundleError(f"{where}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    side = onnx_side_files(path, where)  # refuses empty, text and Git LFS pointer files
    for loc in side:
        if not (path.parent / loc).is_file():
            raise BundleError(f"{where} refers to external data {loc} which is not next to it; copy it along "
                              f"(into {path.parent or '.'}), or export with the weights inside the .onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError) as e:
        raise BundleError(f"{where} is not an ONNX model ({e}); give the .onnx file the exporter wrote") from None
    opset = _default_opset(model, where)
    weights = {t.name for t in model.graph.initializer}
    inputs = {i.name: _dims(i) for i in model.graph.input if i.name not in weights}
    outputs = {o.name: _dims(o) for o in model.graph.output}
    S, A = spec.state_dim, spec.action_dim
    E = 1
    if role == "world_model":
        if not {"state", "action"} <= set(inputs) or "next_state" not in outputs:
            raise _names_fix(where, role, list(inputs), list(outputs))
        _vector(inputs["state"], S, "S", "input 'state'", spec.state_names, spec, where)
        _vector(inputs["action"], A, "A", "input 'action'", spec.action_names, spec, where)
        out = outputs["next_state"]
        if len(out) == 3:
            if not isinstance(out[0], int) or out[0] < 1:
                raise BundleError(f"{where}: output 'next_state' is {_fmt(out)}; an ensemble's member axis E must be "
                                  "fixed (next_state [E,B,S])")
            E = out[0]
        elif len(out) != 2:
            raise BundleError(f"{where}: output 'next_state' is {_fmt(out)}; expected [B,{S}] or [E,B,{S}]")
        _vector(out, S, "S", "output 'next_state'", spec.state_names, spec, where)
    elif role == "policy":
        if "state" not in inputs or "action" not in outputs:
            raise _names_fix(where, role, list(inputs), list(outputs))
        _vector(inputs["state"], S, "S", "input 'state'", spec.state_names, spec, where)
        if "target" in inputs:
            _vector(inputs["target"], S, "S", "input 'target'", spec.state_names, spec, where)
        _vector(outputs["action"], A, "A", "output 'action'", spec.action_names, spec, where)
    else:
        raise BundleError(f"{where}: role {role!r} cannot be bundled from a file; expected world_model or policy")
    check_onnx_contract(path, role, spec, E, where=where)  # what ONNX Runtime makes of it, by the bundle's rules
    _trial_run(path, role, spec, E, where)
    return UserModel(role, path, opset, E, _precision(model), side)


def _trial_run(path: Path, role: str, spec: VehicleSpec, ensemble_size: int, where: str) -> None:
    """Run the model on a batch of 1 and of 3 drawn within the vehicle's limits: right shapes, finite values."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    rng = np.random.default_rng(0)
    S, A = spec.state_dim, spec.action_dim
    out_name = "next_state" if role == "world_model" else "action"
    for B in (1, 3):
        draws = {"state": (spec.state_low, spec.state_high), "action": (spec.action_low, spec.action_high),
                 "target": (spec.state_low, spec.state_high)}
        feeds = {k: rng.uniform(lo, hi, (B, lo.size)).astype(np.float32) for k, (lo, hi) in draws.items()
                 if k in names}
        try:
            out = sess.run([out_name], feeds)[0]
        except Exception as e:  # ORT raises several private exception types
            raise BundleError(f"{where}: running it on a batch of {B} failed ({' '.join(str(e).split())}); the "
                              "batch axis must be dynamic all through the graph (no size fixed in a Reshape)") from None
        want = (B, A) if role == "policy" else (B, S) if ensemble_size == 1 else (ensemble_size, B, S)
        if tuple(out.shape) != want:
            raise BundleError(f"{where}: on a batch of {B} its {out_name} is {list(out.shape)}, expected {list(want)}; "
                              "the batch axis must be dynamic all through the graph")
        if not np.all(np.isfinite(out)):
            raise BundleError(f"{where}: its {out_name} is not finite (NaN or inf) for inputs within vehicle "
                              f"{spec.name!r}'s limits; check the weights and the normalisation inside the graph")


def _stage(model: UserModel, folder: Path, inline: bool) -> Path:
    """The file to bundle: the user's own when it has no side files, else one rewritten with its external data
    in `<role>.onnx.data` (or inside, `inline`)."""
    if not model.side_files:
        return model.path
    where = str(model.path)
    proto = onnx.load(str(model.path), load_external_data=True)
    out = folder / f"{model.role}.onnx"
    if inline:
        if proto.ByteSize() >= _PROTOBUF_LIMIT_BYTES:
            raise BundleError(f"{where}: with its external data it is over 2 GB, more than one ONNX file can hold; "
                              "bundle it without --inline")
        onnx.save_model(proto, str(out))
    else:
        # Marked by hand, not with save_model(save_as_external_data=True): onnx checks that location against the
        # current directory, and refuses when the user runs this beside a side file of that name.
        location = f"{model.role}.onnx.data"
        for tensor in external_data_helper._get_all_tensors(proto):
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= 1024:
                external_data_helper.set_external_data(tensor, location)
        onnx.save_model(proto, str(out))
    return out


def bundle_onnx(
    out_dir: str | os.PathLike[str],
    spec: VehicleSpec,
    world_model: str | os.PathLike[str] | None = None,
    policy: str | os.PathLike[str] | None = None,
    *,
    inline: bool = False,
) -> Bundle:
    """Bundle a world model and/or a policy exported anywhere for `spec`; returns the written, verified bundle.

    The manifest's `training` records `{"source": "user ONNX", "onnx": file name, "sha256": of the file as
    given}` (the world model's, else the policy's; with both, the policy's as `policy_onnx`/`policy_sha256`).
    Planner settings from the vehicle file go into `calibration` (`planner`, and `horizon` if it sets one).
    """
    if world_model is None and policy is None:
        raise BundleError("nothing to bundle: give a world model .onnx, a policy .onnx (--policy), or both")
    models = [inspect_onnx(p, role, spec) for role, p in (("world_model", world_model), ("policy", policy))
              if p is not None]
    first = models[0]
    training: dict[str, Any] = {"source": "user ONNX", "onnx": first.path.name, "sha256": sha256_of(first.path)}
    if len(models) == 2:
        training.update(policy_onnx=models[1].path.name, policy_sha256=sha256_of(models[1].path))
    planner = spec.planner_settings()
    calibration: dict[str, Any] = {}
    if planner:
        calibration["planner"] = planner
        if "horizon" in planner:
            calibration["horizon"] = int(planner["horizon"])
    with tempfile.TemporaryDirectory(prefix="dreamlink-onnx-") as tmp:
        files = {
            m.role: (_stage(m, Path(tmp), inline),
                     {"precision": m.precision, "opset": m.opset, "ensemble_size": m.ensemble_size})
            for m in models
        }
        bundle = write_bundle(out_dir, spec, files, training=training, calibration=calibration,
                              versions=library_versions())
    log.info("bundled %s for vehicle %s into %s", ", ".join(str(m.path) for m in models), spec.name, bundle.root)
    return bundle
