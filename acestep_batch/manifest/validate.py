"""Validation: every problem in a manifest, each naming the row, id, column, value and the fix.

A dataset-scale job should fail before it starts, with one message that lists everything to
fix, rather than hours later on row 81,204. So nothing here raises on bad data: each cell is
parsed on its own, cross-row rules run on whatever parsed, and all problems are collected.
"""

from __future__ import annotations

import bisect
import difflib
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from acestep_batch.manifest.schema import (
    COLUMNS,
    COLUMNS_BY_NAME,
    KNOWN_COLUMNS,
    MAX_SEED,
    METADATA_FILES,
    METADATA_URI,
    InvalidValue,
    derive_id,
    derive_seed,
    guidance_interval_step_count,
    is_null,
    output_id,
    reserved_column_reason,
    to_json_value,
)
from acestep_batch.model.request import GENERATION_FIELDS


class _NoValue(enum.Enum):
    """Marks a problem that has no offending cell (e.g. a missing column); pickles by name."""

    NO_VALUE = "no value"

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue.NO_VALUE
_MAX_SHOWN_CHARS = 80


def describe_value(value: Any) -> str:
    """A short, unambiguous rendering of a cell: text quoted, null as null, long text cut."""
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[:_MAX_SHOWN_CHARS] + "..."
    return text


@dataclass(frozen=True)
class ManifestProblem:
    """One thing to fix. `row` is 1-based over the whole manifest; None for file-level problems.

    `file` and `file_row` locate the row inside one file of a folder manifest (or name the file
    a file-level problem is about).
    """

    row: int | None
    id: str | None
    column: str | None
    value: Any
    expected: str
    file: str | None = None
    file_row: int | None = None

    def __str__(self) -> str:
        location = self._location()
        if self.value is NO_VALUE:
            detail = f"expected {self.expected}"
        else:
            detail = f"got {describe_value(self.value)}; expected {self.expected}"
        return f"{location}: {detail}" if location else detail

    def _location(self) -> str:
        parts: list[str] = []
        if self.row is not None:
            notes = []
            if self.id is not None:
                notes.append(f"id {self.id!r}")
            if self.file is not None:
                notes.append(f"row {self.file_row} of {self.file!r}")
            parts.append(f"row {self.row}" + (f" ({'; '.join(notes)})" if notes else ""))
        elif self.file is not None:
            parts.append(f"file {self.file!r}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for run reports; `message` is the same text as str()."""
        return {
            "row": self.row,
            "id": self.id,
            "column": self.column,
            "value": None if self.value is NO_VALUE else to_json_value(self.value),
            "expected": self.expected,
            "file": self.file,
            "file_row": self.file_row,
            "message": str(self),
        }


class ManifestError(ValueError):
    """Raised with every problem of a manifest; str() is the full, user-facing report."""

    def __init__(self, problems: Sequence[ManifestProblem], uri: str | None = None) -> None:
        self.problems: list[ManifestProblem] = list(problems)
        self.uri = uri
        super().__init__(self.report())

    def report(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        where = f"manifest {self.uri}" if self.uri else "manifest"
        lines = [f"{where}: {count} {noun}"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray ships exceptions between processes; rebuild from the problems, not the message.
        return (ManifestError, (self.problems, self.uri))


# --- where a row came from ------------------------------------------------------------------


def manifest_uri(table: pa.Table) -> str | None:
    """The URI `read_manifest` read this table from, if it did."""
    metadata = table.schema.metadata or {}
    raw = metadata.get(METADATA_URI)
    return raw.decode("utf-8") if raw else None


@dataclass(frozen=True)
class _RowSources:
    """Maps manifest rows back to (file, row in file) for folder manifests."""

    names: tuple[str, ...] = ()
    starts: tuple[int, ...] = ()  # 0-based first manifest row of each file

    @classmethod
    def of(cls, table: pa.Table) -> _RowSources:
        metadata = table.schema.metadata or {}
        raw = metadata.get(METADATA_FILES)
        if not raw:
            return cls()
        try:
            files = json.loads(raw)
        except ValueError:
            return cls()
        if len(files) < 2:
            return cls()  # a single file: the manifest row is the file row
        names, starts, offset = [], [], 0
        for name, rows in files:
            names.append(str(name))
            starts.append(offset)
            offset += int(rows)
        if offset != table.num_rows:
            return cls()  # filtered or sliced since it was read: the file map no longer applies
        return cls(tuple(names), tuple(starts))

    def locate(self, row: int) -> tuple[str | None, int | None]:
        if not self.names:
            return None, None
        index = bisect.bisect_right(self.starts, row - 1) - 1
        return self.names[index], row - self.starts[index]


# --- the checked form of a row --------------------------------------------------------------


@dataclass(frozen=True)
class CheckedRow:
    """A valid manifest row with every default applied; what expansion turns into outputs."""

    row: int
    id: str
    seed: int
    variations: int
    format: str | None
    request_fields: dict[str, Any]  # every GenerationRequest field except seed


@dataclass(frozen=True)
class ManifestCheck:
    """The result of checking a table: all problems, and the rows that passed."""

    problems: list[ManifestProblem]
    rows: list[CheckedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _RowIdentity:
    """What the cross-row rules need to know about one row."""

    row: int
    id: str
    derived: bool
    variations: int | None


class _ProblemList:
    """Collects problems, filling in the file location of folder manifests."""

    def __init__(self, sources: _RowSources) -> None:
        self.items: list[ManifestProblem] = []
        self._sources = sources

    def add(
        self, row: int | None, row_id: str | None, column: str | None, value: Any, expected: str
    ) -> None:
        file, file_row = self._sources.locate(row) if row is not None else (None, None)
        self.items.append(ManifestProblem(row, row_id, column, value, expected, file, file_row))


def validate_manifest(table: pa.Table) -> list[ManifestProblem]:
    """Every problem in the manifest, in row order after file-level ones; [] means valid."""
    return check_manifest(table).problems


def check_manifest(table: pa.Table) -> ManifestCheck:
    """Validate and normalise in one pass, so expansion uses exactly what was validated."""
    problems = _ProblemList(_RowSources.of(table))
    names = list(table.column_names)
    _check_column_names(names, problems)
    if table.num_rows == 0:
        problems.add(None, None, None, NO_VALUE, "at least one row, but the manifest has none")

    first_index = {}
    for index, name in enumerate(names):
        first_index.setdefault(name, index)
    present = [spec for spec in COLUMNS if spec.name in first_index]
    cells = {spec.name: table.column(first_index[spec.name]).to_pylist() for spec in present}
    has_prompt = "prompt" in cells

    checked: list[CheckedRow] = []
    identities: list[_RowIdentity] = []
    for index in range(table.num_rows):
        row_cells = {name: column[index] for name, column in cells.items()}
        identity, row = _check_row(index + 1, row_cells, has_prompt, problems)
        if identity is not None:
            identities.append(identity)
        if row is not None:
            checked.append(row)

    _check_unique_outputs(identities, problems)
    # File-level problems first, then by row; within a row, in column order (sort is stable).
    ordered = sorted(problems.items, key=lambda problem: problem.row or 0)
    return ManifestCheck(ordered, checked if not ordered else [])


def _check_column_names(names: list[str], problems: _ProblemList) -> None:
    if "prompt" not in names:
        hint = ""
        close = difflib.get_close_matches(
            "prompt", [name.lower() for name in names], n=1, cutoff=0.6
        )
        matches = [name for name in names if close and name.lower() == close[0]]
        if matches:
            hint = f"; did you mean to name {matches[0]!r} 'prompt'?"
        found = ", ".join(repr(name) for name in names) or "none"
        problems.add(
            None,
            None,
            "prompt",
            NO_VALUE,
            "a 'prompt' column with one text prompt per row, but the manifest has no such "
            f"column (columns found: {found}){hint}",
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.add(
                None,
                None,
                name,
                NO_VALUE,
                "each column name once, but this name appears more than once; rename or drop "
                "the copies",
            )
            continue
        seen.add(name)
        if name in KNOWN_COLUMNS:
            continue
        reason = reserved_column_reason(name)
        if reason is not None:
            problems.add(None, None, name, NO_VALUE, reason)


def _shown_id(raw: Any) -> str | None:
    """The id to print next to a row's problems, even if the id itself is invalid."""
    if isinstance(raw, str) and raw.strip():
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return None


_DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in COLUMNS}
_REQUEST_FIELDS_BUT_SEED: tuple[str, ...] = tuple(
    name for name in GENERATION_FIELDS if name != "seed"
)
_INTERVAL_INPUTS = frozenset({"steps", "oss_steps", "guidance_interval", "guidance_interval_decay"})


def _check_row(
    row: int, raw: dict[str, Any], has_prompt: bool, problems: _ProblemList
) -> tuple[_RowIdentity | None, CheckedRow | None]:
    """Parse one row's cells and apply its cross-column rules; returns what cross-row rules need."""
    shown_id = _shown_id(raw.get("id"))
    given: dict[str, Any] = {}
    failed: set[str] = set()
    for name, cell in raw.items():
        spec = COLUMNS_BY_NAME[name]
        if is_null(cell):
            if spec.required:
                problems.add(row, shown_id, name, cell, spec.expected)
                failed.add(name)
            continue
        try:
            given[name] = spec.parse(cell)
        except InvalidValue as invalid:
            problems.add(row, shown_id, name, cell, invalid.expected)
            failed.add(name)
    values = {**_DEFAULTS, **given}
    _check_row_rules(row, shown_id, raw, values, "seed" in given, failed, problems)

    variations = None if "variations" in failed else values["variations"]
    identity = None
    if "id" in given:
        identity = _RowIdentity(row, given["id"], derived=False, variations=variations)
    if failed or not has_prompt:
        return identity, None

    request_fields = {name: values[name] for name in _REQUEST_FIELDS_BUT_SEED}
    if "seed" in given:
        row_id = given.get("id") or derive_id({**request_fields, "seed": given["seed"]}, True)
        seed = given["seed"]
    else:
        row_id = given.get("id") or derive_id(request_fields, False)
        seed = derive_seed(row_id)
    if identity is None:
        identity = _RowIdentity(row, row_id, derived=True, variations=variations)
    checked = CheckedRow(row, row_id, seed, values["variations"], values["format"], request_fields)
    return identity, checked


def _check_row_rules(
    row: int,
    shown_id: str | None,
    raw: dict[str, Any],
    values: dict[str, Any],
    seed_given: bool,
    failed: set[str],
    problems: _ProblemList,
) -> None:
    """Rules that involve several columns of one row; skipped where an input already failed."""
    heun_inputs_ok = "scheduler" not in failed and "oss_steps" not in failed
    if heun_inputs_ok and values["scheduler"] == "heun" and values["oss_steps"]:
        problems.add(
            row,
            shown_id,
            "oss_steps",
            raw.get("oss_steps"),
            "no oss_steps with scheduler 'heun' (ACE-Step's heun scheduler cannot follow a "
            "custom step list); clear oss_steps or use scheduler 'euler' or 'pingpong'",
        )
        failed.add("oss_steps")

    if values["guidance_interval_decay"] > 0 and not failed & _INTERVAL_INPUTS:
        steps, oss_steps, interval = (
            values["steps"],
            values["oss_steps"],
            values["guidance_interval"],
        )
        if guidance_interval_step_count(steps, oss_steps, interval) == 1:
            problems.add(
                row,
                shown_id,
                "guidance_interval_decay",
                values["guidance_interval_decay"],
                f"0 when the guidance interval covers a single step (here steps={steps}, "
                f"oss_steps={oss_steps!r}, guidance_interval={interval:g}; ACE-Step divides by "
                "zero); set guidance_interval_decay to 0, or widen guidance_interval or add steps",
            )
            failed.add("guidance_interval_decay")

    if seed_given and "seed" not in failed and "variations" not in failed:
        last_seed = values["seed"] + values["variations"] - 1
        if last_seed > MAX_SEED:
            problems.add(
                row,
                shown_id,
                "seed",
                values["seed"],
                f"seed + variations - 1 <= {MAX_SEED} (variation k renders with seed + k; "
                f"here the last seed would be {last_seed}); use a seed of at most "
                f"{MAX_SEED - values['variations'] + 1}",
            )
            failed.add("seed")


def _check_unique_outputs(identities: list[_RowIdentity], problems: _ProblemList) -> None:
    """Ids must be unique, and so must output ids once variations are expanded."""
    first_by_id: dict[str, _RowIdentity] = {}
    unique: list[_RowIdentity] = []
    for identity in identities:
        first = first_by_id.get(identity.id)
        if first is None:
            first_by_id[identity.id] = identity
            unique.append(identity)
            continue
        if identity.derived and first.derived:
            problems.add(
                identity.row,
                identity.id,
                "id",
                None,
                f"a unique id, but this row has the same generation settings as row {first.row} "
                "and neither has an id, so both derive this id and would render the same audio; "
                "give one of them an id or a different seed, or delete one and set variations "
                "on the other",
            )
        else:
            problems.add(
                identity.row,
                identity.id,
                "id",
                identity.id,
                f"a unique id, but row {first.row} already uses {identity.id!r}; "
                "rename one of them",
            )

    producer: dict[str, tuple[_RowIdentity, int]] = {}
    reported: set[tuple[int, int]] = set()
    for identity in unique:
        if identity.variations is None:
            continue
        for k in range(identity.variations):
            name = output_id(identity.id, k, identity.variations)
            earlier = producer.get(name)
            if earlier is None:
                producer[name] = (identity, k)
                continue
            other, other_k = earlier
            if (other.row, identity.row) in reported:
                continue
            reported.add((other.row, identity.row))
            problems.add(
                identity.row,
                identity.id,
                "id",
                identity.id,
                f"output ids that no other row produces, but output {name!r} "
                f"({_describe_output(identity, k)}) is also {_describe_output(other, other_k)} "
                f"of row {other.row} (id {other.id!r}); rename one of the two ids",
            )


def _describe_output(identity: _RowIdentity, k: int) -> str:
    if identity.variations == 1:
        return "the single output"
    return f"variation {k} of {identity.variations}"


def manifest_warnings(table: pa.Table) -> list[str]:
    """Things that are valid but probably unintended: a typo'd column name is carried as an
    extra column and its setting silently ignored; output ids differing only in case overwrite
    each other on case-insensitive file systems (macOS, Windows)."""
    warnings: list[str] = []
    known = sorted(KNOWN_COLUMNS)
    for name in table.column_names:
        if name in KNOWN_COLUMNS:
            continue
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.8)
        if close:
            warnings.append(
                f"column {name!r} is not a known column, so it is carried as metadata and has no "
                f"effect on generation; did you mean {close[0]!r}?"
            )
    check = check_manifest(table)
    by_folded: dict[str, str] = {}
    for row in check.rows:
        for k in range(row.variations):
            name = output_id(row.id, k, row.variations)
            other = by_folded.setdefault(name.lower(), name)
            if other != name:
                warnings.append(
                    f"output ids {other!r} and {name!r} differ only in letter case; on a "
                    "case-insensitive file system one would overwrite the other"
                )
    return warnings


__all__ = [
    "NO_VALUE",
    "CheckedRow",
    "ManifestCheck",
    "ManifestError",
    "ManifestProblem",
    "check_manifest",
    "describe_value",
    "manifest_uri",
    "manifest_warnings",
    "validate_manifest",
]
