"""Bundle signatures: Ed25519 over the manifest; a device with a public key loads only what was signed for it."""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx_models import linear_world_model

from dreamlink.bundle import (
    MANIFEST,
    SIGNATURE,
    BundleError,
    load_bundle,
    sign_bundle,
    update_manifest,
    verify_signature,
    write_bundle,
    write_signing_keypair,
)
from dreamlink.deploy.config import DeployConfig
from dreamlink.deploy.install import InstallError, install_bundle
from dreamlink.spec import CARTPOLE


def make_bundle(path: Path) -> Path:
    F = np.eye(4, dtype=np.float32)
    G = np.zeros((4, 1), np.float32)
    onnx_path = linear_world_model(path.parent / f"{path.name}.onnx", F, G)
    write_bundle(path, CARTPOLE, {"world_model": (onnx_path, {"opset": 17})})
    return path


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    write_signing_keypair(tmp_path / "release.key", tmp_path / "release.pub")
    write_signing_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    return {"private": tmp_path / "release.key", "public": tmp_path / "release.pub",
            "other_private": tmp_path / "other.key", "other_public": tmp_path / "other.pub"}


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


def test_signed_bundle_loads_with_its_key_and_only_with_it(bundle: Path, keys: dict[str, Path]) -> None:
    sig = sign_bundle(bundle, keys["private"])
    assert sig == (bundle / SIGNATURE).resolve() and len(sig.read_bytes()) == 64
    loaded = load_bundle(bundle, public_key=keys["public"])
    verify_signature(loaded, keys["public"])
    verify_signature(bundle, keys["public"])
    with pytest.raises(BundleError, match=r"signature\.ed25519: does not verify against .*other\.pub"):
        load_bundle(bundle, public_key=keys["other_public"])
    assert (keys["private"].stat().st_mode & 0o777) == 0o600


def test_unsigned_bundle_is_refused_when_a_key_is_configured(bundle: Path, keys: dict[str, Path]) -> None:
    load_bundle(bundle)  # no key configured: fine
    with pytest.raises(BundleError, match=r"signature\.ed25519: missing from .*bundle.*release\.pub"):
        load_bundle(bundle, public_key=keys["public"])


@pytest.mark.parametrize("tamper", ["manifest", "model", "signature"])
def test_any_change_after_signing_is_refused_naming_the_file(bundle: Path, keys: dict[str, Path], tamper: str) -> None:
    sign_bundle(bundle, keys["private"])
    if tamper == "manifest":  # e.g. widen a limit: hashes still match, the signature does not
        data = json.loads((bundle / MANIFEST).read_text())
        data["calibration"] = {"horizon": 99}
        (bundle / MANIFEST).write_text(json.dumps(data))
        expected = r"signature\.ed25519: does not verify"
    elif tamper == "model":  # the signature covers the model through the manifest's sha256
        with open(bundle / "world_model.onnx", "ab") as f:
            f.write(b"\0")
        expected = r"world_model\.onnx: sha256 mismatch"
    else:
        raw = bytearray((bundle / SIGNATURE).read_bytes())
        raw[0] ^= 1
        (bundle / SIGNATURE).write_bytes(bytes(raw))
        expected = r"signature\.ed25519: does not verify"
    with pytest.raises(BundleError, match=expected):
        load_bundle(bundle, public_key=keys["public"])


def test_manifest_changed_after_loading_is_caught(bundle: Path, keys: dict[str, Path]) -> None:
    sign_bundle(bundle, keys["private"])
    loaded = load_bundle(bundle)
    (bundle / MANIFEST).write_text((bundle / MANIFEST).read_text() + " ")
    with pytest.raises(BundleError, match="changed on disk since the bundle was loaded"):
        verify_signature(loaded, keys["public"])


def test_update_manifest_drops_the_stale_signature(bundle: Path, keys: dict[str, Path]) -> None:
    sign_bundle(bundle, keys["private"])
    updated = update_manifest(load_bundle(bundle), calibration={"horizon": 12})
    assert not (bundle / SIGNATURE).exists()
    sign_bundle(updated.root, keys["private"])
    assert load_bundle(bundle, public_key=keys["public"]).manifest.calibration == {"horizon": 12}


def test_signed_tar_and_other_key_formats(bundle: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    raw_private = Ed25519PrivateKey.generate()
    raw_key = tmp_path / "raw.key"
    raw_key.write_bytes(raw_private.private_bytes_raw())
    raw_key.chmod(0o600)
    ssh_pub = tmp_path / "key.pub"
    ssh_pub.write_bytes(raw_private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                              serialization.PublicFormat.OpenSSH) + b" ci@build\n")
    sign_bundle(bundle, raw_key)
    tar = tmp_path / "bundle.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(bundle, arcname="bundle")
    assert load_bundle(tar, public_key=ssh_pub).spec == CARTPOLE
    with pytest.raises(BundleError, match="expected a bundle folder to sign"):
        sign_bundle(tar, raw_key)


def test_bad_keys_are_refused_clearly(bundle: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    keys["private"].chmod(0o644)
    with pytest.raises(BundleError, match=r"release\.key has mode 0644.*chmod 600"):
        sign_bundle(bundle, keys["private"])
    keys["private"].chmod(0o600)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("ed25519 public key")
    with pytest.raises(BundleError, match=r"bundle public key .*garbage\.pub: not an Ed25519 public key"):
        load_bundle(bundle, public_key=garbage)
    with pytest.raises(BundleError, match=r"bundle public key .*missing\.pub: cannot read"):
        load_bundle(bundle, public_key=tmp_path / "missing.pub")
    with pytest.raises(BundleError, match="already exists"):
        write_signing_keypair(keys["private"], tmp_path / "x.pub")
    openssl = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024",
                              "-out", str(tmp_path / "rsa.key")], capture_output=True, check=False)
    if openssl.returncode == 0:
        (tmp_path / "rsa.key").chmod(0o600)
        with pytest.raises(BundleError, match="expected an Ed25519 key"):
            sign_bundle(bundle, tmp_path / "rsa.key")


def test_install_on_a_keyed_device_takes_signed_bundles_only(bundle: Path, keys: dict[str, Path],
                                                             tmp_path: Path) -> None:
    config = replace(DeployConfig(state_dir=str(tmp_path / "state")), bundle_public_key=str(keys["public"]))
    with pytest.raises(InstallError, match=r"does not verify against .*release\.pub.*signature\.ed25519: missing"):
        install_bundle(bundle, config, skip_health=True)
    sign_bundle(bundle, keys["other_private"])
    with pytest.raises(InstallError, match=r"signature\.ed25519: does not verify"):
        install_bundle(bundle, config, skip_health=True)
    sign_bundle(bundle, keys["private"])
    result = install_bundle(bundle, config, skip_health=True)
    assert result.ok and "signature" in result.steps
    installed = config.state_path / "current"
    assert load_bundle(installed, public_key=keys["public"]).manifest_sha256 == load_bundle(bundle).manifest_sha256
