"""Storage against a real local directory and a real S3 API (moto server over HTTP)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acestep_batch.storage import Storage, is_temp_name, parse_storage_options

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "out"))
    bucket = request.getfixturevalue("s3_bucket")
    options = request.getfixturevalue("s3_storage_options")
    return Storage(f"{bucket}/run1", options)


def test_write_read_exists(storage: Storage) -> None:
    assert not storage.exists("audio/a.wav")
    storage.write_bytes("audio/a.wav", b"\x00\x01RIFF")
    storage.write_text("meta/info.json", '{"ok": true} ✓')
    assert storage.exists("audio/a.wav")
    assert storage.read_bytes("audio/a.wav") == b"\x00\x01RIFF"
    assert storage.read_text("meta/info.json") == '{"ok": true} ✓'
    storage.write_bytes("audio/a.wav", b"new")  # overwrite
    assert storage.read_bytes("audio/a.wav") == b"new"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("audio/missing.wav")


def test_writes_land_under_the_root(storage: Storage) -> None:
    storage.write_bytes("x/y.bin", b"123")
    assert storage.fs.cat_file(storage.root + "/x/y.bin") == b"123"
    assert storage.path("x", "y.bin") == storage.root + "/x/y.bin"


def test_list(storage: Storage) -> None:
    assert storage.list("audio") == []
    for name in ["b.wav", "a.wav", "c.flac"]:
        storage.write_bytes(f"audio/{name}", name.encode())
    storage.write_bytes("audio/sub/deep.wav", b"deep")
    assert storage.list("audio") == ["a.wav", "b.wav", "c.flac", "sub"]
    assert storage.list("audio", suffix=".wav") == ["a.wav", "b.wav"]
    assert storage.list("audio/sub") == ["deep.wav"]
    assert storage.list("") == ["audio"]
    assert storage.list("audio/a.wav") == []  # a file is not a directory


def test_delete(storage: Storage) -> None:
    storage.write_bytes("d/one.txt", b"1")
    storage.write_bytes("d/two.txt", b"2")
    storage.delete("d/one.txt")
    assert not storage.exists("d/one.txt")
    assert storage.list("d") == ["two.txt"]
    storage.delete("d/one.txt")  # missing: no-op
    storage.write_bytes("tree/a/b.txt", b"b")
    storage.delete("tree")
    assert not storage.exists("tree/a/b.txt")
    assert storage.list("tree") == []
    with pytest.raises(ValueError):
        storage.delete("")


def test_paths_cannot_escape_root(storage: Storage) -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        storage.write_bytes("../escape.txt", b"x")


def test_pickle_round_trip(storage: Storage) -> None:
    storage.write_bytes("p/before.txt", b"before")  # connects: the fs is cached now
    payload = pickle.dumps(storage)
    assert b"S3FileSystem" not in payload and b"LocalFileSystem" not in payload  # no live client
    clone = pickle.loads(payload)
    assert clone == storage
    assert clone.read_bytes("p/before.txt") == b"before"
    clone.write_bytes("p/after.txt", b"after")
    assert storage.read_bytes("p/after.txt") == b"after"
    assert storage.list("p") == ["after.txt", "before.txt"]


def test_concurrent_writers(storage: Storage) -> None:
    """Many writers at once (as Ray workers do), each through its own unpickled copy."""
    payloads = {f"c/{i:03d}.bin": os.urandom(1000 + i) for i in range(24)}

    def write(item: tuple[str, bytes]) -> None:
        pickle.loads(pickle.dumps(storage)).write_bytes(*item)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, payloads.items()))
    assert storage.list("c") == sorted(name.split("/")[1] for name in payloads)
    for name, data in payloads.items():
        assert storage.read_bytes(name) == data


def test_repr_hides_credentials() -> None:
    storage = Storage("s3://bkt/prefix", {"key": "AKIA-SECRET", "secret": "hush"})
    assert "hush" not in repr(storage) and "AKIA" not in repr(storage)
    assert "s3://bkt/prefix" in repr(storage)


def _table(start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "audio_uri": [f"audio/{i}.wav" for i in range(start, start + n)],
            "peak_dbfs": pa.array([-6.02] * n, pa.float64()),
        }
    )


def test_parquet_round_trip(storage: Storage) -> None:
    assert storage.read_parquet_dir("meta") is None
    storage.write_parquet("meta/part-00001.parquet", _table(10, 3))
    storage.write_parquet("meta/part-00000.parquet", _table(0, 2))
    # A later shard with an extra column and a narrower int type: schemas are promoted.
    extra = pa.table({"id": pa.array([20], pa.int32()), "error": ["boom"]})
    storage.write_parquet("meta/part-00002.parquet", extra)
    storage.write_text("meta/_SUCCESS.json", "{}")  # not parquet: ignored
    storage.write_parquet("meta/nested/part-9.parquet", _table(99, 1))  # not direct: ignored

    table = storage.read_parquet_dir("meta")
    assert table is not None
    assert table.column("id").to_pylist() == [0, 1, 10, 11, 12, 20]
    assert table.schema.field("id").type == pa.int64()
    assert table.column("error").to_pylist() == [None] * 5 + ["boom"]
    assert table.column("audio_uri").to_pylist()[:2] == ["audio/0.wav", "audio/1.wav"]

    # The stored bytes are a real Parquet file, readable through the pyarrow filesystem.
    path = storage.path("meta/part-00001.parquet")
    with storage.pyarrow_filesystem().open_input_file(path) as handle:
        # single-threaded: see storage.read_parquet_bytes for why threads + Python files abort at exit
        direct = pq.ParquetFile(handle).read(use_threads=False)
    assert direct.equals(_table(10, 3))


def test_url_local(tmp_path: Path) -> None:
    plain = Storage(str(tmp_path / "out"))
    assert plain.is_local
    assert plain.url("audio", "x.wav") == str(tmp_path / "out" / "audio" / "x.wav")
    assert plain.url() == str(tmp_path / "out")
    relative = Storage("out-dir")
    assert relative.url("a.txt") == os.path.join(os.getcwd(), "out-dir", "a.txt")
    file_uri = Storage(f"file://{tmp_path}/out/")
    assert file_uri.is_local
    assert file_uri.url("audio/x.wav") == f"file://{tmp_path}/out/audio/x.wav"


def test_url_remote() -> None:
    s3 = Storage("s3://bucket/prefix/", {"key": "k", "secret": "s"})
    assert not s3.is_local
    assert s3.root == "bucket/prefix"
    assert s3.url("audio", "x.wav") == "s3://bucket/prefix/audio/x.wav"
    assert s3.url("audio/x.wav") == "s3://bucket/prefix/audio/x.wav"
    assert s3.url() == "s3://bucket/prefix"
    assert Storage("s3://bucket").url("m.parquet") == "s3://bucket/m.parquet"
    assert Storage("memory://scratch/run").url("a/b") == "memory:///scratch/run/a/b"


def test_url_round_trips_to_the_object(s3_bucket: str, s3_storage_options: dict) -> None:
    import fsspec

    storage = Storage(f"{s3_bucket}/pre", s3_storage_options)
    storage.write_bytes("audio/x.wav", b"payload")
    with fsspec.open(storage.url("audio/x.wav"), "rb", **s3_storage_options) as fh:
        assert fh.read() == b"payload"


def test_memory_backend() -> None:
    storage = Storage("memory://acestep-test-memory/run")
    try:
        storage.write_bytes("a/b.txt", b"x")
        assert storage.list("a") == ["b.txt"] and storage.read_bytes("a/b.txt") == b"x"
        storage.write_parquet("m/p.parquet", _table(0, 2))
        assert storage.read_parquet_dir("m").num_rows == 2  # type: ignore[union-attr]
    finally:
        storage.delete("a")
        storage.delete("m")


# --- atomicity (local) --------------------------------------------------------------------


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("simulated crash before the rename")


def test_failed_local_write_leaves_no_final_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes("audio/keep.wav", b"old complete file")
    monkeypatch.setattr(os, "replace", _boom)  # fault injection after the temp file is written
    with pytest.raises(RuntimeError, match="simulated crash"):
        storage.write_bytes("audio/new.wav", b"half")
    with pytest.raises(RuntimeError):
        storage.write_bytes("audio/keep.wav", b"replacement")
    monkeypatch.undo()
    assert not storage.exists("audio/new.wav")
    assert storage.read_bytes("audio/keep.wav") == b"old complete file"
    assert sorted(os.listdir(tmp_path / "audio")) == ["keep.wav"]  # temp files cleaned up


def test_hard_crash_leaves_only_an_ignored_temp_file(tmp_path: Path) -> None:
    """A process killed between writing the temp file and the rename (no cleanup runs)."""
    script = textwrap.dedent(
        f"""
        import os
        from acestep_batch.storage import Storage
        storage = Storage({str(tmp_path)!r})
        storage.write_bytes("audio/keep.wav", b"old")
        os.replace = lambda *a, **k: os._exit(17)
        storage.write_bytes("audio/new.wav", b"never visible")
        storage.write_bytes("audio/keep.wav", b"never visible")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 17

    on_disk = sorted(os.listdir(tmp_path / "audio"))
    temps = [n for n in on_disk if n != "keep.wav"]
    assert len(temps) == 1 and temps[0].startswith("new.wav.tmp-") and is_temp_name(temps[0])
    assert (tmp_path / "audio" / temps[0]).read_bytes() == b"never visible"  # really written

    storage = Storage(str(tmp_path))
    assert not storage.exists("audio/new.wav")
    assert storage.list("audio") == ["keep.wav"]
    assert storage.read_bytes("audio/keep.wav") == b"old"
    assert storage.read_parquet_dir("audio") is None


def test_local_write_uses_temp_in_same_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    Storage(str(tmp_path)).write_bytes("a/b/c.bin", b"data")
    [(src, dst)] = seen
    assert dst == str(tmp_path / "a" / "b" / "c.bin")
    assert os.path.dirname(src) == os.path.dirname(dst) and is_temp_name(os.path.basename(src))
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"data"


def test_temp_name_pattern() -> None:
    assert is_temp_name("x.wav.tmp-" + "0" * 32)
    assert not is_temp_name("x.wav")
    assert not is_temp_name("x.tmp-notahexuuid")


# --- parse_storage_options ------------------------------------------------------------------


def test_parse_storage_options() -> None:
    text = '{"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}'
    assert parse_storage_options(text) == {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
    }
    assert parse_storage_options(None) == {}
    assert parse_storage_options("  ") == {}
    assert parse_storage_options("{}") == {}


@pytest.mark.parametrize("text", ["{key: 1}", "{'key': 'k'}", '{"a": 1', "nope"])
def test_parse_storage_options_bad_json(text: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_storage_options(text)


@pytest.mark.parametrize("text", ["[1, 2]", '"s3"', "42", "null", "true"])
def test_parse_storage_options_not_an_object(text: str) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        parse_storage_options(text)
