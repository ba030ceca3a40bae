"""Cheap per-file quality checks on generated audio.

A generated track can come out broken (NaN/Inf from a numerically unstable step, digital
silence, hard clipping). The batch job records a `QCReport` next to each file so such items can
be filtered or re-rendered later instead of silently ending up in a dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# dBFS value reported for digital silence: finite, so it survives JSON/Parquet and sorting
# (log10(0) would be -inf). Far below anything a real signal produces (-200 dB ~ 1e-10).
DBFS_FLOOR = -200.0


@dataclass
class QCReport:
    """Result of `check_audio`. `ok` is False for NaN/Inf or silence; clipping only warns."""

    peak_dbfs: float
    rms_dbfs: float
    clipped_samples: int
    nonfinite_samples: int
    silent: bool
    ok: bool
    problems: list[str] = field(default_factory=list)


def _dbfs(amplitude: float) -> float:
    if amplitude <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * math.log10(amplitude))


def as_2d(wave: np.ndarray) -> np.ndarray:
    """(channels, samples) view of a wave; a 1-D wave is one channel."""
    arr = np.asarray(wave)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise ValueError(f"wave must be (channels, samples) or (samples,), got shape {arr.shape}")
    return arr


def check_audio(
    wave: np.ndarray,
    silence_threshold_dbfs: float = -60.0,
    clip_level: float = 0.999,
) -> QCReport:
    """Measure a (channels, samples) float wave and list its problems.

    Sample counts are over individual values (a stereo frame clipped in both channels counts
    2). Peak and RMS are over the finite values only, so one NaN does not hide the level of the
    rest; dBFS is relative to full scale 1.0 and floored at `DBFS_FLOOR` for digital silence.
    """
    arr = as_2d(wave).astype(np.float64, copy=False)
    finite_mask = np.isfinite(arr)
    nonfinite = int(arr.size - np.count_nonzero(finite_mask))
    finite = np.abs(arr[finite_mask])

    peak = float(finite.max()) if finite.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(finite)))) if finite.size else 0.0
    clipped = int(np.count_nonzero(finite >= clip_level))
    peak_dbfs = _dbfs(peak)
    rms_dbfs = _dbfs(rms)

    problems: list[str] = []
    if arr.size == 0:
        problems.append("empty: no samples")
    if nonfinite:
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        problems.append(f"nonfinite: {n_nan} NaN and {nonfinite - n_nan} Inf samples")
    silent = peak_dbfs < silence_threshold_dbfs
    if silent:
        problems.append(
            f"silent: peak {peak_dbfs:.1f} dBFS below {silence_threshold_dbfs:.1f} dBFS"
        )
    if clipped:
        problems.append(f"clipped: {clipped} samples at |x| >= {clip_level}")

    ok = arr.size > 0 and nonfinite == 0 and not silent
    return QCReport(
        peak_dbfs=peak_dbfs,
        rms_dbfs=rms_dbfs,
        clipped_samples=clipped,
        nonfinite_samples=nonfinite,
        silent=silent,
        ok=ok,
        problems=problems,
    )


def sanitize(wave: np.ndarray) -> np.ndarray:
    """Return a float32 copy with NaN/Inf replaced by 0, so a broken item can still be
    written (and listened to) for inspection; the QC report keeps the original counts."""
    arr = np.array(wave, dtype=np.float32, copy=True)
    arr[~np.isfinite(arr)] = 0.0
    return arr
