"""Validation: each rule yields a problem naming row, id, column, value and the fix."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from acestep_batch.manifest import (
    ManifestError,
    ManifestProblem,
    manifest_warnings,
    validate_manifest,
)
from acestep_batch.manifest.schema import RESERVED_COLUMNS
from acestep_batch.manifest.validate import NO_VALUE


def problems(**columns: list[Any]) -> list[ManifestProblem]:
    return validate_manifest(pa.table(columns))


def only_problem(**columns: list[Any]) -> ManifestProblem:
    found = problems(**columns)
    assert len(found) == 1, [str(problem) for problem in found]
    return found[0]


def test_valid_manifest_has_no_problems() -> None:
    assert problems(prompt=["a", "b"], id=["x", None], duration=[3, None], bpm=[120, None]) == []


def test_missing_prompt_column_is_one_file_level_problem() -> None:
    problem = only_problem(text=["a", "b", "c"], duration=[3, 4, 5])
    assert problem.row is None and problem.column == "prompt" and problem.value is NO_VALUE
    assert str(problem).startswith("column 'prompt': expected a 'prompt' column")
    assert "'text'" in str(problem)  # lists the columns it did find


def test_missing_prompt_column_suggests_a_near_name() -> None:
    assert "did you mean to name 'Prompt' 'prompt'" in str(only_problem(Prompt=["a"]))


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_empty_prompt(empty: str | None) -> None:
    problem = only_problem(prompt=["ok", empty], id=["a", "b"])
    assert (problem.row, problem.id, problem.column, problem.value) == (2, "b", "prompt", empty)
    assert "non-empty text prompt" in str(problem)
    assert str(problem).startswith("row 2 (id 'b'), column 'prompt': got ")


def test_duplicate_id_names_both_rows() -> None:
    problem = only_problem(prompt=["a", "b", "c"], id=["kick", "snare", "kick"])
    assert (problem.row, problem.column, problem.value) == (3, "id", "kick")
    assert str(problem) == (
        "row 3 (id 'kick'), column 'id': got 'kick'; expected a unique id, but row 1 already "
        "uses 'kick'; rename one of them"
    )


@pytest.mark.parametrize("duration", [0, 1000, 0.99, 240.01, -5])
def test_duration_out_of_range(duration: float) -> None:
    problem = only_problem(prompt=["a"], id=["kick-01"], duration=[duration])
    assert str(problem) == (
        f"row 1 (id 'kick-01'), column 'duration': got {duration!r}; expected seconds from 1 to 240"
    )


@pytest.mark.parametrize("duration", [1, 240, 1.0, 2.5])
def test_duration_bounds_are_inclusive(duration: float) -> None:
    assert problems(prompt=["a"], duration=[duration]) == []


def test_negative_seed() -> None:
    problem = only_problem(prompt=["a"], seed=[-1])
    assert (problem.row, problem.column, problem.value) == (1, "seed", -1)
    assert "whole number from 0 to 4294967295" in str(problem)


@pytest.mark.parametrize(
    ("column", "cells", "fragment"),
    [
        ("duration", ["abc"], "expected seconds from 1 to 240"),
        ("seed", [1.5], "expected a whole number from 0"),
        ("prompt", [7], "expected a non-empty text prompt"),
        ("steps", ["sixty"], "expected a whole number of diffusion steps from 1 to 1000"),
        ("use_erg_tag", ["maybe"], "expected true or false"),
        ("lyrics", [5], "expected text lyrics"),
        ("guidance_scale", [True], "expected a number >= 0"),
        ("variations", [2.5], "expected a whole number of outputs from 1 to 1000"),
    ],
)
def test_wrong_types_are_problems_not_exceptions(
    column: str, cells: list[Any], fragment: str
) -> None:
    columns: dict[str, list[Any]] = {"prompt": ["a"], column: cells}
    problem = only_problem(**columns)
    assert (problem.row, problem.column, problem.value) == (1, column, cells[0])
    assert fragment in str(problem)


def test_unknown_scheduler_lists_allowed_values() -> None:
    problem = only_problem(prompt=["a"], scheduler=["ddim"])
    assert (
        str(problem)
        == "row 1, column 'scheduler': got 'ddim'; expected one of: euler, heun, pingpong"
    )


def test_scheduler_in_wrong_case_gets_a_hint() -> None:
    assert "did you mean 'euler'?" in str(only_problem(prompt=["a"], scheduler=["Euler"]))


def test_cfg_type_and_format_choices() -> None:
    assert "one of: apg, cfg, cfg_star" in str(only_problem(prompt=["a"], cfg_type=["cfg-star"]))
    assert "one of: wav, flac, ogg, mp3" in str(only_problem(prompt=["a"], format=["aiff"]))
    assert problems(prompt=["a", "b"], format=["flac", None]) == []


def test_unknown_task() -> None:
    problem = only_problem(prompt=["a"], task=["noise"])
    assert str(problem) == (
        "row 1, column 'task': got 'noise'; expected one of: text2music, retake, repaint, "
        "extend, edit, audio2audio"
    )
    assert "did you mean 'repaint'?" in str(only_problem(prompt=["a"], task=["inpaint"]))
    assert "did you mean 'retake'?" in str(only_problem(prompt=["a"], task=["Retake"]))


def test_many_problems_reported_at_once_in_row_order() -> None:
    found = problems(
        prompt=["ok", "", "fine", "also fine"],
        id=["a", "b", "a", "bad/id"],
        duration=[3, 1000, 3, 3],
        seed=[1, -1, 2, 3],
        scheduler=["euler", "ddim", "euler", "euler"],
        _private=[1, 2, 3, 4],
    )
    located = [(problem.row, problem.column) for problem in found]
    assert located == [
        (None, "_private"),
        (2, "prompt"),
        (2, "duration"),
        (2, "seed"),
        (2, "scheduler"),
        (3, "id"),
        (4, "id"),
    ]
    error = ManifestError(found, uri="s3://bucket/prompts.parquet")
    text = str(error)
    assert text.splitlines()[0] == "manifest s3://bucket/prompts.parquet: 7 problems"
    assert len(text.splitlines()) == 8
    for problem in found:
        assert str(problem) in text


def test_manifest_error_survives_pickling() -> None:
    error = ManifestError([ManifestProblem(1, "a", "prompt", "", "text")], uri="m.csv")
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems and copy.uri == "m.csv" and str(copy) == str(error)
    file_level = ManifestError([ManifestProblem(None, None, "prompt", NO_VALUE, "a column")])
    assert pickle.loads(pickle.dumps(file_level)).problems[0].value is NO_VALUE
    assert str(file_level) == "manifest: 1 problem\n  - column 'prompt': expected a column"


def test_problem_text_format() -> None:
    problem = ManifestProblem(3, "kick-01", "duration", 1000, "seconds between 1 and 240")
    assert (
        str(problem)
        == "row 3 (id 'kick-01'), column 'duration': got 1000; expected seconds between 1 and 240"
    )
    in_folder = ManifestProblem(12, None, "seed", None, "x", file="part-1.csv", file_row=2)
    assert str(in_folder) == "row 12 (row 2 of 'part-1.csv'), column 'seed': got null; expected x"
    assert ManifestProblem(1, None, "prompt", "y" * 500, "x").to_dict()["message"].count("y") < 100


@pytest.mark.parametrize("bad_id", ["../up", ".hidden", "a b", "x" * 129, "a/b"])
def test_unsafe_ids(bad_id: str) -> None:
    problem = only_problem(prompt=["a"], id=[bad_id])
    assert problem.column == "id" and problem.value == bad_id
    assert "A-Z a-z 0-9 - _ ." in problem.expected


def test_integer_ids_are_accepted() -> None:
    assert problems(prompt=["a", "b"], id=[1, 2]) == []
    assert only_problem(prompt=["a", "b"], id=[1, 1]).row == 2


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("variations", 0),
        ("variations", 1001),
        ("steps", 0),
        ("steps", 1001),
        ("guidance_scale", -1.0),
        ("guidance_interval", 1.5),
        ("guidance_interval_decay", -0.1),
        ("min_guidance_scale", -0.5),
        ("guidance_scale_text", -1.0),
        ("guidance_scale_lyric", -1.0),
        ("omega_scale", float("inf")),
        ("oss_steps", "0,10"),
    ],
)
def test_ranges(column: str, cell: Any) -> None:
    columns: dict[str, list[Any]] = {"prompt": ["a"], column: [cell]}
    problem = only_problem(**columns)
    assert (problem.row, problem.column) == (1, column)


def test_nulls_and_nan_mean_default() -> None:
    assert (
        problems(
            prompt=["a"],
            duration=[float("nan")],
            seed=pa.array([None], pa.int64()),
            steps=[float("nan")],
            scheduler=pa.array([None], pa.string()),
            use_erg_tag=pa.array([None], pa.bool_()),
            format=[""],
            id=[""],
        )
        == []
    )


def test_bool_spellings_accepted() -> None:
    assert (
        problems(
            prompt=["a", "b", "c", "d"],
            use_erg_lyric=["yes", "No", "1", "false"],
            use_erg_tag=[1, 0, 1, 0],
        )
        == []
    )


def test_oss_steps_with_heun() -> None:
    problem = only_problem(prompt=["a"], scheduler=["heun"], oss_steps=["16,29,52"])
    assert problem.column == "oss_steps" and "heun" in problem.expected
    assert problems(prompt=["a"], scheduler=["pingpong"], oss_steps=["16,29,52"]) == []


def test_guidance_decay_with_single_step_interval() -> None:
    problem = only_problem(prompt=["a"], steps=[2], guidance_interval_decay=[0.5])
    assert problem.column == "guidance_interval_decay" and "divides by zero" in problem.expected
    # The oss_steps list length is the step count when it is given.
    assert only_problem(prompt=["a"], oss_steps=["10,20"], guidance_interval_decay=[1.0]).row == 1
    assert problems(prompt=["a"], steps=[4], guidance_interval_decay=[0.5]) == []
    assert problems(prompt=["a"], steps=[2], guidance_interval_decay=[0.0]) == []


def test_seed_plus_variations_overflow() -> None:
    problem = only_problem(prompt=["a"], seed=[4294967295], variations=[2])
    assert problem.column == "seed" and "at most 4294967294" in problem.expected
    assert problems(prompt=["a"], seed=[4294967294], variations=[2]) == []


@pytest.mark.parametrize("order", ["variations first", "plain first"])
def test_output_id_collision_after_expansion(order: str) -> None:
    ids, variations = ["a", "a-1"], [2, 1]
    if order == "plain first":
        ids, variations = ids[::-1], variations[::-1]
    problem = only_problem(prompt=["x", "y"], id=ids, variations=variations)
    assert problem.row == 2 and problem.column == "id"
    assert "'a-1'" in problem.expected and "row 1" in problem.expected


def test_identical_rows_without_id_or_seed_collide() -> None:
    problem = only_problem(prompt=["same", "same"], bpm=[120, 90])
    assert problem.row == 2 and problem.column == "id"
    assert "same generation settings as row 1" in problem.expected
    assert problem.id is not None and len(problem.id) == 16
    # A seed (or an id) tells them apart.
    assert problems(prompt=["same", "same"], seed=[1, 2]) == []


@pytest.mark.parametrize(
    "name", ["output_id", "status", "audio_uri", "peak_dbfs", "variation", "created_at", "_hidden"]
)
def test_reserved_extra_columns(name: str) -> None:
    problem = only_problem(prompt=["a"], **{name: [1]})
    assert problem.row is None and problem.column == name
    assert str(problem).startswith(f"column {name!r}: expected a column name that ")


def test_readme_lists_every_reserved_column() -> None:
    readme = (Path(__file__).resolve().parents[2] / "manifests" / "README.md").read_text()
    for name in RESERVED_COLUMNS:
        assert f"`{name}`" in readme, name


def test_pandas_index_column_gets_a_specific_hint() -> None:
    problem = only_problem(prompt=["a"], __index_level_0__=[5])
    assert "reset_index" in problem.expected


def test_unnamed_and_duplicate_columns() -> None:
    unnamed = pa.table([pa.array(["a"]), pa.array([0])], names=["prompt", ""])
    assert "index=False" in validate_manifest(unnamed)[0].expected
    duplicated = pa.table(
        [pa.array(["a"]), pa.array([3]), pa.array([4])], names=["prompt", "bpm", "bpm"]
    )
    assert [problem.column for problem in validate_manifest(duplicated)] == ["bpm"]


def test_empty_table() -> None:
    problem = only_problem(prompt=pa.array([], pa.string()))
    assert problem.row is None and "at least one row" in str(problem)


def test_warnings_for_typos_and_case_only_ids() -> None:
    warnings = manifest_warnings(
        pa.table({"prompt": ["a", "b"], "id": ["Kick", "kick"], "Duraton": [3, 3]})
    )
    assert any("'Duraton'" in warning and "'duration'" in warning for warning in warnings)
    assert any("differ only in letter case" in warning for warning in warnings)
    assert manifest_warnings(pa.table({"prompt": ["a"], "bpm": [120]})) == []
