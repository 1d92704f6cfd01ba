"""Bundle signatures: an Ed25519 signature over the exact bytes of `manifest.json`.

`sign_bundle` writes `signature.ed25519` (64 raw bytes). The manifest holds every file's sha256, so
signing it covers the files; `load_bundle(path, public_key=...)` checks the signature over the manifest
bytes *before* parsing them, then the hashes, so a device configured with a public key loads only what
the key's owner signed. Keys: PEM (`openssl genpkey -algorithm ed25519`), OpenSSH, or 32 raw bytes;
`write_signing_keypair` makes a pair. The private key file must be accessible by its owner only.
Uses the `cryptography` package, imported only when a signature is made or checked.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from dreamlink.bundle.manifest import MANIFEST, SIGNATURE, Bundle, BundleError

log = logging.getLogger(__name__)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ModuleNotFoundError:
        raise BundleError("bundle signatures need the `cryptography` package; pip install cryptography") from None
    return serialization


def _read_key_file(path: Path, what: str, private: bool) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise BundleError(f"{what} {path}: cannot read it ({e.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if private and mode & 0o077:
            raise BundleError(f"{what} {path} has mode {mode:04o}: group or others can access it; "
                              f"run `chmod 600 {path}`")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# what each kind of key file is called in errors, and what it must hold
_KEY_KINDS = {True: ("bundle signing key", "an unencrypted Ed25519 private key"),
              False: ("bundle public key", "an Ed25519 public key")}


def _load_key(path: Path, private: bool) -> Any:
    """The Ed25519 private key (which signs) or public key (which verifies) in a PEM, OpenSSH or 32-byte file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    serialization = _crypto()
    what, holds = _KEY_KINDS[private]
    data = _read_key_file(path, what, private)
    kind = Ed25519PrivateKey if private else Ed25519PublicKey
    try:
        if len(data) == 32:
            return Ed25519PrivateKey.from_private_bytes(data) if private else Ed25519PublicKey.from_public_bytes(data)
        if private:
            key = (serialization.load_ssh_private_key(data, password=None) if b"OPENSSH PRIVATE KEY" in data
                   else serialization.load_pem_private_key(data, password=None))
        else:
            key = (serialization.load_ssh_public_key(data.strip()) if data.lstrip().startswith(b"ssh-ed25519")
                   else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as e:
        raise BundleError(f"{what} {path}: not {holds} (PEM, OpenSSH or 32 raw bytes): {e}") from None
    if not isinstance(key, kind):
        raise BundleError(f"{what} {path}: a {type(key).__name__}, expected an Ed25519 key")
    return key


def write_signing_keypair(private_key_path: str | os.PathLike[str], public_key_path: str | os.PathLike[str]) -> None:
    """A new Ed25519 key pair as PEM files: the private one mode 0600 (never overwritten), the public one 0644."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    serialization = _crypto()
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(private_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BundleError(f"bundle signing key {private_key_path}: already exists; not overwriting a key") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_pem)
    finally:
        os.close(fd)
    Path(public_key_path).write_bytes(public_pem)


def sign_bundle(bundle_dir: str | os.PathLike[str], private_key_path: str | os.PathLike[str]) -> Path:
    """Sign a bundle folder's manifest with an Ed25519 private key; returns the signature file.

    The bundle is verified first (a bundle whose files do not match its manifest is not signed)."""
    from dreamlink.bundle.folder import load_bundle  # deferred: load_bundle checks signatures through this module

    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: expected a bundle folder to sign (unpack a .tar, sign, pack it again)")
    bundle = load_bundle(root)
    key = _load_key(Path(private_key_path), private=True)
    raw = (bundle.root / MANIFEST).read_bytes()
    if hashlib.sha256(raw).hexdigest() != bundle.manifest_sha256:
        raise BundleError(f"{bundle.root / MANIFEST}: changed while signing; try again")
    signature = key.sign(raw)
    tmp = bundle.root / (SIGNATURE + ".tmp")
    tmp.write_bytes(signature)
    os.chmod(tmp, 0o644)
    os.replace(tmp, bundle.root / SIGNATURE)
    log.info("signed %s (manifest sha256 %s…)", bundle.root, bundle.manifest_sha256[:12])
    return bundle.root / SIGNATURE


def verify_signature(bundle: Bundle | str | os.PathLike[str], public_key_path: str | os.PathLike[str]) -> None:
    """Check the bundle's `signature.ed25519` against a public key; raises `BundleError` naming the file.

    Given a loaded `Bundle`, also refuses a manifest that changed on disk since it was loaded."""
    if not isinstance(bundle, Bundle):
        from dreamlink.bundle.folder import load_bundle  # deferred, as in sign_bundle

        bundle = load_bundle(bundle, check_models=False)
    raw = (bundle.root / MANIFEST).read_bytes()
    if bundle.manifest_sha256 and hashlib.sha256(raw).hexdigest() != bundle.manifest_sha256:
        raise BundleError(f"{bundle.root / MANIFEST}: changed on disk since the bundle was loaded; load it again")
    _verify_manifest_signature(bundle.root, raw, Path(public_key_path))


def _verify_manifest_signature(root: Path, manifest_bytes: bytes, public_key_path: Path) -> None:
    from cryptography.exceptions import InvalidSignature

    key = _load_key(public_key_path, private=False)
    sig_path = root / SIGNATURE
    if not sig_path.is_file():
        raise BundleError(f"{SIGNATURE}: missing from {root}; this device only loads bundles signed for "
                          f"{public_key_path} (sign it with dreamlink.bundle.sign_bundle)")
    signature = sig_path.read_bytes()
    if len(signature) != 64:
        raise BundleError(f"{sig_path}: {len(signature)} bytes, expected a 64-byte Ed25519 signature; sign the "
                          "bundle again")
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise BundleError(f"{sig_path}: does not verify against {public_key_path} (the manifest changed after "
                          "signing, or another key signed it); re-sign the bundle or check the device's key") from None
