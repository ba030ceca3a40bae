"""Music DCAE: stereo audio <-> latents (N, 8, 16, T) through log-mel, diffusers' AutoencoderDC and
the music vocoder (spec 3.1-3.4).

`AutoencoderDC` comes from diffusers (its module tree is the checkpoint's key contract). Only its
`encoder` and `decoder` sub-modules are called: ACE-Step bypasses `AutoencoderDC.encode/decode`
(no tiling, no `scaling_factor`). The wrapper itself has no state dict of its own.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderDC
from torch import Tensor

from acestep_batch.model.dsp import HOP, LATENT_HOP, SAMPLE_RATE, resample
from acestep_batch.model.vocoder import ADaMoSHiFiGANV1

DCAE_DEFAULT_CONFIG: dict[str, Any] = {
    "in_channels": 2,
    "latent_channels": 8,
    "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [128, 256, 512, 1024],
    "decoder_block_out_channels": [128, 256, 512, 1024],
    "encoder_layers_per_block": [2, 2, 3, 3],
    "decoder_layers_per_block": [3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [5], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 0.41407,
}
"""Full-size `music_dcae_f8c8` configuration (AutoencoderDC kwargs)."""


def build_autoencoder_dc(config: dict[str, Any]) -> AutoencoderDC:
    """Construct an `AutoencoderDC` from a config dict with diffusers' `ConfigMixin` semantics.

    `_`-prefixed metadata and keys that are not `__init__` parameters are dropped; missing keys take
    diffusers' defaults (which are *not* the music values, so pass a complete config).
    """
    accepted = set(inspect.signature(AutoencoderDC.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in config.items() if not k.startswith("_") and k in accepted}
    return AutoencoderDC(**kwargs)


MEL_FRAMES_PER_LATENT = LATENT_HOP // HOP  # 8


@dataclass(frozen=True)
class OverlapGeometry:
    """Window sizes of upstream's overlapped decode (spec 3.1); defaults are upstream's values.

    DCAE stage in latent frames (`dcae_window`, `dcae_anchor_offset`, `dcae_anchor_hop`) and mel
    frames (`mel_overlap`); vocoder stage in mel frames (`vocoder_block`) and samples
    (`wave_overlap`, `crossfade`). Smaller values exist for tests only.
    """

    dcae_window: int = 512
    dcae_anchor_offset: int = 128
    dcae_anchor_hop: int = 256
    mel_overlap: int = 1024
    vocoder_block: int = 512
    wave_overlap: int = 1024
    crossfade: int = 128


def dcae_window_plan(width: int, geometry: OverlapGeometry = OverlapGeometry()) -> list[tuple[int, int, int, int]]:
    """Windows of the overlapped DCAE stage for a latent of `width` frames.

    Returns `(latent_start, latent_end, keep_start, keep_end)` per window, where the kept range is in
    mel frames relative to the window's decoded mel (8 per latent frame).
    """
    g = geometry
    anchors = list(range(g.dcae_anchor_offset, width - g.dcae_anchor_offset, g.dcae_anchor_hop))
    anchors = anchors or [g.dcae_anchor_offset]
    plan = []
    for i, anchor in enumerate(anchors):
        start = max(0, anchor - g.dcae_anchor_offset)
        end = min(width, start + g.dcae_window)
        mel_len = MEL_FRAMES_PER_LATENT * (end - start)
        if len(anchors) == 1:
            keep = (0, min(mel_len, MEL_FRAMES_PER_LATENT * g.dcae_window))
        elif i == 0:
            keep = (0, mel_len - g.mel_overlap)
        elif i == len(anchors) - 1:
            keep = (g.mel_overlap, mel_len)
        else:
            keep = (g.mel_overlap, mel_len - g.mel_overlap)
        plan.append((start, end, *keep))
    return plan


class MusicDCAE(nn.Module):
    """Audio <-> latent codec used by ACE-Step v1 (the upstream `MusicDCAE` container).

    Call `.to(device).eval().to(dtype)` on the whole wrapper, like upstream: parameters and the
    vocoder's mel buffers then share the model dtype, which is the dtype audio and mels flow in.
    """

    min_mel_value = -11.0
    max_mel_value = 3.0
    scale_factor = 0.1786
    shift_factor = -1.9091
    sample_rate = SAMPLE_RATE

    def __init__(self, dcae: AutoencoderDC, vocoder: ADaMoSHiFiGANV1) -> None:
        super().__init__()
        self.dcae = dcae
        self.vocoder = vocoder

    @property
    def dtype(self) -> torch.dtype:
        return next(self.dcae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.dcae.parameters()).device

    # -- encode -----------------------------------------------------------------------------------
    def encode(self, audio: Tensor, sample_rate: int) -> Tensor:
        """Stereo audio (N, 2, L) at `sample_rate` -> latents (N, 8, 16, ceil(L' / 4096)).

        The audio is cast to the model dtype first (upstream's pipeline does this before calling
        encode), so resampling and the mel magnitude run in bf16 in a bf16 model. `L'` is the
        length after resampling to 44.1 kHz; it is right-padded with zeros to a multiple of 4096.
        """
        audio = audio.to(device=self.device, dtype=self.dtype)
        audio = resample(audio, sample_rate, SAMPLE_RATE)
        remainder = audio.shape[-1] % LATENT_HOP
        if remainder:
            audio = F.pad(audio, (0, LATENT_HOP - remainder))

        mel = torch.stack([self.vocoder.mel_transform(item) for item in audio])  # (N, 2, 128, F)
        mel = (mel - self.min_mel_value) / (self.max_mel_value - self.min_mel_value)
        mel = (mel - 0.5) / 0.5

        z = torch.cat([self.dcae.encoder(item[None]) for item in mel])  # (N, 8, 16, F / 8)
        return (z - self.shift_factor) * self.scale_factor

    # -- decode -----------------------------------------------------------------------------------
    def latents_to_mel(self, latents: Tensor) -> Tensor:
        """Latents (1, 8, 16, T) -> log-mel (1, 2, 128, 8T) through the DCAE decoder (one item)."""
        z = latents / self.scale_factor + self.shift_factor
        mel = self.dcae.decoder(z)
        mel = mel * 0.5 + 0.5
        return mel * (self.max_mel_value - self.min_mel_value) + self.min_mel_value

    def mel_to_wave(self, mel: Tensor) -> Tensor:
        """Stereo log-mel (1, 2, 128, F) -> (2, 512 F); each channel vocoded alone (batch 1)."""
        left = self.vocoder.decode(mel[:, 0]).squeeze(1)
        right = self.vocoder.decode(mel[:, 1]).squeeze(1)
        return torch.cat([left, right], dim=0)

    def decode(self, latents: Tensor, sample_rate: int | None = None) -> list[Tensor]:
        """Latents (N, 8, 16, T) -> N waves (2, 4096 T), decoded item by item (upstream's default path).

        Waves are at 44.1 kHz in the model dtype, on the model device. With `sample_rate` given
        (and != 44100) each wave is moved to CPU, upcast to float32 *after* the model-dtype
        quantisation and resampled there, exactly as upstream's `decode(..., sr)` does.
        """
        waves = []
        for item in latents:
            mel = self.latents_to_mel(item[None])
            wave = self.mel_to_wave(mel)
            if sample_rate is not None and sample_rate != SAMPLE_RATE:
                wave = resample(wave.cpu().float(), SAMPLE_RATE, sample_rate)
            waves.append(wave)
        return waves

    # -- overlapped decode (upstream `decode_overlap`, only used for long outputs) -----------------
    def decode_overlap(
        self,
        latents: Tensor,
        sample_rate: int | None = None,
        geometry: OverlapGeometry = OverlapGeometry(),
    ) -> list[Tensor]:
        """Windowed decode bounding memory: DCAE in overlapping latent windows, vocoder in blocks.

        Numerically different from `decode` (window seams, both channels vocoded as one batch of
        2, float32 ramps that promote the wave to float32, a natively built resampling kernel).
        Each wave is cropped to `int(4096 * T * sr / 44100)` samples (sr = 44100 when None).
        """
        sr = SAMPLE_RATE if sample_rate is None else sample_rate
        z = latents / self.scale_factor + self.shift_factor
        waves = []
        for item in z:
            width = item.shape[-1]
            pieces = []
            for start, end, keep_start, keep_end in dcae_window_plan(width, geometry):
                mel = self.dcae.decoder(item[None, :, :, start:end])
                pieces.append(mel[..., keep_start:keep_end])
            mel = torch.cat(pieces, dim=-1)
            mel = mel * 0.5 + 0.5
            mel = mel * (self.max_mel_value - self.min_mel_value) + self.min_mel_value
            wave = self._vocode_blocks(mel[0], geometry)
            if sr != SAMPLE_RATE:
                wave = resample(wave.cpu(), SAMPLE_RATE, sr, native_kernel=True)
            waves.append(wave[:, : int(LATENT_HOP * width * sr / SAMPLE_RATE)])
        return waves

    def _vocode_blocks(self, mel: Tensor, geometry: OverlapGeometry) -> Tensor:
        """(2, n_mels, M) -> (2, >= 512 M): fixed-size mel blocks, linear cross-fades at the seams."""
        g = geometry
        hop_len = self.vocoder.hop_length
        block_len = g.vocoder_block * hop_len
        step = block_len - 2 * g.wave_overlap  # samples between block starts
        total = mel.shape[-1] * hop_len
        if step % hop_len:
            raise ValueError("vocoder block step must be a whole number of mel frames")

        def vocode(first_frame: int) -> Tensor:
            block = mel[..., first_frame : first_frame + g.vocoder_block]
            block = F.pad(block, (0, g.vocoder_block - block.shape[-1]))  # zeros: not silence in log-mel
            return self.vocoder.decode(block).squeeze(1)  # (2, block_len)

        out = vocode(0)[:, : -g.wave_overlap]
        pos = step
        while pos < total:
            w = vocode(pos // hop_len)
            cf = min(g.crossfade, out.shape[-1], w.shape[-1] - (g.wave_overlap - g.crossfade))
            ramp_down = torch.linspace(1, 0, cf, dtype=torch.float32, device=w.device)
            ramp_up = torch.linspace(0, 1, cf, dtype=torch.float32, device=w.device)
            blended = out[:, -cf:] * ramp_down + w[:, g.wave_overlap - cf : g.wave_overlap] * ramp_up
            tail = w[:, g.wave_overlap :] if pos + step >= total else w[:, g.wave_overlap : -g.wave_overlap]
            out = torch.cat([out[:, :-cf], blended, tail], dim=-1)  # float32 from here on
            pos += step
        return out
