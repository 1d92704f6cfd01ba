"""The bundle: a folder (or a `.tar` of it) holding `manifest.json` and ONNX files.

Onboard code and training code both go through this module. A bundle is checked
whole before anything uses it: schema, every file's sha256, and each ONNX file's
inputs/outputs against the contract of its role and the bundle's `VehicleSpec`.
A bundle that fails any check raises `BundleError` naming the file and what was
expected; nothing is half-loaded.

External data: an ONNX file may keep its weights in side files (`model.onnx.data`, the `location` its
tensors name; torch.onnx's exporter writes one by default). `write_bundle` carries every side file the
model refers to next to it, the manifest records each one's sha256 under its file's `external_data`, and
`load_bundle` refuses an ONNX file that refers to a side file the manifest does not hash. Such bundles
are schema 2 (a dreamlink that reads only schema 1 would load the side files unchecked); bundles without
side files stay schema 1, so older devices still read them.

Signature: `sign_bundle` writes `signature.ed25519`, an Ed25519 signature (64 raw bytes) over the
exact bytes of `manifest.json`. The manifest holds every file's sha256, so signing it covers the
files; `load_bundle(path, public_key=...)` checks the signature over the manifest bytes *before*
parsing them, then the hashes, so a device configured with a public key loads only what the key's
owner signed. Keys: PEM (`openssl genpkey -algorithm ed25519`), OpenSSH, or 32 raw bytes;
`write_signing_keypair` makes a pair. The private key file must be accessible by its owner only.
Uses the `cryptography` package, imported only when a signature is made or checked.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from dreamlink.spec import SpecError, VehicleSpec

log = logging.getLogger(__name__)

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


def _dim_ok(dim: Any, expected: int | None) -> bool:
    """A dynamic dim (named or None) matches a dynamic expectation; a fixed one must equal it."""
    if expected is None:
        return not isinstance(dim, int) or dim < 0
    return isinstance(dim, int) and dim == expected


def _fmt_shape(dims: list[int | None]) -> str:
    return "[" + ",".join("B" if d is None else str(d) for d in dims) + "]"


def _check_io(where: str, kind: str, name: str, shape: list[Any], dtype: str, expected: list[int | None]) -> None:
    if dtype != "tensor(float)":
        raise BundleError(f"{where}: {kind} {name!r} has type {dtype}, expected float32 tensor {_fmt_shape(expected)}")
    if len(shape) != len(expected) or not all(_dim_ok(d, e) for d, e in zip(shape, expected, strict=True)):
        raise BundleError(
            f"{where}: {kind} {name!r} has shape {shape}, expected {_fmt_shape(expected)} "
            "(B a dynamic batch dimension); re-export the model against this bundle's vehicle spec"
        )


def check_onnx_contract(path: Path, role: str, spec: VehicleSpec, ensemble_size: int = 1,
                        where: str | None = None) -> None:
    """Open the ONNX file in ONNX Runtime and check its inputs/outputs against the role's contract.

    world_model: state [B,S], action [B,A] -> next_state [B,S] (or [E,B,S]); policy: state [B,S] (and optionally
    target [B,S], the task's reference a few steps ahead) -> action [B,A]. Errors name `where` (default: the
    file's name), so a copy being checked can be reported as the file the user gave.
    """
    import onnxruntime as ort  # deferred: manifest-only tools need not pay for it

    S, A = spec.state_dim, spec.action_dim
    where = where or path.name
    # Loaded to be read, never run: no graph optimisation, no memory arena or pattern, one thread. That
    # makes the check cheap in time and in the memory an onboard process keeps after it.
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises several private exception types
        said = " ".join(str(e).replace(str(path), where).split())
        raise BundleError(f"{where}: ONNX Runtime cannot load it ({said}); re-export the model") from None
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = sess.get_outputs()
    if role == "world_model":
        want_in: dict[str, list[int | None]] = {"state": [None, S], "action": [None, A]}
        want_out: list[int | None] = [None, S] if ensemble_size == 1 else [ensemble_size, None, S]
        out_name = "next_state"
    elif role == "policy":
        want_in, want_out, out_name = {"state": [None, S]}, [None, A], "action"
        if "target" in inputs:
            want_in["target"] = [None, S]
    else:
        return  # planner graphs are checked by the planner that composes them
    for name, expected in want_in.items():
        if name not in inputs:
            raise BundleError(
                f"{where}: missing input {name!r} {_fmt_shape(expected)}; has inputs {sorted(inputs)}"
            )
        _check_io(where, "input", name, list(inputs[name].shape), inputs[name].type, expected)
    extra = set(inputs) - set(want_in)
    if extra:
        raise BundleError(
            f"{where}: unexpected extra inputs {sorted(extra)}; the {role} contract has {sorted(want_in)}"
        )
    match = [o for o in outputs if o.name == out_name]
    if not match:
        raise BundleError(
            f"{where}: missing output {out_name!r} {_fmt_shape(want_out)}; has {[o.name for o in outputs]}"
        )
    _check_io(where, "output", out_name, list(match[0].shape), match[0].type, want_out)


# -- what an ONNX file is and refers to ------------------------------------------------------------------------
#
# Read from the protobuf wire format: onboard code carries onnxruntime, not the `onnx` package, and ONNX
# Runtime does not say which side files a model needs. Only the messages on the way to a TensorProto are
# walked (field numbers from onnx.proto); everything else is skipped by its length.

_GIT_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_TENSOR_EXTERNAL_DATA = 13  # repeated StringStringEntryProto (key 1, value 2); the key "location" names the file


class _WireError(ValueError):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _WireError("a truncated or overlong varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message; length-delimited values as memoryviews."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: Any = None
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise _WireError(f"wire type {wire} (not protobuf)")
        if number == 0 or i > n:
            raise _WireError("a field past the end of its message")
        yield number, wire, value


def _walk(buf: memoryview, kind: str, found: list[str]) -> set[int]:
    """Append the external-data locations under a message of `kind`; returns the field numbers it has."""
    seen = set()
    for number, wire, value in _fields(buf):
        seen.add(number)
        if wire != 2:
            continue
        if kind == "tensor":
            if number == _TENSOR_EXTERNAL_DATA:
                entry = {k: bytes(v).decode("utf-8", "replace") for k, w, v in _fields(value) if w == 2}
                if entry.get(1) == "location" and entry.get(2, "") not in found:
                    found.append(entry.get(2, ""))
        elif number in _CHILDREN[kind]:
            _walk(value, _CHILDREN[kind][number], found)
    return seen


def _not_a_model(data: bytes) -> str:
    """Why these bytes are plainly not an ONNX file (the mistakes people make), or ""."""
    if not data:
        return "is empty (0 bytes); export the model again, or copy the whole file"
    if data.startswith(_GIT_LFS_POINTER):
        return "is a Git LFS pointer, run git lfs pull (in its repository) to fetch the model itself"
    if data.startswith(b"PK\x03\x04"):
        return "is a zip archive (a torch.save checkpoint?), not ONNX; export the model with torch.onnx.export"
    head = data[:4096]
    # An ONNX file opens with a protobuf tag and lengths, control bytes that text does not have.
    if not any((b < 0x20 and b not in b"\t\n\r") or b == 0x7F for b in head):
        first = head.split(b"\n", 1)[0][:60].decode("utf-8", "replace").strip()
        return f"is text, not ONNX (it begins {first!r}); give the binary .onnx file the exporter wrote"
    return ""


def onnx_side_files(path: Path, where: str | None = None) -> tuple[str, ...]:
    """The external-data files an ONNX file refers to (tensor `location`s, relative to its folder).

    Also the first look at a file someone calls a model: an empty file, a text file or a Git LFS pointer
    is refused here, naming `where` (default: the path) and what to do, before ONNX Runtime would say
    "Protobuf parsing failed".
    """
    where = where or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BundleError(f"{where}: cannot read it ({e.strerror or e})") from None
    reason = _not_a_model(data)
    if reason:
        raise BundleError(f"{where} {reason}")
    found: list[str] = []
    try:
        has_graph = 7 in _walk(memoryview(data), "model", found)
    except _WireError as e:
        raise BundleError(f"{where} is not an ONNX model (protobuf parsing failed: {e}); give the .onnx file "
                          "the exporter wrote") from None
    if not has_graph:
        raise BundleError(f"{where} is not an ONNX model (it holds no graph); give the .onnx file the exporter wrote")
    for loc in found:
        if not loc or Path(loc).is_absolute() or ".." in Path(loc).parts:
            raise BundleError(f"{where} refers to external data at {loc!r}, outside its folder; save the model "
                              "with its external data beside it (onnx.save_model(..., location=NAME))")
    return tuple(found)


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


# -- signatures ---------------------------------------------------------------------------------------------


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


def _load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    serialization = _crypto()
    data = _read_key_file(path, "bundle signing key", private=True)
    try:
        if len(data) == 32:
            return Ed25519PrivateKey.from_private_bytes(data)
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BundleError(f"bundle signing key {path}: not an unencrypted Ed25519 private key "
                          f"(PEM, OpenSSH or 32 raw bytes): {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"bundle signing key {path}: a {type(key).__name__}, expected an Ed25519 key")
    return key


def _load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    serialization = _crypto()
    data = _read_key_file(path, "bundle public key", private=False)
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        if data.lstrip().startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise BundleError(f"bundle public key {path}: not an Ed25519 public key (PEM, OpenSSH or 32 raw bytes): "
                          f"{e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"bundle public key {path}: a {type(key).__name__}, expected an Ed25519 key")
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
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: expected a bundle folder to sign (unpack a .tar, sign, pack it again)")
    bundle = load_bundle(root)
    key = _load_private_key(Path(private_key_path))
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
        bundle = load_bundle(bundle, check_models=False)
    raw = (bundle.root / MANIFEST).read_bytes()
    if bundle.manifest_sha256 and hashlib.sha256(raw).hexdigest() != bundle.manifest_sha256:
        raise BundleError(f"{bundle.root / MANIFEST}: changed on disk since the bundle was loaded; load it again")
    _verify_manifest_signature(bundle.root, raw, Path(public_key_path))


def _verify_manifest_signature(root: Path, manifest_bytes: bytes, public_key_path: Path) -> None:
    from cryptography.exceptions import InvalidSignature

    key = _load_public_key(public_key_path)
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
