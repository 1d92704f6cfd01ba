"""The manifest: what a bundle holds and how `manifest.json` records it.

Schema constants, the error every bundle check raises, the typed records of the manifest (`Manifest`,
`BundleFile`, `SideFile`) and of a verified bundle (`Bundle`), parsing a manifest's JSON with errors that
name the field, and the sha256 and library versions it records. Pure data and parsing: reading and
writing a folder on disk is `folder`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamlink.spec import SpecError, VehicleSpec

SCHEMA_VERSION = 2  # the newest schema this dreamlink reads; 2 adds `external_data` to a file's entry
SCHEMA_VERSIONS = (1, 2)
FORMAT = "dreamlink-bundle"
MANIFEST = "manifest.json"
SIGNATURE = "signature.ed25519"
ROLES = ("world_model", "policy", "planner")
PRECISIONS = ("fp32", "fp16", "int8")


class BundleError(Exception):
    """A bundle is missing, corrupt, or does not keep the contract; the message says what to do."""


@dataclass(frozen=True)
class SideFile:
    """An external-data file an ONNX file keeps tensors in; `path` is relative to the bundle root."""

    path: str
    sha256: str


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle, as the manifest records it."""

    role: str
    path: str
    sha256: str
    precision: str = "fp32"
    opset: int = 0
    ensemble_size: int = 1
    external_data: tuple[SideFile, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "precision": self.precision,
            "opset": self.opset,
            "ensemble_size": self.ensemble_size,
        }
        if self.external_data:
            out["external_data"] = [{"path": x.path, "sha256": x.sha256} for x in self.external_data]
        return out


@dataclass(frozen=True)
class Manifest:
    spec: VehicleSpec
    files: Mapping[str, BundleFile]
    training: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    created_utc: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema_version": self.schema_version,
            "created_utc": self.created_utc,
            "spec": self.spec.to_dict(),
            "files": {role: f.to_dict() for role, f in self.files.items()},
            "training": dict(self.training),
            "calibration": dict(self.calibration),
            "versions": dict(self.versions),
        }


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk. `root` is the folder holding the manifest."""

    root: Path
    manifest: Manifest
    manifest_sha256: str = ""  # of the manifest bytes that were verified and parsed

    @property
    def spec(self) -> VehicleSpec:
        return self.manifest.spec

    def path_of(self, role: str) -> Path:
        """The role's ONNX file; a bundle may lack a role (a policy-only bundle has no world model): ask `has`."""
        if role not in self.manifest.files:
            has = ", ".join(sorted(self.manifest.files))
            raise BundleError(f"{self.root}: bundle has no {role!r} file (it has {has}); use a bundle with a {role}")
        return self.root / self.manifest.files[role].path

    def has(self, role: str) -> bool:
        return role in self.manifest.files


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_manifest(data: Any, where: str) -> Manifest:
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise BundleError(f"{where}: field 'format' is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("schema_version")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        raise BundleError(
            f"{where}: schema_version {version!r} is not supported (this dreamlink reads "
            f"{', '.join(map(str, SCHEMA_VERSIONS))}); re-export the bundle with a matching dreamlink"
        )
    try:
        spec = VehicleSpec.from_dict(data.get("spec"), where=f"{where}: spec")
    except SpecError as e:
        raise BundleError(str(e)) from None
    files_raw = data.get("files")
    if not isinstance(files_raw, dict) or not {"world_model", "policy"} & set(files_raw):
        raise BundleError(f"{where}: field 'files' must be an object with a 'world_model' or a 'policy' entry "
                          "(or both)")
    files = {}
    for role, entry in files_raw.items():
        w = f"{where}: files.{role}"
        if role not in ROLES:
            raise BundleError(f"{w}: unknown role, expected one of {ROLES}")
        if not isinstance(entry, dict):
            raise BundleError(f"{w}: expected an object")
        rel, digest = _parse_path_and_digest(entry, w)
        precision = entry.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise BundleError(f"{w}.precision: expected one of {PRECISIONS}, got {precision!r}")
        opset, ens = entry.get("opset", 0), entry.get("ensemble_size", 1)
        if not isinstance(opset, int) or not isinstance(ens, int) or ens < 1:
            raise BundleError(f"{w}: opset and ensemble_size must be integers (ensemble_size >= 1)")
        side_raw = entry.get("external_data", [])
        if not isinstance(side_raw, list) or not all(isinstance(x, dict) for x in side_raw):
            raise BundleError(f"{w}.external_data: expected a list of {{path, sha256}} objects")
        side = tuple(SideFile(*_parse_path_and_digest(x, f"{w}.external_data[{i}]")) for i, x in enumerate(side_raw))
        files[role] = BundleFile(role, rel, digest, precision, opset, ens, side)
    for key in ("training", "calibration", "versions"):
        if not isinstance(data.get(key, {}), dict):
            raise BundleError(f"{where}: field {key!r} must be an object")
    return Manifest(
        spec=spec,
        files=files,
        training=data.get("training", {}),
        calibration=data.get("calibration", {}),
        versions=data.get("versions", {}),
        created_utc=str(data.get("created_utc", "")),
        schema_version=version,
    )


def _parse_path_and_digest(entry: dict[str, Any], where: str) -> tuple[str, str]:
    rel = entry.get("path")
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise BundleError(f"{where}.path: expected a relative path inside the bundle, got {rel!r}")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise BundleError(f"{where}.sha256: expected 64 hex digits, got {digest!r}")
    return rel, digest


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made a bundle (those importable here)."""
    from importlib import metadata

    out = {}
    for dist in ("dreamlink", "numpy", "onnxruntime", "onnx", "torch", "pymavlink"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
