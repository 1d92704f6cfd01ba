"""`dreamlink deploy`, `dreamlink install-bundle`, `dreamlink doctor`: argparse wiring and output for people.

`dreamlink/cli.py` calls `add_deploy_commands(subparsers)`; each handler returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path

from dreamlink.deploy.config import CONFIG_PATH, ConfigError, DeployConfig, load_config

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def _load(path: str | None, state_dir: str | None = None) -> tuple[DeployConfig, Path, str | None]:
    """Config from `path` (must exist), else from /etc/dreamlink/dreamlink.toml if present, else defaults."""
    p = Path(path or CONFIG_PATH)
    error = None
    if path is None and not p.exists():
        config = DeployConfig()
        log.info("no %s; using the default config", p)
    else:
        try:
            config = load_config(p)
        except ConfigError as e:
            config, error = DeployConfig(), str(e)
    if state_dir:
        config = replace(config, state_dir=str(Path(state_dir).resolve()))
    return config, p, error


def cmd_deploy(args: argparse.Namespace) -> int:
    from dreamlink.deploy.install import InstallError, install_bundle
    from dreamlink.deploy.overlay import write_jetson_folder, write_overlay, write_pi_gen_stage

    config_text = None
    if args.config:
        config, path, error = _load(args.config)
        if error:
            print(f"dreamlink deploy: {error}", file=sys.stderr)
            return EXIT_REFUSED
        root = Path(args.root)
        same = (root / CONFIG_PATH.lstrip("/")).resolve() == path.resolve()
        config_text = None if same else path.read_text(encoding="utf-8")
    else:
        config = DeployConfig()
    wheels = tuple(Path(w) for w in args.wheel)
    for w in wheels:
        if not w.is_file() or w.suffix != ".whl":
            print(f"dreamlink deploy: --wheel {w}: not a wheel file (build one: python -m pip wheel . --no-deps)")
            return EXIT_REFUSED
    root = Path(args.root)
    if args.bundle and root.resolve() == Path("/"):
        print("dreamlink deploy: on a device use `dreamlink install-bundle` (it runs the health check)")
        return EXIT_REFUSED
    written = write_overlay(root, config, config_text, wheels)
    print(f"overlay: {len(written)} files under {root}")
    if args.bundle:
        image_config = replace(config, state_dir=str(root / config.state_dir.lstrip("/")))
        try:
            result = install_bundle(args.bundle, image_config, skip_health=True)
        except InstallError as e:
            print(f"dreamlink deploy: {e}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"bundle: {args.bundle} pre-installed in slot {result.slot} (health check runs on the device)")
    if args.pi_gen:
        print(f"pi-gen stage: {write_pi_gen_stage(args.pi_gen, root, config)}")
    if args.jetson:
        print(f"jetson: {write_jetson_folder(args.jetson, root, config)}")
    return EXIT_OK


def cmd_install_bundle(args: argparse.Namespace) -> int:
    from dreamlink.deploy.install import InstallError, install_bundle
    from dreamlink.deploy.service import SystemdService, systemd_running
    from dreamlink.deploy.slots import SlotBusy, SlotError, SlotLayout, read_state, recover, rollback, slot_lock

    config, _, error = _load(args.config, args.state_dir)
    if error:
        print(f"dreamlink install-bundle: {error}", file=sys.stderr)
        return EXIT_REFUSED
    layout = SlotLayout(config.state_path)
    if args.status:
        print(json.dumps(read_state(layout).to_dict(), indent=2))
        return EXIT_OK
    if args.recover:
        try:
            with slot_lock(layout):
                rec = recover(layout)
        except SlotBusy:
            print("install in progress; leaving the slots to it")
            return EXIT_OK
        print("; ".join(rec.actions) or f"slots consistent, active slot {rec.active}")
        return EXIT_OK
    service = None
    if not args.no_service and systemd_running():
        candidate = SystemdService(config.service.name)
        if candidate.loaded():
            service = candidate
        else:
            print(f"note: {candidate.name} is not installed; not restarting a service")
    if args.rollback:
        try:
            with slot_lock(layout):
                active = rollback(layout, reason="manual rollback")
        except SlotError as e:
            print(f"dreamlink install-bundle: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(f"rolled back: current -> slots/{active}")
        if service is not None:
            service.restart()
        return EXIT_OK
    if not args.bundle:
        print("dreamlink install-bundle: give a bundle folder or .tar (or --status/--recover/--rollback)")
        return EXIT_REFUSED

    def show(step: str, detail: str) -> None:
        print(f"  {step:<14} {detail}")

    try:
        result = install_bundle(args.bundle, config, service=service, on_step=show)
    except (InstallError, SlotError) as e:
        print(f"dreamlink install-bundle: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if result.ok:
        print(f"installed {args.bundle} in slot {result.slot}; active")
        return EXIT_OK
    print(f"REJECTED {args.bundle}: {'; '.join(result.reasons)}", file=sys.stderr)
    print(f"rolled back: active slot {result.active or 'none'}", file=sys.stderr)
    return EXIT_FAILED


def cmd_doctor(args: argparse.Namespace) -> int:
    from dreamlink.deploy.doctor import FAIL, OK, run_doctor
    from dreamlink.deploy.install import runtime_health_check

    config, path, error = _load(args.config, args.state_dir)
    measure = None if args.no_measure else runtime_health_check(config.health)
    report = run_doctor(
        config,
        path,
        config_error=error,
        bundle_path=Path(args.bundle) if args.bundle else None,
        measure=measure,
        root=Path(args.root),
    )
    if args.json:
        print(json.dumps([asdict(c) for c in report.checks], indent=2))
    else:
        mark = {OK: "ok  ", FAIL: "FAIL"}
        for c in report.checks:
            print(f"[{mark.get(c.status, 'warn')}] {c.name:<12} {c.detail}")
            if c.fix:
                print(f"       {'':<12} fix: {c.fix}")
        print("blocks flight: fix the FAIL lines above" if report.blocks_flight else "ready to fly")
    return EXIT_FAILED if report.blocks_flight else EXIT_OK


def add_deploy_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = subparsers.add_parser("deploy", help="write the root-filesystem overlay, pi-gen stage and Jetson notes")
    d.add_argument("--config", help="device config TOML (default: a commented default is written)")
    d.add_argument("--root", default="build/overlay", help="overlay root to write (`/` on a device)")
    d.add_argument("--wheel", action="append", default=[], help="wheel(s) to ship in /opt/dreamlink/wheels")
    d.add_argument("--bundle", help="pre-install this bundle in the image's slot a (verified, no health check)")
    d.add_argument("--pi-gen", help="also write a pi-gen stage (stage-dreamlink/) into this folder")
    d.add_argument("--jetson", help="also write Jetson notes and install script (jetson/) into this folder")
    d.set_defaults(func=cmd_deploy)

    i = subparsers.add_parser(
        "install-bundle", help="verify a bundle, install it in the inactive slot, health-check, roll back on failure"
    )
    i.add_argument("bundle", nargs="?", help="bundle folder or .tar")
    i.add_argument("--config", help=f"device config (default {CONFIG_PATH} if present)")
    i.add_argument("--state-dir", help="slot folder (default: the config's deploy.state_dir)")
    i.add_argument("--no-service", action="store_true", help="do not restart or wait for the systemd service")
    mode = i.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="print the slot state and exit")
    mode.add_argument("--recover", action="store_true", help="repair an interrupted install (run before the service)")
    mode.add_argument("--rollback", action="store_true", help="switch back to the other slot")
    i.set_defaults(func=cmd_install_bundle)

    c = subparsers.add_parser("doctor", help="check this device: CPU, ONNX Runtime, bundle budget, link, clock")
    c.add_argument("--config", help=f"device config (default {CONFIG_PATH} if present)")
    c.add_argument("--state-dir", help="slot folder (default: the config's deploy.state_dir)")
    c.add_argument("--bundle", help="check this bundle instead of the installed one")
    c.add_argument("--root", default="/", help="root holding the installed unit (default /)")
    c.add_argument("--no-measure", action="store_true", help="skip timing the bundle's planner on this device")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_doctor)
