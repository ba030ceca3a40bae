"""Text2Samples job specs: a YAML list of musical axes -> a manifest of loop renders.

ACE-Step never released its Text2Samples LoRA, so a sample library is rendered with the base
model (or the user's own LoRA) driven by explicit tempo, key, bars and instrumentation. A spec
names the axes of the library; `expand_spec` turns it into an ordinary manifest (one row per
take) that `acestep-batch submit` renders. `acestep-batch manifest expand SPEC -o OUT` is the
command line. The format, in full (jobs/text2samples/README.md has a walk-through)::

    name: lofi-starter                 # required; the `pack` column, and {name} in id_template
    axes:                              # label axes first (any names), then bpm / key / bars
      genre: {lofi: "lo-fi hip hop, dusty vinyl", house: "deep house, warm"}
      role: [drums, bass]              # a list: the label is also the prompt text
      bpm: [90, 124]                   # or {from: 80, to: 100, step: 5} (inclusive)
      key: ["A minor", "C major"]      # or {tonics: [A, C] | all, modes: [minor, major]}
      bars: [4, 8]
    overrides:                         # optional: per label, other bpm / key / bars lists
      genre: {lofi: {bpm: {from: 70, to: 90, step: 5}}}
    roles_without_key: [drums]         # optional: labels of axis `role` that have no key
    time_signature: "4/4"              # default 4/4; bpm counts the denominator's note
    variations: 2                      # takes per combination (default 1)
    sampling: {mode: product}          # or {mode: random, count: 500, seed: 7}
    prompt_template: "{genre}, {role}, {bpm} bpm, {key}, loop, instrumental"   # required
    id_template: "{genre}_{role}_{bpm:03d}bpm_{key_short}_{bars:02d}bars_{take:03d}"
    render: {margin_s: 2.0, crossfade_s: 0.05}
    generation: {steps: 27, lora: "", lora_weight: 1.0}   # manifest columns for every row

Rows: label axes in their YAML order, then bpm, key, bars, then take 1..variations. Each row's
`duration` is bars x beats_per_bar x 60 / bpm + crossfade_s + margin_s, rounded up to 0.01 s.
Columns: id, prompt, lyrics, duration, the `generation` columns, then the user columns pack,
one per label axis (the label as written), bpm, key ("A minor"; "" when keyless), bars,
time_signature, beats_per_bar and take. `seed` is left empty: the manifest derives it from the
id, so a row's take renders the same audio however the library grows.
"""

from __future__ import annotations

import difflib
import hashlib
import heapq
import io
import itertools
import json
import math
import re
import string
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import fsspec
import pyarrow as pa

from acestep_batch.manifest.schema import (
    COLUMNS_BY_NAME,
    KNOWN_COLUMNS,
    MAX_ID_LENGTH,
    InvalidValue,
    parse_id,
    reserved_column_reason,
)
from acestep_batch.model.request import MAX_DURATION_S, MIN_DURATION_S

MIN_BPM = 20  # the loop post-processing's range (audio/postprocess.py LoopFields)
MAX_BPM = 400
MIN_BARS = 1
MAX_BARS = 64
MAX_VARIATIONS = 1000
MAX_RANGE_VALUES = 1000  # values one {from, to, step} range may produce
MAX_COMBINATIONS = 2_000_000  # enumerated combinations (random sampling ranks them all)
MAX_ROWS = 1_000_000
MAX_MARGIN_S = 60.0
MAX_CROSSFADE_S = 5.0
MAX_LISTED = 10  # expansion problems listed before "... and N more"

MUSICAL_AXES: tuple[str, ...] = ("bpm", "key", "bars")
# Columns this module writes itself; a label axis cannot take their names.
SPEC_COLUMNS: tuple[str, ...] = (
    "pack",
    "bpm",
    "key",
    "bars",
    "time_signature",
    "beats_per_bar",
    "take",
)
# Manifest columns the spec sets itself: `generation` may not set them.
SPEC_OWNED_GENERATION: Mapping[str, str] = {
    "id": "ids come from id_template",
    "prompt": "prompts come from prompt_template",
    "duration": "durations come from bpm, bars and render",
    "seed": "seeds are derived from each row's id (so every take differs)",
    "variations": "use the top-level `variations` (takes per combination)",
}
TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name",
    "axes",
    "overrides",
    "roles_without_key",
    "time_signature",
    "variations",
    "sampling",
    "prompt_template",
    "id_template",
    "render",
    "generation",
)
# The twelve tonics with sharps, for `key: {tonics: all}`.
ALL_TONICS: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
TEMPLATE_FIELDS: tuple[str, ...] = (
    "name",
    "bpm",
    "key",
    "key_short",
    "bars",
    "time_signature",
    "beats_per_bar",
    "take",
)
SUFFIX_FORMATS: Mapping[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}
_AXIS_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ARROW_TYPES: Mapping[str, pa.DataType] = {
    "text": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


class SpecError(ValueError):
    """A spec that cannot be expanded. Every problem names its key path and the fix."""

    def __init__(self, problems: list[str], source: str = "<spec>") -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        lines = [f"spec {source}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  - {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class LabelAxis:
    """A free axis (genre, role, mood, ...): labels, their prompt texts and their id slugs."""

    name: str
    labels: tuple[str, ...]
    texts: tuple[str, ...]
    slugs: tuple[str, ...]


@dataclass(frozen=True)
class MusicalValues:
    """Values of the musical axes; None = not given at this level."""

    bpm: tuple[int | float, ...] | None = None
    key: tuple[str, ...] | None = None  # canonical "A minor"; ("",) = keyless
    bars: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Sampling:
    mode: str = "product"  # product | random
    count: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class SampleSpec:
    """A parsed, checked Text2Samples spec (see the module docstring for the YAML)."""

    name: str
    label_axes: tuple[LabelAxis, ...]
    musical: MusicalValues  # the axes' bpm / key / bars (key None: no key axis, all keyless)
    # label axis -> label -> musical values replacing the axes' ones for that label
    overrides: Mapping[str, Mapping[str, MusicalValues]]
    roles_without_key: frozenset[str]
    time_signature: str
    beats_per_bar: int
    variations: int
    sampling: Sampling
    prompt_template: str
    id_template: str
    margin_s: float
    crossfade_s: float
    generation: Mapping[str, Any]
    source: str = "<spec>"


@dataclass(frozen=True)
class _Combination:
    labels: tuple[int, ...]  # index into each label axis
    bpm: int | float
    key: str
    bars: int


# --- reading and parsing -------------------------------------------------------------------


def load_spec(uri: str, storage_options: dict | None = None) -> SampleSpec:
    """Read a YAML spec from a local path or fsspec URL and check it (raises SpecError)."""
    import yaml

    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise _error(uri, f"file: nothing at {uri!r}; check the path") from None
    except Exception as error:  # permissions, credentials, network: report, do not crash
        raise _error(uri, f"file: reading {uri!r} failed ({error})") from error
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _error(uri, "file: expected UTF-8 text (a YAML document)") from None
    except yaml.YAMLError as error:
        raise _error(uri, f"file: not valid YAML: {error}".replace("\n", " ")) from None
    return parse_spec(document, source=uri)


def parse_spec(document: Any, source: str = "<spec>") -> SampleSpec:
    """Check a spec given as Python data (what YAML loads); raises SpecError listing every
    problem found."""
    problems: list[str] = []
    if not isinstance(document, Mapping):
        raise _error(source, f"(top level): got {_show(document)}; expected a mapping with at "
                     "least name, axes and prompt_template")
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"{key}: unknown key{_did_you_mean(key, TOP_LEVEL_KEYS)}; "
                            f"expected one of: {', '.join(TOP_LEVEL_KEYS)}")
    name = _parse_name(document.get("name"), problems)
    label_axes, musical = _parse_axes(document.get("axes"), problems)
    axes_given = document.get("axes")
    given = frozenset(axes_given) if isinstance(axes_given, Mapping) and axes_given else None
    overrides = _parse_overrides(document.get("overrides"), label_axes, given, problems)
    roles_without_key = _parse_keyless(document.get("roles_without_key"), label_axes, overrides,
                                       problems)
    time_signature, beats_per_bar = _parse_time_signature(document.get("time_signature", "4/4"),
                                                          problems)
    variations = _parse_int(document.get("variations", 1), "variations", 1, MAX_VARIATIONS,
                            "takes per combination", problems)
    sampling = _parse_sampling(document.get("sampling"), problems)
    margin_s, crossfade_s = _parse_render(document.get("render"), problems)
    generation = _parse_generation(document.get("generation"), problems)
    axis_names = tuple(axis.name for axis in label_axes)
    prompt_template = _parse_template(document.get("prompt_template"), "prompt_template",
                                      axis_names, problems, required=True)
    id_template = _parse_template(document.get("id_template"), "id_template", axis_names,
                                  problems, required=False)
    if problems:
        raise SpecError(problems, source)
    if not id_template:
        id_template = default_id_template(label_axes, musical, overrides)
    return SampleSpec(
        name=name, label_axes=label_axes, musical=musical, overrides=overrides,
        roles_without_key=roles_without_key, time_signature=time_signature,
        beats_per_bar=beats_per_bar, variations=variations, sampling=sampling,
        prompt_template=prompt_template, id_template=id_template, margin_s=margin_s,
        crossfade_s=crossfade_s, generation=generation, source=source,
    )


def default_id_template(
    label_axes: tuple[LabelAxis, ...],
    musical: MusicalValues,
    overrides: Mapping[str, Mapping[str, MusicalValues]] | None = None,
) -> str:
    """`{genre}_{role}_..._{bpm:03d}bpm_{key_short}_{bars:02d}bars_{take:03d}` over the spec's
    label axes; `{bpm}` instead of `{bpm:03d}` when some tempo is not a whole number."""
    tempos = list(musical.bpm or ())
    for by_label in (overrides or {}).values():
        for values in by_label.values():
            tempos += list(values.bpm or ())
    bpm = "{bpm:03d}" if all(isinstance(t, int) for t in tempos) else "{bpm}"
    parts = [f"{{{axis.name}}}" for axis in label_axes]
    parts += [f"{bpm}bpm", "{key_short}", "{bars:02d}bars", "{take:03d}"]
    return "_".join(parts)


def _parse_name(value: Any, problems: list[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"name: got {_show(value)}; expected the pack's name as text, "
                        "e.g. name: lofi-starter")
        return ""
    if not slugify(value):
        problems.append(f"name: got {value!r}; expected a name with at least one letter or digit")
    return value.strip()


def _parse_axes(value: Any, problems: list[str]) -> tuple[tuple[LabelAxis, ...], MusicalValues]:
    if not isinstance(value, Mapping) or not value:
        problems.append(f"axes: got {_show(value)}; expected a mapping of axis name to values, "
                        "e.g. axes: {genre: [lofi, house], bpm: [90], bars: [4]}")
        return (), MusicalValues()
    label_axes: list[LabelAxis] = []
    musical: dict[str, Any] = {}
    for name, values in value.items():
        path = f"axes.{name}"
        if name in MUSICAL_AXES:
            musical[name] = _parse_musical(name, values, path, problems)
            continue
        if _check_axis_name(name, path, problems):
            axis = _parse_label_axis(name, values, path, problems)
            if axis is not None:
                label_axes.append(axis)
    # bpm and bars may be missing here when `overrides` gives them for every label (checked
    # there).
    return tuple(label_axes), MusicalValues(**musical)


def _check_axis_name(name: Any, path: str, problems: list[str]) -> bool:
    if not isinstance(name, str) or not _AXIS_NAME.fullmatch(name):
        problems.append(f"{path}: expected an axis name of lower-case letters, digits and '_' "
                        "starting with a letter (it becomes a column and a template field), "
                        "e.g. genre, role, mood")
        return False
    taken = None
    if name in KNOWN_COLUMNS:
        taken = f"the manifest column {name!r}"
    elif name in SPEC_COLUMNS:
        taken = f"the column {name!r} that the spec writes itself"
    elif name in TEMPLATE_FIELDS:
        taken = f"the template field {{{name}}}"
    elif reserved_column_reason(name):
        taken = f"{name!r}, a name the output metadata writes itself"
    if taken:
        problems.append(f"{path}: an axis cannot be named after {taken}; rename the axis "
                        f"(e.g. user_{name})")
        return False
    return True


def _parse_label_axis(name: str, values: Any, path: str, problems: list[str]) -> LabelAxis | None:
    if isinstance(values, (list, tuple)):
        pairs = [(label, None) for label in values]
    elif isinstance(values, Mapping):
        pairs = list(values.items())
    else:
        problems.append(f"{path}: got {_show(values)}; expected a list of labels, or a mapping "
                        "of label to prompt text, e.g. {drums: \"drum loop, punchy kick\"}")
        return None
    if not pairs:
        problems.append(f"{path}: expected at least one label")
        return None
    labels: list[str] = []
    texts: list[str] = []
    slugs: list[str] = []
    ok = True
    for index, (label, text) in enumerate(pairs):
        where = f"{path}[{index}]" if isinstance(values, (list, tuple)) else f"{path}.{label}"
        if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
            problems.append(f"{where}: got {_show(label)}; expected a label as text (quote "
                            "yes/no/on/off/true/false: YAML reads them as booleans)")
            ok = False
            continue
        label = str(label).strip()
        if text is None:
            text = label
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: got {_show(text)}; expected the label's prompt text, "
                            "e.g. \"drum loop, punchy kick, crisp hats\"")
            ok = False
            continue
        slug = slugify(label)
        if not slug:
            problems.append(f"{where}: label {label!r} has no letter or digit to put in an id; "
                            "rename it")
            ok = False
            continue
        if label in labels:
            problems.append(f"{where}: label {label!r} is given twice; remove one")
            ok = False
            continue
        labels.append(label)
        texts.append(text.strip())
        slugs.append(slug)
    if not ok:
        return None
    return LabelAxis(name, tuple(labels), tuple(texts), tuple(slugs))


def _parse_musical(name: str, value: Any, path: str, problems: list[str]) -> tuple | None:
    if name == "bpm":
        return _parse_bpm(value, path, problems)
    if name == "key":
        return _parse_keys(value, path, problems)
    return _parse_bars(value, path, problems)


_BPM_EXPECTED = (f"a tempo in BPM from {MIN_BPM} to {MAX_BPM}; give a list such as [90, 124] "
                 "or a range such as {from: 80, to: 100, step: 5}")


def _parse_bpm(value: Any, path: str, problems: list[str]) -> tuple[int | float, ...] | None:
    if isinstance(value, Mapping):
        return _parse_bpm_range(value, path, problems)
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        problems.append(f"{path}: expected at least one tempo; {_BPM_EXPECTED}")
        return None
    tempos: list[int | float] = []
    ok = True
    for index, item in enumerate(items):
        where = f"{path}[{index}]" if isinstance(value, (list, tuple)) else path
        tempo = _bpm_value(item)
        if tempo is None:
            problems.append(f"{where}: got {_show(item)}; expected {_BPM_EXPECTED}")
            ok = False
        elif tempo in tempos:
            problems.append(f"{where}: tempo {item} is given twice; remove one")
            ok = False
        else:
            tempos.append(tempo)
    return tuple(tempos) if ok else None


def _bpm_value(item: Any) -> int | float | None:
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        return None
    if not math.isfinite(item) or not MIN_BPM <= item <= MAX_BPM:
        return None
    return int(item) if float(item).is_integer() else float(item)


def _parse_bpm_range(value: Mapping, path: str, problems: list[str]) -> tuple | None:
    unknown = [key for key in value if key not in ("from", "to", "step")]
    if unknown:
        problems.append(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; a range has "
                        "from, to and step, e.g. {from: 80, to: 100, step: 5}")
        return None
    ends = {}
    for key in ("from", "to", "step"):
        item = value.get(key)
        if key == "step" and item is None:
            item = 1
        number = None if isinstance(item, bool) or not isinstance(item, (int, float)) else item
        if number is None or not math.isfinite(number):
            problems.append(f"{path}.{key}: got {_show(item)}; expected a number "
                            "(a range is {from: 80, to: 100, step: 5}, both ends included)")
            return None
        ends[key] = Fraction(str(number))
    if ends["step"] <= 0 or ends["to"] < ends["from"]:
        problems.append(f"{path}: got from {value.get('from')} to {value.get('to')} step "
                        f"{value.get('step', 1)}; expected from <= to and a step above 0")
        return None
    count = int((ends["to"] - ends["from"]) / ends["step"]) + 1
    if count > MAX_RANGE_VALUES:
        problems.append(f"{path}: the range gives {count} tempos; expected at most "
                        f"{MAX_RANGE_VALUES}: raise the step")
        return None
    tempos = []
    for index in range(count):
        exact = ends["from"] + index * ends["step"]
        tempo = _bpm_value(int(exact) if exact.denominator == 1 else float(exact))
        if tempo is None:
            problems.append(f"{path}: tempo {float(exact):g} is outside the range; expected "
                            f"every tempo from {MIN_BPM} to {MAX_BPM}")
            return None
        tempos.append(tempo)
    return tuple(tempos)


def _parse_bars(value: Any, path: str, problems: list[str]) -> tuple[int, ...] | None:
    items = value if isinstance(value, (list, tuple)) else [value]
    expected = (f"a whole number of bars from {MIN_BARS} to {MAX_BARS}; give a list such as "
                "[4, 8]")
    if not items:
        problems.append(f"{path}: expected at least one value; {expected}")
        return None
    bars: list[int] = []
    ok = True
    for index, item in enumerate(items):
        where = f"{path}[{index}]" if isinstance(value, (list, tuple)) else path
        good = (not isinstance(item, bool) and isinstance(item, (int, float))
                and math.isfinite(item) and float(item).is_integer()
                and MIN_BARS <= item <= MAX_BARS)
        if not good:
            problems.append(f"{where}: got {_show(item)}; expected {expected}")
            ok = False
        elif int(item) in bars:
            problems.append(f"{where}: {int(item)} bars is given twice; remove one")
            ok = False
        else:
            bars.append(int(item))
    return tuple(bars) if ok else None


_KEY_EXPECTED = ("a key such as 'A minor', 'C major' or 'F# minor' (flats are written as "
                 "sharps); or {tonics: [A, C] (or all), modes: [minor, major]}")


def _parse_keys(value: Any, path: str, problems: list[str]) -> tuple[str, ...] | None:
    if isinstance(value, Mapping):
        return _parse_key_grid(value, path, problems)
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        problems.append(f"{path}: expected at least one key; {_KEY_EXPECTED}")
        return None
    keys: list[str] = []
    ok = True
    for index, item in enumerate(items):
        where = f"{path}[{index}]" if isinstance(value, (list, tuple)) else path
        ok = _add_key(item, where, keys, problems) and ok
    return tuple(keys) if ok else None


def _parse_key_grid(value: Mapping, path: str, problems: list[str]) -> tuple[str, ...] | None:
    unknown = [key for key in value if key not in ("tonics", "modes")]
    if unknown:
        problems.append(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; expected "
                        "tonics and modes, e.g. {tonics: all, modes: [minor, major]}")
        return None
    tonics = value.get("tonics")
    if tonics == "all":
        tonics = list(ALL_TONICS)
    modes = value.get("modes", ["minor", "major"])
    if isinstance(modes, str):
        modes = [modes]
    if not isinstance(tonics, (list, tuple)) or not tonics:
        problems.append(f"{path}.tonics: got {_show(tonics)}; expected a list of tonics such "
                        "as [A, C, 'F#'] or the word all (the twelve)")
        return None
    if not isinstance(modes, (list, tuple)) or not modes:
        problems.append(f"{path}.modes: got {_show(modes)}; expected a list such as "
                        "[minor, major]")
        return None
    keys: list[str] = []
    ok = True
    for tonic_index, tonic in enumerate(tonics):
        for mode_index, mode in enumerate(modes):
            where = f"{path}.tonics[{tonic_index}] x {path}.modes[{mode_index}]"
            ok = _add_key(f"{tonic} {mode}", where, keys, problems) and ok
    return tuple(keys) if ok else None


def _add_key(item: Any, where: str, keys: list[str], problems: list[str]) -> bool:
    if not isinstance(item, str):
        problems.append(f"{where}: got {_show(item)}; expected {_KEY_EXPECTED}")
        return False
    try:
        key = canonical_key(item)
    except ValueError:
        problems.append(f"{where}: got {item!r}; expected {_KEY_EXPECTED}")
        return False
    if key in keys:
        problems.append(f"{where}: {item!r} is the key {key!r} again; remove one")
        return False
    keys.append(key)
    return True


def canonical_key(text: str) -> str:
    """'a min', 'Gb major' -> 'A minor', 'F# major' (the audio analysis' own key parser)."""
    from acestep_batch.audio.analysis import parse_key

    tonic, mode = parse_key(text)
    return f"{tonic} {mode}"


def key_short(key: str) -> str:
    """'A minor' -> 'Amin', 'F# major' -> 'Fsmaj' ('s' = sharp: '#' breaks URLs); '' -> ''."""
    if not key:
        return ""
    tonic, mode = key.split(" ")
    return tonic.replace("#", "s") + mode[:3]


def _parse_overrides(
    value: Any,
    label_axes: tuple[LabelAxis, ...],
    given: frozenset[str] | None,
    problems: list[str],
) -> dict[str, dict[str, MusicalValues]]:
    """Per-label bpm / key / bars; `given` = the names under axes (None: axes itself is bad)."""
    result: dict[str, dict[str, MusicalValues]] = {}
    axes = {axis.name: axis for axis in label_axes}
    owner: dict[str, str] = {}  # musical axis -> the label axis that overrides it
    example = "e.g. overrides: {genre: {lofi: {bpm: [80, 85, 90]}}}"
    if value is not None:
        if not isinstance(value, Mapping):
            problems.append(f"overrides: got {_show(value)}; expected a mapping of label axis "
                            f"to label to bpm / key / bars, {example}")
            value = {}
        for axis_name, by_label in value.items():
            path = f"overrides.{axis_name}"
            if axis_name not in axes:
                problems.append(f"{path}: {axis_name!r} is not a label axis of axes"
                                f"{_did_you_mean(axis_name, tuple(axes))}; expected one of: "
                                f"{', '.join(axes) or '(none)'}")
                continue
            if not isinstance(by_label, Mapping):
                problems.append(f"{path}: got {_show(by_label)}; expected a mapping of label to "
                                f"bpm / key / bars, {example}")
                continue
            result[axis_name] = {}
            for label, values in by_label.items():
                where = f"{path}.{label}"
                if str(label) not in axes[axis_name].labels:
                    problems.append(f"{where}: {label!r} is not a label of axes.{axis_name}"
                                    f"{_did_you_mean(str(label), axes[axis_name].labels)}")
                    continue
                parsed = _parse_override(values, where, problems)
                if parsed is None:
                    continue
                for field in MUSICAL_AXES:
                    if getattr(parsed, field) is None:
                        continue
                    other = owner.setdefault(field, axis_name)
                    if other != axis_name:
                        problems.append(f"{where}.{field}: {field} is already overridden per "
                                        f"{other}; one label axis only may override {field}")
                result[axis_name][str(label)] = parsed
    for field in ("bpm", "bars"):
        if given is None or field in given:
            continue
        axis_name = owner.get(field)
        missing = ([label for label in axes[axis_name].labels
                    if getattr(result[axis_name].get(label, MusicalValues()), field) is None]
                   if axis_name else None)
        if axis_name is None or missing:
            detail = (f"; overrides.{axis_name} lacks it for: {', '.join(missing)}"
                      if missing else "")
            problems.append(f"axes.{field}: missing; give axes.{field} (used by every "
                            f"label without an override){detail}")
    return result


def _parse_override(values: Any, where: str, problems: list[str]) -> MusicalValues | None:
    if not isinstance(values, Mapping) or not values:
        problems.append(f"{where}: got {_show(values)}; expected some of bpm, key, bars, "
                        "e.g. {bpm: [80, 90]}")
        return None
    parsed: dict[str, Any] = {}
    for field, item in values.items():
        if field not in MUSICAL_AXES:
            problems.append(f"{where}.{field}: unknown key{_did_you_mean(field, MUSICAL_AXES)};"
                            " an override sets bpm, key or bars")
            continue
        result = _parse_musical(field, item, f"{where}.{field}", problems)
        if result is None:
            return None
        parsed[field] = result
    return MusicalValues(**parsed) if parsed else None


def _parse_keyless(
    value: Any,
    label_axes: tuple[LabelAxis, ...],
    overrides: Mapping[str, Mapping[str, MusicalValues]],
    problems: list[str],
) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = value if isinstance(value, (list, tuple)) else [value]
    roles = {axis.name: axis for axis in label_axes}.get("role")
    if roles is None:
        problems.append("roles_without_key: needs an axis named role (axes.role) whose labels "
                        "it lists; add it or remove roles_without_key")
        return frozenset()
    result = set()
    for index, item in enumerate(items):
        where = f"roles_without_key[{index}]"
        if str(item) not in roles.labels:
            problems.append(f"{where}: {item!r} is not a label of axes.role"
                            f"{_did_you_mean(str(item), roles.labels)}")
            continue
        override = overrides.get("role", {}).get(str(item))
        if override is not None and override.key is not None:
            problems.append(f"{where}: overrides.role.{item}.key gives this role keys; remove "
                            "one of the two")
            continue
        result.add(str(item))
    return frozenset(result)


def _parse_time_signature(value: Any, problems: list[str]) -> tuple[str, int]:
    """The loop post-processing's own parser, so both agree on what a bar is."""
    from acestep_batch.audio.loops import parse_time_signature

    if isinstance(value, str):
        try:
            beats, unit = parse_time_signature(value)
            return f"{beats}/{unit}", beats
        except ValueError:
            pass
    problems.append(f"time_signature: got {_show(value)}; expected a quoted time signature "
                    "such as \"4/4\", \"3/4\" or \"6/8\" (1 to 32 beats of a 1, 2, 4, 8, 16 "
                    "or 32 note; bpm counts that note)")
    return "4/4", 4


def _parse_int(value: Any, path: str, low: int, high: int, what: str,
               problems: list[str]) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not float(value).is_integer()
            or not low <= value <= high):
        problems.append(f"{path}: got {_show(value)}; expected {what}: a whole number from "
                        f"{low} to {high}")
        return low
    return int(value)


def _parse_sampling(value: Any, problems: list[str]) -> Sampling:
    if value is None:
        return Sampling()
    example = "{mode: product} or {mode: random, count: 500, seed: 7}"
    if not isinstance(value, Mapping):
        problems.append(f"sampling: got {_show(value)}; expected {example}")
        return Sampling()
    unknown = [key for key in value if key not in ("mode", "count", "seed")]
    if unknown:
        problems.append(f"sampling: unknown key(s) {', '.join(map(repr, unknown))}; expected "
                        f"{example}")
    mode = value.get("mode", "product")
    if mode == "product":
        if "count" in value:
            problems.append("sampling.count: only with mode: random (product renders every "
                            "combination)")
        return Sampling()
    if mode != "random":
        problems.append(f"sampling.mode: got {_show(mode)}; expected product or random")
        return Sampling()
    if "count" not in value:
        problems.append("sampling.count: missing; random sampling needs the number of "
                        "combinations to draw, e.g. count: 500")
        return Sampling()
    count = _parse_int(value.get("count"), "sampling.count", 1, MAX_COMBINATIONS,
                       "the number of distinct combinations to draw", problems)
    seed = _parse_int(value.get("seed", 0), "sampling.seed", 0, 2**63 - 1,
                      "the seed of the draw", problems)
    return Sampling("random", count, seed)


def _parse_render(value: Any, problems: list[str]) -> tuple[float, float]:
    defaults = {"margin_s": 2.0, "crossfade_s": 0.05}
    if value is None:
        return defaults["margin_s"], defaults["crossfade_s"]
    if not isinstance(value, Mapping):
        problems.append(f"render: got {_show(value)}; expected {{margin_s: 2.0, "
                        "crossfade_s: 0.05}")
        return defaults["margin_s"], defaults["crossfade_s"]
    limits = {"margin_s": MAX_MARGIN_S, "crossfade_s": MAX_CROSSFADE_S}
    result = dict(defaults)
    for key, item in value.items():
        if key not in limits:
            problems.append(f"render.{key}: unknown key{_did_you_mean(key, tuple(limits))}; "
                            "expected margin_s and/or crossfade_s")
            continue
        if (isinstance(item, bool) or not isinstance(item, (int, float))
                or not math.isfinite(item) or not 0 <= item <= limits[key]):
            problems.append(f"render.{key}: got {_show(item)}; expected seconds from 0 to "
                            f"{limits[key]:g}")
            continue
        result[key] = float(item)
    return result["margin_s"], result["crossfade_s"]


def _parse_generation(value: Any, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"generation: got {_show(value)}; expected a mapping of manifest "
                        "columns, e.g. {steps: 27, lora: my/lora, lora_weight: 0.8}")
        return {}
    result: dict[str, Any] = {}
    for key, item in value.items():
        path = f"generation.{key}"
        if key in SPEC_OWNED_GENERATION:
            problems.append(f"{path}: set by the spec itself ({SPEC_OWNED_GENERATION[key]}); "
                            "remove it")
            continue
        column = COLUMNS_BY_NAME.get(key)
        if column is None:
            settable = tuple(sorted(set(COLUMNS_BY_NAME) - set(SPEC_OWNED_GENERATION)))
            problems.append(f"{path}: unknown manifest column{_did_you_mean(key, settable)}; "
                            "see manifests/README.md for the columns")
            continue
        if item is None:
            continue  # empty = the engine's default, as in a manifest
        try:
            result[key] = column.parse(item)
        except InvalidValue as error:
            problems.append(f"{path}: got {_show(item)}; expected {error.expected}")
    return result


def _parse_template(value: Any, path: str, axis_names: tuple[str, ...], problems: list[str],
                    required: bool) -> str:
    example = ('"{genre}, {role}, {bpm} bpm, {key}, loop, instrumental"' if path ==
               "prompt_template" else '"{genre}_{role}_{bpm:03d}bpm_{key_short}_{take:03d}"')
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{path}: got {_show(value)}; expected a template such as {example}")
        return ""
    allowed = axis_names + TEMPLATE_FIELDS
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
    except ValueError as error:
        problems.append(f"{path}: {error} in {value!r}; write literal braces as {{{{ and }}}}")
        return ""
    for field in fields:
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in allowed:
            problems.append(f"{path}: unknown field {{{field}}}{_did_you_mean(root, allowed)};"
                            f" expected one of: {', '.join(allowed)}")
            return ""
    return value


# --- expansion -------------------------------------------------------------------------------


def expand_spec(spec: SampleSpec, validate: bool = True) -> pa.Table:
    """The manifest of a spec: one row per take, in a stable order, with stable ids.

    With `validate` (the default) the table is run through the manifest validator, so a spec
    can never produce a manifest that `submit` rejects; any problem is raised as SpecError.
    """
    combinations = _select(spec, list(_combinations(spec)))
    problems: list[str] = []
    durations = _durations(spec, combinations, problems)
    if problems:
        raise SpecError(problems, spec.source)
    rows_total = len(combinations) * spec.variations
    if rows_total > MAX_ROWS:
        raise _error(spec.source, f"(expansion): the spec gives {rows_total} rows; expected at "
                     f"most {MAX_ROWS}: use sampling: {{mode: random, count: N}} or fewer axes")
    columns: dict[str, list[Any]] = {
        name: [] for name in ("id", "prompt", "lyrics", "duration", *spec.generation, "pack",
                              *(axis.name for axis in spec.label_axes), *SPEC_COLUMNS[1:])
    }
    first_of: dict[str, tuple[_Combination, int]] = {}
    for combination, duration in zip(combinations, durations, strict=True):
        prompt = _format(spec.prompt_template, "prompt_template",
                         _fields(spec, combination, take=1, for_id=False), spec.source)
        prompt = clean_prompt(prompt)
        if not prompt:
            raise _error(spec.source, "prompt_template: gives an empty prompt for "
                         f"{_describe(spec, combination)}; add text to the template")
        for take in range(1, spec.variations + 1):
            row_id = _make_id(spec, combination, take, first_of, problems)
            columns["id"].append(row_id)
            columns["prompt"].append(prompt)
            columns["lyrics"].append(spec.generation.get("lyrics", ""))
            columns["duration"].append(duration)
            for name, setting in spec.generation.items():
                if name != "lyrics":  # its column is filled above
                    columns[name].append(setting)
            columns["pack"].append(spec.name)
            for axis, index in zip(spec.label_axes, combination.labels, strict=True):
                columns[axis.name].append(axis.labels[index])
            columns["bpm"].append(combination.bpm)
            columns["key"].append(combination.key)
            columns["bars"].append(combination.bars)
            columns["time_signature"].append(spec.time_signature)
            columns["beats_per_bar"].append(spec.beats_per_bar)
            columns["take"].append(take)
    if problems:
        extra = len(problems) - MAX_LISTED
        if extra > 0:
            problems[MAX_LISTED:] = [f"... and {extra} more ids given more than once"]
        raise SpecError(problems, spec.source)
    table = pa.table({name: pa.array(values, type=_arrow_type(name, values))
                      for name, values in columns.items()})
    if validate:
        check_table(table, spec.source)
    return table


def check_table(table: pa.Table, source: str = "<spec>") -> None:
    """Run the manifest validator (what `submit` runs); its problems become a SpecError."""
    from acestep_batch.manifest import ManifestError, expand_manifest

    try:
        expand_manifest(table)
    except ManifestError as error:
        lines = [str(problem) for problem in error.problems]
        raise SpecError(
            [f"(manifest): the rows this spec gives are not a valid manifest; fix the spec's "
             f"generation settings: {line}" for line in lines],
            source,
        ) from error


def _arrow_type(name: str, values: list[Any]) -> pa.DataType:
    column = COLUMNS_BY_NAME.get(name)
    if column is not None:
        return _ARROW_TYPES[column.type_name]
    if name == "bpm":
        return pa.int64() if all(isinstance(v, int) for v in values) else pa.float64()
    if name in ("bars", "beats_per_bar", "take"):
        return pa.int64()
    return pa.string()


def _combinations(spec: SampleSpec) -> Iterator[_Combination]:
    """Label axes in YAML order, then bpm, key, bars; overrides apply per label."""
    count = 0
    ranges = [range(len(axis.labels)) for axis in spec.label_axes]
    for labels in itertools.product(*ranges):
        bpms, keys, bars_list = _musical_for(spec, labels)
        for bpm, key, bars in itertools.product(bpms, keys, bars_list):
            count += 1
            if count > MAX_COMBINATIONS:
                raise _error(spec.source, f"axes: more than {MAX_COMBINATIONS} combinations; "
                             "expected fewer: drop values from some axes")
            yield _Combination(labels, bpm, key, bars)


def _musical_for(spec: SampleSpec, labels: tuple[int, ...]) -> tuple[tuple, tuple, tuple]:
    values = {field: getattr(spec.musical, field) for field in MUSICAL_AXES}
    if values["key"] is None:
        values["key"] = ("",)
    keyless = False
    for axis, index in zip(spec.label_axes, labels, strict=True):
        override = spec.overrides.get(axis.name, {}).get(axis.labels[index])
        if override is not None:
            for field in MUSICAL_AXES:
                if getattr(override, field) is not None:
                    values[field] = getattr(override, field)
        if axis.name == "role" and axis.labels[index] in spec.roles_without_key:
            keyless = True
    if keyless:
        values["key"] = ("",)  # wins over another axis' key override
    return values["bpm"], values["key"], values["bars"]


def _select(spec: SampleSpec, combinations: list[_Combination]) -> list[_Combination]:
    """Random sampling: the `count` combinations with the smallest hash of (seed, combination).
    Raising `count` keeps every combination drawn before (and so its rendered files); the rows
    stay in enumeration order."""
    if spec.sampling.mode == "product":
        return combinations
    count = spec.sampling.count or 0
    if count > len(combinations):
        raise _error(spec.source, f"sampling.count: got {count}, but the axes give only "
                     f"{len(combinations)} combinations; lower it or use mode: product")
    ranked = heapq.nsmallest(
        count, range(len(combinations)),
        key=lambda index: _draw_hash(spec, combinations[index]),
    )
    return [combinations[index] for index in sorted(ranked)]


def _draw_hash(spec: SampleSpec, combination: _Combination) -> bytes:
    identity = {axis.name: axis.labels[index]
                for axis, index in zip(spec.label_axes, combination.labels, strict=True)}
    identity.update(bpm=combination.bpm, key=combination.key, bars=combination.bars)
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{spec.sampling.seed}\0{text}".encode()).digest()


def render_seconds(bars: int, beats_per_bar: int, bpm: float, crossfade_s: float,
                   margin_s: float) -> float:
    """bars x beats_per_bar x 60 / bpm + crossfade_s + margin_s, rounded up to 0.01 s
    (computed exactly, so 10.05 stays 10.05)."""
    exact = (Fraction(bars * beats_per_bar * 60) / Fraction(str(bpm))
             + Fraction(str(crossfade_s)) + Fraction(str(margin_s)))
    return math.ceil(exact * 100) / 100


def _durations(spec: SampleSpec, combinations: list[_Combination],
               problems: list[str]) -> list[float]:
    durations = []
    bad = 0
    for combination in combinations:
        seconds = render_seconds(combination.bars, spec.beats_per_bar, combination.bpm,
                                 spec.crossfade_s, spec.margin_s)
        durations.append(seconds)
        if MIN_DURATION_S <= seconds <= MAX_DURATION_S:
            continue
        bad += 1
        if bad <= MAX_LISTED:
            side = ("above the engine's maximum of" if seconds > MAX_DURATION_S
                    else "below the engine's minimum of")
            fix = ("use fewer bars or faster tempos for it" if seconds > MAX_DURATION_S
                   else "use more bars, slower tempos or a larger render.margin_s")
            problems.append(f"axes: {_describe(spec, combination)} renders {seconds:g} s, "
                            f"{side} {(MAX_DURATION_S if seconds > MAX_DURATION_S else MIN_DURATION_S):g}"
                            f" s; {fix}")
    if bad > MAX_LISTED:
        problems.append(f"... and {bad - MAX_LISTED} more combinations out of range")
    return durations


def _fields(spec: SampleSpec, combination: _Combination, take: int, for_id: bool) -> dict:
    fields: dict[str, Any] = {
        "name": slugify(spec.name) if for_id else spec.name,
        "bpm": combination.bpm,
        "key": combination.key,
        "key_short": key_short(combination.key),
        "bars": combination.bars,
        "time_signature": spec.time_signature,
        "beats_per_bar": spec.beats_per_bar,
        "take": take,
    }
    for axis, index in zip(spec.label_axes, combination.labels, strict=True):
        fields[axis.name] = axis.slugs[index] if for_id else axis.texts[index]
    return fields


def _format(template: str, path: str, fields: dict, source: str) -> str:
    try:
        return template.format(**fields)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        raise _error(source, f"{path}: {template!r} cannot format ({error}) with {shown}; "
                     "e.g. {bpm:03d} needs whole tempos: use {bpm} for tempos like 87.5") from None


def _make_id(spec: SampleSpec, combination: _Combination, take: int,
             first_of: dict[str, tuple[_Combination, int]], problems: list[str]) -> str:
    raw = _format(spec.id_template, "id_template", _fields(spec, combination, take, True),
                  spec.source)
    row_id = sanitize_id(raw)
    try:
        parse_id(row_id)
    except InvalidValue:
        raise _error(spec.source, f"id_template: gives {raw!r} for "
                     f"{_describe(spec, combination)}, which is not a valid id (1 to "
                     f"{MAX_ID_LENGTH} characters of A-Z a-z 0-9 _ - .); shorten the template "
                     "or the labels") from None
    other, other_take = first_of.setdefault(row_id, (combination, take))
    if (other, other_take) != (combination, take) and not any(
        f"the id {row_id!r} " in problem for problem in problems
    ):  # each id once
        differing = _differing_fields(spec, other, combination) if other != combination else []
        if other_take != take:
            differing.append("take")
        problems.append(f"id_template: gives the id {row_id!r} to both "
                        f"{_describe(spec, other, other_take)} and "
                        f"{_describe(spec, combination, take)}; add "
                        f"{' or '.join('{' + f + '}' for f in differing)} to id_template so "
                        "ids are unique")
    return row_id


def _differing_fields(spec: SampleSpec, a: _Combination, b: _Combination) -> list[str]:
    names = [axis.name for axis in spec.label_axes]
    differing = [name for name, i, j in zip(names, a.labels, b.labels, strict=True) if i != j]
    for field in MUSICAL_AXES:
        if getattr(a, field) != getattr(b, field):
            differing.append("key_short" if field == "key" else field)
    return differing


def _describe(spec: SampleSpec, combination: _Combination, take: int | None = None) -> str:
    parts = [f"{axis.name}={axis.labels[index]}"
             for axis, index in zip(spec.label_axes, combination.labels, strict=True)]
    parts += [f"bpm={combination.bpm}", f"key={combination.key or '(none)'}",
              f"bars={combination.bars}"]
    if take is not None:
        parts.append(f"take={take}")
    return "(" + ", ".join(parts) + ")"


def slugify(label: str) -> str:
    """A label as id text: accents dropped, lower case, every run of other characters '-'."""
    text = unicodedata.normalize("NFKD", str(label)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def sanitize_id(text: str) -> str:
    """Characters outside A-Z a-z 0-9 _ - . become '-'; a run of '_' and '-' (around an empty
    field such as a keyless row's {key_short}) shrinks to one '_' ('-' if it has no '_'); and
    separators at the ends go."""
    text = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    text = re.sub(r"[_-]{2,}", lambda run: "_" if "_" in run.group() else "-", text)
    return text.strip("_-.")


def clean_prompt(prompt: str) -> str:
    """Drop empty comma-separated parts (a keyless row's {key}) and tidy the spacing."""
    return ", ".join(part.strip() for part in prompt.split(",") if part.strip())


# --- writing ----------------------------------------------------------------------------------


def write_manifest(table: pa.Table, uri: str, storage_options: dict | None = None) -> str:
    """Write the table as Parquet, JSON Lines or CSV by the name's extension (local path or
    fsspec URL); returns the format written. Raises ValueError for another extension."""
    lowered = uri.lower()
    fmt = next((f for suffix, f in SUFFIX_FORMATS.items() if lowered.endswith(suffix)), None)
    if fmt is None:
        raise ValueError(f"{uri}: expected a name ending in one of "
                         f"{', '.join(SUFFIX_FORMATS)} (the format is chosen by extension)")
    buffer = io.BytesIO()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, buffer)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, buffer)
    else:
        for row in table.to_pylist():
            buffer.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return fmt


def describe_table(table: pa.Table) -> str:
    """'12 rows (6 combinations x up to 2 takes), 1.2 min of audio to render'."""
    takes = table.column("take").to_pylist()
    combinations = sum(1 for take in takes if take == 1)
    minutes = sum(table.column("duration").to_pylist()) / 60
    return (f"{table.num_rows} rows ({combinations} combinations x up to {max(takes)} takes), "
            f"{minutes:.1f} min of audio to render")


# --- small helpers ----------------------------------------------------------------------------


def _error(source: str, problem: str) -> SpecError:
    return SpecError([problem], source)


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(word: Any, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = [
    "LabelAxis",
    "MusicalValues",
    "SampleSpec",
    "Sampling",
    "SpecError",
    "canonical_key",
    "check_table",
    "clean_prompt",
    "default_id_template",
    "describe_table",
    "expand_spec",
    "key_short",
    "load_spec",
    "parse_spec",
    "render_seconds",
    "sanitize_id",
    "slugify",
    "write_manifest",
]
