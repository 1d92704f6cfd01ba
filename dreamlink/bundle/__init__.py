"""The bundle: a folder (or a `.tar` of it) holding `manifest.json` and ONNX files.

Onboard code and training code both go through this package. A bundle is checked whole before
anything uses it: schema, every file's sha256, and each ONNX file's inputs/outputs against the
contract of its role and the bundle's `VehicleSpec`. A bundle that fails any check raises
`BundleError` naming the file and what was expected; nothing is half-loaded.

External data: an ONNX file may keep its weights in side files (`model.onnx.data`, the `location` its
tensors name; torch.onnx's exporter writes one by default). `write_bundle` carries every side file the
model refers to next to it, the manifest records each one's sha256 under its file's `external_data`, and
`load_bundle` refuses an ONNX file that refers to a side file the manifest does not hash. Such bundles
are schema 2 (a dreamlink that reads only schema 1 would load the side files unchecked); bundles without
side files stay schema 1, so older devices still read them.

Where each part lives: `manifest` (schema, records, parsing, hashes), `contract` (ONNX inputs/outputs
against the spec), `side_files` (which external-data files a model refers to), `folder` (writing and
loading a bundle on disk), `signing` (Ed25519 signatures over the manifest). Import from here.
"""

from dreamlink.bundle.contract import check_onnx_contract
from dreamlink.bundle.folder import load_bundle, update_manifest, write_bundle
from dreamlink.bundle.manifest import (
    FORMAT,
    MANIFEST,
    PRECISIONS,
    ROLES,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    SIGNATURE,
    Bundle,
    BundleError,
    BundleFile,
    Manifest,
    SideFile,
    library_versions,
    sha256_of,
)
from dreamlink.bundle.side_files import onnx_side_files
from dreamlink.bundle.signing import sign_bundle, verify_signature, write_signing_keypair

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PRECISIONS",
    "ROLES",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "SIGNATURE",
    "Bundle",
    "BundleError",
    "BundleFile",
    "Manifest",
    "SideFile",
    "check_onnx_contract",
    "library_versions",
    "load_bundle",
    "onnx_side_files",
    "sha256_of",
    "sign_bundle",
    "update_manifest",
    "verify_signature",
    "write_bundle",
    "write_signing_keypair",
]
