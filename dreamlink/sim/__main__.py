"""`python -m dreamlink.sim VEHICLE ...`: start one SITL vehicle process (see each vehicle's module)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def _cartpole(argv: list[str]) -> int:
    from dreamlink.sim.motor_board_process import main

    return main(argv)


def _quad(argv: list[str]) -> int:
    from dreamlink.sim.quadrotor.process import main

    return main(argv)


def _gym(argv: list[str]) -> int:
    from dreamlink.sim.motor_board_process import main

    return main(["gym", *argv])


VEHICLES: dict[str, Callable[[list[str]], int]] = {"cartpole": _cartpole, "quad": _quad, "gym": _gym}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VEHICLES:
        sys.stderr.write(f"usage: python -m dreamlink.sim {{{','.join(VEHICLES)}}} --out udp:HOST:PORT [options]\n")
        return 2
    return VEHICLES[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
