"""The bundle format (dreamlink/bundle/): pack, load back, and refuse anything that does not match."""

from __future__ import annotations

import json
import stat
import tarfile

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dreamlink.bundle import MANIFEST, SCHEMA_VERSION, BundleError, load_bundle, update_manifest, write_bundle
from dreamlink.export.onnx_export import ExportError, export_world_model
from dreamlink.export.pack import pack_bundle
from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig
from dreamlink.spec import CARTPOLE, Component, VehicleSpec

THREE_STATE = VehicleSpec(
    name="three",
    state=tuple(Component(f"x{i}_m", "m", -1.0, 1.0) for i in range(3)),
    action=(Component("u_n", "N", -1.0, 1.0),),
    control_period_s=0.02,
)


def small_model(spec: VehicleSpec = CARTPOLE, E: int = 3) -> EnsembleWorldModel:
    torch.manual_seed(0)
    return EnsembleWorldModel(spec, WorldModelConfig(hidden=16, ensemble_size=E))


@pytest.fixture()
def bundle_dir(tmp_path):
    bundle, _ = pack_bundle(tmp_path / "bundle", CARTPOLE, small_model(), training={"epochs": np.int64(3)})
    return bundle.root


def _edit_manifest(root, edit):
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    (root / MANIFEST).write_text(json.dumps(data))


def test_pack_and_load_back(tmp_path):
    policy = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    bundle, parity = pack_bundle(
        tmp_path / "b", CARTPOLE, small_model(), training={"holdout_rmse": {"cart_pos_m": np.float32(0.01)}},
        calibration={"horizon": 20}, policy=policy,
    )
    assert parity.ok
    back = load_bundle(tmp_path / "b")
    assert back.root == bundle.root and back.spec == CARTPOLE
    wm = back.manifest.files["world_model"]
    assert (wm.precision, wm.opset, wm.ensemble_size) == ("fp32", 17, 3)
    assert back.has("policy")
    assert back.manifest.training["world_model_parity"]["max_abs_err"] == parity.max_abs_err
    assert back.manifest.training["policy_parity"]["ok"] is True
    assert back.manifest.training["holdout_rmse"] == {"cart_pos_m": pytest.approx(0.01)}
    assert back.manifest.calibration == {"horizon": 20}
    assert {"onnxruntime", "onnx", "torch", "numpy"} <= set(back.manifest.versions)
    out = ort.InferenceSession(str(back.path_of("world_model"))).run(
        None, {"state": np.zeros((2, 4), np.float32), "action": np.ones((2, 1), np.float32)}
    )[0]
    assert out.shape == (3, 2, 4) and np.all(np.isfinite(out))


def test_bundle_folder_is_readable_by_others(bundle_dir):
    # The runtime's service user is not the user who packed the bundle (umask 022 here).
    assert bundle_dir.stat().st_mode & stat.S_IROTH
    assert bundle_dir.stat().st_mode & stat.S_IXOTH


def test_one_changed_byte_is_refused(bundle_dir):
    onnx_file = bundle_dir / "world_model.onnx"
    raw = bytearray(onnx_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    onnx_file.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"world_model\.onnx: sha256 mismatch"):
        load_bundle(bundle_dir)


def test_wrong_schema_version_is_refused(bundle_dir):
    _edit_manifest(bundle_dir, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match=rf"schema_version {SCHEMA_VERSION + 1} is not supported"):
        load_bundle(bundle_dir)


def test_model_for_another_state_size_is_refused(tmp_path):
    onnx_file = export_world_model(small_model(THREE_STATE), THREE_STATE, tmp_path / "three.onnx")
    with pytest.raises(BundleError, match=r"input 'state' has shape \['B', 3\], expected \[B,4\]"):
        write_bundle(tmp_path / "b", CARTPOLE, {"world_model": (onnx_file, {"ensemble_size": 3})})
    assert not (tmp_path / "b").exists()  # nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == ["three.onnx"]


def test_pack_refuses_a_module_that_does_not_fit_the_spec(tmp_path):
    with pytest.raises(ExportError, match=r"state \[3,4\]"):
        pack_bundle(tmp_path / "b", CARTPOLE, small_model(THREE_STATE))
    assert not (tmp_path / "b").exists()


def test_manifest_spec_edited_to_another_shape_is_refused(bundle_dir):
    def edit(d: dict) -> None:
        d["spec"]["state"].append({"name": "extra_m", "unit": "m", "low": -1, "high": 1})
        d["spec"].pop("link", None)  # else the link's 4 sources for 5 components are refused first

    _edit_manifest(bundle_dir, edit)
    with pytest.raises(BundleError, match=r"world_model\.onnx: input 'state' has shape .*expected \[B,5\]"):
        load_bundle(bundle_dir)


def test_manifest_link_that_does_not_fit_the_spec_is_refused(bundle_dir):
    _edit_manifest(bundle_dir, lambda d: d["spec"]["state"].append({"name": "extra_m", "unit": "m", "low": -1,
                                                                     "high": 1}))
    with pytest.raises(BundleError, match=r"spec\.link\.telemetry: expected 5 sources"):
        load_bundle(bundle_dir)


def test_manifest_ensemble_size_must_match_the_graph(bundle_dir):
    _edit_manifest(bundle_dir, lambda d: d["files"]["world_model"].update(ensemble_size=1))
    with pytest.raises(BundleError, match=r"output 'next_state' has shape \[3, 'B', 4\], expected \[B,4\]"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("nested", [True, False])
def test_tar_of_a_bundle_loads(tmp_path, bundle_dir, nested):
    tar_path = tmp_path / "bundle.tar"
    with tarfile.open(tar_path, "w") as tf:
        if nested:
            tf.add(bundle_dir, arcname="cartpole-bundle")
        else:
            for f in bundle_dir.iterdir():
                tf.add(f, arcname=f.name)
    back = load_bundle(tar_path)
    assert back.spec == CARTPOLE
    assert back.path_of("world_model").is_file()


def test_tar_with_a_corrupt_member_is_refused(tmp_path, bundle_dir):
    (bundle_dir / "world_model.onnx").write_bytes(b"not a model")
    tar_path = tmp_path / "bundle.tar"
    with tarfile.open(tar_path, "w") as tf:
        tf.add(bundle_dir, arcname="b")
    with pytest.raises(BundleError, match=r"world_model\.onnx: sha256 mismatch"):
        load_bundle(tar_path)


def test_missing_file_is_refused_naming_it(bundle_dir):
    (bundle_dir / "world_model.onnx").unlink()
    with pytest.raises(BundleError, match=r"world_model\.onnx: listed in the manifest as world_model but missing"):
        load_bundle(bundle_dir)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "junk.tar").write_bytes(b"\0" * 10)
    with pytest.raises(BundleError, match=r"junk\.tar"):
        load_bundle(tmp_path / "junk.tar")


def test_write_refuses_an_occupied_target(tmp_path, bundle_dir):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(BundleError, match="exists and is not an empty folder"):
        pack_bundle(tmp_path / "a_file", CARTPOLE, small_model())
    with pytest.raises(BundleError, match="exists and is not an empty folder"):
        pack_bundle(bundle_dir, CARTPOLE, small_model())


def test_update_manifest_keeps_the_bundle_valid(bundle_dir):
    updated = update_manifest(load_bundle(bundle_dir), calibration={"horizon": 25})
    assert updated.manifest.calibration["horizon"] == 25
    assert load_bundle(bundle_dir).manifest.training["epochs"] == 3
