"""Music vocoder `ADaMoSHiFiGANV1`: log-mel (B, 128, F) -> waveform (B, 1, 512 F) at 44.1 kHz.

ConvNeXt backbone followed by a HiFi-GAN generator head (spec 3.5), plus the log-mel front end used
by the DCAE wrapper's encoder (spec 3.3). Attribute names follow the upstream state-dict keys.
Weight-normed convolutions store `weight_g`/`weight_v` and rebuild the effective weight at every
forward from the (possibly bf16-cast) parameters, exactly as the legacy weight-norm hook does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from acestep_batch.model.dsp import hann_window, slaney_mel_filterbank

# ------------------------------------------------------------------------------------------------
# Log-mel front end
# ------------------------------------------------------------------------------------------------


class _WindowHolder(nn.Module):
    """Holds the STFT window under the key `spectrogram.window`."""

    def __init__(self, win_length: int) -> None:
        super().__init__()
        self.register_buffer("window", hann_window(win_length), persistent=True)


class _FilterbankHolder(nn.Module):
    """Holds the mel filterbank under the key `mel_scale.fb`."""

    def __init__(self, n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> None:
        super().__init__()
        fb = slaney_mel_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate)
        self.register_buffer("fb", fb, persistent=True)


class LogMelSpectrogram(nn.Module):
    """Natural-log Slaney mel magnitude spectrogram, one frame per `hop_length` samples.

    Input `(..., L)`; output `(..., n_mels, F)` with `F = (L + 2 * pad - n_fft) // hop + 1` where
    `pad = (win_length - hop_length) // 2` (so `F = L / hop` when `L` is a multiple of `hop`).
    The STFT always runs in float32; magnitude and mel matmul run in the input dtype.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        n_fft: int = 2048,
        win_length: int = 2048,
        hop_length: int = 512,
        f_min: float = 40.0,
        f_max: float = 16000.0,
        n_mels: int = 128,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.spectrogram = _WindowHolder(win_length)
        self.mel_scale = _FilterbankHolder(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)

    def forward(self, wave: Tensor) -> Tensor:
        lead_shape = wave.shape[:-1]
        x = wave.reshape(-1, 1, wave.shape[-1])
        pad_left = (self.win_length - self.hop_length) // 2
        pad_right = (self.win_length - self.hop_length + 1) // 2
        x = F.pad(x, (pad_left, pad_right), mode="reflect").squeeze(1)

        # The window buffer follows the model dtype (bf16 in the default pipeline); the STFT itself
        # runs in float32 on the bf16-rounded window values.
        spec = torch.stft(
            x.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.spectrogram.window.float(),
            center=False,
            onesided=True,
            return_complex=True,
        )
        spec = torch.view_as_real(spec).pow(2).sum(-1)
        magnitude = torch.sqrt(spec + 1e-6).to(wave.dtype)  # (rows, n_freqs, F)

        mel = torch.matmul(magnitude.transpose(-1, -2), self.mel_scale.fb).transpose(-1, -2)
        log_mel = torch.log(torch.clamp(mel, min=1e-5))
        return log_mel.reshape(*lead_shape, *log_mel.shape[-2:])


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of (B, C, T), written op by op in the tensor dtype (no upcast).

    Upstream computes it this way (not with `F.layer_norm`), which matters for bf16 parity.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None] * x + self.bias[:, None]


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block: depthwise conv, LayerNorm, MLP (x4, exact GELU), layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x)
        y = y.transpose(1, 2)
        y = self.norm(y)
        y = self.pwconv1(y)
        y = self.act(y)
        y = self.pwconv2(y)
        y = self.gamma * y
        y = y.transpose(1, 2)
        return x + y


class ConvNeXtEncoder(nn.Module):
    """Backbone: per stage a channel layer (stem or LN + 1x1 conv) then ConvNeXt blocks; final LN."""

    def __init__(
        self,
        input_channels: int,
        depths: Sequence[int],
        dims: Sequence[int],
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv1d(
                input_channels,
                dims[0],
                kernel_size,
                padding=kernel_size // 2,
                padding_mode="replicate",
            ),
            ChannelsFirstLayerNorm(dims[0]),
        )
        self.channel_layers = nn.ModuleList([stem])
        for i in range(1, len(dims)):
            self.channel_layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(dims[i - 1]),
                    nn.Conv1d(dims[i - 1], dims[i], kernel_size=1),
                )
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim, kernel_size) for _ in range(depth)))
            for depth, dim in zip(depths, dims)
        )
        self.norm = ChannelsFirstLayerNorm(dims[-1])

    def forward(self, x: Tensor) -> Tensor:
        for channel_layer, stage in zip(self.channel_layers, self.stages):
            x = channel_layer(x)
            x = stage(x)
        return self.norm(x)


class _WeightNormed(nn.Module):
    """Weight norm over dim 0 as the old `torch.nn.utils.weight_norm` hook: parameters `weight_g`
    and `weight_v`; the effective weight is recomputed from them at every call (in their dtype)."""

    def __init__(self, shape: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        v = torch.empty(*shape)
        nn.init.normal_(v, 0.0, 0.01)
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    @property
    def weight(self) -> Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)


class WeightNormConv1d(_WeightNormed):
    """Conv1d with weight norm over dim 0 (= output channels: `weight_g` is [out, 1, 1])."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__((out_channels, in_channels, kernel_size), out_channels)
        self.dilation = dilation
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, padding=self.padding, dilation=self.dilation)


class WeightNormConvTranspose1d(_WeightNormed):
    """ConvTranspose1d with weight norm over dim 0 (= input channels: `weight_g` is [in, 1, 1])."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__((in_channels, out_channels, kernel_size), out_channels)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class ResBlock1(nn.Module):
    """HiFi-GAN MRF residual block: three (dilated conv, conv) pairs with SiLU pre-activations."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            WeightNormConv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WeightNormConv1d(channels, channels, kernel_size, dilation=1, padding=(kernel_size - 1) // 2)
            for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            t = conv1(F.silu(x))
            t = conv2(F.silu(t))
            x = x + t
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN head: conv_pre, then per upsampling stage SiLU -> transposed conv -> mean of MRF blocks."""

    def __init__(
        self,
        num_mels: int,
        upsample_initial_channel: int,
        upsample_rates: Sequence[int],
        upsample_kernel_sizes: Sequence[int],
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        pre_conv_kernel_size: int = 13,
        post_conv_kernel_size: int = 13,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = WeightNormConv1d(
            num_mels, upsample_initial_channel, pre_conv_kernel_size, padding=(pre_conv_kernel_size - 1) // 2
        )
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes):
            self.ups.append(
                WeightNormConvTranspose1d(channels, channels // 2, kernel, stride=rate, padding=(kernel - rate) // 2)
            )
            channels //= 2
            for k, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(channels, k, dilations))
        self.conv_post = WeightNormConv1d(
            channels, 1, post_conv_kernel_size, padding=(post_conv_kernel_size - 1) // 2
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = F.silu(x)
            x = up(x)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc = acc + block(x)
            x = acc / self.num_kernels
        x = F.silu(x)
        x = self.conv_post(x)
        return torch.tanh(x)


# ------------------------------------------------------------------------------------------------
# Top-level vocoder
# ------------------------------------------------------------------------------------------------


class ADaMoSHiFiGANV1(nn.Module):
    """ACE-Step's music vocoder (`music_vocoder` folder). Constructor args = its config keys."""

    OPTIONAL_STATE_KEYS = ("mel_transform.spectrogram.window", "mel_transform.mel_scale.fb")
    """Persistent buffers the checkpoint may omit; their computed values equal upstream's."""

    def __init__(
        self,
        input_channels: int = 128,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (128, 256, 384, 512),
        drop_path_rate: float = 0.0,
        kernel_sizes: Sequence[int] = (7,),
        upsample_rates: Sequence[int] = (4, 4, 2, 2, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (8, 8, 4, 4, 4, 4, 4),
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11, 13),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5), (1, 3, 5)),
        num_mels: int = 512,
        upsample_initial_channel: int = 1024,
        use_template: bool = False,
        pre_conv_kernel_size: int = 13,
        post_conv_kernel_size: int = 13,
        sampling_rate: int = 44100,
        n_fft: int = 2048,
        win_length: int = 2048,
        hop_length: int = 512,
        f_min: float = 40.0,
        f_max: float = 16000.0,
        n_mels: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if use_template:
            raise NotImplementedError("use_template=True (noise-template head) is not used by ACE-Step")
        # drop_path_rate only matters in training (stochastic depth); inference is the identity.
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.backbone = ConvNeXtEncoder(input_channels, depths, dims, kernel_size=kernel_sizes[0])
        self.head = HiFiGANGenerator(
            num_mels=num_mels,
            upsample_initial_channel=upsample_initial_channel,
            upsample_rates=upsample_rates,
            upsample_kernel_sizes=upsample_kernel_sizes,
            resblock_kernel_sizes=resblock_kernel_sizes,
            resblock_dilation_sizes=resblock_dilation_sizes,
            pre_conv_kernel_size=pre_conv_kernel_size,
            post_conv_kernel_size=post_conv_kernel_size,
        )
        self.mel_transform = LogMelSpectrogram(
            sample_rate=sampling_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ADaMoSHiFiGANV1":
        """Build from a `config.json` dict; `_`-prefixed metadata and unknown keys are ignored."""
        return cls(**{k: v for k, v in config.items() if not k.startswith("_")})

    def decode(self, mel: Tensor) -> Tensor:
        """Log-mel (B, n_mels, F) -> waveform (B, 1, hop * F) in [-1, 1]."""
        return self.head(self.backbone(mel))

    def forward(self, mel: Tensor) -> Tensor:
        return self.decode(mel)
