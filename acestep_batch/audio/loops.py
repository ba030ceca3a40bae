"""Cutting a render to an exact, seamlessly looping number of bars.

A producer drops a loop into a DAW expecting its length to be exactly N bars at the tempo (to
the sample, or it drifts against the grid) and no click where it wraps. The model renders a
little more than needed (`render_seconds`); `cut_seamless_loop` keeps exactly the loop length
and crossfades the audio that follows the loop end into the loop's head, so playing the loop
back to back continues the render as it was generated.

Beats: a "beat" is one unit of the time signature's denominator and the tempo counts those
units, so a bar of 6/8 is 6 beats and "120 BPM" in 6/8 means 120 eighth notes per minute.
This is how the ACID chunk (beats + meter) describes a loop, and what `LoopMetadata.beats`
carries (bars x numerator).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# 50 ms: longer than one period of a 20 Hz bass note, so even the lowest content can be
# cross-faded without a phase step at the wrap, yet short enough (a 32nd note at 140 BPM is
# 54 ms) that the blend does not smear the downbeat transient across the head of the loop.
DEFAULT_CROSSFADE_S = 0.05

# Render headroom past loop end + crossfade: the model's last second tends to fade or end.
DEFAULT_MARGIN_S = 2.0

_ALLOWED_DENOMINATORS = (1, 2, 4, 8, 16, 32)
_TIME_SIGNATURE = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{1,2})\s*$")


def parse_time_signature(text: str) -> tuple[int, int]:
    """'4/4' -> (4, 4), '6/8' -> (6, 8). Numerator 1..32, denominator a power of two to 32."""
    match = _TIME_SIGNATURE.match(str(text))
    if match is None:
        raise ValueError(
            f"time signature {text!r} is not of the form 'beats/note', e.g. '4/4', '3/4', '6/8'"
        )
    numerator, denominator = int(match.group(1)), int(match.group(2))
    if not 1 <= numerator <= 32:
        raise ValueError(f"time signature {text!r}: beats per bar must be 1..32, got {numerator}")
    if denominator not in _ALLOWED_DENOMINATORS:
        raise ValueError(
            f"time signature {text!r}: the note value must be one of {_ALLOWED_DENOMINATORS}, "
            f"got {denominator}"
        )
    return numerator, denominator


def _check_tempo(bpm: float, bars: int, beats_per_bar: int) -> None:
    if isinstance(bpm, bool) or not math.isfinite(bpm) or bpm <= 0:
        raise ValueError(f"bpm must be a positive number, got {bpm!r}")
    if int(bars) != bars or bars < 1:
        raise ValueError(f"bars must be a positive whole number, got {bars!r}")
    if int(beats_per_bar) != beats_per_bar or beats_per_bar < 1:
        raise ValueError(f"beats_per_bar must be a positive whole number, got {beats_per_bar!r}")


def loop_length_samples(bpm: float, bars: int, beats_per_bar: int, sample_rate: int) -> int:
    """Frames in `bars` bars: bars x beats_per_bar x 60 / bpm x sample_rate, to the nearest frame.

    Exact rational arithmetic (ties round up), so a length like 4 bars at 93 BPM
    (455225.806... frames at 44.1 kHz) never depends on float rounding.
    """
    _check_tempo(bpm, bars, beats_per_bar)
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    exact = Fraction(int(bars) * int(beats_per_bar) * 60 * int(sample_rate)) / Fraction(float(bpm))
    return math.floor(exact + Fraction(1, 2))


def render_seconds(
    bpm: float,
    bars: int,
    beats_per_bar: int,
    margin_s: float = DEFAULT_MARGIN_S,
    crossfade_s: float = DEFAULT_CROSSFADE_S,
) -> float:
    """Seconds of audio to ask the model for: the loop, the crossfade tail it borrows from the
    audio after the loop, and a margin so the cut never runs out of audio (the margin must be
    at least a frame: loop and crossfade are rounded to whole frames by the cut)."""
    _check_tempo(bpm, bars, beats_per_bar)
    if (
        not math.isfinite(margin_s)
        or margin_s < 0
        or not math.isfinite(crossfade_s)
        or crossfade_s < 0
    ):
        raise ValueError(
            f"margin_s and crossfade_s must be >= 0, got {margin_s!r} and {crossfade_s!r}"
        )
    return int(bars) * int(beats_per_bar) * 60.0 / float(bpm) + crossfade_s + margin_s


@dataclass(frozen=True)
class LoopCut:
    """The loop (exactly `loop_samples` frames) and how it was cut from the render."""

    audio: np.ndarray
    loop_samples: int
    crossfade_samples: int
    offset_samples: int


def crossfade_gains(n: int, correlation: float) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) over n frames keeping the mix at constant power.

    Sine/cosine (equal-power) shapes, divided by sqrt(1 + 2 r sin cos): the power of a mix of
    two signals with correlation r is a^2 + b^2 + 2 r a b, so this keeps it at 1 for any r in
    [0, 1]. r = 0 (unrelated material) gives the classic equal-power fade; r = 1 (the head and
    the tail are the same groove, the usual case for a loop) gives gains summing to 1, with no
    +3 dB bump in the middle. Position k/n, so frame 0 is all tail and the frame after the fade
    is all head.
    """
    r = min(1.0, max(0.0, float(correlation)))
    phase = 0.5 * np.pi * np.arange(n) / n
    fade_in, fade_out = np.sin(phase), np.cos(phase)
    norm = np.sqrt(1.0 + 2.0 * r * fade_in * fade_out)
    return fade_in / norm, fade_out / norm


def _correlation(head: np.ndarray, tail: np.ndarray) -> float:
    energy = math.sqrt(float(np.sum(head * head)) * float(np.sum(tail * tail)))
    return float(np.sum(head * tail)) / energy if energy > 0 else 0.0


def cut_seamless_loop(
    audio: np.ndarray,
    sample_rate: int,
    loop_samples: int,
    crossfade_s: float = DEFAULT_CROSSFADE_S,
    offset_samples: int = 0,
) -> LoopCut:
    """Exactly `loop_samples` frames from `offset_samples` on, with a seamless wrap.

    With x = audio[:, offset : offset + L + X] (L loop frames, X crossfade frames): the first X
    frames are the head fading in over the tail x[L : L+X] fading out, the rest is x[X : L].
    Played in a loop, the frame after the last one (x[L-1]) is then x[L] (the crossfade starts
    all-tail), i.e. the render's own continuation, and the blend has handed over to the head by
    frame X. The crossfade is clamped to half the loop for very short loops (see
    `crossfade_samples`). 1-D input is one channel and comes back 1-D; the result is float32.
    """
    arr = np.asarray(audio)
    if arr.ndim not in (1, 2):
        raise ValueError(f"audio must be (channels, frames) or (frames,), got shape {arr.shape}")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if int(loop_samples) != loop_samples or loop_samples < 1:
        raise ValueError(f"loop_samples must be a positive whole number, got {loop_samples!r}")
    if int(offset_samples) != offset_samples or offset_samples < 0:
        raise ValueError(f"offset_samples must be >= 0, got {offset_samples!r}")
    if not math.isfinite(crossfade_s) or crossfade_s < 0:
        raise ValueError(f"crossfade_s must be >= 0 seconds, got {crossfade_s!r}")
    x2 = arr[np.newaxis, :] if arr.ndim == 1 else arr
    loop, offset = int(loop_samples), int(offset_samples)
    fade = min(round(crossfade_s * sample_rate), loop // 2)
    needed = offset + loop + fade
    available = x2.shape[1]
    if available < needed:
        need_s, have_s = needed / sample_rate, available / sample_rate
        raise ValueError(
            f"audio too short for the loop: needs {need_s:.3f} s ({needed} frames = offset "
            f"{offset} + loop {loop} + crossfade {fade}) but has {have_s:.3f} s ({available} "
            f"frames); render at least {need_s:.3f} s (see render_seconds)"
        )
    x = x2[:, offset:needed].astype(np.float64)
    out = x[:, :loop].copy()
    if fade:
        head, tail = x[:, :fade], x[:, loop : loop + fade]
        fade_in, fade_out = crossfade_gains(fade, _correlation(head, tail))
        out[:, :fade] = head * fade_in + tail * fade_out
    out32 = out.astype(np.float32)
    return LoopCut(out32[0] if arr.ndim == 1 else out32, loop, fade, offset)
