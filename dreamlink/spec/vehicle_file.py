"""The vehicle file (TOML): reading a vehicle from a shipped name or a user's file, and applying an edited file.

A user's robot needs a file, not code: `[[state]]`, `[[action]]` and the optional `[link]`, `[task]`,
`[planner]`, `[sim]` tables. Every refusal names the file and the field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dreamlink.spec.board_link import BoardLink
from dreamlink.spec.errors import SpecError
from dreamlink.spec.planner_settings import _planner_settings
from dreamlink.spec.sim import SimSpec
from dreamlink.spec.task import QuadraticTask
from dreamlink.spec.vehicle import VehicleSpec

# the shipped vehicle files: package data of `dreamlink` (pyproject's package-data), beside this package
VEHICLES_DIR = Path(__file__).parent.parent / "vehicles"


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # the same parser, backported (a dependency on Python 3.10)

    return tomli


def load_vehicle(name_or_path: str | Path) -> VehicleSpec:
    """A vehicle by the name of a shipped file (`cartpole`, `quad`) or from a TOML file; errors name the file
    and the field.

    The file: `name`, `control_period_s`, `[[state]]` and `[[action]]` tables (name, unit, low, high; a
    state component may say `from = "..."`, see `Source`), and optional `[link]`, `[task]`, `[planner]`,
    `[sim]` tables (see `BoardLink`, `QuadraticTask`, `PLANNER_KEYS`, `SimSpec`)."""
    text = str(name_or_path)
    path = Path(text)
    if not text.endswith(".toml") and not path.exists():
        shipped = VEHICLES_DIR / f"{text}.toml"
        if not shipped.exists():
            known = ", ".join(sorted(p.stem for p in VEHICLES_DIR.glob("*.toml")))
            raise SpecError(f"unknown vehicle {text!r}: not a file, and dreamlink ships {known} "
                            f"(give a vehicle file, NAME.toml)")
        path = shipped
    try:
        raw = _toml().loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the vehicle file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; a vehicle file is TOML") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    try:
        return vehicle_from_table(raw, str(path), path.parent)
    except SpecError as exc:  # every refusal names the file
        raise SpecError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def vehicle_from_table(raw: dict[str, Any], where: str, base_dir: Path) -> VehicleSpec:
    """The vehicle a parsed TOML table describes (see `load_vehicle`)."""
    known = {"name", "control_period_s", "state", "action", "link", "task", "planner", "sim"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; a vehicle file has {', '.join(sorted(known))}")
    per_component = []
    state = []
    for c in raw.get("state", []) if isinstance(raw.get("state"), list) else []:
        if isinstance(c, dict):
            c = dict(c)
            per_component.append(c.pop("from", None))
        state.append(c)
    base = VehicleSpec.from_dict({**{k: raw[k] for k in ("name", "control_period_s", "action") if k in raw},
                                  "state": state if state else raw.get("state")}, where)
    return VehicleSpec(
        base.name, base.state, base.action, base.control_period_s,
        link=(BoardLink.from_dict(raw["link"], base, f"{where} [link]", tuple(per_component))
              if "link" in raw else None),
        task=QuadraticTask.from_dict(raw["task"], base, f"{where} [task]", base_dir) if "task" in raw else None,
        planner=_planner_settings(raw.get("planner", {}), f"{where} [planner]"),
        sim=SimSpec.from_dict(raw["sim"], base, f"{where} [sim]") if "sim" in raw else None,
    )


def with_vehicle_file(trained: VehicleSpec, file: VehicleSpec) -> VehicleSpec:
    """`trained`'s vectors with `file`'s task, planner, link and sim: a vehicle file edited after training (a new
    task, other planner settings) applies to the model, as long as the state and action are the same."""
    same = (trained.state == file.state and trained.action == file.action
            and trained.control_period_s == file.control_period_s)
    if not same:
        raise SpecError(f"vehicle file {file.name!r} describes other state/action vectors or control period than "
                        f"the model was trained with ({trained.state_names} -> {trained.action_names} every "
                        f"{trained.control_period_s} s); retrain, or fix the file")
    return VehicleSpec(trained.name, trained.state, trained.action, trained.control_period_s, file.link, file.task,
                       file.planner, file.sim)
