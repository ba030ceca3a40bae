"""Loop post-processing: a raw render -> a studio-ready loop file plus its QC figures.

Order: cut to the exact bar length at the sample (the tail past the loop is crossfaded into the
head so the wrap is seamless), remove DC (per-channel mean), normalise loudness (integrated LUFS with a true-peak ceiling, or
true-peak normalisation), run QC on the final audio, then encode: WAV 16/24-bit with an ACID chunk
(tempo, beats, meter, root note: DAWs auto-stretch) and `smpl` loop points, TPDF dither at 16
bits; FLAC/OGG/MP3 carry the audio only. Pure CPU and numpy; called by the batch writer stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .analysis import QCReport, QCThresholds, parse_key, qc_loop
from .loops import cut_seamless_loop, loop_length_samples, parse_time_signature
from .loudness import normalize
from .wavchunks import LoopMetadata, encode_wav, key_to_midi_root

LOUDNESS_MODES = ("lufs", "peak", "none")
LOOP_BIT_DEPTHS = ("16", "24")


@dataclass(frozen=True)
class LoopOptions:
    """Job-wide post-processing settings (`acestep-batch submit --loops ...`)."""

    loudness: str = "lufs"  # lufs | peak | none
    target_lufs: float = -14.0
    peak_dbfs: float = -1.0  # the true-peak level of "peak" mode
    ceiling_dbtp: float = -1.0  # never exceeded in "lufs" mode (the gain is lowered instead)
    crossfade_s: float = 0.05
    check_bpm: bool = True
    check_key: bool = True
    max_attempts: int = 3  # renders per output (new seed each) before it is set aside as rejected

    def thresholds(self) -> QCThresholds:
        # The ceiling is checked too: normalisation guarantees it (0.05 dB of rounding allowed),
        # and with loudness "none" it is the only level rule a file must meet.
        return QCThresholds(check_bpm=self.check_bpm, check_key=self.check_key,
                            max_true_peak_dbtp=self.ceiling_dbtp + 0.05)


@dataclass(frozen=True)
class LoopFields:
    """The musical columns of one manifest row (user columns `bpm`, `bars`, `time_signature`, `key`)."""

    bpm: float
    bars: int
    meter: tuple[int, int]
    key: str  # "" = no key (drums)

    @property
    def beats(self) -> int:
        return self.bars * self.meter[0]

    def loop_seconds(self) -> float:
        return self.beats * 60.0 / self.bpm

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> LoopFields:
        """Parse the row's columns; raises LoopFieldError naming the column and the fix."""
        bpm = _number(extra.get("bpm"), "bpm", "a tempo in BPM from 20 to 400, e.g. 120")
        if not 20 <= bpm <= 400:
            raise LoopFieldError("bpm", extra.get("bpm"), "a tempo in BPM from 20 to 400, e.g. 120")
        bars = _number(extra.get("bars"), "bars", "a whole number of bars from 1 to 64, e.g. 4")
        if not float(bars).is_integer() or not 1 <= bars <= 64:
            raise LoopFieldError("bars", extra.get("bars"), "a whole number of bars from 1 to 64, e.g. 4")
        signature = extra.get("time_signature") or "4/4"
        try:
            meter = parse_time_signature(str(signature))
        except ValueError:
            raise LoopFieldError("time_signature", signature, "a time signature like 4/4, 3/4 or 6/8") from None
        key = extra.get("key") or ""
        if key:
            try:
                parse_key(str(key))
            except ValueError:
                raise LoopFieldError("key", key, "a key like 'A minor', 'C major', 'F#m' (or empty for none)") from None
        return cls(float(bpm), int(bars), meter, str(key))


class LoopFieldError(ValueError):
    def __init__(self, column: str, value: Any, expected: str) -> None:
        super().__init__(f"column {column!r}: got {value!r}; expected {expected}")
        self.column, self.value, self.expected = column, value, expected


def _number(value: Any, column: str, expected: str) -> float:
    if isinstance(value, bool) or value is None:
        raise LoopFieldError(column, value, expected)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LoopFieldError(column, value, expected) from None
    if not math.isfinite(number):
        raise LoopFieldError(column, value, expected)
    return number


@dataclass
class LoopResult:
    """What one render became: the final audio (or none), its metadata columns and QC."""

    audio: np.ndarray
    qc: QCReport
    columns: dict[str, Any] = field(default_factory=dict)


def process_loop(wave: np.ndarray, sample_rate: int, fields: LoopFields, options: LoopOptions) -> LoopResult:
    """Cut, make seamless, normalise and check one rendered loop (float32 (channels, frames))."""
    loop_samples = loop_length_samples(fields.bpm, fields.bars, fields.meter[0], sample_rate)
    cut = cut_seamless_loop(wave, sample_rate, loop_samples, crossfade_s=options.crossfade_s)
    # Remove DC before the gain: subtracting each channel's mean keeps the wrap seamless (a
    # high-pass filter would not), and a model's DC would otherwise be amplified with the music.
    audio = cut.audio - cut.audio.mean(axis=-1, keepdims=True)
    columns: dict[str, Any] = {
        "loop_samples": loop_samples, "loop_seconds": loop_samples / sample_rate,
        "loop_crossfade_samples": cut.crossfade_samples, "loudness_mode": options.loudness,
    }
    lufs = peak = None
    if options.loudness != "none":
        result = normalize(audio, sample_rate, mode=options.loudness, target_lufs=options.target_lufs,
                           peak_dbfs=options.peak_dbfs, ceiling_dbtp=options.ceiling_dbtp)
        audio = result.audio
        lufs, peak = _finite(result.lufs_after), _finite(result.true_peak_after)
        columns.update(loudness_gain_db=_finite(result.gain_db), lufs_before=_finite(result.lufs_before),
                       true_peak_before_dbtp=_finite(result.true_peak_before),
                       loudness_limited_by_ceiling=bool(result.limited_by_ceiling))
    else:
        from .loudness import integrated_lufs, true_peak_dbtp

        lufs, peak = _finite(integrated_lufs(audio, sample_rate)), _finite(true_peak_dbtp(audio, sample_rate))
    qc = qc_loop(audio, sample_rate, bpm=fields.bpm, key=fields.key or None, is_loop=True,
                 thresholds=options.thresholds(), lufs=lufs, true_peak_dbtp=peak)
    columns.update(qc.to_columns())
    return LoopResult(audio.astype(np.float32), qc, columns)


def encode_loop(audio: np.ndarray, sample_rate: int, fields: LoopFields, fmt: str, bit_depth: str, seed: int) -> bytes:
    """WAV with ACID + smpl chunks (dithered at 16 bits); other formats without loop metadata."""
    if fmt == "wav":
        if bit_depth not in LOOP_BIT_DEPTHS:
            raise ValueError(f"loops are written as 16- or 24-bit WAV, not {bit_depth!r}")
        loop = LoopMetadata(bpm=fields.bpm, beats=fields.beats, meter=fields.meter,
                            root_note=key_to_midi_root(fields.key) if fields.key else None,
                            loop_start=0, loop_end=audio.shape[-1] - 1)
        return encode_wav(audio, sample_rate, int(bit_depth), loop, dither_seed=seed if bit_depth == "16" else None)
    from .encode import encode_audio

    return encode_audio(audio, sample_rate, fmt, bit_depth)


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of attempt `attempt` (1 = the row's own seed): a fixed function, so reruns agree."""
    if attempt <= 1:
        return int(seed)
    import hashlib

    digest = hashlib.sha256(f"retry:{int(seed)}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
