"""Musical and technical QC of rendered loops: tempo, key, loop seam, level defects.

After a loop is rendered and post-processed, `qc_loop` measures it and lists its problems; a row
with problems is re-rendered with a new seed. Everything is plain numpy/scipy on the CPU (a 10 s
stereo clip takes ~0.15 s on one core), written from the published methods:

* tempo (`estimate_bpm`): half-wave-rectified log-spectral flux (~10 ms hop, averaged within
  octave bands so a broadband hi-hat does not drown the kick) as the onset-strength envelope,
  its autocorrelation over the lags of the tempo range weighted by a log-Gaussian tempo prior
  (Ellis 2007: centre 120 BPM, 1.4 octaves wide), parabolic peak interpolation, then the period
  refined from the peaks at its integer multiples (least squares through the origin: the k-th
  multiple pins the period k times more precisely). Loops are analysed circularly.
* key (`estimate_key`, `key_correlations`): a chromagram from the tonal peaks of an averaged
  (Welch) spectrum, each peak's energy given to its nearest equal-tempered pitch class (A4 =
  440 Hz after removing the clip's global tuning offset), correlated with the 24 rotated
  Krumhansl-Kessler key profiles.
* seam (`seam_discontinuity`): the linear-prediction error across the wrap point compared with
  the errors around it and with the most abrupt point of the rest of the loop.
* levels (`qc_loop`): NaN/Inf, silence ratio, clipped ratio, DC offset; LUFS and true peak come
  from the caller.

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

from .qc import as_2d

PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES: tuple[str, ...] = ("major", "minor")

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first (Krumhansl 1990, table 2.1).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# seam_discontinuity: a seamless wrap scores <= ~1, clicks score tens to thousands; 4 leaves
# room for a seam that is a little more abrupt than the loop's own transients.
SEAM_CLICK_THRESHOLD = 4.0

# Floor (-70 dBFS) of the reference of seam_discontinuity: a seam in near-silent or very smooth
# audio is judged against this instead of numerical noise, so only steps above ~-58 dBFS
# (4x the floor) can fail there; quieter steps are inaudible in practice.
SEAM_FLOOR = 10.0 ** (-70.0 / 20.0)

# Tempo: the normalised autocorrelation at the chosen period must reach MIN_RHYTHM_STRENGTH and
# stand MIN_RHYTHM_Z robust standard deviations above its median over the tempo range, else
# the envelope has no periodicity and estimate_bpm returns None. Measured on synthetic audio:
# white/pink noise peaks reach r 0.23 but z < 4; sustained chords (partial beating) r <= 0.33,
# z <= 9 but never both; drum patterns (even half-time, kick+snare once a bar) r >= 0.11, z >= 28.
MIN_RHYTHM_STRENGTH = 0.1
MIN_RHYTHM_Z = 6.0

# Key: a spectral peak counts as tonal when it stands this far (power ratio, 10 dB) above the
# running median of the spectrum around it; broadband noise and drums then yield no chroma.
TONAL_PEAK_RATIO = 10.0
KEY_FMIN_HZ = 60.0
KEY_FMAX_HZ = 5000.0
# QC accepts the requested key when its profile correlation is within this of the best key's.
KEY_SCORE_MARGIN = 0.1


# --------------------------------------------------------------------------------------------
# helpers


def _mono(audio: np.ndarray) -> np.ndarray:
    """float64 mono mix with non-finite samples zeroed (estimators never see NaN)."""
    arr = as_2d(audio)
    mono = arr.mean(axis=0, dtype=np.float64) if arr.shape[0] > 1 else arr[0].astype(np.float64)
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


# Edges of the onset-detection bands (octaves from ~30 Hz; the last band runs to Nyquist).
_FLUX_BAND_EDGES_HZ = np.array([30.0, 60.0, 120.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0])
_BLOCK_FRAMES = 512  # STFT frames per block (bounded memory on long inputs)


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
        n_frames = max(1, round(len(x) / hop))
        step = len(x) / n_frames
        starts = np.round(np.arange(n_frames) * step).astype(np.int64)
        ext = np.pad(x.astype(np.float32), (half, half), mode="wrap")
        frame_rate = sample_rate / step
    else:
        step_i = max(1, round(hop))
        n_frames = 1 + len(x) // step_i
        starts = np.arange(n_frames, dtype=np.int64) * step_i
        ext = np.pad(x.astype(np.float32), (half, half))
        frame_rate = sample_rate / step_i
    window = np.hanning(n_fft).astype(np.float32)
    # Magnitudes relative to that of a sinusoid at the clip's peak amplitude (an upper bound
    # of any bin), so the log compression is level-independent and blocks can be processed
    # alone: memory stays bounded for long inputs (4 MB per block instead of 200 MB for 4 min).
    ref = float(np.max(np.abs(x))) * float(window.sum()) / 2.0
    if ref <= 0.0:
        return np.zeros(n_frames), frame_rate
    offsets = np.arange(n_fft)[None, :]
    band = np.searchsorted(_FLUX_BAND_EDGES_HZ, np.arange(half + 1) * sample_rate / n_fft)
    first = np.nonzero(np.diff(band, prepend=-1))[0]  # bands are contiguous runs of bins
    widths = np.diff(np.append(first, half + 1))
    flux = np.empty(n_frames)
    prev: np.ndarray | None = None
    if circular:  # the frame before frame 0 is the last one (the loop wraps)
        last = ext[starts[-1:, None] + offsets] * window
        prev = np.log1p(100.0 * np.abs(scipy.fft.rfft(last, axis=1)) / ref)[0]
    for lo in range(0, n_frames, _BLOCK_FRAMES):
        block = ext[starts[lo : lo + _BLOCK_FRAMES, None] + offsets] * window
        logmag = np.log1p(100.0 * np.abs(scipy.fft.rfft(block, axis=1)) / ref)
        before = np.vstack([logmag[:1] if prev is None else prev[None, :], logmag[:-1]])
        prev = logmag[-1]
        rise = np.maximum(logmag - before, 0.0)
        # Average the flux within octave-wide bands, then add the bands: summed over linear
        # bins, a broadband hi-hat (hundreds of bins) would drown the kick (a handful of bins)
        # and the envelope would only show the hat grid, whose multiples (2 or 3 eighths) tie
        # for the beat.
        flux[lo : lo + len(block)] = (np.add.reduceat(rise, first, axis=1) / widths).sum(axis=1)
    # Remove the slowly varying part (a ~1 s running mean: a high-pass well below beat rates)
    # so sustained loudness changes do not masquerade as periodicity.
    size = max(3, round(frame_rate) | 1)
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
    periodicity (noise), and when the clip is too short for the range (it must hold two beats
    at `max_bpm`; tempos whose beat is longer than half the clip are not considered).
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
    lag_lo = max(1, math.floor(60.0 / max_bpm * frame_rate))
    lag_hi = min(math.ceil(60.0 / min_bpm * frame_rate), n // 2)
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
    # Rhythmic content: the chosen peak must be both substantial and stand out of the spread of
    # the autocorrelation over the tempo range (robust z-score: median / MAD), which a noise
    # envelope's largest chance peak does not (z < 4), while drum loops score z > 25.
    in_range = acf[lags]
    med = float(np.median(in_range))
    mad = 1.4826 * float(np.median(np.abs(in_range - med)))
    z = (strength - med) / mad if mad > 0 else math.inf
    if strength < MIN_RHYTHM_STRENGTH or z < MIN_RHYTHM_Z:
        return None
    # Refine from the peaks at integer multiples of the period (least squares through 0).
    num, den = period, 1.0
    k = 2
    limit = n // 2 if circular else int(0.75 * n)
    while k * period + 2 < limit and k <= 16:
        centre = k * period
        half = max(1, math.ceil(min(0.04 * centre, 0.25 * period)))
        lo, hi = max(1, round(centre) - half), min(limit, round(centre) + half)
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
        # ValueError, not TypeError: callers catch ValueError for any unusable key cell.
        raise ValueError(f"key must be a string like 'A minor', got {text!r}")  # noqa: TRY004
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
    """12-bin pitch-class energy of the tonal peaks of the averaged spectrum (sums to 1), or None.

    Welch averaging (~370 ms segments, 2.7 Hz bins at 44.1 kHz) summarises the whole clip; only
    peaks standing 10 dB above the local median spectrum count (partials, not noise or drums).
    Peak frequencies and powers are interpolated (parabola on the log power), the clip's global
    tuning offset is estimated as the energy-weighted circular mean of the peaks' deviations
    from the semitone grid and removed (generated audio is not always at A4 = 440), and each
    peak adds its energy to its nearest pitch class, weighted by cos^2 of its remaining deviation
    so in-between partials (the 7th harmonic, inharmonic noise) count little.
    Energy rather than amplitude: it favours fundamentals over upper partials (harmonic h of a
    1/h spectrum weighs 1/h^2), which measured better on triads (77 % vs 69 % exact over
    spectra from flat to steep) and progressions; amplitude lets a major triad's overtones
    (B and D of C-E-G) pull it to the mediant minor.
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
    energy = np.exp(b - 0.25 * (a - c) * delta)  # interpolated peak power
    keep = (f >= KEY_FMIN_HZ) & (f <= KEY_FMAX_HZ)
    f, energy = f[keep], energy[keep]
    if len(f) == 0 or float(energy.sum()) <= 0.0:
        return None
    midi = 69.0 + 12.0 * np.log2(f / 440.0)
    dev = midi - np.round(midi)
    tuning = float(np.angle(np.sum(energy * np.exp(2j * np.pi * dev))) / (2 * np.pi))
    midi = midi - tuning
    nearest = np.round(midi)
    weight = np.cos(np.pi * (midi - nearest)) ** 2
    chroma = np.bincount(nearest.astype(np.int64) % 12, weights=energy * weight, minlength=12)
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


def key_correlations(audio: np.ndarray, sample_rate: int) -> dict[tuple[str, str], float] | None:
    """Pearson correlation of the clip's chroma with each of the 24 key profiles, or None.

    Keys are (tonic, mode) tuples as `parse_key` returns them. None means there is nothing tonal
    to judge: silence, noise, unpitched drums.
    """
    x = _mono(audio)
    if len(x) == 0 or float(np.sqrt(np.mean(x * x))) < 1e-5:  # below -100 dBFS: silence
        return None
    chroma = _chroma(x, sample_rate)
    if chroma is None:
        return None
    scores = _key_scores(chroma)
    return {(PITCH_CLASSES[t], MODES[m]): float(scores[m, t]) for m in range(2) for t in range(12)}


def estimate_key(audio: np.ndarray, sample_rate: int) -> tuple[str, str, float] | None:
    """(tonic, "major" | "minor", correlation) of the best-matching key, or None.

    None means there is nothing tonal to judge: silence, noise, unpitched drums. The correlation
    (-1..1) is the Pearson correlation of the clip's chroma with the winning Krumhansl-Kessler
    profile; values under ~0.5 mean an ambiguous key. On short loops the relative major/minor
    pair (same notes) is the usual confusion, see `key_matches`; a lone major triad with strong
    upper partials also reads as its mediant minor (C-E-G + the overtone B -> E minor).
    """
    scores = key_correlations(audio, sample_rate)
    if scores is None:
        return None
    (tonic, mode), corr = max(scores.items(), key=lambda kv: kv[1])
    return tonic, mode, corr


def key_consistent(
    correlations: dict[tuple[str, str], float] | None,
    requested: str,
    margin: float = KEY_SCORE_MARGIN,
    allow_relative: bool = True,
) -> bool:
    """True when the requested key (or its relative) correlates within `margin` of the best key.

    This is the QC decision: a wrong-key verdict costs a re-render, so only a key that is
    clearly worse than the best one fails. On synthetic triads and chord progressions the true
    key is within 0.1 of the best in 95-99 % of clips, while keys a semitone, whole tone or
    tritone away, or the parallel mode, trail by > 0.25. Keys a fifth away share six of seven
    notes and cannot always be rejected (a lone C major triad reads close to E minor, the
    relative of G major).
    """
    want = parse_key(requested)
    if not correlations:
        return False
    best = max(correlations.values())
    keys = [want, relative_key(*want)] if allow_relative else [want]
    return any(correlations[k] >= best - margin for k in keys)


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


def _spike_ratios(x: np.ndarray, w: int) -> np.ndarray:
    """Per sample i of a loop (circular): how far the prediction error at i stands out.

    e[i] = x[i] - 2x[i-1] + x[i-2] is the error of predicting x[i] by continuing the line
    through the two samples before it: small and slowly varying for smooth audio, the size of
    the jump for a step, of the slope change for a kink. ratio[i] = max |e| over {i, i+1} (a
    step leaves two errors) / max |e| over the w samples before and the w after those two,
    floored at SEAM_FLOOR.
    """
    e = np.abs(x - 2.0 * np.roll(x, 1) + np.roll(x, 2))
    pair = np.maximum(e, np.roll(e, -1))
    window_max = scipy.ndimage.maximum_filter1d(e, size=w, mode="wrap")  # e[j - w//2 .. +w-1]
    before = np.roll(window_max, w - w // 2)  # max e[i-w .. i-1]
    after = np.roll(window_max, -(2 + w // 2))  # max e[i+2 .. i+w+1]
    return pair / np.maximum(np.maximum(before, after), SEAM_FLOOR)


def seam_discontinuity(audio: np.ndarray, context: int = 441) -> float:
    """How much the wrap point (end -> start) stands out when the loop repeats; <= ~1 if seamless.

    The seam's spike ratio (see `_spike_ratios`: its linear-prediction error over the largest
    error within `context` samples, 10 ms at 44.1 kHz, on either side) divided by the largest
    spike ratio anywhere else in the loop, floored at 1; max over channels.

    Why these choices: the second difference catches both a jump (|x[0] - x[-1]| too large) and
    a slope mismatch; comparing with the neighbourhood makes it level-independent and lets noise
    and hi-hats at the seam pass (their neighbours are as rough); comparing with the rest of the
    loop excuses a seam that is no more abrupt than the loop's own transients (a synthetic kick
    starting right on the downbeat). Scale: a seamless wrap scores about 1 or less (a sine
    ending on a whole period scores ~0.06, white noise ~0.3); a sine cut at its peak scores in
    the hundreds, a cut mid-period in the tens. Compare with `SEAM_CLICK_THRESHOLD`.
    Non-finite samples count as 0. Cost: O(n), ~25 ms per channel for 10 s at 44.1 kHz.
    """
    arr = as_2d(audio).astype(np.float64, copy=False)
    n = arr.shape[1]
    if n < 16:
        return 0.0
    w = max(2, min(int(context), (n - 8) // 4))
    worst = 0.0
    for ch in arr:
        ch = np.where(np.isfinite(ch), ch, 0.0)
        ratios = _spike_ratios(ch, w)
        body = ratios[w + 3 : n - w - 3]
        body_max = float(body.max()) if body.size else 0.0
        worst = max(worst, float(ratios[0]) / max(1.0, body_max))
    return worst


# --------------------------------------------------------------------------------------------
# QC of one loop


@dataclass(frozen=True)
class QCThresholds:
    """Limits of `qc_loop`. The defaults suit loops normalised to about -14 LUFS / -1 dBTP."""

    silence_dbfs: float = -60.0  # a 50 ms frame with RMS below this is silent
    max_silence_ratio: float = 0.5  # more silent frames than this = a problem
    clip_level: float = 0.999  # |x| >= this counts as a clipped sample
    max_clipped_ratio: float = 0.001  # more clipped samples than this (0.1 %) = a problem
    max_dc_offset: float = 0.02  # |mean| of a channel above this (-34 dBFS) = a problem
    seam_threshold: float = SEAM_CLICK_THRESHOLD
    bpm_tolerance: float = 0.04
    key_margin: float = KEY_SCORE_MARGIN  # see key_consistent
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
    arr = as_2d(audio).astype(np.float64, copy=False)
    n = arr.shape[1]
    if n == 0:
        return 1.0
    size = max(1, round(frame_s * sample_rate))
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
    The tempo is searched in 60-200 BPM (widened to include a requested tempo outside it).
    Raises ValueError for a `key` that `parse_key` cannot read.
    """
    arr = as_2d(audio)
    t = thresholds
    key = key or None  # "" = no key (drum loops)
    if key is not None:
        parse_key(key)  # a bad request is the caller's bug: fail loudly, before any work
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

    corrs = key_correlations(clean, sample_rate)
    if corrs is not None:
        (tonic, mode), corr = max(corrs.items(), key=lambda kv: kv[1])
        report.key_estimated = f"{tonic} {mode}"
        if key is not None and t.check_key:
            report.key_ok = key_consistent(corrs, key, t.key_margin)
            if not report.key_ok:
                want = parse_key(key)
                problems.append(
                    f"key {tonic} {mode} does not match the requested {want[0]} {want[1]} "
                    f"(correlation {corr:.2f} vs {corrs[want]:.2f}; relative key allowed)"
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
