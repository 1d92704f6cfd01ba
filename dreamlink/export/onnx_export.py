"""torch -> ONNX for world models and policies, and the parity check against torch.

Exporter choice: the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`) by default.
Measured on torch 2.13 with the 5 x 128 x 2 ensemble: both exporters give the same clean
graph (Sub/Div normalisation, Concat, three broadcast MatMul+Add, Sigmoid*Mul for SiLU) with
a dynamic batch axis, and ONNX Runtime runs both equally fast (~35 us at B=1). The
TorchScript path exports in ~0.06 s instead of ~3 s, emits opset 17 natively (the dynamo
path only implements opset >= 18 and down-converts, which "may not be successful"), embeds
the weights in the one `.onnx` file a bundle carries (dynamo writes a `.onnx.data` side
file unless told not to), and prints nothing. It is deprecated upstream but present in the
pinned torch 2.13. `dynamo=True` stays available for user modules the tracer cannot follow
(data-dependent Python control flow); it is forced to embed weights.

Contract (what `dreamlink.bundle.check_onnx_contract` checks): world model inputs
`state [B,S]`, `action [B,A]` float32 -> `next_state [B,S]` or `[E,B,S]`; policy
`state [B,S]` -> `action [B,A]`. The spec (JSON), state/action names and units and the
ensemble size ride along in `metadata_props` (keys `dreamlink.*`), so the file describes
itself even outside a bundle.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import dreamlink
from dreamlink.export.ensemble_onnx import write_ensemble
from dreamlink.learning.world_model import EnsembleWorldModel
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

_TRIAL_BATCH = 3  # odd and small, so a trial output's batch axis is not confused with E


class ExportError(ValueError):
    """A module cannot be exported under the contract, or its ONNX graph disagrees with torch.

    A ValueError: what the user gave does not fit, so the CLI says so in one line instead of a traceback.
    """


@dataclass(frozen=True)
class ParityResult:
    """torch vs ONNX Runtime on the same random inputs. `max_rel_err` divides by max(|torch|, atol)."""

    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    n_samples: int
    ok: bool  # every element within atol + rtol * |torch| (numpy.allclose semantics), all finite


class _WorldModelIO(nn.Module):
    """Pins the exported signature: (state, action) -> next_state, a lone ensemble member squeezed to [B,S]."""

    def __init__(self, inner: nn.Module, squeeze_member: bool) -> None:
        super().__init__()
        self.inner = inner
        self.squeeze_member = squeeze_member

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out = self.inner(state, action)
        return out.squeeze(0) if self.squeeze_member else out


class _PolicyIO(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.inner(*inputs)


def policy_takes_target(module: nn.Module, spec: VehicleSpec) -> bool:
    """Whether `module` is a tracking policy, forward(state, target), rather than forward(state)."""
    s = torch.zeros(2, spec.state_dim)
    try:
        with torch.no_grad():
            module(s, s)
        return True
    except TypeError:
        return False


def random_inputs(spec: VehicleSpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """States and actions drawn uniformly within the spec's limits: [n,S], [n,A] float32."""
    rng = np.random.default_rng(seed)
    state = rng.uniform(spec.state_low, spec.state_high, size=(n, spec.state_dim)).astype(np.float32)
    action = rng.uniform(spec.action_low, spec.action_high, size=(n, spec.action_dim)).astype(np.float32)
    return state, action


def _check_float32(module: nn.Module) -> None:
    for name, p in [*module.named_parameters(), *module.named_buffers()]:
        if p.is_floating_point() and p.dtype != torch.float32:
            raise ExportError(f"parameter {name!r} is {p.dtype}; the contract is float32, call module.float() first")


def _defined_in(module: nn.Module) -> str:
    """`Name (file.py)`: where the module's forward is written, which is the file a user passed to --module."""
    cls = type(module)
    file = getattr(getattr(cls.forward, "__code__", None), "co_filename", "")
    in_torch = Path(torch.__file__).parent in Path(file).parents  # nn.Sequential and friends: the name says it
    return f"{cls.__name__} ({file})" if file and not in_torch else cls.__name__


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _trial_world_model(module: nn.Module, spec: VehicleSpec) -> tuple[int, bool]:
    """Run the module once: (ensemble size E, whether the output has the member axis [E,B,S])."""
    S, A, B = spec.state_dim, spec.action_dim, _TRIAL_BATCH
    s, a = (torch.from_numpy(x) for x in random_inputs(spec, B, seed=0))
    contract = (f"vehicle {spec.name!r} needs forward(state [B,{S}], action [B,{A}]) -> [B,{S}] or [E,B,{S}] "
                f"(state {', '.join(spec.state_names)}; action {', '.join(spec.action_names)})")
    try:
        with torch.no_grad():
            out = module(s, a)
    except Exception as e:
        raise ExportError(
            f"world model {_defined_in(module)}: forward failed on state [{B},{S}], action [{B},{A}] with "
            f"{_one_line(e)}; {contract}; fix the module or give the vehicle it was written for"
        ) from e
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"world model {_defined_in(module)}: forward returned {type(out).__name__}, expected one "
                          f"tensor; {contract}")
    shape = tuple(out.shape)
    if len(shape) == 2 and shape == (B, S):
        return 1, False
    if len(shape) == 3 and shape[1:] == (B, S):
        return int(shape[0]), True
    raise ExportError(f"world model {_defined_in(module)}: forward returned shape {list(shape)} for batch {B}; "
                      f"{contract}")


def _metadata(spec: VehicleSpec, role: str, ensemble_size: int) -> dict[str, str]:
    return {
        "dreamlink.role": role,
        "dreamlink.spec": json.dumps(spec.to_dict()),
        "dreamlink.state_names": json.dumps(list(spec.state_names)),
        "dreamlink.state_units": json.dumps([c.unit for c in spec.state]),
        "dreamlink.action_names": json.dumps(list(spec.action_names)),
        "dreamlink.action_units": json.dumps([c.unit for c in spec.action]),
        "dreamlink.ensemble_size": str(ensemble_size),
        "dreamlink.version": dreamlink.__version__,
    }


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `metadata_props` of an ONNX file as a dict (the dreamlink.* keys describe the model)."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _export(
    wrapper: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_name: str,
    output_batch_axis: int,
    opset: int,
    dynamo: bool,
    metadata: dict[str, str],
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper.eval()
    captured = io.StringIO()
    # The dynamo exporter prints progress to stdout; library code logs instead.
    quiet = contextlib.redirect_stdout(captured) if dynamo else contextlib.nullcontext()
    try:
        with torch.no_grad(), warnings.catch_warnings(), quiet:
            # Our choice of the TorchScript exporter is deliberate (module docstring); its deprecation notices
            # would only repeat that on every export.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\..*")
            if dynamo:
                batch = torch.export.Dim("B")
                torch.onnx.export(
                    wrapper, args, str(path), input_names=input_names, output_names=[output_name],
                    opset_version=opset, dynamo=True, external_data=False,
                    dynamic_shapes=tuple({0: batch} for _ in args),
                )
            else:
                axes = {name: {0: "B"} for name in input_names}
                axes[output_name] = {output_batch_axis: "B"}
                torch.onnx.export(
                    wrapper, args, str(path), input_names=input_names, output_names=[output_name],
                    opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True,
                )
    except Exception as e:
        raise ExportError(f"{path.name}: torch.onnx.export failed ({type(e).__name__}: {e})") from e
    finally:
        if captured.getvalue().strip():
            log.debug("torch.onnx.export said: %s", captured.getvalue().strip())
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path.name}: onnx.checker rejected the exported graph: {e}") from None
    onnx.save(model, str(path))
    log.info("exported %s (%d bytes, opset %d)", path, path.stat().st_size, opset)
    return path


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Export and compare in inference mode (dropout off, batch-norm frozen), then restore the caller's mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def export_world_model(
    module: nn.Module,
    spec: VehicleSpec,
    path: str | os.PathLike[str],
    opset: int = 17,
    ensemble_size: int | None = None,
    *,
    dynamo: bool = False,
    literal: bool = False,
) -> Path:
    """Export any module with forward(state [B,S], action [B,A]) -> [B,S] or [E,B,S] to ONNX at `path`.

    E is found from a trial forward pass (checked against `ensemble_size` if given); an output
    [1,B,S] is exported as [B,S] with ensemble size 1, the bundle's contract for one model.
    dreamlink's own `EnsembleWorldModel` is written by `export.ensemble_onnx` in the layout ORT's
    CPU kernels run fastest, unless `literal` (or `dynamo`) asks for torch.onnx's literal graph.
    """
    _check_float32(module)
    with _eval_mode(module):
        E, member_axis = _trial_world_model(module, spec)
        if ensemble_size is not None and ensemble_size != E:
            raise ExportError(f"ensemble_size={ensemble_size} given, but the module returns {E} member(s)")
        if isinstance(module, EnsembleWorldModel) and not (literal or dynamo):
            log.info("writing %s in the per-member layout", Path(path).name)
            return write_ensemble(module, Path(path), _metadata(spec, "world_model", E), opset)
        s, a = (torch.from_numpy(x) for x in random_inputs(spec, 2, seed=0))
        wrapper = _WorldModelIO(module, squeeze_member=(E == 1 and member_axis))
        return _export(
            wrapper, (s, a), Path(path), ["state", "action"], "next_state", 0 if E == 1 else 1, opset, dynamo,
            _metadata(spec, "world_model", E),
        )


def export_policy(
    module: nn.Module, spec: VehicleSpec, path: str | os.PathLike[str], opset: int = 17, *, dynamo: bool = False
) -> Path:
    """Export a policy: forward(state [B,S]) -> action [B,A], or a tracking policy forward(state [B,S],
    target [B,S]) -> action [B,A] (the task's reference a few steps ahead)."""
    _check_float32(module)
    S, A = spec.state_dim, spec.action_dim
    with _eval_mode(module):
        s, _ = (torch.from_numpy(x) for x in random_inputs(spec, _TRIAL_BATCH, seed=0))
        args = (s, torch.flip(s, [0])) if policy_takes_target(module, spec) else (s,)
        try:
            with torch.no_grad():
                out = module(*args)
        except Exception as e:
            raise ExportError(f"policy {_defined_in(module)}: forward failed on state [{_TRIAL_BATCH},{S}] with "
                              f"{_one_line(e)}; vehicle {spec.name!r} needs forward(state [B,{S}]) -> [B,{A}]") from e
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (_TRIAL_BATCH, A):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ExportError(f"policy {_defined_in(module)}: returned {got} for batch {_TRIAL_BATCH}; vehicle "
                              f"{spec.name!r} needs forward(state [B,{S}]) -> [B,{A}]")
        return _export(
            _PolicyIO(module), tuple(a[:2] for a in args), Path(path), ["state", "target"][: len(args)], "action", 0,
            opset, dynamo,
            _metadata(spec, "policy", 1),
        )


def check_parity(
    module: nn.Module,
    onnx_path: str | os.PathLike[str],
    spec: VehicleSpec,
    n_samples: int = 1024,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
) -> ParityResult:
    """Compare torch (eval, no_grad) with ONNX Runtime on states/actions drawn uniformly within the spec.

    Works for world models and policies (told apart by the ONNX inputs). Runs the whole batch
    and a batch of one, so a graph that baked in the trace's batch size fails here too.
    """
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    state, action = random_inputs(spec, n_samples, seed)
    target, _ = random_inputs(spec, n_samples, seed + 1)
    feeds = {k: v for k, v in (("state", state), ("action", action), ("target", target)) if k in names}
    with _eval_mode(module), torch.no_grad():
        args = [torch.from_numpy(feeds[k]) for k in ("state", "action", "target") if k in feeds]
        ref = module(*args).numpy()
    got = sess.run(None, feeds)[0]
    one = sess.run(None, {k: v[:1] for k, v in feeds.items()})[0]
    if ref.ndim == 3 and got.ndim == 2 and ref.shape[0] == 1:
        ref = ref[0]  # a lone member, exported as [B,S]
    if got.shape != ref.shape:
        raise ExportError(f"{Path(onnx_path).name}: ONNX output shape {list(got.shape)}, torch {list(ref.shape)}")
    batch_axis = ref.ndim - 2
    got_one = np.take(got, [0], axis=batch_axis)
    if one.shape != got_one.shape:
        raise ExportError(
            f"{Path(onnx_path).name}: output shape {list(one.shape)} for a batch of 1; the batch axis is not dynamic"
        )
    ref_all = np.concatenate([ref, np.take(ref, [0], axis=batch_axis)], axis=batch_axis).astype(np.float64)
    got_all = np.concatenate([got, one], axis=batch_axis).astype(np.float64)
    diff = np.abs(got_all - ref_all)
    finite = bool(np.all(np.isfinite(got_all)) and np.all(np.isfinite(ref_all)))
    max_abs = float(diff.max()) if finite else float("inf")
    max_rel = float((diff / np.maximum(np.abs(ref_all), atol)).max()) if finite else float("inf")
    ok = finite and bool(np.all(diff <= atol + rtol * np.abs(ref_all)))
    result = ParityResult(max_abs, max_rel, atol, rtol, n_samples, ok)
    log.info("parity %s: %s", Path(onnx_path).name, result)
    return result
