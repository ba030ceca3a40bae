"""Loop QC detectors on synthetic audio with known content and known defects.

Every signal is generated here (seeded): a clean loop (a triad with harmonics, a bass note and a
kick/hi-hat pattern, all periodic in the loop length so it wraps seamlessly) must pass every
check, and each defect (silence, clipping, NaN, DC, wrong tempo, wrong key, seam click) must be
caught by its detector and named in `problems`.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from acestep_batch.audio.analysis import (
    PITCH_CLASSES,
    SEAM_CLICK_THRESHOLD,
    QCReport,
    QCThresholds,
    bpm_matches,
    estimate_bpm,
    estimate_key,
    key_consistent,
    key_correlations,
    key_matches,
    parse_key,
    qc_loop,
    relative_key,
    seam_discontinuity,
    silence_ratio,
)

SR = 44100
QC_COLUMNS = {
    "qc_nan", "qc_silence_ratio", "qc_clipped_ratio", "qc_dc_offset", "qc_lufs", "qc_true_peak_dbtp",
    "qc_bpm_estimated", "qc_bpm_ok", "qc_key_estimated", "qc_key_ok", "qc_seam", "qc_seam_ok",
    "qc_problems",
}


# ------------------------------------------------------------------------------------------
# synthetic audio


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _add_circular(buf: np.ndarray, event: np.ndarray, start: int) -> None:
    """Add `event` at `start`, wrapping its tail to the head: the loop stays seamless."""
    idx = (start + np.arange(event.shape[-1])) % buf.shape[-1]
    np.add.at(buf, idx, event)


def clean_loop(bpm: float = 120.0, bars: int = 2, tonic_midi: int = 60, minor: bool = False,
               seed: int = 0) -> np.ndarray:
    """Stereo loop of whole 4/4 bars: triad (4 harmonics) + bass root + kick on beats + 8th hats.

    Tone frequencies are rounded to whole cycles per loop and the drum hits wrap around, so the
    loop repeats without a seam (the rounding detunes by < 0.15 Hz).
    """
    rng = np.random.default_rng(seed)
    beat = 60.0 / bpm
    n = round(bars * 4 * beat * SR)
    length_s = n / SR
    t = np.arange(n) / SR
    x = np.zeros(n)

    def periodic(f: float) -> float:
        return round(f * length_s) / length_s

    for interval in (0, 3, 7) if minor else (0, 4, 7):
        f0 = _midi_hz(tonic_midi + interval)
        for h in range(1, 5):
            x += 0.08 / h * np.sin(2 * np.pi * periodic(f0 * h) * t + rng.uniform(0, 2 * np.pi))
    x += 0.12 * np.sin(2 * np.pi * periodic(_midi_hz(tonic_midi - 24)) * t)
    kt = np.arange(int(0.25 * SR)) / SR
    kick = 0.5 * np.sin(2 * np.pi * (50 * kt + 1.8 * (1 - np.exp(-kt / 0.03)))) * np.exp(-kt / 0.08)
    kick *= np.minimum(1.0, kt / 0.002)  # 2 ms attack, like a real kick
    ht = np.arange(int(0.05 * SR)) / SR
    for b in range(bars * 4):
        _add_circular(x, kick, round(b * beat * SR))
    for e in range(bars * 8):
        hat = np.diff(0.15 * rng.standard_normal(len(ht)) * np.exp(-ht / 0.01), prepend=0.0)
        _add_circular(x, hat, round((e + 0.5) * beat / 2 * SR))
    return np.stack([x, 0.98 * x]).astype(np.float32)


def click_track(bpm: float, seconds: float | None = None, bars: int = 4, seed: int = 0) -> np.ndarray:
    """Noise + 1 kHz clicks on every beat, as a loop of whole bars (or `seconds` long)."""
    rng = np.random.default_rng(seed)
    n = round((seconds if seconds is not None else bars * 4 * 60.0 / bpm) * SR)
    t = np.arange(int(0.03 * SR)) / SR
    click = (0.5 * rng.standard_normal(len(t)) + np.sin(2 * np.pi * 1000 * t)) * np.exp(-t / 0.005)
    x = np.zeros(n)
    period = 60.0 / bpm * SR
    for k in range(math.ceil(n / period)):
        _add_circular(x, click, round(k * period))
    return np.stack([x, x]).astype(np.float32) * 0.5


def triad(tonic_pc: int, minor: bool, seconds: float = 4.0, harmonics: int = 5, octave: int = 4,
          seed: int = 0) -> np.ndarray:
    """Sustained triad (root position) with `harmonics` partials at 1/h amplitude."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    x = np.zeros_like(t)
    for interval in (0, 3, 7) if minor else (0, 4, 7):
        f0 = _midi_hz(12 * (octave + 1) + tonic_pc + interval)
        for h in range(1, harmonics + 1):
            x += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
    x *= 0.5 / np.abs(x).max()
    return np.stack([x, x]).astype(np.float32)


def sine(n: int, freq: float = 441.0, amp: float = 0.5) -> np.ndarray:
    x = amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)
    return np.stack([x, x]).astype(np.float32)


@pytest.fixture(scope="module")
def loop120() -> np.ndarray:
    return clean_loop(bpm=120.0, bars=2, tonic_midi=60)


def _has_problem(report: QCReport, prefix: str) -> bool:
    return any(p.startswith(prefix) for p in report.problems)


# ------------------------------------------------------------------------------------------
# the clean loop passes everything


def test_clean_loop_passes_every_check(loop120: np.ndarray) -> None:
    report = qc_loop(loop120, SR, bpm=120, key="C major", lufs=-14.0, true_peak_dbtp=-1.0)
    assert report.problems == [], report.problems
    assert report.ok
    assert not report.nan_or_inf
    assert report.silence_ratio == 0.0 and report.clipped_ratio == 0.0
    assert report.dc_offset < 0.005
    assert report.bpm_ok is True and report.bpm_estimated == pytest.approx(120.0, rel=0.01)
    assert report.key_ok is True and report.key_estimated == "C major"
    assert report.seam_ok is True and report.seam < 1.0
    assert report.lufs == -14.0 and report.true_peak_dbtp == -1.0


def test_clean_minor_loop_other_tempo_passes() -> None:
    audio = clean_loop(bpm=90.0, bars=4, tonic_midi=57, minor=True, seed=3)  # A minor, 10.7 s
    report = qc_loop(audio, SR, bpm=90, key="Am")
    assert report.ok, report.problems
    assert report.key_estimated == "A minor"
    assert report.bpm_estimated == pytest.approx(90.0, rel=0.01)


def test_to_columns_is_flat_json_and_prefixed(loop120: np.ndarray) -> None:
    cols = qc_loop(loop120, SR, bpm=120, key="C").to_columns()
    assert set(cols) == QC_COLUMNS
    assert cols["qc_problems"] is None and cols["qc_nan"] is False
    for value in cols.values():
        assert value is None or type(value) in (bool, float, str)
    json.dumps(cols, allow_nan=False)
    bad = qc_loop(np.zeros((2, SR), np.float32), SR).to_columns()
    assert set(bad) == QC_COLUMNS
    assert bad["qc_problems"].startswith("silent")
    assert bad["qc_bpm_estimated"] is None and bad["qc_seam"] is None
    json.dumps(bad, allow_nan=False)


def test_without_requests_estimates_are_recorded_not_judged(loop120: np.ndarray) -> None:
    report = qc_loop(loop120, SR)
    assert report.ok
    assert report.bpm_ok is None and report.key_ok is None
    assert report.bpm_estimated is not None and report.key_estimated == "C major"
    off = qc_loop(loop120, SR, bpm=100, key="F# major",
                  thresholds=QCThresholds(check_bpm=False, check_key=False))
    assert off.ok and off.bpm_ok is None and off.key_ok is None
    assert qc_loop(loop120, SR, is_loop=False).seam is None


# ------------------------------------------------------------------------------------------
# level defects


def test_digital_silence_is_caught() -> None:
    report = qc_loop(np.zeros((2, 4 * SR), np.float32), SR, bpm=120, key="C major")
    assert report.silence_ratio == 1.0
    assert not report.ok and _has_problem(report, "silent: 100 %")
    # Nothing to analyse musically: those checks are skipped, not failed.
    assert report.bpm_estimated is None and report.key_estimated is None and report.seam is None


def test_mostly_silent_audio_is_caught(loop120: np.ndarray) -> None:
    audio = loop120.copy()
    audio[:, int(0.2 * audio.shape[1]):] = 0.0
    report = qc_loop(audio, SR)
    assert report.silence_ratio == pytest.approx(0.8, abs=0.02)
    assert _has_problem(report, "silent: 80 % of the audio is below -60 dBFS")
    # -70 dBFS "room tone" is still silence; a quiet-but-present -50 dBFS tone is not.
    quiet = sine(4 * SR, amp=10 ** (-70 / 20) * math.sqrt(2))
    assert silence_ratio(quiet, SR) == 1.0
    assert silence_ratio(sine(4 * SR, amp=10 ** (-50 / 20) * math.sqrt(2)), SR) == 0.0


def test_hard_clipping_is_caught(loop120: np.ndarray) -> None:
    clipped = np.clip(loop120 * 4.0, -1.0, 1.0)
    report = qc_loop(clipped, SR)
    assert report.clipped_ratio > 0.01
    assert _has_problem(report, "clipped")
    # A few isolated full-scale samples (< 0.1 %) are tolerated.
    few = loop120.copy()
    few[0, :50] = 1.0
    assert not _has_problem(qc_loop(few, SR), "clipped")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_caught_and_skip_the_rest(loop120: np.ndarray, bad: float) -> None:
    audio = loop120.copy()
    audio[1, 1000:1010] = bad
    report = qc_loop(audio, SR, bpm=120, key="C major")
    assert report.nan_or_inf and not report.ok
    assert len(report.problems) == 1 and report.problems[0].startswith("non-finite")
    assert ("10 NaN" in report.problems[0]) == math.isnan(bad)
    assert report.bpm_estimated is None and report.key_estimated is None and report.seam is None
    cols = report.to_columns()
    assert cols["qc_nan"] is True
    json.dumps(cols, allow_nan=False)


def test_dc_offset_is_caught(loop120: np.ndarray) -> None:
    report = qc_loop(loop120 + np.float32(0.05), SR, bpm=120, key="C major")
    assert report.dc_offset == pytest.approx(0.05, abs=0.005)
    assert _has_problem(report, "DC offset")
    assert not _has_problem(qc_loop(loop120 + np.float32(0.005), SR), "DC offset")


def test_optional_loudness_limits(loop120: np.ndarray) -> None:
    limits = QCThresholds(max_true_peak_dbtp=-0.5, min_lufs=-30.0)
    assert qc_loop(loop120, SR, thresholds=limits, lufs=-14.0, true_peak_dbtp=-1.0).ok
    report = qc_loop(loop120, SR, thresholds=limits, lufs=-40.0, true_peak_dbtp=0.3)
    assert _has_problem(report, "true peak") and _has_problem(report, "loudness")
    # By default they are only recorded.
    assert qc_loop(loop120, SR, lufs=-40.0, true_peak_dbtp=0.3).ok


# ------------------------------------------------------------------------------------------
# tempo


@pytest.mark.parametrize("bpm", [70, 90, 120, 128, 140, 174])
@pytest.mark.parametrize("circular", [True, False])
def test_estimate_bpm_on_click_tracks(bpm: float, circular: bool) -> None:
    audio = click_track(bpm) if circular else click_track(bpm, seconds=7.3)
    estimate = estimate_bpm(audio, SR, circular=circular)
    assert estimate is not None
    # Within 2 % of the tempo or an octave of it (174 reads as 87: the prior prefers ~120).
    assert bpm_matches(estimate, bpm, tolerance=0.02), estimate


@pytest.mark.parametrize("bpm", [70, 96, 128, 174])
def test_estimate_bpm_on_drum_loops(bpm: float) -> None:
    estimate = estimate_bpm(clean_loop(bpm=bpm, seed=bpm), SR, circular=True)
    assert bpm_matches(estimate, bpm, tolerance=0.02), estimate


def test_no_rhythm_gives_none() -> None:
    rng = np.random.default_rng(7)
    assert estimate_bpm(np.zeros((2, 4 * SR), np.float32), SR) is None
    for seconds in (2, 4, 8):
        noise = (0.1 * rng.standard_normal((2, seconds * SR))).astype(np.float32)
        assert estimate_bpm(noise, SR) is None
        assert estimate_bpm(noise, SR, circular=True) is None
    assert estimate_bpm(triad(0, False, seconds=4), SR) is None  # a sustained chord
    assert estimate_bpm(click_track(120, seconds=0.1), SR) is None  # too short


def test_wrong_tempo_click_track_fails_octaves_pass() -> None:
    wrong = qc_loop(click_track(100), SR, bpm=128)
    assert wrong.bpm_ok is False
    assert _has_problem(wrong, "tempo 100.0 BPM does not match the requested 128")
    for played in (64, 128, 256):  # half, same, double: octave errors are allowed
        report = qc_loop(click_track(played), SR, bpm=128)
        assert report.bpm_ok is True, (played, report.bpm_estimated)
        assert not _has_problem(report, "tempo")  # (a bare click track is mostly silence)


def test_requested_tempo_outside_default_range() -> None:
    report = qc_loop(click_track(45, bars=2), SR, bpm=45)
    assert report.bpm_ok is True, report.bpm_estimated


def test_bpm_matches() -> None:
    assert bpm_matches(120.0, 120)
    assert bpm_matches(124.7, 120) and not bpm_matches(125.5, 120)  # ±4 %
    assert bpm_matches(60.5, 120) and bpm_matches(238.0, 120)  # octave errors
    assert not bpm_matches(80.0, 120) and not bpm_matches(180.0, 120)  # 2/3, 3/2: real errors
    assert not bpm_matches(93.1, 120)
    assert not bpm_matches(None, 120) and not bpm_matches(float("nan"), 120)
    assert bpm_matches(121.0, 120, tolerance=0.01) and not bpm_matches(122.0, 120, tolerance=0.01)


# ------------------------------------------------------------------------------------------
# key


def test_estimate_key_on_all_24_triads() -> None:
    """Observed: 24/24 exact (up to 12 partials at 1/h amplitude, octaves 3 and 4)."""
    exact = 0
    for minor in (False, True):
        for pc in range(12):
            got = estimate_key(triad(pc, minor, harmonics=5, seed=pc), SR)
            assert got is not None
            want = (PITCH_CLASSES[pc], "minor" if minor else "major")
            if got[:2] == want:
                exact += 1
            else:  # the documented confusions only
                assert got[:2] == relative_key(*want) or got[0] == PITCH_CLASSES[(pc + 7) % 12]
            assert -1.0 <= got[2] <= 1.0
    assert exact >= 22


def test_estimate_key_tolerates_detuning() -> None:
    # A4 = 446 Hz (+23.4 cents): the tuning offset is estimated and removed.
    t = np.arange(4 * SR) / SR
    x = sum(np.sin(2 * np.pi * _midi_hz(m + 0.234) * t) for m in (57, 60, 64, 69))  # A minor
    assert estimate_key(x.astype(np.float32), SR)[:2] == ("A", "minor")


def test_no_tonal_content_gives_none() -> None:
    rng = np.random.default_rng(3)
    assert estimate_key(np.zeros((2, 2 * SR), np.float32), SR) is None
    assert estimate_key((0.1 * rng.standard_normal((2, 4 * SR))).astype(np.float32), SR) is None
    assert estimate_key(click_track(120), SR) is None
    assert key_correlations(np.zeros(100, np.float32), SR) is None


def test_wrong_key_chord_fails_same_and_relative_pass() -> None:
    c_major = triad(0, False)
    wrong = qc_loop(c_major, SR, key="F# major", is_loop=False)
    assert wrong.key_ok is False and wrong.key_estimated == "C major"
    assert _has_problem(wrong, "key C major does not match the requested F# major")
    for requested in ("C major", "C", "A minor", "Am"):  # A minor: relative, allowed
        report = qc_loop(c_major, SR, key=requested, is_loop=False)
        assert report.key_ok is True, requested
        assert report.ok, report.problems
    for requested in ("C# major", "D major", "C minor", "F# minor"):
        assert qc_loop(c_major, SR, key=requested, is_loop=False).key_ok is False, requested


def test_key_matches_and_consistent() -> None:
    assert key_matches(("C", "major"), "C major")
    assert key_matches(("C", "major", 0.8), "A minor")  # relative
    assert not key_matches(("C", "major"), "A minor", allow_relative=False)
    assert key_matches(("A#", "minor"), "Bbm")
    assert not key_matches(("C", "major"), "F# major")
    assert not key_matches(None, "C major")
    corrs = key_correlations(triad(9, True), SR)  # A minor
    assert corrs is not None and len(corrs) == 24
    assert key_consistent(corrs, "A minor") and key_consistent(corrs, "C major")
    assert not key_consistent(corrs, "C major", allow_relative=False)
    assert not key_consistent(corrs, "D# minor")
    assert not key_consistent(None, "A minor")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A minor", ("A", "minor")),
        ("Amin", ("A", "minor")),
        ("Am", ("A", "minor")),
        ("a minor", ("A", "minor")),
        ("A#maj", ("A#", "major")),
        ("Bb major", ("A#", "major")),
        ("B♭m", ("A#", "minor")),
        ("F# minor", ("F#", "minor")),
        ("f sharp minor", ("F#", "minor")),
        ("E-flat major", ("D#", "major")),
        ("C", ("C", "major")),
        ("CM", ("C", "major")),
        ("  Db  Major ", ("C#", "major")),
        ("Cb", ("B", "major")),
        ("E#m", ("F", "minor")),
        ("bbm", ("A#", "minor")),
    ],
)
def test_parse_key(text: str, expected: tuple[str, str]) -> None:
    assert parse_key(text) == expected


@pytest.mark.parametrize("text", ["", "H minor", "C lydian-ish", "major", "A minor minor", "12", "C##"])
def test_parse_key_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse key"):
        parse_key(text)


def test_parse_key_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_key(None)  # type: ignore[arg-type]


def test_qc_loop_rejects_a_bad_key_request(loop120: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cannot parse key"):
        qc_loop(loop120, SR, key="Q major")
    assert qc_loop(loop120, SR, key="").key_ok is None  # "" = no key (drum loops)


# ------------------------------------------------------------------------------------------
# loop seam


def test_period_aligned_sine_is_seamless_cut_sine_clicks() -> None:
    # 441 Hz has a period of exactly 100 samples at 44.1 kHz.
    assert seam_discontinuity(sine(SR)) < 1.0
    assert seam_discontinuity(sine(SR + 200)) < 1.0
    at_peak = seam_discontinuity(sine(SR + 25))  # ends a quarter period in: jump 0.5 -> 0
    mid = seam_discontinuity(sine(SR + 50))  # ends half a period in: a slope reversal (kink)
    assert at_peak > 100 and mid > 10
    report = qc_loop(sine(SR + 25), SR)
    assert report.seam_ok is False and _has_problem(report, "seam click")
    assert qc_loop(sine(SR), SR).seam_ok is True


def test_seam_click_in_a_real_loop(loop120: np.ndarray) -> None:
    assert seam_discontinuity(loop120) < 1.0
    assert seam_discontinuity(np.roll(loop120, 12345, axis=1)) < 1.0  # any rotation is seamless
    cut = loop120[:, :-1000]  # cut 23 ms early: the wrap jumps
    assert seam_discontinuity(cut) > SEAM_CLICK_THRESHOLD
    report = qc_loop(cut, SR, bpm=120, key="C major")
    assert report.seam_ok is False
    assert _has_problem(report, "seam click")


def test_seam_ignores_noise_and_onsets_at_the_wrap() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):  # white noise wraps like any other sample
        assert seam_discontinuity(0.1 * rng.standard_normal((2, SR))) < 1.5
    hat_at_zero = np.zeros((1, SR))
    hat_at_zero[0, :2000] = 0.2 * rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)
    assert seam_discontinuity(hat_at_zero) < SEAM_CLICK_THRESHOLD


def test_seam_step_under_a_tone() -> None:
    """A ramp makes the wrap jump by `step`: a -40 dBFS jump under a quiet tone is caught,
    a -80 dBFS one is not (below the -70 dBFS floor)."""
    t = np.arange(4 * SR) / SR
    tone = 0.1 * np.sin(2 * np.pi * 220 * t)
    assert seam_discontinuity(tone + 0.01 * t / t[-1]) > 20
    assert seam_discontinuity(tone + 1e-4 * t / t[-1]) < SEAM_CLICK_THRESHOLD


# ------------------------------------------------------------------------------------------
# speed


def test_ten_second_stereo_clip_is_fast() -> None:
    audio = clean_loop(bpm=96.0, bars=4)  # 10 s
    qc_loop(audio, SR, bpm=96, key="C major")  # warm up FFT plans
    start = time.perf_counter()
    report = qc_loop(audio, SR, bpm=96, key="C major")
    elapsed = time.perf_counter() - start
    assert report.ok, report.problems
    assert elapsed < 1.0, f"qc_loop took {elapsed:.2f} s for a 10 s clip"
