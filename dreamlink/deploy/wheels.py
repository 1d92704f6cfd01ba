"""Can the onboard install come from binary wheels on a target board? pip's resolver, asked for another platform.

A Raspberry Pi or a Jetson installs dreamlink from PyPI's aarch64 wheels. A dependency that ships
only an sdist, or only x86_64 wheels, would need a compiler and headers on the device, or fail
there. Asking pip to resolve the requirements for the target's platform tags with
`--only-binary=:all:` catches that on any host, in CI, before an image is built:

    python -m dreamlink.deploy.wheels                          # pyproject's dependencies, aarch64, cp311
    python -m dreamlink.deploy.wheels --python 3.10 --download wheels/ dist/dreamlink-0.1.0-py3-none-any.whl

Markers of the requirements given here are evaluated for the target (python_version,
platform_machine); markers of their own dependencies are evaluated by pip for the interpreter
running it, which pip offers no option to change.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Jetson Linux (Ubuntu 22.04) ships Python 3.10: the tomllib backport
    import tomli as tomllib

log = logging.getLogger(__name__)

# Where pip says it found nothing installable for a requirement.
_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9._-]+)")
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement ([A-Za-z0-9._-]+)")


@dataclass(frozen=True)
class WheelTarget:
    """A board's Python and C library: the wheel tags it accepts.

    glibc (2, 35) is the older of the supported images: Jetson Linux / JetPack 6 (Ubuntu 22.04)
    has 2.35, Raspberry Pi OS bookworm 2.36. A wheel tagged for a newer glibc would not load there.
    """

    arch: str = "aarch64"
    python_version: str = "3.11"
    glibc: tuple[int, int] = (2, 35)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"3\.\d+", self.python_version):
            raise ValueError(f"WheelTarget.python_version: expected like '3.11', got {self.python_version!r}")
        if self.glibc[0] != 2 or self.glibc[1] < 17:
            raise ValueError(f"WheelTarget.glibc: expected (2, >=17) (manylinux2014 or newer), got {self.glibc}")

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def platforms(self) -> tuple[str, ...]:
        """Every manylinux tag the target's glibc loads, newest first (pip takes them as a list)."""
        minors = range(self.glibc[1], 16, -1)
        return (*(f"manylinux_2_{m}_{self.arch}" for m in minors), f"manylinux2014_{self.arch}")

    def marker_environment(self) -> dict[str, str]:
        return {"python_version": self.python_version, "python_full_version": f"{self.python_version}.0",
                "platform_machine": self.arch, "sys_platform": "linux", "platform_system": "Linux",
                "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}

    def __str__(self) -> str:
        return f"{self.arch} cp{self.abi[2:]} glibc {self.glibc[0]}.{self.glibc[1]}"


@dataclass(frozen=True)
class WheelCheck:
    """The outcome: `wheels` (name, version, file) when resolved, else `missing` names what has no wheel."""

    target: WheelTarget
    ok: bool
    wheels: tuple[tuple[str, str, str], ...]
    missing: tuple[str, ...]
    message: str


def project_requirements(pyproject: Path, extra: str | None = None) -> tuple[str, ...]:
    """`[project] dependencies` (the onboard install), or one optional-dependencies extra."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as e:
        raise ValueError(f"{pyproject}: cannot read [project] ({type(e).__name__}: {e})") from None
    if extra is None:
        return tuple(project.get("dependencies", ()))
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise ValueError(f"{pyproject}: no optional-dependencies extra {extra!r} (have: {', '.join(sorted(extras))})")
    return tuple(extras[extra])


def for_target(requirements: tuple[str, ...] | list[str], target: WheelTarget) -> list[str]:
    """Drop requirements whose marker is false on the target, and strip the markers of the rest."""
    from packaging.requirements import Requirement  # onnxruntime's own dependency, so present onboard too

    kept = []
    for text in requirements:
        if text.endswith(".whl") or "/" in text:
            kept.append(text)  # a local wheel file: pip reads its metadata
            continue
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(target.marker_environment()):
            continue
        req.marker = None
        kept.append(str(req))
    return kept


def pip_platform_args(target: WheelTarget) -> list[str]:
    platforms = [a for p in target.platforms() for a in ("--platform", p)]
    return [*platforms, "--only-binary=:all:", "--python-version", target.python_version,
            "--implementation", "cp", "--abi", target.abi]


def check_wheels_for(
    requirements: tuple[str, ...] | list[str],
    target: WheelTarget = WheelTarget(),
    download_to: Path | None = None,
    python: str = sys.executable,
    timeout_s: float = 600.0,
) -> WheelCheck:
    """Resolve `requirements` for `target` from binary wheels only.

    Without `download_to` this is `pip install --dry-run --report` into a throwaway --target (nothing
    is installed); with it, `pip download` fills that folder (an image build then installs offline).
    Needs the package index (PyPI); an unreachable index is reported as a failure, not skipped.
    """
    reqs = for_target(requirements, target)
    with tempfile.TemporaryDirectory(prefix="dreamlink-wheels-") as tmp:
        report = Path(tmp, "report.json")
        if download_to is None:
            cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
                   str(report), "--target", str(Path(tmp, "target"))]
        else:
            download_to.mkdir(parents=True, exist_ok=True)
            cmd = [python, "-m", "pip", "download", "--quiet", "--dest", str(download_to)]
        cmd += [*pip_platform_args(target), "--disable-pip-version-check", *reqs]
        log.info("resolving for %s: %s", target, " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return WheelCheck(target, False, (), (), f"pip did not finish within {timeout_s:.0f} s (index reachable?)")
        if proc.returncode != 0:
            missing = tuple(dict.fromkeys(_NO_MATCH.findall(proc.stderr) or _NO_VERSION.findall(proc.stderr)))
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or proc.stderr.splitlines()[-5:]
            if missing:
                message = (f"no binary wheel for {target} of: {', '.join(missing)} (only an sdist or other "
                           f"platforms' wheels on the index); pin a version that has one, or drop it from the "
                           f"onboard dependencies")
            else:
                message = f"pip failed (exit {proc.returncode}): " + " | ".join(errors)
            return WheelCheck(target, False, (), missing, message)
        if download_to is None:
            wheels = tuple(
                (i["metadata"]["name"], i["metadata"]["version"], i["download_info"]["url"].rsplit("/", 1)[-1])
                for i in json.loads(report.read_text())["install"]
            )
        else:
            wheels = tuple(_from_filename(p.name) for p in sorted(download_to.glob("*.whl")))
    return WheelCheck(target, True, wheels, (), f"{len(wheels)} binary wheels for {target}")


def _from_filename(name: str) -> tuple[str, str, str]:
    dist, version = name.split("-")[:2]
    return dist, version, name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dreamlink.deploy.wheels", description=__doc__.split("\n\n")[0])
    p.add_argument("requirements", nargs="*", help="requirements or wheel files (default: pyproject's dependencies)")
    p.add_argument("--pyproject", default="pyproject.toml", type=Path)
    p.add_argument("--arch", default="aarch64")
    p.add_argument("--python", dest="python_version", action="append",
                   help="target Python version, repeatable (default 3.11)")
    p.add_argument("--glibc", default="2.35", help="oldest glibc of the target OS images")
    p.add_argument("--download", type=Path, help="download the wheels into this folder")
    args = p.parse_args(argv)
    try:
        reqs = args.requirements or list(project_requirements(args.pyproject))
        major, minor = (int(x) for x in args.glibc.split("."))
        targets = [WheelTarget(args.arch, v, (major, minor)) for v in args.python_version or ["3.11"]]
    except ValueError as e:
        print(f"dreamlink wheels: {e}", file=sys.stderr)
        return 2
    failed = 0
    for target in targets:
        result = check_wheels_for(reqs, target, args.download)
        print(f"{target}: {'ok' if result.ok else 'FAIL'}: {result.message}")
        for name, version, file in result.wheels:
            print(f"  {name} {version}  {file}")
        failed += not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
