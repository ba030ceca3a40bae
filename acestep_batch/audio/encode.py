"""Encode model output (float32, channel-first) to audio file bytes, and decode them back.

Everything happens in memory (`io.BytesIO`) so the storage layer can write each file with a
single atomic put. Encoding is deterministic (same input -> identical bytes), which makes
re-runs and retries idempotent: a retried item overwrites its file with the very same bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from .qc import as_2d

AUDIO_FORMATS: tuple[str, ...] = ("wav", "flac", "ogg", "mp3")
BIT_DEPTHS: tuple[str, ...] = ("16", "24", "float")
FILE_EXTENSIONS: dict[str, str] = {"wav": "wav", "flac": "flac", "ogg": "ogg", "mp3": "mp3"}

# Frames handed to libsndfile per write call (see encode_audio).
WRITE_BLOCK_FRAMES = 16384

# Anything with more "channels" than this is almost certainly a (samples, channels) array.
MAX_CHANNELS = 8


@dataclass(frozen=True)
class _Codec:
    sf_format: str
    subtype_by_depth: dict[str, str | None]  # None: the bit depth is not representable


_CODECS: dict[str, _Codec] = {
    "wav": _Codec("WAV", {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}),
    "flac": _Codec("FLAC", {"16": "PCM_16", "24": "PCM_24", "float": None}),
    # Lossy formats have no bit depth: the decoder always produces float samples.
    "ogg": _Codec("OGG", {d: "VORBIS" for d in BIT_DEPTHS}),
    "mp3": _Codec("MP3", {d: "MPEG_LAYER_III" for d in BIT_DEPTHS}),
}


def _subtype(fmt: str, bit_depth: str) -> str:
    if fmt not in _CODECS:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {AUDIO_FORMATS}")
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"unknown bit depth {bit_depth!r}; expected one of {BIT_DEPTHS}")
    subtype = _CODECS[fmt].subtype_by_depth[bit_depth]
    if subtype is None:
        raise ValueError(
            f"{fmt.upper()} has no {bit_depth} sample format (FLAC is integer-only); "
            "use bit depth '16' or '24', or format 'wav' for float samples"
        )
    return subtype


def channel_first(wave: np.ndarray) -> np.ndarray:
    """Validate `wave` and return it as float32 (channels, samples)."""
    arr = as_2d(wave)
    if not 1 <= arr.shape[0] <= MAX_CHANNELS:
        raise ValueError(
            f"wave has {arr.shape[0]} channels (shape {arr.shape}); expected channel-first "
            f"(channels, samples) with 1..{MAX_CHANNELS} channels - is it (samples, channels)?"
        )
    if arr.shape[1] == 0:
        raise ValueError("wave has no samples (no frames)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"wave must be floating point in [-1, 1], got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(
            "wave contains NaN/Inf samples; run acestep_batch.audio.qc.check_audio to report "
            "them and qc.sanitize to zero them before encoding"
        )
    return arr


def encode_audio(
    wave: np.ndarray, sample_rate: int, fmt: str = "wav", bit_depth: str = "24"
) -> bytes:
    """Encode a float (channels, samples) wave to the bytes of a complete audio file.

    - wav: PCM_16 / PCM_24 / FLOAT; flac: PCM_16 / PCM_24 (float raises ValueError).
    - ogg (Vorbis) and mp3 (MPEG Layer III): `bit_depth` is validated but otherwise ignored,
      because lossy codecs store no integer samples.
    - Samples are clipped to [-1, 1] first (except for float WAV, which keeps over-range
      values as they are, for inspection) so integer and lossy formats saturate cleanly
      (QC counts clipped samples; this function does not judge).
    - NaN/Inf raise ValueError: integer formats cannot represent them (see `qc.sanitize`).
    - Deterministic: libsndfile gives each Ogg stream a random serial number, so the serial is
      rewritten to a value derived from the input (and page checksums recomputed).
    """
    fmt = str(fmt).lower()
    bit_depth = str(bit_depth).lower()
    subtype = _subtype(fmt, bit_depth)
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    arr = channel_first(wave)
    if subtype != "FLOAT":
        arr = np.clip(arr, -1.0, 1.0)
    frames = np.ascontiguousarray(arr.T)  # soundfile wants (samples, channels)

    buf = io.BytesIO()
    codec = _CODECS[fmt]
    with sf.SoundFile(
        buf, "w", sample_rate, frames.shape[1], subtype=subtype, format=codec.sf_format
    ) as out:
        # Blocks, not one call: libvorbis alloca()s a buffer the size of everything written
        # in one call, so a long track in one write overflows the stack (SIGSEGV). Fixed-size
        # blocks keep the output identical from run to run.
        for start in range(0, frames.shape[0], WRITE_BLOCK_FRAMES):
            out.write(frames[start : start + WRITE_BLOCK_FRAMES])
    data = buf.getvalue()
    if fmt == "ogg":
        seed = zlib.crc32(struct.pack("<II", sample_rate, frames.shape[1]))
        data = set_ogg_serial(data, zlib.crc32(frames.tobytes(), seed))
    return data


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode audio file bytes to (float32 (channels, samples), sample_rate)."""
    frames, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(frames.T), int(sample_rate)


# --- Ogg page helpers -------------------------------------------------------------------
# Ogg page header: "OggS", version(1), header_type(1), granule(8), serial(4) @14,
# page sequence(4) @18, CRC(4) @22, segment count(1) @26, segment table, then the body.

_OGG_HEADER = struct.Struct("<4sBBqIIIB")
_BYTE_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(page: bytes) -> int:
    """Ogg's page CRC-32 (poly 0x04C11DB7, MSB-first, init 0, no final xor).

    Computed with zlib's (reflected) CRC-32 on bit-reversed bytes, which gives the same
    polynomial arithmetic at C speed; a pure-Python loop would cost seconds per long file.
    """
    reflected = zlib.crc32(page.translate(_BYTE_REVERSE), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Rewrite the stream serial number of every page of a single-stream Ogg file."""
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS" or pos + _OGG_HEADER.size > len(out):
            raise ValueError(f"malformed Ogg data at byte {pos}")
        n_segments = out[pos + 26]
        header_len = _OGG_HEADER.size + n_segments
        body_len = sum(out[pos + _OGG_HEADER.size : pos + header_len])
        end = pos + header_len + body_len
        if end > len(out):
            raise ValueError(f"truncated Ogg page at byte {pos}")
        struct.pack_into("<I", out, pos + 14, serial & 0xFFFFFFFF)
        struct.pack_into("<I", out, pos + 22, 0)
        struct.pack_into("<I", out, pos + 22, ogg_crc(bytes(out[pos:end])))
        pos = end
    return bytes(out)
