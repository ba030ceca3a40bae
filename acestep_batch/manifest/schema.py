"""The manifest's columns: their types, defaults, ranges, and the id/seed derivation rules.

Defaults come from `GenerationRequest` itself so the manifest can never drift from the engine.
Every parser here turns one raw cell (as pyarrow hands it over) into the engine's value, or
raises `InvalidValue` saying what a valid cell looks like; the wording of those messages is the
user interface of a manifest, so it is kept next to the rule it explains.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from acestep_batch.model.request import (
    CFG_TYPES,
    GENERATION_FIELDS,
    MAX_DURATION_S,
    MAX_SEED,
    MIN_DURATION_S,
    SCHEDULERS,
    TASKS,
    GenerationRequest,
)

# --- edit tasks and LoRA (spec 6.6-6.9) -------------------------------------------------------
# Seconds: a negative repaint_start extends on the left by up to MAX_DURATION_S; repaint_end may
# lie up to MAX_DURATION_S past the end of a source of up to MAX_DURATION_S.
MIN_REPAINT_START_S = -MAX_DURATION_S
MAX_REPAINT_START_S = MAX_DURATION_S
MAX_REPAINT_END_S = 2 * MAX_DURATION_S
MAX_EDIT_N_AVG = 16
MAX_LORA_WEIGHT = 4.0
REFERENCE_TASKS: tuple[str, ...] = ("audio2audio",)  # need `ref_audio` (SOURCE_TASKS: `src_audio`)

# The generation fields that existed when derived ids were introduced. They always take part in
# a derived id; fields added later take part only when they differ from the engine's default,
# so adding a field never changes the derived ids (and so the resume state) of existing
# manifests. Never add to this tuple.
ID_FIELDS_ALWAYS_HASHED: tuple[str, ...] = (
    "prompt",
    "lyrics",
    "duration",
    "seed",
    "task",
    "steps",
    "scheduler",
    "cfg_type",
    "guidance_scale",
    "omega_scale",
    "guidance_interval",
    "guidance_interval_decay",
    "min_guidance_scale",
    "guidance_scale_text",
    "guidance_scale_lyric",
    "use_erg_tag",
    "use_erg_lyric",
    "use_erg_diffusion",
    "oss_steps",
)

AUDIO_FORMATS: tuple[str, ...] = ("wav", "flac", "ogg", "mp3")
MAX_STEPS = 1000
MAX_VARIATIONS = 1000
MAX_ID_LENGTH = 128
# Derived seeds stay below 2**31 so that seed + (variations - 1) can never pass MAX_SEED.
DERIVED_SEED_LIMIT = 2**31
DERIVED_ID_HEX_CHARS = 16

# Columns the output metadata (batch/writer.py) writes itself, besides `id`, `format` and the
# generation fields: a user column of the same name would be dropped or clobbered there.
RESERVED_COLUMNS: frozenset[str] = frozenset(
    {
        "output_id",
        "audio_uri",
        "status",
        "error",
        "sample_rate",
        "channels",
        "bit_depth",
        "peak_dbfs",
        # Also written per output by the batch writer:
        "row",
        "variation",
        "num_samples",
        "audio_seconds",
        "rms_dbfs",
        "clipped_samples",
        "checkpoint",
        "checkpoint_revision",
        "checkpoint_fingerprint",
        "device",
        "dtype",
        "replica",
        "package_version",
        "generate_s",
        "encode_s",
        "batch_size",
        "created_at",
        # Render facts (adapter identity, input audio, latent geometry):
        "latent_frames",
        "source_frames",
        "lora_resolved",
        "lora_sha256",
        "lora_scale",
        "src_audio_sha256",
        "src_audio_seconds",
        "ref_audio_sha256",
        "ref_audio_seconds",
        "replica_lora_loads",
        # Loops (submit --loops): cut, loudness, QC figures and QC attempts:
        "loop_samples",
        "loop_seconds",
        "loop_crossfade_samples",
        "loudness_mode",
        "loudness_gain_db",
        "lufs_before",
        "true_peak_before_dbtp",
        "loudness_limited_by_ceiling",
        "qc_nan",
        "qc_silence_ratio",
        "qc_clipped_ratio",
        "qc_dc_offset",
        "qc_lufs",
        "qc_true_peak_dbtp",
        "qc_bpm_estimated",
        "qc_bpm_ok",
        "qc_key_estimated",
        "qc_key_ok",
        "qc_seam",
        "qc_seam_ok",
        "qc_problems",
        "attempts",
        "attempt_seeds",
    }
)
RESERVED_PREFIX = "_"

BOOL_STRINGS: Mapping[str, bool] = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
}

# Schema metadata that `read_manifest` attaches so later error messages can name the source.
METADATA_URI = b"acestep_batch.uri"
METADATA_FILES = b"acestep_batch.files"  # JSON list of [file name, row count], in row order

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class InvalidValue(ValueError):
    """A cell that cannot be used; `expected` says what a valid cell looks like."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class ColumnSpec:
    """One known manifest column: how to read a cell and what to use when it is empty."""

    name: str
    type_name: str  # as the README names it: text, integer, number, boolean
    expected: str  # what a valid cell looks like, phrased to follow "expected ..."
    parse: Callable[[Any], Any]  # non-null cell -> normalised value; raises InvalidValue
    default: Any  # used for null/blank cells (None for id and seed: those are derived)
    required: bool = False


def _request_defaults() -> dict[str, Any]:
    return {
        field.name: field.default
        for field in dataclasses.fields(GenerationRequest)
        if field.default is not dataclasses.MISSING
    }


REQUEST_DEFAULTS: Mapping[str, Any] = _request_defaults()


def is_null(value: Any) -> bool:
    """Null, NaN (pandas' missing number) and blank text all mean "use the default"."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _fmt(number: float) -> str:
    return f"{number:g}"


# --- generic cell parsers -------------------------------------------------------------------


def _as_real(value: Any, expected: str) -> int | float:
    """Numbers, and text that spells a number (CSV/JSONL cells that were read as text)."""
    if isinstance(value, bool):
        raise InvalidValue(expected)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise InvalidValue(expected) from None
    raise InvalidValue(expected)


def integer_parser(minimum: int, maximum: int, expected: str) -> Callable[[Any], int]:
    """Whole numbers in [minimum, maximum]; 60.0 counts (pandas stores ints with gaps as floats)."""

    def parse(value: Any) -> int:
        number = _as_real(value, expected)
        if isinstance(number, float):
            if not math.isfinite(number) or not number.is_integer():
                raise InvalidValue(expected)
            number = int(number)
        if not minimum <= number <= maximum:
            raise InvalidValue(expected)
        return number

    return parse


def number_parser(
    minimum: float | None, maximum: float | None, expected: str
) -> Callable[[Any], float]:
    """Finite numbers in [minimum, maximum] (either bound may be open)."""

    def parse(value: Any) -> float:
        number = float(_as_real(value, expected))
        if not math.isfinite(number):
            raise InvalidValue(expected)
        if minimum is not None and number < minimum:
            raise InvalidValue(expected)
        if maximum is not None and number > maximum:
            raise InvalidValue(expected)
        return number

    return parse


def parse_bool(value: Any) -> bool:
    """Real booleans; also 0/1 and true/false/yes/no text, which is how CSV and JSONL spell them."""
    expected = "true or false (1/0 and yes/no are accepted too)"
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
        return BOOL_STRINGS[value.strip().lower()]
    raise InvalidValue(expected)


def choice_parser(choices: tuple[str, ...], expected: str) -> Callable[[Any], str]:
    """Exact (lower-case) choices; a near miss gets a "did you mean" hint instead of a guess."""

    def parse(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        if isinstance(value, str):
            folded = value.strip().lower()
            if folded in choices:
                raise InvalidValue(f"{expected}; did you mean {folded!r}?")
            close = difflib.get_close_matches(folded, choices, n=1)
            if close:
                raise InvalidValue(f"{expected}; did you mean {close[0]!r}?")
        raise InvalidValue(expected)

    return parse


def text_parser(expected: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidValue(expected)
        return value

    return parse


# --- column-specific parsers ----------------------------------------------------------------

PROMPT_EXPECTED = "a non-empty text prompt describing the music, e.g. 'lo-fi hip hop, mellow piano'"
ID_EXPECTED = (
    f"an id of 1 to {MAX_ID_LENGTH} characters from A-Z a-z 0-9 - _ . that does not start "
    "with '.' (leave it empty to derive one)"
)
SEED_EXPECTED = f"a whole number from 0 to {MAX_SEED} (leave it empty to derive one from the id)"
OSS_STEPS_EXPECTED = (
    f"comma-separated whole numbers from 1 to {MAX_STEPS}, e.g. '16,29,52' "
    "(leave it empty for the normal schedule)"
)
TASK_EXPECTED = "one of: " + ", ".join(TASKS)
FORMAT_EXPECTED = (
    "one of: " + ", ".join(AUDIO_FORMATS) + " (leave it empty to use the job's --format)"
)


def parse_prompt(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(PROMPT_EXPECTED)
    return value


def parse_id(value: Any) -> str:
    """Ids become file names under the output prefix, so only a safe character set is allowed."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidValue(ID_EXPECTED)
    if len(value) > MAX_ID_LENGTH or not _ID_PATTERN.fullmatch(value):
        raise InvalidValue(ID_EXPECTED)
    return value


def parse_oss_steps(value: Any) -> str:
    """Canonical "16,29,52" text; a list of ints (a Parquet list column) is accepted too."""
    if isinstance(value, int) and not isinstance(value, bool):
        parts: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
    else:
        raise InvalidValue(OSS_STEPS_EXPECTED)
    step_parser = integer_parser(1, MAX_STEPS, OSS_STEPS_EXPECTED)
    steps = [step_parser(part) for part in parts]
    return ",".join(str(step) for step in steps)


parse_task = choice_parser(TASKS, TASK_EXPECTED)


def uri_parser(expected: str) -> Callable[[Any], str]:
    """A URI / path / repo id: text on one line; surrounding blanks are dropped."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or any(char in value for char in "\r\n\0"):
            raise InvalidValue(expected)
        return value.strip()

    return parse


def _between(low: float, high: float) -> str:
    return f"a number from {_fmt(low)} to {_fmt(high)}"


def _float_column(name: str, minimum: float | None, maximum: float | None) -> ColumnSpec:
    if minimum is not None and maximum is not None:
        expected = _between(minimum, maximum)
    elif minimum is not None:
        expected = f"a number >= {_fmt(minimum)}"
    else:
        expected = "a finite number"
    return ColumnSpec(
        name, "number", expected, number_parser(minimum, maximum, expected), REQUEST_DEFAULTS[name]
    )


def _bool_column(name: str) -> ColumnSpec:
    return ColumnSpec(
        name,
        "boolean",
        "true or false (1/0 and yes/no are accepted too)",
        parse_bool,
        REQUEST_DEFAULTS[name],
    )


_RETAKE_SEEDS_EXPECTED = (
    f"a whole number from 0 to {MAX_SEED} (leave it empty to derive one from the seed)"
)
_RETAKE_VARIANCE_EXPECTED = (
    "a number from 0 to 1 (how much of the initial noise is replaced by the retake noise)"
)
_REPAINT_START_EXPECTED = (
    f"seconds from {_fmt(MIN_REPAINT_START_S)} to {_fmt(MAX_REPAINT_START_S)} (where the "
    "repainted window starts in the source; negative = seconds added before it, task extend)"
)
_REPAINT_END_EXPECTED = (
    f"seconds from 0 to {_fmt(MAX_REPAINT_END_S)} (where the repainted window ends in the "
    "source; past the source's end = seconds added after it, task extend)"
)
_SRC_AUDIO_EXPECTED = (
    "the source audio as one line of text: a local path or an fsspec URL such as "
    "s3://bucket/song.wav (used by tasks repaint, extend and edit)"
)
_REF_AUDIO_EXPECTED = (
    "the reference audio as one line of text: a local path or an fsspec URL such as "
    "s3://bucket/ref.flac (used by task audio2audio)"
)
_REF_AUDIO_STRENGTH_EXPECTED = (
    "a number from 0 to 1 (how closely the output follows the reference audio)"
)
_EDIT_TARGET_PROMPT_EXPECTED = "text: the prompt to edit towards (leave it empty to keep `prompt`)"
_EDIT_TARGET_LYRICS_EXPECTED = "text: the lyrics to edit towards (leave it empty to keep `lyrics`)"
_EDIT_N_MIN_EXPECTED = "a fraction of the steps from 0 to 1 (where editing starts)"
_EDIT_N_MAX_EXPECTED = "a fraction of the steps from 0 to 1 (where editing hands over to sampling)"
_EDIT_N_AVG_EXPECTED = (
    f"a whole number from 1 to {MAX_EDIT_N_AVG} (noise draws averaged per edit step)"
)
_LORA_EXPECTED = (
    "the LoRA adapter as one line of text: a local path, an fsspec URL or a Hugging Face repo "
    "id such as ACE-Step/ACE-Step-v1-chinese-rap-LoRA (leave it empty for the base model)"
)
_LORA_WEIGHT_EXPECTED = (
    f"a number from {_fmt(-MAX_LORA_WEIGHT)} to {_fmt(MAX_LORA_WEIGHT)} (the adapter's scale; "
    "1 = as trained)"
)


def _column(name: str, type_name: str, expected: str, parse: Callable[[Any], Any]) -> ColumnSpec:
    return ColumnSpec(name, type_name, expected, parse, REQUEST_DEFAULTS[name])


_DURATION_EXPECTED = f"seconds from {_fmt(MIN_DURATION_S)} to {_fmt(MAX_DURATION_S)}"
_VARIATIONS_EXPECTED = f"a whole number of outputs from 1 to {MAX_VARIATIONS}"
_STEPS_EXPECTED = f"a whole number of diffusion steps from 1 to {MAX_STEPS}"
_SCHEDULER_EXPECTED = "one of: " + ", ".join(SCHEDULERS)
_CFG_TYPE_EXPECTED = "one of: " + ", ".join(CFG_TYPES)

COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("prompt", "text", PROMPT_EXPECTED, parse_prompt, None, required=True),
    ColumnSpec("id", "text", ID_EXPECTED, parse_id, None),
    ColumnSpec(
        "lyrics",
        "text",
        "text lyrics (leave it empty for an instrumental)",
        text_parser("text lyrics (leave it empty for an instrumental)"),
        REQUEST_DEFAULTS["lyrics"],
    ),
    ColumnSpec(
        "duration",
        "number",
        _DURATION_EXPECTED,
        number_parser(MIN_DURATION_S, MAX_DURATION_S, _DURATION_EXPECTED),
        REQUEST_DEFAULTS["duration"],
    ),
    ColumnSpec("seed", "integer", SEED_EXPECTED, integer_parser(0, MAX_SEED, SEED_EXPECTED), None),
    ColumnSpec(
        "variations",
        "integer",
        _VARIATIONS_EXPECTED,
        integer_parser(1, MAX_VARIATIONS, _VARIATIONS_EXPECTED),
        1,
    ),
    ColumnSpec(
        "steps",
        "integer",
        _STEPS_EXPECTED,
        integer_parser(1, MAX_STEPS, _STEPS_EXPECTED),
        REQUEST_DEFAULTS["steps"],
    ),
    _float_column("guidance_scale", 0.0, None),
    ColumnSpec(
        "scheduler",
        "text",
        _SCHEDULER_EXPECTED,
        choice_parser(SCHEDULERS, _SCHEDULER_EXPECTED),
        REQUEST_DEFAULTS["scheduler"],
    ),
    ColumnSpec(
        "cfg_type",
        "text",
        _CFG_TYPE_EXPECTED,
        choice_parser(CFG_TYPES, _CFG_TYPE_EXPECTED),
        REQUEST_DEFAULTS["cfg_type"],
    ),
    _float_column("omega_scale", None, None),
    _float_column("guidance_interval", 0.0, 1.0),
    _float_column("guidance_interval_decay", 0.0, 1.0),
    _float_column("min_guidance_scale", 0.0, None),
    _float_column("guidance_scale_text", 0.0, None),
    _float_column("guidance_scale_lyric", 0.0, None),
    _bool_column("use_erg_tag"),
    _bool_column("use_erg_lyric"),
    _bool_column("use_erg_diffusion"),
    ColumnSpec(
        "oss_steps", "text", OSS_STEPS_EXPECTED, parse_oss_steps, REQUEST_DEFAULTS["oss_steps"]
    ),
    ColumnSpec("task", "text", TASK_EXPECTED, parse_task, REQUEST_DEFAULTS["task"]),
    # --- edit tasks (spec 6.6-6.8) ---
    _column(
        "retake_seeds",
        "integer",
        _RETAKE_SEEDS_EXPECTED,
        integer_parser(0, MAX_SEED, _RETAKE_SEEDS_EXPECTED),
    ),
    _column(
        "retake_variance",
        "number",
        _RETAKE_VARIANCE_EXPECTED,
        number_parser(0.0, 1.0, _RETAKE_VARIANCE_EXPECTED),
    ),
    _column(
        "repaint_start",
        "number",
        _REPAINT_START_EXPECTED,
        number_parser(MIN_REPAINT_START_S, MAX_REPAINT_START_S, _REPAINT_START_EXPECTED),
    ),
    _column(
        "repaint_end",
        "number",
        _REPAINT_END_EXPECTED,
        number_parser(0.0, MAX_REPAINT_END_S, _REPAINT_END_EXPECTED),
    ),
    _column("src_audio", "text", _SRC_AUDIO_EXPECTED, uri_parser(_SRC_AUDIO_EXPECTED)),
    _column("ref_audio", "text", _REF_AUDIO_EXPECTED, uri_parser(_REF_AUDIO_EXPECTED)),
    _column(
        "ref_audio_strength",
        "number",
        _REF_AUDIO_STRENGTH_EXPECTED,
        number_parser(0.0, 1.0, _REF_AUDIO_STRENGTH_EXPECTED),
    ),
    _column(
        "edit_target_prompt",
        "text",
        _EDIT_TARGET_PROMPT_EXPECTED,
        text_parser(_EDIT_TARGET_PROMPT_EXPECTED),
    ),
    _column(
        "edit_target_lyrics",
        "text",
        _EDIT_TARGET_LYRICS_EXPECTED,
        text_parser(_EDIT_TARGET_LYRICS_EXPECTED),
    ),
    _column(
        "edit_n_min", "number", _EDIT_N_MIN_EXPECTED, number_parser(0.0, 1.0, _EDIT_N_MIN_EXPECTED)
    ),
    _column(
        "edit_n_max", "number", _EDIT_N_MAX_EXPECTED, number_parser(0.0, 1.0, _EDIT_N_MAX_EXPECTED)
    ),
    _column(
        "edit_n_avg",
        "integer",
        _EDIT_N_AVG_EXPECTED,
        integer_parser(1, MAX_EDIT_N_AVG, _EDIT_N_AVG_EXPECTED),
    ),
    # --- LoRA (spec 6.9) ---
    _column("lora", "text", _LORA_EXPECTED, uri_parser(_LORA_EXPECTED)),
    _column(
        "lora_weight",
        "number",
        _LORA_WEIGHT_EXPECTED,
        number_parser(-MAX_LORA_WEIGHT, MAX_LORA_WEIGHT, _LORA_WEIGHT_EXPECTED),
    ),
    ColumnSpec(
        "format", "text", FORMAT_EXPECTED, choice_parser(AUDIO_FORMATS, FORMAT_EXPECTED), None
    ),
)

COLUMNS_BY_NAME: Mapping[str, ColumnSpec] = {spec.name: spec for spec in COLUMNS}
KNOWN_COLUMNS: frozenset[str] = frozenset(COLUMNS_BY_NAME)
# Read as text from CSV so that "001" stays an id and "16" stays an oss_steps list.
TEXT_COLUMNS: tuple[str, ...] = tuple(spec.name for spec in COLUMNS if spec.type_name == "text")


def reserved_column_reason(name: str) -> str | None:
    """Why a user column name cannot be carried into the output metadata (None if it can)."""
    if name.startswith("__index_level_"):
        return (
            "no pandas index column; this is the DataFrame index that pyarrow stored: call "
            "reset_index(drop=True) or pass preserve_index=False / index=False when writing"
        )
    if name.startswith(RESERVED_PREFIX):
        return (
            f"a column name that does not start with {RESERVED_PREFIX!r} (reserved for "
            "internal use); rename it"
        )
    if name in RESERVED_COLUMNS:
        return (
            f"a column name that the output metadata does not already use (it writes {name!r} "
            f"itself); rename it, e.g. to 'user_{name}'"
        )
    if not name.strip():
        return (
            "a named column; this one has an empty name (often the index written by pandas' "
            "to_csv: pass index=False) - name it or delete it"
        )
    return None


# --- derived ids, seeds and output ids ------------------------------------------------------


def derive_id(request_fields: Mapping[str, Any], seed_given: bool) -> str:
    """A stable id from what is rendered: the same settings give the same id on any machine.

    `request_fields` holds every generation field after defaults. The seed takes part only when
    the row gave one, because a defaulted seed is itself derived from this id. Fields added
    after ids were introduced (edit tasks, LoRA) take part only when they differ from the
    engine's default, so a manifest that does not use them keeps the ids it always had.
    """
    canonical = {}
    for name in GENERATION_FIELDS:
        if name == "seed" and not seed_given:
            continue
        if name in ID_FIELDS_ALWAYS_HASHED:
            canonical[name] = request_fields[name]
            continue
        value = request_fields.get(name, REQUEST_DEFAULTS.get(name))
        if value != REQUEST_DEFAULTS.get(name):
            canonical[name] = value
    text = json.dumps(
        canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DERIVED_ID_HEX_CHARS]


def derive_seed(row_id: str) -> int:
    """A reproducible seed from the row id, in [0, 2**31)."""
    digest = hashlib.sha256(("seed:" + row_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % DERIVED_SEED_LIMIT


def output_id(row_id: str, variation: int, variations: int) -> str:
    """`<id>` for a single output, `<id>-<k>` when the row asks for several."""
    return row_id if variations == 1 else f"{row_id}-{variation}"


def guidance_interval_step_count(steps: int, oss_steps: str, guidance_interval: float) -> int:
    """How many sampler steps the guidance interval covers, computed exactly as ACE-Step does."""
    oss = [part for part in oss_steps.split(",") if part.strip()]
    n = len(oss) if oss else steps
    start = int(n * ((1 - guidance_interval) / 2))
    end = int(n * (guidance_interval / 2 + 0.5))
    return end - start


def seconds_to_latent_frames(seconds: float) -> int:
    """ACE-Step's conversion of repaint_start/repaint_end to latent frames (truncates to 0)."""
    return int(seconds * 44100 / 512 / 8)


def _oss_list(oss_steps: str) -> list[int]:
    return [int(part) for part in oss_steps.split(",") if part.strip()]


def schedule_steps(steps: int, oss_steps: str) -> int:
    """ACE-Step's `infer_steps`: `steps`, or max(oss_steps) when a custom step list is given.

    It is what the repaint/extend skip count and the audio-to-audio step count are computed
    from (spec 6.4: infer_steps stays max(oss_steps) for both)."""
    oss = _oss_list(oss_steps)
    return max(oss) if oss else steps


def sampler_loop_length(steps: int, scheduler: str, oss_steps: str) -> int:
    """How many iterations the sampler loop runs: len(oss_steps), else 2*steps - 1 for heun
    (which evaluates every timestep but the first twice), else steps."""
    oss = _oss_list(oss_steps)
    if oss:
        return len(oss)
    return 2 * steps - 1 if scheduler == "heun" else steps


def repaint_skipped_steps(steps: int, oss_steps: str, retake_variance: float) -> int:
    """Loop iterations repaint/extend skip before regenerating: int(infer_steps * (1 - v))."""
    return int(schedule_steps(steps, oss_steps) * (1 - retake_variance))


def audio2audio_step_count(steps: int, oss_steps: str, ref_audio_strength: float) -> int:
    """Steps audio-to-audio runs: int((1 - ref_audio_strength) * infer_steps) (its own
    schedule; a custom step list is otherwise ignored)."""
    return int((1 - ref_audio_strength) * schedule_steps(steps, oss_steps))


# --- extra column values ---------------------------------------------------------------------


def to_json_value(value: Any) -> Any:
    """Arrow's Python values made JSON-safe: dates as ISO text, decimals as numbers, bytes as
    text, NaN/inf as null (JSON has no such numbers), map entries as [key, value] pairs."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return to_json_value(int(value) if value == value.to_integral_value() else float(value))
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(item) for item in value]
    return str(value)
