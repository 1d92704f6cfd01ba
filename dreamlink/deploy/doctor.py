"""`dreamlink doctor`: is this device ready to fly the installed bundle, and if not, what to fix.

Each check returns ok / warn / fail with what it saw and, when not ok, the fix. `fail` means
something blocks flight (no valid bundle, no ONNX Runtime, a link the runtime cannot open,
a clock that cannot hold deadlines); the CLI exits non-zero when any check fails.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dreamlink.bundle import Bundle, BundleError, load_bundle
from dreamlink.deploy.budget import judge_budget
from dreamlink.deploy.config import DeployConfig, LinkAddress
from dreamlink.deploy.device import CLOCKSOURCE, GOVERNOR, CpuInfo, clock_source, cpu_governor, read_cpu
from dreamlink.deploy.overlay import unit_name
from dreamlink.deploy.slots import SlotError, SlotLayout, active_slot, read_state

log = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def blocks_flight(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)


def check_cpu(cpu: CpuInfo) -> Check:
    """The CPU and its SIMD features; on arm64 the ones int8 and fp16 kernels need, by name.

    Under user-mode emulation (qemu-user) this warns: the emulated CPU's features are real to the
    software, but every timing measured here is the host's and the emulator's, not the device's.
    """
    if cpu.is_arm64:
        simd = "; ".join(f"{name} {'yes' if present else 'no'}" for name, present in cpu.arm_features())
    else:
        simd = "SIMD: " + (", ".join(cpu.simd) or "none")
    detail = f"{cpu.model} ({cpu.arch}, {cpu.cores} cores); {simd}"
    if cpu.emulated_on:
        return Check(
            "cpu", WARN, f"{detail}; EMULATED (user-mode, e.g. qemu-user) on a {cpu.emulated_on}",
            "timings under emulation are not device figures: measure and calibrate on the board itself",
        )  # fmt: skip
    if cpu.arch in ("x86_64", "AMD64") and "avx2" not in cpu.flags:
        return Check("cpu", WARN, detail, "no AVX2: ONNX Runtime falls back to slower kernels; expect a smaller budget")
    if cpu.arch.startswith("arm") and "neon" not in cpu.flags:
        return Check("cpu", WARN, detail, "no NEON: use a 64-bit OS (aarch64) on this board")
    return Check("cpu", OK, detail)


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return Check("onnxruntime", FAIL, f"not importable ({e})", "pip install onnxruntime into the dreamlink venv")
    providers = ", ".join(ort.get_available_providers())
    return Check("onnxruntime", OK, f"{ort.__version__}; providers: {providers}")


def check_python_deps() -> Check:
    from importlib import metadata

    found, missing = [], []
    for dist in ("numpy", "pymavlink"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        return Check("python", FAIL, f"missing: {', '.join(missing)}", f"pip install {' '.join(missing)}")
    return Check("python", OK, "; ".join(found))


def check_config(path: Path, error: str | None) -> Check:
    if error:
        return Check("config", FAIL, error, f"fix {path} (`dreamlink deploy` writes a commented default)")
    return Check("config", OK, str(path))


def check_bundle(layout: SlotLayout, bundle_path: Path | None) -> tuple[Check, Bundle | None]:
    where = str(bundle_path) if bundle_path else str(layout.current)
    if bundle_path is None:
        try:
            slot = active_slot(layout)
        except SlotError as e:
            return Check("bundle", FAIL, str(e), "run `dreamlink install-bundle <bundle>`"), None
        if slot is None:
            missing = f"no bundle installed ({layout.current} missing)"
            return Check("bundle", FAIL, missing, "sudo dreamlink install-bundle <bundle>"), None
        where = f"slot {slot} ({layout.slot(slot)})"
    try:
        bundle = load_bundle(bundle_path or layout.current)
    except BundleError as e:
        return Check("bundle", FAIL, f"{where}: {e}", "reinstall: sudo dreamlink install-bundle <bundle>"), None
    m = bundle.manifest
    detail = f"{where}: {bundle.spec.name}, {', '.join(sorted(m.files))}, created {m.created_utc or 'unknown'}"
    if bundle_path is None and read_state(layout).trial is not None:
        return Check("bundle", WARN, detail + "; on trial (install not confirmed)", "rerun install-bundle"), bundle
    return Check("bundle", OK, detail), bundle


def check_budget(bundle: Bundle | None, cpu: CpuInfo, measure: Callable[[Bundle], object] | None) -> Check:
    if bundle is None:
        return Check("budget", WARN, "no bundle to judge")
    try:
        verdict = judge_budget(bundle.manifest, cpu.model)
    except BundleError as e:  # a budget record in a form dreamlink does not write
        return Check("budget", FAIL, str(e), "run `dreamlink calibrate` on this device to record its budget")
    detail = verdict.message
    status, fix = OK, ""
    if verdict.same_device is None:
        status, fix = WARN, "run `dreamlink calibrate` on this device to record its budget"
    elif verdict.same_device is False:
        status, fix = WARN, "calibrated on another CPU: run `dreamlink calibrate` on this device"
    if not verdict.fits:
        status, fix = FAIL, "the recorded p99 does not fit the control period: fewer samples/horizon, or recalibrate"
    if measure is not None:
        try:
            result = measure(bundle)
        except Exception as e:  # a health check that cannot run at all is itself the finding
            return Check("budget", FAIL, f"{detail}; health check could not run: {type(e).__name__}: {e}", fix)
        p50, p99 = getattr(result, "p50_ms", float("nan")), getattr(result, "p99_ms", float("nan"))
        period_ms = bundle.spec.control_period_s * 1e3
        detail += f"; measured here: p50 {p50:.2f} ms, p99 {p99:.2f} ms (period {period_ms:.1f} ms)"
        if cpu.emulated_on:
            detail += " under emulation: not a device figure"
        if not getattr(result, "ok", False):
            reasons = "; ".join(getattr(result, "reasons", ()))
            return Check("budget", FAIL, f"{detail}; {reasons}", "lower samples/horizon or the rate, then recalibrate")
    return Check("budget", status, detail, fix)


def check_link(
    link: LinkAddress, service_user: str, groups: tuple[str, ...], cmdline: Path = Path("/proc/cmdline")
) -> Check:
    name = f"link {link}"
    if link.kind in ("udpin", "tcpin"):
        family = socket.AF_INET6 if ":" in link.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM if link.kind == "udpin" else socket.SOCK_STREAM)
        try:
            sock.bind((link.host, link.port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return Check(
                    "link", WARN, f"{name}: port {link.port} is in use",
                    "fine if it is the running dreamlink service; else stop the other program (mavproxy, a GCS) "
                    "or choose another port in deploy.connect",
                )  # fmt: skip
            return Check("link", FAIL, f"{name}: cannot listen ({e})", "use an address of this machine, or 0.0.0.0")
        finally:
            sock.close()
        return Check("link", OK, f"{name}: can listen")
    if link.kind in ("udpout", "tcp"):
        try:
            infos = socket.getaddrinfo(link.host, link.port, type=socket.SOCK_DGRAM if link.kind == "udpout" else 0)
        except socket.gaierror as e:
            return Check("link", FAIL, f"{name}: cannot resolve {link.host} ({e})", "fix the host in deploy.connect")
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM if link.kind == "udpout" else socket.SOCK_STREAM)
        sock.settimeout(1.0)
        try:
            sock.connect(addr)
        except ConnectionRefusedError:
            return Check("link", WARN, f"{name}: nothing listening yet", "start the autopilot/SITL, or check the port")
        except OSError as e:
            return Check("link", FAIL, f"{name}: unreachable ({e})", "check the network route to the vehicle")
        finally:
            sock.close()
        return Check("link", OK, f"{name}: reachable")
    return _check_serial(link, service_user, groups, cmdline)


def _check_serial(link: LinkAddress, service_user: str, groups: tuple[str, ...], cmdline: Path) -> Check:
    check = _check_serial_device(link, service_user, groups, cmdline)
    if check.status == FAIL:
        return check
    try:
        import serial  # noqa: F401 - pymavlink opens serial ports through pyserial
    except ImportError:
        return Check("link", FAIL, f"{check.detail}; pyserial is not installed", "pip install pyserial (venv)")
    return check


def _check_serial_device(link: LinkAddress, service_user: str, groups: tuple[str, ...], cmdline: Path) -> Check:
    name, dev = f"link {link}", Path(link.device)
    try:
        st = dev.stat()
    except FileNotFoundError:
        return Check(
            "link", FAIL, f"{name}: {dev} does not exist",
            "check the wiring/USB cable; on a Raspberry Pi enable the UART (raspi-config > Interface > Serial)",
        )  # fmt: skip
    if not stat.S_ISCHR(st.st_mode):
        return Check("link", FAIL, f"{name}: {dev} is not a character device", "point deploy.connect at the tty")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    mode = stat.filemode(st.st_mode)
    console = _console_on(dev, cmdline)
    if console:
        return Check(
            "link", FAIL, f"{name}: the kernel console runs on {console}",
            f"remove console={console} from the kernel command line (raspi-config: no serial login shell)",
        )  # fmt: skip
    if st.st_mode & 0o006 == 0o006:
        return Check("link", OK, f"{name}: {mode} (world read/write)")
    try:
        user = pwd.getpwnam(service_user)
    except KeyError:
        if os.access(dev, os.R_OK | os.W_OK):
            return Check("link", WARN, f"{name}: {mode} {group}; user {service_user!r} does not exist here")
        return Check("link", FAIL, f"{name}: {mode} {group}; no access", f"add your user to group {group}")
    member = group in groups or st.st_gid == user.pw_gid or service_user in _members(group)
    if st.st_uid == user.pw_uid or (member and st.st_mode & 0o060 == 0o060):
        return Check("link", OK, f"{name}: {mode} {group}, {service_user} has access")
    return Check(
        "link", FAIL, f"{name}: {mode} owner group {group}; {service_user} cannot open it",
        f"add {group!r} to deploy.service.extra_groups and rerun `dreamlink deploy --root /`",
    )  # fmt: skip


def _members(group: str) -> list[str]:
    try:
        return list(grp.getgrnam(group).gr_mem)
    except KeyError:
        return []


def _console_on(dev: Path, cmdline: Path) -> str | None:
    try:
        text = cmdline.read_text()
    except OSError:
        return None
    real = dev.resolve().name
    for console in re.findall(r"console=([^\s,]+)", text):
        if console in (dev.name, real) or Path("/dev", console).resolve().name == real:
            return console
    return None


def check_clock(source: str | None, path: Path = CLOCKSOURCE) -> Check:
    res_us = time.get_clock_info("monotonic").resolution * 1e6
    if source is None:
        return Check("clock", WARN, f"clock source unknown ({path} unreadable); monotonic resolution {res_us:g} us")
    detail = f"clocksource {source}; monotonic resolution {res_us:g} us"
    if source in ("jiffies", "refined-jiffies"):
        return Check("clock", FAIL, detail, "a tick-based clock cannot hold a 50 Hz deadline: enable a hardware timer")
    if source in ("hpet", "acpi_pm"):
        return Check("clock", WARN, detail + " (slow to read)", "prefer tsc (check the kernel log for 'tsc unstable')")
    return Check("clock", OK, detail)


def check_governor(governor: str | None, path: Path = GOVERNOR) -> Check:
    if governor is None:
        return Check("cpufreq", OK, f"no frequency scaling exposed ({path})")
    if governor != "performance":
        return Check(
            "cpufreq", WARN, f"governor {governor}: planning latency follows the clock speed",
            "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor (or jetson_clocks)",
        )  # fmt: skip
    return Check("cpufreq", OK, "governor performance")


def check_unit(config: DeployConfig, root: Path) -> Check:
    from dreamlink.deploy.overlay import exec_start

    unit = root / "etc/systemd/system" / unit_name(config)
    if not unit.is_file():
        return Check("service", WARN, f"{unit} not installed", "sudo dreamlink deploy --root / (then daemon-reload)")
    line = next((ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")), "")
    if line != f"ExecStart={exec_start(config)}":
        return Check(
            "service", WARN, f"{unit}: ExecStart does not match the config ({line or 'missing'})",
            "sudo dreamlink deploy --root / --config /etc/dreamlink/dreamlink.toml && sudo systemctl daemon-reload",
        )  # fmt: skip
    return Check("service", OK, f"{unit} matches the config")


def run_doctor(
    config: DeployConfig,
    config_path: Path,
    config_error: str | None = None,
    bundle_path: Path | None = None,
    measure: Callable[[Bundle], object] | None = None,
    root: Path = Path("/"),
    cpu: CpuInfo | None = None,
) -> DoctorReport:
    """Run every check. `measure` (e.g. the runtime's health check) times the bundle on this device."""
    cpu = cpu or read_cpu()
    layout = SlotLayout(config.state_path)
    bundle_check, bundle = check_bundle(layout, bundle_path)
    checks = [
        check_config(config_path, config_error),
        check_cpu(cpu),
        check_onnxruntime(),
        check_python_deps(),
        bundle_check,
        check_budget(bundle, cpu, measure),
        check_link(config.link, config.service.user, config.service.extra_groups),
        check_clock(clock_source()),
        check_governor(cpu_governor()),
        check_unit(config, root),
    ]
    for c in checks:
        log.log(logging.WARNING if c.status != OK else logging.INFO, "doctor %s: %s %s", c.name, c.status, c.detail)
    return DoctorReport(tuple(checks))
