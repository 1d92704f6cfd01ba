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
from dreamlink.spec import SPECS, SpecError, load_vehicle

VEHICLE_HELP = "a shipped vehicle (cartpole, quad) or a vehicle file (NAME.toml)"


def _vehicle(name: str) -> Any:
    try:
        return load_vehicle(name)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected >= 0, got {v}")
    return v


def cmd_sitl(args: argparse.Namespace) -> int:
    from dreamlink.sim.__main__ import main as sitl_main

    argv = [args.vehicle, "--out", args.out, "--seed", str(args.seed)] + (["--lockstep"] if args.lockstep else [])
    what = args.vehicle
    if args.vehicle == "gym":
        if not args.vehicle_file:
            raise ValueError("sitl gym: --vehicle FILE is required (a vehicle file: state, action, [link]; its "
                             "[sim] gym_env or --env names the environment)")
        argv += ["--vehicle", args.vehicle_file] + (["--env", args.env] if args.env else [])
        what = f"gym {args.env or load_vehicle(args.vehicle_file).sim.gym_env}"  # type: ignore[union-attr]
    elif args.vehicle == "quad":
        argv += ["--flavour", args.autopilot]
        what = f"quad ({args.autopilot} flavour)"
    mode = "lockstep" if args.lockstep else "real time"
    print(f"SITL {what} ({mode}, seed {args.seed}) sending MAVLink to {args.out}; Ctrl-C stops it", flush=True)
    return sitl_main(argv)


def _say(text: str) -> None:
    print(f"   {text}", file=sys.stderr, flush=True)


def cmd_collect(args: argparse.Namespace) -> int:
    if args.vehicle.name == "quad":
        return _collect_live(args)
    from dreamlink.demo import collect_with_progress

    data = collect_with_progress(args.vehicle, args.transitions, args.seed, args.connect, args.vehicle_arg,
                                 args.episode_steps)
    path = data.save(args.out)
    print(f"wrote {len(data)} transitions to {path}")
    return 0


def _collect_live(args: argparse.Namespace) -> int:
    """`collect quad`: an excitation flight against a live autopilot, in real time."""
    from dreamlink.campaign.live import LiveCollectConfig, collect_live
    from dreamlink.learn import progress_bar

    if not args.connect or not args.autopilot:
        raise ValueError("collect quad needs --connect (where the autopilot's MAVLink arrives, e.g. "
                         "udpin:0.0.0.0:14550) and --autopilot ardupilot|px4")
    cfg = LiveCollectConfig(args.connect, args.autopilot, Path(args.out), args.minutes,
                            takeoff_altitude_m=args.altitude_m, box_half_width_m=args.box_m, in_air=args.in_air,
                            seed=args.seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    with progress_bar(round(args.minutes * 60 * 50), "excitation", "tick") as bar:
        result = collect_live(cfg, stop=stop, on_tick=lambda: bar.update(1), on_wait=bar.write,
                              on_phase=lambda text: bar.write(f"   {text}"))
    st = result.stats
    print(f"wrote {len(result.transitions)} transitions ({result.minutes:.2f} min) to "
          f"{result.out_dir / 'transitions.npz'}; flight log {result.out_dir / 'flight.tlog'}")
    print(f"   {st.ticks} ticks at {st.achieved_rate_hz:.1f} Hz, {st.stale_ticks} stale, shield clipped "
          f"{st.shield_clipped} / fenced {st.shield_fenced}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dreamlink.demo import QUAD_IGNORE_INPUTS, train_with_progress
    from dreamlink.learn import transitions_from_logs
    from dreamlink.learning.train import load_checkpoint, save_checkpoint
    from dreamlink.learning.transitions import provenance

    # .tlog: a flight log (ArduPilot or PX4, velocity setpoints); .json: a campaign's shard manifest; else .npz
    data = transitions_from_logs(args.data, autopilot=args.autopilot, on_error=args.on_log_error)
    print(f"data: {len(data)} transitions ({len(data) * data.spec.control_period_s / 60:.2f} min) from "
          f"{len(args.data)} file(s)", file=sys.stderr)
    if data.spec.name == "quad" and any(str(p).endswith(".tlog") for p in args.data):
        from dreamlink.learn import QUAD_KINEMATICS

        data = data.with_integrated_positions(QUAD_KINEMATICS)  # the estimator's wander is not dynamics
    init = load_checkpoint(args.init) if args.init else None
    result = train_with_progress(data, args.hidden, args.layers, args.ensemble, args.epochs, args.seed,
                                 args.activation, init=init, lr=args.lr,
                                 ignore_inputs=QUAD_IGNORE_INPUTS if data.spec.name == "quad" else ())
    result.model.provenance = {**provenance(data), **({"fine_tuned_from": str(args.init)} if args.init else {})}
    save_checkpoint(result.model, args.out)
    print(f"holdout one-step RMSE: {json.dumps(result.holdout_one_step_rmse)}")
    print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dreamlink.demo import export_bundle, load_user_module
    from dreamlink.spec import with_vehicle_file

    args.vehicle_given = args.vehicle is not None
    args.vehicle = args.vehicle or SPECS["cartpole"]
    if args.checkpoint:
        from dreamlink.learning.train import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        spec = model.spec
        if args.vehicle_given:  # the file may have changed since training: its task, planner and link win
            spec = with_vehicle_file(spec, args.vehicle)
            model.spec = spec
    else:
        spec = args.vehicle
        model = load_user_module(args.module, args.state_dict)
    export_bundle(model, spec, Path(args.out), data_path=args.data, horizon=args.horizon, samples=args.samples,
                  training=dict(getattr(model, "provenance", {}) or {}))
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
        connect_timeout_s=args.connect_timeout,
        strict_vehicle=args.strict_vehicle,
        on_takeover=args.on_takeover,
        on_wait=_say,
        mission=MissionConfig(
            takeoff_altitude_m=args.altitude_m,
            half_width_m=args.half_width_m,
            speed_mps=args.speed_mps,
            laps=args.laps,
            baseline=args.baseline,
            drift_window_s=args.drift_window_s,
            source=args.mission,
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
    summary = json.loads((result.out_dir / "summary.json").read_text())
    if summary.get("mission", {}).get("path") == "mission":
        try:
            from dreamlink.reports import load_ticks, plot_mission

            png = plot_mission(load_ticks(result.out_dir / "ticks.npz"), summary["mission"],
                               result.out_dir / "mission.png")
            m = summary["mission"].get("mission", {})
            print(f"  mission: {m.get('within_acceptance')} of {len(m.get('waypoints', []))} waypoints within their "
                  f"radius, worst miss {m.get('max_miss_m')} m; plot {png}")
        except ImportError:  # an onboard image without matplotlib: the summary has it all
            pass
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    from dreamlink.learn import LearnConfig, learn, progress_bar

    cfg = LearnConfig(args.connect, args.autopilot, Path(args.init), Path(args.out), args.rounds, args.collect_minutes,
                      tuple(Path(p) for p in args.data or ()), args.epochs, args.seed, args.laps)
    rows = learn(cfg, progress_bar, _say)
    print("\n| round | real data (min) | horizon | k-step position error at 0.9 s | tracking RMSE | max deviation "
          "| stale ticks | landed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['round']} | {r['data_minutes']:.2f} | {r['horizon']} | {r['kstep_pos_0.9s_m']:.3f} m | "
              f"{r['tracking_rmse_m']:.3f} m | {r['max_deviation_m']:.2f} m | {r['stale_ticks']} | "
              f"{r['landed_disarmed']} |")
    print(f"bundles: {', '.join(r['bundle'] for r in rows)}; k-step plot {cfg.out / 'kstep_sim_vs_real.png'}")
    return 0 if all(r["landed_disarmed"] for r in rows) else 1


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

    s = sub.add_parser("sitl", help="run a SITL vehicle process speaking MAVLink over UDP: the cart-pole board, the "
                                    "quadrotor (ArduPilot or PX4 flavour) or any Gymnasium environment behind a board")
    s.add_argument("vehicle", choices=["cartpole", "quad", "gym"])
    s.add_argument("--out", default="udp:127.0.0.1:14550", help="where to send MAVLink (the runtime listens there)")
    s.add_argument("--lockstep", action="store_true", help="advance one control period per actuator command")
    s.add_argument("--seed", type=_positive_int, default=0)
    s.add_argument("--vehicle", dest="vehicle_file", default="", metavar="FILE",
                   help="gym: the vehicle file (state, action, [link]; [sim] gym_env)")
    s.add_argument("--env", default="", metavar="ID", help="gym: the Gymnasium environment id (default: the file's)")
    s.add_argument("--autopilot", choices=["ardupilot", "px4"], default="ardupilot", help="quad: which autopilot "
                                                                                          "the SITL behaves like")
    s.set_defaults(func=cmd_sitl)

    c = sub.add_parser("collect", help="collect transitions: cartpole from a lockstep SITL (started for you); quad "
                                       "from any live ArduPilot or PX4 autopilot, in real time (an excitation flight)")
    c.add_argument("vehicle", help=VEHICLE_HELP)
    c.add_argument("--out", required=True, help="a board (cartpole, a vehicle file): transitions file (.npz); quad: "
                                                "a folder for the flight log (flight.tlog) and its transitions")
    c.add_argument("--transitions", type=_positive_int, default=20000, help="board: how many")
    c.add_argument("--episode-steps", type=_positive_int, default=200, help="board: steps per SITL episode")
    c.add_argument("--seed", type=_positive_int, default=0)
    c.add_argument("--connect", default=None, help="cartpole: an already running lockstep SITL instead; quad: where "
                                                   "the autopilot's MAVLink arrives (udpin:0.0.0.0:14550, tcp:..., "
                                                   "serial:/dev/ttyACM0:921600)")
    lq = c.add_argument_group("quad: a live autopilot")
    lq.add_argument("--autopilot", choices=["ardupilot", "px4"], default="")
    lq.add_argument("--minutes", type=float, default=3.0, help="minutes of excitation")
    lq.add_argument("--altitude-m", type=float, default=6.0, help="take-off altitude")
    lq.add_argument("--box-m", type=float, default=6.0, help="half width of the box the excitation stays in")
    lq.add_argument("--in-air", action="store_true",
                    help="the vehicle is already flying: take it over where it is (no arming, no take-off) and "
                         "leave it holding at the end")
    c.set_defaults(func=cmd_collect)

    t = sub.add_parser("train", help="train an ensemble world model on collected transitions")
    t.add_argument("--data", required=True, nargs="+",
                   help="flight logs (.tlog of an ArduPilot or PX4 vehicle flown with velocity setpoints), "
                        "transitions (.npz) or campaign shard manifests (manifest.json)")
    t.add_argument("--init", default="", help="fine-tune this checkpoint (a sim-pretrained model) instead of "
                                              "training from scratch; its shape and normalisation are kept")
    t.add_argument("--lr", type=float, default=0.0, help="learning rate (default 1e-3; 3e-4 with --init)")
    t.add_argument("--autopilot", choices=["auto", "ardupilot", "px4"], default="auto",
                   help=".tlog: the autopilot family (default: read from each log's HEARTBEAT)")
    t.add_argument("--on-log-error", choices=["raise", "stop", "skip"], default="raise",
                   help=".tlog: at a damaged record stop with an error, use the part before it, or skip it")
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
    e.add_argument("--vehicle", type=_vehicle, default=None,
                   help=f"{VEHICLE_HELP}: the spec for --module (default cartpole); with --checkpoint, its task, "
                        f"planner and link replace the ones the checkpoint was trained with")
    e.add_argument("--data", help="held-out transitions (.npz) for the k-step error curve")
    e.add_argument("--horizon", type=_positive_int, default=0, help="planner horizon to record (0: recommended)")
    e.add_argument("--samples", type=_positive_int, default=0,
                   help="planner samples to record (0: the vehicle file's, else 256)")
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
    r.add_argument("--connect-timeout", type=float, default=30.0,
                   help="seconds of silence from the vehicle before giving up (its estimator is waited for as long "
                        "as it keeps sending heartbeats)")
    r.add_argument("--strict-vehicle", action="store_true",
                   help="refuse to fly a vehicle other than the one the bundle learned (default: warn)")
    r.add_argument("--on-takeover", choices=["end", "wait"], default="end",
                   help="a pilot or ground station switches the vehicle out of GUIDED/OFFBOARD: end the flight at "
                        "once, leaving them the vehicle (default), or wait for them to choose GUIDED/OFFBOARD again; "
                        "dreamlink never changes the mode back itself")
    r.add_argument("--no-policy", action="store_true",
                   help="ignore the bundle's distilled policy (no sampling prior, no policy fallback)")
    q = r.add_argument_group("multirotor mission (quad bundles): take off, figure-eight, land")
    q.add_argument("--autopilot", choices=["ardupilot", "px4"], default="", help="the flight controller's family")
    q.add_argument("--altitude-m", type=float, default=5.0, help="take-off altitude above the start point")
    q.add_argument("--half-width-m", type=float, default=3.0)
    q.add_argument("--speed-mps", type=float, default=2.0, help="mean speed along the figure-eight")
    q.add_argument("--laps", type=float, default=2.0, help="laps to fly (when --ticks is 0)")
    q.add_argument("--drift-window-s", type=float, default=1.0,
                   help="offset-free tracking: estimate the position's drift from the velocity's integral over "
                        "this window and aim the plan against it (0: off)")
    q.add_argument("--mission", default="", metavar="FILE|autopilot",
                   help="fly a planned mission instead of the figure-eight: a QGroundControl .plan or a Mission "
                        "Planner/MAVProxy .waypoints file, or 'autopilot' (the mission and fence stored in the flight "
                        "controller); exclusion fences are kept out of; a ground station may send go-to, pause/resume, "
                        "return and land to the companion (component 191)")
    q.add_argument("--baseline", action="store_true",
                   help="stream the reference as position setpoints to the autopilot instead of planning")
    r.set_defaults(func=cmd_run)

    lr = sub.add_parser("learn", help="learn the vehicle you fly: collect from a live autopilot, fine-tune the "
                                      "sim-pretrained model, fly the task, add the flight, repeat")
    lr.add_argument("--connect", required=True, help="where the autopilot's MAVLink arrives (as for run)")
    lr.add_argument("--autopilot", choices=["ardupilot", "px4"], required=True)
    lr.add_argument("--init", required=True, help="the sim-pretrained checkpoint (demo quad writes "
                                                  "FLAVOUR-world-model.pt)")
    lr.add_argument("--out", default="runs/learn")
    lr.add_argument("--rounds", type=_positive_int, default=2, help="fit + fly rounds")
    lr.add_argument("--collect-minutes", type=float, default=3.0, help="the first excitation flight (0: none)")
    lr.add_argument("--data", nargs="*", help="flight logs of this vehicle already at hand (.tlog)")
    lr.add_argument("--epochs", type=_positive_int, default=40)
    lr.add_argument("--laps", type=float, default=1.5, help="figure-eight laps per round's flight")
    lr.add_argument("--seed", type=_positive_int, default=0)
    lr.set_defaults(func=cmd_learn)

    from dreamlink.calibration.cli_commands import add_calibration_commands
    from dreamlink.campaign.cli_commands import add_campaign_commands
    from dreamlink.deploy.cli_commands import add_deploy_commands
    from dreamlink.export.cli_commands import add_export_commands

    add_export_commands(sub)
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
    if getattr(args, "command", "") == "collect":  # the SITL needs the file, the commands the spec
        args.vehicle_arg = args.vehicle
        try:
            args.vehicle = load_vehicle(args.vehicle)
        except SpecError as exc:
            parser.error(f"argument vehicle: {exc}")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the CLI's job: one clear line, not a traceback, for known errors
        from dreamlink.bundle import BundleError

        if isinstance(e, (BundleError, FileNotFoundError, FileExistsError, ValueError, TimeoutError)):
            print(f"dreamlink {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
