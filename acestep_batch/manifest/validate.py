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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from acestep_batch.manifest.schema import (
    COLUMNS,
    COLUMNS_BY_NAME,
    KNOWN_COLUMNS,
    MAX_SEED,
    MAX_STEPS,
    METADATA_FILES,
    METADATA_URI,
    REFERENCE_TASKS,
    InvalidValue,
    audio2audio_step_count,
    derive_id,
    derive_seed,
    guidance_interval_step_count,
    is_null,
    output_id,
    repaint_skipped_steps,
    schedule_steps,
    reserved_column_reason,
    sampler_loop_length,
    seconds_to_latent_frames,
    to_json_value,
)
from acestep_batch.model.request import GENERATION_FIELDS, SOURCE_TASKS


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

    task = None if "task" in failed else values["task"]
    if (
        values["guidance_interval_decay"] > 0
        and not failed & _INTERVAL_INPUTS
        and task not in (None, "edit")  # edit (FlowEdit) has no guidance interval
    ):
        steps, oss_steps, interval = (
            values["steps"],
            values["oss_steps"],
            values["guidance_interval"],
        )
        where = f"steps={steps}, oss_steps={oss_steps!r}"
        if task == "audio2audio" and "ref_audio_strength" not in failed:
            # audio-to-audio samples its own shorter schedule (spec 6.7); oss_steps is not used
            strength = values["ref_audio_strength"]
            steps = audio2audio_step_count(steps, oss_steps, strength)
            oss_steps = ""
            where = f"audio2audio runs {steps} steps at ref_audio_strength={strength:g}"
        if guidance_interval_step_count(steps, oss_steps, interval) == 1:
            problems.add(
                row,
                shown_id,
                "guidance_interval_decay",
                values["guidance_interval_decay"],
                f"0 when the guidance interval covers a single step (here {where}, "
                f"guidance_interval={interval:g}; ACE-Step divides by "
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

    retake_seeds = values["retake_seeds"]
    if retake_seeds is not None and not failed & {"retake_seeds", "variations"}:
        last_seed = retake_seeds + values["variations"] - 1
        if last_seed > MAX_SEED:
            problems.add(
                row,
                shown_id,
                "retake_seeds",
                retake_seeds,
                f"retake_seeds + variations - 1 <= {MAX_SEED} (variation k renders with "
                f"retake_seeds + k; here the last would be {last_seed}); use retake_seeds of at "
                f"most {MAX_SEED - values['variations'] + 1}",
            )
            failed.add("retake_seeds")

    if task is not None:
        _check_task_rules(row, shown_id, raw, values, task, failed, problems)
    _check_lora_rules(row, shown_id, raw, values, failed, problems)


def _cell(raw: dict[str, Any], name: str) -> Any:
    """The cell as given, for a problem's "got ..."; NO_VALUE when the column is absent."""
    return raw[name] if name in raw else NO_VALUE


def _task_list(tasks: Sequence[str]) -> str:
    quoted = [repr(task) for task in tasks]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


_FRAME_SECONDS = 512 * 8 / 44100
_EXTEND_MEANING = (
    "a negative repaint_start is the seconds added on the left, a repaint_end past the source's "
    "end adds audio on the right"
)


def _check_task_rules(
    row: int,
    shown_id: str | None,
    raw: dict[str, Any],
    values: dict[str, Any],
    task: str,
    failed: set[str],
    problems: _ProblemList,
) -> None:
    """Rules of the edit tasks (spec 6.6-6.8). Whether a repaint window lies inside the source,
    or repaint_end past its end, needs the audio's length: the engine checks that per row."""

    def add(column: str, value: Any, expected: str) -> None:
        problems.add(row, shown_id, column, value, expected)
        failed.add(column)

    # --- which audio input the task reads ---
    if "src_audio" not in failed:
        if task in SOURCE_TASKS and not values["src_audio"]:
            add(
                "src_audio",
                _cell(raw, "src_audio"),
                f"the source audio with task {task!r}, which changes an existing recording; set "
                "src_audio to a local path or fsspec URL (e.g. s3://bucket/song.wav), or set "
                "task to 'text2music'",
            )
        elif task not in SOURCE_TASKS and values["src_audio"]:
            add(
                "src_audio",
                _cell(raw, "src_audio"),
                f"no src_audio with task {task!r}: src_audio is only used by task "
                f"{_task_list(SOURCE_TASKS)}; clear it or set task to {_task_list(SOURCE_TASKS)}",
            )
    if "ref_audio" not in failed:
        if task in REFERENCE_TASKS and not values["ref_audio"]:
            add(
                "ref_audio",
                _cell(raw, "ref_audio"),
                f"the reference audio with task {task!r}, which starts from a noised recording; "
                "set ref_audio to a local path or fsspec URL (e.g. s3://bucket/ref.flac), or set "
                "task to 'text2music'",
            )
        elif task not in REFERENCE_TASKS and values["ref_audio"]:
            add(
                "ref_audio",
                _cell(raw, "ref_audio"),
                f"no ref_audio with task {task!r}: ref_audio is only used by task "
                f"{_task_list(REFERENCE_TASKS)}; clear it or set task to "
                f"{_task_list(REFERENCE_TASKS)}",
            )

    window_ok = not failed & {"repaint_start", "repaint_end"}
    start, end = values["repaint_start"], values["repaint_end"]
    if task == "repaint" and window_ok:
        if start < 0:
            add(
                "repaint_start",
                _cell(raw, "repaint_start"),
                "repaint_start >= 0 with task 'repaint' (the seconds into the source where the "
                "regenerated window starts); a negative repaint_start adds audio before the "
                "source: set task to 'extend' for that",
            )
        elif seconds_to_latent_frames(end) <= seconds_to_latent_frames(start):
            add(
                "repaint_end",
                _cell(raw, "repaint_end"),
                f"repaint_end > repaint_start (here {start:g}) with task 'repaint', by at least "
                f"one latent frame ({_FRAME_SECONDS:.3f} s): the seconds from repaint_start to "
                "repaint_end of the source are regenerated; set repaint_end to where that "
                "window ends",
            )
    if task == "extend" and window_ok:
        if start > 0:
            add(
                "repaint_start",
                _cell(raw, "repaint_start"),
                f"repaint_start <= 0 with task 'extend' ({_EXTEND_MEANING}); to regenerate a "
                "window inside the source set task to 'repaint'",
            )
        elif seconds_to_latent_frames(start) == 0 and end <= 0:
            add(
                "repaint_end",
                _cell(raw, "repaint_end"),
                f"a negative repaint_start or a repaint_end past the source's end with task "
                f"'extend' ({_EXTEND_MEANING}; at least one latent frame, "
                f"{_FRAME_SECONDS:.3f} s), but here nothing would be added; e.g. repaint_end = "
                "the source's length + 30 adds 30 s at the end",
            )

    steps_ok = not failed & {"steps", "oss_steps", "scheduler"}
    if task in ("repaint", "extend") and steps_ok and "retake_variance" not in failed:
        steps, oss_steps, variance = values["steps"], values["oss_steps"], values["retake_variance"]
        skipped = repaint_skipped_steps(steps, oss_steps, variance)
        loop = sampler_loop_length(steps, values["scheduler"], oss_steps)
        if skipped >= loop:
            add(
                "retake_variance",
                _cell(raw, "retake_variance"),
                f"a retake_variance that leaves steps to run with task {task!r}: it skips the "
                f"first int(infer_steps * (1 - retake_variance)) = {skipped} of {loop} sampler "
                f"steps (infer_steps = {'max(oss_steps)' if oss_steps else 'steps'}), so "
                "nothing would be regenerated; raise retake_variance (ACE-Step's UI uses 0.2)",
            )

    if task == "audio2audio" and not failed & {"steps", "oss_steps", "ref_audio_strength"}:
        steps, oss_steps = values["steps"], values["oss_steps"]
        strength = values["ref_audio_strength"]
        if audio2audio_step_count(steps, oss_steps, strength) < 1:
            add(
                "ref_audio_strength",
                _cell(raw, "ref_audio_strength"),
                _audio2audio_fix(steps, oss_steps, strength),
            )

    if task == "edit":
        _check_edit_rules(raw, values, failed, add)


def _audio2audio_fix(steps: int, oss_steps: str, strength: float) -> str:
    infer = "max(oss_steps)" if oss_steps else "steps"
    count = audio2audio_step_count(steps, oss_steps, strength)
    text = (
        f"a ref_audio_strength that leaves at least one step: audio2audio runs "
        f"int((1 - ref_audio_strength) * {infer}) steps, here int((1 - {strength:g}) * "
        f"{schedule_steps(steps, oss_steps)}) = {count}; "
    )
    if strength >= 1:
        return text + "use a ref_audio_strength below 1"
    min_steps = next(
        (n for n in range(1, MAX_STEPS + 1) if audio2audio_step_count(n, "", strength) >= 1), None
    )
    max_strength = _max_audio2audio_strength(steps, oss_steps)
    fix = f"use a ref_audio_strength of at most {max_strength:g}"
    if min_steps is not None and not oss_steps:
        fix += f", or steps >= {min_steps}"
    return text + fix


def _max_audio2audio_strength(steps: int, oss_steps: str) -> float:
    """The largest strength (in steps of 0.001) that still runs one audio-to-audio step."""
    for thousandths in range(1000, -1, -1):
        if audio2audio_step_count(steps, oss_steps, thousandths / 1000) >= 1:
            return thousandths / 1000
    return 0.0


def _check_edit_rules(
    raw: dict[str, Any],
    values: dict[str, Any],
    failed: set[str],
    add: Callable[[str, Any, str], None],
) -> None:
    """FlowEdit (spec 6.8): edit towards a target prompt/lyrics over a window of the steps."""
    targets = ("edit_target_prompt", "edit_target_lyrics", "prompt", "lyrics")
    if not failed & set(targets) and isinstance(values["prompt"], str):
        target_prompt = values["edit_target_prompt"] or values["prompt"]
        target_lyrics = values["edit_target_lyrics"] or values["lyrics"]
        if target_prompt == values["prompt"] and target_lyrics == values["lyrics"]:
            add(
                "edit_target_prompt",
                _cell(raw, "edit_target_prompt"),
                "an edit_target_prompt or edit_target_lyrics that differs from prompt/lyrics "
                "with task 'edit' (it edits the source, described by prompt and lyrics, "
                "towards these; empty means the same as the source, which changes nothing); "
                "set one or both",
            )
    fractions_ok = not failed & {"edit_n_min", "edit_n_max"}
    n_min, n_max = values["edit_n_min"], values["edit_n_max"]
    if fractions_ok and n_min > n_max:
        add(
            "edit_n_max",
            _cell(raw, "edit_n_max"),
            f"edit_n_max >= edit_n_min (here {n_min:g}) with task 'edit': steps from "
            "int(steps * edit_n_min) to int(steps * edit_n_max) edit the source, the rest "
            "sample towards the target; raise edit_n_max or lower edit_n_min",
        )
    elif fractions_ok and not failed & {"steps", "scheduler"}:
        steps = values["steps"]
        loop = sampler_loop_length(steps, values["scheduler"], "")
        if int(steps * n_min) >= loop:
            add(
                "edit_n_min",
                _cell(raw, "edit_n_min"),
                f"an edit_n_min that leaves steps to run with task 'edit': it skips the first "
                f"int(steps * edit_n_min) = {int(steps * n_min)} of {loop} steps, so the "
                "source would come back unchanged; lower edit_n_min (ACE-Step's UI uses 0.2 "
                "for a remix, 0.6 to change only the lyrics)",
            )
    if "oss_steps" not in failed and values["oss_steps"]:
        add(
            "oss_steps",
            _cell(raw, "oss_steps"),
            "no oss_steps with task 'edit' (edit always runs the normal schedule of `steps` "
            "steps and would ignore a custom step list); clear oss_steps, or set steps instead",
        )
    if "cfg_type" not in failed and values["cfg_type"] != "apg":
        add(
            "cfg_type",
            _cell(raw, "cfg_type"),
            f"cfg_type 'apg' with task 'edit' (edit always guides with APG, so "
            f"{values['cfg_type']!r} would be ignored); clear cfg_type or set it to 'apg'",
        )


def _check_lora_rules(
    row: int,
    shown_id: str | None,
    raw: dict[str, Any],
    values: dict[str, Any],
    failed: set[str],
    problems: _ProblemList,
) -> None:
    if failed & {"lora", "lora_weight"} or values["lora"]:
        return
    if values["lora_weight"] != COLUMNS_BY_NAME["lora_weight"].default:
        problems.add(
            row,
            shown_id,
            "lora_weight",
            _cell(raw, "lora_weight"),
            "no lora_weight without a lora (it scales the adapter named in lora, and this row "
            "has none); set lora or clear lora_weight",
        )
        failed.add("lora_weight")


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
