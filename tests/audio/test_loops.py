"""Bar-exact loop lengths and the seamless wrap of cut_seamless_loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from acestep_batch.audio.loops import (
    DEFAULT_CROSSFADE_S,
    LoopCut,
    crossfade_gains,
    cut_seamless_loop,
    loop_length_samples,
    parse_time_signature,
    render_seconds,
)

# --- time signatures and lengths -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4/4", (4, 4)),
        ("3/4", (3, 4)),
        ("6/8", (6, 8)),
        (" 7 / 8 ", (7, 8)),
        ("12/16", (12, 16)),
        ("2/2", (2, 2)),
        ("5/4", (5, 4)),
    ],
)
def test_parse_time_signature(text: str, expected: tuple[int, int]) -> None:
    assert parse_time_signature(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "4",
        "4/",
        "/4",
        "four/four",
        "4/3",
        "4/0",
        "0/4",
        "33/4",
        "4:4",
        "-4/4",
        "4/4/4",
        "4.5/4",
    ],
)
def test_parse_time_signature_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="time signature"):
        parse_time_signature(text)


@pytest.mark.parametrize(
    ("bpm", "bars", "beats", "fs", "expected"),
    [
        (120, 4, 4, 44100, 352800),  # 8 s exactly
        (120, 4, 4, 48000, 384000),
        (93, 4, 4, 44100, 455226),  # 455225.806...
        (93, 4, 4, 48000, 495484),  # 495483.870...
        (128, 2, 4, 44100, 165375),  # 3.75 s
        (140, 8, 4, 44100, 604800),
        (90, 1, 3, 44100, 88200),  # one bar of 3/4
        (120, 2, 6, 48000, 288000),  # 6/8, 120 eighths per minute
        (174, 4, 4, 44100, 243310),  # 243310.344...
        (99.5, 4, 4, 44100, 425487),  # 425487.437...
    ],
)
def test_loop_length_samples(bpm: float, bars: int, beats: int, fs: int, expected: int) -> None:
    assert loop_length_samples(bpm, bars, beats, fs) == expected
    assert abs(loop_length_samples(bpm, bars, beats, fs) - bars * beats * 60 / bpm * fs) <= 0.5


def test_loop_length_ties_round_up_exactly() -> None:
    # 1 beat at 8 BPM at 3 Hz is 22.5 frames: a tie, rounded up (not to even).
    assert loop_length_samples(8, 1, 1, 3) == 23
    assert loop_length_samples(np.float32(120.0), 1, 4, 44100) == 88200


@pytest.mark.parametrize(
    ("bpm", "bars", "beats"),
    [(0, 4, 4), (-1, 4, 4), (float("nan"), 4, 4), (120, 0, 4), (120, 1.5, 4), (120, 4, 0)],
)
def test_loop_length_rejects_bad_input(bpm: float, bars: int, beats: int) -> None:
    with pytest.raises(ValueError):
        loop_length_samples(bpm, bars, beats, 44100)


def test_render_seconds_covers_loop_crossfade_and_margin() -> None:
    assert render_seconds(120, 4, 4) == pytest.approx(8.0 + DEFAULT_CROSSFADE_S + 2.0)
    assert render_seconds(93, 4, 4, margin_s=1.0, crossfade_s=0.02) == pytest.approx(
        16 * 60 / 93 + 1.02
    )
    with pytest.raises(ValueError):
        render_seconds(120, 4, 4, margin_s=-1)


@pytest.mark.parametrize(
    ("bpm", "bars", "beats", "fs"),
    [(93, 4, 4, 44100), (120, 2, 4, 48000), (174, 8, 4, 44100), (87.5, 3, 7, 32000)],
)
def test_a_render_of_render_seconds_is_long_enough(
    bpm: float, bars: int, beats: int, fs: int
) -> None:
    # Any margin of a frame or more absorbs the rounding of loop and crossfade to frames.
    frames = math.floor(render_seconds(bpm, bars, beats, margin_s=0.001) * fs)
    loop = loop_length_samples(bpm, bars, beats, fs)
    audio = np.zeros((2, frames), np.float32)
    cut = cut_seamless_loop(audio, fs, loop)
    assert cut.audio.shape == (2, loop)


# --- the cut -----------------------------------------------------------------------------


def noise(frames: int, seed: int = 0, channels: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (channels, frames)).astype(np.float32)


@pytest.mark.parametrize(
    ("bpm", "bars", "fs"), [(93, 4, 44100), (120, 1, 48000), (174, 2, 22050), (61, 1, 44100)]
)
def test_cut_has_exactly_the_loop_length(bpm: float, bars: int, fs: int) -> None:
    loop = loop_length_samples(bpm, bars, 4, fs)
    audio = noise(loop + fs)
    cut = cut_seamless_loop(audio, fs, loop)
    assert isinstance(cut, LoopCut)
    assert cut.audio.shape == (2, loop) and cut.audio.dtype == np.float32
    assert cut.loop_samples == loop
    assert cut.crossfade_samples == round(DEFAULT_CROSSFADE_S * fs)
    assert cut.offset_samples == 0


def test_cut_layout_head_crossfade_and_body() -> None:
    """out[:X] blends head and tail (starting all tail, x[L]); out[X:] is x[X:L] untouched."""
    fs, loop = 44100, 30000
    audio = noise(40000, seed=1)
    cut = cut_seamless_loop(audio, fs, loop, crossfade_s=0.02, offset_samples=1234)
    fade = cut.crossfade_samples
    x = audio[:, 1234:]
    assert fade == 882
    np.testing.assert_array_equal(cut.audio[:, fade:], x[:, fade:loop])
    np.testing.assert_allclose(cut.audio[:, 0], x[:, loop], atol=1e-7)
    fade_in, fade_out = crossfade_gains(fade, 0.0)  # noise head/tail: uncorrelated
    expected = x[:, :fade] * fade_in + x[:, loop : loop + fade] * fade_out
    np.testing.assert_allclose(cut.audio[:, :fade], expected, atol=0.02)


def test_periodic_signal_loops_perfectly() -> None:
    """A sine whose period divides the loop is its own continuation: the cut is unchanged
    (no +3 dB bump: the crossfade adapts to correlated head and tail) and the wrap is smooth."""
    fs = 44100
    loop = loop_length_samples(120, 1, 4, fs)  # 88200 frames = 200 periods of 100 Hz
    t = np.arange(loop + fs) / fs
    audio = np.stack([0.5 * np.sin(2 * np.pi * 100 * t), 0.3 * np.sin(2 * np.pi * 300 * t)])
    cut = cut_seamless_loop(audio.astype(np.float32), fs, loop)
    np.testing.assert_allclose(cut.audio, audio[:, :loop], atol=1e-5)
    wrapped = np.concatenate([cut.audio, cut.audio], axis=1)
    steps = np.abs(np.diff(wrapped, axis=1))
    assert steps[:, loop - 1].max() <= steps.max() + 1e-6  # the wrap is an ordinary step


def test_jump_at_the_loop_end_is_crossfaded_away() -> None:
    """A signal that does not line up with the loop length (a sine off the grid plus a drift)
    clicks when cut raw; after the crossfade the wrap is as smooth as any other sample."""
    fs, loop = 44100, 50000
    t = np.arange(loop + fs) / fs
    drift = 0.5 * t * fs / loop  # reaches 0.5 at the loop end: x[L] is far from x[0]
    wave = 0.1 * np.sin(2 * np.pi * 97.3 * t + 1.0) + drift
    audio = np.stack([wave, -wave]).astype(np.float32)
    raw_jump = np.abs(audio[:, 0] - audio[:, loop - 1]).max()
    cut = cut_seamless_loop(audio, fs, loop)
    seam_jump = np.abs(cut.audio[:, 0] - cut.audio[:, -1]).max()
    typical_step = np.abs(np.diff(audio[:, :loop], axis=1)).max()
    assert raw_jump > 0.2
    assert seam_jump <= typical_step * 1.01
    assert seam_jump < raw_jump / 20
    # The end of the fade hands over to the head without a step either.
    fade = cut.crossfade_samples
    handover = np.abs(cut.audio[:, fade] - cut.audio[:, fade - 1]).max()
    assert handover <= typical_step * 1.5


def test_crossfade_gains_keep_power_for_any_correlation() -> None:
    for r in (0.0, 0.3, 0.7, 1.0):
        fade_in, fade_out = crossfade_gains(1000, r)
        power = fade_in**2 + fade_out**2 + 2 * r * fade_in * fade_out
        np.testing.assert_allclose(power, 1.0, atol=1e-12)
        assert fade_in[0] == 0.0 and fade_out[0] == 1.0
        assert np.all(np.diff(fade_in) > 0) and np.all(np.diff(fade_out) < 0)
    equal_power_in, _ = crossfade_gains(1000, 0.0)
    np.testing.assert_allclose(equal_power_in, np.sin(0.5 * np.pi * np.arange(1000) / 1000))
    linear_in, linear_out = crossfade_gains(1000, 1.0)
    np.testing.assert_allclose(linear_in + linear_out, 1.0, atol=1e-12)
    # Anti-correlated material is treated like unrelated material (equal power).
    np.testing.assert_array_equal(crossfade_gains(10, -0.8)[0], crossfade_gains(10, 0.0)[0])


def test_uncorrelated_crossfade_keeps_the_level() -> None:
    fs, loop = 44100, 44100
    audio = noise(loop + fs, seed=5)
    cut = cut_seamless_loop(audio, fs, loop, crossfade_s=0.2)
    fade = cut.crossfade_samples
    rms_fade = np.sqrt(np.mean(cut.audio[:, :fade].astype(np.float64) ** 2))
    rms_body = np.sqrt(np.mean(cut.audio[:, fade:].astype(np.float64) ** 2))
    assert rms_fade == pytest.approx(rms_body, rel=0.05)


def test_too_short_input_raises_with_seconds() -> None:
    fs = 44100
    loop = loop_length_samples(93, 4, 4, fs)
    audio = noise(loop + 100)
    with pytest.raises(ValueError, match=r"needs 10\.373 s .* has 10\.325 s"):
        cut_seamless_loop(audio, fs, loop)
    with pytest.raises(ValueError, match="too short"):
        cut_seamless_loop(noise(loop + 5000), fs, loop, offset_samples=4000)


def test_no_crossfade_is_a_plain_cut_and_short_loops_clamp_it() -> None:
    audio = noise(10000, seed=2)
    plain = cut_seamless_loop(audio, 44100, 5000, crossfade_s=0.0)
    assert plain.crossfade_samples == 0
    np.testing.assert_array_equal(plain.audio, audio[:, :5000])
    short = cut_seamless_loop(audio, 44100, 1000, crossfade_s=0.05)
    assert short.crossfade_samples == 500 and short.audio.shape == (2, 1000)


def test_mono_1d_input_and_argument_checks() -> None:
    mono = noise(20000, channels=1)[0]
    cut = cut_seamless_loop(mono, 44100, 10000)
    assert cut.audio.shape == (10000,)
    with pytest.raises(ValueError, match="loop_samples"):
        cut_seamless_loop(mono, 44100, 0)
    with pytest.raises(ValueError, match="offset_samples"):
        cut_seamless_loop(mono, 44100, 100, offset_samples=-1)
    with pytest.raises(ValueError, match="crossfade_s"):
        cut_seamless_loop(mono, 44100, 100, crossfade_s=-0.1)
    with pytest.raises(ValueError, match="shape"):
        cut_seamless_loop(np.zeros((1, 2, 3)), 44100, 1)
