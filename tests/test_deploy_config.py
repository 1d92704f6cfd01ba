"""The device config: every error names the file and the dotted key; other boxes' tables are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamlink.deploy.config import (
    ConfigError,
    DeployConfig,
    LinkAddress,
    config_to_toml,
    load_config,
    parse_connect,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "dreamlink.toml"
    p.write_text(text)
    return p


def test_commented_default_round_trips(tmp_path: Path) -> None:
    text = config_to_toml(DeployConfig())
    assert "# Ed25519 public key file" in text
    assert load_config(write(tmp_path, text)) == DeployConfig()


def test_values_are_read_and_other_tables_ignored(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            '[deploy]\nconnect = "/dev/ttyACM0,57600"\n'
            '[deploy.service]\nwatchdog_s = 4\nextra_groups = ["dialout", "gpio"]\n'
            "[deploy.health]\nticks = 200\n[planner]\nsamples = 512\n[link]\nsigning_key = 'x'\n",
        )
    )
    assert cfg.link == LinkAddress("serial", device="/dev/ttyACM0", baud=57600)
    assert cfg.service.watchdog_s == 4.0 and isinstance(cfg.service.watchdog_s, float)
    assert cfg.service.extra_groups == ("dialout", "gpio") and cfg.health.ticks == 200


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[deploy.service]\nwachdog_s = 5\n", "deploy.service.wachdog_s", "did you mean 'watchdog_s'"),
        ('[deploy.service]\nwatchdog_s = "ten"\n', "deploy.service.watchdog_s", "expected a number in [1.0, 600.0]"),
        ("[deploy.service]\nwatchdog_s = 0.5\n", "deploy.service.watchdog_s", "got 0.5"),
        ("[deploy.health]\nticks = 1.5\n", "deploy.health.ticks", "expected an integer"),
        ("[deploy.health]\nticks = true\n", "deploy.health.ticks", "expected an integer"),
        ("[deploy.service]\nextra_groups = 'dialout'\n", "deploy.service.extra_groups", "a list of strings"),
        ('[deploy]\nconnect = "udp:localhost"\n', "deploy.connect", "udpin:HOST:PORT"),
        ('[deploy]\nconnect = "com3"\n', "deploy.connect", "unknown link kind"),
        ('[deploy]\nstate_dir = "var/lib"\n', "deploy.state_dir", "absolute path"),
        ("[deploy]\nservice = 3\n", "deploy.service", "expected a table"),
        ("[deploy.logs]\nrotate = 0\n", "deploy.logs.rotate", "[1, 1000]"),
    ],
)
def test_errors_name_the_key_and_what_was_expected(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(f"{path}: {key}"), message
    assert expected in message, message


def test_unreadable_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[deploy\nconnect = 1\n"))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("udp:0.0.0.0:14550", LinkAddress("udpin", host="0.0.0.0", port=14550)),
        ("udpout:10.0.0.2:14555", LinkAddress("udpout", host="10.0.0.2", port=14555)),
        ("tcp:127.0.0.1:5760", LinkAddress("tcp", host="127.0.0.1", port=5760)),
        ("/dev/ttyAMA0", LinkAddress("serial", device="/dev/ttyAMA0", baud=115200)),
        ("serial:/dev/serial0:921600", LinkAddress("serial", device="/dev/serial0", baud=921600)),
    ],
)
def test_connect_strings_in_the_firmware_bridge_spelling(text: str, parsed: LinkAddress) -> None:
    assert parse_connect(text) == parsed
    assert parse_connect(str(parsed)) == parsed  # what the unit's ExecStart carries parses back the same
