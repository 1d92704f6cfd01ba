"""`dreamlink quantize` and `dreamlink calibrate`: argparse wiring, progress bars and output for people.

`dreamlink/cli.py` calls `add_calibration_commands(subparsers)`; each handler returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
ON_LOG_ERROR = ("raise", "stop", "skip")  # as `dreamlink train --on-log-error`
ON_LOG_ERROR_HELP = ".tlog: at a damaged record stop with an error, use the part before it, or skip it"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _kxh(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected SAMPLESxHORIZON, e.g. 512x15; got {text!r}")
    return int(parts[0]), int(parts[1])


def _bar(total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def add_calibration_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    q = sub.add_parser("quantize", help="write the bundle's world model at one precision (int8 static: calibrated)")
    q.add_argument("--bundle", required=True)
    q.add_argument("--data", nargs="+", default=[], help="calibration data: .tlog flight logs and/or .npz sets")
    q.add_argument("--precision", default="int8_static", choices=("fp32", "fp16", "int8_dynamic", "int8_static"))
    q.add_argument("--method", default="minmax", choices=("minmax", "entropy", "percentile"))
    q.add_argument("--per-channel", action="store_true")
    q.add_argument("--keep-float", nargs="*", default=[], help="MatMul node names to leave in fp32")
    q.add_argument("--autopilot", default="ardupilot", choices=("ardupilot", "px4"), help="profile for .tlog data")
    q.add_argument("--on-log-error", default="raise", choices=ON_LOG_ERROR, help=ON_LOG_ERROR_HELP)
    q.add_argument("--out", required=True, help="world model .onnx to write")
    q.set_defaults(func=cmd_quantize)

    c = sub.add_parser("calibrate", help="precisions, k-step horizon, disagreement threshold and device budget; "
                                         "writes a calibrated bundle and a report")
    c.add_argument("--bundle", required=True)
    c.add_argument("--data", nargs="+", required=True, help=".tlog flight logs and/or .npz SITL transition sets")
    c.add_argument("--holdout", nargs="*", default=[], help="held-out data (default: 20%% of --data's episodes)")
    c.add_argument("--out", default=None, help="folder for the calibrated bundle and report "
                                              "(default: <bundle>-calibrated beside the bundle)")
    c.add_argument("--autopilot", default="ardupilot", choices=("ardupilot", "px4"), help="profile for .tlog data")
    c.add_argument("--on-log-error", default="raise", choices=ON_LOG_ERROR, help=ON_LOG_ERROR_HELP)
    c.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8_dynamic", "int8_static"])
    c.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    c.add_argument("--per-channel", action="store_true")
    c.add_argument("--tolerance", type=float, default=0.4, help="k-step normalised RMSE that sets the horizon")
    c.add_argument("--max-kstep-excess", type=float, default=0.10, help="allowed k-step error over fp32's")
    c.add_argument("--max-action-error", type=float, default=0.05, help="allowed first-action RMS vs fp32")
    c.add_argument("--max-k", type=int, default=40)
    c.add_argument("--share", type=float, default=0.5, help="share of the control period planning may take")
    c.add_argument("--samples", type=_ints, default=(64, 128, 256, 512, 1024))
    c.add_argument("--horizons", type=_ints, default=(10, 15, 20, 30))
    c.add_argument("--steps", type=int, default=40, help="timed steps per setting and precision")
    c.add_argument("--speed-point", type=_kxh, default=(512, 15))
    c.add_argument("--fly-seeds", type=int, default=0, help="closed loop: lockstep quad SITL flights per precision")
    c.add_argument("--fly-planner", type=_kxh, default=None, help="closed loop K x H (default: the calibrated one)")
    c.add_argument("--laps", type=float, default=1.0)
    c.add_argument("--fly-tolerance", type=float, default=1.10,
                   help="closed loop gate: a precision whose mean RMSE exceeds this many times fp32's is refused")
    c.add_argument("--fly-noise", action="store_true",
                   help="also fly fp32 with only its planner noise seed moved (how noisy the figure is)")
    c.add_argument("--fly-workers", type=int, default=1, help="lockstep flights side by side")
    c.set_defaults(func=cmd_calibrate)


def cmd_quantize(args: argparse.Namespace) -> int:
    from dreamlink.bundle import BundleError, load_bundle
    from dreamlink.calibration.quantize import QuantizeConfig, quantize_world_model
    from dreamlink.calibration.reader import TransitionReader, load_transitions

    try:
        bundle = load_bundle(args.bundle)
        config = QuantizeConfig(args.precision, args.method, args.per_channel, tuple(args.keep_float))
        factory = None
        if args.precision == "int8_static":
            if not args.data:
                print("dreamlink quantize: int8_static needs --data (flight logs or SITL transitions)", file=sys.stderr)
                return EXIT_REFUSED
            data = load_transitions(args.data, bundle.spec, args.autopilot, on_error=args.on_log_error)
            print(f"calibration data: {len(data)} transitions in {data.n_episodes} episodes")

            def factory() -> TransitionReader:
                return TransitionReader(data)

        out = quantize_world_model(bundle.path_of("world_model"), args.out, config, factory)
    except (BundleError, ValueError, OSError) as e:
        print(f"dreamlink quantize: {_with_log_hint(e)}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"wrote {out} ({config.name})")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from dreamlink.bundle import BundleError
    from dreamlink.calibration.budget import SweepConfig
    from dreamlink.calibration.calibrate import CalibrateConfig
    from dreamlink.calibration.horizon import AcceptTolerance

    bundle = Path(args.bundle)
    out = Path(args.out) if args.out else bundle.resolve().parent / f"{bundle.resolve().name}-calibrated"
    try:
        config = CalibrateConfig(
            precisions=tuple(args.precisions), methods=tuple(args.methods), per_channel=args.per_channel,
            tolerance=AcceptTolerance(args.tolerance, args.max_kstep_excess, args.max_action_error),
            max_k=args.max_k, sweep=SweepConfig(args.samples, args.horizons, args.steps, share=args.share),
            speed_point=args.speed_point,
        )
    except ValueError as e:
        print(f"dreamlink calibrate: {e}", file=sys.stderr)
        return EXIT_REFUSED
    fly = FlySettings(args.fly_seeds, args.fly_planner, args.laps, args.fly_tolerance, args.fly_noise,
                      args.fly_workers) if args.fly_seeds > 0 else None
    try:
        result = calibrate_and_fly(bundle, args.data, out, config, args.holdout, args.autopilot, fly,
                                   args.on_log_error)
    except (BundleError, ValueError, OSError) as e:
        print(f"dreamlink calibrate: {_with_log_hint(e)}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK if result.budget and result.budget["fits"] else EXIT_FAILED


def _with_log_hint(e: Exception) -> str:
    """The error, and for a damaged .tlog the command-line way past it (the reader's own message names its API)."""
    from dreamlink.firmware_bridge.tlog import TlogError

    if isinstance(e, TlogError):
        return (f"{e.path}: {e.reason} at byte {e.offset} (after {e.report.records_read} readable records); "
                f"--on-log-error stop uses the log up to it, --on-log-error skip reads on past it")
    return str(e)


@dataclass(frozen=True)
class FlySettings:
    """The closed loop after calibrating: paired lockstep seeds per precision and the gate."""

    seeds: int
    planner: tuple[int, int] | None = None  # K x H to fly (None: the calibrated planner)
    laps: float = 1.0
    tolerance: float = 1.10  # a precision whose mean RMSE exceeds this many times fp32's is refused
    noise: bool = False  # fp32 once more with only its planner noise moved
    workers: int = 1


def calibrate_and_fly(bundle: Path, data: Sequence[str | os.PathLike[str]], out: Path, config: Any,
                      holdout: Sequence[str | os.PathLike[str]] = (), flavour: str = "ardupilot",
                      fly: FlySettings | None = None, on_log_error: str = "raise") -> Any:
    """`calibrate` with progress bars, then (with `fly`) the closed loop and its gate, the report and a summary
    on stdout; the CalibrationResult. One path for `dreamlink calibrate` and `make calibrate-quad`."""
    from dreamlink.calibration.calibrate import apply_closed_loop_gate, calibrate
    from dreamlink.calibration.report import write_report

    bars: dict[str, Any] = {}

    def stage(name: str, done: int, total: int) -> None:
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = _bar(total, name, "step")
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    try:
        result = calibrate(bundle, data, out, config, holdout, flavour, stage, on_log_error)
    finally:
        for bar in bars.values():
            bar.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result.machine_note = (f"Load average {load:.2f} on {os.cpu_count()} cores when timing ended. Speed-ups are "
                           "ratios of medians of steps interleaved in one process, one thread (load from other "
                           "processes falls on every precision alike); wall-clock figures include time other "
                           "processes held the core, CPU-time columns do not.")
    if fly is not None:
        loop = fly_precisions(result, fly.seeds, fly.planner, flavour, fly.laps, fly.tolerance, fly.noise,
                              fly.workers)
        apply_closed_loop_gate(result, loop, fly.tolerance)
    report = write_report(out, result.to_dict(), result.curves)
    _print_summary(result, report)
    return result


NOISE_NAME, NOISE_OFFSET = "fp32_noise", 1000  # fp32 again, planner noise seed + 1000: the figure's own noise


def fly_precisions(result: Any, n_seeds: int, fly_planner: tuple[int, int] | None = None, flavour: str = "ardupilot",
                   laps: float = 1.0, max_ratio: float = 1.10, noise: bool = False, workers: int = 1
                   ) -> dict[str, Any]:
    """Closed loop, paired seeds 1..n_seeds: fp32 and every candidate precision (each one the gate may keep),
    at the calibrated planner or `fly_planner` (K, H); with `noise`, fp32 once more on moved planner noise."""
    import shutil

    from dreamlink.calibration.bundles import pack_precision_bundle
    from dreamlink.calibration.closed_loop import closed_loop, summarise

    k, h = fly_planner or (result.planner["samples"], result.planner["horizon"])
    planner = {**result.planner, "samples": k, "horizon": h}
    names = ["fp32", result.chosen, *result.quantization["candidates"]]
    bundles = {}
    for name in dict.fromkeys(names):
        target = result.out_dir / "closed_loop" / f"bundle-{name}"
        if target.exists():
            shutil.rmtree(target)
        bundles[name] = pack_precision_bundle(result.bundle, target, result.files[name], name, planner).root
    if noise:
        bundles[NOISE_NAME] = bundles["fp32"]
    seeds = list(range(1, n_seeds + 1))
    with _bar(len(seeds) * len(bundles), "fly", "flight") as bar:
        outcomes = closed_loop(bundles, seeds, result.out_dir / "closed_loop", flavour, laps,
                               lambda o: bar.update(1), {NOISE_NAME: NOISE_OFFSET} if noise else None, workers)
    return {"seeds": seeds, "laps": laps, "flavour": flavour, "planner": planner,
            "noise_reference": NOISE_NAME if noise else None,
            "summary": summarise(outcomes, max_ratio=max_ratio), "flights": [o.__dict__ for o in outcomes]}


def _print_summary(result: Any, report: Path) -> None:
    b = result.budget
    print(f"precision      {result.chosen}" + (f"  (refused: {', '.join(result.refused)})" if result.refused else ""))
    for name, why in result.refused.items():
        print(f"  refused {name}: {why}")
    print(f"horizon        {result.horizon} (k-step error under {result.tolerance_used.kstep_tolerance:g})")
    print(f"disagreement   {result.disagreement_threshold:.4g} (state half-ranges)")
    print(f"budget         K={b['samples']} x H={b['horizon']} p99 {b['p99_ms']:.2f} ms, max {b['rate_hz']:.1f} Hz"
          + ("" if b["fits"] else "  -- does NOT fit the control rate"))
    if result.speedup:
        s = result.speedup
        ratios = ", ".join(f"{n} {v['speedup']:.2f}x" for n, v in s["precisions"].items() if n != "fp32")
        print(f"speed-up       K={s['samples']} H={s['horizon']}: {ratios}")
    if result.closed_loop:
        for n, s in result.closed_loop["summary"].items():
            print(f"closed loop    {n}: RMSE mean {s['rmse_mean_m']:.3f} m, median {s['rmse_median_m']:.3f} m over "
                  f"{s['seeds_compared']} seeds ({s['ratio_to_fp32']:.2f}x fp32)")
        gate = result.closed_loop.get("gate", {})
        for n, why in gate.get("refused", {}).items():
            print(f"  closed loop refused {n}: {why}")
    print(f"bundle         {result.calibrated_bundle}")
    print(f"report         {report}")
