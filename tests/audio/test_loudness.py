"""BS.1770-4 loudness, true peak, normalisation and dither against known answers.

The reference cases are the EBU Tech 3341 (EBU R128 meter) minimum-requirement signals: stereo
1 kHz sines at a given dBFS peak level on both channels read that many LUFS, because the
K-weighting gain at 1 kHz (+0.691 dB) cancels the -0.691 offset and the two channels' mean
squares (A^2/2 each) add to A^2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from acestep_batch.audio.loudness import (
    LoudnessResult,
    integrated_lufs,
    k_weighting_sos,
    normalize,
    sample_peak_dbfs,
    tpdf_dither,
    true_peak_dbtp,
)

FS = 48000


def tone(
    dbfs: float, seconds: float, fs: int = FS, hz: float = 1000.0, channels: int = 2
) -> np.ndarray:
    t = np.arange(round(seconds * fs)) / fs
    wave = 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)
    return np.tile(wave, (channels, 1)).astype(np.float32)


def sequence(*parts: tuple[float, float], fs: int = FS) -> np.ndarray:
    """Concatenated 1 kHz stereo tones given as (dBFS, seconds); phase-continuous."""
    total = sum(round(s * fs) for _, s in parts)
    t = np.arange(total) / fs
    levels = np.concatenate([np.full(round(s * fs), 10 ** (db / 20)) for db, s in parts])
    wave = levels * np.sin(2 * np.pi * 1000.0 * t)
    return np.tile(wave, (2, 1)).astype(np.float32)


def music_like(seconds: float, fs: int, seed: int = 0, level: float = 0.05) -> np.ndarray:
    """Pink-ish stereo noise: broadband, moderate crest factor."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((2, round(seconds * fs)))
    spectrum = np.fft.rfft(white, axis=-1)
    freqs = np.fft.rfftfreq(white.shape[1], 1 / fs)
    spectrum[:, 1:] /= np.sqrt(freqs[1:])
    spectrum[:, 0] = 0
    pink = np.fft.irfft(spectrum, n=white.shape[1], axis=-1)
    return (level * pink / pink.std()).astype(np.float32)


# --- K-weighting -------------------------------------------------------------------------


def test_k_weighting_reproduces_the_bs1770_48k_table() -> None:
    sos = k_weighting_sos(48000)
    shelf = [
        1.53512485958697,
        -2.69169618940638,
        1.19839281085285,
        1.0,
        -1.69065929318241,
        0.73248077421585,
    ]
    highpass = [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621]
    np.testing.assert_allclose(sos[0], shelf, atol=1e-6)
    np.testing.assert_allclose(sos[1], highpass, atol=1e-6)


@pytest.mark.parametrize("fs", [16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000])
def test_k_weighting_has_the_same_response_at_any_rate(fs: int) -> None:
    """Derived per rate, so the +4 dB shelf and the 38 Hz high-pass do not move with fs (the
    bilinear transform's frequency warping leaves a few hundredths of a dB at low rates)."""
    from scipy import signal

    freqs = [20.0, 38.0, 100.0, 1000.0, 3000.0, 7000.0]
    _, h = signal.sosfreqz(k_weighting_sos(fs), worN=freqs, fs=fs)
    _, ref = signal.sosfreqz(k_weighting_sos(48000), worN=freqs, fs=48000)
    tolerance = 0.01 if fs >= 32000 else 0.08
    np.testing.assert_allclose(20 * np.log10(np.abs(h)), 20 * np.log10(np.abs(ref)), atol=tolerance)


# --- integrated loudness (EBU Tech 3341 cases) --------------------------------------------


@pytest.mark.parametrize("dbfs", [-23.0, -33.0, -18.0])
def test_stereo_1k_sine_reads_its_dbfs_level(dbfs: float) -> None:
    """Tech 3341 cases 1 and 2 (-23 and -33 dBFS -> -23 and -33 LUFS, +-0.1)."""
    assert integrated_lufs(tone(dbfs, 20.0), FS) == pytest.approx(dbfs, abs=0.1)


def test_44k1_and_mono() -> None:
    assert integrated_lufs(tone(-23.0, 20.0, fs=44100), 44100) == pytest.approx(-23.0, abs=0.1)
    # One channel carries half the power of two: -3.01 LU.
    mono = tone(-23.0, 20.0, channels=1)
    assert integrated_lufs(mono, FS) == pytest.approx(-26.01, abs=0.1)
    assert integrated_lufs(mono[0], FS) == integrated_lufs(mono, FS)


def test_997hz_sine() -> None:
    assert integrated_lufs(tone(-20.0, 10.0, hz=997.0), FS) == pytest.approx(-20.0, abs=0.1)


def test_absolute_gate_ignores_near_silence() -> None:
    """Half the clip at -80 dBFS (below the -70 LUFS gate) does not pull the reading down."""
    audio = sequence((-23.0, 20.0), (-80.0, 20.0))
    assert integrated_lufs(audio, FS) == pytest.approx(-23.0, abs=0.1)
    digital_silence = np.concatenate(
        [tone(-23.0, 20.0), np.zeros((2, 20 * FS), np.float32)], axis=1
    )
    assert integrated_lufs(digital_silence, FS) == pytest.approx(-23.0, abs=0.1)


def test_relative_gate_tech3341_case3_and_case4() -> None:
    """-36 dBFS passages are more than 10 LU below the rest: gated out, the reading stays -23."""
    case3 = sequence((-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0))
    assert integrated_lufs(case3, FS) == pytest.approx(-23.0, abs=0.1)
    case4 = sequence((-72.0, 10.0), (-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0), (-72.0, 10.0))
    assert integrated_lufs(case4, FS) == pytest.approx(-23.0, abs=0.1)
    # Without the relative gate the -36 dB passages would count: the plain power mean is lower.
    power = np.mean(np.square(case3.astype(np.float64)))
    assert 10 * math.log10(2 * power) < -23.5


def test_tech3341_case5_levels_within_10_lu_all_count() -> None:
    audio = sequence((-26.0, 20.0), (-20.0, 20.1), (-26.0, 20.0))
    assert integrated_lufs(audio, FS) == pytest.approx(-23.0, abs=0.1)


def test_silence_and_empty_read_minus_inf() -> None:
    assert integrated_lufs(np.zeros((2, FS * 2), np.float32), FS) == -math.inf
    assert integrated_lufs(np.zeros((2, 0), np.float32), FS) == -math.inf
    assert integrated_lufs(tone(-85.0, 5.0), FS) == -math.inf  # entirely below the absolute gate


def test_clip_shorter_than_a_block_is_one_block() -> None:
    short = tone(-23.0, 0.25)
    assert integrated_lufs(short, FS) == pytest.approx(-23.0, abs=0.2)


def test_refuses_nan_and_bad_shapes() -> None:
    bad = tone(-23.0, 1.0)
    bad[0, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        integrated_lufs(bad, FS)
    with pytest.raises(ValueError, match="shape"):
        integrated_lufs(np.zeros((1, 2, 3), np.float32), FS)
    with pytest.raises(ValueError, match="sample_rate"):
        integrated_lufs(tone(-23.0, 1.0), 0)


# --- peaks -------------------------------------------------------------------------------


def test_true_peak_finds_inter_sample_peaks() -> None:
    """A sine at fs/4 with a 45 degree phase only ever gets sampled at +-0.707 of its amplitude:
    the true peak is 3.01 dB above the sample peak. Faded in/out so the file edges do not ring."""
    n = np.arange(FS)
    wave = 0.5 * np.sin(np.pi / 2 * n + np.pi / 4)
    fade = np.ones_like(wave)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, 2000))
    fade[:2000], fade[-2000:] = ramp, ramp[::-1]
    audio = np.tile(wave * fade, (2, 1)).astype(np.float32)
    assert sample_peak_dbfs(audio) == pytest.approx(20 * math.log10(0.5) - 3.01, abs=0.01)
    assert true_peak_dbtp(audio, FS) == pytest.approx(20 * math.log10(0.5), abs=0.05)
    assert true_peak_dbtp(audio, FS) - sample_peak_dbfs(audio) == pytest.approx(3.01, abs=0.06)


@pytest.mark.parametrize("seed", range(4))
def test_true_peak_never_below_sample_peak(seed: int) -> None:
    rng = np.random.default_rng(seed)
    audio = (rng.uniform(-0.9, 0.9, (2, 100_000))).astype(np.float32)
    assert true_peak_dbtp(audio, 44100) >= sample_peak_dbfs(audio)


def test_true_peak_of_a_low_tone_equals_its_sample_peak() -> None:
    audio = tone(-6.0, 2.0, hz=100.0)
    assert true_peak_dbtp(audio, FS) == pytest.approx(-6.0, abs=0.01)


def test_true_peak_long_input_is_chunked_consistently() -> None:
    """Chunk boundaries (every 65536 frames) must not create or hide peaks."""
    from scipy import signal

    from acestep_batch.audio.loudness import _interpolator

    audio = music_like(5.0, 44100, seed=3, level=0.2)
    whole = np.abs(
        signal.resample_poly(audio.astype(np.float64), 4, 1, axis=-1, window=_interpolator(4))
    ).max()
    assert true_peak_dbtp(audio, 44100) == pytest.approx(20 * math.log10(whole), abs=1e-9)


def test_peaks_of_silence() -> None:
    silence = np.zeros((2, 1000), np.float32)
    assert true_peak_dbtp(silence, FS) == -math.inf
    assert sample_peak_dbfs(silence) == -math.inf
    assert sample_peak_dbfs(np.full((2, 10), 0.5, np.float32)) == pytest.approx(-6.0206, abs=1e-4)


# --- normalize ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", [-14.0, -16.0, -23.0])
def test_normalize_lufs_hits_the_target(target: float) -> None:
    audio = music_like(8.0, 44100, level=0.02)  # about -31 LUFS, crest ~12 dB
    result = normalize(audio, 44100, target_lufs=target)
    assert isinstance(result, LoudnessResult)
    assert not result.limited_by_ceiling
    assert result.mode == "lufs"
    assert result.lufs_after == pytest.approx(target, abs=0.1)
    assert integrated_lufs(result.audio, 44100) == pytest.approx(target, abs=0.1)
    assert result.gain_db == pytest.approx(target - result.lufs_before, abs=0.05)
    assert result.true_peak_after <= -1.0 + 0.05
    assert result.audio.dtype == np.float32 and result.audio.shape == audio.shape


def test_normalize_lufs_lowers_the_gain_to_respect_the_ceiling() -> None:
    """Sparse clicks: very peaky, so -14 LUFS would put the peaks far above -1 dBTP."""
    audio = np.zeros((2, 44100 * 4), np.float32)
    audio[:, ::11025] = 0.5
    audio += music_like(4.0, 44100, level=0.001)
    result = normalize(audio, 44100, target_lufs=-14.0, ceiling_dbtp=-1.0)
    assert result.limited_by_ceiling
    assert result.true_peak_after == pytest.approx(-1.0, abs=0.05)
    assert true_peak_dbtp(result.audio, 44100) <= -1.0 + 0.05
    assert result.lufs_after < -14.0 - 1.0
    assert result.lufs_after == pytest.approx(integrated_lufs(result.audio, 44100), abs=1e-6)


def test_normalize_can_cut_a_loud_input() -> None:
    audio = music_like(4.0, 44100, level=0.3)
    result = normalize(audio, 44100, target_lufs=-14.0)
    assert result.gain_db < 0
    if not result.limited_by_ceiling:
        assert result.lufs_after == pytest.approx(-14.0, abs=0.1)
    assert result.true_peak_after <= -1.0 + 0.05


@pytest.mark.parametrize("peak", [-1.0, -3.0, -0.3])
def test_normalize_peak_mode(peak: float) -> None:
    audio = music_like(4.0, 44100, level=0.05)
    result = normalize(audio, 44100, mode="peak", peak_dbfs=peak, ceiling_dbtp=-0.1)
    assert result.mode == "peak"
    assert result.true_peak_after == pytest.approx(peak, abs=0.05)
    assert true_peak_dbtp(result.audio, 44100) == pytest.approx(peak, abs=0.05)
    assert not result.limited_by_ceiling


def test_normalize_peak_mode_still_respects_the_ceiling() -> None:
    audio = music_like(4.0, 44100, level=0.05)
    result = normalize(audio, 44100, mode="peak", peak_dbfs=0.0, ceiling_dbtp=-1.0)
    assert result.limited_by_ceiling
    assert result.true_peak_after == pytest.approx(-1.0, abs=0.05)


@pytest.mark.parametrize("mode", ["lufs", "peak"])
def test_normalize_leaves_silence_alone(mode: str) -> None:
    silence = np.zeros((2, 44100), np.float32)
    result = normalize(silence, 44100, mode=mode)
    assert result.gain_db == 0.0
    assert result.lufs_before == -math.inf and result.true_peak_before == -math.inf
    assert not result.limited_by_ceiling
    np.testing.assert_array_equal(result.audio, silence)


def test_normalize_lufs_leaves_audio_below_the_gate_alone() -> None:
    quiet = tone(-85.0, 2.0)
    result = normalize(quiet, FS)
    assert result.lufs_before == -math.inf and result.gain_db == 0.0
    np.testing.assert_array_equal(result.audio, quiet)


def test_normalize_keeps_1d_shape_and_rejects_bad_arguments() -> None:
    mono = music_like(2.0, 44100)[0]
    assert normalize(mono, 44100).audio.shape == mono.shape
    with pytest.raises(ValueError, match="mode"):
        normalize(mono, 44100, mode="rms")
    with pytest.raises(ValueError, match="target_lufs"):
        normalize(mono, 44100, target_lufs=float("nan"))


# --- dither ------------------------------------------------------------------------------


def test_tpdf_dither_is_small_centred_and_deterministic() -> None:
    audio = music_like(2.0, 44100, level=0.1)
    lsb = 1 / 32768
    dithered = tpdf_dither(audio, 16, seed=7)
    noise = dithered - audio.astype(np.float64)
    assert np.abs(noise).max() <= lsb  # +-1 LSB before rounding (<= 1.5 LSB after)
    assert abs(noise.mean()) < 0.01 * lsb
    assert noise.std() == pytest.approx(lsb / math.sqrt(6), rel=0.02)  # TPDF variance: LSB^2/6
    np.testing.assert_array_equal(dithered, tpdf_dither(audio, 16, seed=7))
    assert not np.array_equal(dithered, tpdf_dither(audio, 16, seed=8))
    left, right = noise
    assert abs(np.corrcoef(left, right)[0, 1]) < 0.02  # independent per channel


def test_tpdf_dither_range_and_arguments() -> None:
    full = np.array([[1.0, -1.0, 0.0]], np.float32)
    out = tpdf_dither(full, 16, seed=1)
    assert out.max() <= 1 - 1 / 32768 and out.min() >= -1.0
    assert tpdf_dither(full, 24, seed=-5).shape == full.shape  # negative seeds are fine
    with pytest.raises(ValueError, match="bits"):
        tpdf_dither(full, 1, seed=0)
