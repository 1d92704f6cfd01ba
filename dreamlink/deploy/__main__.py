"""`python -m dreamlink.deploy {deploy,install-bundle,doctor} ...`: the deploy commands without the full CLI.

The same handlers as `dreamlink deploy|install-bundle|doctor`; useful on a device or in an image
build where only the onboard part of dreamlink matters.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dreamlink.deploy.cli_commands import add_deploy_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamlink.deploy")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    add_deploy_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
