"""The one `dreamlink` command. Each subcommand is a thin shell over the library; this module
(and `demo.py`) is where output for people lives: tables, progress bars, plots."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dreamlink.learning import ACTIVATIONS
from dreamlink.spec import SPECS


def _vehicle(name: str) -> Any:
    if name not in SPECS:
        raise argparse.ArgumentTypeError(f"unknown vehicle {name!r}; known: {', '.join(sorted(SPECS))}")
    return SPECS[name]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected >= 0, got {v}")
    return v


def cmd_sitl(args: argparse.Namespace) -> int:
    from dreamlink.sim.motor_board import main as sitl_main

    argv = ["--out", args.out, "--seed", str(args.seed)] + (["--lockstep"] if args.lockstep else [])
    mode = "lockstep" if args.lockstep else "real time"
    print(f"SITL {args.vehicle} ({mode}, seed {args.seed}) sending MAVLink to {args.out}; Ctrl-C stops it", flush=True)
    return sitl_main(argv)


def cmd_collect(args: argparse.Namespace) -> int:
    from dreamlink.demo import collect_with_progress

    data = collect_with_progress(args.vehicle, args.transitions, args.seed, args.connect)
    path = data.save(args.out)
    print(f"wrote {len(data)} transitions to {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dreamlink.campaign.shards import load_shards
    from dreamlink.demo import train_with_progress
    from dreamlink.learning.train import save_checkpoint
    from dreamlink.learning.transitions import TransitionSet

    # a .json is a campaign's shard manifest (`dreamlink campaign collect`): its shards, hash-checked
    data = TransitionSet.concat([load_shards(p) if p.endswith(".json") else TransitionSet.load(p) for p in args.data])
    result = train_with_progress(data, args.hidden, args.layers, args.ensemble, args.epochs, args.seed,
                                 args.activation)
    save_checkpoint(result.model, args.out)
    print(f"holdout one-step RMSE: {json.dumps(result.holdout_one_step_rmse)}")
    print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dreamlink.demo import export_bundle, load_user_module

    if args.checkpoint:
        from dreamlink.learning.train import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        spec = model.spec
    else:
        spec = args.vehicle
        model = load_user_module(args.module, args.state_dict)
    export_bundle(model, spec, Path(args.out), data_path=args.data, horizon=args.horizon, samples=args.samples)
    return 0


def _flight_dir(args: argparse.Namespace) -> Path:
    """--out as given, else a new folder per start under --log-dir (a service restarts; logs must not mix)."""
    if args.out:
        return Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path(args.log_dir) / f"flight-{stamp}-{os.getpid()}"


def cmd_run(args: argparse.Namespace) -> int:
    from dreamlink.demo import print_flight_report
    from dreamlink.deploy.sdnotify import SdNotifier, WatchdogPet
    from dreamlink.runtime.onboard import MissionConfig, RunConfig, fly
    from dreamlink.runtime.session import SessionConfig

    planner = None
    if args.samples or args.horizon:
        from dreamlink.bundle import load_bundle
        from dreamlink.runtime.health import planner_config_for

        base = planner_config_for(load_bundle(args.bundle))
        planner = replace(base, samples=args.samples or base.samples, horizon=args.horizon or base.horizon)
    config = RunConfig(
        bundle=Path(args.bundle),
        connect=args.connect,
        rate_hz=args.rate_hz,
        ticks=args.ticks,
        lockstep=args.lockstep,
        out_dir=_flight_dir(args),
        seed=args.seed,
        planner=planner,
        session=SessionConfig(intra_op_threads=args.threads),
        autopilot=args.autopilot,
        use_policy=not args.no_policy,
        mission=MissionConfig(
            takeoff_altitude_m=args.altitude_m,
            half_width_m=args.half_width_m,
            speed_mps=args.speed_mps,
            laps=args.laps,
            baseline=args.baseline,
        ),
    )
    stop = threading.Event()
    # SIGTERM (systemd stop, kill) ends the flight through the same path as the tick limit, so
    # the vehicle is released and the logs are closed.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    notifier = SdNotifier.from_environ()
    pet = WatchdogPet(notifier, time.monotonic)
    try:
        result = fly(config, stop, on_ready=lambda: notifier.ready("flying"), on_tick=pet)
    finally:
        notifier.stopping()
        notifier.close()
    print_flight_report(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dreamlink.demo import demo_cartpole

    if args.vehicle == "quad":
        out = Path(args.out if args.out != "runs/demo-cartpole" else "runs/demo-quad")
        from dreamlink.quad_demo import FLAVOURS, QuadDemoConfig, demo_quad

        return demo_quad(out, QuadDemoConfig(args.seed, args.flights, args.seconds, args.epochs, args.laps,
                                             args.wind_mps, args.lockstep_seeds, args.reuse,
                                             hidden=args.hidden, activation=args.activation,
                                             autopilots=tuple(args.autopilot or FLAVOURS)))
    return demo_cartpole(Path(args.out), args.seed, args.transitions, args.ticks, args.epochs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dreamlink", description="dreamlink: learned world models onboard drones and robots, over MAVLink."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="the whole loop end to end: SITL, collect, train, export, fly, report")
    d.add_argument("vehicle", choices=["cartpole", "quad"])
    d.add_argument("--seed", type=_positive_int, default=0)
    d.add_argument("--out", default="runs/demo-cartpole", help="folder for data, bundle, flight logs, plots")
    d.add_argument("--transitions", type=_positive_int, default=20000)
    d.add_argument("--ticks", type=_positive_int, default=750, help="control ticks to fly (50 Hz)")
    d.add_argument("--epochs", type=_positive_int, default=40)
    d.add_argument("--flights", type=_positive_int, default=6, help="quad: randomised data-collection flights")
    d.add_argument("--seconds", type=float, default=60.0, help="quad: excitation seconds per flight")
    d.add_argument("--laps", type=float, default=2.0, help="quad: figure-eight laps")
    d.add_argument("--wind-mps", type=float, default=2.0, help="quad: mean wind in the flights")
    d.add_argument("--lockstep-seeds", type=int, default=0,
                   help="quad: fly N randomised lockstep seeds per flavour and control (RMSE table) instead")
    d.add_argument("--reuse", action="store_true", help="quad: reuse bundles already built in --out")
    d.add_argument("--hidden", type=_positive_int, default=64, help="quad: the world model's hidden width")
    d.add_argument("--autopilot", choices=["ardupilot", "px4"], action="append",
                   help="quad: only this autopilot flavour (repeatable; default both)")
    d.add_argument("--activation", choices=ACTIVATIONS, default="",
                   help="quad: the world model's hidden activation (default: dreamlink's); bundles get a suffix")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("sitl", help="run a SITL vehicle process speaking MAVLink over UDP")
    s.add_argument("vehicle", choices=["cartpole"])
    s.add_argument("--out", default="udp:127.0.0.1:14550", help="where to send MAVLink (the runtime listens there)")
    s.add_argument("--lockstep", action="store_true", help="advance one control period per actuator command")
    s.add_argument("--seed", type=_positive_int, default=0)
    s.set_defaults(func=cmd_sitl)

    c = sub.add_parser("collect", help="collect transitions from a lockstep SITL (started for you)")
    c.add_argument("vehicle", type=_vehicle)
    c.add_argument("--out", required=True, help="transitions file (.npz)")
    c.add_argument("--transitions", type=_positive_int, default=20000)
    c.add_argument("--seed", type=_positive_int, default=0)
    c.add_argument("--connect", default=None, help="listen for an already running lockstep SITL instead")
    c.set_defaults(func=cmd_collect)

    t = sub.add_parser("train", help="train an ensemble world model on collected transitions")
    t.add_argument("--data", required=True, nargs="+",
                   help="transitions file(s) (.npz) or campaign shard manifests (manifest.json)")
    t.add_argument("--out", required=True, help="checkpoint (.pt)")
    t.add_argument("--hidden", type=_positive_int, default=64)
    t.add_argument("--layers", type=_positive_int, default=2)
    t.add_argument("--ensemble", type=_positive_int, default=5)
    t.add_argument("--activation", choices=ACTIVATIONS, default="", help="hidden activation (default: dreamlink's)")
    t.add_argument("--epochs", type=_positive_int, default=40)
    t.add_argument("--seed", type=_positive_int, default=0)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a world model to ONNX, check parity, write a bundle")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint written by `dreamlink train`")
    src.add_argument("--module", help="your own model: FILE.py:NAME, NAME an nn.Module instance or a factory")
    e.add_argument("--state-dict", help="weights for --module (torch.save of a state_dict)")
    e.add_argument("--vehicle", type=_vehicle, default=SPECS["cartpole"], help="vehicle spec for --module")
    e.add_argument("--data", help="held-out transitions (.npz) for the k-step error curve")
    e.add_argument("--horizon", type=_positive_int, default=0, help="planner horizon to record (0: recommended)")
    e.add_argument("--samples", type=_positive_int, default=128)
    e.add_argument("--out", required=True, help="bundle folder to create")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("run", help="fly: the onboard runtime against a vehicle over MAVLink")
    r.add_argument("--bundle", required=True)
    r.add_argument("--connect", required=True, help="pymavlink connection, e.g. udp:127.0.0.1:14550 (listen)")
    r.add_argument("--rate-hz", type=float, default=0.0, help="control rate (default: the bundle's)")
    r.add_argument("--ticks", type=_positive_int, default=0, help="stop after N ticks (0: until Ctrl-C)")
    r.add_argument("--lockstep", action="store_true", help="run on simulator time (lockstep SITL)")
    r.add_argument("--out", default=None, help="flight log folder (default: a new one under --log-dir)")
    r.add_argument("--log-dir", default="runs", help="where a new flight-<time>-<pid> folder is made per start")
    r.add_argument("--samples", type=_positive_int, default=0)
    r.add_argument("--horizon", type=_positive_int, default=0)
    r.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    r.add_argument("--seed", type=_positive_int, default=0)
    r.add_argument("--no-policy", action="store_true",
                   help="ignore the bundle's distilled policy (no sampling prior, no policy fallback)")
    q = r.add_argument_group("multirotor mission (quad bundles): take off, figure-eight, land")
    q.add_argument("--autopilot", choices=["ardupilot", "px4"], default="", help="the flight controller's family")
    q.add_argument("--altitude-m", type=float, default=5.0, help="take-off altitude above the start point")
    q.add_argument("--half-width-m", type=float, default=3.0)
    q.add_argument("--speed-mps", type=float, default=2.0, help="mean speed along the figure-eight")
    q.add_argument("--laps", type=float, default=2.0, help="laps to fly (when --ticks is 0)")
    q.add_argument("--baseline", action="store_true",
                   help="stream the reference as position setpoints to the autopilot instead of planning")
    r.set_defaults(func=cmd_run)

    from dreamlink.calibration.cli_commands import add_calibration_commands
    from dreamlink.campaign.cli_commands import add_campaign_commands
    from dreamlink.deploy.cli_commands import add_deploy_commands

    add_deploy_commands(sub)
    add_campaign_commands(sub)
    add_calibration_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the CLI's job: one clear line, not a traceback, for known errors
        from dreamlink.bundle import BundleError

        if isinstance(e, (BundleError, FileNotFoundError, ValueError, TimeoutError)):
            print(f"dreamlink {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
