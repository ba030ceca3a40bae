"""The manifest layer: read a manifest, validate it (every problem at once), expand it into
one `OutputSpec` per output. See manifests/README.md for the columns and rules."""

from acestep_batch.manifest.expand import OutputSpec, expand_manifest, load_manifest
from acestep_batch.manifest.io import manifest_sha256, read_manifest
from acestep_batch.manifest.validate import (
    ManifestError,
    ManifestProblem,
    manifest_warnings,
    validate_manifest,
)

__all__ = [
    "ManifestError",
    "ManifestProblem",
    "OutputSpec",
    "expand_manifest",
    "load_manifest",
    "manifest_sha256",
    "manifest_warnings",
    "read_manifest",
    "validate_manifest",
]
