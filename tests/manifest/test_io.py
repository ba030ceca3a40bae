"""Reading manifests: formats, folders, fsspec URLs, and one clear problem per unreadable file."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acestep_batch.manifest import (
    ManifestError,
    expand_manifest,
    load_manifest,
    manifest_sha256,
    read_manifest,
    validate_manifest,
)


def single_problem(uri: str) -> str:
    with pytest.raises(ManifestError) as caught:
        read_manifest(uri)
    assert len(caught.value.problems) == 1, str(caught.value)
    assert str(caught.value).startswith(f"manifest {uri}: 1 problem")
    return str(caught.value.problems[0])


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_parquet_round_trip(tmp_path: Path) -> None:
    table = pa.table({"prompt": ["a", "b"], "duration": [3.0, None], "bpm": [120, 90]})
    pq.write_table(table, tmp_path / "m.parquet")
    pq.write_table(table, tmp_path / "m.pq")
    for name in ("m.parquet", "m.pq"):
        read = read_manifest(str(tmp_path / name))
        assert read.column_names == ["prompt", "duration", "bpm"]
        assert read.to_pylist() == table.to_pylist()


def test_garbage_with_parquet_extension(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    message = single_problem(str(path))
    assert message.startswith(f"file {str(path)!r}: expected a readable Parquet file")
    assert "extension matches its contents" in message


def test_missing_file(tmp_path: Path) -> None:
    uri = str(tmp_path / "nope.parquet")
    message = single_problem(uri)
    assert uri in message and "nothing is there" in message


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "prompts.txt", "prompt\na\n")
    assert "ending in one of .parquet" in single_problem(str(path))


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("empty.csv", "", "the file is empty"),
        ("header.csv", "prompt,duration\n", "the manifest is empty"),
        ("blank.jsonl", "\n\n", "the manifest is empty"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', "line 2 is not valid JSON"),
        ("list.jsonl", '{"prompt": "a"}\n["b"]\n', "line 2 is a JSON list, not an object"),
        ("ragged.csv", "prompt,duration\na,3,4\n", "same number of fields"),
    ],
)
def test_unreadable_text_files(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    assert fragment in single_problem(str(write(tmp_path / name, text)))


def test_csv_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("prompt\ncaf\xe9 jazz\n".encode("latin-1"))
    assert "save the file as UTF-8" in single_problem(str(path))


def test_csv_reading(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.csv",
        "\ufeffid,prompt,lyrics,duration,use_erg_tag,use_erg_lyric,oss_steps,bpm,genre\n"
        '001,"piano, soft","[verse]\nline one\nline two",3,yes,0,16,120,NA\n'
        "002,7,,,FALSE,1,,90,\n",
    )
    table = read_manifest(str(path))
    assert table.column_names[0] == "id"  # the byte-order mark is not part of the name
    specs = expand_manifest(table)
    first, second = specs
    assert (first.output_id, second.output_id) == ("001", "002")  # ids stay text
    assert first.request.prompt == "piano, soft"
    assert first.request.lyrics == "[verse]\nline one\nline two"
    assert first.request.use_erg_tag is True and first.request.use_erg_lyric is False
    assert first.request.oss_steps == "16"
    assert second.request.prompt == "7"  # CSV has no numbers-vs-text distinction
    assert second.request.lyrics == "" and second.request.duration == 30.0
    assert second.request.use_erg_tag is False and second.request.use_erg_lyric is True
    assert first.extra == {"bpm": 120, "genre": "NA"} and second.extra == {"bpm": 90, "genre": None}


def test_csv_bad_cell_is_reported_by_row(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "prompt,duration\na,3\nb,abc\nc,1000\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(str(path))
    assert [str(problem) for problem in caught.value.problems] == [
        "row 2, column 'duration': got 'abc'; expected seconds from 1 to 240",
        "row 3, column 'duration': got '1000'; expected seconds from 1 to 240",
    ]


def test_jsonl_reading(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl",
        '{"prompt": "a", "use_erg_tag": "no", "use_erg_diffusion": 0, "tags": ["x", "y"]}\n'
        "\n"
        '{"prompt": "b", "id": "b1", "duration": 4, "use_erg_tag": true, "meta": {"k": 1}}\n',
    )
    specs = expand_manifest(read_manifest(str(path)))
    assert specs[0].request.use_erg_tag is False and specs[0].request.use_erg_diffusion is False
    assert specs[1].request.use_erg_tag is True and specs[1].request.duration == 4.0
    assert specs[0].extra == {"tags": ["x", "y"], "meta": None}
    assert specs[1].extra == {"tags": None, "meta": {"k": 1}}
    assert specs[1].row == 2  # rows count records, not lines


def test_jsonl_mixed_types_are_reported_by_row(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl", '{"prompt": "a", "duration": 3}\n{"prompt": "b", "duration": "abc"}\n'
    )
    found = validate_manifest(read_manifest(str(path)))
    assert [str(problem) for problem in found] == [
        "row 2, column 'duration': got 'abc'; expected seconds from 1 to 240"
    ]


def test_json_array_file(tmp_path: Path) -> None:
    path = write(tmp_path / "m.json", '[{"prompt": "a"}, {"prompt": "b", "seed": 7}]')
    assert [spec.request.prompt for spec in expand_manifest(read_manifest(str(path)))] == ["a", "b"]


def test_folder_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["c"], "duration": [3.0]}), folder / "part-1.parquet")
    pq.write_table(pa.table({"prompt": ["a", "b"], "bpm": [120, 121]}), folder / "part-0.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-0.parquet.crc").write_bytes(b"junk")
    table = read_manifest(str(folder))
    assert table.column("prompt").to_pylist() == ["a", "b", "c"]  # sorted by file name
    assert table.column("bpm").to_pylist() == [120, 121, None]  # schemas unified
    assert table.column("duration").to_pylist() == [None, None, 3.0]
    assert [spec.row for spec in expand_manifest(table)] == [1, 2, 3]


def test_folder_problems_name_the_file_and_its_row(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    write(folder / "a.csv", "prompt,duration\nx,3\ny,4\n")
    write(folder / "b.csv", "prompt,duration\nz,5\nw,0\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(str(folder))
    assert str(caught.value.problems[0]) == (
        "row 4 (row 2 of 'b.csv'), column 'duration': got 0; expected seconds from 1 to 240"
    )


def test_folder_with_mixed_parquet_types(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["a"], "duration": [3]}), folder / "a.parquet")
    pq.write_table(pa.table({"prompt": ["b"], "duration": ["3"]}), folder / "b.parquet")
    message = single_problem(str(folder))
    assert "column 'duration' is int64 in 'a.parquet' and string in 'b.parquet'" in message


def test_folder_of_text_files_keeps_conflicting_columns_as_text(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    write(folder / "a.csv", "prompt,use_erg_tag,bpm\nx,true,120\n")
    write(folder / "b.csv", "prompt,use_erg_tag,bpm\ny,yes,fast\n")
    specs = expand_manifest(read_manifest(str(folder)))
    assert [spec.request.use_erg_tag for spec in specs] == [True, True]
    assert [spec.extra["bpm"] for spec in specs] == ["120", "fast"]


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({}, "has none"),
        ({"notes.txt": "hi"}, "also holds 'notes.txt'"),
        ({"a.csv": "prompt\nx\n", "b.jsonl": '{"prompt": "y"}\n'}, "mixes CSV and JSON Lines"),
        ({"a.csv": "", "b.csv": ""}, "every file in the folder is empty"),
    ],
)
def test_folder_problems(tmp_path: Path, files: dict[str, str], fragment: str) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, text in files.items():
        write(folder / name, text)
    assert fragment in single_problem(str(folder))


def test_empty_parts_in_a_folder_are_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    write(folder / "a.csv", "")
    write(folder / "b.csv", "prompt\nx\n")
    assert read_manifest(str(folder)).num_rows == 1


def test_fsspec_memory_url() -> None:
    root = f"memory://manifests-{uuid.uuid4().hex}"
    with fsspec.open(f"{root}/one.jsonl", "w") as handle:
        handle.write('{"prompt": "a", "id": "m1"}\n')
    with fsspec.open(f"{root}/folder/a.csv", "w") as handle:
        handle.write("prompt,id\nb,m2\n")
    with fsspec.open(f"{root}/folder/b.csv", "w") as handle:
        handle.write("prompt,id\nc,m3\n")
    _, specs = load_manifest(f"{root}/one.jsonl")
    assert [spec.output_id for spec in specs] == ["m1"]
    _, specs = load_manifest(f"{root}/folder", storage_options={})
    assert [spec.output_id for spec in specs] == ["m2", "m3"]
    assert "nothing is there" in single_problem(f"{root}/missing.parquet")


def test_unknown_url_scheme() -> None:
    assert "fsspec URL" in single_problem("nosuchscheme://bucket/m.parquet")


def test_pandas_index_column_is_dropped(tmp_path: Path) -> None:
    frame = pd.DataFrame({"prompt": ["a", "b", "c"], "bpm": [1, 2, 3]}).iloc[[2, 0]]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=True), tmp_path / "m.parquet")
    assert "__index_level_0__" in pq.read_table(tmp_path / "m.parquet").column_names
    table = read_manifest(str(tmp_path / "m.parquet"))
    assert table.column_names == ["prompt", "bpm"]
    assert validate_manifest(table) == []


def test_parquet_folder_with_categorical_and_plain_text(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    frame = pd.DataFrame({"prompt": ["a", "b"], "genre": pd.Categorical(["rock", "pop"])})
    frame.to_parquet(folder / "a.parquet", index=False)
    pq.write_table(pa.table({"prompt": ["c"], "genre": ["jazz"]}), folder / "b.parquet")
    specs = expand_manifest(read_manifest(str(folder)))
    assert [spec.extra["genre"] for spec in specs] == ["rock", "pop", "jazz"]


def test_pandas_ints_with_gaps_read_as_floats_are_fine(tmp_path: Path) -> None:
    frame = pd.DataFrame({"prompt": ["a", "b"], "steps": [5, None], "seed": [3, None]})
    frame.to_parquet(tmp_path / "m.parquet", index=False)
    specs = expand_manifest(read_manifest(str(tmp_path / "m.parquet")))
    assert specs[0].request.steps == 5 and isinstance(specs[0].request.steps, int)
    assert specs[0].request.seed == 3 and specs[1].request.steps == 60


def test_manifest_sha256_is_a_content_hash(tmp_path: Path) -> None:
    table = pa.table({"prompt": ["a", "b", "c"], "duration": [3.0, None, 4.5]})
    digest = manifest_sha256(table)
    assert digest == "49cb68508ec8244d0a0a6d2a0c50f8e790d95e8ad4bec26280d2576149187a52"
    rechunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 0), table.slice(1)])
    assert rechunked.column(0).num_chunks > 1
    assert manifest_sha256(rechunked) == digest
    assert manifest_sha256(table.replace_schema_metadata({b"k": b"v"})) == digest
    pq.write_table(table, tmp_path / "m.parquet")
    assert manifest_sha256(read_manifest(str(tmp_path / "m.parquet"))) == digest
    wider_types = table.cast(pa.schema([("prompt", pa.large_string()), ("duration", pa.float32())]))
    assert manifest_sha256(wider_types) == digest
    changed = table.set_column(1, "duration", pa.array([3.0, None, 4.0]))
    assert manifest_sha256(changed) != digest
    renamed = table.rename_columns(["prompt", "seconds"])
    assert manifest_sha256(renamed) != digest
