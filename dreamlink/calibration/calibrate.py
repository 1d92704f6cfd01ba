"""`dreamlink calibrate` as a library call: data -> precisions -> accuracy -> horizon -> budget -> bundle.

Stages, each measured, each recorded in the calibrated bundle's manifest (`calibration.*`):

1. data: `.tlog` flight logs and `.npz` SITL transition sets; whole episodes held out for accuracy.
2. quantize: the world model at every candidate precision (int8 static with every calibration method
   asked for, fed by `TransitionReader` over the training episodes).
3. accuracy: one-step and k-step error per precision on the held-out episodes, the planner's first
   action against fp32's on the same noise; the horizon from fp32's curve; a verdict per precision.
   An int8 static model that fails is retried with MatMuls kept in float, the most harmful first
   (measured one by one), before it is refused.
4. budget: K x H swept per accepted precision on this machine (horizons up to the calibrated one, which
   is always swept); the largest setting whose p99 fits `share` of the control period.
5. bundle: the chosen precision's planner graph at the budget's K x H, written next to the report;
   the source bundle is not changed.

Closed-loop quality (SITL flights) and the report are separate calls (`closed_loop`, `write_report`):
flights take minutes, and the CLI runs them when asked. When it does, the flights are a gate
(`apply_closed_loop_gate`): a precision whose figure-eight RMSE is more than `max_ratio` times fp32's on
the same seeds is refused, and the calibrated bundle is re-packed with the best remaining precision.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.bundle import load_bundle
from dreamlink.calibration.accuracy import PrecisionAccuracy, measure_accuracy, predictor
from dreamlink.calibration.budget import SweepConfig, SweepPoint, budget_record, sweep
from dreamlink.calibration.bundles import pack_precision_bundle
from dreamlink.calibration.horizon import (
    AcceptTolerance,
    Verdict,
    disagreement_threshold,
    judge_precisions,
)
from dreamlink.calibration.kstep import KStepCurve
from dreamlink.calibration.quantize import (
    QuantizeConfig,
    fp16_support,
    matmul_groups,
    quantize_world_model,
)
from dreamlink.calibration.reader import TransitionReader, load_transitions
from dreamlink.export.planner_graph import PlannerGraphConfig
from dreamlink.learning.transitions import TransitionSet
from dreamlink.runtime.mppi import MppiConfig
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)

# Fastest first, as measured on x86 with ORT 1.32 (see quantize.py); the sweep re-measures on the device.
SPEED_ORDER = ("int8_static", "int8_dynamic", "fp16", "fp32")


@dataclass(frozen=True)
class CalibrateConfig:
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8_dynamic", "int8_static")
    methods: tuple[str, ...] = ("minmax", "entropy", "percentile")
    per_channel: bool = False
    tolerance: AcceptTolerance = field(default_factory=lambda: AcceptTolerance(kstep_tolerance=0.4))
    max_k: int = 40  # k-step curve length (H_max)
    action_states: int = 64  # held-out states the planner's first action is compared on (heavy-tailed: not fewer)
    holdout_fraction: float = 0.2
    sweep: SweepConfig = field(default_factory=SweepConfig)
    speed_point: tuple[int, int] = (512, 15)  # (K, H) where the speed-up over fp32 is reported
    speed_steps: int = 60
    disagreement_quantile: float = 0.99
    disagreement_margin: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "precisions", tuple(self.precisions))
        object.__setattr__(self, "methods", tuple(self.methods))
        if "fp32" not in self.precisions:
            object.__setattr__(self, "precisions", ("fp32", *self.precisions))
        if self.max_k < 1:
            raise ValueError(f"CalibrateConfig.max_k: expected >= 1, got {self.max_k}")


@dataclass
class CalibrationResult:
    """Everything measured; `to_dict()` is what goes into the report and (trimmed) the manifest."""

    bundle: str
    out_dir: Path
    data: dict[str, Any]
    files: dict[str, Path]  # precision name -> world model file
    accuracy: dict[str, PrecisionAccuracy]
    verdicts: dict[str, Verdict]
    horizon: int
    chosen: str
    refused: dict[str, str]
    disagreement_threshold: float
    fp16: dict[str, Any] | None
    budget: dict[str, Any] | None
    planner: dict[str, Any]
    speedup: dict[str, Any] | None = None
    closed_loop: dict[str, Any] | None = None
    calibrated_bundle: Path | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    machine_note: str = ""
    tolerance_used: AcceptTolerance = field(default_factory=lambda: AcceptTolerance(kstep_tolerance=0.4))
    # What the closed-loop gate needs to choose again and re-pack (not reported: `budget` holds the sweep).
    points: list[SweepPoint] = field(default_factory=list)
    sweep_config: SweepConfig = field(default_factory=SweepConfig)
    manifest_calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def curves(self) -> dict[str, KStepCurve]:
        return {n: a.curve for n, a in self.accuracy.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle, "data": self.data, "chosen": self.chosen, "horizon": self.horizon,
            "refused": self.refused, "disagreement_threshold": self.disagreement_threshold,
            "accuracy": {n: a.to_dict() for n, a in self.accuracy.items()},
            "verdicts": {n: v.to_dict() for n, v in self.verdicts.items()},
            "fp16": self.fp16, "budget": self.budget, "planner": self.planner, "speedup": self.speedup,
            "closed_loop": self.closed_loop, "quantization": self.quantization,
            "tolerance": asdict(self.tolerance_used), "machine_note": self.machine_note,
            "calibrated_bundle": str(self.calibrated_bundle) if self.calibrated_bundle else None,
        }


def split_data(data: TransitionSet, holdout: TransitionSet | None, fraction: float, seed: int
               ) -> tuple[TransitionSet, TransitionSet]:
    if holdout is not None:
        return data, holdout
    return data.split_by_episode(fraction, seed)


def _static_configs(config: CalibrateConfig) -> list[QuantizeConfig]:
    return [QuantizeConfig("int8_static", m, config.per_channel) for m in config.methods]


def quantize_all(src: Path, models_dir: Path, train: TransitionSet, config: CalibrateConfig,
                 spec: VehicleSpec, progress: Callable[[str], None] | None = None
                 ) -> tuple[dict[str, Path], dict[str, Any] | None]:
    """Every candidate precision as a file; fp16 only where this CPU execution provider runs it."""
    files: dict[str, Path] = {}
    fp16: dict[str, Any] | None = None
    wanted: list[QuantizeConfig] = []
    for p in config.precisions:
        wanted += _static_configs(config) if p == "int8_static" else [QuantizeConfig(p)]
    for qc in wanted:
        path = quantize_world_model(src, models_dir / f"world_model_{qc.name}.onnx", qc,
                                    lambda: TransitionReader(train, seed=config.seed))
        if qc.precision == "fp16":
            support = fp16_support(path, spec.state_dim, spec.action_dim)
            fp16 = asdict(support)
            if not support.supported:
                log.warning("fp16 skipped: %s", support.detail)
                continue
        files[qc.name] = path
        if progress is not None:
            progress(qc.name)
    return files, fp16


def _closeness(a: PrecisionAccuracy, v: Verdict) -> tuple[float, float]:
    """How close a quantized model plans to fp32: the first action first (what reaches the motors), then
    the k-step curve."""
    return (a.action_error if a.action_error is not None else 0.0, v.kstep_excess)


def _retry_keeping_float(src: Path, models_dir: Path, train: TransitionSet, holdout: TransitionSet,
                         failed: str, config: CalibrateConfig, graph: PlannerGraphConfig, mppi: MppiConfig
                         ) -> tuple[str, Path, PrecisionAccuracy, Verdict] | None:
    """Keep MatMuls in float, one more layer per round, greedily: each round tries every remaining layer
    (`matmul_groups`: a layer of every ensemble member together) and keeps the one whose model plans closest
    to fp32; stops at the first model that passes (None: none does before every layer would be float,
    which is fp32)."""
    base = QuantizeConfig("int8_static", failed.split("_")[2], "_pc" in failed)
    groups = matmul_groups(src)
    kept: tuple[int, ...] = ()
    while len(kept) < len(groups) - 1:
        trial: dict[str, Path] = {}
        keep_of: dict[str, tuple[int, ...]] = {}
        for index in (i for i in range(len(groups)) if i not in kept):
            keep = tuple(sorted((*kept, index)))
            qc = QuantizeConfig(base.precision, base.method, base.per_channel,
                                tuple(name for i in keep for name in groups[i]))
            name = f"{base.name}_f{len(keep)}_" + "".join(str(i) for i in keep)  # e.g. ..._f2_02: layers 0, 2
            trial[name] = quantize_world_model(src, models_dir / f"world_model_{name}.onnx", qc,
                                               lambda: TransitionReader(train, seed=config.seed))
            keep_of[name] = keep
        acc = measure_accuracy({"fp32": reference_path(models_dir), **trial}, holdout, config.max_k, graph, mppi,
                               action_states=config.action_states)
        _, verdicts = judge_precisions(acc, config.tolerance)
        best = min(trial, key=lambda n: _closeness(acc[n], verdicts[n]))
        log.info("int8 static keeping layers %s in float: action error %.4f (%s)", keep_of[best],
                 acc[best].action_error, "accepted" if verdicts[best].accepted else verdicts[best].reason)
        if verdicts[best].accepted:
            return best, trial[best], acc[best], verdicts[best]
        kept = keep_of[best]
    return None


def log_damage(sets: Sequence[TransitionSet]) -> list[dict[str, Any]]:
    """The `.tlog` sources in `sets` that were read past damage: file, damaged record offsets, truncation."""
    out = []
    for ts in sets:
        for meta in ts.meta.get("sources", [ts.meta]):
            if meta.get("format") == "tlog" and (meta.get("bad_offsets") or meta.get("truncated_at") is not None):
                out.append({"source": meta["source"], "bad_offsets": list(meta["bad_offsets"]),
                            "truncated_at": meta["truncated_at"]})
    return out


def reference_path(models_dir: Path) -> Path:
    return models_dir / "world_model_fp32.onnx"


def calibrate(
    bundle_path: str | os.PathLike[str],
    data_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: CalibrateConfig = CalibrateConfig(),
    holdout_paths: Sequence[str | os.PathLike[str]] = (),
    profile_kind: str = "ardupilot",
    stage: Callable[[str, int, int], None] | None = None,
    on_log_error: str = "raise",
) -> CalibrationResult:
    """Run stages 1-5 (see the module docstring); `stage(name, done, total)` reports progress.

    `on_log_error` is what a damaged `.tlog` record does: "raise" (an error naming the file and byte), "stop"
    (use the log up to it) or "skip" (read on past it); what was lost is in the result's `data.log_damage`."""
    def tick(name: str, done: int, total: int) -> None:
        if stage is not None:
            stage(name, done, total)

    out = Path(out_dir)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(bundle_path)
    spec = bundle.spec
    data = load_transitions(data_paths, spec, profile_kind, on_error=on_log_error)
    held = load_transitions(holdout_paths, spec, profile_kind, on_error=on_log_error) if holdout_paths else None
    train, holdout = split_data(data, held, config.holdout_fraction, config.seed)
    tick("data", 1, 1)

    src = models / "source_world_model.onnx"
    shutil.copyfile(bundle.path_of("world_model"), src)
    n_files = len(config.precisions) - 1 + len(config.methods) * ("int8_static" in config.precisions)
    done = [0]

    def quantized(name: str) -> None:
        done[0] += 1
        tick("quantize", done[0], n_files)

    files, fp16 = quantize_all(src, models, train, config, spec, quantized)
    files = {"fp32": files["fp32"], **{n: p for n, p in files.items() if n != "fp32"}}

    raw_planner = dict(bundle.manifest.calibration.get("planner", {}))
    mppi = MppiConfig(**{k: raw_planner[k] for k in ("samples", "horizon", "noise_sigma", "temperature",
                                                      "noise_smoothing") if k in raw_planner})
    graph = PlannerGraphConfig(mppi.samples, mppi.horizon)
    done[0] = 0

    def measured(name: str) -> None:
        done[0] += 1
        tick("accuracy", done[0], len(files))

    acc = measure_accuracy(files, holdout, config.max_k, graph, mppi, action_states=config.action_states,
                           progress=measured)
    horizon, verdicts = judge_precisions(acc, config.tolerance)
    statics = [n for n in files if n.startswith("int8_static")]
    passing = [n for n in statics if verdicts[n].accepted]
    if statics and not passing:
        closest = min(statics, key=lambda n: _closeness(acc[n], verdicts[n]))
        retry = _retry_keeping_float(src, models, train, holdout, closest, config, graph, mppi)
        if retry is not None:
            name, path, a, v = retry
            files[name], acc[name], verdicts[name] = path, a, v
            statics.append(name)
    # Among the int8 static variants, the accepted one that plans closest to fp32 represents int8 static.
    ranked = sorted((n for n in statics if verdicts[n].accepted), key=lambda n: _closeness(acc[n], verdicts[n]))
    refused = {n: v.reason for n, v in verdicts.items() if not v.accepted}
    candidates = ["fp32"] + [n for n in files if n != "fp32" and not n.startswith("int8_static")
                             and verdicts[n].accepted]
    candidates += ranked[:1]

    threshold = disagreement_threshold(predictor(files["fp32"]), holdout.episodes(), spec, horizon,
                                       config.disagreement_quantile, config.disagreement_margin)

    sweep_models = {n: files[n] for n in candidates if not n.startswith("fp16") or (fp16 or {}).get("native")}
    # Horizons past the calibrated one are not candidates; the calibrated one always is.
    sweep_cfg = replace(config.sweep, horizons=tuple(sorted({h for h in config.sweep.horizons if h <= horizon}
                                                            | {horizon})))
    tick("budget", 0, len(sweep_cfg.samples) * len(sweep_cfg.horizons))
    points = sweep(sweep_models, spec, sweep_cfg, holdout.state, lambda d, t: tick("budget", d, t))
    # fp16 computed through casts (no fp16 kernels on this EP) is fp32 with extra work: not a candidate.
    chosen, budget = _choose(points, list(sweep_models), spec, sweep_cfg, horizon)
    # The speed-up is reported for the closest int8 static model even when it was refused: what it would have paid.
    refused_static = [] if ranked or not statics else [min(statics, key=lambda n: _closeness(acc[n], verdicts[n]))]
    speed = speedup({**sweep_models, **{n: files[n] for n in refused_static}}, spec, holdout.state,
                    config.speed_point, config.speed_steps)
    for name in files:
        if name not in candidates and name in verdicts and verdicts[name].accepted and name.startswith("int8_static"):
            verdicts[name] = Verdict(name, True, verdicts[name].horizon, verdicts[name].kstep_excess,
                                     verdicts[name].reason + "; a more accurate int8 static variant represents it")
    if not any(n.startswith("int8") for n in candidates) and any(n.startswith("int8") for n in files):
        log.warning("every int8 precision failed the tolerance; keeping fp32 (%s)", refused)

    planner = {**raw_planner, "samples": budget["samples"], "horizon": budget["horizon"],
               "noise_sigma": mppi.noise_sigma, "temperature": mppi.temperature,
               "noise_smoothing": mppi.noise_smoothing}
    quantization = {
        "chosen": chosen, "candidates": list(sweep_models), "refused": refused,
        "verdicts": {n: v.to_dict() for n, v in verdicts.items()}, "fp16": fp16,
        "methods": list(config.methods), "per_channel": config.per_channel,
    }
    per_precision = {n: {"normalised_rmse": a.curve.to_dict()["normalised_rmse"], "one_step": round(a.one_step, 6)}
                     for n, a in acc.items()}
    kstep = {"tolerance": config.tolerance.kstep_tolerance, "recommended_horizon": horizon,
             **acc["fp32"].curve.to_dict(), "per_precision": per_precision}
    calibration = {"kstep": kstep, "disagreement_threshold": threshold, "budget": budget,
                   "quantization": quantization}
    result = CalibrationResult(
        bundle=str(bundle.root), out_dir=out,
        data={"train": len(train), "holdout": len(holdout), "sources": [str(p) for p in data_paths],
              "holdout_episodes": holdout.n_episodes, "on_log_error": on_log_error,
              "log_damage": log_damage([data] + ([held] if held is not None else []))},
        files=files, accuracy=acc, verdicts=verdicts, horizon=horizon, chosen=chosen, refused=refused,
        disagreement_threshold=threshold, fp16=fp16, budget=budget, planner=planner, speedup=speed,
        quantization=quantization, tolerance_used=config.tolerance, points=points, sweep_config=sweep_cfg,
        manifest_calibration=calibration,
    )
    pack_chosen(result)
    tick("bundle", 1, 1)
    return result


def pack_chosen(result: CalibrationResult) -> Path:
    """(Re-)write `<out>/bundle` with the chosen precision's planner graph and `calibration.json`."""
    target = result.out_dir / "bundle"
    if target.exists():
        shutil.rmtree(target)
    packed = pack_precision_bundle(result.bundle, target, result.files[result.chosen], result.chosen,
                                   result.planner, result.manifest_calibration)
    result.calibrated_bundle = packed.root
    (result.out_dir / "calibration.json").write_text(json.dumps(result.to_dict(), indent=2, default=_json) + "\n")
    return packed.root


def closed_loop_refusals(summary: Mapping[str, Mapping[str, Any]], names: Sequence[str], max_ratio: float,
                         reference: str = "fp32") -> dict[str, str]:
    """Which of `names` the closed loop refuses, and why: mean tracking RMSE over the paired seeds more than
    `max_ratio` times `reference`'s, fewer landed flights than it, no seed every precision completed, or
    not flown at all (an unflown precision is not known to fly)."""
    ref = summary.get(reference)
    refused: dict[str, str] = {}
    for name in names:
        if name == reference:
            continue
        s = summary.get(name)
        ratio = float(s["ratio_to_fp32"]) if s is not None else float("nan")
        if s is None:
            refused[name] = "closed loop: not flown"
        elif not math.isfinite(ratio):
            refused[name] = "closed loop: no seed on which every precision completed its flight"
        elif ratio > max_ratio:
            refused[name] = (f"closed loop: mean figure-eight RMSE {s['rmse_mean_m']:.3f} m is {ratio:.2f}x "
                             f"{reference}'s {ref['rmse_mean_m'] if ref else float('nan'):.3f} m over "
                             f"{s['seeds_compared']} paired seeds (allowed {max_ratio:.2f}x)")
        elif ref is not None and s["succeeded"] < ref["succeeded"]:
            refused[name] = (f"closed loop: landed {s['succeeded']} of {s['flights']} flights, "
                             f"{reference} {ref['succeeded']}")
    return refused


def apply_closed_loop_gate(result: CalibrationResult, closed_loop: Mapping[str, Any], max_ratio: float = 1.10
                           ) -> CalibrationResult:
    """Refuse every candidate precision the flights in `closed_loop` (`summary`: `closed_loop.summarise`)
    refuse, choose again among the rest (fp32 always remains) from the same budget sweep, record the
    verdict in the result and the manifest (`calibration.closed_loop`) and re-pack the bundle."""
    candidates = list(result.quantization.get("candidates", [result.chosen]))
    refusals = closed_loop_refusals(closed_loop["summary"], candidates, max_ratio)
    spec = load_bundle(result.bundle).spec
    before, _ = _choose(result.points, candidates, spec, result.sweep_config, result.horizon)  # without the gate
    for name, why in refusals.items():
        result.refused[name] = why
        v = result.verdicts.get(name)
        result.verdicts[name] = Verdict(name, False, v.horizon if v else 0, v.kstep_excess if v else 0.0, why)
    # Chosen again from the same sweep among what passed every gate (nothing refused: the same choice).
    remaining = [n for n in candidates if n not in refusals]
    result.chosen, result.budget = _choose(result.points, remaining, spec, result.sweep_config, result.horizon)
    result.planner = {**result.planner, "samples": result.budget["samples"], "horizon": result.budget["horizon"]}
    if before in refusals:
        log.warning("closed loop refused %s (%s); the calibrated bundle keeps %s", before, refusals[before],
                    result.chosen)
    gate = {"max_ratio": max_ratio, "chosen_before": before, "chosen": result.chosen, "refused": refusals,
            "ratios": {n: s["ratio_to_fp32"] for n, s in closed_loop["summary"].items()},
            "seeds": list(closed_loop.get("seeds", [])), "planner": closed_loop.get("planner")}
    result.closed_loop = {**closed_loop, "gate": gate}
    result.quantization = {**result.quantization, "chosen": result.chosen, "refused": dict(result.refused),
                           "verdicts": {n: v.to_dict() for n, v in result.verdicts.items()}}
    result.manifest_calibration = {**result.manifest_calibration, "budget": result.budget,
                                   "quantization": result.quantization, "closed_loop": gate}
    pack_chosen(result)
    return result


def _json(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def _choose(points: Sequence[SweepPoint], candidates: Sequence[str], spec: Any, sweep_cfg: SweepConfig,
            horizon: int) -> tuple[str, dict[str, Any]]:
    """The accepted precision whose budget is largest (ties: lower p99; then the faster kind)."""
    records = {n: budget_record(points, n, spec, sweep_cfg, max_horizon=horizon) for n in candidates}

    def key(n: str) -> tuple[int, int, float, int]:
        r = records[n]
        kind = next((i for i, k in enumerate(SPEED_ORDER) if n.startswith(k)), len(SPEED_ORDER))
        return (int(r["fits"]), r["samples"] * r["horizon"] if r["fits"] else 0, -r["p99_ms"], -kind)

    chosen = max(candidates, key=key)
    return chosen, records[chosen]


def speedup(world_models: dict[str, Path], spec: Any, states: np.ndarray, point: tuple[int, int], steps: int
            ) -> dict[str, Any]:
    """Medians of interleaved steps at (K, H) per precision, and the ratio to fp32's (wall and CPU)."""
    K, H = point
    cfg = SweepConfig(samples=(K,), horizons=(H,), steps=steps, warmup=3)
    pts = {p.precision: p for p in sweep(world_models, spec, cfg, states)}
    ref = pts["fp32"]
    return {"samples": K, "horizon": H, "steps": steps, "precisions": {
        n: {"median_ms": round(p.median_ms, 3), "p99_ms": round(p.p99_ms, 3),
            "cpu_median_ms": round(p.cpu_median_ms, 3), "speedup": round(ref.median_ms / p.median_ms, 3),
            "cpu_speedup": round(ref.cpu_median_ms / p.cpu_median_ms, 3)}
        for n, p in pts.items()}}
