"""Bring your own ONNX: `dreamlink bundle MODEL.onnx --vehicle FILE --out B` for models exported anywhere.

The models here come from plain `torch.onnx.export` (torch 2.13's default writes the weights to a
`model.onnx.data` side file), as a user's own training code would make them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dreamlink.bundle import MANIFEST, BundleError, load_bundle, write_bundle
from dreamlink.export.cli_commands import add_export_commands
from dreamlink.spec import load_vehicle

VEHICLE_TOML = """\
name = "slider"
control_period_s = 0.05

[[state]]
name = "pos_m"
unit = "m"
low = -2.0
high = 2.0

[[state]]
name = "vel_mps"
unit = "m/s"
low = -3.0
high = 3.0

[[state]]
name = "angle_rad"
unit = "rad"
low = -1.0
high = 1.0

[[action]]
name = "force_n"
unit = "N"
low = -5.0
high = 5.0

[planner]
horizon = 12
samples = 64
"""


class DeltaMLP(nn.Module):
    """A user's world model: next_state = state + MLP(state, action), or E of them stacked [E,B,S]."""

    def __init__(self, S: int = 3, A: int = 1, E: int = 0, hidden: int = 64) -> None:
        super().__init__()
        self.E = E
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(S + A, hidden), nn.Tanh(), nn.Linear(hidden, S)) for _ in range(max(E, 1))
        )

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([state, action], dim=-1)
        outs = [state + net(x) for net in self.nets]
        return torch.stack(outs) if self.E else outs[0]


class Policy(nn.Module):
    def __init__(self, S: int = 3, A: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(S, 64), nn.Tanh(), nn.Linear(64, A))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


def torch_export(module: nn.Module, path: Path, inputs: dict[str, int], output: str, **kwargs: object) -> Path:
    """Plain torch.onnx.export with a dynamic batch, as a user would call it (no dreamlink involved)."""
    torch.manual_seed(0)
    args = tuple(torch.randn(2, width) for width in inputs.values())
    batch = torch.export.Dim("B")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module.eval(), args, str(path), input_names=list(inputs), output_names=[output],
                      dynamic_shapes=tuple({0: batch} for _ in inputs), **kwargs)
    return path


@pytest.fixture()
def vehicle(tmp_path) -> Path:
    path = tmp_path / "slider.toml"
    path.write_text(VEHICLE_TOML)
    return path


@pytest.fixture()
def model() -> DeltaMLP:
    torch.manual_seed(1)
    return DeltaMLP().eval()


@pytest.fixture()
def exported(tmp_path, model) -> Path:
    path = torch_export(model, tmp_path / "export" / "model.onnx", {"state": 3, "action": 1}, "next_state")
    assert (path.parent / "model.onnx.data").is_file()  # torch 2.13's default: weights in a side file
    return path


def bundle_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="dreamlink")
    add_export_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bundle", *argv])
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def predict(bundle_root: Path, state: np.ndarray, action: np.ndarray) -> np.ndarray:
    bundle = load_bundle(bundle_root)
    sess = ort.InferenceSession(str(bundle.path_of("world_model")), providers=["CPUExecutionProvider"])
    return sess.run(None, {"state": state, "action": action})[0]


def inputs(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.uniform(-1, 1, (n, 3)).astype(np.float32), rng.uniform(-5, 5, (n, 1)).astype(np.float32)


def test_torch_export_with_side_file_is_bundled_and_loads_from_a_copy(tmp_path, vehicle, model, exported, capsys):
    code, out, err = bundle_cli([str(exported), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert "wrote bundle" in out

    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(tmp_path / "b", moved)
    shutil.rmtree(tmp_path / "b")
    bundle = load_bundle(moved)
    wm = bundle.manifest.files["world_model"]
    assert wm.ensemble_size == 1 and wm.opset in range(17, 21)
    assert [x.path for x in wm.external_data] == ["world_model.onnx.data"]
    assert (moved / "world_model.onnx.data").is_file()
    assert bundle.manifest.training["source"] == "user ONNX"
    assert bundle.manifest.training["onnx"] == "model.onnx"
    assert len(bundle.manifest.training["sha256"]) == 64
    assert bundle.manifest.calibration == {"planner": {"horizon": 12, "samples": 64}, "horizon": 12}

    state, action = inputs()
    with torch.no_grad():
        expected = model(torch.from_numpy(state), torch.from_numpy(action)).numpy()
    np.testing.assert_allclose(predict(moved, state, action), expected, rtol=1e-5, atol=1e-5)


def test_a_changed_side_file_is_refused(tmp_path, vehicle, exported, capsys):
    bundle_cli([str(exported), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")], capsys)
    data = tmp_path / "b" / "world_model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"world_model\.onnx\.data: sha256 mismatch"):
        load_bundle(tmp_path / "b")


def test_a_side_file_the_manifest_does_not_hash_is_refused(tmp_path, vehicle, exported, capsys):
    bundle_cli([str(exported), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")], capsys)
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    del manifest["files"]["world_model"]["external_data"]
    (tmp_path / "b" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"refers to external data world_model\.onnx\.data which the manifest does "
                                          r"not list"):
        load_bundle(tmp_path / "b")


def test_inline_puts_the_weights_inside_the_onnx(tmp_path, vehicle, model, exported, capsys):
    code, _, err = bundle_cli([str(exported), "--vehicle", str(vehicle), "--out", str(tmp_path / "b"), "--inline"],
                              capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [MANIFEST, "world_model.onnx"]
    shutil.copytree(tmp_path / "b", tmp_path / "copy")
    assert load_bundle(tmp_path / "copy").manifest.files["world_model"].external_data == ()
    state, action = inputs()
    with torch.no_grad():
        expected = model(torch.from_numpy(state), torch.from_numpy(action)).numpy()
    np.testing.assert_allclose(predict(tmp_path / "copy", state, action), expected, rtol=1e-5, atol=1e-5)


def test_write_bundle_carries_the_side_file_of_a_torch_export(tmp_path, vehicle, exported):
    bundle = write_bundle(tmp_path / "b", load_vehicle(vehicle), {"world_model": (exported, {"opset": 20})})
    assert [x.path for x in bundle.manifest.files["world_model"].external_data] == ["model.onnx.data"]
    shutil.copytree(tmp_path / "b", tmp_path / "copy")
    load_bundle(tmp_path / "copy")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty (0 bytes)"),
        (b"import torch\nmodel = torch.load('model.pt')\n", "is text, not ONNX"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e"
         b"2ca24d17e2393\nsize 12345\n", "is a Git LFS pointer, run git lfs pull"),
    ],
    ids=["empty", "text", "lfs-pointer"],
)
def test_a_file_that_is_not_a_model_is_refused_by_its_name(tmp_path, vehicle, capsys, content, problem):
    user_file = tmp_path / "models" / "wm.onnx"
    user_file.parent.mkdir()
    user_file.write_bytes(content)
    code, _, err = bundle_cli([str(user_file), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert f"{user_file} {problem}" in err
    assert "Protobuf parsing failed" not in err and "No graph was found" not in err
    assert not (tmp_path / "b").exists()


def test_a_missing_side_file_is_named(tmp_path, vehicle, exported, capsys):
    (exported.parent / "model.onnx.data").rename(tmp_path / "model.onnx.data")
    code, _, err = bundle_cli([str(exported), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")], capsys)
    assert code == 2
    assert f"{exported} refers to external data model.onnx.data which is not next to it; copy it along" in err
    with pytest.raises(BundleError, match=r"refers to external data model\.onnx\.data which is not next to it"):
        write_bundle(tmp_path / "b2", load_vehicle(vehicle), {"world_model": (exported, {})})


def test_an_ensemble_output_is_recognised(tmp_path, capsys):
    torch.manual_seed(2)
    ensemble = DeltaMLP(S=4, A=1, E=3).eval()
    path = torch_export(ensemble, tmp_path / "ens.onnx", {"state": 4, "action": 1}, "next_state")
    code, out, err = bundle_cli([str(path), "--vehicle", "cartpole", "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert "ensemble of 3" in out
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest.files["world_model"].ensemble_size == 3
    state = np.zeros((5, 4), np.float32)
    assert predict(tmp_path / "b", state, np.zeros((5, 1), np.float32)).shape == (3, 5, 4)


def test_a_policy_only_bundle_loads(tmp_path, capsys):
    vehicle = tmp_path / "no-planner.toml"
    vehicle.write_text(VEHICLE_TOML.split("[planner]")[0])
    torch.manual_seed(4)
    policy = Policy().eval()
    path = torch_export(policy, tmp_path / "policy.onnx", {"state": 3}, "action")
    code, _, err = bundle_cli(["--policy", str(path), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")],
                              capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert "policy" in manifest["files"] and "world_model" not in manifest["files"]
    assert {k: manifest["training"][k] for k in ("source", "onnx")} == {"source": "user ONNX", "onnx": "policy.onnx"}
    assert manifest["calibration"] == {}  # the vehicle file sets no [planner]
    bundle = load_bundle(tmp_path / "b")
    assert bundle.has("policy") and not bundle.has("world_model")
    with pytest.raises(BundleError, match="bundle has no 'world_model' file"):
        bundle.path_of("world_model")
    state = np.full((2, 3), 0.5, np.float32)
    sess = ort.InferenceSession(str(bundle.path_of("policy")), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"state": state})[0], policy(torch.from_numpy(state)).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_a_model_for_another_state_size_is_refused_naming_both(tmp_path, vehicle, capsys):
    path = torch_export(DeltaMLP(S=4), tmp_path / "four.onnx", {"state": 4, "action": 1}, "next_state")
    code, _, err = bundle_cli([str(path), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")], capsys)
    assert code == 2
    assert f"{path}: input 'state' is [B,4] (S=4), but vehicle 'slider' has S=3 (pos_m, vel_mps, angle_rad)" in err


def test_an_unsupported_opset_is_refused_naming_it(tmp_path, vehicle, exported, capsys):
    proto = onnx.load(str(exported), load_external_data=False)
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 21
    onnx.save(proto, str(exported))
    code, _, err = bundle_cli([str(exported), "--vehicle", str(vehicle), "--out", str(tmp_path / "b")], capsys)
    assert code == 2
    assert f"{exported} uses ONNX opset 21; dreamlink bundles opsets 17-20" in err


def test_an_unknown_vehicle_is_one_line(tmp_path, exported, capsys):
    code, _, err = bundle_cli([str(exported), "--vehicle", "submarine", "--out", str(tmp_path / "b")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "unknown vehicle 'submarine'" in err


MISFIT = """\
import torch
from torch import nn


class FiveStateModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(6, 5)

    def forward(self, state, action):
        return self.net(torch.cat([state, action], dim=-1))


model = FiveStateModel()
"""


def test_export_of_a_misfit_module_says_one_line(tmp_path):
    module_file = tmp_path / "misfit.py"
    module_file.write_text(MISFIT)
    result = subprocess.run(
        [sys.executable, "-m", "dreamlink.cli", "export", "--module", f"{module_file}:model", "--vehicle", "cartpole",
         "--out", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(module_file) in lines[0]
    assert "state [B,4], action [B,1]" in lines[0]  # what the vehicle needs
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in lines[0]  # what forward raised
    assert not (tmp_path / "b").exists()
