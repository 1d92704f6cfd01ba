"""The bundle folder on disk: written whole, read back verified, its manifest updated atomically.

`write_bundle` copies the models and their side files, hashes them and writes the manifest; the folder
appears complete or not at all. `load_bundle` reads a folder or a `.tar` of one and checks it whole
before anything uses it: the signature (with a public key), schema, every file's sha256, side files
the manifest does not hash, and each ONNX file against its role's contract; nothing is half-loaded.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from dreamlink.bundle.contract import check_onnx_contract
from dreamlink.bundle.manifest import (
    MANIFEST,
    ROLES,
    SIGNATURE,
    Bundle,
    BundleError,
    BundleFile,
    Manifest,
    SideFile,
    _parse_manifest,
    sha256_of,
)
from dreamlink.bundle.side_files import onnx_side_files
from dreamlink.bundle.signing import _verify_manifest_signature
from dreamlink.spec import VehicleSpec

log = logging.getLogger(__name__)


def _safe_extract(tar_path: Path, dest: Path) -> None:
    import tarfile  # deferred, as are tempfile and shutil: only .tar bundles and writing need them (~0.6 MB)

    try:
        with tarfile.open(tar_path) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, filter="data")
            else:
                # Python < 3.10.12 / 3.11.4 (e.g. Debian bookworm's 3.11.2 on a Raspberry Pi) has no
                # extraction filters: allow plain files and folders inside dest, nothing else.
                for m in tf.getmembers():
                    if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in Path(m.name).parts:
                        raise BundleError(f"{tar_path}: member {m.name!r} is not a plain file inside the bundle")
                tf.extractall(dest)
    except (tarfile.TarError, OSError) as e:
        raise BundleError(f"{tar_path}: not a readable bundle tar ({e})") from None


def load_bundle(path: str | os.PathLike[str], check_models: bool = True,
                public_key: str | os.PathLike[str] | None = None) -> Bundle:
    """Read and verify a bundle folder or `.tar`. Raises `BundleError` on any mismatch.

    With `public_key` (an Ed25519 public key file), the bundle must carry a signature by the
    matching private key over its manifest. A `.tar` is unpacked into a private temporary
    folder that lives as long as the process.
    """
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such bundle (expected a folder with {MANIFEST}, or a .tar of one)")
    if p.is_file():
        import shutil
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="dreamlink-bundle-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        _safe_extract(p, tmp)
        candidates = [tmp] + [d for d in tmp.iterdir() if d.is_dir()]
        roots = [d for d in candidates if (d / MANIFEST).is_file()]
        if not roots:
            raise BundleError(f"{p}: the tar holds no {MANIFEST}")
        p = roots[0]
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{p}: no {MANIFEST}; this is not a bundle folder")
    raw = mpath.read_bytes()  # read once: the bytes checked are the bytes parsed
    if public_key is not None:
        _verify_manifest_signature(p, raw, Path(public_key))
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({e}); re-copy the bundle") from None
    manifest = _parse_manifest(data, str(mpath))
    for role, f in manifest.files.items():
        listed = [(f.path, f.sha256, role)] + [(x.path, x.sha256, f"{role} external data") for x in f.external_data]
        for rel, digest, what in listed:
            fp = p / rel
            if not fp.is_file():
                raise BundleError(f"{rel}: listed in the manifest as {what} but missing from {p}; re-copy the bundle")
            actual = sha256_of(fp)
            if actual != digest:
                raise BundleError(
                    f"{rel}: sha256 mismatch (manifest {digest[:12]}…, file {actual[:12]}…); "
                    "re-export or re-copy the bundle"
                )
        hashed = {x.path for x in f.external_data}
        for loc in onnx_side_files(p / f.path, f.path):
            if (PurePosixPath(f.path).parent / loc).as_posix() not in hashed:
                raise BundleError(f"{f.path}: refers to external data {loc} which the manifest does not list (its "
                                  "sha256 would go unchecked); bundle the model again with `dreamlink bundle`")
    if check_models:
        for role, f in manifest.files.items():
            check_onnx_contract(p / f.path, role, manifest.spec, f.ensemble_size)
    log.info("bundle %s verified (%d files%s)", p, len(manifest.files), ", signature good" if public_key else "")
    return Bundle(p.resolve(), manifest, hashlib.sha256(raw).hexdigest())


def write_bundle(
    out_dir: str | os.PathLike[str],
    spec: VehicleSpec,
    files: Mapping[str, tuple[Path, dict[str, Any]]],
    training: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None,
) -> Bundle:
    """Write a bundle folder: copy `files` ({role: (source path, {precision, opset, ensemble_size})}),
    hash them, write the manifest, verify the result, then move it into place.

    A source's external-data side files (the `location`s its tensors name) are copied beside it under the
    same names and hashed too. Errors name the source path as given, not the bundle's copy. The folder
    appears complete or not at all (built beside the target, renamed last).
    """
    import shutil

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out}: exists and is not an empty folder; choose a new bundle folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: mkdtemp makes the folder 0700 whatever the umask, and the renamed bundle would be
    # unreadable by the service user that runs it.
    staging = out.parent / f".{out.name}-{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        entries = {}
        taken = {MANIFEST, SIGNATURE, *(f"{role}.onnx" for role in files)}
        for role, (src, meta) in files.items():
            if role not in ROLES:
                raise BundleError(f"role {role!r} unknown, expected one of {ROLES}")
            src, name = Path(src), f"{role}.onnx"
            where = str(src)
            side = []
            for loc in onnx_side_files(src, where):
                if not (src.parent / loc).is_file():
                    raise BundleError(f"{where} refers to external data {loc} which is not next to it; copy it along "
                                      f"(into {src.parent}), or export with the weights inside the .onnx")
                if loc in taken:
                    raise BundleError(f"{where} refers to external data {loc}, a name another file of the bundle "
                                      "has; bundle it with `dreamlink bundle` (which renames side files)")
                taken.add(loc)
                (staging / loc).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.parent / loc, staging / loc)
                side.append(SideFile(PurePosixPath(loc).as_posix(), sha256_of(staging / loc)))
            shutil.copyfile(src, staging / name)
            entries[role] = BundleFile(
                role,
                name,
                sha256_of(staging / name),
                meta.get("precision", "fp32"),
                int(meta.get("opset", 0)),
                int(meta.get("ensemble_size", 1)),
                tuple(side),
            )
            check_onnx_contract(staging / name, role, spec, entries[role].ensemble_size, where=where)
        manifest = Manifest(
            spec=spec,
            files=entries,
            training=dict(training or {}),
            calibration=dict(calibration or {}),
            versions=dict(versions or {}),
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            # the oldest schema that describes it, so that devices running an older dreamlink still read it
            schema_version=2 if any(f.external_data for f in entries.values()) else 1,
        )
        (staging / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
        load_bundle(staging, check_models=False)  # refuse to ship what we could not load back (models checked above)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out)


def update_manifest(bundle: Bundle, **sections: Mapping[str, Any]) -> Bundle:
    """Merge new `training` / `calibration` / `versions` entries into a bundle's manifest, atomically."""
    data = bundle.manifest.to_dict()
    for key, value in sections.items():
        if key not in ("training", "calibration", "versions"):
            raise BundleError(f"update_manifest: cannot change {key!r}")
        data[key] = {**data[key], **dict(value)}
    tmp = bundle.root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, bundle.root / MANIFEST)
    stale = bundle.root / SIGNATURE
    if stale.exists():  # it covered the old manifest: keeping it would only fail later, less clearly
        stale.unlink()
        log.warning("%s: removed %s, which signed the previous manifest; sign the bundle again", bundle.root,
                    SIGNATURE)
    return load_bundle(bundle.root)
