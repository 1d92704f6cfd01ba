"""The onboard install resolves from PyPI's aarch64 wheels, so a dependency without one is caught in CI.

Asks pip to resolve for manylinux aarch64 / cp311 (Raspberry Pi OS bookworm's Python) with binary
wheels only. Needs PyPI: an unreachable index fails these tests, it does not skip them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamlink.deploy.wheels import WheelTarget, check_wheels_for, for_target, project_requirements

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PI_OS = WheelTarget("aarch64", "3.11")


def test_target_tags_and_markers() -> None:
    jetson = WheelTarget("aarch64", "3.10", (2, 35))
    assert jetson.abi == "cp310"
    assert jetson.platforms()[0] == "manylinux_2_35_aarch64" and jetson.platforms()[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_36_aarch64" not in jetson.platforms()  # Ubuntu 22.04's glibc cannot load those
    reqs = project_requirements(PYPROJECT)
    assert any(r.startswith("onnxruntime") for r in reqs) and not any(r.startswith("torch") for r in reqs)
    assert "tomli>=1.1" in for_target(reqs, jetson)  # Python 3.10 needs the tomllib backport
    assert not any(r.startswith("tomli") for r in for_target(reqs, PI_OS))
    with pytest.raises(ValueError, match=r"python_version: expected like '3.11'"):
        WheelTarget(python_version="311")


@pytest.mark.slow
def test_onboard_dependencies_resolve_from_aarch64_wheels() -> None:
    result = check_wheels_for(project_requirements(PYPROJECT), PI_OS)
    assert result.ok, result.message
    names = {name.lower() for name, _, _ in result.wheels}
    assert {"numpy", "onnxruntime", "pymavlink", "cryptography"} <= names and "torch" not in names
    for _, _, file in result.wheels:
        assert file.endswith(("aarch64.whl", "-none-any.whl")), file


@pytest.mark.slow
def test_a_dependency_without_aarch64_wheels_is_named() -> None:
    # Intel's MKL is on PyPI as x86_64 (and Windows) wheels only.
    result = check_wheels_for(["mkl", *project_requirements(PYPROJECT)], PI_OS)
    assert not result.ok
    assert result.missing == ("mkl",), result.message
    assert "no binary wheel for aarch64 cp311" in result.message and "mkl" in result.message
