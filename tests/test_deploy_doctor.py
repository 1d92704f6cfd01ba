"""`dreamlink doctor`: runs on this machine, reports what it sees, and fails what blocks flight."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pytest
from test_deploy_install import make_bundle, passing, run_cli

from dreamlink.bundle import load_bundle
from dreamlink.deploy.config import DeployConfig, parse_connect
from dreamlink.deploy.device import CpuInfo, read_cpu
from dreamlink.deploy.doctor import FAIL, OK, WARN, check_budget, check_clock, check_link, check_unit, run_doctor
from dreamlink.deploy.install import install_bundle, runtime_health_check
from dreamlink.deploy.overlay import write_overlay


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def installed(tmp_path: Path) -> DeployConfig:
    config = DeployConfig(state_dir=str(tmp_path / "state"), connect=f"udpin:127.0.0.1:{free_udp_port()}")
    install_bundle(make_bundle(tmp_path / "bundle"), config, health_check=passing)
    return config


def test_doctor_on_this_machine_with_an_installed_bundle(installed: DeployConfig, tmp_path: Path) -> None:
    report = run_doctor(installed, tmp_path / "dreamlink.toml", measure=runtime_health_check(installed.health))
    names = [c.name for c in report.checks]
    assert names == ["config", "cpu", "onnxruntime", "python", "bundle", "budget", "link", "clock", "cpufreq",
                     "service"]  # fmt: skip
    assert report.get("bundle").status == OK and "slot a" in report.get("bundle").detail
    assert report.get("onnxruntime").status == OK and "CPUExecutionProvider" in report.get("onnxruntime").detail
    assert report.get("cpu").detail.startswith(read_cpu().model)
    budget = report.get("budget")
    assert budget.status == WARN and "not calibrated" in budget.detail and "measured here: p50" in budget.detail
    assert report.get("link").status == OK
    assert report.get("service").status == WARN  # no unit under / in the test machine


def test_no_installed_bundle_blocks_flight(tmp_path: Path) -> None:
    config = DeployConfig(state_dir=str(tmp_path / "empty"), connect=f"udpin:127.0.0.1:{free_udp_port()}")
    report = run_doctor(config, tmp_path / "x.toml")
    assert report.blocks_flight and report.get("bundle").status == FAIL
    assert "install-bundle" in report.get("bundle").fix


def test_bundle_failing_on_this_device_fails_the_budget(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "nan", bias=float("nan")))
    cpu = CpuInfo("Test CPU", "x86_64", 2, frozenset({"avx2"}))
    check = check_budget(bundle, cpu, runtime_health_check(DeployConfig().health))
    assert check.status == FAIL and "non-finite" in check.detail


def test_recorded_budget_against_this_device(tmp_path: Path) -> None:
    cpu = CpuInfo("ARM Cortex-A76", "aarch64", 4, frozenset({"neon"}))
    same = load_bundle(make_bundle(tmp_path / "a", calibration={"budget": {"device": "ARM Cortex-A76", "p99_ms": 8.0}}))
    assert check_budget(same, cpu, None).status == OK
    other = load_bundle(make_bundle(tmp_path / "b", calibration={"budget": {"device": "Xeon", "p99_ms": 8.0}}))
    check = check_budget(other, cpu, None)
    assert check.status == WARN and "calibrate" in check.fix and "p99 8.00 ms" in check.detail
    slow = load_bundle(make_bundle(tmp_path / "c", calibration={"budget": {"device": "ARM Cortex-A76", "p99_ms": 30}}))
    assert check_budget(slow, cpu, None).status == FAIL
    # a budget under names dreamlink does not write fails, naming the field and where dreamlink writes it
    record = {"device_budget": {"cpu": "ARM Cortex-A76", "p99_ms": 8.0}}
    elsewhere = check_budget(load_bundle(make_bundle(tmp_path / "d", calibration=record)), cpu, None)
    assert elsewhere.status == FAIL and "calibrate" in elsewhere.fix
    assert "calibration.device_budget: not a field dreamlink writes; the device budget is calibration.budget" in (
        elsewhere.detail)


def test_link_checks(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        in_use = check_link(parse_connect(f"udpin:127.0.0.1:{port}"), "dreamlink", ("dialout",))
    assert in_use.status == WARN and "in use" in in_use.detail
    foreign = check_link(parse_connect("udpin:192.0.2.7:14550"), "dreamlink", ())  # TEST-NET: not this machine
    assert foreign.status == FAIL
    missing = check_link(parse_connect("/dev/ttyDOESNOTEXIST:57600"), "dreamlink", ("dialout",))
    assert missing.status == FAIL and "does not exist" in missing.detail
    null = check_link(parse_connect("/dev/null"), "dreamlink", ())  # a world-writable character device
    if importlib.util.find_spec("serial") is None:  # pymavlink needs pyserial for serial links
        assert null.status == FAIL and "pyserial is not installed" in null.detail
    else:
        assert null.status == OK
    console = tmp_path / "cmdline"
    console.write_text("console=tty1 console=null,115200 root=/dev/mmcblk0p2")
    assert check_link(parse_connect("/dev/null"), "dreamlink", (), cmdline=console).status == FAIL


def test_clock_sources() -> None:
    assert check_clock("tsc").status == OK
    assert check_clock("arch_sys_counter").status == OK
    assert check_clock("hpet").status == WARN
    assert check_clock("jiffies").status == FAIL
    assert check_clock(None).status == WARN


def test_unit_that_disagrees_with_the_config_is_reported(tmp_path: Path) -> None:
    write_overlay(tmp_path, DeployConfig(connect="udpin:127.0.0.1:14550"))
    assert check_unit(DeployConfig(connect="udpin:127.0.0.1:14550"), tmp_path).status == OK
    stale = check_unit(DeployConfig(connect="/dev/ttyAMA0:921600"), tmp_path)
    assert stale.status == WARN and "does not match" in stale.detail and "deploy --root /" in stale.fix


def test_doctor_command_exit_codes(installed: DeployConfig, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "device.toml"
    cfg.write_text(f'[deploy]\nconnect = "{installed.connect}"\nstate_dir = "{installed.state_dir}"\n')
    assert run_cli("doctor", "--config", str(cfg), "--json") == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["bundle"]["status"] == "ok" and checks["config"]["status"] == "ok"
    assert run_cli("doctor", "--config", str(cfg), "--state-dir", str(tmp_path / "none"), "--no-measure") == 1
    out = capsys.readouterr().out
    assert "[FAIL] bundle" in out and "fix: sudo dreamlink install-bundle" in out and "blocks flight" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[deploy]\nconect = 'udp:0.0.0.0:1'\n")
    assert run_cli("doctor", "--config", str(bad), "--no-measure") == 1
    assert "deploy.conect: unknown key (did you mean 'connect'?)" in capsys.readouterr().out
