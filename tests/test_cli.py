"""The `dreamlink` command as a user types it: help for every step, a user's own model exported
through the same command, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dreamlink.bundle import load_bundle
from dreamlink.cli import main

STEPS = ["demo", "sitl", "collect", "train", "export", "bundle", "run", "deploy", "install-bundle", "doctor"]


@pytest.mark.parametrize("command", STEPS)
def test_every_step_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: dreamlink " + command in capsys.readouterr().out


def test_a_users_own_two_layer_mlp_exports_through_the_cli(tmp_path, capsys):
    model_file = tmp_path / "my_model.py"
    model_file.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class TwoLayer(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.net = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 4))

                def forward(self, state, action):
                    return state + self.net(torch.cat([state, action], dim=-1))

            torch.manual_seed(0)
            model = TwoLayer()
            """
        )
    )
    out = tmp_path / "bundle"
    assert main(["export", "--module", f"{model_file}:model", "--vehicle", "cartpole", "--out", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    bundle = load_bundle(out)
    assert bundle.spec.name == "cartpole" and bundle.manifest.files["world_model"].ensemble_size == 1


def test_a_users_module_for_a_robot_described_in_a_file_exports(tmp_path, capsys):
    """10 states, 3 actions, a vehicle file: no code of dreamlink's names this robot."""
    states = ", ".join(f'{{ name = "x{i}_m", unit = "m", low = -1.0, high = 1.0 }}' for i in range(10))
    actions = ", ".join(f'{{ name = "u{i}", unit = "1", low = -1.0, high = 1.0 }}' for i in range(3))
    (tmp_path / "arm.toml").write_text(f'name = "arm"\ncontrol_period_s = 0.01\nstate = [{states}]\n'
                                       f'action = [{actions}]\n')
    (tmp_path / "arm.py").write_text(textwrap.dedent(
        """
        import torch
        from torch import nn

        class Arm(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(13, 10)

            def forward(self, state, action):
                return state + self.net(torch.cat([state, action], dim=-1))

        model = Arm()
        """))
    out = tmp_path / "bundle"
    assert main(["export", "--module", f"{tmp_path / 'arm.py'}:model", "--vehicle", str(tmp_path / "arm.toml"),
                 "--out", str(out)]) == 0
    bundle = load_bundle(out)
    assert (bundle.spec.name, bundle.spec.state_dim, bundle.spec.action_dim) == ("arm", 10, 3)


def test_run_with_a_missing_bundle_says_which(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(tmp_path / "nope"), "--connect",
         "udp:127.0.0.1:14999", "--ticks", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "nope: no such bundle" in proc.stderr


def test_bad_arguments_are_refused_with_the_name(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", "x.npz", "--out", "m.pt", "--epochs", "-3"])
    assert done.value.code == 2
    assert "--epochs" in capsys.readouterr().err


@pytest.mark.sitl
@pytest.mark.slow
def test_the_pipeline_step_by_step_as_the_readme_shows(tmp_path):
    """collect -> train -> export -> sitl + run, each a `dreamlink` command in its own process."""
    import json

    def dreamlink(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "dreamlink.cli", *args], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc

    dreamlink("collect", "cartpole", "--out", "d.npz", "--transitions", "3000", "--seed", "1")
    dreamlink("train", "--data", "d.npz", "--out", "m.pt", "--epochs", "5", "--ensemble", "2")
    out = dreamlink("export", "--checkpoint", "m.pt", "--data", "d.npz", "--out", "bundle")
    assert "parity" in out.stdout and "PASS" in out.stdout and "recommended horizon" in out.stdout
    from dreamlink.sim.launcher import free_udp_port

    port = free_udp_port()
    sitl = subprocess.Popen([sys.executable, "-m", "dreamlink.cli", "sitl", "cartpole", "--out",
                             f"udp:127.0.0.1:{port}", "--lockstep"], stdout=subprocess.DEVNULL, cwd=tmp_path)
    try:
        dreamlink("run", "--bundle", "bundle", "--connect", f"udp:127.0.0.1:{port}", "--lockstep", "--ticks", "50",
                  "--out", "flight")
    finally:
        sitl.terminate()
        sitl.wait(timeout=10)
    summary = json.loads((tmp_path / "flight" / "summary.json").read_text())
    assert summary["stats"]["ticks"] == 50


@pytest.mark.sitl
@pytest.mark.parametrize("vehicle", [["quad", "--autopilot", "px4"],
                                     ["gym", "--vehicle", "examples/pendulum/pendulum.toml"], ["cartpole"]])
def test_every_sitl_the_help_offers_starts_and_speaks_mavlink(vehicle):
    """`dreamlink sitl quad|gym|cartpole`: a heartbeat arrives on the port it was told, and SIGTERM ends it."""
    import socket
    from pathlib import Path

    from dreamlink.sim.mavlink_udp import mavlink, new_parser

    repo = Path(__file__).resolve().parents[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(20.0)
        port = sock.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "dreamlink.cli", "sitl", *vehicle, "--out",
                                 f"udp:127.0.0.1:{port}"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            parser, heartbeat = new_parser(), None
            while heartbeat is None:
                data, _ = sock.recvfrom(65536)
                heartbeat = next((m for m in parser.parse_buffer(data) or []
                                  if m.get_msgId() == mavlink.MAVLINK_MSG_ID_HEARTBEAT), None)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()[-1000:]
    assert b"sending MAVLink to" in out


def test_sitl_gym_without_a_vehicle_file_says_so_in_one_line():
    done = subprocess.run([sys.executable, "-m", "dreamlink.cli", "sitl", "gym"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--vehicle FILE is required" in done.stderr
