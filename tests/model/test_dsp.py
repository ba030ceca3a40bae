"""DSP helpers: mel filterbank, Hann window, resampler, length arithmetic (spec 1.5, 3.3, 3.6).

References are independent float64 numpy implementations of the spec formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from acestep_batch.model import dsp



# ------------------------------------------------------------------------------------------------
# Independent float64 references
# ------------------------------------------------------------------------------------------------


def _np_hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3.0)
    logpart = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f < 1000.0, linear, logpart)


def _np_mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    linear = m * (200.0 / 3.0)
    logpart = 1000.0 * np.exp((m - 15.0) * (np.log(6.4) / 27.0))
    return np.where(m < 15.0, linear, logpart)


def np_slaney_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sr: int) -> np.ndarray:
    freqs = np.linspace(0.0, sr // 2, n_freqs)
    mels = np.linspace(_np_hz_to_mel(f_min), _np_hz_to_mel(f_max), n_mels + 2)
    edges = _np_mel_to_hz(mels)
    fb = np.zeros((n_freqs, n_mels))
    for j in range(n_mels):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[:, j] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return fb


def np_resample_kernel(orig: int, new: int, float32_phase: bool = True) -> tuple[np.ndarray, int]:
    """Spec 3.6 kernel; `float32_phase` forms j/n in float32 as variant (a) does."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * 0.99
    width = math.ceil(6 * o / base)
    m = np.arange(-width, width + o, dtype=np.float64)
    phase = np.arange(n, dtype=np.float64) / n
    if float32_phase:
        phase = (np.arange(n, dtype=np.float32) / np.float32(n)).astype(np.float64)
    tau = np.clip((m[None, :] / o - phase[:, None]) * base, -6.0, 6.0)
    window = np.cos(tau * np.pi / 12.0) ** 2
    sinc = np.where(tau == 0, 1.0, np.sin(np.pi * tau) / np.where(tau == 0, 1.0, np.pi * tau))
    return sinc * window * base / o, width


def np_resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Direct polyphase evaluation: y[t*n + j] = sum_m k_j[m] * xpad[t*o + m]."""
    kernel, width = np_resample_kernel(orig, new)
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    xpad = np.concatenate([np.zeros(width), x, np.zeros(width + o)])
    taps = kernel.shape[1]
    blocks = (len(xpad) - taps) // o + 1
    out = np.empty(blocks * n)
    for t in range(blocks):
        out[t * n : (t + 1) * n] = kernel @ xpad[t * o : t * o + taps]
    return out[: math.ceil(n * len(x) / o)]


# ------------------------------------------------------------------------------------------------
# Hann window
# ------------------------------------------------------------------------------------------------


def test_hann_window_is_periodic() -> None:
    n = 2048
    w = dsp.hann_window(n)
    k = np.arange(n)
    expected = 0.5 - 0.5 * np.cos(2 * np.pi * k / n)  # periodic: denominator n, not n - 1
    assert w.dtype == torch.float32 and w.shape == (n,)
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-6)
    assert w[0] == 0 and w[n // 2] == pytest.approx(1.0)


def test_hann_window_bf16_is_rounded_float32() -> None:
    assert torch.equal(dsp.hann_window(2048, torch.bfloat16), dsp.hann_window(2048).to(torch.bfloat16))


# ------------------------------------------------------------------------------------------------
# Mel filterbank
# ------------------------------------------------------------------------------------------------


def test_filterbank_matches_float64_reference() -> None:
    fb = dsp.slaney_mel_filterbank()
    assert fb.shape == (1025, 128) and fb.dtype == torch.float32
    assert (fb >= 0).all()
    ref = np_slaney_filterbank(1025, 40.0, 16000.0, 128, 44100)
    np.testing.assert_allclose(fb.numpy(), ref, atol=1e-6, rtol=0)


def test_filterbank_slaney_area_normalisation() -> None:
    # Each triangle has peak 2/(f[j+2]-f[j]) (up to grid sampling) and area ~1 in Hz units.
    fb = dsp.slaney_mel_filterbank().double().numpy()
    df = 22050.0 / 1024
    areas = fb.sum(0) * df
    # Narrow low filters are poorly sampled by the 21.5 Hz grid; wide high filters integrate to ~1.
    np.testing.assert_allclose(areas[60:], 1.0, rtol=0.015)
    np.testing.assert_allclose(areas, 1.0, rtol=0.15)
    assert (fb.max(0) > 0).all()  # no empty filter


def test_filterbank_other_sizes() -> None:
    fb = dsp.slaney_mel_filterbank(n_freqs=513, f_min=0.0, f_max=8000.0, n_mels=40, sample_rate=16000)
    np.testing.assert_allclose(fb.numpy(), np_slaney_filterbank(513, 0.0, 8000.0, 40, 16000), atol=1e-6, rtol=0)


def test_filterbank_built_on_cpu_inside_meta_context() -> None:
    with torch.device("meta"):
        fb = dsp.slaney_mel_filterbank()
    assert fb.device.type == "cpu"
    assert torch.equal(fb, dsp.slaney_mel_filterbank())


# ------------------------------------------------------------------------------------------------
# Resampler
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orig,new", [(44100, 48000), (48000, 44100), (22050, 44100), (16000, 44100)])
def test_resample_kernel_matches_float64_reference(orig: int, new: int) -> None:
    kernel, width, o, n = dsp.resample_kernel(orig, new)
    ref, ref_width = np_resample_kernel(orig, new)
    g = math.gcd(orig, new)
    assert (o, n) == (orig // g, new // g)
    assert width == ref_width
    assert kernel.dtype == torch.float32
    assert kernel.shape == (n, 1, 2 * width + o)
    np.testing.assert_allclose(kernel[:, 0].double().numpy(), ref, atol=1e-6, rtol=0)
    # The float32 phases alone move taps by up to a few 1e-6 from the all-float64 kernel.
    exact, _ = np_resample_kernel(orig, new, float32_phase=False)
    np.testing.assert_allclose(kernel[:, 0].double().numpy(), exact, atol=1e-5, rtol=0)


@pytest.mark.parametrize("orig,new", [(44100, 48000), (48000, 44100)])
def test_resample_kernel_native_float32_variant(orig: int, new: int) -> None:
    # Variant (c): built entirely in float32 (upstream's overlapped decode); a few 1e-6 off (a).
    native, width, _, _ = dsp.resample_kernel(orig, new, torch.float32)
    default = dsp.resample_kernel(orig, new)[0]
    exact, ref_width = np_resample_kernel(orig, new, float32_phase=False)
    assert native.dtype == torch.float32 and width == ref_width
    np.testing.assert_allclose(native[:, 0].double().numpy(), exact, atol=5e-5, rtol=0)
    assert not torch.equal(native, default)
    assert dsp.resample_kernel(orig, new, torch.bfloat16)[0].dtype == torch.bfloat16


def test_resample_kernel_geometry_44k_48k() -> None:
    kernel, width, o, n = dsp.resample_kernel(44100, 48000)
    assert (o, n, width) == (147, 160, 7)
    assert kernel is dsp.resample_kernel(44100, 48000)[0]  # cached


def test_resample_identity() -> None:
    x = torch.randn(2, 1000)
    assert dsp.resample(x, 44100, 44100) is x


@pytest.mark.parametrize(
    "orig,new,length",
    [(44100, 48000, 4096), (44100, 48000, 4097), (44100, 48000, 1), (48000, 44100, 48000),
     (48000, 44100, 12345), (22050, 44100, 999)],
)
def test_resample_lengths(orig: int, new: int, length: int) -> None:
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    y = dsp.resample(torch.randn(2, length), orig, new)
    assert y.shape == (2, math.ceil(n * length / o))
    assert dsp.resampled_length(length, orig, new) == y.shape[-1]


def test_resample_length_44k_48k_latent_multiples() -> None:
    # Spec 1.5: a 60 s request (T=645) decodes to 2,641,920 samples -> 2,875,560 at 48 kHz.
    assert dsp.resampled_length(4096 * 645, 44100, 48000) == 2_875_560
    # Upstream rounds n*L/o to float32 before the ceiling; for T=160 the exact ceil is 713318 but
    # upstream (and this implementation) produce 713317.
    assert math.ceil(160 * 4096 * 160 / 147) == 713_318
    assert dsp.resampled_length(4096 * 160, 44100, 48000) == 713_317


def test_resample_matches_direct_polyphase_reference() -> None:
    rng = np.random.default_rng(0)
    for orig, new, length in [(44100, 48000, 3000), (48000, 44100, 3200), (22050, 44100, 500)]:
        x = rng.standard_normal(length)
        y = dsp.resample(torch.from_numpy(x).float()[None], orig, new)[0].double().numpy()
        np.testing.assert_allclose(y, np_resample(x, orig, new), atol=2e-5, rtol=0)


def test_resample_batched_shapes_are_preserved() -> None:
    x = torch.randn(3, 2, 700)
    y = dsp.resample(x, 48000, 44100)
    assert y.shape == (3, 2, math.ceil(147 * 700 / 160))
    torch.testing.assert_close(y[1, 0], dsp.resample(x[1, 0], 48000, 44100))


@pytest.mark.parametrize("orig,new", [(44100, 48000), (48000, 44100), (22050, 44100)])
def test_resample_sine_keeps_frequency_and_amplitude(orig: int, new: int) -> None:
    # 1 s of a 1 kHz sine: the output is exactly 1 s at `new`, so FFT bin k is k Hz.
    t = torch.arange(orig, dtype=torch.float64) / orig
    x = (0.5 * torch.sin(2 * math.pi * 1000.0 * t)).float()
    y = dsp.resample(x, orig, new).double()
    assert y.shape == (new,)
    spectrum = torch.fft.rfft(y).abs() * 2 / new
    assert int(spectrum.argmax()) == 1000
    assert float(spectrum[1000]) == pytest.approx(0.5, rel=0.01)
    # Away from the zero-padded edges the samples are the ideal sine at the new rate.
    t_new = torch.arange(new, dtype=torch.float64) / new
    ideal = 0.5 * torch.sin(2 * math.pi * 1000.0 * t_new)
    inner = slice(new // 10, -new // 10)
    assert float((y[inner] - ideal[inner]).abs().max()) < 2e-3


def test_resample_bf16_uses_rounded_kernel() -> None:
    x = torch.randn(1, 2000).to(torch.bfloat16)
    y = dsp.resample(x, 48000, 44100)
    assert y.dtype == torch.bfloat16
    kernel, width, o, n = dsp.resample_kernel(48000, 44100)
    # Same computation with an explicitly bf16-cast kernel (spec variant (b)).
    xp = torch.nn.functional.pad(x[:, None], (width, width + o))
    ref = torch.nn.functional.conv1d(xp, kernel.to(torch.bfloat16), stride=o).transpose(1, 2).reshape(1, -1)
    assert torch.equal(y, ref[:, : y.shape[-1]])


# ------------------------------------------------------------------------------------------------
# Length arithmetic
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("duration,frames", [(60, 645), (240, 2583), (1, 10), (1.0, 10), (3.0, 32), (30, 322)])
def test_latent_frames_for_duration(duration: float, frames: int) -> None:
    assert dsp.latent_frames_for_duration(duration) == frames


def test_samples_for_latent_frames_and_constants() -> None:
    assert (dsp.SAMPLE_RATE, dsp.HOP, dsp.LATENT_HOP) == (44100, 512, 4096)
    assert dsp.samples_for_latent_frames(645) == 2_641_920
    assert dsp.samples_for_latent_frames(1) == 4096
