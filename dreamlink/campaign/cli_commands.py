"""`dreamlink campaign eval|collect|bundle|report` and `dreamlink replay`: the people-facing side of campaigns
(progress bars, printed figures). `add_campaign_commands(subparsers)` adds them to the `dreamlink` parser;
`python -m dreamlink.campaign.cli_commands ...` runs them stand-alone."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected >= 0, got {value}")
    return value


def _spec(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The campaign file (or the defaults) with the command line's overrides, validated."""
    import dataclasses

    from dreamlink.campaign.spec import CampaignError, CampaignSpec, CollectSpec, load_campaign

    spec, text = CampaignSpec(), None
    if args.campaign:
        spec = load_campaign(args.campaign)
        text = Path(args.campaign).read_text()
    for key in ("vehicle", "task"):
        wanted = getattr(args, key, None)
        if wanted and wanted != getattr(spec, key):
            if args.campaign:
                raise CampaignError(f"--{key} {wanted} but {args.campaign} says campaign.{key} = "
                                    f"{getattr(spec, key)!r}")
            raise CampaignError(f"--{key} {wanted!r}: campaigns fly vehicle 'quad', task 'figure8'")
    if args.flights is not None:
        spec = dataclasses.replace(spec, flights=args.flights)
    if getattr(args, "seconds", None):
        spec = dataclasses.replace(spec, collect=CollectSpec(seconds=args.seconds))
    return spec, text


def _options(args: argparse.Namespace) -> Any:
    from dreamlink.campaign.runner import RayOptions

    return RayOptions(address=args.address, num_cpus=args.num_cpus or None, max_concurrent=args.max_concurrent)


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="flight", dynamic_ncols=True, file=sys.stderr)


def _progress(bar: Any) -> Any:
    def update(state: Any, job: Any, output: Any) -> None:
        bar.update(1)
        bar.set_postfix(ok=state.successes, fail=state.failures, err=state.errors,
                        per_min=f"{state.flights_per_min:.1f}")

    return update


def _phases(args: argparse.Namespace, flights: int) -> list[Any]:
    from dreamlink.campaign.runner import Phase

    if not args.first_serial:
        return []
    return [Phase(min(args.first_serial, flights), 1), Phase(flights, args.max_concurrent)]


def _print_rates(results: Sequence[Any]) -> dict[str, Any]:
    rates = {}
    for r in results:
        label = f"{r.max_concurrent} worker{'s' if r.max_concurrent > 1 else ''}"
        print(f"  {label:<10} {r.flights_per_min:6.2f} flights/min ({r.flights} flights in {r.seconds:.0f} s)")
        rates[label] = {"flights_per_min": r.flights_per_min, "flights": r.flights, "seconds": r.seconds}
    if len(results) == 2 and results[0].flights_per_min > 0:
        ratio = results[1].flights_per_min / results[0].flights_per_min
        print(f"  scaling {results[1].max_concurrent} vs {results[0].max_concurrent} workers: x{ratio:.2f}")
        rates["ratio"] = ratio
    return rates


def cmd_eval(args: argparse.Namespace) -> int:
    from dreamlink.campaign.report import write_report
    from dreamlink.campaign.runner import open_campaign, run_eval
    from dreamlink.campaign.table import ResultsTable

    spec, text = _spec(args)
    if args.parquet:
        import importlib.util

        from dreamlink.campaign.spec import CampaignError

        if importlib.util.find_spec("pyarrow") is None:
            raise CampaignError("--parquet needs pyarrow (pip install pyarrow); results.csv is written without it")
    folder = open_campaign(Path(args.out), spec, "eval", Path(args.bundle), text)
    recorded = len(ResultsTable(folder.results).recorded())
    print(f"campaign {folder.root}: {spec.flights} {spec.autopilot} {spec.control} flights ({recorded} recorded)")
    with _bar(max(0, spec.flights - recorded), "flights") as bar:
        results = run_eval(folder, spec.flights, _options(args), _phases(args, spec.flights), _progress(bar))
    rates = _print_rates(results)
    rows = [r for i, r in sorted(ResultsTable(folder.results).recorded().items()) if i < spec.flights]
    summary = write_report(folder.root, rows, parquet=args.parquet, keep_all_tlogs=args.keep_all_tlogs,
                           extra={"flights_per_min": rates} if rates else None)
    low, high = summary["success_rate_95ci"]
    print(f"  success rate {100 * summary['success_rate']:.1f} % ({summary['successes']}/{summary['flights']}), "
          f"95 % interval {100 * low:.1f}-{100 * high:.1f} %")
    rmse = summary["rmse_m"]
    if rmse["n"]:
        print(f"  tracking RMSE p50 {rmse['p50']:.3f} m, p90 {rmse['p90']:.3f} m, max {rmse['max']:.3f} m")
    print(f"  table {folder.results}; report {folder.root / 'report.md'}; plots {folder.root / 'plots'}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from dreamlink.campaign.runner import open_campaign
    from dreamlink.campaign.shards import DATA_DIR, MANIFEST_NAME, run_collect

    spec, text = _spec(args)
    folder = open_campaign(Path(args.out), spec, "collect", None, text)
    with _bar(spec.flights, "collect") as bar:
        results = run_collect(folder, spec.flights, _options(args), _phases(args, spec.flights), _progress(bar))
    _print_rates(results)
    manifest = folder.root / DATA_DIR / MANIFEST_NAME
    shards = json.loads(manifest.read_text())["shards"] if manifest.exists() else []
    print(f"  {len(shards)} shards, {sum(s['transitions'] or 0 for s in shards)} transitions; manifest {manifest}")
    return 0 if shards else 1


def cmd_bundle(args: argparse.Namespace) -> int:
    """Train the quad world model on a collection and export the bundle (the settings of `demo quad`)."""
    import shutil

    from dreamlink.campaign.shards import load_shards
    from dreamlink.demo import (
        QUAD_IGNORE_INPUTS,
        QUAD_KSTEP_TOLERANCE,
        QUAD_PLANNER,
        QUAD_TASK_TOLERANCES,
        export_bundle,
    )
    from dreamlink.learning.train import TrainConfig, train_world_model
    from dreamlink.learning.transitions import provenance
    from dreamlink.learning.world_model import WorldModelConfig

    data = load_shards(args.data)
    train_set, holdout = data.split_by_episode(max(0.1, 1 / max(2, data.n_episodes)), args.seed)
    print(f"train on {len(train_set)} transitions ({data.n_episodes} flights), hold out {len(holdout)}")
    result = train_world_model(train_set, WorldModelConfig(hidden=64, layers=2, ensemble_size=args.ensemble,
                                                           ignore_inputs=QUAD_IGNORE_INPUTS),
                               TrainConfig(epochs=args.epochs, seed=args.seed))
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    export_bundle(result.model, data.spec, out, holdout=holdout, training={**result.summary(), **provenance(data)},
                  planner=QUAD_PLANNER, tolerance=QUAD_KSTEP_TOLERANCE, task_tolerances=QUAD_TASK_TOLERANCES)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dreamlink.campaign.report import write_report
    from dreamlink.campaign.runner import load_campaign_folder
    from dreamlink.campaign.table import ResultsTable

    folder = load_campaign_folder(Path(args.campaign))
    rows = [r for _, r in sorted(ResultsTable(folder.results).recorded().items())]
    old = folder.root / "report.json"
    rates = json.loads(old.read_text()).get("flights_per_min") if old.exists() else None
    summary = write_report(folder.root, rows, parquet=args.parquet, keep_all_tlogs=True,
                           extra={"flights_per_min": rates} if rates else None)
    low, high = summary["success_rate_95ci"]
    print(f"success rate {100 * summary['success_rate']:.1f} % of {summary['flights']} "
          f"(95 % interval {100 * low:.1f}-{100 * high:.1f} %); {folder.root / 'report.md'}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from dreamlink.campaign.replay import replay_flight

    replay = replay_flight(Path(args.campaign), args.flight, Path(args.out) if args.out else None)
    row = replay.replayed
    print(f"flight {args.flight} (seed {row['seed']}): {row['outcome']} {row.get('reason') or ''}".rstrip())
    if row.get("tracking_rmse_m") is not None:
        print(f"  tracking RMSE {row['tracking_rmse_m']:.4f} m, landed {row.get('landed')}, "
              f"fallbacks {row.get('fallbacks')}")
    if row.get("error"):
        print(f"  error: {row['error']}")
    if replay.tlog is not None:
        print(f"  tlog {replay.tlog}")
    if replay.recorded is None:
        print("  (not in the campaign's results: nothing to compare)")
        return 0
    diff = replay.differences()
    if diff:
        print("  differs from the recorded flight: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items()))
        return 1
    print("  same outcome and figures as recorded")
    return 0


def _ray_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray")
    g.add_argument("--address", default=None, help="a Ray cluster (ray://HEAD:10001 or HEAD:6379); default "
                   "RAY_ADDRESS, else a local Ray started for this campaign")
    g.add_argument("--num-cpus", type=_nonnegative_int, default=0, help="local Ray: CPUs to use (0: all)")
    g.add_argument("--max-concurrent", type=_nonnegative_int, default=0,
                   help="flights in the air at once (0: one per CPU)")
    g.add_argument("--first-serial", type=_nonnegative_int, default=0,
                   help="fly the first N flights one at a time, then the rest with --max-concurrent, and print "
                        "flights/minute of both (a scaling measurement)")


def add_campaign_commands(subparsers: Any) -> None:
    """Add `campaign` (eval, collect, bundle, report) and `replay` to the `dreamlink` subcommands."""
    c = subparsers.add_parser("campaign", help="many randomised lockstep SITL flights on Ray: eval or collect")
    sub = c.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")

    e = sub.add_parser("eval", help="success rate of a bundle over randomised flights, with a report")
    e.add_argument("--bundle", required=True)
    e.add_argument("--campaign", default=None, help="campaign file (TOML); default: the built-in ranges")
    e.add_argument("--vehicle", default=None, help="checked against the campaign file (quad)")
    e.add_argument("--task", default=None, help="checked against the campaign file (figure8)")
    e.add_argument("--flights", type=_nonnegative_int, default=None, help="overrides campaign.flights")
    e.add_argument("--out", default="runs/campaign", help="campaign folder (started again: resumes)")
    e.add_argument("--parquet", action="store_true", help="also write results.parquet (needs pyarrow)")
    e.add_argument("--keep-all-tlogs", action="store_true", help="keep every flight's .tlog, not only the worst")
    _ray_args(e)
    e.set_defaults(func=cmd_eval)

    k = sub.add_parser("collect", help="transitions from randomised flights: shards + manifest for training")
    k.add_argument("--campaign", default=None, help="campaign file (TOML); default: the built-in ranges")
    k.add_argument("--vehicle", default=None)
    k.add_argument("--flights", type=_nonnegative_int, default=None)
    k.add_argument("--seconds", type=float, default=0.0, help="excitation per flight (overrides collect.seconds)")
    k.add_argument("--out", default="runs/collect", help="campaign folder; shards in OUT/data")
    _ray_args(k)
    k.set_defaults(func=cmd_collect)

    b = sub.add_parser("bundle", help="train a quad world model on collected shards and export a bundle")
    b.add_argument("--data", required=True, help="a collection's manifest.json")
    b.add_argument("--out", required=True, help="bundle folder to (re)create")
    b.add_argument("--epochs", type=_nonnegative_int, default=30)
    b.add_argument("--ensemble", type=_nonnegative_int, default=3)
    b.add_argument("--seed", type=_nonnegative_int, default=0)
    b.set_defaults(func=cmd_bundle)

    r = sub.add_parser("report", help="write a campaign folder's report again (all recorded flights)")
    r.add_argument("--campaign", required=True, help="campaign folder")
    r.add_argument("--parquet", action="store_true")
    r.set_defaults(func=cmd_report)

    p = subparsers.add_parser("replay", help="re-fly one recorded campaign flight, deterministically")
    p.add_argument("--campaign", required=True, help="campaign folder")
    p.add_argument("--flight", type=_nonnegative_int, required=True, help="flight index (results.csv 'index')")
    p.add_argument("--out", default=None, help="where the replay's .tlog goes (default CAMPAIGN/replays)")
    p.set_defaults(func=cmd_replay)


def main(argv: Sequence[str] | None = None) -> int:
    from dreamlink.campaign.spec import CampaignError

    parser = argparse.ArgumentParser(prog="python -m dreamlink.campaign.cli_commands")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_campaign_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CampaignError, FileNotFoundError, ValueError) as exc:
        print(f"dreamlink {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
