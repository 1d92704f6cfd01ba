"""The `dreamlink` command as a user types it: help for every step, a user's own model exported
through the same command, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dreamlink.bundle import load_bundle
from dreamlink.cli import main

STEPS = ["demo", "sitl", "collect", "train", "export", "run", "deploy", "install-bundle", "doctor"]


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
