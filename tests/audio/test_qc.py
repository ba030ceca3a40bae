"""Quality checks on synthetic waves with known levels and defects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from acestep_batch.audio.qc import DBFS_FLOOR, QCReport, check_audio, sanitize


def sine(amp: float, n: int = 48000, channels: int = 2) -> np.ndarray:
    t = np.arange(n) / 48000
    return np.tile(amp * np.sin(2 * np.pi * 440.0 * t + 0.1), (channels, 1)).astype(np.float32)


def test_clean_sine_levels() -> None:
    report = check_audio(sine(0.5))
    assert isinstance(report, QCReport)
    assert report.peak_dbfs == pytest.approx(-6.02, abs=0.01)
    assert report.rms_dbfs == pytest.approx(-6.02 - 3.01, abs=0.02)  # sine RMS = peak/sqrt(2)
    assert report.ok and not report.silent
    assert report.clipped_samples == 0 and report.nonfinite_samples == 0
    assert report.problems == []


def test_nan_and_inf_are_not_ok() -> None:
    wave = sine(0.5)
    wave[0, 10] = np.nan
    wave[1, 20] = np.inf
    wave[1, 30] = -np.inf
    report = check_audio(wave)
    assert report.nonfinite_samples == 3
    assert not report.ok
    assert any("nonfinite" in p and "1 NaN" in p and "2 Inf" in p for p in report.problems)
    # Levels are measured on the finite samples; an Inf is not a "clipped" sample.
    assert report.peak_dbfs == pytest.approx(-6.02, abs=0.01)
    assert report.clipped_samples == 0


def test_all_nan_is_silent_and_not_ok() -> None:
    report = check_audio(np.full((2, 100), np.nan, np.float32))
    assert report.nonfinite_samples == 200
    assert report.silent and not report.ok
    assert report.peak_dbfs == DBFS_FLOOR


def test_digital_silence() -> None:
    report = check_audio(np.zeros((2, 48000), np.float32))
    assert report.silent and not report.ok
    assert report.peak_dbfs == DBFS_FLOOR == -200.0
    assert report.rms_dbfs == DBFS_FLOOR
    assert math.isfinite(report.peak_dbfs)
    assert any(p.startswith("silent") for p in report.problems)


def test_quiet_threshold() -> None:
    quiet = sine(10 ** (-70 / 20))  # -70 dBFS peak
    report = check_audio(quiet)
    assert report.peak_dbfs == pytest.approx(-70.0, abs=0.01)
    assert report.silent and not report.ok
    assert check_audio(quiet, silence_threshold_dbfs=-80.0).ok
    assert check_audio(sine(10 ** (-50 / 20))).ok


def test_clipping_counted_but_ok() -> None:
    wave = sine(0.5)
    wave[0, :5] = 1.0
    wave[1, :3] = -1.2
    wave[1, 3] = 0.9995  # above the default clip level 0.999
    wave[1, 4] = 0.998  # below it
    report = check_audio(wave)
    assert report.clipped_samples == 9
    assert report.ok
    assert any(p.startswith("clipped: 9") for p in report.problems)
    assert report.peak_dbfs == pytest.approx(20 * math.log10(1.2), abs=1e-4)
    assert check_audio(wave, clip_level=0.9).clipped_samples == 10


def test_mono_1d_and_empty() -> None:
    assert check_audio(sine(0.5, channels=1)[0]).ok
    empty = check_audio(np.zeros((2, 0), np.float32))
    assert not empty.ok and any(p.startswith("empty") for p in empty.problems)


def test_sanitize() -> None:
    wave = sine(0.5)
    wave[0, 1] = np.nan
    wave[1, 2] = np.inf
    wave[1, 3] = -np.inf
    clean = sanitize(wave)
    assert clean.dtype == np.float32 and clean.shape == wave.shape
    assert np.isfinite(clean).all()
    assert clean[0, 1] == 0.0 and clean[1, 2] == 0.0 and clean[1, 3] == 0.0
    mask = np.isfinite(wave)
    np.testing.assert_array_equal(clean[mask], wave[mask])
    assert np.isnan(wave[0, 1])  # input left untouched
    assert check_audio(clean).ok
