"""Deterministic batch plans and resume detection.

The plan depends only on the expanded manifest and the batch size: outputs are grouped by the
sampler-loop key (steps, scheduler, oss_steps), ordered by duration inside a group (so a batch
pads little) and cut into batches. A rerun rebuilds the same plan, so a regenerated output is
rendered in exactly the batch it was first rendered in - which is what makes it bit-identical.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..manifest import OutputSpec
from ..storage import Storage

AUDIO_DIR = "audio"
METADATA_DIR = "metadata"
REJECTED_DIR = "rejected"  # loops that failed QC on every attempt, kept with their reasons
QC_DIR = "qc"  # one row per failed QC attempt (the history behind `attempts`)
RUN_FILE = "run.json"


@dataclass(frozen=True)
class PlannedBatch:
    index: int
    specs: tuple[OutputSpec, ...]
    pending: frozenset[str]  # output ids of this batch that still need writing


def spec_to_dict(spec: OutputSpec, fmt: str, write: bool, attempt: int = 1, base_seed: int | None = None) -> dict[str, Any]:
    """What the replica and writer stages get per output. `attempt` > 1 marks a QC re-render whose
    request carries a new seed; `base_seed` is the row's own seed (attempt 1)."""
    return {
        "output_id": spec.output_id, "id": spec.id, "row": spec.row, "variation": spec.variation,
        "format": fmt, "extra": spec.extra, "request": spec.request.to_dict(), "write": write,
        "attempt": attempt, "base_seed": spec.request.seed if base_seed is None else base_seed,
    }


def plan_batches(specs: list[OutputSpec], batch_size: int) -> list[PlannedBatch]:
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    groups: dict[tuple, list[OutputSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.request.loop_key(), []).append(spec)
    batches: list[PlannedBatch] = []
    for key in sorted(groups, key=repr):
        ordered = sorted(groups[key], key=lambda s: (s.request.duration, s.output_id))
        for start in range(0, len(ordered), batch_size):
            chunk = tuple(ordered[start : start + batch_size])
            batches.append(PlannedBatch(len(batches), chunk, frozenset(s.output_id for s in chunk)))
    return batches


def finished_outputs(storage: Storage, extensions: dict[str, str]) -> set[str]:
    """Output ids whose metadata says ok (or rejected, for loops set aside after every QC attempt)
    and whose audio file exists (the resume criterion).

    `extensions` maps output id -> expected audio file name (so a format change re-renders).
    """
    table = storage.read_parquet_dir(METADATA_DIR)
    if table is None or table.num_rows == 0:
        return set()
    present = {"ok": set(storage.list(AUDIO_DIR)), "rejected": set(storage.list(REJECTED_DIR))}
    return {
        output_id
        for output_id, status in zip(table.column("output_id").to_pylist(), table.column("status").to_pylist())
        if status in present and extensions.get(output_id) in present[status]
    }


def drop_finished(batches: list[PlannedBatch], finished: set[str]) -> list[PlannedBatch]:
    remaining = []
    for batch in batches:
        pending = frozenset(s.output_id for s in batch.specs if s.output_id not in finished)
        if pending:
            remaining.append(dataclasses.replace(batch, pending=pending))
    return remaining


def batch_rows(
    batches: list[PlannedBatch], formats: dict[str, str], attempts: dict[str, tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Ray Data input rows: one row per planned batch. `attempts` maps output id -> (attempt,
    the row's own seed) for QC re-renders."""
    attempts = attempts or {}

    def entry(spec: OutputSpec, write: bool) -> dict[str, Any]:
        attempt, base_seed = attempts.get(spec.output_id, (1, spec.request.seed))
        return spec_to_dict(spec, formats[spec.output_id], write, attempt, base_seed)

    return [
        {"batch": batch.index, "specs": json.dumps([entry(s, s.output_id in batch.pending) for s in batch.specs])}
        for batch in batches
    ]
