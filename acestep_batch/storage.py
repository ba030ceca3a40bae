"""Output storage: a local directory or any fsspec URL (s3://, gs://, memory://, file://).

Many Ray workers write into the same output tree at once, and a job can die at any moment, so
every write is atomic: a reader (the resume logic, `status`, a consumer of the dataset) sees
either the complete old file, the complete new one, or nothing - never a torn file.

- Local files are written to "<name>.tmp-<32 hex>" in the same directory, fsynced and renamed
  over the final name (`os.replace` is atomic within one filesystem). A hard crash can leave
  such a temp file behind; `list()` skips them and they never carry a final name.
- Object stores get one put of the whole object; objects become visible atomically.

A `Storage` holds only its URI and options; the fsspec filesystem is created lazily in each
process (it is dropped when pickled), so the object is cheap and safe to ship to Ray workers.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# Temp files of in-flight local writes: "<final name>.tmp-<uuid4 hex>".
_TEMP_RE = re.compile(r"\.tmp-[0-9a-f]{32}$")


def is_temp_name(name: str) -> bool:
    """True for the temp files of in-flight (or crashed) atomic local writes."""
    return bool(_TEMP_RE.search(name))


def read_parquet_bytes(data: bytes) -> pa.Table:
    """Parse a Parquet file held in memory, on the calling thread.

    Arrow's threaded readers can drop the last reference to the Python-owned buffer from a
    worker thread after the call returned; if that happens while the interpreter exits, the
    thread cannot take the GIL and the process aborts. Manifests and metadata are small, so
    reading them single-threaded costs nothing.
    """
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """Parse `--storage-options` (a JSON object) into fsspec keyword arguments.

    Empty or missing text means no options. Anything but a JSON object is a ValueError, so
    a shell-quoting mistake fails at start-up instead of deep inside a Ray worker.
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"storage options are not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(
            f"storage options must be a JSON object like "
            f'{{"key": "...", "client_kwargs": {{"endpoint_url": "..."}}}}, '
            f"got {type(value).__name__}: {text!r}"
        )
    return value


@dataclass
class Storage:
    """Root of an output tree; all paths given to its methods are relative to `uri`."""

    uri: str
    # Often holds credentials: kept out of repr so they do not end up in logs.
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    _fs: Any = field(default=None, init=False, repr=False, compare=False)
    _root: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.uri:
            raise ValueError("storage uri must not be empty")
        self.storage_options = dict(self.storage_options or {})

    # --- pickling: ship only the URI and options; each process builds its own client ------

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.uri = state["uri"]
        self.storage_options = state["storage_options"]
        self._fs = None
        self._root = None

    # --- filesystem -----------------------------------------------------------------------

    @property
    def has_protocol(self) -> bool:
        """True when `uri` names a protocol ("s3://...", "file://..."), False for plain paths."""
        return "://" in self.uri or "::" in self.uri

    def _connect(self) -> None:
        if self.has_protocol:
            fs, root = fsspec.core.url_to_fs(self.uri, **self.storage_options)
            if _is_local_fs(fs):
                root = os.path.abspath(root)
        else:
            fs = fsspec.filesystem("file", **self.storage_options)
            root = os.path.abspath(os.path.expanduser(self.uri))
        root = root.rstrip("/") or "/"
        self._fs, self._root = fs, root

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (created on first use in this process)."""
        if self._fs is None:
            self._connect()
        return self._fs

    @property
    def root(self) -> str:
        """Path of the output tree inside `fs` (no protocol), e.g. "bucket/prefix"."""
        if self._root is None:
            self._connect()
        assert self._root is not None
        return self._root

    @property
    def is_local(self) -> bool:
        return _is_local_fs(self.fs)

    def path(self, *parts: str) -> str:
        """Path of a child inside `fs` (for `fs` / `pyarrow_filesystem()` calls)."""
        rel = _join_relative(parts)
        if not rel:
            return self.root
        return self.root.rstrip("/") + "/" + rel

    def url(self, *parts: str) -> str:
        """Full URI of a child, e.g. "s3://bucket/prefix/audio/x.wav", for metadata.

        Plain local paths stay plain absolute paths; URIs keep their protocol.
        """
        path = self.path(*parts)
        if not self.has_protocol:
            return path
        if self.is_local:
            return "file://" + path
        return self.fs.unstrip_protocol(path)

    # --- bytes ----------------------------------------------------------------------------

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write a whole file atomically, creating parent directories as needed."""
        path = self.path(relpath)
        if path == self.root:
            raise ValueError("write_bytes needs a file path, got the storage root")
        data = bytes(data)
        if self.is_local:
            _atomic_local_write(path, data)
        else:
            # One PUT of the whole object: object stores publish it atomically. No mkdirs:
            # object stores have no directories (and s3fs.makedirs could create a bucket).
            self.fs.pipe_file(path, data)

    def write_text(self, relpath: str, text: str) -> None:
        self.write_bytes(relpath, text.encode("utf-8"))

    def read_bytes(self, relpath: str) -> bytes:
        """Read a whole file; FileNotFoundError if it does not exist."""
        return self.fs.cat_file(self.path(relpath))

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8")

    def exists(self, relpath: str) -> bool:
        """Whether a file (or directory) exists, as seen by the store right now."""
        path = self.path(relpath)
        # Another worker may have written it since this process cached a listing.
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def _entries(self, relpath: str) -> list[tuple[str, str]]:
        """(name, "file" | "directory") of the entries directly under relpath, sorted."""
        path = self.path(relpath)
        self.fs.invalidate_cache(path)
        try:
            infos = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = path.rstrip("/")
        entries: dict[str, str] = {}
        for info in infos:
            name = str(info["name"]).rstrip("/")
            if name == base:  # some stores list a file path (or the dir marker) as itself
                if info.get("type") == "directory":
                    continue
                return []  # relpath is a file, not a directory
            child = posixpath.basename(name)
            if child and not is_temp_name(child):
                entries[child] = str(info.get("type", "file"))
        return sorted(entries.items())

    def list(self, relpath: str = "", suffix: str = "") -> list[str]:
        """Names (files and directories) directly under relpath ending in `suffix`, sorted.

        Missing directory -> []. Temp files of unfinished local writes are never listed.
        """
        return [name for name, _ in self._entries(relpath) if name.endswith(suffix)]

    def delete(self, relpath: str) -> None:
        """Delete a file, or a directory tree; deleting something missing is a no-op."""
        path = self.path(relpath)
        if path == self.root:
            raise ValueError("refusing to delete the storage root")
        self.fs.invalidate_cache(path)
        try:
            if self.fs.isdir(path):
                self.fs.rm(path, recursive=True)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(path)

    # --- parquet --------------------------------------------------------------------------

    def pyarrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem for `self.path(...)` paths (pyarrow/Ray Data reads, writes)."""
        if self.is_local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def write_parquet(self, relpath: str, table: pa.Table) -> None:
        """Write a table as one Parquet file, atomically (serialised in memory first)."""
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.write_bytes(relpath, sink.getvalue())

    def read_parquet_dir(self, relpath: str) -> pa.Table | None:
        """Concatenate every *.parquet file directly under relpath (in name order).

        Schemas are unified permissively (a column missing or all-null in one file, int32 vs
        int64, ...). None when there is no such file.
        """
        names = [
            name
            for name, kind in self._entries(relpath)
            if kind == "file" and name.endswith(".parquet")
        ]
        if not names:
            return None
        tables = [
            read_parquet_bytes(self.read_bytes(posixpath.join(relpath, n)))
            for n in names
        ]
        if len(tables) == 1:
            return tables[0]
        return pa.concat_tables(tables, promote_options="permissive")


def _is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def _join_relative(parts: tuple[str, ...]) -> str:
    """Join path parts into a clean relative posix path; reject escapes from the root."""
    pieces: list[str] = []
    for part in parts:
        for piece in str(part).replace("\\", "/").split("/"):
            if piece in ("", "."):
                continue
            if piece == "..":
                raise ValueError(f"'..' is not allowed in storage paths: {parts!r}")
            pieces.append(piece)
    return "/".join(pieces)


def _atomic_local_write(path: str, data: bytes) -> None:
    """Write to a unique temp file in the target directory, fsync, then rename over `path`."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Persist the rename itself (POSIX); best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
