"""Text2Samples specs -> manifests: rows, ids, durations, sampling, errors, the CLI command."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from acestep_batch.cli import app
from acestep_batch.manifest import expand_manifest, read_manifest
from acestep_batch.manifest.schema import derive_seed
from acestep_batch.manifest.text2samples import (
    SpecError,
    expand_spec,
    key_short,
    load_spec,
    parse_spec,
    render_seconds,
    sanitize_id,
    slugify,
    write_manifest,
)

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "text2samples"
SMALL = JOBS / "small.yaml"
LIBRARY = JOBS / "library.yaml"

SMALL_IDS = [
    "house_drums_124bpm_02bars_001",
    "house_drums_124bpm_02bars_002",
    "house_bass_124bpm_Amin_02bars_001",
    "house_bass_124bpm_Amin_02bars_002",
    "house_bass_124bpm_Fsmin_02bars_001",
    "house_bass_124bpm_Fsmin_02bars_002",
    "techno_drums_132bpm_02bars_001",
    "techno_drums_132bpm_02bars_002",
    "techno_bass_132bpm_Amin_02bars_001",
    "techno_bass_132bpm_Amin_02bars_002",
    "techno_bass_132bpm_Fsmin_02bars_001",
    "techno_bass_132bpm_Fsmin_02bars_002",
]


def small_document() -> dict[str, Any]:
    return yaml.safe_load(SMALL.read_text(encoding="utf-8"))


def base_document() -> dict[str, Any]:
    """A compact spec with a mood axis and a global bpm list, for the error tests."""
    return {
        "name": "test-pack",
        "axes": {
            "genre": {"lofi": "lo-fi hip hop, dusty vinyl", "house": "deep house, warm"},
            "role": {"drums": "drum loop, punchy kick", "bass": "bassline, warm bass"},
            "mood": ["mellow", "uplifting"],
            "bpm": [90, 124],
            "key": ["A minor", "C major"],
            "bars": [4],
        },
        "roles_without_key": ["drums"],
        "prompt_template": "{genre}, {role}, {mood}, {bpm} bpm, {key}, loop",
    }


def problems_of(document: Any) -> str:
    with pytest.raises(SpecError) as caught:
        expand_spec(parse_spec(document, source="t.yaml"))
    return str(caught.value)


# --- the small example spec ---------------------------------------------------------------


def test_small_spec_rows_ids_and_durations() -> None:
    table = expand_spec(load_spec(str(SMALL)))
    assert table.num_rows == 12
    assert table.column("id").to_pylist() == SMALL_IDS
    rows = {row["id"]: row for row in table.to_pylist()}
    # house: 2 bars x 4 beats x 60 / 124 = 3.870967.. s + 0.05 crossfade + 2.0 margin = 5.9209..
    assert rows["house_bass_124bpm_Amin_02bars_001"]["duration"] == 5.93
    assert rows["house_drums_124bpm_02bars_002"]["duration"] == 5.93
    # techno: 480 / 132 = 3.636363.. + 2.05 = 5.6863.. -> 5.69
    assert rows["techno_bass_132bpm_Fsmin_02bars_001"]["duration"] == 5.69
    bass = rows["techno_bass_132bpm_Fsmin_02bars_002"]
    assert bass["prompt"] == (
        "techno, dark, driving, warehouse, bassline, warm analog synth bass, 132 bpm, F# minor, "
        "loop, instrumental"
    )
    assert (bass["bpm"], bass["key"], bass["bars"], bass["take"]) == (132, "F# minor", 2, 2)
    assert (bass["genre"], bass["role"], bass["pack"]) == ("techno", "bass", "starter-pack")
    assert (bass["time_signature"], bass["beats_per_bar"], bass["lyrics"]) == ("4/4", 4, "")
    assert (bass["steps"], bass["scheduler"], bass["guidance_scale"]) == (27, "euler", 15.0)


def test_small_spec_column_types() -> None:
    schema = expand_spec(load_spec(str(SMALL))).schema
    expected = {
        "id": pa.string(), "prompt": pa.string(), "lyrics": pa.string(),
        "duration": pa.float64(), "steps": pa.int64(), "scheduler": pa.string(),
        "guidance_scale": pa.float64(), "pack": pa.string(), "genre": pa.string(),
        "role": pa.string(), "bpm": pa.int64(), "key": pa.string(), "bars": pa.int64(),
        "time_signature": pa.string(), "beats_per_bar": pa.int64(), "take": pa.int64(),
    }
    assert {field.name: field.type for field in schema} == expected
    assert "seed" not in schema.names and "variation" not in schema.names


def test_keyless_drums() -> None:
    rows = expand_spec(load_spec(str(SMALL))).to_pylist()
    drums = [row for row in rows if row["role"] == "drums"]
    # one keyless variant per genre and take, not one per key
    assert len(drums) == 4
    assert all(row["key"] == "" for row in drums)
    assert drums[0]["prompt"] == (
        "deep house, warm analog synths, four on the floor, drum loop, punchy kick, "
        "crisp hi-hats, 124 bpm, loop, instrumental"
    )
    assert {row["key"] for row in rows if row["role"] == "bass"} == {"A minor", "F# minor"}


def test_small_spec_is_a_valid_manifest_with_seeds_from_the_ids() -> None:
    table = expand_spec(load_spec(str(SMALL)))
    outputs = expand_manifest(table)
    assert [o.output_id for o in outputs] == SMALL_IDS
    assert [o.request.seed for o in outputs] == [derive_seed(i) for i in SMALL_IDS]
    assert len({o.request.seed for o in outputs}) == 12
    first = outputs[0]
    assert first.request.duration == 5.93 and first.request.steps == 27
    assert first.extra == {
        "pack": "starter-pack", "genre": "house", "role": "drums", "bpm": 124, "key": "",
        "bars": 2, "time_signature": "4/4", "beats_per_bar": 4, "take": 1,
    }


def test_expansion_is_deterministic() -> None:
    assert expand_spec(load_spec(str(SMALL))).equals(expand_spec(load_spec(str(SMALL))))
    assert expand_spec(load_spec(str(LIBRARY))).equals(expand_spec(load_spec(str(LIBRARY))))


def test_library_spec_is_thousands_of_valid_rows() -> None:
    table = expand_spec(load_spec(str(LIBRARY)))
    assert table.num_rows == 3000
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert len(expand_manifest(table)) == 3000
    rows = table.to_pylist()
    assert {row["genre"] for row in rows} == {"lofi", "house", "techno", "trap", "dnb", "synthwave"}
    assert len({row["role"] for row in rows}) == 8
    assert all(row["key"] == "" for row in rows if row["role"] in ("drums", "percussion"))
    assert all(70 <= row["bpm"] <= 90 for row in rows if row["genre"] == "lofi")
    assert all(row["bpm"] in (170, 172, 174) for row in rows if row["genre"] == "dnb")
    vocal = next(row for row in rows if row["role"] == "vocal chop")
    assert "_vocal-chop_" in vocal["id"]


# --- sampling --------------------------------------------------------------------------------


def random_ids(count: int, seed: int, **changes: Any) -> list[str]:
    document = base_document()
    document.update(variations=1, sampling={"mode": "random", "count": count, "seed": seed})
    document.update(changes)
    return expand_spec(parse_spec(document)).column("id").to_pylist()


def test_random_sampling_is_reproducible_distinct_and_grows_stably() -> None:
    everything = expand_spec(parse_spec(base_document())).column("id").to_pylist()
    # 2 genres x (drums: 2 moods x 2 bpm + bass: 2 moods x 2 bpm x 2 keys) = 24 combinations
    assert len(everything) == 24
    drawn = random_ids(10, seed=7)
    assert drawn == random_ids(10, seed=7)
    assert len(set(drawn)) == 10 and set(drawn) <= set(everything)
    assert drawn == [i for i in everything if i in drawn]  # enumeration order kept
    assert set(random_ids(10, seed=8)) != set(drawn)
    assert set(drawn) <= set(random_ids(15, seed=7))  # a larger draw keeps the earlier rows
    assert sorted(random_ids(24, seed=7)) == sorted(everything)
    # the draw does not depend on how ids are spelled
    template = "x_{genre}_{role}_{mood}_{bpm:03d}bpm_{key_short}_{bars:02d}bars_{take:03d}"
    renamed = random_ids(10, seed=7, id_template=template)
    assert [i.removeprefix("x_") for i in renamed] == drawn


def test_random_count_above_the_combinations() -> None:
    document = base_document()
    document["sampling"] = {"mode": "random", "count": 25, "seed": 1}
    message = problems_of(document)
    assert "sampling.count: got 25, but the axes give only 24 combinations" in message


# --- ids -------------------------------------------------------------------------------------


def test_id_collision_names_both_combinations_and_the_missing_field() -> None:
    document = base_document()
    document["id_template"] = "{genre}_{role}_{bpm}bpm_{key_short}"
    message = problems_of(document)
    assert message.startswith("spec t.yaml: ")
    assert "id_template: gives the id 'lofi_drums_90bpm' to both (genre=lofi, role=drums, " \
           "mood=mellow, bpm=90, key=(none), bars=4, take=1) and (genre=lofi, role=drums, " \
           "mood=uplifting" in message
    assert "add {mood} to id_template" in message


def test_takes_need_take_in_the_id() -> None:
    document = base_document()
    document.update(variations=2, id_template="{genre}_{role}_{mood}_{bpm}_{key_short}")
    assert "add {take} to id_template" in problems_of(document)


def test_default_id_template_and_sanitising() -> None:
    document = base_document()
    document["axes"]["role"] = {"Vocal Chop!": "vocal chops", "drums": "drum loop"}
    document["roles_without_key"] = ["drums"]
    ids = expand_spec(parse_spec(document)).column("id").to_pylist()
    assert ids[0] == "lofi_vocal-chop_mellow_090bpm_Amin_04bars_001"
    assert "lofi_drums_mellow_090bpm_04bars_001" in ids
    document["id_template"] = "{name}/{genre} {role}#{mood}_{bpm}/{key}__{take}"
    ids = expand_spec(parse_spec(document)).column("id").to_pylist()
    assert ids[0] == "test-pack-lofi-vocal-chop-mellow_90-A-minor_1"
    assert "test-pack-lofi-drums-mellow_90_1" in ids


def test_helpers() -> None:
    assert key_short("A minor") == "Amin" and key_short("F# major") == "Fsmaj"
    assert key_short("") == ""
    assert slugify("  Lo-Fi Hip Hop ") == "lo-fi-hip-hop" and slugify("Café") == "cafe"
    assert sanitize_id("_house__drums__02bars-") == "house_drums_02bars"
    assert sanitize_id("a--b-_c") == "a-b_c"
    assert render_seconds(4, 4, 120, 0.05, 2.0) == 10.05  # exact: no float round-up to 10.06
    assert render_seconds(4, 4, 90, 0.0, 0.0) == 10.67  # 10.666.. rounds up
    assert render_seconds(2, 6, 120, 0.0, 0.0) == 6.0


# --- musical fields --------------------------------------------------------------------------


def test_bpm_range_key_grid_and_flats() -> None:
    document = base_document()
    document["axes"].update(bpm={"from": 80, "to": 100, "step": 10},
                            key={"tonics": ["Bb", "a"], "modes": ["min", "major"]})
    document["axes"]["role"] = ["bass"]
    document.pop("roles_without_key")
    rows = expand_spec(parse_spec(document)).to_pylist()
    assert sorted({row["bpm"] for row in rows}) == [80, 90, 100]
    assert [row["key"] for row in rows[:4]] == ["A# minor", "A# major", "A minor", "A major"]
    assert rows[0]["id"] == "lofi_bass_mellow_080bpm_Asmin_04bars_001"


def test_all_tonics_give_24_keys() -> None:
    document = base_document()
    document["axes"]["key"] = {"tonics": "all", "modes": ["minor", "major"]}
    document["axes"]["role"] = ["bass"]
    document.pop("roles_without_key")
    rows = expand_spec(parse_spec(document)).to_pylist()
    assert len({row["key"] for row in rows}) == 24


def test_time_signature_sets_beats_per_bar_and_duration() -> None:
    document = base_document()
    document.update(time_signature="6/8", render={"margin_s": 1.0, "crossfade_s": 0.0})
    row = expand_spec(parse_spec(document)).to_pylist()[0]
    assert (row["time_signature"], row["beats_per_bar"]) == ("6/8", 6)
    assert row["duration"] == 17.0  # 4 bars x 6 x 60 / 90 = 16 s + 1 s margin


def test_fractional_tempo() -> None:
    document = base_document()
    document["axes"]["bpm"] = [87.5]
    table = expand_spec(parse_spec(document))
    assert table.schema.field("bpm").type == pa.float64()
    assert table.column("id")[0].as_py() == "lofi_drums_mellow_87.5bpm_04bars_001"
    document["id_template"] = "{genre}_{role}_{mood}_{bpm:03d}_{key_short}_{take}"
    assert "{bpm:03d} needs whole tempos" in problems_of(document)


def test_overrides_give_tempos_per_label() -> None:
    document = base_document()
    del document["axes"]["bpm"]
    document["overrides"] = {"genre": {"lofi": {"bpm": [80]}, "house": {"bpm": [124, 126]}}}
    rows = expand_spec(parse_spec(document)).to_pylist()
    assert {row["bpm"] for row in rows if row["genre"] == "lofi"} == {80}
    assert {row["bpm"] for row in rows if row["genre"] == "house"} == {124, 126}
    del document["overrides"]["genre"]["house"]
    message = problems_of(document)
    assert "axes.bpm: missing; give axes.bpm" in message
    assert "overrides.genre lacks it for: house" in message


# --- errors ----------------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    document = base_document()
    document["variatons"] = 3
    message = problems_of(document)
    assert "  - variatons: unknown key (did you mean 'variations'?)" in message


def test_bad_bpm_names_the_path() -> None:
    document = base_document()
    document["axes"]["bpm"] = [90, "fast", 1000]
    message = problems_of(document)
    assert message.startswith("spec t.yaml: 2 problems")
    assert "axes.bpm[1]: got 'fast'; expected a tempo in BPM from 20 to 400" in message
    assert "axes.bpm[2]: got 1000;" in message
    document["axes"]["bpm"] = {"from": 100, "to": 80}
    assert "axes.bpm: got from 100 to 80 step 1; expected from <= to" in problems_of(document)


def test_bad_key_names_the_path() -> None:
    document = base_document()
    document["axes"]["key"] = ["H minor", "A minor", "a min"]
    message = problems_of(document)
    assert "axes.key[0]: got 'H minor'; expected a key such as 'A minor'" in message
    assert "axes.key[2]: 'a min' is the key 'A minor' again; remove one" in message


def test_duration_out_of_range_names_the_combination() -> None:
    document = base_document()
    document["axes"]["bars"] = [64]
    document["axes"]["bpm"] = [20]
    message = problems_of(document)
    # 64 x 4 x 60 / 20 = 768 s
    assert ("axes: (genre=lofi, role=drums, mood=mellow, bpm=20, key=(none), bars=64) "
            "renders 770.05 s, above the engine's maximum of 240 s") in message
    document["axes"].update(bars=[1], bpm=[400])
    document["render"] = {"margin_s": 0, "crossfade_s": 0}
    assert "renders 0.6 s, below the engine's minimum of 1 s" in problems_of(document)


def test_many_problems_reported_at_once() -> None:
    document = base_document()
    document["axes"]["mood"] = []
    document["axes"]["bars"] = [0]
    document["variations"] = 0
    document["generation"] = {"seed": 3, "steps": 0, "stepz": 3}
    document["prompt_template"] = "{genre}, {tempo}"
    document["axes"]["steps"] = ["a"]
    message = problems_of(document)
    for expected in (
        "axes.mood: expected at least one label",
        "axes.bars[0]: got 0; expected a whole number of bars from 1 to 64",
        "variations: got 0; expected takes per combination",
        "generation.seed: set by the spec itself (seeds are derived from each row's id",
        "generation.steps: got 0; expected a whole number of diffusion steps from 1 to 1000",
        "generation.stepz: unknown manifest column (did you mean 'steps'?)",
        "prompt_template: unknown field {tempo}",
        "axes.steps: an axis cannot be named after the manifest column 'steps'",
    ):
        assert expected in message, expected


def test_reserved_axis_names_and_keyless_without_role() -> None:
    document = base_document()
    document["axes"]["status"] = ["a"]
    document["axes"]["take"] = ["b"]
    document["axes"]["role2"] = document["axes"].pop("role")
    message = problems_of(document)
    assert "axes.status: an axis cannot be named after 'status'" in message
    assert "axes.take: an axis cannot be named after the column 'take'" in message
    assert "roles_without_key: needs an axis named role" in message


def test_generation_rules_across_columns_are_checked() -> None:
    document = base_document()
    document["generation"] = {"lora_weight": 0.5}
    message = problems_of(document)
    assert "(manifest): the rows this spec gives are not a valid manifest" in message
    assert "lora_weight" in message


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_spec(["a"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(str(bad))
    with pytest.raises(SpecError, match="nothing at"):
        load_spec(str(tmp_path / "missing.yaml"))


def test_load_spec_reads_fsspec_urls() -> None:
    import fsspec

    with fsspec.open("memory://specs/small.yaml", "wb") as handle:
        handle.write(SMALL.read_bytes())
    spec = load_spec("memory://specs/small.yaml")
    assert expand_spec(spec).column("id").to_pylist() == SMALL_IDS


# --- writing and the CLI ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.parquet", "m.jsonl", "m.csv"])
def test_written_manifests_read_back_valid(tmp_path: Path, name: str) -> None:
    table = expand_spec(load_spec(str(SMALL)))
    write_manifest(table, str(tmp_path / "sub" / name))
    outputs = expand_manifest(read_manifest(str(tmp_path / "sub" / name)))
    assert [o.output_id for o in outputs] == SMALL_IDS
    assert [o.request.duration for o in outputs][::6] == [5.93, 5.69]
    with pytest.raises(ValueError, match="expected a name ending in one of"):
        write_manifest(table, str(tmp_path / "m.txt"))


def test_cli_expand_writes_a_manifest_that_validate_accepts(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "starter.parquet"
    result = runner.invoke(app, ["manifest", "expand", str(SMALL), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 rows (6 combinations x up to 2 takes), 1.2 min of audio to render" in result.output
    assert str(out) in result.output
    assert pq.read_table(out).column("id").to_pylist() == SMALL_IDS
    checked = runner.invoke(app, ["manifest", "validate", str(out)])
    assert checked.exit_code == 0, checked.output
    assert "OK, 12 rows -> 12 outputs" in checked.output

    limited = tmp_path / "first.jsonl"
    result = runner.invoke(app, ["manifest", "expand", str(LIBRARY), "-o", str(limited),
                                 "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert read_manifest(str(limited)).num_rows == 5


def test_cli_expand_bad_spec_exits_2(tmp_path: Path) -> None:
    document = copy.deepcopy(small_document())
    document["axes"]["bars"] = ["four"]
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(document), encoding="utf-8")
    out = tmp_path / "m.parquet"
    result = CliRunner().invoke(app, ["manifest", "expand", str(spec), "-o", str(out)])
    assert result.exit_code == 2
    assert "axes.bars[0]: got 'four'; expected a whole number of bars" in result.output
    assert not out.exists()


def test_generation_columns_lyrics_and_format() -> None:
    document = base_document()
    document["generation"] = {"lyrics": "[inst]", "format": "flac", "lora": "my/lora",
                              "lora_weight": 0.8, "use_erg_tag": "no"}
    table = expand_spec(parse_spec(document))
    row = table.to_pylist()[0]
    assert (row["lyrics"], row["format"], row["lora"], row["lora_weight"]) == (
        "[inst]", "flac", "my/lora", 0.8)
    assert row["use_erg_tag"] is False and table.schema.field("use_erg_tag").type == pa.bool_()
    outputs = expand_manifest(table)
    assert outputs[0].format == "flac" and outputs[0].request.lora_weight == 0.8


def test_keyless_role_wins_over_a_key_override() -> None:
    document = base_document()
    document["overrides"] = {"genre": {"house": {"key": ["D minor"]}}}
    rows = expand_spec(parse_spec(document)).to_pylist()
    assert {row["key"] for row in rows if row["genre"] == "house"} == {"", "D minor"}
    assert all(row["key"] == "" for row in rows if row["role"] == "drums")
    document["overrides"] = {"role": {"drums": {"key": ["D minor"]}}}
    assert "roles_without_key[0]: overrides.role.drums.key gives this role keys" in \
        problems_of(document)


def test_bad_time_signature_and_template_field_axis_names() -> None:
    document = base_document()
    document["time_signature"] = "4/5"
    document["axes"]["name"] = ["x"]
    message = problems_of(document)
    assert "time_signature: got '4/5'; expected a quoted time signature" in message
    assert "axes.name: an axis cannot be named after the template field {name}" in message
