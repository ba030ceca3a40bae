"""Column rules, defaults and the id/seed derivation (the parts that must never drift)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from acestep_batch.manifest.schema import (
    COLUMNS,
    COLUMNS_BY_NAME,
    DERIVED_SEED_LIMIT,
    REQUEST_DEFAULTS,
    RESERVED_COLUMNS,
    InvalidValue,
    derive_id,
    derive_seed,
    guidance_interval_step_count,
    integer_parser,
    is_null,
    number_parser,
    output_id,
    parse_bool,
    parse_id,
    parse_oss_steps,
    parse_task,
    reserved_column_reason,
)
from acestep_batch.model.request import GENERATION_FIELDS, MAX_SEED, TASKS, GenerationRequest

README = Path(__file__).resolve().parents[2] / "manifests" / "README.md"


def _fields(**overrides: object) -> dict[str, object]:
    """Every generation field after defaults, as expansion hands them to derive_id."""
    fields = {name: REQUEST_DEFAULTS.get(name) for name in GENERATION_FIELDS}
    fields.update(overrides)
    return fields


def test_every_generation_field_is_a_column() -> None:
    assert set(GENERATION_FIELDS) <= set(COLUMNS_BY_NAME)


def test_column_defaults_are_the_request_defaults() -> None:
    for field in dataclasses.fields(GenerationRequest):
        if field.name in ("prompt", "seed"):
            continue  # prompt is required; seed is derived from the id
        assert COLUMNS_BY_NAME[field.name].default == field.default, field.name
        assert type(COLUMNS_BY_NAME[field.name].default) is type(field.default), field.name
    assert COLUMNS_BY_NAME["variations"].default == 1
    assert COLUMNS_BY_NAME["format"].default is None
    assert COLUMNS_BY_NAME["id"].default is None
    assert COLUMNS_BY_NAME["seed"].default is None
    assert [spec.name for spec in COLUMNS if spec.required] == ["prompt"]


def test_derived_id_is_pinned() -> None:
    # Changing this breaks every rerun's "already rendered" check: only change it on purpose.
    assert (
        derive_id(_fields(prompt="ambient pad, warm, slow attack"), seed_given=False)
        == "aac0a0e193d9994f"
    )
    assert derive_seed("aac0a0e193d9994f") == 150942370


def test_derived_ids_from_before_the_edit_task_columns_are_unchanged() -> None:
    # Ids computed with the code from before issue 6 (edit tasks, LoRA), which hashed only the
    # fields of that time. Resuming a run started then depends on these staying the same.
    assert (
        derive_id(
            _fields(
                prompt="rock anthem",
                lyrics="[verse]\nla la",
                duration=12.5,
                seed=7,
                steps=27,
                oss_steps="16,29,52",
                scheduler="pingpong",
            ),
            seed_given=True,
        )
        == "ccfff4517a01883d"
    )
    assert (
        derive_id(
            _fields(
                prompt="rock anthem",
                lyrics="[verse]\nla la",
                duration=12.5,
                steps=27,
                use_erg_tag=False,
            ),
            seed_given=False,
        )
        == "8055c982b73623de"
    )
    # The new fields at their defaults leave the id alone; any other value changes it.
    base = derive_id(_fields(prompt="x"), seed_given=False)
    explicit_defaults = _fields(
        prompt="x",
        retake_seeds=None,
        retake_variance=0.5,
        repaint_start=0.0,
        repaint_end=0.0,
        src_audio="",
        ref_audio="",
        ref_audio_strength=0.5,
        edit_target_prompt="",
        edit_target_lyrics="",
        edit_n_min=0.0,
        edit_n_max=1.0,
        edit_n_avg=1,
        lora="",
        lora_weight=1.0,
    )
    assert derive_id(explicit_defaults, seed_given=False) == base
    changed = {
        "retake_seeds": 0,
        "retake_variance": 0.2,
        "repaint_start": -5.0,
        "repaint_end": 10.0,
        "src_audio": "s3://b/a.wav",
        "ref_audio": "s3://b/r.wav",
        "ref_audio_strength": 0.7,
        "edit_target_prompt": "jazz",
        "edit_target_lyrics": "[verse]",
        "edit_n_min": 0.2,
        "edit_n_max": 0.4,
        "edit_n_avg": 2,
        "lora": "ACE-Step/ACE-Step-v1-chinese-rap-LoRA",
        "lora_weight": 0.5,
    }
    ids = {
        derive_id(_fields(prompt="x", **{name: value}), seed_given=False)
        for name, value in changed.items()
    }
    assert base not in ids and len(ids) == len(changed)
    # task was hashed before issue 6 already, so it always takes part.
    assert derive_id(_fields(prompt="x", task="retake"), seed_given=False) != base


def test_derived_id_depends_on_generation_fields_only() -> None:
    base = derive_id(_fields(prompt="x"), seed_given=False)
    assert derive_id(_fields(prompt="x"), seed_given=False) == base
    assert derive_id(_fields(prompt="x", duration=31.0), seed_given=False) != base
    assert derive_id(_fields(prompt="x", use_erg_tag=False), seed_given=False) != base
    # A defaulted seed does not take part (it is derived from the id itself)...
    assert derive_id(_fields(prompt="x", seed=123), seed_given=False) == base
    # ...a given seed does, and different seeds give different ids.
    assert derive_id(_fields(prompt="x", seed=1), seed_given=True) != base
    assert derive_id(_fields(prompt="x", seed=1), seed_given=True) != derive_id(
        _fields(prompt="x", seed=2), seed_given=True
    )
    assert re.fullmatch(r"[0-9a-f]{16}", base)


def test_derived_seed_range_leaves_room_for_variations() -> None:
    seeds = [derive_seed(f"row-{index}") for index in range(2000)]
    assert all(0 <= seed < DERIVED_SEED_LIMIT for seed in seeds)
    assert DERIVED_SEED_LIMIT + 1000 - 1 <= MAX_SEED
    assert len(set(seeds)) == len(seeds)


def test_output_id_rule() -> None:
    assert output_id("kick", 0, 1) == "kick"
    assert output_id("kick", 0, 3) == "kick-0"
    assert output_id("kick", 2, 3) == "kick-2"


@pytest.mark.parametrize(
    ("steps", "oss_steps", "interval", "covered"),
    [
        (60, "", 0.5, 30),  # start 15, end 45
        (2, "", 0.5, 1),  # start 0, end 1
        (4, "", 0.5, 2),
        (10, "", 0.1, 1),  # start int(4.5)=4, end int(5.5)=5
        (10, "", 0.0, 0),
        (60, "16,29", 0.5, 1),  # the oss list length is what counts
        (1, "", 1.0, 1),
    ],
)
def test_guidance_interval_step_count(
    steps: int, oss_steps: str, interval: float, covered: int
) -> None:
    assert guidance_interval_step_count(steps, oss_steps, interval) == covered


@pytest.mark.parametrize("text", ["true", "TRUE", " yes ", "1", "Yes"])
def test_bool_accepts_true_spellings(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("value", ["false", "No", "0", 0, 0.0, False])
def test_bool_accepts_false_spellings(value: object) -> None:
    assert parse_bool(value) is False


@pytest.mark.parametrize("value", ["maybe", 2, "", -1, [True]])
def test_bool_rejects_other_values(value: object) -> None:
    with pytest.raises(InvalidValue, match="true or false"):
        parse_bool(value)


def test_integer_parser() -> None:
    parse = integer_parser(1, 10, "expected-text")
    assert parse(5) == 5
    assert parse(5.0) == 5
    assert parse(" 7 ") == 7
    assert parse("8.0") == 8
    for bad in (1.5, 0, 11, "abc", True, float("inf"), None, [1]):
        with pytest.raises(InvalidValue, match="expected-text"):
            parse(bad)


def test_number_parser() -> None:
    parse = number_parser(0.0, 1.0, "between")
    assert parse(1) == 1.0 and isinstance(parse(1), float)
    assert parse("0.25") == 0.25
    for bad in (-0.1, 1.01, float("inf"), "nan", "x", False):
        with pytest.raises(InvalidValue):
            parse(bad)
    unbounded = number_parser(None, None, "finite")
    assert unbounded(-1e9) == -1e9
    with pytest.raises(InvalidValue):
        unbounded(float("-inf"))


def test_id_rules() -> None:
    for good in ("kick-01", "Kick_01.v2", "a", "0", "x" * 128, "-dash-first"):
        assert parse_id(good) == good
    assert parse_id(42) == "42"
    for bad in (".hidden", "..", "../escape", "a/b", "a b", "ü", "x" * 129, "a\\b", True, 1.5):
        with pytest.raises(InvalidValue, match="A-Z a-z 0-9"):
            parse_id(bad)


def test_oss_steps_canonical_text() -> None:
    assert parse_oss_steps("16, 29,52") == "16,29,52"
    assert parse_oss_steps([16, 29]) == "16,29"
    assert parse_oss_steps(5) == "5"
    for bad in ("0,5", "a", "16,,29", "1.5", "1001", [0]):
        with pytest.raises(InvalidValue, match="comma-separated"):
            parse_oss_steps(bad)


def test_every_task_is_accepted() -> None:
    for task in TASKS:
        assert parse_task(task) == task
    with pytest.raises(InvalidValue, match="did you mean 'audio2audio'") as caught:
        parse_task("Audio2Audio")
    assert "not supported" not in str(caught.value)
    with pytest.raises(InvalidValue, match="one of: text2music, retake, repaint, extend"):
        parse_task("inpaint")


def test_null_spellings() -> None:
    assert is_null(None) and is_null(float("nan")) and is_null("") and is_null("  ")
    assert not is_null(0) and not is_null("0") and not is_null(False)


def test_reserved_column_names() -> None:
    for name in RESERVED_COLUMNS | {"_private", "__index_level_0__", ""}:
        assert reserved_column_reason(name) is not None, name
    for name in ("bpm", "key", "genre", "license", "statuses", "error_rate"):
        assert reserved_column_reason(name) is None, name
    assert "reset_index" in (reserved_column_reason("__index_level_0__") or "")


def _readme_defaults() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(\w+)`\s*\|[^|]*\|\s*([^|]*?)\s*\|", line)
        if match:
            rows.setdefault(match.group(1), match.group(2))
    return rows


def test_readme_documents_every_column_with_its_default() -> None:
    documented = _readme_defaults()
    assert set(COLUMNS_BY_NAME) <= set(documented), set(COLUMNS_BY_NAME) - set(documented)
    assert "derived" in documented["seed"] and "derived" in documented["id"]
    for name, default in REQUEST_DEFAULTS.items():
        if name == "seed":
            continue  # the engine's 0 is never used: a manifest seed defaults to a derived one
        shown = documented[name].strip("`")
        if default is None:
            assert shown in ("derived", "empty"), name
        elif isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, float):
            assert math.isclose(float(shown), default), name
        elif isinstance(default, int):
            assert int(shown) == default, name
        elif default == "":
            assert shown in ('""', "empty"), name
        else:
            assert shown == default, name
