"""Loudness measurement and normalisation (ITU-R BS.1770-4 / EBU R128), and TPDF dither.

Producers expect loops at a known loudness: streaming-style -14 LUFS integrated with a -1 dBTP
true-peak ceiling by default. Everything here is plain numpy/scipy on float (channels, frames)
arrays; a 1-D array is one channel.

Integrated loudness (BS.1770-4):
- K-weighting = a high shelf (+4 dB above ~1.7 kHz, the head's acoustic effect) followed by the
  "RLB" high-pass (~38 Hz). Both biquads are derived for any sample rate from their analog
  prototypes with the bilinear transform, so 44.1 kHz gets exact coefficients instead of the
  48 kHz table (which they reproduce at 48 kHz).
- Mean square per 400 ms block, blocks every 100 ms (75 % overlap); a trailing partial block is
  dropped. Block loudness = -0.691 + 10 log10(sum of channel-weighted mean squares).
- Gating: blocks at or below -70 LUFS (absolute gate) are dropped, then blocks at or below the
  loudness of the remaining ones minus 10 LU (relative gate).
- Channel weights: 1.0 for every channel (BS.1770's weight for L, R and C). The surround weight
  (1.41) and LFE exclusion need a channel layout this project never has. A mono file is measured
  as one channel (it reads 3 LU below the same signal on both channels of a stereo file).
- A clip shorter than one 400 ms block is measured as a single block spanning the whole clip
  (BS.1770 leaves it undefined; a 250 ms one-shot still gets a usable number).
- No block above the absolute gate (digital silence, or everything below -70 LUFS) gives -inf.

True peak (BS.1770-4 Annex 2): the signal is oversampled 4x with a windowed-sinc polyphase
interpolator and the largest absolute value of the oversampled signal is reported (never below
the sample peak), processed in chunks so long tracks do not need 4x their size in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

# Analog prototypes of the K-weighting filter (BS.1770-4 pre-filter + RLB high-pass), as fitted
# to the 48 kHz table of the standard.
SHELF_F0_HZ = 1681.974450955533
SHELF_GAIN_DB = 3.999843853973347
SHELF_Q = 0.7071752369554196
SHELF_VB_EXPONENT = 0.4996667741545416  # band-edge gain Vb = Vh ** exponent
HIGHPASS_F0_HZ = 38.13547087602444
HIGHPASS_Q = 0.5003270373238773

BLOCK_S = 0.4
STEP_S = 0.1  # 75 % overlap: a 400 ms block every 100 ms
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LOUDNESS_OFFSET = -0.691  # makes a 1 kHz full-scale sine on one channel read -3.01 LUFS

TRUE_PEAK_OVERSAMPLING = 4
_TP_TAPS_PER_PHASE = 24  # interpolator length per polyphase branch (input samples)
_TP_CHUNK_FRAMES = 1 << 16

_FILTER_CHUNK_STEPS = 64  # K-weighting runs over 64 x 100 ms at a time (bounded memory)

NORMALIZE_MODES = ("lufs", "peak")


def _as_2d_float(audio: np.ndarray) -> np.ndarray:
    """(channels, frames) view of a float array (dtype kept: the callers convert chunk by chunk
    to float64); refuses NaN/Inf, which would poison every sum."""
    arr = np.asarray(audio)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise ValueError(f"audio must be (channels, frames) or (frames,), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("audio contains NaN/Inf samples; zero them first (audio.qc.sanitize)")
    return arr


def _check_rate(sample_rate: int) -> int:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def _db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0.0 else float("-inf")


def _highpass_a0(fs: float) -> float:
    k = math.tan(math.pi * HIGHPASS_F0_HZ / fs)
    return 1.0 + k / HIGHPASS_Q + k * k


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """K-weighting as second-order sections [b0 b1 b2 1 a1 a2] (shelf, then high-pass).

    Bilinear transform of the analog prototypes (prewarped at f0), which is how the BS.1770
    48 kHz table was obtained. The table's high-pass numerator is 1, -2, 1, i.e. not divided by
    a0: a passband gain of a0(48 kHz) = 1.005 (+0.043 dB) that the -0.691 offset was calibrated
    with. That gain is kept at every rate (numerator scaled by a0(48 kHz) / a0(fs)), so the
    response does not drift with the rate (a plain 1, -2, 1 would read +0.09 dB at 16 kHz).
    """
    fs = float(_check_rate(sample_rate))
    k = math.tan(math.pi * SHELF_F0_HZ / fs)
    vh = 10.0 ** (SHELF_GAIN_DB / 20.0)
    vb = vh**SHELF_VB_EXPONENT
    a0 = 1.0 + k / SHELF_Q + k * k
    shelf = [
        (vh + vb * k / SHELF_Q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / SHELF_Q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / SHELF_Q + k * k) / a0,
    ]
    k = math.tan(math.pi * HIGHPASS_F0_HZ / fs)
    a0 = 1.0 + k / HIGHPASS_Q + k * k
    gain = _highpass_a0(48000.0) / a0  # the table's passband gain, the same at every rate
    highpass = [
        gain,
        -2.0 * gain,
        gain,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / HIGHPASS_Q + k * k) / a0,
    ]
    return np.array([shelf, highpass], dtype=np.float64)


def _segment_energies(arr: np.ndarray, sample_rate: int, step: int) -> np.ndarray:
    """Sum over channels of the K-weighted squared samples per `step`-frame segment.

    Filtered chunk by chunk with the filter state carried over, so the result equals one pass
    over the whole signal without holding a float64 copy of all of it.
    """
    sos = k_weighting_sos(sample_rate)
    n_segments = arr.shape[1] // step
    energies = np.zeros(n_segments, dtype=np.float64)
    zi = np.zeros((sos.shape[0], arr.shape[0], 2), dtype=np.float64)
    chunk_segments = _FILTER_CHUNK_STEPS
    for first in range(0, n_segments, chunk_segments):
        count = min(chunk_segments, n_segments - first)
        piece = arr[:, first * step : (first + count) * step].astype(np.float64)
        filtered, zi = signal.sosfilt(sos, piece, axis=-1, zi=zi)
        energies[first : first + count] = (
            np.square(filtered).reshape(arr.shape[0], count, step).sum(axis=(0, 2))
        )
    return energies


def integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Gated integrated loudness in LUFS; -inf when no block is above the -70 LUFS gate."""
    sample_rate = _check_rate(sample_rate)
    arr = _as_2d_float(audio)
    frames = arr.shape[1]
    step = max(1, round(STEP_S * sample_rate))
    block = 4 * step
    if frames == 0:
        return float("-inf")
    if frames < block:
        filtered = signal.sosfilt(k_weighting_sos(sample_rate), arr.astype(np.float64), axis=-1)
        block_power = np.array([np.square(filtered).sum() / frames])
    else:
        segments = _segment_energies(arr, sample_rate, step)
        sums = np.convolve(segments, np.ones(4), mode="valid")  # 4 consecutive 100 ms segments
        block_power = sums / block
    with np.errstate(divide="ignore"):
        block_lufs = LOUDNESS_OFFSET + 10.0 * np.log10(block_power)
    gated = block_power[block_lufs > ABSOLUTE_GATE_LUFS]
    if gated.size == 0:
        return float("-inf")
    relative_gate = LOUDNESS_OFFSET + 10.0 * math.log10(gated.mean()) + RELATIVE_GATE_LU
    gated = block_power[(block_lufs > ABSOLUTE_GATE_LUFS) & (block_lufs > relative_gate)]
    return float(LOUDNESS_OFFSET + 10.0 * math.log10(gated.mean()))


@lru_cache(maxsize=4)
def _interpolator(oversampling: int) -> np.ndarray:
    """Kaiser-windowed sinc low-pass at the original Nyquist (unit DC gain; resample_poly
    multiplies by the oversampling factor itself)."""
    return signal.firwin(
        oversampling * _TP_TAPS_PER_PHASE + 1, 1.0 / oversampling, window=("kaiser", 8.0)
    )


def true_peak_dbtp(audio: np.ndarray, sample_rate: int) -> float:
    """Peak of the 4x oversampled signal in dBTP (>= the sample peak); -inf for silence.

    Inter-sample peaks are what clip in a DAC or a lossy encoder even when no sample reaches
    full scale, hence the ceiling is applied to this rather than to the sample peak.
    """
    _check_rate(sample_rate)
    arr = _as_2d_float(audio)
    sample_peak = float(np.abs(arr).max()) if arr.size else 0.0
    if sample_peak == 0.0:
        return float("-inf")
    up = TRUE_PEAK_OVERSAMPLING
    taps = _interpolator(up)
    pad = _TP_TAPS_PER_PHASE  # input samples of context either side of a chunk
    frames = arr.shape[1]
    peak = sample_peak
    for start in range(0, frames, _TP_CHUNK_FRAMES):
        stop = min(frames, start + _TP_CHUNK_FRAMES)
        lo, hi = max(0, start - pad), min(frames, stop + pad)
        piece = arr[:, lo:hi].astype(np.float64)
        over = signal.resample_poly(piece, up, 1, axis=-1, window=taps)
        core = over[:, (start - lo) * up : (stop - lo) * up]
        peak = max(peak, float(np.abs(core).max()))
    return _db(peak)


def sample_peak_dbfs(audio: np.ndarray) -> float:
    """Largest absolute sample value in dBFS; -inf for silence."""
    arr = _as_2d_float(audio)
    return _db(float(np.abs(arr).max()) if arr.size else 0.0)


@dataclass(frozen=True)
class LoudnessResult:
    """Outcome of `normalize`. lufs_before = -inf flags audio that could not be measured
    (silence, or below the -70 LUFS gate): it is returned unchanged with gain 0."""

    audio: np.ndarray
    gain_db: float
    lufs_before: float
    lufs_after: float
    true_peak_before: float
    true_peak_after: float
    mode: str
    limited_by_ceiling: bool


def _apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    return (np.asarray(audio, dtype=np.float64) * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def normalize(
    audio: np.ndarray,
    sample_rate: int,
    mode: str = "lufs",
    target_lufs: float = -14.0,
    peak_dbfs: float = -1.0,
    ceiling_dbtp: float = -1.0,
) -> LoudnessResult:
    """Apply one static gain so the audio hits a loudness or true-peak target.

    - "lufs": gain to reach `target_lufs` integrated; if that would push the true peak above
      `ceiling_dbtp`, the gain is lowered until the true peak sits at the ceiling instead (no
      limiter: a limiter changes the sound, a lower level does not) and `limited_by_ceiling` is
      set; `lufs_after` then reports the loudness actually reached.
    - "peak": gain so the true peak equals `peak_dbfs`. The ceiling still applies (the lower
      of the two wins, and `limited_by_ceiling` says so), so no mode writes above it.
    - Unmeasurable audio (digital silence; in "lufs" mode also anything below the -70 LUFS
      absolute gate) is returned unchanged with gain 0 and lufs_before = -inf.
    The returned audio is float32 with the input's shape.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown loudness mode {mode!r}; expected one of {NORMALIZE_MODES}")
    for name, value in (
        ("target_lufs", target_lufs),
        ("peak_dbfs", peak_dbfs),
        ("ceiling_dbtp", ceiling_dbtp),
    ):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    sample_rate = _check_rate(sample_rate)
    _as_2d_float(audio)  # validate shape, dtype and finiteness once, up front
    lufs_before = integrated_lufs(audio, sample_rate)
    tp_before = true_peak_dbtp(audio, sample_rate)
    measurable = math.isfinite(tp_before) and (mode == "peak" or math.isfinite(lufs_before))
    if not measurable:
        out = np.asarray(audio, dtype=np.float32).copy()
        return LoudnessResult(out, 0.0, lufs_before, lufs_before, tp_before, tp_before, mode, False)

    if mode == "peak":
        target_peak = min(peak_dbfs, ceiling_dbtp)
        gain = target_peak - tp_before
        out = _apply_gain(audio, gain)
        return LoudnessResult(
            out,
            gain,
            lufs_before,
            integrated_lufs(out, sample_rate),
            tp_before,
            true_peak_dbtp(out, sample_rate),
            mode,
            peak_dbfs > ceiling_dbtp,
        )

    # Gain moves every block equally, but blocks near the -70 LUFS absolute gate can change
    # sides, so the loudness reached is re-measured and the gain refined (rarely needed).
    gain = target_lufs - lufs_before
    limited = False
    for _ in range(3):
        limited = tp_before + gain > ceiling_dbtp
        if limited:
            gain = ceiling_dbtp - tp_before  # true peak scales exactly with a linear gain
        out = _apply_gain(audio, gain)
        lufs_after = integrated_lufs(out, sample_rate)
        error = target_lufs - lufs_after
        if limited or not math.isfinite(lufs_after) or abs(error) < 1e-3:
            break
        gain += error
    return LoudnessResult(
        out,
        gain,
        lufs_before,
        lufs_after,
        tp_before,
        true_peak_dbtp(out, sample_rate),
        mode,
        limited,
    )


def tpdf_dither(audio: np.ndarray, bits: int, seed: int) -> np.ndarray:
    """Add triangular (TPDF) dither of +-1 LSB at `bits`, ready for rounding to that depth.

    Rounding without dither turns the quantisation error into distortion correlated with the
    music (audible on fades and reverb tails at 16 bits); TPDF noise decorrelates it at the cost
    of a flat -93 dBFS noise floor. Deterministic per seed so re-encoding gives identical bytes.
    The result is float64 (the noise of 24-bit dither is below float32's resolution) and is
    clipped to [-1, 1 - 1 LSB], the range a signed `bits` integer can hold.
    """
    if int(bits) != bits or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an integer from 2 to 32, got {bits!r}")
    arr = np.asarray(audio, dtype=np.float64)
    lsb = 2.0 ** -(int(bits) - 1)
    rng = np.random.default_rng(int(seed) % 2**64)
    noise = (rng.random(arr.shape) - rng.random(arr.shape)) * lsb
    return np.clip(arr + noise, -1.0, 1.0 - lsb)
