"""The device's deploy configuration: the `[deploy]` tables of /etc/dreamlink/dreamlink.toml.

One TOML file configures the whole device; each box reads its own tables and ignores the
others' (the runtime reads its planner/loop tables, deploy reads `[deploy]`, `[deploy.service]`,
`[deploy.health]`, `[deploy.logs]`). Inside its own tables deploy is strict: an unknown key
is an error (a typo like `wachdog_s` must not silently fall back to a default), and every
error names the file, the dotted key, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Jetson Linux (Ubuntu 22.04) ships Python 3.10: the tomllib backport
    import tomli as tomllib

CONFIG_PATH = "/etc/dreamlink/dreamlink.toml"
LOG_DIR = "/var/log/dreamlink"  # fixed: the unit's LogsDirectory= owns it


class ConfigError(ValueError):
    """The config file is unreadable or a key is wrong; the message names the key."""


@dataclass(frozen=True)
class LinkAddress:
    """A parsed `connect` string. kind: udpin (listen), udpout (send to), tcp (connect), tcpin (listen), serial."""

    kind: str
    host: str = ""
    port: int = 0
    device: str = ""
    baud: int = 0

    def __str__(self) -> str:
        if self.kind == "serial":
            return f"serial:{self.device}:{self.baud}"
        return f"{self.kind}:{self.host}:{self.port}"


_CONNECT_HELP = (
    "expected 'udpin:HOST:PORT' (listen; 'udp:' is the same), 'udpout:HOST:PORT', 'tcp:HOST:PORT', "
    "'tcpin:HOST:PORT' or 'serial:/dev/DEVICE[:BAUD]' (also '/dev/DEVICE[:BAUD]' or '/dev/DEVICE,BAUD')"
)


def parse_connect(text: str) -> LinkAddress:
    """Parse a MAVLink connect string (the firmware bridge's spelling). Raises ValueError with the accepted forms."""
    s = text.strip()
    if s.startswith("/dev/"):
        s = "serial:" + s.replace(",", ":", 1)
    kind, _, rest = s.partition(":")
    kind = {"udp": "udpin", "tcpout": "tcp"}.get(kind, kind)
    if kind == "serial":
        device, _, baud = rest.partition(":")
        baud = baud or "115200"
        if not device.startswith("/dev/") or not baud.isdigit() or int(baud) <= 0:
            raise ValueError(f"{text!r}: {_CONNECT_HELP}")
        return LinkAddress("serial", device=device, baud=int(baud))
    if kind in ("udpin", "udpout", "tcp", "tcpin"):
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: {_CONNECT_HELP}")
        return LinkAddress(kind, host=host.strip("[]"), port=int(port))
    raise ValueError(f"{text!r}: unknown link kind {kind!r}; {_CONNECT_HELP}")


def _spec(default: Any, doc: str, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi})


@dataclass(frozen=True)
class ServiceConfig:
    """How systemd runs the onboard process."""

    name: str = _spec("dreamlink", "systemd unit name (without .service)")
    user: str = _spec("dreamlink", "unprivileged user the runtime runs as")
    extra_groups: tuple[str, ...] = _spec(("dialout",), "supplementary groups (dialout: serial ports)")
    venv: str = _spec("/opt/dreamlink/venv", "virtual environment holding dreamlink and its onboard deps")
    watchdog_s: float = _spec(10.0, "systemd WatchdogSec: the runtime must ping within this", 1.0, 600.0)
    restart_s: float = _spec(2.0, "RestartSec after a failure", 0.1, 600.0)
    start_timeout_s: float = _spec(90.0, "TimeoutStartSec: loading the bundle and the first plan", 5.0, 3600.0)
    realtime_priority: int = _spec(0, "0: normal scheduling; 1..99: SCHED_FIFO priority for the loop", 0, 99)


@dataclass(frozen=True)
class HealthConfig:
    """What `install-bundle` asks of a new model before it keeps it."""

    ticks: int = _spec(50, "planning ticks the health check runs", 1, 100_000)
    states: str = _spec("", "a .npy of recorded states [N,S] to plan on; empty: states inside the spec's limits")
    budget_s: float = _spec(0.0, "p99 planning budget in seconds; 0: the bundle's control period", 0.0, 10.0)
    service_timeout_s: float = _spec(120.0, "how long a restarted service may take to report ready", 1.0, 3600.0)
    service_settle_s: float = _spec(5.0, "how long it must then stay up without a restart", 0.0, 600.0)


@dataclass(frozen=True)
class LogsConfig:
    """Flight-log retention under /var/log/dreamlink (journald keeps the service's own log)."""

    rotate: int = _spec(10, "rotated copies logrotate keeps of each log file", 1, 1000)
    max_size_mb: int = _spec(50, "rotate a log file once it is larger than this", 1, 100_000)
    keep_days: int = _spec(30, "flight folders older than this are removed", 1, 10_000)


@dataclass(frozen=True)
class DeployConfig:
    """The `[deploy]` table and its sub-tables."""

    connect: str = _spec("udpin:127.0.0.1:14550", "MAVLink link to the flight controller / motor board")
    state_dir: str = _spec("/var/lib/dreamlink", "where the A/B model slots and the `current` link live")
    bundle_public_key: str = _spec("", "Ed25519 public key file; when set, unsigned bundles are refused")
    service: ServiceConfig = field(default_factory=ServiceConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)

    @property
    def link(self) -> LinkAddress:
        return parse_connect(self.connect)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


_SECTIONS: dict[str, type] = {"service": ServiceConfig, "health": HealthConfig, "logs": LogsConfig}


def _expect(kind: Any, meta: dict[str, Any]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    text = "a list of strings" if kind == "tuple[str, ...]" else names.get(kind, str(kind))
    lo, hi = meta.get("lo"), meta.get("hi")
    return text + (f" in [{lo}, {hi}]" if lo is not None else "")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": "tuple[str, ...]"}


def _coerce(value: Any, type_name: str, meta: dict[str, Any], key: str) -> Any:
    kind: Any = _TYPES[type_name]

    def bad(why: str = "") -> ConfigError:
        return ConfigError(f"{key}: expected {_expect(kind, meta)}, got {value!r}{why}")

    if kind == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad()
        return tuple(value)
    if isinstance(value, bool) and kind is not bool:
        raise bad()
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise bad()
    if kind in (int, float):
        lo, hi = meta.get("lo"), meta.get("hi")
        if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise bad()
    return value


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.{key}: unknown key{hint}; {where} has {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        f = known[name]
        if name in _SECTIONS:
            values[name] = _build(_SECTIONS[name], value, f"{where}.{name}")
        else:
            values[name] = _coerce(value, str(f.type), dict(f.metadata), f"{where}.{name}")
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> DeployConfig:
    """Validate the `[deploy]` tables of an already-parsed TOML document."""
    config = _build(DeployConfig, data.get("deploy", {}), "deploy")
    try:
        config.link  # noqa: B018 - parse once here, so a bad link fails at load, not in flight
    except ValueError as e:
        raise ConfigError(f"deploy.connect: {e}") from None
    for key, value in (("deploy.state_dir", config.state_dir), ("deploy.service.venv", config.service.venv)):
        if not value.startswith("/"):
            raise ConfigError(f"{key}: expected an absolute path, got {value!r}")
    if not config.service.user.isidentifier() and not config.service.user.replace("-", "_").isidentifier():
        raise ConfigError(f"deploy.service.user: expected a user name, got {config.service.user!r}")
    return config


def load_config(path: str | Path) -> DeployConfig:
    """Read and validate a config file. Raises ConfigError naming the file and key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file; `dreamlink deploy` writes a commented default") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read it ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _table_lines(obj: Any, header: str) -> list[str]:
    lines = [f"[{header}]"]
    subs = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.name in _SECTIONS:
            subs.append((f.name, v))
            continue
        lines.append(f"# {f.metadata['doc']}")
        lines.append(f"{f.name} = {_toml_value(v)}")
    for name, sub in subs:
        lines += ["", *_table_lines(sub, f"{header}.{name}")]
    return lines


def config_to_toml(config: DeployConfig) -> str:
    """The config as commented TOML (what `dreamlink deploy` writes when given no config file)."""
    head = [
        "# dreamlink device configuration. Deploy reads the [deploy] tables; other boxes read their own.",
        "# After changing [deploy], regenerate the unit on the device:",
        "#   sudo dreamlink deploy --root / --config /etc/dreamlink/dreamlink.toml && sudo systemctl daemon-reload",
        "",
    ]
    return "\n".join(head + _table_lines(config, "deploy")) + "\n"
