"""Expansion: rows -> OutputSpecs with defaults, derived ids/seeds, variations and extras."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acestep_batch.manifest import ManifestError, expand_manifest, load_manifest, read_manifest
from acestep_batch.model.request import GenerationRequest

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _make_examples() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_examples", MANIFESTS / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompt_only_row_gets_every_request_default() -> None:
    (spec,) = expand_manifest(pa.table({"prompt": ["ambient pad, warm, slow attack"]}))
    # Pinned: the derived id and seed of this row must not change by accident.
    assert spec.id == spec.output_id == "aac0a0e193d9994f"
    assert spec.request == GenerationRequest(
        prompt="ambient pad, warm, slow attack", seed=150942370
    )
    assert (spec.row, spec.variation, spec.format, spec.extra) == (1, 0, None, {})


def test_null_cells_equal_missing_columns() -> None:
    nulls = pa.table(
        {
            "prompt": ["x"],
            "id": pa.array([None], pa.string()),
            "seed": pa.array([None], pa.int64()),
            "duration": pa.array([None], pa.float64()),
            "scheduler": pa.array([None], pa.string()),
            "use_erg_lyric": pa.array([None], pa.bool_()),
            "variations": pa.array([None], pa.int64()),
        }
    )
    assert expand_manifest(nulls) == expand_manifest(pa.table({"prompt": ["x"]}))


def test_given_values_reach_the_request() -> None:
    table = pa.table(
        {
            "prompt": ["p"],
            "lyrics": ["[verse]\nla"],
            "duration": [12],
            "seed": [99],
            "steps": [27],
            "guidance_scale": [7],
            "scheduler": ["pingpong"],
            "cfg_type": ["cfg_star"],
            "omega_scale": [5.5],
            "guidance_interval": [0.8],
            "guidance_interval_decay": [0.25],
            "min_guidance_scale": [1.5],
            "guidance_scale_text": [2.0],
            "guidance_scale_lyric": [3.0],
            "use_erg_tag": [False],
            "use_erg_lyric": ["no"],
            "use_erg_diffusion": [0],
            "oss_steps": ["16, 29,52"],
            "task": ["text2music"],
            "format": ["mp3"],
        }
    )
    (spec,) = expand_manifest(table)
    assert spec.request == GenerationRequest(
        prompt="p",
        lyrics="[verse]\nla",
        duration=12.0,
        seed=99,
        steps=27,
        guidance_scale=7.0,
        scheduler="pingpong",
        cfg_type="cfg_star",
        omega_scale=5.5,
        guidance_interval=0.8,
        guidance_interval_decay=0.25,
        min_guidance_scale=1.5,
        guidance_scale_text=2.0,
        guidance_scale_lyric=3.0,
        use_erg_tag=False,
        use_erg_lyric=False,
        use_erg_diffusion=False,
        oss_steps="16,29,52",
    )
    assert isinstance(spec.request.duration, float) and isinstance(spec.request.steps, int)
    assert spec.format == "mp3"


def test_variations_expand_with_consecutive_seeds() -> None:
    table = pa.table(
        {"prompt": ["a", "b"], "id": ["kick", "snare"], "seed": [10, None], "variations": [3, 1]}
    )
    specs = expand_manifest(table)
    assert [
        (spec.output_id, spec.id, spec.row, spec.variation, spec.request.seed) for spec in specs[:3]
    ] == [
        ("kick-0", "kick", 1, 0, 10),
        ("kick-1", "kick", 1, 1, 11),
        ("kick-2", "kick", 1, 2, 12),
    ]
    assert specs[3].output_id == "snare" and specs[3].variation == 0 and specs[3].row == 2


def test_derived_seed_variations_stay_in_range() -> None:
    specs = expand_manifest(pa.table({"prompt": ["a"], "id": ["x"], "variations": [1000]}))
    seeds = [spec.request.seed for spec in specs]
    assert seeds == list(range(seeds[0], seeds[0] + 1000))
    assert seeds[-1] < 2**31 + 1000


def test_expansion_is_deterministic() -> None:
    columns = {"prompt": ["a", "b", "c"], "variations": [2, 1, 3], "genre": ["x", "y", "z"]}
    first = expand_manifest(pa.table(columns))
    again = expand_manifest(pa.table(dict(reversed(list(columns.items())))))  # column order
    chunked = expand_manifest(
        pa.concat_tables([pa.table(columns).slice(0, 1), pa.table(columns).slice(1)])
    )
    key = [(spec.output_id, spec.request.seed) for spec in first]
    assert key == [(spec.output_id, spec.request.seed) for spec in again]
    assert key == [(spec.output_id, spec.request.seed) for spec in chunked]


def test_derived_id_ignores_extras_and_follows_settings() -> None:
    def derived(**columns: list[object]) -> str:
        return expand_manifest(pa.table({"prompt": ["same"], **columns}))[0].id

    base = derived()
    assert derived(genre=["rock"]) == base
    assert derived(variations=[2]) == base  # outputs become base-0, base-1
    assert derived(format=["flac"]) == base
    assert derived(duration=[30]) == base  # 30 is the default: same render, same id
    assert derived(duration=[31]) != base
    assert derived(seed=[5]) != base
    assert derived(oss_steps=["16,29"]) == derived(oss_steps=["16, 29"])


def test_extra_columns_are_carried_as_json_values() -> None:
    table = pa.table(
        {
            "prompt": ["a", "b"],
            "bpm": [120, None],
            "key": ["A minor", "C major"],
            "score": [float("nan"), 0.5],
            "tags": [["x", "y"], []],
            "meta": [{"k": 1}, {"k": None}],
            "when": [datetime.date(2024, 5, 1), None],
            "price": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2")], pa.decimal128(5, 2)),
            "variations": [2, 1],
        }
    )
    specs = expand_manifest(table)
    assert specs[0].extra == {
        "bpm": 120,
        "key": "A minor",
        "score": None,
        "tags": ["x", "y"],
        "meta": {"k": 1},
        "when": "2024-05-01",
        "price": 1.5,
    }
    assert specs[2].extra["price"] == 2 and specs[2].extra["bpm"] is None
    for spec in specs:
        json.dumps(spec.extra, allow_nan=False)
    specs[0].extra["bpm"] = 0
    assert specs[1].extra["bpm"] == 120  # each output owns its dict


def test_known_columns_are_not_extras() -> None:
    (spec,) = expand_manifest(
        pa.table({"prompt": ["a"], "id": ["x"], "format": ["ogg"], "genre": ["g"]})
    )
    assert spec.extra == {"genre": "g"}


def test_expand_raises_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["", "ok"], "duration": [3.0, 1000.0]}), path)
    with pytest.raises(ManifestError) as caught:
        load_manifest(str(path))
    text = str(caught.value)
    assert text.splitlines()[0] == f"manifest {path}: 2 problems"
    assert "row 1, column 'prompt'" in text and "row 2, column 'duration': got 1000.0" in text


def test_output_spec_is_frozen() -> None:
    (spec,) = expand_manifest(pa.table({"prompt": ["a"]}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.output_id = "other"  # type: ignore[misc]


# --- the example manifests -----------------------------------------------------------------


def test_demo_manifest() -> None:
    table, specs = load_manifest(str(MANIFESTS / "demo.parquet"))
    assert table.num_rows == 6 and len(specs) == 7
    assert {"bpm", "key", "genre"} <= set(table.column_names)
    assert all(2 <= spec.request.duration <= 4 and 4 <= spec.request.steps <= 6 for spec in specs)
    assert any(spec.request.lyrics for spec in specs) and any(
        not spec.request.lyrics for spec in specs
    )
    assert any(any("\u4e00" <= char <= "\u9fff" for char in spec.request.lyrics) for spec in specs)
    assert [spec.output_id for spec in specs if spec.row == 1] == [
        "demo-lofi-piano-0",
        "demo-lofi-piano-1",
    ]


def test_loops_manifest() -> None:
    table, specs = load_manifest(str(MANIFESTS / "loops.parquet"))
    assert {"bpm", "key", "bars"} <= set(table.column_names)
    assert {spec.extra["category"] for spec in specs} == {"drums", "bass", "pad"}
    for spec in specs:
        beats = spec.extra["bars"] * 4
        loop = beats * 60 / spec.extra["bpm"]
        assert loop + 0.05 < spec.request.duration <= loop + 2.2  # loop + crossfade + render margin
        assert spec.request.steps == GenerationRequest.steps  # realistic: engine defaults
    from acestep_batch.audio.postprocess import LoopOptions
    from acestep_batch.batch.job import check_loop_rows

    check_loop_rows(specs, LoopOptions())  # ready for `submit --loops` (raises ManifestError otherwise)


def test_catalogue_manifest() -> None:
    _, specs = load_manifest(str(MANIFESTS / "catalogue.jsonl"))
    assert len(specs) >= 3
    assert all(spec.request.steps == 60 and spec.request.duration >= 60 for spec in specs)
    assert sum(1 for spec in specs if spec.request.lyrics) >= 3


def test_committed_examples_match_the_generator(tmp_path: Path) -> None:
    make_examples = _make_examples()
    written = make_examples.write_examples(tmp_path)
    assert [path.name for path in written] == ["demo.parquet", "loops.parquet", "catalogue.jsonl",
                                                 "edit_tasks.jsonl"]
    for path in written:
        committed = MANIFESTS / path.name
        if path.suffix == ".parquet":
            assert pq.read_table(committed).equals(pq.read_table(path)), path.name
        else:
            assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
        assert read_manifest(str(committed)).num_rows > 0
