"""Audio DSP helpers shared by the vocoder and the DCAE wrapper (pure torch, no torchaudio).

Everything here reproduces the numerics of the upstream torchaudio-based front end (spec 1.5, 3.3,
3.6): the tables are built on CPU in the same precision and op order so that loading a checkpoint
without the optional mel buffers gives the same values, and resampled audio has the same samples and
length as upstream's `torchaudio.transforms.Resample`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 44100
"""Model-internal audio rate (vocoder and mel front end)."""
HOP = 512
"""Audio samples per mel frame."""
LATENT_HOP = 4096
"""Audio samples per latent frame (8 mel frames)."""

_RESAMPLE_TAPS_PER_SIDE = 6  # lowpass_filter_width of torchaudio's default sinc_interp_hann
_RESAMPLE_ROLLOFF = 0.99


# ------------------------------------------------------------------------------------------------
# Length arithmetic
# ------------------------------------------------------------------------------------------------
def latent_frames_for_duration(duration_s: float) -> int:
    """Latent width for a requested duration, truncated like upstream (left-to-right float64)."""
    return int(float(duration_s) * SAMPLE_RATE / HOP / 8)


def samples_for_latent_frames(num_frames: int) -> int:
    """Samples per channel at 44.1 kHz produced by decoding `num_frames` latent frames."""
    return LATENT_HOP * int(num_frames)


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def hann_window(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Periodic Hann window, computed on CPU in float32 (as the upstream buffer is), then cast."""
    return torch.hann_window(n, periodic=True, dtype=torch.float32, device="cpu").to(dtype)


def _slaney_hz_to_mel(freq_hz: float) -> float:
    # Python-float arithmetic on purpose: the two end points are computed this way upstream.
    linear_step = 200.0 / 3
    if freq_hz < 1000.0:
        return freq_hz / linear_step
    log_step = math.log(6.4) / 27.0
    return 1000.0 / linear_step + math.log(freq_hz / 1000.0) / log_step


def _slaney_mel_to_hz(mels: Tensor) -> Tensor:
    # Tensor arithmetic in the dtype of `mels` (float32), same op order as torchaudio.
    linear_step = 200.0 / 3
    break_mel = 1000.0 / linear_step
    log_step = math.log(6.4) / 27.0
    hz = 0.0 + linear_step * mels
    return torch.where(mels >= break_mel, 1000.0 * torch.exp(log_step * (mels - break_mel)), hz)


def slaney_mel_filterbank(
    n_freqs: int = 1025,
    f_min: float = 40.0,
    f_max: float = 16000.0,
    n_mels: int = 128,
    sample_rate: int = SAMPLE_RATE,
) -> Tensor:
    """Slaney-scale, Slaney-normalised triangular mel filterbank, shape (n_freqs, n_mels), float32.

    Always built on CPU. Bitwise the construction of torchaudio's `melscale_fbanks(norm="slaney", mel_scale="slaney")`
    (the `mel_transform.mel_scale.fb` buffer) so checkpoints lacking the buffer decode identically.
    """
    grid_hz = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float32, device="cpu")
    mel_points = torch.linspace(
        _slaney_hz_to_mel(f_min), _slaney_hz_to_mel(f_max), n_mels + 2, dtype=torch.float32, device="cpu"
    )
    edges_hz = _slaney_mel_to_hz(mel_points)  # (n_mels + 2,)

    widths = edges_hz[1:] - edges_hz[:-1]  # (n_mels + 1,)
    offsets = edges_hz.unsqueeze(0) - grid_hz.unsqueeze(1)  # (n_freqs, n_mels + 2)
    rising = (-1.0 * offsets[:, :-2]) / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    fb = torch.max(torch.zeros(1, device="cpu"), torch.min(rising, falling))

    area_norm = 2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels])
    fb *= area_norm.unsqueeze(0)
    return fb


# ------------------------------------------------------------------------------------------------
# Resampling (band-limited sinc with a Hann window, torchaudio "sinc_interp_hann" defaults)
# ------------------------------------------------------------------------------------------------
def _reduced_rates(orig_sr: int, new_sr: int) -> tuple[int, int]:
    g = math.gcd(int(orig_sr), int(new_sr))
    return int(orig_sr) // g, int(new_sr) // g


@lru_cache(maxsize=32)
def _build_resample_kernel(
    orig_sr: int, new_sr: int, native_dtype: torch.dtype | None
) -> tuple[Tensor, int, int, int]:
    o, n = _reduced_rates(orig_sr, new_sr)
    base = min(o, n) * _RESAMPLE_ROLLOFF
    width = math.ceil(_RESAMPLE_TAPS_PER_SIDE * o / base)

    # Variant (a), native_dtype None: tap positions m/o in float64, output phases j/n in float32
    # (upstream divides an integer arange, which gives the default float dtype) promoted to
    # float64, result cast to float32. Variant (c): every step in `native_dtype`.
    tap_dtype = torch.float64 if native_dtype is None else native_dtype
    phase_dtype = torch.float32 if native_dtype is None else native_dtype
    tap_pos = torch.arange(-width, width + o, dtype=tap_dtype, device="cpu")[None, None] / o
    phase = torch.arange(0, -n, -1, dtype=phase_dtype, device="cpu")[:, None, None] / n
    tau = (phase + tap_pos) * base
    tau = tau.clamp(-_RESAMPLE_TAPS_PER_SIDE, _RESAMPLE_TAPS_PER_SIDE)
    window = torch.cos(tau * math.pi / _RESAMPLE_TAPS_PER_SIDE / 2) ** 2
    arg = tau * math.pi
    sinc = torch.where(arg == 0, torch.ones((), dtype=arg.dtype, device="cpu"), arg.sin() / arg)
    kernel = sinc * (window * (base / o))
    if native_dtype is None:
        kernel = kernel.to(torch.float32)
    return kernel, width, o, n


def resample_kernel(
    orig_sr: int, new_sr: int, native_dtype: torch.dtype | None = None
) -> tuple[Tensor, int, int, int]:
    """Polyphase sinc kernel `(n, 1, 2*width + o)` plus `(width, o, n)` (gcd-reduced rates).

    `native_dtype=None`: variant (a) of spec 3.6 (float64 construction with float32 phases, cast to
    float32), used by upstream's default decode. `native_dtype=dt`: variant (c), built entirely in
    `dt` (upstream's overlapped decode). Cached per arguments: do not modify the tensor in place.
    """
    return _build_resample_kernel(int(orig_sr), int(new_sr), native_dtype)


def resampled_length(length: int, orig_sr: int, new_sr: int) -> int:
    """Output length of `resample` for an input of `length` samples.

    Mathematically `ceil(n * length / o)`, but upstream rounds the float64 quotient to float32
    before the ceiling (`torch.as_tensor` of a Python float), which drops one sample for some
    lengths (e.g. 44.1k->48k with length 4096*160 gives 713317, not 713318). Reproduced here.
    """
    o, n = _reduced_rates(orig_sr, new_sr)
    return int(math.ceil(float(torch.tensor(n * length / o, dtype=torch.float32))))


def resample(wave: Tensor, orig_sr: int, new_sr: int, native_kernel: bool = False) -> Tensor:
    """Resample along the last axis (identity when the rates are equal).

    By default the variant-(a) float32 kernel is cast to `wave`'s dtype: float32 input gives spec
    variant (a), bf16 input variant (b) (as upstream's encode path). `native_kernel=True` builds
    the kernel directly in `wave`'s dtype (variant (c), upstream's overlapped decode).
    """
    if int(orig_sr) == int(new_sr):
        return wave
    kernel, width, o, n = resample_kernel(orig_sr, new_sr, wave.dtype if native_kernel else None)
    kernel = kernel.to(device=wave.device, dtype=wave.dtype)

    lead_shape = wave.shape[:-1]
    length = wave.shape[-1]
    rows = wave.reshape(-1, 1, length)
    rows = F.pad(rows, (width, width + o))
    phases = F.conv1d(rows, kernel, stride=o)  # (rows, n, blocks)
    out = phases.transpose(1, 2).reshape(rows.shape[0], -1)  # interleave the n output phases
    out = out[:, : resampled_length(length, orig_sr, new_sr)]
    return out.reshape(*lead_shape, out.shape[-1])
