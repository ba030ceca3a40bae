"""Music DCAE: diffusers AutoencoderDC against the spec (3.4) and the MusicDCAE wrapper (3.1).

`reference_encoder` / `reference_decoder` are independent functional implementations of spec 3.4
(reading only the state dict). Matching them against diffusers' modules in float64, where every
upstream float32 cast (RMSNorm variance, linear-attention upcast) is the only source of rounding,
pins down the block structure, the shortcuts, the EViT 3*head_dim channel grouping and which
attention branch runs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from acestep_batch.model.dcae import (
    DCAE_DEFAULT_CONFIG,
    MusicDCAE,
    OverlapGeometry,
    build_autoencoder_dc,
    dcae_window_plan,
)
from acestep_batch.model.dsp import resample
from acestep_batch.model.vocoder import ADaMoSHiFiGANV1



TINY_DCAE = dict(
    in_channels=2,
    latent_channels=8,
    attention_head_dim=8,
    encoder_block_types=["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[8, 16, 32, 64],
    decoder_block_out_channels=[8, 16, 32, 64],
    encoder_layers_per_block=[1, 1, 1, 2],
    decoder_layers_per_block=[1, 1, 1, 2],
    encoder_qkv_multiscales=[[], [], [5], [5]],
    decoder_qkv_multiscales=[[], [], [5], [5]],
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)
TINY_VOCODER = dict(input_channels=128, depths=[1, 1, 1, 1], dims=[8, 16, 24, 32], num_mels=32, upsample_initial_channel=128)
HEAD_DIM = 8
CHANNELS = [8, 16, 32, 64]


def make_dcae(seed: int = 0):
    """Tiny AutoencoderDC with O(1)-scaled random weights (norm affine near identity)."""
    torch.manual_seed(seed)
    # requires_grad off: torch dispatches F.linear differently for grad-requiring weights, which
    # changes float64 rounding at 1e-16 and would defeat the tight comparisons below.
    model = build_autoencoder_dc(TINY_DCAE).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()))
    return model


def make_music_dcae(seed: int = 0) -> MusicDCAE:
    torch.manual_seed(seed + 1)
    vocoder = ADaMoSHiFiGANV1(**TINY_VOCODER).eval()
    with torch.no_grad():
        for module in vocoder.modules():
            if hasattr(module, "weight_g"):
                module.weight_v.normal_()
                module.weight_g.uniform_(0.5, 1.2)
    return MusicDCAE(make_dcae(seed), vocoder).eval()


# ------------------------------------------------------------------------------------------------
# Independent reference (spec 3.4), state dict only
# ------------------------------------------------------------------------------------------------


# Residual sums are written `branch + x`: the branch is channels-last after the norm, and the sum
# inherits the first operand's memory layout, which selects the conv kernels of the next block. In
# float64 the kernels' 1e-16 differences would be amplified by the float32 RMSNorm variance.
def rms_channels(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    xl = x.movedim(1, -1)
    var = xl.float().pow(2).mean(-1, keepdim=True)  # float32 variance, as diffusers' RMSNorm
    y = xl * torch.rsqrt(var + 1e-5)
    return (y * sd[p + ".weight"] + sd[p + ".bias"]).movedim(-1, 1)


def res_block(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    y = F.conv2d(x, sd[p + ".conv1.weight"], sd[p + ".conv1.bias"], padding=1)
    y = F.conv2d(F.silu(y), sd[p + ".conv2.weight"], None, padding=1)
    return rms_channels(y, sd, p + ".norm") + x


def down_block(x: torch.Tensor, sd: dict, p: str, c_out: int) -> torch.Tensor:
    main = F.conv2d(x, sd[p + ".conv.weight"], sd[p + ".conv.bias"], stride=2, padding=1)
    s = F.pixel_unshuffle(x, 2)
    b, c4, h, w = s.shape
    return main + s.reshape(b, c_out, c4 // c_out, h, w).mean(2)


def up_block(x: torch.Tensor, sd: dict, p: str, c_out: int) -> torch.Tensor:
    main = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), sd[p + ".conv.weight"], sd[p + ".conv.bias"], padding=1)
    repeats = 4 * c_out // x.shape[1]
    return main + F.pixel_shuffle(x.repeat_interleave(repeats, dim=1), 2)


def evit_block(x: torch.Tensor, sd: dict, p: str, force_linear: bool | None = None) -> torch.Tensor:
    b, c, h, w = x.shape
    n = h * w
    a = p + ".attn"
    xl = x.movedim(1, -1)
    qkv = torch.cat([F.linear(xl, sd[a + f".to_{name}.weight"]) for name in "qkv"], -1)
    qkv = qkv.movedim(-1, 1)  # (B, 3C, H, W)
    ms = F.conv2d(qkv, sd[a + ".to_qkv_multiscale.0.proj_in.weight"], padding=2, groups=3 * c)
    ms = F.conv2d(ms, sd[a + ".to_qkv_multiscale.0.proj_out.weight"], groups=3 * (c // HEAD_DIM))
    z = torch.cat([qkv, ms], 1)  # (B, 6C, H, W)
    linear = n > HEAD_DIM if force_linear is None else force_linear
    if linear:
        z = z.float()
    z = z.reshape(b, 6 * c // (3 * HEAD_DIM), 3 * HEAD_DIM, n)  # groups of 3*head_dim consecutive channels
    q, k, v = z[:, :, :HEAD_DIM].relu(), z[:, :, HEAD_DIM : 2 * HEAD_DIM].relu(), z[:, :, 2 * HEAD_DIM :]
    if linear:
        v1 = torch.cat([v, torch.ones_like(v[:, :, :1])], 2)
        o = (v1 @ k.transpose(-1, -2)) @ q
        o = (o[:, :, :HEAD_DIM] / (o[:, :, HEAD_DIM:] + 1e-15)).to(x.dtype)
    else:
        s = (k.transpose(-1, -2) @ q).float()  # (N keys, N queries), normalised in float32
        s = s / (s.sum(2, keepdim=True) + 1e-15)
        o = v @ s.to(v.dtype)
    o = o.reshape(b, 2 * c, h, w)
    o = F.linear(o.movedim(1, -1), sd[a + ".to_out.weight"]).movedim(-1, 1)
    x = rms_channels(o, sd, a + ".norm_out") + x

    g = p + ".conv_out"
    y = F.silu(F.conv2d(x, sd[g + ".conv_inverted.weight"], sd[g + ".conv_inverted.bias"]))
    y = F.conv2d(y, sd[g + ".conv_depth.weight"], sd[g + ".conv_depth.bias"], padding=1, groups=y.shape[1])
    u, gate = y.chunk(2, 1)
    y = F.conv2d(u * F.silu(gate), sd[g + ".conv_point.weight"])
    return rms_channels(y, sd, g + ".norm") + x


def reference_encoder(sd: dict, x: torch.Tensor, force_linear: bool | None = None) -> torch.Tensor:
    x = F.conv2d(x, sd["encoder.conv_in.weight"], sd["encoder.conv_in.bias"], padding=1)
    for i, layers in enumerate(TINY_DCAE["encoder_layers_per_block"]):
        for j in range(layers):
            p = f"encoder.down_blocks.{i}.{j}"
            x = evit_block(x, sd, p, force_linear) if i == 3 else res_block(x, sd, p)
        if i < 3:
            x = down_block(x, sd, f"encoder.down_blocks.{i}.{layers}", CHANNELS[i + 1])
    b, c, h, w = x.shape
    shortcut = x.reshape(b, 8, c // 8, h, w).mean(2)
    return F.conv2d(x, sd["encoder.conv_out.weight"], sd["encoder.conv_out.bias"], padding=1) + shortcut


def reference_decoder(sd: dict, z: torch.Tensor, force_linear: bool | None = None) -> torch.Tensor:
    x = F.conv2d(z, sd["decoder.conv_in.weight"], sd["decoder.conv_in.bias"], padding=1)
    x = x + z.repeat_interleave(CHANNELS[-1] // z.shape[1], dim=1)
    for i in (3, 2, 1, 0):
        offset = 0
        if i < 3:
            x = up_block(x, sd, f"decoder.up_blocks.{i}.0", CHANNELS[i])
            offset = 1
        for j in range(TINY_DCAE["decoder_layers_per_block"][i]):
            p = f"decoder.up_blocks.{i}.{j + offset}"
            x = evit_block(x, sd, p, force_linear) if i == 3 else res_block(x, sd, p)
    x = F.relu(rms_channels(x, sd, "decoder.norm_out"))
    return F.conv2d(x, sd["decoder.conv_out.weight"], sd["decoder.conv_out.bias"], padding=1)


# ------------------------------------------------------------------------------------------------
# AutoencoderDC structure
# ------------------------------------------------------------------------------------------------


def test_full_size_parameter_count() -> None:
    with torch.device("meta"):
        model = build_autoencoder_dc(DCAE_DEFAULT_CONFIG)
    assert sum(p.numel() for p in model.parameters()) == 156_812_426
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    evit = "encoder.down_blocks.3.0"
    assert shapes[evit + ".attn.to_q.weight"] == (1024, 1024)
    assert shapes[evit + ".attn.to_qkv_multiscale.0.proj_in.weight"] == (3072, 1, 5, 5)
    assert shapes[evit + ".attn.to_qkv_multiscale.0.proj_out.weight"] == (3072, 32, 1, 1)
    assert shapes[evit + ".attn.to_out.weight"] == (1024, 2048)
    assert shapes[evit + ".conv_out.conv_inverted.weight"] == (8192, 1024, 1, 1)
    assert shapes[evit + ".conv_out.conv_depth.weight"] == (8192, 1, 3, 3)
    assert shapes[evit + ".conv_out.conv_point.weight"] == (1024, 4096, 1, 1)
    assert "encoder.down_blocks.3.3.attn.to_q.weight" not in shapes  # 3 EViT blocks, no downsample
    assert shapes["encoder.down_blocks.2.3.conv.weight"] == (1024, 512, 3, 3)
    assert shapes["decoder.up_blocks.2.0.conv.weight"] == (512, 1024, 3, 3)
    assert shapes["decoder.up_blocks.0.3.conv2.weight"] == (128, 128, 3, 3)
    assert "decoder.up_blocks.0.3.conv2.bias" not in shapes
    assert shapes["decoder.norm_out.bias"] == (128,)
    assert shapes["decoder.conv_out.weight"] == (2, 128, 3, 3)
    assert not any(k.startswith(("quant_conv", "post_quant_conv")) for k in shapes)


def test_build_filters_config_keys() -> None:
    cfg = {"_class_name": "AutoencoderDC", "_diffusers_version": "0.32.2", "not_an_arg": 1, **TINY_DCAE}
    model = build_autoencoder_dc(cfg)
    assert model.config.attention_head_dim == 8
    assert tuple(model.state_dict()["encoder.conv_out.weight"].shape) == (8, 64, 3, 3)


def test_tiny_keys_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in build_autoencoder_dc(TINY_DCAE).state_dict().items()}
    assert shapes["encoder.down_blocks.0.1.conv.weight"] == (16, 8, 3, 3)  # DCDown at index layers
    assert shapes["encoder.down_blocks.3.1.attn.to_qkv_multiscale.0.proj_out.weight"] == (192, 8, 1, 1)  # 24 groups
    assert shapes["decoder.up_blocks.3.1.attn.to_out.weight"] == (64, 128)
    assert shapes["decoder.up_blocks.1.0.conv.weight"] == (16, 32, 3, 3)  # DCUp at index 0
    assert shapes["decoder.up_blocks.1.1.conv1.weight"] == (16, 16, 3, 3)
    # encoder 2 + 3x5 (ResBlock) + 3x2 (down) + 2x15 (EViT) + 2; decoder 2 + 3x2 (up) + 15 + 30 + 2 + 2
    assert len(shapes) == 112


# ------------------------------------------------------------------------------------------------
# AutoencoderDC numerics vs the spec reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mel_shape,linear",
    [((1, 2, 128, 16), True), ((1, 2, 128, 40), True), ((1, 2, 16, 16), False)],
    ids=["T2-linear", "T5-linear", "2x2-quadratic"],
)
def test_encoder_decoder_match_spec_reference(mel_shape: tuple[int, ...], linear: bool) -> None:
    model = make_dcae().double()
    sd = {k: v.double() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    mel = torch.randn(mel_shape, dtype=torch.float64)
    h, w = mel_shape[2] // 8, mel_shape[3] // 8
    assert (h * w > HEAD_DIM) == linear

    with torch.no_grad():
        z = model.encoder(mel)
        assert z.shape == (1, 8, h, w)
        z_ref = reference_encoder(sd, mel)
        torch.testing.assert_close(z, z_ref, atol=1e-10, rtol=0)

        out = model.decoder(z)
        assert out.shape == mel_shape
        out_ref = reference_decoder(sd, z)
        torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)

        # The comparison discriminates the branch: the other branch's float32/float64 rounding
        # differs by orders of magnitude more than the tolerance above.
        z_other = reference_encoder(sd, mel, force_linear=not linear)
        out_other = reference_decoder(sd, z, force_linear=not linear)
    assert float((z_other - z).abs().max()) > 1e-9
    assert float((out_other - out).abs().max()) > 1e-9
    # ... while both branches compute the same function (ReLU linear attention == normalised kernel).
    torch.testing.assert_close(z_other, z, atol=1e-4, rtol=0)


def test_encoder_float32_matches_reference() -> None:
    model = make_dcae()
    sd = model.state_dict()
    mel = torch.randn(1, 2, 128, 24)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(mel), reference_encoder(sd, mel), atol=1e-4, rtol=1e-4)
        z = torch.randn(1, 8, 16, 3)
        torch.testing.assert_close(model.decoder(z), reference_decoder(sd, z), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# MusicDCAE wrapper
# ------------------------------------------------------------------------------------------------


def _stereo(length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 44100
    tone = torch.stack([0.4 * torch.sin(2 * math.pi * 220 * t), 0.3 * torch.sin(2 * math.pi * 660 * t)])
    return (tone + 0.05 * torch.randn(2, length, generator=gen))[None]


def test_wrapper_constants() -> None:
    assert (MusicDCAE.min_mel_value, MusicDCAE.max_mel_value) == (-11.0, 3.0)
    assert (MusicDCAE.scale_factor, MusicDCAE.shift_factor) == (0.1786, -1.9091)


@pytest.mark.parametrize("length", [4096, 5000, 8192 + 1])
def test_encode_shapes(length: int) -> None:
    codec = make_music_dcae()
    with torch.no_grad():
        latents = codec.encode(_stereo(length), 44100)
    assert latents.shape == (1, 8, 16, math.ceil(length / 4096))
    assert latents.dtype == torch.float32


def test_encode_formula() -> None:
    codec = make_music_dcae()
    audio = _stereo(6000)
    with torch.no_grad():
        latents = codec.encode(audio, 44100)
        padded = F.pad(audio[0], (0, 8192 - 6000))
        mel = codec.vocoder.mel_transform(padded)  # (2, 128, 16)
        normalised = ((mel + 11.0) / 14.0 - 0.5) / 0.5
        z = codec.dcae.encoder(normalised[None])
    torch.testing.assert_close(latents, (z + 1.9091) * 0.1786, atol=1e-6, rtol=1e-6)


def test_encode_resamples_other_rates() -> None:
    codec = make_music_dcae()
    audio48 = _stereo(9000)  # 9000 @ 48 kHz -> 8269 @ 44.1 kHz -> padded to 12288 -> T = 3
    with torch.no_grad():
        latents = codec.encode(audio48, 48000)
    assert latents.shape == (1, 8, 16, 3)
    with torch.no_grad():
        direct = codec.encode(resample(audio48, 48000, 44100), 44100)
    torch.testing.assert_close(latents, direct, atol=0, rtol=0)


def test_decode_shapes_formula_and_batch_equivalence() -> None:
    codec = make_music_dcae()
    torch.manual_seed(3)
    latents = torch.randn(2, 8, 16, 3)
    with torch.no_grad():
        waves = codec.decode(latents)
        singles = [codec.decode(latents[i : i + 1])[0] for i in range(2)]
        mel = codec.dcae.decoder(latents[1:2] / 0.1786 - 1.9091) * 7.0 - 4.0
        left = codec.vocoder.decode(mel[:, 0])[0]
        right = codec.vocoder.decode(mel[:, 1])[0]
    assert len(waves) == 2
    for wave, single in zip(waves, singles):
        assert wave.shape == (2, 4096 * 3) and wave.dtype == torch.float32
        assert torch.equal(wave, single)
        assert float(wave.abs().max()) <= 1.0
    assert not torch.equal(waves[0], waves[1])
    torch.testing.assert_close(waves[1][:1], left, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(waves[1][1:], right, atol=1e-5, rtol=1e-5)


def test_decode_resampled_to_48k() -> None:
    codec = make_music_dcae()
    latents = torch.randn(1, 8, 16, 2)
    with torch.no_grad():
        (wave44,) = codec.decode(latents)
        (wave48,) = codec.decode(latents, sample_rate=48000)
    assert wave48.shape == (2, math.ceil(160 * 8192 / 147))
    assert wave48.dtype == torch.float32
    assert torch.equal(wave48, resample(wave44.float(), 44100, 48000))


def test_roundtrip_shapes_bf16() -> None:
    codec = make_music_dcae().to(torch.bfloat16)
    with torch.no_grad():
        latents = codec.encode(_stereo(5000), 44100)
        (wave,) = codec.decode(latents)
    assert latents.shape == (1, 8, 16, 2) and latents.dtype == torch.bfloat16
    assert wave.shape == (2, 8192) and wave.dtype == torch.bfloat16
    assert torch.isfinite(wave.float()).all()


# ------------------------------------------------------------------------------------------------
# Overlapped decode
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 10, 256, 512, 513, 517, 645, 1000, 1234, 2583])
def test_window_plan_tiles_the_mel_exactly(width: int) -> None:
    plan = dcae_window_plan(width)
    covered = []
    for start, end, keep_start, keep_end in plan:
        assert 0 <= start < end <= width and end - start <= 512
        covered.extend(range(8 * start + keep_start, 8 * start + keep_end))
    assert covered == list(range(8 * width))
    if width > 512:
        assert len(plan) > 1 and plan[0][:3] == (0, 512, 0) and plan[0][3] == 4096 - 1024
        assert all(s2 - s1 == 256 for (s1, *_), (s2, *_) in zip(plan, plan[1:]))
    else:
        assert plan == [(0, width, 0, 8 * width)]


SMALL = OverlapGeometry(dcae_window=8, dcae_anchor_offset=2, dcae_anchor_hop=4, mel_overlap=16, vocoder_block=8)


def reference_overlap_decode(codec: MusicDCAE, latents: torch.Tensor, g: OverlapGeometry) -> torch.Tensor:
    """Spec 3.1 overlapped decode written with absolute indices (one item, 44.1 kHz)."""
    z = latents / 0.1786 - 1.9091
    width = z.shape[-1]
    anchors = list(range(g.dcae_anchor_offset, width - g.dcae_anchor_offset, g.dcae_anchor_hop)) or [g.dcae_anchor_offset]
    mel = torch.full((1, 2, 128, 8 * width), float("nan"))
    for i, a in enumerate(anchors):
        s = max(0, a - g.dcae_anchor_offset)
        e = min(width, s + g.dcae_window)
        m = codec.dcae.decoder(z[..., s:e])
        lo = 0 if i == 0 else g.mel_overlap
        hi = m.shape[-1] if (i == len(anchors) - 1) else m.shape[-1] - g.mel_overlap
        mel[..., 8 * s + lo : 8 * s + hi] = m[..., lo:hi]
    assert not mel.isnan().any()
    mel = (mel * 0.5 + 0.5) * 14.0 - 11.0

    block_len = 512 * g.vocoder_block
    step = block_len - 2 * g.wave_overlap
    total = mel.shape[-1] * 512
    starts = list(range(0, total, step))
    out = torch.zeros(2, starts[-1] + block_len)
    for b, s in enumerate(starts):
        frames = mel[0, :, :, s // 512 : s // 512 + g.vocoder_block]
        frames = F.pad(frames, (0, g.vocoder_block - frames.shape[-1]))
        w = codec.vocoder.decode(frames)[:, 0]
        lo = 0 if b == 0 else g.wave_overlap
        hi = block_len if b == len(starts) - 1 else block_len - g.wave_overlap
        if b > 0:
            fade = torch.linspace(0, 1, g.crossfade)
            seam = slice(s + g.wave_overlap - g.crossfade, s + g.wave_overlap)
            out[:, seam] = out[:, seam] * (1 - fade) + w[:, g.wave_overlap - g.crossfade : g.wave_overlap] * fade
        out[:, s + lo : s + hi] = w[:, lo:hi]
    return out[:, : 4096 * width]


@pytest.mark.parametrize("width", [3, 14])
def test_decode_overlap_matches_absolute_index_reference(width: int) -> None:
    codec = make_music_dcae()
    torch.manual_seed(5)
    latents = torch.randn(1, 8, 16, width)
    with torch.no_grad():
        (wave,) = codec.decode_overlap(latents, geometry=SMALL)
        ref = reference_overlap_decode(codec, latents, SMALL)
    assert len(dcae_window_plan(width, SMALL)) == (1 if width <= 8 else 3)
    assert wave.shape == (2, 4096 * width) and wave.dtype == torch.float32
    torch.testing.assert_close(wave, ref, atol=1e-6, rtol=0)


def test_decode_overlap_bf16_promotes_and_resamples_with_native_kernel() -> None:
    codec = make_music_dcae().to(torch.bfloat16)
    latents = torch.randn(1, 8, 16, 4).to(torch.bfloat16)
    with torch.no_grad():
        (wave44,) = codec.decode_overlap(latents, geometry=SMALL)
        (wave48,) = codec.decode_overlap(latents, sample_rate=48000, geometry=SMALL)
    assert wave44.dtype == torch.float32  # float32 cross-fade ramps promote the bf16 blocks
    assert wave44.shape == (2, 4096 * 4)
    assert wave48.shape == (2, int(4096 * 4 * 48000 / 44100))
    # Upstream resamples the uncropped assembled wave (it runs past 4096*T because the last mel block
    # is zero-padded) and crops afterwards, so only samples away from the end can be reproduced here.
    from_cropped = resample(wave44, 44100, 48000, native_kernel=True)
    assert torch.equal(wave48[:, :-400], from_cropped[:, : wave48.shape[-1] - 400])
    cast_kernel = resample(wave44, 44100, 48000)
    assert not torch.equal(cast_kernel[:, :-400], from_cropped[:, :-400])  # variant (c) != variant (a)
