"""torch -> ONNX export, parity against torch, and packing bundles (through `dreamlink.bundle`)."""

from dreamlink.export.onnx_export import (
    ExportError,
    ParityResult,
    check_parity,
    export_policy,
    export_world_model,
    read_metadata,
)
from dreamlink.export.pack import pack_bundle

__all__ = [
    "ExportError",
    "ParityResult",
    "check_parity",
    "export_policy",
    "export_world_model",
    "pack_bundle",
    "read_metadata",
]
