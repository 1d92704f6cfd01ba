"""The root-filesystem overlay an image builder copies onto a Debian-family image.

Everything is generated from one `DeployConfig`, so the unit's ExecStart, the user in
sysusers.d and the state folder in tmpfiles.d cannot disagree. The tree::

    etc/systemd/system/dreamlink.service                    Type=notify, watchdog, unprivileged, hardened
    etc/systemd/system/multi-user.target.wants/dreamlink.service   (enabled; starts once a bundle exists)
    etc/dreamlink/dreamlink.toml                             the device config (yours, or a commented default)
    etc/logrotate.d/dreamlink                                flight logs rotated by size
    usr/lib/sysusers.d/dreamlink.conf                        the service user, in dialout
    usr/lib/tmpfiles.d/dreamlink.conf                        /var/lib/dreamlink{,/slots}, /var/log/dreamlink aging
    usr/lib/dreamlink/setup-rootfs.sh                        venv + wheel install, run inside the image
    opt/dreamlink/wheels/*.whl                               the dreamlink wheel (and any prefetched deps)
    var/lib/dreamlink/...                                    a pre-installed bundle in slot a (optional)

The ExecStart line is built from the config (`--connect` is baked in): after changing
`[deploy]` on a device, rerun `dreamlink deploy --root /` and `systemctl daemon-reload`.
`doctor` warns when the unit and the config disagree.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dreamlink.deploy import templates
from dreamlink.deploy.config import CONFIG_PATH, LOG_DIR, DeployConfig, config_to_toml
from dreamlink.deploy.durable import write_atomic

log = logging.getLogger(__name__)

SETUP_SCRIPT = "usr/lib/dreamlink/setup-rootfs.sh"
WHEEL_DIR = "opt/dreamlink/wheels"


@dataclass(frozen=True)
class OverlayFile:
    path: str  # relative to the root
    mode: int
    text: str


def unit_name(config: DeployConfig) -> str:
    return f"{config.service.name}.service"


def exec_start(config: DeployConfig) -> str:
    return (
        f"{config.service.venv}/bin/dreamlink run --bundle {config.state_dir}/current "
        f"--connect {config.link} --log-dir {LOG_DIR}"
    )


def render_unit(config: DeployConfig) -> str:
    """The systemd unit. Every hardening line is one the runtime was checked to run under."""
    svc, link = config.service, config.link
    dreamlink = f"{svc.venv}/bin/dreamlink"
    if link.kind == "serial":
        devices = ["DevicePolicy=closed", f"DeviceAllow={link.device} rw"]
    else:
        devices = ["PrivateDevices=yes"]
    if svc.realtime_priority > 0:
        sched = ["CPUSchedulingPolicy=fifo", f"CPUSchedulingPriority={svc.realtime_priority}"]
    else:
        sched = ["RestrictRealtime=yes"]
    groups = " ".join(svc.extra_groups)
    lines = [
        "# Written by `dreamlink deploy` from /etc/dreamlink/dreamlink.toml; regenerate rather than edit.",
        "[Unit]",
        "Description=dreamlink onboard runtime (learned world model, MPPI, MAVLink)",
        "Wants=network-online.target",
        "After=network-online.target time-sync.target",
        # A fresh image has no model yet: stay inactive (not failed) until install-bundle puts one there.
        f"ConditionPathExists={config.state_dir}/current",
        "StartLimitIntervalSec=120",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        # '+': privileged, so it may roll back a model left on trial by an install cut short.
        f"ExecStartPre=+{dreamlink} install-bundle --recover --config {CONFIG_PATH}",
        f"ExecStart={exec_start(config)}",
        "Restart=on-failure",
        f"RestartSec={svc.restart_s:g}",
        f"WatchdogSec={svc.watchdog_s:g}",
        f"TimeoutStartSec={svc.start_timeout_s:g}",
        "TimeoutStopSec=15",
        f"User={svc.user}",
        f"Group={svc.user}",
        *([f"SupplementaryGroups={groups}"] if groups else []),
        "LogsDirectory=dreamlink",
        "LogsDirectoryMode=0750",
        f"WorkingDirectory={LOG_DIR}",
        "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
        "OOMScoreAdjust=-500",
        *sched,
        "# Hardening: read-only system, models read-only to the runtime, no privileges to gain.",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        *devices,
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictSUIDSGID=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",  # netlink: getaddrinfo
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "UMask=0027",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render_sysusers(config: DeployConfig) -> str:
    user = config.service.user
    lines = [
        "# dreamlink: the unprivileged user the onboard runtime runs as.",
        f'u {user} - "dreamlink onboard runtime" {config.state_dir} /usr/sbin/nologin',
    ]
    lines += [f"m {user} {group}" for group in config.service.extra_groups]
    return "\n".join(lines) + "\n"


def render_tmpfiles(config: DeployConfig) -> str:
    user, days = config.service.user, config.logs.keep_days
    return (
        "# dreamlink: model slots are root's (the runtime only reads them); logs are the runtime's.\n"
        f"d {config.state_dir} 0755 root root -\n"
        f"d {config.state_dir}/slots 0755 root root -\n"
        f"# Flight folders older than {days} days are removed by systemd-tmpfiles-clean.timer.\n"
        f"d {LOG_DIR} 0750 {user} {user} {days}d\n"
    )


def render_logrotate(config: DeployConfig) -> str:
    """Rotate by size. No copytruncate: the recorder keeps writing to the renamed file, nothing is lost."""
    user, logs = config.service.user, config.logs
    return (
        "# dreamlink flight logs: text logs, MAVLink .tlog and event .jsonl files of each flight folder.\n"
        f"{LOG_DIR}/*.log {LOG_DIR}/*/*.tlog {LOG_DIR}/*/*.jsonl {LOG_DIR}/*/*/*.tlog {LOG_DIR}/*/*/*.jsonl {{\n"
        f"    su {user} {user}\n"
        f"    size {logs.max_size_mb}M\n"
        f"    rotate {logs.rotate}\n"
        f"    maxage {logs.keep_days}\n"
        "    missingok\n"
        "    notifempty\n"
        "    nocreate\n"
        "    compress\n"
        "    delaycompress\n"
        "}\n"
    )


def render_setup_script(config: DeployConfig) -> str:
    return templates.render(
        templates.SETUP_ROOTFS,
        VENV=config.service.venv,
        USER=config.service.user,
        GROUPS=" ".join(config.service.extra_groups),
        STATE_DIR=config.state_dir,
        UNIT=unit_name(config),
    )


def overlay_files(config: DeployConfig, config_text: str | None = None) -> list[OverlayFile]:
    unit = unit_name(config)
    return [
        OverlayFile(f"etc/systemd/system/{unit}", 0o644, render_unit(config)),
        OverlayFile(CONFIG_PATH.lstrip("/"), 0o644, config_text if config_text is not None else config_to_toml(config)),
        OverlayFile("etc/logrotate.d/dreamlink", 0o644, render_logrotate(config)),
        OverlayFile("usr/lib/sysusers.d/dreamlink.conf", 0o644, render_sysusers(config)),
        OverlayFile("usr/lib/tmpfiles.d/dreamlink.conf", 0o644, render_tmpfiles(config)),
        OverlayFile(SETUP_SCRIPT, 0o755, render_setup_script(config)),
    ]


def write_overlay(
    root: str | os.PathLike[str],
    config: DeployConfig,
    config_text: str | None = None,
    wheels: tuple[Path, ...] = (),
) -> list[Path]:
    """Write the overlay under `root` (a build folder, or `/` on a device). Returns the paths written.

    `config_text` is the user's config file verbatim (comments and other boxes' tables kept);
    without it an existing config under `root` is left alone and a missing one gets the default.
    """
    base = Path(root)
    written: list[Path] = []
    for f in overlay_files(config, config_text):
        target = base / f.path
        if f.path == CONFIG_PATH.lstrip("/") and config_text is None and target.exists():
            log.info("keeping the existing %s", target)
            continue
        _mkdirs(target.parent, base)
        write_atomic(target, f.text, f.mode)
        written.append(target)
    wants = base / "etc/systemd/system/multi-user.target.wants" / unit_name(config)
    _mkdirs(wants.parent, base)
    if wants.is_symlink() or wants.exists():
        wants.unlink()
    os.symlink(f"/etc/systemd/system/{unit_name(config)}", wants)
    written.append(wants)
    if wheels:
        wheel_dir = base / WHEEL_DIR
        _mkdirs(wheel_dir, base)
        for wheel in wheels:
            dest = wheel_dir / wheel.name
            shutil.copyfile(wheel, dest)
            os.chmod(dest, 0o644)
            written.append(dest)
    log.info("overlay written to %s (%d entries)", base, len(written))
    return written


def _mkdirs(path: Path, base: Path) -> None:
    """Create folders 0755 whatever the umask: an image builder copies modes as they are."""
    base.mkdir(parents=True, exist_ok=True)
    missing = []
    p = path
    while not p.exists() and p != base:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        os.chmod(d, 0o755)


def write_pi_gen_stage(out: str | os.PathLike[str], overlay_root: Path, config: DeployConfig) -> Path:
    """A pi-gen stage folder (`stage-dreamlink/`) that copies the overlay into the image."""
    stage = Path(out) / "stage-dreamlink"
    sub = stage / "00-dreamlink"
    if stage.exists():
        shutil.rmtree(stage)
    _mkdirs(sub, Path(out))
    fill = {"VENV": config.service.venv, "USER": config.service.user}
    for rel, text, mode in (
        ("prerun.sh", templates.PI_GEN_PRERUN, 0o755),
        ("EXPORT_IMAGE", templates.PI_GEN_EXPORT, 0o644),
        ("README.md", templates.render(templates.PI_GEN_README, **fill), 0o644),
        ("00-dreamlink/00-packages", templates.PI_GEN_PACKAGES, 0o644),
        ("00-dreamlink/00-run.sh", templates.PI_GEN_RUN, 0o755),
    ):
        write_atomic(stage / rel, text, mode)
    shutil.copytree(overlay_root, sub / "files" / "overlay", symlinks=True)
    return stage


def write_jetson_folder(out: str | os.PathLike[str], overlay_root: Path, config: DeployConfig) -> Path:
    """Notes and an install script for Jetson Linux, with the same overlay beside them."""
    folder = Path(out) / "jetson"
    if folder.exists():
        shutil.rmtree(folder)
    _mkdirs(folder, Path(out))
    write_atomic(folder / "README.md", templates.render(templates.JETSON_README, VENV=config.service.venv), 0o644)
    script = templates.render(templates.JETSON_INSTALL, UNIT=unit_name(config))
    write_atomic(folder / "install-on-jetson.sh", script, 0o755)
    shutil.copytree(overlay_root, folder / "overlay", symlinks=True)
    return folder
