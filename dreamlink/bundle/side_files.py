"""Side files: the external-data files an ONNX file keeps its tensors in, and the first look at a model.

An ONNX file may keep its weights in side files (`model.onnx.data`, the `location` its tensors name;
torch.onnx's exporter writes one by default). The bundle carries and hashes each one (`folder`), so it
must know which a model refers to: `onnx_side_files` reads them from the protobuf wire format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dreamlink.bundle.manifest import BundleError

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
