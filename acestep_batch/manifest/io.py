"""Reading manifests: one Parquet / JSON Lines / CSV file, or a folder of them, from any fsspec URL.

Reading only turns files into one Arrow table; judging the cells is `validate`'s job. So text
formats keep whatever they hold (a CSV column with "abc" among numbers stays text) and the
validator reports the bad cells by row, instead of the reader failing on the first one.
A file that cannot be read at all is one `ManifestError` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv

from acestep_batch.storage import read_parquet_bytes
from acestep_batch.manifest.schema import METADATA_FILES, METADATA_URI, TEXT_COLUMNS
from acestep_batch.manifest.validate import NO_VALUE, ManifestError, ManifestProblem

FORMAT_BY_SUFFIX: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
_SUFFIX_LIST = ", ".join(FORMAT_BY_SUFFIX)
_FORMAT_TITLES = {"parquet": "Parquet", "jsonl": "JSON Lines", "csv": "CSV"}


@dataclass(frozen=True)
class _ManifestFile:
    path: str  # as the filesystem names it
    name: str  # the URI for a single file, the file name inside a folder
    format: str
    size: int | None


def _fail(uri: str, expected: str, file: str | None = None) -> ManifestError:
    return ManifestError(
        [ManifestProblem(None, None, None, NO_VALUE, expected, file=file)], uri=uri
    )


def read_manifest(uri: str, storage_options: dict | None = None) -> pa.Table:
    """Read a manifest file or folder (local path or fsspec URL) into one Arrow table.

    A folder's files are read in name order and concatenated; the table's schema metadata
    records the URI and each file's row count so that problems can name file and row.
    """
    try:
        fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ImportError, ValueError) as error:
        raise _fail(
            uri,
            f"a local path or an fsspec URL this machine can open, but opening it failed "
            f"({error}); install the filesystem's package (e.g. s3fs, gcsfs) or fix the URL",
        ) from error
    files = _manifest_files(fs, root, uri)
    tables = [_read_file(fs, file, uri) for file in files]
    table = tables[0] if len(tables) == 1 else _concatenate(files, tables, uri)
    if table.num_rows == 0:
        raise _fail(uri, "at least one row, but the manifest is empty; add one row per prompt")
    table = _drop_pandas_index(table)
    counts = [[file.name, part.num_rows] for file, part in zip(files, tables, strict=True)]
    metadata = {
        METADATA_URI: uri.encode("utf-8"),
        METADATA_FILES: json.dumps(counts, ensure_ascii=False).encode("utf-8"),
    }
    return table.replace_schema_metadata(metadata)


def _manifest_files(fs: Any, root: str, uri: str) -> list[_ManifestFile]:
    try:
        info = fs.info(root)
    except FileNotFoundError as error:
        raise _fail(
            uri,
            "an existing manifest file or folder, but nothing is there; check the path "
            "(for object stores also the bucket, prefix and credentials)",
            file=uri,
        ) from error
    except Exception as error:  # permissions, credentials, network: report, do not crash
        raise _fail(
            uri, f"a readable manifest file or folder, but looking it up failed: {error}", file=uri
        ) from error

    if info.get("type") != "directory":
        file_format = _format_of(root)
        if file_format is None:
            raise _fail(
                uri,
                f"a manifest file ending in one of {_SUFFIX_LIST}, but this file's name does not; "
                "rename it to match its contents or convert it",
                file=uri,
            )
        return [_ManifestFile(root, uri, file_format, info.get("size"))]
    return _folder_files(fs, root, uri)


def _format_of(path: str) -> str | None:
    name = posixpath.basename(path.rstrip("/")).lower()
    for suffix, file_format in FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return file_format
    return None


def _folder_files(fs: Any, root: str, uri: str) -> list[_ManifestFile]:
    """The folder's manifest files in name order; hidden and `_`-prefixed entries are skipped
    (Spark and Dask write _SUCCESS, _metadata and .crc files next to their parts)."""
    try:
        entries = fs.ls(root, detail=True)
    except Exception as error:
        raise _fail(uri, f"a readable folder, but listing it failed: {error}") from error
    files: list[_ManifestFile] = []
    strays: list[str] = []
    for entry in sorted(entries, key=lambda item: item["name"]):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if not name or name.startswith((".", "_")):
            continue
        file_format = _format_of(name)
        if entry.get("type") == "directory" or file_format is None:
            strays.append(name + ("/" if entry.get("type") == "directory" else ""))
            continue
        files.append(_ManifestFile(entry["name"], name, file_format, entry.get("size")))
    if strays:
        raise _fail(
            uri,
            "a folder holding only manifest files ("
            + _SUFFIX_LIST
            + "), but it also holds "
            + ", ".join(repr(name) for name in strays)
            + "; move those out (subfolders are not read)",
        )
    if not files:
        raise _fail(
            uri, f"a folder with at least one manifest file ({_SUFFIX_LIST}), but it has none"
        )
    formats = sorted({file.format for file in files})
    if len(formats) > 1:
        titles = " and ".join(_FORMAT_TITLES[name] for name in formats)
        raise _fail(
            uri,
            f"one file format per manifest folder, but this folder mixes {titles}; "
            "convert them to one format",
        )
    # Empty parts are common in distributed writers; they add no rows.
    non_empty = [file for file in files if file.size != 0]
    if not non_empty:
        raise _fail(uri, "at least one row, but every file in the folder is empty")
    return non_empty


def _read_file(fs: Any, file: _ManifestFile, uri: str) -> pa.Table:
    title = _FORMAT_TITLES[file.format]
    try:
        with fs.open(file.path, "rb") as handle:
            data = handle.read()
        if file.format == "parquet":
            return _decode_dictionaries(read_parquet_bytes(data))
    except Exception as error:
        raise _fail(
            uri,
            f"a readable {title} file, but reading it failed ({error}); check that the file is "
            "complete and that its extension matches its contents",
            file=file.name,
        ) from error
    if file.format == "csv":
        return _parse_csv(data, file, uri)
    return _parse_json_lines(data, file, uri)


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    """pandas categoricals arrive dictionary-encoded; plain values combine across files."""
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            plain = table.column(index).cast(field.type.value_type)
            table = table.set_column(index, field.name, plain)
    return table


def _parse_csv(data: bytes, file: _ManifestFile, uri: str) -> pa.Table:
    if not data.strip():
        raise _fail(uri, "a CSV file with a header row, but the file is empty", file=file.name)
    _require_utf8(data, file, uri)
    options = pacsv.ConvertOptions(
        # Text columns stay text: id "001" must not become 1, oss_steps "16" must stay a list.
        column_types={name: pa.string() for name in TEXT_COLUMNS},
        strings_can_be_null=True,
        null_values=[""],  # only blank cells are null: "NA" may be a real genre or key
        quoted_strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),  # multi-line lyrics
            convert_options=options,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise _fail(
            uri,
            f"a comma-separated file with a header row and the same number of fields on every "
            f"line, but parsing failed ({error}); quote fields that contain commas, quotes or "
            "line breaks",
            file=file.name,
        ) from error
    return table


def _require_utf8(data: bytes, file: _ManifestFile, uri: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise _fail(
            uri,
            f"UTF-8 text, but line {line} holds bytes that are not valid UTF-8; save the file "
            "as UTF-8 (in Excel: 'CSV UTF-8')",
            file=file.name,
        ) from error


def _parse_json_lines(data: bytes, file: _ManifestFile, uri: str) -> pa.Table:
    """JSON Lines (one object per line); a JSON array of objects is accepted too."""
    _require_utf8(data, file, uri)
    text = data.decode("utf-8-sig")
    shape = 'one JSON object per line, e.g. {"prompt": "ambient pad", "duration": 10}'
    records: list[tuple[int, Any]] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as error:
            raise _fail(
                uri, f"a JSON array of objects, but it does not parse ({error})", file=file.name
            ) from error
        records = [(index + 1, item) for index, item in enumerate(items)]
        place = "item"
    else:
        place = "line"
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except ValueError as error:
                raise _fail(
                    uri, f"{shape}, but line {number} is not valid JSON ({error})", file=file.name
                ) from error
    for number, record in records:
        if not isinstance(record, dict):
            raise _fail(
                uri,
                f"{shape}, but {place} {number} is a JSON {type(record).__name__}, not an object",
                file=file.name,
            )
    names: dict[str, None] = {}
    for _, record in records:
        names.update(dict.fromkeys(record))
    columns = {name: _json_column([record.get(name) for _, record in records]) for name in names}
    return pa.table(columns) if columns else pa.table({})


def _json_column(values: list[Any]) -> pa.Array:
    """Arrow infers the type; a column mixing types (30 and "abc") is kept as text so that the
    validator can point at the one bad cell."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _as_text(values)


def _as_text(values: list[Any]) -> pa.Array:
    return pa.array(
        [
            value
            if value is None or isinstance(value, str)
            else json.dumps(value, ensure_ascii=False, default=str)
            for value in values
        ],
        pa.string(),
    )


def _concatenate(files: list[_ManifestFile], tables: list[pa.Table], uri: str) -> pa.Table:
    """Union of the files' columns (missing ones are null). Parquet types must agree across
    files; text formats have inferred types, so a disagreement there just means "keep text"."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    conflicts = _conflicting_columns(files, tables)
    if files[0].format == "parquet" or not conflicts:
        if conflicts:
            name, (first_file, first_type), (other_file, other_type) = conflicts[0]
            expected = (
                f"one type per column across the folder's files, but column {name!r} is "
                f"{first_type} in {first_file!r} and {other_type} in {other_file!r}; "
                "write every file with the same schema"
            )
        else:
            expected = "files whose schemas can be combined; write every file with the same schema"
        raise _fail(uri, expected)
    names = {name for name, _, _ in conflicts}
    converted = []
    for table in tables:
        for name in names:
            if name in table.column_names:
                index = table.column_names.index(name)
                table = table.set_column(index, name, _as_text(table.column(index).to_pylist()))
        converted.append(table)
    return pa.concat_tables(converted, promote_options="permissive")


def _conflicting_columns(
    files: list[_ManifestFile], tables: list[pa.Table]
) -> list[tuple[str, tuple[str, pa.DataType], tuple[str, pa.DataType]]]:
    first_seen: dict[str, tuple[str, pa.DataType]] = {}
    conflicts = []
    reported: set[str] = set()
    for file, table in zip(files, tables, strict=True):
        for field in table.schema:
            if pa.types.is_null(field.type):
                continue
            earlier = first_seen.setdefault(field.name, (file.name, field.type))
            if field.name in reported or earlier[1] == field.type:
                continue
            try:
                pa.unify_schemas(
                    [pa.schema([pa.field(field.name, earlier[1])]), pa.schema([field])],
                    promote_options="permissive",
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                conflicts.append((field.name, earlier, (file.name, field.type)))
                reported.add(field.name)
    return conflicts


def _drop_pandas_index(table: pa.Table) -> pa.Table:
    """pandas stores a non-default DataFrame index as `__index_level_N__`: not user data."""
    keep = [name for name in table.column_names if not name.startswith("__index_level_")]
    return table if len(keep) == table.num_columns else table.select(keep)


def manifest_sha256(table: pa.Table) -> str:
    """A content hash of the table: column names and values, in order.

    Independent of chunking, Arrow representation (string vs large_string, int32 vs int64)
    and schema metadata, so the same manifest read twice, or on another machine, hashes the
    same. Values keep their JSON kind, so 3, 3.0, "3" and true still hash differently.
    """
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns, strict=True):
        header = json.dumps({"column": name}, ensure_ascii=False)
        digest.update(header.encode("utf-8") + b"\n")
        separator = b""
        for chunk in column.chunks:
            if len(chunk) == 0:
                continue
            values = json.dumps(
                chunk.to_pylist(), ensure_ascii=False, default=str, separators=(",", ":")
            )
            digest.update(separator + values[1:-1].encode("utf-8"))
            separator = b","
        digest.update(b"\n")
    return digest.hexdigest()
