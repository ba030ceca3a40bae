"""PCM WAV writing with loop metadata (ACID `acid` + sampler `smpl` chunks), and a chunk reader.

DAWs read tempo, beat count, meter and key from the `acid` chunk and time-stretch the loop to the
session tempo on import; samplers read the loop points from `smpl`. libsndfile cannot write an
`acid` chunk, so the whole file is assembled here (it is a short, fixed layout).

File layout (all integers little-endian; every chunk body padded to an even length with one
zero byte that the chunk size does not count):

    "RIFF" u32 size(= file length - 8) "WAVE"
    "fmt " u32 16   u16 format(1 = PCM) u16 channels u32 sample_rate u32 bytes_per_second
                    u16 block_align(channels * bytes per sample) u16 bits_per_sample
    "data" u32 n    interleaved frames, signed 16-bit or 24-bit (3-byte) samples
    "acid" u32 24   (only with loop metadata)
    "smpl" u32 36 + 24 * loops   (only with loop metadata)

`acid` (24 bytes; Sonic Foundry ACID, no official spec; this is the layout libsndfile and
other readers agree on):
    0  u32 flags: 0x01 one-shot, 0x02 root note set, 0x04 stretch, 0x08 disk-based, 0x10 unknown
    4  u16 root note (MIDI note number)
    6  u16 unknown (0x8000 as commonly written)
    8  f32 unknown (0.0)
    12 u32 number of beats
    16 u16 meter denominator
    18 u16 meter numerator
    20 f32 tempo (BPM)

`smpl` (Microsoft/IBM RIFF sampler chunk): nine u32 then 24 bytes per loop:
    0  manufacturer (0: none)          4  product (0)
    8  sample period in ns (1e9 / sample rate)
    12 MIDI unity note (the pitch the sample plays at its recorded speed; 60 when no root)
    16 MIDI pitch fraction (0)         20 SMPTE format (0)      24 SMPTE offset (0)
    28 number of loops                 32 bytes of sampler-specific data after the loops (0)
    per loop: cue point id, type (0 forward, 1 alternating, 2 backward), start frame,
              end frame (inclusive: the last frame played), fraction (0), play count (0 = forever)
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

import numpy as np

from .encode import channel_first
from .loudness import tpdf_dither

WAV_BIT_DEPTHS = (16, 24)

ACID_ONE_SHOT = 0x01
ACID_ROOT_NOTE_SET = 0x02
ACID_STRETCH = 0x04
ACID_DISK_BASED = 0x08
ACID_UNKNOWN1 = 0x8000

SMPL_DEFAULT_UNITY_NOTE = 60
SMPL_LOOP_FORWARD = 0

# Octave of the roots written to the ACID chunk: C3 = 48 (scientific pitch, middle C = C4 = 60),
# so A minor -> 57 (A3). Only the pitch class matters to DAWs matching keys.
ROOT_OCTAVE_C = 48

_ACID = struct.Struct("<IHHfIHHf")
_SMPL_HEADER = struct.Struct("<9I")
_SMPL_LOOP = struct.Struct("<6I")
_FMT = struct.Struct("<HHIIHH")

_PITCH_CLASSES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "sharp": 1, "b": -1, "♭": -1, "flat": -1}
_MODES = {
    "",
    "m",
    "ma",
    "maj",
    "major",
    "ionian",
    "dur",
    "mi",
    "min",
    "minor",
    "aeolian",
    "moll",
    "dorian",
    "phrygian",
    "lydian",
    "mixolydian",
    "locrian",
}
_KEY = re.compile(r"^([a-g])\s*(#|♯|b|♭|-?\s*sharp|-?\s*flat)?[\s_-]*([a-z]*)$")


@dataclass(frozen=True)
class LoopMetadata:
    """Tempo/key/loop facts written to the `acid` and `smpl` chunks.

    beats counts time-signature units (bars x numerator: 6/8 has 6 per bar), as ACID does.
    loop_start/loop_end are frames, end inclusive as in `smpl` (None = the last frame).
    root_note is the MIDI note of the key's tonic (see `key_to_midi_root`), None = no key.
    one_shot marks a non-looping sample (no loop is written to `smpl`).
    """

    bpm: float
    beats: int
    meter: tuple[int, int] = (4, 4)
    root_note: int | None = None
    loop_start: int = 0
    loop_end: int | None = None
    one_shot: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.bpm, bool) or not math.isfinite(self.bpm) or self.bpm <= 0:
            raise ValueError(f"bpm must be a positive number, got {self.bpm!r}")
        if int(self.beats) != self.beats or not 0 <= self.beats < 2**32:
            raise ValueError(f"beats must be a whole number >= 0, got {self.beats!r}")
        if len(self.meter) != 2 or any(int(v) != v or not 1 <= v < 2**16 for v in self.meter):
            raise ValueError(f"meter must be (numerator, denominator) >= 1, got {self.meter!r}")
        if self.root_note is not None and (
            int(self.root_note) != self.root_note or not 0 <= self.root_note <= 127
        ):
            raise ValueError(
                f"root_note must be a MIDI note 0..127 or None, got {self.root_note!r}"
            )
        if int(self.loop_start) != self.loop_start or self.loop_start < 0:
            raise ValueError(f"loop_start must be a frame index >= 0, got {self.loop_start!r}")
        if self.loop_end is not None and (
            int(self.loop_end) != self.loop_end or self.loop_end < self.loop_start
        ):
            raise ValueError(
                f"loop_end must be a frame index >= loop_start ({self.loop_start}), "
                f"got {self.loop_end!r}"
            )


def key_to_midi_root(key: str | None) -> int | None:
    """MIDI note of a key's tonic in the octave C3..B3 (48..59, C3 = 48 convention).

    Accepts 'A minor', 'Amin', 'Am', 'A#maj', 'Bb major', 'F# minor', 'C', 'e dorian', ...;
    the mode does not change the root. None / '' -> None (no key, e.g. drums). Enharmonics
    wrap within the octave (Cb -> 59, B# -> 48).
    """
    if key is None or not str(key).strip():
        return None
    text = str(key).strip()
    match = _KEY.match(text.lower())
    if match is None or match.group(3) not in _MODES:
        raise ValueError(
            f"key {key!r} is not a key like 'A minor', 'C major', 'F#m', 'Bb' (tonic A-G, "
            "optional # or b, optional major/minor/mode)"
        )
    tonic = match.group(1)
    accidental = re.sub(r"[\s-]", "", match.group(2) or "")
    return ROOT_OCTAVE_C + (_PITCH_CLASSES[tonic] + _ACCIDENTALS[accidental]) % 12


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _pcm_bytes(audio: np.ndarray, bits: int) -> bytes:
    """Round to signed `bits` integers (saturating) and interleave little-endian."""
    full_scale = 2 ** (bits - 1)
    ints = np.clip(np.rint(audio * full_scale), -full_scale, full_scale - 1).astype("<i4")
    interleaved = np.ascontiguousarray(ints.T)
    if bits == 16:
        return interleaved.astype("<i2").tobytes()
    return interleaved.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def acid_body(loop: LoopMetadata) -> bytes:
    """The 24-byte `acid` chunk body: a stretchable loop (or one-shot) with tempo and meter."""
    flags = ACID_STRETCH
    if loop.one_shot:
        flags |= ACID_ONE_SHOT
    if loop.root_note is not None:
        flags |= ACID_ROOT_NOTE_SET
    numerator, denominator = loop.meter
    return _ACID.pack(
        flags,
        loop.root_note or 0,
        ACID_UNKNOWN1,
        0.0,
        int(loop.beats),
        int(denominator),
        int(numerator),
        float(loop.bpm),
    )


def smpl_body(loop: LoopMetadata, sample_rate: int, frames: int) -> bytes:
    """The `smpl` chunk body: one infinite forward loop (none for a one-shot)."""
    end = frames - 1 if loop.loop_end is None else int(loop.loop_end)
    if end > frames - 1 or loop.loop_start > end:
        raise ValueError(
            f"loop {loop.loop_start}..{end} (inclusive) does not fit the {frames} frames written"
        )
    unity = SMPL_DEFAULT_UNITY_NOTE if loop.root_note is None else int(loop.root_note)
    loops = [] if loop.one_shot else [(0, SMPL_LOOP_FORWARD, int(loop.loop_start), end, 0, 0)]
    header = _SMPL_HEADER.pack(0, 0, round(1e9 / sample_rate), unity, 0, 0, 0, len(loops), 0)
    return header + b"".join(_SMPL_LOOP.pack(*entry) for entry in loops)


def encode_wav(
    audio: np.ndarray,
    sample_rate: int,
    bit_depth: int,
    loop: LoopMetadata | None = None,
    dither_seed: int | None = None,
) -> bytes:
    """A complete 16- or 24-bit PCM WAV file (with `acid` + `smpl` chunks when `loop` is given).

    Samples are clipped to [-1, 1] and rounded; at 16 bits TPDF dither is added first when
    `dither_seed` is given (deterministic: same seed, same bytes). 24-bit is never dithered:
    its rounding error (-144 dBFS) is far below any converter's noise floor.
    """
    if int(bit_depth) != bit_depth or int(bit_depth) not in WAV_BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {WAV_BIT_DEPTHS}, got {bit_depth!r}")
    if int(sample_rate) != sample_rate or not 0 < sample_rate < 2**32:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    bits, sample_rate = int(bit_depth), int(sample_rate)
    arr = np.clip(channel_first(audio).astype(np.float64), -1.0, 1.0)  # validated like every encoder
    channels, frames = arr.shape
    if bits == 16 and dither_seed is not None:
        arr = tpdf_dither(arr, 16, dither_seed)
    width = bits // 8
    fmt = _FMT.pack(
        1, channels, sample_rate, sample_rate * channels * width, channels * width, bits
    )
    chunks = [_chunk(b"fmt ", fmt), _chunk(b"data", _pcm_bytes(arr, bits))]
    if loop is not None:
        chunks += [
            _chunk(b"acid", acid_body(loop)),
            _chunk(b"smpl", smpl_body(loop, sample_rate, frames)),
        ]
    body = b"WAVE" + b"".join(chunks)
    if len(body) >= 2**32:
        raise ValueError(f"{len(body)} bytes is too large for a RIFF WAV file (4 GiB limit)")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def read_wav_chunks(data: bytes) -> dict[str, bytes]:
    """Raw chunk bodies of a RIFF/WAVE file by id ('fmt ', 'data', 'acid', ...; first wins).

    Walks the chunks honouring the pad byte after odd-sized ones, up to the end of the RIFF
    (or of `data` if the RIFF size claims more). A chunk running past that end raises.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file (missing 'RIFF'....'WAVE' header)")
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    chunks: dict[str, bytes] = {}
    pos = 12
    while pos + 8 <= end:
        chunk_id = data[pos : pos + 4].decode("latin-1")
        size = struct.unpack_from("<I", data, pos + 4)[0]
        if pos + 8 + size > end:
            raise ValueError(
                f"chunk {chunk_id!r} at byte {pos} claims {size} bytes but only "
                f"{end - pos - 8} remain"
            )
        chunks.setdefault(chunk_id, bytes(data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def parse_acid(body: bytes) -> dict:
    """Decode an `acid` chunk body (see the module docstring for the layout)."""
    if len(body) < _ACID.size:
        raise ValueError(f"acid chunk is {len(body)} bytes, expected {_ACID.size}")
    flags, root, unknown1, unknown2, beats, denominator, numerator, tempo = _ACID.unpack_from(body)
    return {
        "flags": {
            "one_shot": bool(flags & ACID_ONE_SHOT),
            "root_note_set": bool(flags & ACID_ROOT_NOTE_SET),
            "stretch": bool(flags & ACID_STRETCH),
            "disk_based": bool(flags & ACID_DISK_BASED),
        },
        "flags_value": flags,
        "root_note": root,
        "unknown1": unknown1,
        "unknown2": unknown2,
        "beats": beats,
        "meter": (numerator, denominator),
        "tempo": tempo,
    }


def parse_smpl(body: bytes) -> dict:
    """Decode a `smpl` chunk body (see the module docstring for the layout)."""
    if len(body) < _SMPL_HEADER.size:
        raise ValueError(f"smpl chunk is {len(body)} bytes, expected at least {_SMPL_HEADER.size}")
    (
        manufacturer,
        product,
        period,
        unity,
        fraction,
        smpte_format,
        smpte_offset,
        n_loops,
        sampler_data,
    ) = _SMPL_HEADER.unpack_from(body)
    if len(body) < _SMPL_HEADER.size + n_loops * _SMPL_LOOP.size:
        raise ValueError(f"smpl chunk declares {n_loops} loops but is only {len(body)} bytes")
    loops = []
    for index in range(n_loops):
        cue_id, kind, start, end, loop_fraction, play_count = _SMPL_LOOP.unpack_from(
            body, _SMPL_HEADER.size + index * _SMPL_LOOP.size
        )
        loops.append(
            {
                "cue_id": cue_id,
                "type": kind,
                "start": start,
                "end": end,
                "fraction": loop_fraction,
                "play_count": play_count,
            }
        )
    return {
        "manufacturer": manufacturer,
        "product": product,
        "sample_period_ns": period,
        "midi_unity_note": unity,
        "midi_pitch_fraction": fraction,
        "smpte_format": smpte_format,
        "smpte_offset": smpte_offset,
        "sampler_data_size": sampler_data,
        "loops": loops,
    }
