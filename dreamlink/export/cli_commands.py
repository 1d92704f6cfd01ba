"""`dreamlink bundle`: argparse wiring and output for people.

`dreamlink/cli.py` calls `add_export_commands(subparsers)`; each handler returns the exit code and
says what went wrong in one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_REFUSED = 0, 2


def add_export_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser(
        "bundle",
        help="bundle an ONNX world model and/or policy exported anywhere (torch.onnx, other tools)",
        description="Bundle ONNX files exported outside dreamlink. World model: inputs state [B,S], action [B,A] "
                    "float32 -> next_state [B,S] or [E,B,S]; policy: state [B,S] -> action [B,A]. S, A and E are "
                    "read from the graph and checked against the vehicle; external-data side files "
                    "(model.onnx.data) are carried into the bundle.",
    )
    b.add_argument("model", nargs="?", help="world model .onnx (leave out for a policy-only bundle)")
    b.add_argument("--policy", help="policy .onnx")
    b.add_argument("--vehicle", required=True, help="a shipped vehicle (cartpole, quad) or a vehicle file NAME.toml")
    b.add_argument("--out", required=True, help="bundle folder to create")
    b.add_argument("--inline", action="store_true",
                   help="put external-data weights inside the bundle's .onnx files instead of side files")
    b.set_defaults(func=cmd_bundle)


def cmd_bundle(args: argparse.Namespace) -> int:
    from dreamlink.bundle import BundleError
    from dreamlink.export.onnx_file import bundle_onnx
    from dreamlink.spec import SpecError, load_vehicle

    if not args.model and not args.policy:
        print("dreamlink bundle: error: give a world model MODEL.onnx, a --policy POLICY.onnx, or both",
              file=sys.stderr)
        return EXIT_REFUSED
    try:
        spec = load_vehicle(args.vehicle)
        bundle = bundle_onnx(args.out, spec, args.model, args.policy, inline=args.inline)
    except (SpecError, BundleError, OSError) as e:
        print(f"dreamlink bundle: error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    for role, f in bundle.manifest.files.items():
        ensemble = f", ensemble of {f.ensemble_size}" if f.ensemble_size > 1 else ""
        side = f", weights in {', '.join(x.path for x in f.external_data)}" if f.external_data else ""
        print(f"{role}: {f.path} (opset {f.opset}, {f.precision}{ensemble}{side})")
    print(f"wrote bundle {bundle.root} for vehicle {spec.name!r} (S={spec.state_dim}, A={spec.action_dim})")
    return EXIT_OK
