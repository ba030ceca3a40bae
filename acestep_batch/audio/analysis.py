"""Musical and technical QC of rendered loops: tempo, key, loop seam, level defects.

After a loop is rendered and post-processed, `qc_loop` measures it and lists its problems; a row
with problems is re-rendered with a new seed. Everything is plain numpy/scipy on the CPU (a 10 s
stereo clip analyses in a few tens of milliseconds), written from the published methods:

* tempo (`estimate_bpm`): half-wave-rectified log-spectral flux as the onset-strength envelope
  (~10 ms hop), its autocorrelation over the lags of the allowed tempo range weighted by a
  log-Gaussian tempo prior (Ellis 2007: centre 120 BPM, 1.4 octaves wide), parabolic peak
  interpolation, then the period refined from the peaks at its integer multiples (a least-squares
  fit through the origin: the k-th multiple pins the period k times more precisely).
* key (`estimate_key`): a chromagram from the peaks of an averaged spectrum (Welch), each peak
  mapped to its equal-tempered pitch class (A4 = 440 Hz, after removing the global tuning offset
  of the audio), correlated with the 24 rotated Krumhansl-Kessler key profiles.
* seam (`seam_discontinuity`): the linear-prediction error across the wrap point compared with
  the errors next to it (see the function).

Audio arrays are float (channels, frames) or (frames,); multichannel audio is analysed as its
mono mix for tempo and key, and per channel for the seam.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal

PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES: tuple[str, ...] = ("major", "minor")

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first (Krumhansl 1990, table 2.1).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# A seamless wrap scores about 1 (at most ~1.5 on real material); a click scores tens to
# thousands. 4 leaves room for noisy material while catching any step or kink that stands out
# from the signal around it (e.g. a -40 dBFS step under a -6 dBFS 440 Hz tone scores ~5).
SEAM_CLICK_THRESHOLD = 4.0

# Linear-prediction errors below this (-80 dBFS) are inaudible; used as the floor of the
# reference so the seam of near-silent audio does not score huge on numerical noise.
SEAM_FLOOR = 1e-4

# Tempo: the normalised autocorrelation at the chosen period must reach this, else the envelope
# has no periodicity (white noise scores < 0.15 on 2 s clips, click tracks and drum loops > 0.4).
MIN_RHYTHM_STRENGTH = 0.25

# Key: a spectral peak counts as tonal when it stands this far (power ratio, 10 dB) above the
# running median of the spectrum around it; broadband noise and drums then yield no chroma.
TONAL_PEAK_RATIO = 10.0
KEY_FMIN_HZ = 60.0
KEY_FMAX_HZ = 5000.0
_CHROMA_POWER = 0.5
_NNLS: tuple[float, int] | None = (0.6, 8)
_ACT_POWER = 1.0
_HARMONIC_SEMITONES = [round(12 * math.log2(h)) for h in range(1, 21)]


def _note_activations(y: np.ndarray, decay: float, n_harm: int) -> np.ndarray:
    """Non-negative note amplitudes explaining a semitone spectrum y (index 0 = lowest note).

    The dictionary holds one column per note: its partials 1..n_harm at their nearest semitones
    with amplitudes decay**(h-1), the note-template model of NNLS chroma (Mauch & Dixon 2010).
    Solving y ~ D a with a >= 0 assigns the energy of upper partials back to the note that made
    them, so a major triad's overtones (the B and D of C-E-G) do not outweigh its chord tones.
    """
    import scipy.optimize

    n = len(y)
    dmat = np.zeros((n, n))
    for j in range(n):
        for h in range(n_harm):
            i = j + _HARMONIC_SEMITONES[h]
            if i < n:
                dmat[i, j] += decay ** h
    act, _ = scipy.optimize.nnls(dmat, y)
    return act


# --------------------------------------------------------------------------------------------
# helpers


def _as_2d(audio: np.ndarray) -> np.ndarray:
    arr = np.asarray(audio)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise ValueError(f"audio must be (channels, frames) or (frames,), got shape {arr.shape}")
    return arr


def _mono(audio: np.ndarray) -> np.ndarray:
    """float64 mono mix with non-finite samples zeroed (estimators never see NaN)."""
    arr = _as_2d(audio).astype(np.float64, copy=False)
    mono = arr.mean(axis=0) if arr.shape[0] > 1 else arr[0].copy()
    mono[~np.isfinite(mono)] = 0.0
    return mono


def _parabolic(values: np.ndarray, i: int) -> tuple[float, float]:
    """Vertex (position, value) of the parabola through values[i-1..i+1]."""
    if i <= 0 or i >= len(values) - 1:
        return float(i), float(values[i])
    a, b, c = float(values[i - 1]), float(values[i]), float(values[i + 1])
    denom = a - 2.0 * b + c
    if denom >= 0.0:  # not a strict maximum (flat or convex): no interpolation
        return float(i), b
    offset = 0.5 * (a - c) / denom
    offset = max(-0.5, min(0.5, offset))
    return i + offset, b - 0.25 * (a - c) * offset


# --------------------------------------------------------------------------------------------
# tempo


def _onset_envelope(x: np.ndarray, sample_rate: int, circular: bool) -> tuple[np.ndarray, float]:
    """Log-spectral flux, one value per ~10 ms frame, and the frame rate in Hz.

    Log magnitude makes the flux respond to relative (perceived) changes rather than to the
    loudest partial; half-wave rectification keeps onsets and drops offsets. In circular mode
    (loops) the frames tile the loop exactly and wrap around, so the envelope is itself periodic
    with the loop and its circular autocorrelation sees every beat at every lag.
    """
    n_fft = int(2 ** round(math.log2(0.046 * sample_rate)))  # 2048 at 44.1/48 kHz
    n_fft = max(64, n_fft)
    hop = 0.010 * sample_rate
    half = n_fft // 2
    if circular:
        n_frames = max(1, int(round(len(x) / hop)))
        step = len(x) / n_frames
        starts = np.round(np.arange(n_frames) * step).astype(np.int64)
        ext = np.pad(x, (half, half), mode="wrap")
        frame_rate = sample_rate / step
    else:
        step_i = max(1, int(round(hop)))
        n_frames = 1 + len(x) // step_i
        starts = np.arange(n_frames, dtype=np.int64) * step_i
        ext = np.pad(x, (half, half))
        frame_rate = sample_rate / step_i
    window = np.hanning(n_fft).astype(np.float32)
    frames = ext.astype(np.float32)[starts[:, None] + np.arange(n_fft)[None, :]] * window
    mag = np.abs(scipy.fft.rfft(frames, axis=1))
    peak = float(mag.max())
    if peak <= 0.0:
        return np.zeros(n_frames), frame_rate
    logmag = np.log1p(100.0 * mag / peak)
    prev = np.roll(logmag, 1, axis=0) if circular else np.vstack([logmag[:1], logmag[:-1]])
    flux = np.maximum(logmag - prev, 0.0).sum(axis=1).astype(np.float64)
    # Remove the slowly varying part (a ~1 s running mean: a high-pass well below beat rates)
    # so sustained loudness changes do not masquerade as periodicity.
    size = max(3, int(round(frame_rate)) | 1)
    local = scipy.ndimage.uniform_filter1d(flux, size=size, mode="wrap" if circular else "nearest")
    return np.maximum(flux - local, 0.0), frame_rate


def _autocorrelation(env: np.ndarray, circular: bool) -> np.ndarray:
    """Normalised (r[0] = 1) autocorrelation of the mean-removed envelope; the linear one is
    unbiased (divided by the overlap) so long lags are not penalised for short clips."""
    e = env - env.mean()
    n = len(e)
    if circular:
        spec = scipy.fft.rfft(e)
        acf = scipy.fft.irfft(np.abs(spec) ** 2, n=n)
    else:
        spec = scipy.fft.rfft(e, n=2 * n)
        acf = scipy.fft.irfft(np.abs(spec) ** 2, n=2 * n)[:n]
        acf = acf / (n - np.arange(n))
    if acf[0] <= 0.0:
        return np.zeros(n)
    return acf / acf[0]


def estimate_bpm(
    audio: np.ndarray,
    sample_rate: int,
    min_bpm: float = 60.0,
    max_bpm: float = 200.0,
    *,
    circular: bool = False,
) -> float | None:
    """Tempo in BPM within [min_bpm, max_bpm], or None when there is no rhythmic content.

    `circular=True` treats the audio as a loop (it repeats end-to-start): better on short loops,
    where a linear autocorrelation only overlaps a couple of beats at the longest lags. Octave
    errors (half / double the felt tempo) are inherent to the method; the tempo prior picks the
    octave nearest 120 BPM among equally periodic candidates, and `bpm_matches` accepts them.
    None is returned for a flat envelope (silence, sustained tones), for an envelope without a
    periodicity (noise), and when the clip is too short to hold two periods of `max_bpm`.
    """
    if min_bpm <= 0 or max_bpm <= min_bpm:
        raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
    x = _mono(audio)
    if len(x) < sample_rate * 0.25:
        return None
    env, frame_rate = _onset_envelope(x, sample_rate, circular)
    n = len(env)
    if n < 8 or float(env.std()) <= 1e-9 * max(1.0, float(env.max())):
        return None
    acf = _autocorrelation(env, circular)
    lag_lo = max(1, int(math.floor(60.0 / max_bpm * frame_rate)))
    lag_hi = min(int(math.ceil(60.0 / min_bpm * frame_rate)), n // 2)
    if lag_hi - lag_lo < 2:
        return None
    lags = np.arange(lag_lo, lag_hi + 1)
    # Ellis (2007) tempo prior: log-Gaussian over the period, centre 0.5 s, 1.4 octaves wide.
    prior = np.exp(-0.5 * (np.log2(lags / frame_rate / 0.5) / 1.4) ** 2)
    # Only local maxima of the autocorrelation are candidates (a range edge on a slope is not).
    cand = (acf[lags] >= acf[lags - 1]) & (acf[lags] >= acf[np.minimum(lags + 1, n - 1)])
    if not cand.any():
        return None
    score = np.where(cand, acf[lags] * prior, -np.inf)
    best = int(lags[int(np.argmax(score))])
    period, strength = _parabolic(acf, best)
    if strength < MIN_RHYTHM_STRENGTH:
        return None
    # Refine from the peaks at integer multiples of the period (least squares through 0).
    num, den = period, 1.0
    k = 2
    limit = n // 2 if circular else int(0.75 * n)
    while k * period + 2 < limit and k <= 16:
        centre = k * period
        half = max(1, int(math.ceil(0.04 * centre)))
        lo, hi = max(1, int(round(centre)) - half), min(limit, int(round(centre)) + half)
        i = lo + int(np.argmax(acf[lo : hi + 1]))
        if lo < i < hi and acf[i] >= 0.5 * strength:
            pos, _ = _parabolic(acf, i)
            num += k * pos
            den += k * k
        k += 1
    period = num / den
    return float(60.0 * frame_rate / period)


# Tempo ratios that count as the same tempo (octave errors): see bpm_matches.
BPM_RATIOS: tuple[float, ...] = (1.0, 2.0, 0.5)


def bpm_matches(estimated: float | None, requested: float, tolerance: float = 0.04) -> bool:
    """True when `estimated` is within ±tolerance (relative) of requested, 2x or 0.5x requested.

    Octave errors are allowed because a beat tracker cannot tell "half time" from "double time"
    (a 128 BPM loop with kicks on 1 and 3 is periodic at 64 BPM too) and a DAW syncs either way.
    Ratios 3/2 and 2/3 (triplet / dotted feels) are deliberately NOT accepted: they would also
    accept real tempo errors (80 vs 120 BPM is a different, clearly audible tempo), and a loop
    stretched 1.5x in a DAW is wrong. None (no rhythm detected) never matches.
    """
    if estimated is None or not math.isfinite(estimated) or requested <= 0:
        return False
    return any(abs(estimated - requested * r) <= tolerance * requested * r for r in BPM_RATIOS)


# --------------------------------------------------------------------------------------------
# key

_NOTE_OFFSETS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY_RE = re.compile(
    r"""^\s*
    (?P<tonic>[A-Ga-g])
    \s*(?P<acc>\#|♯|b|♭|-?\s*sharp|-?\s*flat)?
    \s*(?P<mode>[a-zA-Z]*)
    \s*$""",
    re.VERBOSE,
)
_MAJOR_WORDS = {"", "M", "maj", "major", "ma", "ionian", "dur"}
_MINOR_WORDS = {"m", "min", "minor", "mi", "aeolian", "moll"}


def parse_key(text: str) -> tuple[str, str]:
    """Parse a key name into (tonic with sharps, "major" | "minor").

    Accepts "A minor", "Amin", "Am", "A#maj", "Bb major", "B♭m", "F# minor", "f sharp minor",
    "C" (bare tonic = major), "CM" (capital M = major). Flats are spelled as their enharmonic
    sharps ("Bb" -> "A#", "Cb" -> "B", "E#" -> "F") so keys compare by pitch class.
    """
    if not isinstance(text, str):
        raise ValueError(f"key must be a string like 'A minor', got {text!r}")
    m = _KEY_RE.match(text)
    mode_word = m.group("mode") if m else ""
    if m and mode_word not in ("m", "M"):
        mode_word = mode_word.lower()
    if not m or (mode_word not in _MAJOR_WORDS and mode_word not in _MINOR_WORDS):
        raise ValueError(
            f"cannot parse key {text!r}: expected a tonic A-G, an optional # or b, and an "
            f"optional mode, e.g. 'A minor', 'Am', 'F# major', 'Bbmaj', 'C'"
        )
    pc = _NOTE_OFFSETS[m.group("tonic").upper()]
    acc = (m.group("acc") or "").replace("-", "").replace(" ", "").lower()
    if acc in ("#", "♯", "sharp"):
        pc += 1
    elif acc in ("b", "♭", "flat"):
        pc -= 1
    mode = "minor" if mode_word in _MINOR_WORDS else "major"
    return PITCH_CLASSES[pc % 12], mode


def _chroma(x: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """12-bin pitch-class amplitude of the tonal peaks of the averaged spectrum, or None.

    Welch averaging (~370 ms segments, 2.7 Hz bins at 44.1 kHz) summarises the whole clip; only
    peaks standing 10 dB above the local median spectrum count (partials, not noise or drums).
    Peak frequencies are interpolated, the clip's global tuning offset (cents) is estimated as
    the amplitude-weighted circular mean of the peaks' deviations and removed (generated audio
    is not always at A4 = 440), and each peak adds its amplitude to its nearest pitch class,
    weighted by cos^2 of its remaining deviation so in-between partials count little.
    """
    nper = int(2 ** round(math.log2(0.37 * sample_rate)))
    nper = min(nper, len(x))
    if nper < 256:
        return None
    freqs, psd = scipy.signal.welch(x, fs=sample_rate, nperseg=nper, noverlap=nper // 2, window="hann")
    if not np.any(psd > 0):
        return None
    floor = float(psd.max()) * 1e-12 + 1e-30
    # Median over 31 bins (~80 Hz at 44.1 kHz): the noise level around each bin, while the
    # partials of the lowest notes still stand out as separate peaks.
    med = scipy.ndimage.median_filter(psd, size=31, mode="nearest") + floor
    inner = psd[1:-1]
    is_peak = (inner > psd[:-2]) & (inner >= psd[2:]) & (inner > TONAL_PEAK_RATIO * med[1:-1])
    peaks = np.nonzero(is_peak)[0] + 1
    band = (freqs[peaks] >= KEY_FMIN_HZ * 0.95) & (freqs[peaks] <= KEY_FMAX_HZ * 1.05)
    peaks = peaks[band]
    if len(peaks) == 0:
        return None
    logp = np.log(psd + floor)
    a, b, c = logp[peaks - 1], logp[peaks], logp[peaks + 1]
    denom = a - 2 * b + c
    safe = np.where(denom < 0, denom, -1.0)
    delta = np.clip(np.where(denom < 0, 0.5 * (a - c) / safe, 0.0), -0.5, 0.5)
    bin_hz = float(freqs[1] - freqs[0])
    f = (peaks + delta) * bin_hz
    amp = np.exp(b - 0.25 * (a - c) * delta) ** _CHROMA_POWER
    keep = (f >= KEY_FMIN_HZ) & (f <= KEY_FMAX_HZ)
    f, amp = f[keep], amp[keep]
    if len(f) == 0 or float(amp.sum()) <= 0.0:
        return None
    midi = 69.0 + 12.0 * np.log2(f / 440.0)
    dev = midi - np.round(midi)
    tuning = float(np.angle(np.sum(amp * np.exp(2j * np.pi * dev))) / (2 * np.pi))
    midi = midi - tuning
    nearest = np.round(midi)
    weight = np.cos(np.pi * (midi - nearest)) ** 2
    if _NNLS is None:
        chroma = np.bincount(nearest.astype(np.int64) % 12, weights=amp * weight, minlength=12)
    else:
        notes = nearest.astype(np.int64)
        lo_note = int(notes.min())
        span = int(notes.max()) - lo_note + 1
        y = np.bincount(notes - lo_note, weights=amp * weight, minlength=span)
        act = _note_activations(y, *_NNLS)
        chroma = np.zeros(12)
        np.add.at(chroma, (np.arange(span) + lo_note) % 12, act ** _ACT_POWER)
    if float(chroma.sum()) <= 0.0:
        return None
    return chroma / chroma.sum()


def _key_scores(chroma: np.ndarray) -> np.ndarray:
    """(2, 12) Pearson correlations: [mode][tonic] with the rotated Krumhansl-Kessler profiles."""
    c = chroma - chroma.mean()
    out = np.empty((2, 12))
    for m, profile in enumerate((KK_MAJOR, KK_MINOR)):
        for tonic in range(12):
            prof = np.roll(profile, tonic) - profile.mean()
            denom = float(np.linalg.norm(c) * np.linalg.norm(prof))
            out[m, tonic] = float(c @ prof) / denom if denom > 0 else 0.0
    return out


def estimate_key(audio: np.ndarray, sample_rate: int) -> tuple[str, str, float] | None:
    """(tonic, "major" | "minor", correlation) of the best-matching key, or None.

    None means there is nothing tonal to judge: silence, noise, unpitched drums. The correlation
    (-1..1) is the Pearson correlation of the clip's chroma with the winning key profile; values
    under ~0.5 mean an ambiguous key. On short loops the relative major/minor pair (same notes)
    is the usual confusion, see `key_matches`.
    """
    x = _mono(audio)
    if len(x) == 0 or float(np.sqrt(np.mean(x * x))) < 1e-5:  # below -100 dBFS: silence
        return None
    chroma = _chroma(x, sample_rate)
    if chroma is None:
        return None
    scores = _key_scores(chroma)
    mode, tonic = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return PITCH_CLASSES[int(tonic)], MODES[int(mode)], float(scores[mode, tonic])


def relative_key(tonic: str, mode: str) -> tuple[str, str]:
    """The relative key (same notes): A minor <-> C major."""
    pc = PITCH_CLASSES.index(tonic)
    if mode == "major":
        return PITCH_CLASSES[(pc - 3) % 12], "minor"
    return PITCH_CLASSES[(pc + 3) % 12], "major"


def key_matches(
    estimated: tuple[str, str] | tuple[str, str, float] | None,
    requested: str,
    allow_relative: bool = True,
) -> bool:
    """True when the estimated key is the requested one (or its relative, if allowed).

    Relative keys (A minor / C major) share all seven notes; on a short loop whose chord
    progression may never cadence to the tonic, chroma-based estimation cannot separate them
    reliably (and a DAW user transposing by key root would not either), so they are accepted by
    default. `estimated` may be the 3-tuple `estimate_key` returns; None never matches.
    `requested` is parsed with `parse_key` (ValueError for garbage).
    """
    want = parse_key(requested)
    if estimated is None:
        return False
    got = parse_key(f"{estimated[0]} {estimated[1]}")
    if got == want:
        return True
    return allow_relative and relative_key(*got) == want


# --------------------------------------------------------------------------------------------
# loop seam


def seam_discontinuity(audio: np.ndarray, context: int = 441) -> float:
    """How audible the wrap point is when the loop repeats (end -> start); ~1 when seamless.

    Each channel is joined tail -> head (the last and first `context` samples, 10 ms at
    44.1 kHz) and run through the second difference e[n] = x[n] - 2x[n-1] + x[n-2], the error of
    predicting each sample by continuing the line through the two before it. A smooth signal has
    small, slowly varying errors; a jump at the seam leaves an error of the jump's size, and a
    slope mismatch (a kink) one of the slope change. The score is the largest error in the two
    samples that straddle the wrap divided by the largest error elsewhere in the window (floored
    at -80 dBFS, `SEAM_FLOOR`), max over channels. So a seamless wrap scores about 1 (the seam
    looks like its neighbours; noise and onsets at the seam too, since their neighbours are just
    as rough) and a click scores far above it: a sine cut at its peak scores in the hundreds.
    Compare with `SEAM_CLICK_THRESHOLD`. Non-finite samples count as 0.
    """
    arr = _as_2d(audio).astype(np.float64, copy=False)
    n = arr.shape[1]
    if n < 8:
        return 0.0
    w = max(4, min(context, n // 2))
    worst = 0.0
    for ch in arr:
        ch = np.where(np.isfinite(ch), ch, 0.0)
        joined = np.concatenate([ch[-w:], ch[:w]])  # the wrap sits between w-1 and w
        e = joined[2:] - 2.0 * joined[1:-1] + joined[:-2]  # e[i] predicts joined[i + 2]
        at_seam = np.abs(e[w - 2 : w])  # predicting joined[w] and joined[w + 1]: uses the wrap
        # Keep two samples between the seam errors and the reference so a click's own ringing
        # (none for a step, but 3-tap kinks) does not become its own reference.
        others = np.abs(np.concatenate([e[: max(0, w - 4)], e[w + 2 :]]))
        ref = max(float(others.max()) if others.size else 0.0, SEAM_FLOOR)
        worst = max(worst, float(at_seam.max()) / ref)
    return worst


# --------------------------------------------------------------------------------------------
# QC of one loop


@dataclass(frozen=True)
class QCThresholds:
    """Limits of `qc_loop`; the defaults suit normalised loops (see the module report)."""

    silence_dbfs: float = -60.0  # a 50 ms frame with RMS below this is silent
    max_silence_ratio: float = 0.5  # more silent frames than this = a problem
    clip_level: float = 0.999  # |x| >= this counts as a clipped sample
    max_clipped_ratio: float = 0.001  # more clipped samples than this (0.1 %) = a problem
    max_dc_offset: float = 0.02  # |mean| of a channel above this (-34 dBFS) = a problem
    seam_threshold: float = SEAM_CLICK_THRESHOLD
    bpm_tolerance: float = 0.04
    check_key: bool = True
    check_bpm: bool = True
    # Optional level limits on the caller's loudness figures; None = record only.
    max_true_peak_dbtp: float | None = None
    min_lufs: float | None = None


@dataclass
class QCReport:
    """QC figures of one loop; `problems` lists every failed check in words (empty = ok).

    None means "not measured / not applicable": *_ok is None when nothing was requested to
    compare with, the check is disabled, or the estimator found no rhythm / no tonal content
    (a pad has no tempo, a drum loop no key); that is recorded, not treated as a problem.
    """

    nan_or_inf: bool
    silence_ratio: float
    clipped_ratio: float
    dc_offset: float
    lufs: float | None
    true_peak_dbtp: float | None
    bpm_estimated: float | None
    bpm_ok: bool | None
    key_estimated: str | None
    key_ok: bool | None
    seam: float | None
    seam_ok: bool | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_columns(self) -> dict[str, Any]:
        """Flat metadata columns (all "qc_"-prefixed, JSON/Arrow-friendly: no NaN, no numpy)."""

        def num(v: float | None) -> float | None:
            return float(v) if v is not None and math.isfinite(v) else None

        return {
            "qc_nan": bool(self.nan_or_inf),
            "qc_silence_ratio": num(self.silence_ratio),
            "qc_clipped_ratio": num(self.clipped_ratio),
            "qc_dc_offset": num(self.dc_offset),
            "qc_lufs": num(self.lufs),
            "qc_true_peak_dbtp": num(self.true_peak_dbtp),
            "qc_bpm_estimated": num(self.bpm_estimated),
            "qc_bpm_ok": self.bpm_ok,
            "qc_key_estimated": self.key_estimated,
            "qc_key_ok": self.key_ok,
            "qc_seam": num(self.seam),
            "qc_seam_ok": self.seam_ok,
            "qc_problems": "; ".join(self.problems) if self.problems else None,
        }


def silence_ratio(audio: np.ndarray, sample_rate: int, silence_dbfs: float = -60.0, frame_s: float = 0.05) -> float:
    """Fraction of `frame_s` frames whose RMS (over all channels) is below `silence_dbfs`.

    dBFS here is 20*log10(RMS) with full scale 1.0 (a full-scale sine is -3 dBFS). A trailing
    partial frame counts as a frame; audio shorter than one frame is one frame.
    """
    arr = _as_2d(audio).astype(np.float64, copy=False)
    n = arr.shape[1]
    if n == 0:
        return 1.0
    size = max(1, int(round(frame_s * sample_rate)))
    n_frames = -(-n // size)
    padded = np.zeros((arr.shape[0], n_frames * size))
    padded[:, :n] = np.where(np.isfinite(arr), arr, 0.0)
    sq = np.square(padded).reshape(arr.shape[0], n_frames, size).sum(axis=(0, 2))
    counts = np.full(n_frames, size * arr.shape[0], dtype=np.float64)
    counts[-1] = (n - (n_frames - 1) * size) * arr.shape[0]
    rms = np.sqrt(sq / counts)
    return float(np.mean(rms < 10.0 ** (silence_dbfs / 20.0)))


def _bpm_range(requested: float | None) -> tuple[float, float]:
    """Default 60-200 BPM search, widened so a requested tempo outside it stays findable."""
    lo, hi = 60.0, 200.0
    if requested is not None and requested > 0:
        lo, hi = min(lo, requested / 1.15), max(hi, requested * 1.15)
    return lo, hi


def qc_loop(
    audio: np.ndarray,
    sample_rate: int,
    *,
    bpm: float | None = None,
    key: str | None = None,
    is_loop: bool = True,
    thresholds: QCThresholds = QCThresholds(),
    lufs: float | None = None,
    true_peak_dbtp: float | None = None,
) -> QCReport:
    """Measure one rendered (post-processed) loop and list its problems.

    `bpm` / `key` are the requested tempo and key (None: not checked, the estimates are still
    recorded). `lufs` / `true_peak_dbtp` are computed by the caller (acestep_batch.audio.loudness)
    and only recorded, unless `thresholds` sets limits for them. With NaN/Inf samples only that
    problem is reported: level figures are still measured over the finite samples (NaN -> 0),
    but tempo, key and seam are skipped (None). Entirely silent audio skips them too.
    """
    arr = _as_2d(audio)
    t = thresholds
    finite = np.isfinite(arr)
    n_bad = int(arr.size - np.count_nonzero(finite))
    clean = np.where(finite, arr, 0.0).astype(np.float64, copy=False)
    problems: list[str] = []

    if arr.size == 0:
        problems.append("empty: the audio has no samples")
    sil = silence_ratio(clean, sample_rate, t.silence_dbfs) if arr.size else 1.0
    clipped = float(np.count_nonzero(np.abs(clean) >= t.clip_level) / arr.size) if arr.size else 0.0
    dc = float(np.max(np.abs(clean.mean(axis=1)))) if arr.size else 0.0

    report = QCReport(
        nan_or_inf=n_bad > 0, silence_ratio=sil, clipped_ratio=clipped, dc_offset=dc,
        lufs=lufs, true_peak_dbtp=true_peak_dbtp, bpm_estimated=None, bpm_ok=None,
        key_estimated=None, key_ok=None, seam=None, seam_ok=None, problems=problems,
    )
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        problems.append(
            f"non-finite: {n_nan} NaN and {n_bad - n_nan} Inf samples "
            f"({100.0 * n_bad / arr.size:.2g} %); other checks skipped"
        )
        return report
    if arr.size == 0:
        return report

    if sil > t.max_silence_ratio:
        problems.append(
            f"silent: {100.0 * sil:.0f} % of the audio is below {t.silence_dbfs:g} dBFS "
            f"(limit {100.0 * t.max_silence_ratio:.0f} %)"
        )
    if clipped > t.max_clipped_ratio:
        problems.append(
            f"clipped: {100.0 * clipped:.2g} % of the samples at |x| >= {t.clip_level:g} "
            f"(limit {100.0 * t.max_clipped_ratio:.2g} %)"
        )
    if dc > t.max_dc_offset:
        problems.append(f"DC offset: {dc:.3f} (limit {t.max_dc_offset:g})")
    if t.max_true_peak_dbtp is not None and true_peak_dbtp is not None and true_peak_dbtp > t.max_true_peak_dbtp:
        problems.append(f"true peak {true_peak_dbtp:.1f} dBTP above {t.max_true_peak_dbtp:g} dBTP")
    if t.min_lufs is not None and lufs is not None and lufs < t.min_lufs:
        problems.append(f"loudness {lufs:.1f} LUFS below {t.min_lufs:g} LUFS")

    if sil >= 1.0:  # nothing audible: tempo, key and seam would be meaningless
        return report

    lo, hi = _bpm_range(bpm)
    est = estimate_bpm(clean, sample_rate, lo, hi, circular=is_loop)
    report.bpm_estimated = est
    if bpm is not None and t.check_bpm and est is not None:
        report.bpm_ok = bpm_matches(est, bpm, t.bpm_tolerance)
        if not report.bpm_ok:
            problems.append(
                f"tempo {est:.1f} BPM does not match the requested {bpm:g} "
                f"(±{100.0 * t.bpm_tolerance:g} %, octave errors allowed)"
            )

    found = estimate_key(clean, sample_rate)
    if found is not None:
        report.key_estimated = f"{found[0]} {found[1]}"
    if key is not None and t.check_key and found is not None:
        report.key_ok = key_matches(found, key)
        if not report.key_ok:
            want = " ".join(parse_key(key))
            problems.append(
                f"key {found[0]} {found[1]} does not match the requested {want} "
                f"(relative key allowed; correlation {found[2]:.2f})"
            )

    if is_loop:
        report.seam = seam_discontinuity(clean)
        report.seam_ok = report.seam <= t.seam_threshold
        if not report.seam_ok:
            problems.append(
                f"seam click: the wrap point stands out {report.seam:.1f}x from the audio around "
                f"it (limit {t.seam_threshold:g}x)"
            )
    return report
