"""The root-filesystem overlay: files, modes, a unit systemd accepts, and the image-builder stages."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_deploy_install import make_bundle, run_cli

from dreamlink.bundle import load_bundle
from dreamlink.deploy.config import DeployConfig, ServiceConfig, load_config
from dreamlink.deploy.overlay import render_unit, write_jetson_folder, write_overlay, write_pi_gen_stage

EXPECTED = {
    "etc/systemd/system/dreamlink.service": 0o644,
    "etc/dreamlink/dreamlink.toml": 0o644,
    "etc/logrotate.d/dreamlink": 0o644,
    "usr/lib/sysusers.d/dreamlink.conf": 0o644,
    "usr/lib/tmpfiles.d/dreamlink.conf": 0o644,
    "usr/lib/dreamlink/setup-rootfs.sh": 0o755,
}


def unit_lines(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_overlay_has_the_expected_files_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "overlay"
    write_overlay(root, DeployConfig(), wheels=())
    for rel, mode in EXPECTED.items():
        st = (root / rel).stat()
        assert stat.S_IMODE(st.st_mode) == mode, rel
    for d in ("etc", "etc/systemd/system", "usr/lib/dreamlink"):
        assert stat.S_IMODE((root / d).stat().st_mode) == 0o755, d
    wants = root / "etc/systemd/system/multi-user.target.wants/dreamlink.service"
    assert wants.is_symlink() and str(wants.readlink()) == "/etc/systemd/system/dreamlink.service"
    # the default config written into the image is the validated default
    assert load_config(root / "etc/dreamlink/dreamlink.toml") == DeployConfig()


def test_unit_runs_the_bundle_from_the_slot_link_as_an_unprivileged_notify_service() -> None:
    keys = unit_lines(render_unit(DeployConfig(connect="udpin:0.0.0.0:14550")))
    assert keys["Type"] == ["notify"] and keys["Restart"] == ["on-failure"] and keys["WatchdogSec"] == ["10"]
    assert keys["User"] == ["dreamlink"] and keys["SupplementaryGroups"] == ["dialout"]
    assert keys["ExecStart"] == [
        "/opt/dreamlink/venv/bin/dreamlink run --bundle /var/lib/dreamlink/current "
        "--connect udpin:0.0.0.0:14550 --log-dir /var/log/dreamlink"
    ]
    assert keys["ExecStartPre"][0].startswith("+") and "--recover" in keys["ExecStartPre"][0]
    assert keys["ProtectSystem"] == ["strict"] and keys["NoNewPrivileges"] == ["yes"]
    assert keys["PrivateDevices"] == ["yes"] and "DeviceAllow" not in keys
    serial = unit_lines(render_unit(DeployConfig(connect="/dev/ttyAMA0:921600")))
    assert serial["DeviceAllow"] == ["/dev/ttyAMA0 rw"] and "PrivateDevices" not in serial
    assert "serial:/dev/ttyAMA0:921600" in serial["ExecStart"][0]
    rt = unit_lines(render_unit(DeployConfig(service=ServiceConfig(realtime_priority=40))))
    assert rt["CPUSchedulingPolicy"] == ["fifo"] and "RestrictRealtime" not in rt


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze (apt install systemd)")
@pytest.mark.parametrize("connect", ["udpin:127.0.0.1:14550", "serial:/dev/ttyS0:57600"])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, connect: str) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "dreamlink").write_text("#!/bin/sh\n")
    (venv / "bin" / "dreamlink").chmod(0o755)
    config = DeployConfig(connect=connect, service=ServiceConfig(venv=str(venv)))
    write_overlay(tmp_path / "root", config)
    unit = tmp_path / "root/etc/systemd/system/dreamlink.service"
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path)
    # verify exits 0 on unknown keys too: anything it says about our unit is a finding
    findings = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "dreamlink.service" in ln]
    assert proc.returncode == 0 and findings == [], proc.stdout + proc.stderr


def test_sysusers_tmpfiles_logrotate_follow_the_config(tmp_path: Path) -> None:
    config = DeployConfig(state_dir="/srv/dl", service=ServiceConfig(user="pilot", extra_groups=("dialout", "gpio")))
    root = tmp_path / "root"
    write_overlay(root, config)
    sysusers = (root / "usr/lib/sysusers.d/dreamlink.conf").read_text().splitlines()
    assert 'u pilot - "dreamlink onboard runtime" /srv/dl /usr/sbin/nologin' in sysusers
    assert "m pilot dialout" in sysusers and "m pilot gpio" in sysusers
    tmpfiles = (root / "usr/lib/tmpfiles.d/dreamlink.conf").read_text()
    assert "d /srv/dl/slots 0755 root root -" in tmpfiles and "d /var/log/dreamlink 0750 pilot pilot 30d" in tmpfiles
    logrotate = (root / "etc/logrotate.d/dreamlink").read_text()
    assert "su pilot pilot" in logrotate and "size 50M" in logrotate and "copytruncate" not in logrotate
    unit = unit_lines((root / "etc/systemd/system/dreamlink.service").read_text())
    assert unit["SupplementaryGroups"] == ["dialout gpio"] and "/srv/dl/current" in unit["ExecStart"][0]


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed")
def test_logrotate_config_parses(tmp_path: Path) -> None:
    user = pwd.getpwuid(os.getuid()).pw_name  # logrotate checks that the `su` user exists
    assert grp.getgrnam(user)  # and a group of the same name (as sysusers creates)
    write_overlay(tmp_path, DeployConfig(service=ServiceConfig(user=user)))
    conf = tmp_path / "etc/logrotate.d/dreamlink"
    proc = subprocess.run(
        ["logrotate", "--debug", "--state", str(tmp_path / "lr.state"), str(conf)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "error" not in proc.stderr.lower(), proc.stderr
    assert "Handling 1 logs" in proc.stderr


def test_existing_device_config_is_kept_unless_one_is_given(tmp_path: Path) -> None:
    cfg = tmp_path / "etc/dreamlink/dreamlink.toml"
    cfg.parent.mkdir(parents=True)
    mine = '# my notes\n[deploy]\nconnect = "udpin:0.0.0.0:14551"\n\n[planner]\nsamples = 512\n'
    cfg.write_text(mine)
    write_overlay(tmp_path, DeployConfig())
    assert cfg.read_text() == mine
    new = mine.replace("14551", "14552")
    write_overlay(tmp_path, DeployConfig(connect="udpin:0.0.0.0:14552"), config_text=new)
    assert cfg.read_text() == new  # verbatim: comments and the runtime's tables survive


def test_setup_script_and_stages_are_valid_shell(tmp_path: Path) -> None:
    config = DeployConfig()
    overlay = tmp_path / "overlay"
    write_overlay(overlay, config)
    stage = write_pi_gen_stage(tmp_path / "pigen", overlay, config)
    jetson = write_jetson_folder(tmp_path / "out", overlay, config)
    run = stage / "00-dreamlink/00-run.sh"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755 and stat.S_IMODE((stage / "prerun.sh").stat().st_mode) == 0o755
    assert "python3-venv" in (stage / "00-dreamlink/00-packages").read_text()
    assert (stage / "00-dreamlink/files/overlay/etc/systemd/system/dreamlink.service").is_file()
    assert (jetson / "overlay/usr/lib/dreamlink/setup-rootfs.sh").is_file()
    assert "/opt/dreamlink/venv" in (jetson / "README.md").read_text()
    for script, shell in (
        (overlay / "usr/lib/dreamlink/setup-rootfs.sh", "sh"),
        (run, "bash"),
        (stage / "prerun.sh", "bash"),
        (jetson / "install-on-jetson.sh", "sh"),
    ):
        proc = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
    assert "@" not in (overlay / "usr/lib/dreamlink/setup-rootfs.sh").read_text().replace("$@", "")


def test_deploy_command_writes_overlay_with_a_preinstalled_bundle(tmp_path: Path, capsys) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    cfg = tmp_path / "device.toml"
    cfg.write_text('[deploy]\nconnect = "/dev/ttyAMA0:921600"\n')
    wheel = tmp_path / "dreamlink-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    root = tmp_path / "overlay"
    code = run_cli("deploy", "--root", str(root), "--config", str(cfg), "--wheel", str(wheel),
                   "--bundle", str(bundle), "--pi-gen", str(tmp_path / "pigen"))  # fmt: skip
    assert code == 0, capsys.readouterr()
    assert (root / "etc/dreamlink/dreamlink.toml").read_text() == cfg.read_text()
    assert (root / "opt/dreamlink/wheels" / wheel.name).is_file()
    current = root / "var/lib/dreamlink/current"
    assert str(current.readlink()) == "slots/a"  # relative: valid once copied into the image
    assert load_bundle(current).spec.name == "cartpole"
    assert (tmp_path / "pigen/stage-dreamlink/00-dreamlink/files/overlay/var/lib/dreamlink/slots/a").is_dir()
    bad = tmp_path / "bad.toml"
    bad.write_text("[deploy.service]\nwatchdog_s = 0\n")
    assert run_cli("deploy", "--root", str(tmp_path / "o2"), "--config", str(bad)) == 2
    assert "deploy.service.watchdog_s" in capsys.readouterr().err


def test_overlay_writer_imports_no_torch() -> None:
    code = "import sys, dreamlink.deploy.cli_commands, dreamlink.deploy.overlay, dreamlink.deploy.doctor, " \
           "dreamlink.deploy.install; assert 'torch' not in sys.modules, 'torch imported'"  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_config_for_a_different_state_dir_moves_every_path(tmp_path: Path) -> None:
    config = replace(DeployConfig(), state_dir="/data/dreamlink")
    text = render_unit(config)
    assert "ConditionPathExists=/data/dreamlink/current" in text and "/var/lib/dreamlink" not in text
