"""The bundles the fault matrix flies: a quad world model trained by dreamlink itself (cached), and two
deliberately broken copies of it, a model that emits NaN and a model that is slow.

Both broken copies keep the world-model contract (`state [B,S]`, `action [B,A]` -> `next_state`), so
the runtime loads them like any bundle: the fault is in the numbers and the time, not in the format.

- NaN: `next_state = Where(|state[:, vel_n]| > trigger, NaN, model(state, action))`, triggered by the
  input, so the planner flies normally while hovering and meets NaN once the figure-eight picks up speed.
- Slow: `next_state = model(state, action) + 0 * pad(state)`, where `pad` is a chain of dense layers on
  the state that ONNX Runtime cannot fold away (it depends on the input); its width sets the delay.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TRAINED_NAME = "quad-trained"
PLANNER = {"samples": 128, "horizon": 30, "noise_sigma": 0.3, "temperature": 3.0, "noise_smoothing": 0.9}


def trained_quad_bundle(cache_dir: Path, seconds: float = 40.0, seeds: tuple[int, ...] = (1, 2),
                        epochs: int = 20, flavour: str = "ardupilot") -> Path:
    """A quad bundle trained the way tests/test_quad_flight.py does it, on `flavour`'s SITL, made once under
    `cache_dir`."""
    root = Path(cache_dir) / (TRAINED_NAME if flavour == "ardupilot" else f"{TRAINED_NAME}-{flavour}")
    if (root / "manifest.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    from dreamlink.bundle import update_manifest
    from dreamlink.campaign.collect import QuadCollectConfig, collect_quad
    from dreamlink.export.pack import pack_bundle
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.profiles import make_profile
    from dreamlink.learning.train import TrainConfig, train_world_model
    from dreamlink.learning.transitions import TransitionSet
    from dreamlink.learning.world_model import WorldModelConfig
    from dreamlink.sim.launcher import SitlProcess
    from dreamlink.spec import QUAD

    sets = []
    for seed in seeds:
        log.info("collecting %.0f s of lockstep quad flight, seed %d", seconds, seed)
        with SitlProcess("quad", lockstep=True, seed=seed, extra_args=("--flavour", flavour)) as sitl, \
                Link(LinkConfig(sitl.connect_string)) as link:
            profile = make_profile(QUAD, link, flavour, lockstep=True)
            profile.connect(timeout_s=30)
            d = collect_quad(profile, QUAD, QuadCollectConfig(seconds=seconds, seed=seed))
            sets.append(TransitionSet(d.spec, d.state, d.action, d.next_state, np.full(len(d), seed), d.meta))
    data = TransitionSet.concat(sets)
    config = WorldModelConfig(hidden=64, layers=2, ensemble_size=3,
                              ignore_inputs=("pos_n_m", "pos_e_m", "pos_d_m", "yaw_rad"))
    log.info("training the quad world model on %d transitions", len(data))
    result = train_world_model(data, config, TrainConfig(epochs=epochs, seed=0))
    tmp = root.with_name(root.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    bundle, parity = pack_bundle(tmp, QUAD, result.model)
    if not parity.ok:
        raise RuntimeError(f"trained quad model failed the ONNX parity check: {parity}")
    update_manifest(bundle, calibration={"planner": PLANNER})
    tmp.rename(root)  # whole or absent: a killed build is redone, never half-used
    return root


def _rewrite(src: Path, dst: Path, edit: object) -> Path:
    """Copy bundle `src` to `dst` with its world model graph changed by `edit(model) -> None`; a bundle without a
    world model (policy-only) is refused with a `BundleError`."""
    import onnx

    from dreamlink.bundle import BundleError, load_bundle, write_bundle

    bundle = load_bundle(src)
    if not bundle.has("world_model"):  # a policy-only bundle: nothing here to break
        has = ", ".join(sorted(bundle.manifest.files)) or "none"
        raise BundleError(f"{src}: no world model in this bundle (its files: {has}); the fault bundles are a world "
                          f"model made to emit NaN or run slow, so give a world-model bundle")
    model = onnx.load(str(bundle.path_of("world_model")))
    edit(model)  # type: ignore[operator]
    onnx.checker.check_model(model)
    path = dst.with_suffix(".onnx")
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    entry = bundle.manifest.files["world_model"]
    meta = {"precision": entry.precision, "opset": entry.opset, "ensemble_size": entry.ensemble_size}
    out = write_bundle(dst, bundle.spec, {"world_model": (path, meta)},
                       training=dict(bundle.manifest.training), calibration=dict(bundle.manifest.calibration))
    path.unlink()
    return out.root


def _output_edit(model: object, build: object) -> None:
    """Rename the graph's output, append nodes from `build(graph, raw_name, out_name)`, keep the name."""
    graph = model.graph  # type: ignore[attr-defined]
    out = graph.output[0].name
    raw = out + "_raw"
    for node in graph.node:
        node.output[:] = [raw if o == out else o for o in node.output]
    build(graph, raw, out)  # type: ignore[operator]


def nan_bundle(src: Path, dst: Path, state_index: int, trigger: float) -> Path:
    """A copy of `src` whose model outputs NaN for every input state with |state[:, i]| > `trigger`."""
    from onnx import helper, numpy_helper

    def build(graph: object, raw: str, out: str) -> None:
        g = graph
        state = g.input[0].name  # type: ignore[attr-defined]
        consts = [numpy_helper.from_array(np.array([state_index], np.int64), "nan_idx"),
                  numpy_helper.from_array(np.array(trigger, np.float32), "nan_trigger"),
                  numpy_helper.from_array(np.array(np.nan, np.float32), "nan_value")]
        g.initializer.extend(consts)  # type: ignore[attr-defined]
        g.node.extend([  # type: ignore[attr-defined]
            helper.make_node("Gather", [state, "nan_idx"], ["nan_col"], axis=1),  # [B,1]
            helper.make_node("Abs", ["nan_col"], ["nan_abs"]),
            helper.make_node("Greater", ["nan_abs", "nan_trigger"], ["nan_mask"]),  # broadcasts on [E,B,S] too
            helper.make_node("Where", ["nan_mask", "nan_value", raw], [out]),
        ])

    def edit(model: object) -> None:
        _output_edit(model, build)

    return _rewrite(src, dst, edit)


def slow_bundle(src: Path, dst: Path, width: int, layers: int = 2) -> Path:
    """A copy of `src` with `layers` dense [width x width] layers on the state added as `0 * pad`."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)

    def build(graph: object, raw: str, out: str) -> None:
        g = graph
        state = g.input[0].name  # type: ignore[attr-defined]
        dim = int(g.input[0].type.tensor_type.shape.dim[1].dim_value)  # type: ignore[attr-defined]
        nodes, inits, x, n_in = [], [], state, dim
        for i in range(layers):
            w = numpy_helper.from_array((rng.normal(0, 1 / np.sqrt(n_in), (n_in, width))).astype(np.float32),
                                        f"pad_w{i}")
            inits.append(w)
            nodes += [helper.make_node("MatMul", [x, w.name], [f"pad_m{i}"]),
                      helper.make_node("Tanh", [f"pad_m{i}"], [f"pad_h{i}"])]
            x, n_in = f"pad_h{i}", width
        inits.append(numpy_helper.from_array(np.zeros((width, dim), np.float32), "pad_out"))
        # ReduceSum of a 0-weighted projection: stays an input-dependent zero ORT cannot fold
        nodes += [helper.make_node("MatMul", [x, "pad_out"], ["pad_zero"]),
                  helper.make_node("Add", [raw, "pad_zero"], [out])]
        g.initializer.extend(inits)  # type: ignore[attr-defined]
        g.node.extend(nodes)  # type: ignore[attr-defined]

    def edit(model: object) -> None:
        _output_edit(model, build)

    return _rewrite(src, dst, edit)
