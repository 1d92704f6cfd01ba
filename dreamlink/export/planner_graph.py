"""The fused planner graph: one ONNX graph per planning iteration, composed around any world model
that keeps the contract (`state [B,S]`, `action [B,A]` -> `next_state [B,S]` or `[E,B,S]`).

One `session.run` per control tick does everything the numpy reference `MppiPlanner` does with
H runs plus numpy glue: scale and clip the noise around the warm start (sample 0 is the warm start
itself), roll K samples H steps through the world model propagating the ensemble mean, score
them with the quadratic task cost, and either weight them (MPPI) or refit to the elites (CEM).

Graph inputs (static shapes, float32; the task's parameters are inputs so the runtime can move
the target without re-exporting):

    state [S]  warm [H,A]  noise [K,H,A] (standard normal)  sigma [A] (noise std, action units)
    temperature []  target [H,S] (per step: a fixed target repeated, or a tracking reference)
    state_weight [S]  action_weight [A]  terminal_weight []
    wall_limit [S] (|x| above it costs wall_penalty per step; +inf: no wall)  wall_penalty []

Outputs: `plan [H,A]`, `costs [K]`, `imagined [H+1,S]` (the lowest-cost sample's trajectory),
`disagreement []` (max ensemble std along it, in state half-range units), `nonfinite []` (int64:
samples whose trajectory or cost was not finite; they cost +inf and weigh nothing, so a model that
returns NaN for some inputs still plans on the rest; graphs exported before it lack this output);
CEM adds `elite_std [H,A]`.

Rollout: unrolled by default. The world model's nodes are copied H times with renamed values
and the weights stored once, so ONNX Runtime sees one static graph and plans every buffer ahead.
An ONNX `Loop` over H (`rollout="loop"`) gives the same numbers at the same speed: measured on
the 2-core EPYC (Zen 4) box with ORT 1.32, ensemble 5 x 256 x 2, K=512, H=15, one thread,
58.0 ms unrolled vs 58.4 ms Loop (`make bench`, 2026-11-25, the per-member export); the
per-iteration cost of the Loop is lost in 4 ms of matmul per step. Splitting K into independent
chains (`chunk`, to keep activations in L2) measured 0-2% slower, so one chain is the default; it
stays as a knob for smaller caches. `make bench` re-measures all four variants.

The ensemble is propagated by its mean, as `MppiPlanner` does, so the graph is testable against
the numpy reference sample for sample (tests/test_fused_planner.py).

This module composes the graph (its node-level helpers are `graph_builder`); optimising it offline,
quantizing the world model and packing a planner bundle are `planner_graph_pack`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper

import dreamlink
from dreamlink.export.graph_builder import Builder, copy_graph_nodes, preassign
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

METHODS = ("mppi", "cem")
ROLLOUTS = ("unrolled", "loop")
MIN_OPSET = 13  # Softmax over any axis, ReduceSum axes as an input, Split sizes as an input
TASK_INPUTS = ("target", "state_weight", "action_weight", "terminal_weight", "wall_limit", "wall_penalty")


class PlannerGraphError(ValueError):
    """The world model cannot be composed into a planner graph; the message says why and what to do."""


@dataclass(frozen=True)
class PlannerGraphConfig:
    """What is baked into a planner graph: the shapes and the update rule.

    Noise scale and temperature stay graph inputs, so tuning them needs no re-export.
    """

    samples: int  # K
    horizon: int  # H
    method: str = "mppi"  # "mppi": exp(-cost/temperature) weighting; "cem": mean of the elites
    elites: int = 0  # CEM: elite count; 0 means max(2, samples // 10)
    rollout: str = "unrolled"  # "unrolled" | "loop"
    chunk: int = 0  # unrolled: samples per independent rollout chain (0: all K in one chain)

    def __post_init__(self) -> None:
        if self.samples < 2 or self.horizon < 1:
            raise ValueError(f"PlannerGraphConfig: need samples >= 2 and horizon >= 1, got {self}")
        if self.method not in METHODS:
            raise ValueError(f"PlannerGraphConfig.method: expected one of {METHODS}, got {self.method!r}")
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"PlannerGraphConfig.rollout: expected one of {ROLLOUTS}, got {self.rollout!r}")
        if self.chunk < 0:
            raise ValueError(f"PlannerGraphConfig.chunk: expected >= 0 (0: no chunking), got {self.chunk}")
        if self.method == "cem" and not (0 <= self.elites <= self.samples and self.elites != 1):
            raise ValueError(f"PlannerGraphConfig.elites: expected 0 (auto) or 2..{self.samples}, got {self.elites}")

    @property
    def chunk_sizes(self) -> list[int]:
        """How the K samples are split into independent rollout chains (unrolled rollout only)."""
        if self.rollout != "unrolled" or self.chunk <= 0 or self.chunk >= self.samples:
            return [self.samples]
        n_full, rest = divmod(self.samples, self.chunk)
        return [self.chunk] * n_full + ([rest] if rest else [])

    @property
    def elite_count(self) -> int:
        return self.elites or max(2, self.samples // 10)


@dataclass(frozen=True)
class WorldModelInfo:
    """What composition needs to know about a contract-keeping world model."""

    state_dim: int
    action_dim: int
    ensemble_size: int  # 1 for a [B,S] output
    opset: int


def inspect_world_model(model: ModelProto, where: str = "world model") -> WorldModelInfo:
    """Check the world-model contract on the graph itself (no session) and read S, A, E and the opset."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = {i.name: i for i in g.input if i.name not in inits}
    if set(inputs) != {"state", "action"}:
        raise PlannerGraphError(
            f"{where}: inputs are {sorted(inputs)}, the world-model contract is state [B,S], action [B,A]"
        )
    outs = [o for o in g.output if o.name == "next_state"]
    if not outs:
        raise PlannerGraphError(f"{where}: no output 'next_state' (has {[o.name for o in g.output]})")
    s_dims, a_dims, o_dims = (_dims(v) for v in (inputs["state"], inputs["action"], outs[0]))
    if len(s_dims) != 2 or len(a_dims) != 2 or not isinstance(s_dims[1], int) or not isinstance(a_dims[1], int):
        raise PlannerGraphError(
            f"{where}: state {s_dims} / action {a_dims}; expected [B,S] and [B,A] with fixed S and A"
        )
    S, A = s_dims[1], a_dims[1]
    if len(o_dims) == 2 and o_dims[1] == S:
        E = 1
    elif len(o_dims) == 3 and o_dims[2] == S and isinstance(o_dims[0], int) and o_dims[0] >= 1:
        E = o_dims[0]
    else:
        raise PlannerGraphError(f"{where}: next_state is {o_dims}; expected [B,{S}] or [E,B,{S}] with a fixed E")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise PlannerGraphError(
            f"{where}: opset {opset}; the planner graph needs opset >= {MIN_OPSET}; re-export the model "
            f"(torch.onnx.export(..., opset_version=17)) or convert it with onnx.version_converter"
        )
    return WorldModelInfo(S, A, E, opset)


def _dims(v: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]


# ---------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------


def compose_planner(
    world_model: ModelProto | str | os.PathLike[str],
    spec: VehicleSpec,
    config: PlannerGraphConfig,
) -> ModelProto:
    """The planner graph for `config` around `world_model` (a path or a loaded `ModelProto`).

    The world model's weights are stored once whatever H is; its own opset imports (and any
    contrib domains, e.g. from int8 quantization) carry over. Raises `PlannerGraphError` when the
    model does not keep the contract or disagrees with `spec`.
    """
    where = str(world_model) if not isinstance(world_model, ModelProto) else "world model"
    wm = onnx.load(str(world_model)) if not isinstance(world_model, ModelProto) else world_model
    info = inspect_world_model(wm, where)
    S, A, E = info.state_dim, info.action_dim, info.ensemble_size
    if (S, A) != (spec.state_dim, spec.action_dim):
        raise PlannerGraphError(
            f"{where}: state/action widths {S}/{A}, but spec {spec.name!r} has {spec.state_dim}/{spec.action_dim}"
        )
    K, H = config.samples, config.horizon
    b = Builder(info.opset)
    f32 = TensorProto.FLOAT
    graph_inputs = [
        helper.make_tensor_value_info("state", f32, [S]),
        helper.make_tensor_value_info("warm", f32, [H, A]),
        helper.make_tensor_value_info("noise", f32, [K, H, A]),
        helper.make_tensor_value_info("sigma", f32, [A]),
        helper.make_tensor_value_info("temperature", f32, []),
        helper.make_tensor_value_info("target", f32, [H, S]),
        helper.make_tensor_value_info("state_weight", f32, [S]),
        helper.make_tensor_value_info("action_weight", f32, [A]),
        helper.make_tensor_value_info("terminal_weight", f32, []),
        helper.make_tensor_value_info("wall_limit", f32, [S]),
        helper.make_tensor_value_info("wall_penalty", f32, []),
    ]

    # Samples: clip(warm + sigma * noise), sample 0 kept noise-free (the warm start itself).
    keep = np.ones((K, 1, 1), np.float32)
    keep[0] = 0.0
    scaled = b.op("Mul", [b.op("Mul", ["noise", "sigma"], "noise_scaled"), b.const(keep, "keep_mask")], "noise_kept")
    raw = b.op("Add", ["warm", scaled], "samples_raw")
    samples = b.op(
        "Max", [b.op("Min", [raw, b.const(spec.action_high, "action_high")]), b.const(spec.action_low, "action_low")],
        "samples",
    )  # [K,H,A]

    # Rollout from state broadcast to all K samples.
    samples_t = b.op("Transpose", [samples], "samples_t", perm=[1, 0, 2])  # [H,K,A]
    inv_scale = b.const(2.0 / (spec.state_high - spec.state_low), "inv_state_scale")
    wm_inits = {init.name: "wm/" + init.name for init in wm.graph.initializer}
    for init in wm.graph.initializer:
        t = TensorProto()
        t.CopyFrom(init)
        t.name = wm_inits[init.name]
        b.inits.append(t)

    def step(x: str, u: str, tag: str, out_nodes: list[NodeProto]) -> tuple[str, str]:
        """One world-model step inside `out_nodes`: (mean next state [K,S], members' predictions [E,K,S]).

        The members' spread is not computed here for all K samples: only the chosen sample's
        trajectory needs it (the disagreement output), so it is computed once, after the costs.
        """
        mapping = dict(wm_inits)
        mapping["state"], mapping["action"] = x, u
        pred = f"{tag}pred"
        preassign(mapping, "next_state", pred)
        out_nodes.extend(copy_graph_nodes(wm.graph.node, mapping, tag))
        if E == 1:
            return pred, ""
        saved, b.nodes = b.nodes, out_nodes
        try:
            mean = b.reduce("ReduceMean", pred, [0], 0, "mean")
        finally:
            b.nodes = saved
        return mean, pred

    if config.rollout == "unrolled":
        sizes = config.chunk_sizes
        if len(sizes) > 1:
            split = b.const(sizes, "split", np.int64)
            u_chunks = b.op_multi("Split", [samples_t, split], len(sizes), "u_chunk", axis=1)
        else:
            u_chunks = [samples_t]
        trajs, preds_c = [], []
        for c, (kc, u_chunk) in enumerate(zip(sizes, u_chunks, strict=True)):
            x = b.op("Expand", [b.op("Reshape", ["state", b.const([1, S], "shape", np.int64)]),
                                b.const([kc, S], "shape", np.int64)], f"x0_c{c}")  # [Kc,S]
            traj_parts, preds = [x], []
            u_parts = b.op_multi("Split", [u_chunk, b.const([1] * H, "split", np.int64)], H, "u_split", axis=0)
            for h in range(H):
                u = b.op("Squeeze", [u_parts[h], b.const([0], "axes", np.int64)], f"u{h}")
                x, pred = step(x, u, f"c{c}s{h}/", b.nodes)
                traj_parts.append(x)
                preds.append(pred)
            trajs.append(b.op("Reshape", [b.op("Concat", traj_parts, axis=1),
                                          b.const([kc, H + 1, S], "shape", np.int64)], "traj_chunk"))
            if E > 1:
                preds_c.append(b.op("Concat", preds, "preds_chunk", axis=0))  # [H*E,Kc,S]
        traj = b.op("Concat", trajs, "traj", axis=0) if len(trajs) > 1 else trajs[0]  # [K,H+1,S]
        preds_hek = "" if E == 1 else (b.op("Concat", preds_c, "preds", axis=1) if len(preds_c) > 1
                                       else preds_c[0])  # [H*E,K,S]
    else:
        x0 = b.op("Expand", [b.op("Reshape", ["state", b.const([1, S], "shape", np.int64)]),
                             b.const([K, S], "shape", np.int64)], "x0")  # [K,S]
        traj, preds_hek = _loop_rollout(b, x0, samples_t, step, K, H, S, E)

    costs, nonfinite = _nonfinite_to_inf(b, _cost(b, traj, samples, H), traj)
    outputs = _update(b, config, samples, costs, H, A)
    best = b.op("ArgMin", [costs], "best", axis=0, keepdims=1)  # [1]
    imagined = b.op("Reshape", [b.op("Gather", [traj, best], axis=0), b.const([H + 1, S], "shape", np.int64)])
    if E > 1:
        # Members along the chosen sample: [H*E,1,S] -> [H,E,S]; std over E in state half-ranges, max.
        chosen = b.op("Reshape", [b.op("Gather", [preds_hek, best], axis=1), b.const([H, E, S], "shape", np.int64)])
        dev = b.op("Sub", [chosen, b.reduce("ReduceMean", chosen, [1], 1, "member_mean")])
        std = b.op("Sqrt", [b.reduce("ReduceMean", b.op("Mul", [dev, dev]), [1], 0)])  # [H,S]
        disagreement = b.reduce("ReduceMax", b.op("Mul", [std, inv_scale]), [0, 1], 0)
    else:
        disagreement = b.const(np.float32(0.0), "no_disagreement")
    named = {"costs": costs, "imagined": imagined, "disagreement": disagreement, "nonfinite": nonfinite, **outputs}
    for out_name, value in named.items():
        b.nodes.append(helper.make_node("Identity", [value], [out_name], name=f"out/{out_name}"))
    graph_outputs = [
        helper.make_tensor_value_info("plan", f32, [H, A]),
        helper.make_tensor_value_info("costs", f32, [K]),
        helper.make_tensor_value_info("imagined", f32, [H + 1, S]),
        helper.make_tensor_value_info("disagreement", f32, []),
        helper.make_tensor_value_info("nonfinite", TensorProto.INT64, []),
    ]
    if config.method == "cem":
        graph_outputs.append(helper.make_tensor_value_info("elite_std", f32, [H, A]))
    graph = helper.make_graph(b.nodes, f"dreamlink_planner_{config.method}", graph_inputs, graph_outputs, b.inits)
    model = helper.make_model(graph, opset_imports=list(wm.opset_import), producer_name="dreamlink")
    model.ir_version = max(wm.ir_version, 8)
    model.functions.extend(wm.functions)
    meta = {p.key: p.value for p in wm.metadata_props}
    meta.update({
        "dreamlink.role": "planner",
        "dreamlink.spec": json.dumps(spec.to_dict()),
        "dreamlink.planner": json.dumps({**config.__dict__, "elites": config.elite_count if config.method == "cem"
                                         else 0, "ensemble_size": E}),
        "dreamlink.version": dreamlink.__version__,
    })
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise PlannerGraphError(f"{where}: the composed planner graph is invalid: {e}") from None
    return model


def _loop_rollout(b: Builder, x0: str, samples_t: str, step, K: int, H: int, S: int, E: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The rollout as an ONNX Loop over H: carried x [K,S], scanned x and the members' predictions."""
    f32 = TensorProto.FLOAT
    body_nodes: list[NodeProto] = []
    it, cond_in, x_in = "body/iter", "body/cond_in", "body/x_in"
    u = "body/u"
    body_nodes.append(helper.make_node("Gather", [samples_t, it], [u], axis=0, name="body/gather_u"))
    x_next, pred = step(x_in, u, "body/wm/", body_nodes)  # own prefix: a model value may be called "x_in"
    body_nodes.append(helper.make_node("Identity", [cond_in], ["body/cond_out"], name="body/cond"))
    body_nodes.append(helper.make_node("Identity", [x_next], ["body/x_out"], name="body/x_out"))
    body_nodes.append(helper.make_node("Identity", [x_next], ["body/x_scan"], name="body/x_scan"))
    outs = [
        helper.make_tensor_value_info("body/cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("body/x_out", f32, [K, S]),
        helper.make_tensor_value_info("body/x_scan", f32, [K, S]),
    ]
    if E > 1:
        body_nodes.append(helper.make_node("Identity", [pred], ["body/pred_scan"], name="body/pred"))
        outs.append(helper.make_tensor_value_info("body/pred_scan", f32, [E, K, S]))
    body = helper.make_graph(
        body_nodes,
        "rollout_step",
        [
            helper.make_tensor_value_info(it, TensorProto.INT64, []),
            helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
            helper.make_tensor_value_info(x_in, f32, [K, S]),
        ],
        outs,
    )
    trip = b.const(np.int64(H), "trip", np.int64)
    loop_outs = [b.name("loop_x_final"), b.name("loop_xs")] + ([b.name("loop_preds")] if E > 1 else [])
    b.nodes.append(helper.make_node("Loop", [trip, "", x0], loop_outs, name="p/rollout_loop", body=body))
    xs = loop_outs[1]  # [H,K,S]
    first = b.op("Unsqueeze", [x0, b.const([0], "axes", np.int64)])
    traj = b.op("Transpose", [b.op("Concat", [first, xs], axis=0)], "traj", perm=[1, 0, 2])  # [K,H+1,S]
    preds = (b.op("Reshape", [loop_outs[2], b.const([H * E, K, S], "shape", np.int64)], "preds") if E > 1
             else "")  # [H,E,K,S] -> [H*E,K,S]
    return traj, preds


def _cost(b: Builder, traj: str, samples: str, H: int) -> str:
    """`dreamlink.runtime.tasks.trajectory_cost` as graph nodes: [K,H+1,S], [K,H,A] -> [K]."""
    nxt = b.op("Slice", [traj, b.const([1], "starts", np.int64), b.const([H + 1], "ends", np.int64),
                         b.const([1], "axes", np.int64)], "traj_next")  # [K,H,S]
    err = b.op("Sub", [nxt, "target"])  # target [H,S] broadcasts over K
    per_step = b.reduce("ReduceSum", b.op("Mul", [b.op("Mul", [err, err]), "state_weight"]), [2], 0)  # [K,H]
    last = np.zeros(H, np.float32)
    last[-1] = 1.0
    # step weights: 1 everywhere, terminal_weight on the last step
    step_w = b.op("Add", [b.const(np.ones(H, np.float32), "ones"),
                          b.op("Mul", [b.const(last, "last"), b.op("Sub", ["terminal_weight", b.const(1.0, "one")])])])
    state_cost = b.reduce("ReduceSum", b.op("Mul", [per_step, step_w]), [1], 0)
    act_cost = b.reduce("ReduceSum", b.op("Mul", [b.op("Mul", [samples, samples]), "action_weight"]), [1, 2], 0)
    over = b.op("Cast", [b.op("Greater", [b.op("Abs", [nxt]), "wall_limit"])], to=TensorProto.FLOAT)
    walls = b.op("Mul", [b.reduce("ReduceSum", over, [1, 2], 0), "wall_penalty"])
    return b.op("Add", [b.op("Add", [state_cost, act_cost]), walls], "costs_sum")


def _nonfinite_to_inf(b: Builder, costs: str, traj: str) -> tuple[str, str]:
    """`dreamlink.runtime.mppi.nonfinite_to_inf` as graph nodes: a sample whose trajectory [K,H+1,S] or cost [K]
    is not finite costs +inf. Returns (costs [K], how many samples that was [] int64)."""
    def nonfinite(x: str) -> str:
        return b.op("Or", [b.op("IsNaN", [x]), b.op("IsInf", [x])])

    traj_bad = b.reduce("ReduceMax", b.op("Cast", [nonfinite(traj)], to=TensorProto.FLOAT), [1, 2], 0)  # [K]
    bad = b.op("Or", [nonfinite(costs), b.op("Greater", [traj_bad, b.const(0.0, "zero")])], "nonfinite_samples")
    safe = b.op("Where", [bad, b.const(np.inf, "inf"), costs], "costs")
    count = b.reduce("ReduceSum", b.op("Cast", [bad], to=TensorProto.INT64), [0], 0, "nonfinite_count")
    return safe, count


def _update(b: Builder, config: PlannerGraphConfig, samples: str, costs: str, H: int, A: int) -> dict[str, str]:
    """The new plan from `costs` [K] (+inf for a non-finite sample): it weighs nothing, and is an elite only when
    fewer finite samples than elites are left, then masked out. With no finite sample the plan is NaN, as
    `MppiPlanner`'s."""
    K = config.samples
    flat = b.op("Reshape", [samples, b.const([K, H * A], "shape", np.int64)])
    if config.method == "mppi":
        logits = b.op("Div", [b.op("Neg", [costs]), "temperature"])
        # = exp(-(c - min)/T) / sum, stable inside ORT (it subtracts the max logit); -inf logits weigh 0
        w = b.op("Softmax", [logits], "weights", axis=0)
        plan = b.op("MatMul", [b.op("Reshape", [w, b.const([1, K], "shape", np.int64)]), flat])
        return {"plan": b.op("Reshape", [plan, b.const([H, A], "shape", np.int64)])}
    n = config.elite_count
    top, idx = b.op_multi("TopK", [b.op("Neg", [costs]), b.const([n], "k", np.int64)], 2, "topk", axis=0)
    elites = b.op("Gather", [samples, idx], "elites", axis=0)  # [n,H,A]
    finite = b.op("Cast", [b.op("Not", [b.op("IsInf", [top])])], to=TensorProto.FLOAT)  # [n]
    mask = b.op("Reshape", [finite, b.const([n, 1, 1], "shape", np.int64)], "elite_mask")
    count = b.reduce("ReduceSum", finite, [0], 0, "elite_count")  # 0 (plan NaN) when no sample was finite
    mean = b.op("Div", [b.reduce("ReduceSum", b.op("Mul", [elites, mask]), [0], 0), count], "elite_mean")
    dev = b.op("Mul", [b.op("Sub", [elites, mean]), mask])
    std = b.op("Sqrt", [b.op("Div", [b.reduce("ReduceSum", b.op("Mul", [dev, dev]), [0], 0), count])], "elite_std")
    return {"plan": mean, "elite_std": std}


# ---------------------------------------------------------------------------------------------
# Files and figures: save the graph, count the world model's work
# ---------------------------------------------------------------------------------------------


def write_planner(
    world_model: str | os.PathLike[str],
    spec: VehicleSpec,
    config: PlannerGraphConfig,
    path: str | os.PathLike[str],
) -> Path:
    """Compose and save the planner graph (plain ONNX, standard ops: portable to any ORT)."""
    model = compose_planner(world_model, spec, config)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    log.info("planner graph %s: %s K=%d H=%d (%d nodes)", out, config.method, config.samples, config.horizon,
             len(model.graph.node))
    return out


def matmul_flops(world_model: ModelProto | str | os.PathLike[str], batch: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of the world model's MatMul/Gemm nodes for one call on `batch` rows.

    Counted from the weight initializers' shapes: what the kernels multiply, so a bias carried as a
    weight row (dreamlink's per-member export) counts; elementwise work (normalisation, activations,
    the cost) does not.
    """
    wm = onnx.load(str(world_model)) if not isinstance(world_model, ModelProto) else world_model
    inits = {i.name: tuple(i.dims) for i in wm.graph.initializer}
    total = 0
    for node in wm.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        # The weight is B, or A in a transposed Gemm (W^T x^T, as dreamlink writes the output layer)
        weight = next((name for name in node.input[1::-1] if name in inits), None)
        if weight is not None:
            dims = inits[weight]
            if len(dims) < 2:
                continue
            members = int(np.prod(dims[:-2])) if len(dims) > 2 else 1
            total += 2 * batch * members * dims[-2] * dims[-1]
    return total
