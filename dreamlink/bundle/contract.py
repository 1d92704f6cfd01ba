"""The ONNX contract: a world model's or a policy's inputs and outputs checked against the vehicle spec.

A model is opened in ONNX Runtime to be read, never run, and refused with a `BundleError` that names the
input or output and the shape its role expects, so a bundle whose models do not fit its `VehicleSpec`
is never written nor loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dreamlink.bundle.manifest import BundleError
from dreamlink.spec import VehicleSpec


def _dim_ok(dim: Any, expected: int | None) -> bool:
    """A dynamic dim (named or None) matches a dynamic expectation; a fixed one must equal it."""
    if expected is None:
        return not isinstance(dim, int) or dim < 0
    return isinstance(dim, int) and dim == expected


def _fmt_shape(dims: list[int | None]) -> str:
    return "[" + ",".join("B" if d is None else str(d) for d in dims) + "]"


def _check_io(where: str, kind: str, name: str, shape: list[Any], dtype: str, expected: list[int | None]) -> None:
    if dtype != "tensor(float)":
        raise BundleError(f"{where}: {kind} {name!r} has type {dtype}, expected float32 tensor {_fmt_shape(expected)}")
    if len(shape) != len(expected) or not all(_dim_ok(d, e) for d, e in zip(shape, expected, strict=True)):
        raise BundleError(
            f"{where}: {kind} {name!r} has shape {shape}, expected {_fmt_shape(expected)} "
            "(B a dynamic batch dimension); re-export the model against this bundle's vehicle spec"
        )


def check_onnx_contract(path: Path, role: str, spec: VehicleSpec, ensemble_size: int = 1,
                        where: str | None = None) -> None:
    """Open the ONNX file in ONNX Runtime and check its inputs/outputs against the role's contract.

    world_model: state [B,S], action [B,A] -> next_state [B,S] (or [E,B,S]); policy: state [B,S] (and optionally
    target [B,S], the task's reference a few steps ahead) -> action [B,A]. Errors name `where` (default: the
    file's name), so a copy being checked can be reported as the file the user gave.
    """
    import onnxruntime as ort  # deferred: manifest-only tools need not pay for it

    S, A = spec.state_dim, spec.action_dim
    where = where or path.name
    # Loaded to be read, never run: no graph optimisation, no memory arena or pattern, one thread. That
    # makes the check cheap in time and in the memory an onboard process keeps after it.
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises several private exception types
        said = " ".join(str(e).replace(str(path), where).split())
        raise BundleError(f"{where}: ONNX Runtime cannot load it ({said}); re-export the model") from None
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = sess.get_outputs()
    if role == "world_model":
        want_in: dict[str, list[int | None]] = {"state": [None, S], "action": [None, A]}
        want_out: list[int | None] = [None, S] if ensemble_size == 1 else [ensemble_size, None, S]
        out_name = "next_state"
    elif role == "policy":
        want_in, want_out, out_name = {"state": [None, S]}, [None, A], "action"
        if "target" in inputs:
            want_in["target"] = [None, S]
    else:
        return  # planner graphs are checked by the planner that composes them
    for name, expected in want_in.items():
        if name not in inputs:
            raise BundleError(
                f"{where}: missing input {name!r} {_fmt_shape(expected)}; has inputs {sorted(inputs)}"
            )
        _check_io(where, "input", name, list(inputs[name].shape), inputs[name].type, expected)
    extra = set(inputs) - set(want_in)
    if extra:
        raise BundleError(
            f"{where}: unexpected extra inputs {sorted(extra)}; the {role} contract has {sorted(want_in)}"
        )
    match = [o for o in outputs if o.name == out_name]
    if not match:
        raise BundleError(
            f"{where}: missing output {out_name!r} {_fmt_shape(want_out)}; has {[o.name for o in outputs]}"
        )
    _check_io(where, "output", out_name, list(match[0].shape), match[0].type, want_out)
