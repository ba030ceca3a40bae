"""Audio inputs of the edit tasks: source (`src_audio`) and reference (`ref_audio`) audio.

They come from a manifest cell (a local path or any fsspec URL: s3://, gs://, http(s)://,
memory://, file://) or from an HTTP upload. Either way the result is an `AudioClip`: float32
stereo samples at the file's own sample rate. Nothing is resampled here; the engine resamples
to 44.1 kHz the way ACE-Step does, so its numbers match upstream.

Every failure is an `AudioInputError` whose message names the input and says what is wrong
and how to fix it; one bad input fails one row, not the job. `input_uri_allowed` is the check a
server makes before reading a URI a client sent (only inside configured prefixes).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec
import numpy as np
import soundfile as sf

DEFAULT_MAX_BYTES = 512 * 2**20
DEFAULT_MAX_SECONDS = 240.0  # ACE-Step's longest output; longer sources cannot be edited
UPLOAD_PREFIX = "upload:"
DECODABLE = "WAV/FLAC/OGG/MP3"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class AudioInputError(ValueError):
    """An audio input that cannot be used; str() names the input, the problem and the fix."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"audio input {uri!r}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray ships exceptions between processes: rebuild from the parts, not the message.
        return (AudioInputError, (self.uri, self.problem))


@dataclass(frozen=True, eq=False)
class AudioClip:
    """Decoded audio input: `samples` is float32 (2, frames), stereo, at `sample_rate`, not
    resampled. Mono inputs are duplicated to both channels (as ACE-Step does); inputs with
    more than two channels keep the first two."""

    samples: np.ndarray
    sample_rate: int
    uri: str  # where it came from; "upload:<name>" for uploads
    sha256: str  # of the encoded bytes as read
    source_channels: int = 2  # channels in the file, before duplication / truncation
    source_format: str = ""  # libsndfile's name for the container, e.g. "WAV", "FLAC", "MP3"

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def info(self) -> dict[str, Any]:
        """JSON-safe facts for a result's metadata (what went into the render)."""
        return {
            "uri": self.uri,
            "sha256": self.sha256,
            "sample_rate": self.sample_rate,
            "frames": self.frames,
            "seconds": self.seconds,
            "source_channels": self.source_channels,
            "source_format": self.source_format,
        }


def load_audio_input(
    uri: str,
    storage_options: dict | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> AudioClip:
    """Read and decode one audio input from a local path or fsspec URL.

    `storage_options` are passed to the filesystem as is (the job's `--storage-options`, see
    `acestep_batch.storage.parse_storage_options`). The size is checked before reading when
    the filesystem reports it, and the read itself never takes more than `max_bytes + 1`.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise AudioInputError(
            str(uri), "expected a local path or an fsspec URL, but it is empty; set it"
        )
    uri = uri.strip()
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ImportError, ValueError, TypeError) as error:
        raise AudioInputError(
            uri,
            f"cannot open this kind of location ({error}); use a local path or an fsspec URL "
            "whose filesystem package is installed (e.g. s3fs for s3://, gcsfs for gs://)",
        ) from error

    size = _size_if_known(fs, path, uri)
    if size is not None and size > max_bytes:
        raise AudioInputError(uri, _too_large(size, max_bytes))
    try:
        with fs.open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as error:
        raise AudioInputError(uri, _NOT_FOUND) from error
    except IsADirectoryError as error:
        raise AudioInputError(uri, _IS_FOLDER) from error
    except Exception as error:  # permissions, credentials, network: report, do not crash
        raise AudioInputError(uri, _unreadable(error)) from error
    if len(data) > max_bytes:
        raise AudioInputError(uri, _too_large(None, max_bytes))
    return _decode(data, uri, max_seconds)


def decode_audio_bytes(
    data: bytes, name: str, max_seconds: float = DEFAULT_MAX_SECONDS
) -> AudioClip:
    """Decode an uploaded file's bytes; the clip's uri is "upload:<name>"."""
    return _decode(bytes(data), f"{UPLOAD_PREFIX}{name}", max_seconds)


def input_uri_allowed(uri: str, allowed_prefixes: Sequence[str]) -> bool:
    """True only when `uri` lies under one of `allowed_prefixes` (no prefixes: nothing).

    Local paths (plain or file://) are compared as resolved absolute paths, so `..` and
    symlinks cannot leave a prefix. URLs are compared by scheme, bucket/host and path; a URL
    with a `..` segment (also percent-encoded) is never allowed. Either way a prefix matches
    only whole path components: `/data/in` allows `/data/in/a.wav`, not `/data/input2/a.wav`.
    The query string of a URL (e.g. a presigned signature) is not compared.
    """
    if not isinstance(uri, str) or not uri.strip():
        return False
    target = _location(uri.strip())
    if target is None:
        return False
    for prefix in allowed_prefixes:
        if not isinstance(prefix, str) or not prefix.strip():
            continue
        allowed = _location(prefix.strip())
        if allowed is None or allowed[0] != target[0] or allowed[1] != target[1]:
            continue
        if _under(target[2], allowed[2]):
            return True
    return False


# --- reading ----------------------------------------------------------------------------------

_NOT_FOUND = (
    "file not found; check the path (for object stores also the bucket, key and credentials)"
)
_IS_FOLDER = "is a folder, not an audio file; point it at one WAV/FLAC/OGG/MP3 file"


def _unreadable(error: BaseException) -> str:
    return (
        f"cannot be read ({type(error).__name__}: {error}); check permissions, credentials "
        "and the network, or copy the file somewhere this machine can read"
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"


def _too_large(size: int | None, max_bytes: int) -> str:
    actual = f"{_mib(size)}" if size is not None else f"more than {_mib(max_bytes)}"
    return (
        f"the file is too large ({actual}; the limit is {_mib(max_bytes)}); trim it or "
        "re-encode it (e.g. FLAC or MP3) to at most the limit"
    )


def _size_if_known(fs: Any, path: str, uri: str) -> int | None:
    try:
        info = fs.info(path)
    except FileNotFoundError as error:
        raise AudioInputError(uri, _NOT_FOUND) from error
    except Exception as error:
        raise AudioInputError(uri, _unreadable(error)) from error
    if info.get("type") == "directory":
        raise AudioInputError(uri, _IS_FOLDER)
    size = info.get("size")
    return int(size) if isinstance(size, (int, float)) and size >= 0 else None


# --- decoding ---------------------------------------------------------------------------------


def _decode(data: bytes, uri: str, max_seconds: float) -> AudioClip:
    if not data:
        raise AudioInputError(uri, "the file is empty (0 bytes); point it at a complete file")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            sample_rate, channels = int(audio.samplerate), int(audio.channels)
            source_format = str(audio.format)
            limit = _max_frames(max_seconds, sample_rate)
            if 0 < audio.frames < 2**62 and audio.frames > limit:
                raise AudioInputError(uri, _too_long(audio.frames / sample_rate, max_seconds))
            # Read at most one frame past the limit, so a header that lies cannot make this
            # decode an arbitrarily long stream.
            frames = audio.read(limit + 1, dtype="float32", always_2d=True)
    except AudioInputError:
        raise
    except Exception as error:  # libsndfile: unknown format, corrupt or truncated data
        raise AudioInputError(
            uri,
            f"not a {DECODABLE} file soundfile can decode ({_libsndfile_reason(error)}); "
            "check that the file is complete audio, or convert it to WAV or FLAC",
        ) from error
    if frames.shape[0] > limit:
        raise AudioInputError(uri, _too_long(None, max_seconds))
    if frames.shape[0] == 0:
        raise AudioInputError(
            uri, "the file holds no audio (0 frames); point it at a file with sound in it"
        )
    finite = np.isfinite(frames)
    if not finite.all():
        frame = int(np.argwhere(~finite)[0][0])
        raise AudioInputError(
            uri,
            f"the audio holds NaN or infinite samples (first at {frame / sample_rate:.3f} s); "
            "re-export it from the source, or as 16/24-bit PCM",
        )
    samples = _stereo(frames)
    return AudioClip(samples, sample_rate, uri, digest, channels, source_format)


def _max_frames(max_seconds: float, sample_rate: int) -> int:
    return int(math.floor(max_seconds * sample_rate + 1e-6))


def _too_long(seconds: float | None, max_seconds: float) -> str:
    actual = f"{seconds:.2f} s" if seconds is not None else f"more than {max_seconds:g} s"
    return (
        f"the audio is too long ({actual}; at most {max_seconds:g} s can be used); cut it to "
        f"{max_seconds:g} s or less"
    )


def _libsndfile_reason(error: BaseException) -> str:
    text = str(error)
    # "Error opening <_io.BytesIO object at 0x...>: Format not recognised." -> the reason only
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text


def _stereo(frames: np.ndarray) -> np.ndarray:
    """(frames, channels) -> float32 (2, frames): mono duplicated, extra channels dropped."""
    if frames.shape[1] == 1:
        frames = np.repeat(frames, 2, axis=1)
    return np.ascontiguousarray(frames[:, :2].T, dtype=np.float32)


# --- prefixes ---------------------------------------------------------------------------------


def _location(uri: str) -> tuple[str, str, str] | None:
    """(scheme, bucket/host, path) to compare; local paths are ("file", "", resolved path).
    None for a location with a `..` segment that resolving cannot remove (URLs, or one that
    is only there once percent-decoded)."""
    match = _SCHEME.match(uri)
    local = match is None or match.group(1).lower() == "file"
    raw_path = uri[len(match.group(0)) :] if local and match else uri
    if not local:
        raw_path = urlsplit(uri).path
    decoded = unquote(raw_path)
    if decoded != raw_path and ".." in re.split(r"[/\\]", decoded):
        return None
    if local:
        return "file", "", os.path.realpath(os.path.expanduser(raw_path))
    if ".." in re.split(r"[/\\]", raw_path):
        return None
    parts = urlsplit(uri)
    path = "/" + "/".join(segment for segment in raw_path.split("/") if segment not in ("", "."))
    return parts.scheme.lower(), parts.netloc.lower(), path


def _under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or lies inside it (whole path components only)."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")
