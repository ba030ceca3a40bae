"""Music vocoder (spec 3.3 log-mel front end, 3.5 ConvNeXt + HiFi-GAN) on the tiny config of 10.2.

The forward pass is checked against an independent functional implementation written from the spec
that reads only the state dict, and the key/shape contract against patterns derived from the spec.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acestep_batch.model.vocoder import (
    ADaMoSHiFiGANV1,
    ChannelsFirstLayerNorm,
    WeightNormConv1d,
    WeightNormConvTranspose1d,
)




TINY = dict(input_channels=128, depths=[1, 1, 1, 1], dims=[8, 16, 24, 32], num_mels=32, upsample_initial_channel=128)
RATES = (4, 4, 2, 2, 2, 2, 2)
UP_KERNELS = (8, 8, 4, 4, 4, 4, 4)
RES_KERNELS = (3, 7, 11, 13)
DILATIONS = (1, 3, 5)


def make_tiny(seed: int = 0) -> ADaMoSHiFiGANV1:
    """Tiny vocoder with random weights scaled so activations stay O(1) (spec 10.1)."""
    torch.manual_seed(seed)
    model = ADaMoSHiFiGANV1(**TINY).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (ChannelsFirstLayerNorm, torch.nn.LayerNorm)):
                module.weight.copy_(1.0 + 0.1 * torch.randn_like(module.weight))
                module.bias.normal_(0.0, 0.1)
            elif isinstance(module, (WeightNormConv1d, WeightNormConvTranspose1d)):
                module.weight_v.normal_()
                module.weight_g.uniform_(0.5, 1.2)
                module.bias.normal_(0.0, 0.05)
            elif isinstance(module, (torch.nn.Conv1d, torch.nn.Linear)):
                module.weight.normal_(0.0, 1.0 / math.sqrt(module.weight[0].numel()))
                module.bias.normal_(0.0, 0.05)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.6)
    return model


# ------------------------------------------------------------------------------------------------
# Independent functional reference (state dict only)
# ------------------------------------------------------------------------------------------------


def _ln_cf(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    xm = x - x.mean(1, keepdim=True)
    return w[:, None] * xm / torch.sqrt((xm * xm).mean(1, keepdim=True) + 1e-6) + b[:, None]


def _wn(sd: dict, prefix: str) -> torch.Tensor:
    v, g = sd[prefix + ".weight_v"], sd[prefix + ".weight_g"]
    norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, 1, 1)
    return g * v / norm


def reference_decode(sd: dict, mel: torch.Tensor, depths: list[int]) -> torch.Tensor:
    x = F.pad(mel, (3, 3), mode="replicate")
    x = F.conv1d(x, sd["backbone.channel_layers.0.0.weight"], sd["backbone.channel_layers.0.0.bias"])
    x = _ln_cf(x, sd["backbone.channel_layers.0.1.weight"], sd["backbone.channel_layers.0.1.bias"])
    for i, depth in enumerate(depths):
        if i > 0:
            p = f"backbone.channel_layers.{i}"
            x = _ln_cf(x, sd[p + ".0.weight"], sd[p + ".0.bias"])
            x = F.conv1d(x, sd[p + ".1.weight"], sd[p + ".1.bias"])
        for b in range(depth):
            p = f"backbone.stages.{i}.{b}"
            d = x.shape[1]
            y = F.conv1d(x, sd[p + ".dwconv.weight"], sd[p + ".dwconv.bias"], padding=3, groups=d).transpose(1, 2)
            y = F.layer_norm(y, (d,), sd[p + ".norm.weight"], sd[p + ".norm.bias"], eps=1e-6)
            y = F.gelu(F.linear(y, sd[p + ".pwconv1.weight"], sd[p + ".pwconv1.bias"]))
            y = F.linear(y, sd[p + ".pwconv2.weight"], sd[p + ".pwconv2.bias"]) * sd[p + ".gamma"]
            x = x + y.transpose(1, 2)
    x = _ln_cf(x, sd["backbone.norm.weight"], sd["backbone.norm.bias"])

    x = F.conv1d(x, _wn(sd, "head.conv_pre"), sd["head.conv_pre.bias"], padding=6)
    for i, (u, k) in enumerate(zip(RATES, UP_KERNELS)):
        x = F.conv_transpose1d(F.silu(x), _wn(sd, f"head.ups.{i}"), sd[f"head.ups.{i}.bias"], stride=u, padding=(k - u) // 2)
        total = 0
        for j, kr in enumerate(RES_KERNELS):
            p = f"head.resblocks.{4 * i + j}"
            h = x
            for m, dil in enumerate(DILATIONS):
                t = F.conv1d(F.silu(h), _wn(sd, f"{p}.convs1.{m}"), sd[f"{p}.convs1.{m}.bias"], dilation=dil, padding=dil * (kr - 1) // 2)
                t = F.conv1d(F.silu(t), _wn(sd, f"{p}.convs2.{m}"), sd[f"{p}.convs2.{m}.bias"], padding=(kr - 1) // 2)
                h = h + t
            total = total + h
        x = total / len(RES_KERNELS)
    x = F.conv1d(F.silu(x), _wn(sd, "head.conv_post"), sd["head.conv_post.bias"], padding=6)
    return torch.tanh(x)


def expected_tiny_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape map from the spec 3.5 key patterns, instantiated for the tiny config."""
    dims, depths = TINY["dims"], TINY["depths"]
    shapes: dict[str, tuple[int, ...]] = {
        "backbone.channel_layers.0.0.weight": (dims[0], 128, 7),
        "backbone.channel_layers.0.0.bias": (dims[0],),
        "backbone.channel_layers.0.1.weight": (dims[0],),
        "backbone.channel_layers.0.1.bias": (dims[0],),
        "backbone.norm.weight": (dims[-1],),
        "backbone.norm.bias": (dims[-1],),
        "mel_transform.spectrogram.window": (2048,),
        "mel_transform.mel_scale.fb": (1025, 128),
    }
    for i in range(1, 4):
        p = f"backbone.channel_layers.{i}"
        shapes |= {p + ".0.weight": (dims[i - 1],), p + ".0.bias": (dims[i - 1],),
                   p + ".1.weight": (dims[i], dims[i - 1], 1), p + ".1.bias": (dims[i],)}
    for i, (d, depth) in enumerate(zip(dims, depths)):
        for b in range(depth):
            p = f"backbone.stages.{i}.{b}"
            shapes |= {p + ".dwconv.weight": (d, 1, 7), p + ".dwconv.bias": (d,), p + ".norm.weight": (d,),
                       p + ".norm.bias": (d,), p + ".pwconv1.weight": (4 * d, d), p + ".pwconv1.bias": (4 * d,),
                       p + ".pwconv2.weight": (d, 4 * d), p + ".pwconv2.bias": (d,), p + ".gamma": (d,)}
    c = TINY["upsample_initial_channel"]
    shapes |= {"head.conv_pre.weight_g": (c, 1, 1), "head.conv_pre.weight_v": (c, TINY["num_mels"], 13),
               "head.conv_pre.bias": (c,)}
    for i, k in enumerate(UP_KERNELS):
        shapes |= {f"head.ups.{i}.weight_g": (c, 1, 1), f"head.ups.{i}.weight_v": (c, c // 2, k),
                   f"head.ups.{i}.bias": (c // 2,)}
        c //= 2
        for j, kr in enumerate(RES_KERNELS):
            for conv in ("convs1", "convs2"):
                for m in range(3):
                    p = f"head.resblocks.{4 * i + j}.{conv}.{m}"
                    shapes |= {p + ".weight_g": (c, 1, 1), p + ".weight_v": (c, c, kr), p + ".bias": (c,)}
    shapes |= {"head.conv_post.weight_g": (1, 1, 1), "head.conv_post.weight_v": (1, c, 13), "head.conv_post.bias": (1,)}
    return shapes


# ------------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------------


def test_tiny_state_dict_keys_and_shapes() -> None:
    model = ADaMoSHiFiGANV1(**TINY)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_tiny_shapes()


def test_full_size_parameter_count() -> None:
    with torch.device("meta"):
        model = ADaMoSHiFiGANV1()
    assert sum(p.numel() for p in model.parameters()) == 103_005_138
    assert tuple(model.state_dict()["head.conv_pre.weight_v"].shape) == (1024, 512, 13)
    assert tuple(model.state_dict()["head.conv_post.weight_v"].shape) == (1, 8, 13)
    assert tuple(model.state_dict()["head.ups.0.weight_g"].shape) == (1024, 1, 1)


def test_from_config_ignores_metadata_and_unknown_keys() -> None:
    cfg = {"_class_name": "ADaMoSHiFiGANV1", "_diffusers_version": "0.32.2", "something_new": 3, **TINY}
    model = ADaMoSHiFiGANV1.from_config(cfg)
    assert tuple(model.state_dict()["head.conv_pre.weight_v"].shape) == (128, 32, 13)


def test_optional_mel_buffers_can_be_absent_from_checkpoint() -> None:
    src = make_tiny(1)
    sd = {k: v for k, v in src.state_dict().items() if k not in ADaMoSHiFiGANV1.OPTIONAL_STATE_KEYS}
    dst = ADaMoSHiFiGANV1(**TINY)
    result = dst.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == sorted(ADaMoSHiFiGANV1.OPTIONAL_STATE_KEYS)
    assert result.unexpected_keys == []
    mel = torch.randn(1, 128, 3)
    with torch.no_grad():
        assert torch.equal(dst.decode(mel), src.decode(mel))


# ------------------------------------------------------------------------------------------------
# Numerics
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 9])
def test_decode_length_range_and_reference(frames: int) -> None:
    model = make_tiny()
    mel = torch.randn(2, 128, frames) * 2 - 4
    with torch.no_grad():
        wave = model.decode(mel)
    assert wave.shape == (2, 1, 512 * frames)
    assert wave.dtype == torch.float32
    assert float(wave.abs().max()) <= 1.0
    assert float(wave.std()) > 1e-3  # non-trivial output with these weights

    sd = {k: v.double() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = reference_decode(sd, mel.double(), TINY["depths"])
        wave64 = model.double().decode(mel.double())
    torch.testing.assert_close(wave64, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(wave.double(), ref, atol=2e-5, rtol=0)


def test_decode_bf16_runs_in_bf16() -> None:
    model = make_tiny()
    mel = torch.randn(1, 128, 4) - 4
    with torch.no_grad():
        ref = model.decode(mel)
        out = model.to(torch.bfloat16).decode(mel.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert float((out.float() - ref).abs().max()) < 0.1


def test_weight_norm_effective_weight() -> None:
    torch.manual_seed(0)
    conv = WeightNormConv1d(6, 5, 3, dilation=2, padding=2)
    up = WeightNormConvTranspose1d(6, 3, 8, stride=4, padding=2)
    with torch.no_grad():
        for m in (conv, up):
            m.weight_v.normal_()
            m.weight_g.uniform_(0.5, 2.0)
    assert conv.weight_g.shape == (5, 1, 1)
    assert up.weight_g.shape == (6, 1, 1)  # dim 0 of a transposed-conv weight is the input channel
    for m in (conv, up):
        v = m.weight_v.detach().double().numpy()
        g = m.weight_g.detach().double().numpy()
        norms = np.sqrt((v.reshape(v.shape[0], -1) ** 2).sum(1)).reshape(-1, 1, 1)
        np.testing.assert_allclose(m.weight.detach().double().numpy(), g * v / norms, rtol=1e-6, atol=1e-7)
    x = torch.randn(2, 6, 10)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv1d(x, conv.weight, conv.bias, padding=2, dilation=2))
        y = up(x)
    assert y.shape == (2, 3, 40)  # exact x4 upsampling
    # The effective weight follows the parameters (recomputed per forward, e.g. after a bf16 cast).
    with torch.no_grad():
        conv.weight_g.mul_(2.0)
        torch.testing.assert_close(conv(x) - conv.bias[:, None], 2 * (F.conv1d(x, conv.weight / 2, padding=2, dilation=2)))


def test_channels_first_layernorm_matches_f_layer_norm() -> None:
    torch.manual_seed(0)
    ln = ChannelsFirstLayerNorm(24)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(3, 24, 17) * 3 + 1
    expected = F.layer_norm(x.transpose(1, 2), (24,), ln.weight, ln.bias, eps=1e-6).transpose(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(ln(x), expected, atol=1e-5, rtol=0)
        # Hand-written: stays in bf16 (no upcast), unlike F.layer_norm's float accumulation.
        assert ln.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------
# Log-mel front end
# ------------------------------------------------------------------------------------------------


def _np_slaney_fb() -> np.ndarray:
    def hz_to_mel(f: float) -> float:
        return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) / (math.log(6.4) / 27)

    mels = np.linspace(hz_to_mel(40.0), hz_to_mel(16000.0), 130)
    edges = np.where(mels < 15, mels * 200 / 3, 1000 * np.exp((mels - 15) * math.log(6.4) / 27))
    freqs = np.linspace(0, 22050, 1025)[:, None]
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    tri = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return tri * 2 / (hi - lo)


def np_log_mel(wave: np.ndarray) -> np.ndarray:
    """(C, L) float64 -> (C, 128, F): reflect pad 768, framed rFFT with periodic Hann, Slaney mel."""
    padded = np.pad(wave, ((0, 0), (768, 768)), mode="reflect")
    frames = (padded.shape[1] - 2048) // 512 + 1
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2048) / 2048)
    idx = np.arange(frames)[:, None] * 512 + np.arange(2048)[None]
    spec = np.fft.rfft(padded[:, idx] * window, axis=-1)  # (C, F, 1025)
    mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-6)
    mel = mag @ _np_slaney_fb()  # (C, F, 128)
    return np.log(np.maximum(mel, 1e-5)).transpose(0, 2, 1)


def _test_wave(length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(length, dtype=torch.float64) / 44100
    left = 0.5 * torch.sin(2 * math.pi * 440 * t)
    right = 0.3 * torch.sin(2 * math.pi * 3000 * t + 1.0)
    noise = 0.05 * torch.randn(2, length, generator=gen, dtype=torch.float64)
    return (torch.stack([left, right]) + noise).float()


@pytest.mark.parametrize("length", [13312, int(0.3 * 44100)])
def test_log_mel_front_end(length: int) -> None:
    model = ADaMoSHiFiGANV1(**TINY)
    wave = _test_wave(length)
    with torch.no_grad():
        mel = model.mel_transform(wave)
    frames = (length + 1536 - 2048) // 512 + 1
    if length % 512 == 0:
        assert frames == length // 512
    assert mel.shape == (2, 128, frames)
    assert mel.dtype == torch.float32
    ref = np_log_mel(wave.double().numpy())
    np.testing.assert_allclose(mel.numpy(), ref, atol=2e-4, rtol=0)
    # Batched (B, C, L) input gives the per-item result.
    with torch.no_grad():
        torch.testing.assert_close(model.mel_transform(wave[None])[0], mel)


def test_log_mel_of_silence_shows_magnitude_and_log_floors() -> None:
    model = ADaMoSHiFiGANV1(**TINY)
    with torch.no_grad():
        mel = model.mel_transform(torch.zeros(1, 2048))
    # |X| = sqrt(0 + 1e-6) = 1e-3 in every bin, then the mel sum, then log(max(., 1e-5)).
    fb = torch.from_numpy(_np_slaney_fb())
    expected = torch.log(torch.clamp(1e-3 * fb.sum(0), min=1e-5)).float()
    assert mel.shape == (1, 128, 4)
    torch.testing.assert_close(mel[0], expected[:, None].expand(128, 4), atol=1e-5, rtol=0)
    assert (expected > math.log(1e-5)).any() and (expected == math.log(1e-5)).sum() == 0


def test_log_mel_bf16_model() -> None:
    model = ADaMoSHiFiGANV1(**TINY).to(torch.bfloat16)
    assert model.mel_transform.spectrogram.window.dtype == torch.bfloat16
    wave = _test_wave(4096)
    with torch.no_grad():
        mel = model.mel_transform(wave.to(torch.bfloat16))
    assert mel.dtype == torch.bfloat16 and mel.shape == (2, 128, 8)
    ref = np_log_mel(wave.to(torch.bfloat16).double().numpy())
    assert float(np.abs(mel.float().numpy() - ref).max()) < 0.1
