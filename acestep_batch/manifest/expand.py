"""Expansion: one validated manifest row -> one `OutputSpec` per variation.

Everything here is a pure function of the table's contents, so the same manifest yields the
same output ids and seeds on every machine and every rerun; that is what lets a rerun skip
outputs that already exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from acestep_batch.manifest.io import read_manifest
from acestep_batch.manifest.schema import KNOWN_COLUMNS, output_id, to_json_value
from acestep_batch.manifest.validate import ManifestError, check_manifest, manifest_uri
from acestep_batch.model.request import GenerationRequest


@dataclass(frozen=True)
class OutputSpec:
    """One audio file to render, with everything needed to name it and describe it."""

    output_id: str  # `<id>`, or `<id>-<variation>` when the row asks for several variations
    id: str  # the manifest row's id (given or derived)
    row: int  # 1-based manifest row
    request: GenerationRequest  # fully defaulted; seed (and retake_seeds) = row's + variation
    variation: int
    format: str | None  # per-row format override; None = the job's --format
    extra: dict[str, Any]  # the user's own columns, as JSON-serialisable values


def expand_manifest(table: pa.Table) -> list[OutputSpec]:
    """All outputs of a manifest in row order, then variation order.

    Raises ManifestError listing every problem if the manifest does not validate.
    """
    check = check_manifest(table)
    if check.problems:
        raise ManifestError(check.problems, uri=manifest_uri(table))
    extra_columns = _extra_columns(table)
    specs: list[OutputSpec] = []
    for checked in check.rows:
        extra = {
            name: to_json_value(values[checked.row - 1]) for name, values in extra_columns.items()
        }
        for variation in range(checked.variations):
            specs.append(
                OutputSpec(
                    output_id=output_id(checked.id, variation, checked.variations),
                    id=checked.id,
                    row=checked.row,
                    request=_variation_request(checked.request_fields, checked.seed, variation),
                    variation=variation,
                    format=checked.format,
                    extra=dict(extra),
                )
            )
    return specs


def _variation_request(fields: dict[str, Any], seed: int, variation: int) -> GenerationRequest:
    """Variation k renders with seed + k, and with retake_seeds + k when the row gives those
    (otherwise the engine derives the retake seed from the variation's own seed)."""
    retake_seeds = fields["retake_seeds"]
    if retake_seeds is not None:
        fields = {**fields, "retake_seeds": retake_seeds + variation}
    return GenerationRequest(**fields, seed=seed + variation)


def load_manifest(
    uri: str, storage_options: dict | None = None
) -> tuple[pa.Table, list[OutputSpec]]:
    """Read, validate and expand in one call; raises ManifestError on any problem."""
    table = read_manifest(uri, storage_options)
    return table, expand_manifest(table)


def _extra_columns(table: pa.Table) -> dict[str, list[Any]]:
    return {
        name: column.to_pylist()
        for name, column in zip(table.column_names, table.columns, strict=True)
        if name not in KNOWN_COLUMNS
    }
