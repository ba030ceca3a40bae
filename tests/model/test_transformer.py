"""ACE-Step transformer: state-dict key contract (spec 2.1, 2.9), RoPE quirk (2.5), linear and
cross attention (2.6.2-2.6.3), heterogeneous-batch masking (7.2) and the ERG query scale (5.3).

Expected key maps and reference formulas are written here from the spec's rules, independently of
the implementation; the real module is built (meta device for the full size, random init or the
tiny checkpoint's weights otherwise).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch

from acestep_batch.model.info import FULL_TRANSFORMER_CONFIG
from acestep_batch.model.transformer import (
    ACEStepTransformer2DModel,
    CrossAttention,
    LinearSelfAttention,
    apply_rope,
    rope_tables,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# ------------------------------------------------------------------------------------------------
# Expected key -> shape map, generated from the spec's rules (2.1 and 2.9)
# ------------------------------------------------------------------------------------------------


def expected_transformer_keys(config: dict) -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of `ACEStepTransformer2DModel` built from `config`.

    `lyric_encoder_heads/_linear_units/_num_blocks` are this project's extension for tiny
    checkpoints; absent (the official config) they are the fixed upstream values 16/4096/6.
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]  # inner_dim is recomputed
    hidden = int(d * config["mlp_ratio"])
    lyric = config["lyric_hidden_size"]
    lyric_heads = config.get("lyric_encoder_heads", 16)
    lyric_units = config.get("lyric_encoder_linear_units", 4096)
    lyric_blocks = config.get("lyric_encoder_num_blocks", 6)
    patch_h, patch_w = config["patch_size"]
    keys: dict[str, tuple[int, ...]] = {}

    def linear(name: str, out_f: int, in_f: int, bias: bool = True) -> None:
        keys[f"{name}.weight"] = (out_f, in_f)
        if bias:
            keys[f"{name}.bias"] = (out_f,)

    for i in range(config["num_layers"]):
        block = f"transformer_blocks.{i}"
        keys[f"{block}.scale_shift_table"] = (6, d)
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            linear(f"{block}.attn.{proj}", d, d)
        for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            linear(f"{block}.cross_attn.{proj}", d, d)
        keys[f"{block}.ff.inverted_conv.conv.weight"] = (2 * hidden, d, 1)
        keys[f"{block}.ff.inverted_conv.conv.bias"] = (2 * hidden,)
        keys[f"{block}.ff.depth_conv.conv.weight"] = (2 * hidden, 1, 3)
        keys[f"{block}.ff.depth_conv.conv.bias"] = (2 * hidden,)
        keys[f"{block}.ff.point_conv.conv.weight"] = (d, hidden, 1)

    linear("timestep_embedder.linear_1", d, 256)
    linear("timestep_embedder.linear_2", d, d)
    linear("t_block.1", 6 * d, d)
    linear("speaker_embedder", d, config["speaker_embedding_dim"])
    linear("genre_embedder", d, config["text_embedding_dim"])
    keys["lyric_embs.weight"] = (config["lyric_encoder_vocab_size"], lyric)

    enc = "lyric_encoder"
    linear(f"{enc}.embed.out.0", lyric, lyric)
    keys[f"{enc}.embed.out.1.weight"] = (lyric,)
    keys[f"{enc}.embed.out.1.bias"] = (lyric,)
    for j in range(lyric_blocks):
        layer = f"{enc}.encoders.{j}"
        for proj in ("linear_q", "linear_k", "linear_v", "linear_out"):
            linear(f"{layer}.self_attn.{proj}", lyric, lyric)
        linear(f"{layer}.self_attn.linear_pos", lyric, lyric, bias=False)
        keys[f"{layer}.self_attn.pos_bias_u"] = (lyric_heads, lyric // lyric_heads)
        keys[f"{layer}.self_attn.pos_bias_v"] = (lyric_heads, lyric // lyric_heads)
        linear(f"{layer}.feed_forward.w_1", lyric_units, lyric)
        linear(f"{layer}.feed_forward.w_2", lyric, lyric_units)
        for norm in ("norm_ff", "norm_mha"):
            keys[f"{layer}.{norm}.weight"] = (lyric,)
            keys[f"{layer}.{norm}.bias"] = (lyric,)
    keys[f"{enc}.after_norm.weight"] = (lyric,)
    keys[f"{enc}.after_norm.bias"] = (lyric,)
    linear("lyric_proj", d, lyric)

    for k, ssl_dim in enumerate(config["ssl_latent_dims"]):
        linear(f"projectors.{k}.0", 2 * d, d)
        linear(f"projectors.{k}.2", 2 * d, 2 * d)
        linear(f"projectors.{k}.4", ssl_dim, 2 * d)

    # PatchEmbed is hard-wired to 8 input channels and a 2048-wide GroupNorm(32) hidden layer.
    keys["proj_in.early_conv_layers.0.weight"] = (2048, 8, patch_h, patch_w)
    keys["proj_in.early_conv_layers.0.bias"] = (2048,)
    keys["proj_in.early_conv_layers.1.weight"] = (2048,)
    keys["proj_in.early_conv_layers.1.bias"] = (2048,)
    keys["proj_in.early_conv_layers.2.weight"] = (d, 2048, 1, 1)
    keys["proj_in.early_conv_layers.2.bias"] = (d,)
    keys["final_layer.scale_shift_table"] = (2, d)
    linear("final_layer.linear", patch_h * patch_w * config["out_channels"], d)
    return keys


def _numel(shapes) -> int:
    return sum(math.prod(shape) for shape in shapes)


def _diff_message(expected: dict, actual: dict) -> str:
    missing = sorted(set(expected) - set(actual))[:10]
    extra = sorted(set(actual) - set(expected))[:10]
    common = set(expected) & set(actual)
    shapes = sorted(f"{k}: {actual[k]} != {expected[k]}" for k in common if actual[k] != expected[k])[:10]
    return f"missing {missing}; unexpected {extra}; wrong shapes {shapes}"


@pytest.fixture(scope="module")
def full_transformer() -> ACEStepTransformer2DModel:
    with torch.device("meta"):
        return ACEStepTransformer2DModel(**FULL_TRANSFORMER_CONFIG)


def test_expected_map_itself_matches_the_spec_counts() -> None:
    """Guard on the generator above: its counts are the spec's numbers."""
    expected = expected_transformer_keys(FULL_TRANSFORMER_CONFIG)
    block0 = [shape for key, shape in expected.items() if key.startswith("transformer_blocks.0.")]
    assert _numel(block0) == 127_905_280
    assert _numel(s for k, s in expected.items() if k.startswith("transformer_blocks.")) == 3_069_726_720
    assert _numel(s for k, s in expected.items() if k.startswith("lyric_encoder.")) == 82_934_784
    assert _numel(s for k, s in expected.items() if k.startswith("projectors.")) == 87_840_512
    assert _numel(expected.values()) == 3_305_659_264


def test_full_size_state_dict_keys_and_shapes(full_transformer: ACEStepTransformer2DModel) -> None:
    actual = {key: tuple(value.shape) for key, value in full_transformer.state_dict().items()}
    expected = expected_transformer_keys(FULL_TRANSFORMER_CONFIG)
    assert actual == expected, _diff_message(expected, actual)
    # Non-persistent tables (RoPE cache, lyric rel-pos table) never appear in the state dict.
    assert not [k for k in actual if "rotary" in k or k.endswith(("inv_freq", "cos_cached", "sin_cached", ".pe"))]


def test_full_size_parameter_counts(full_transformer: ACEStepTransformer2DModel) -> None:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert all(count(block) == 127_905_280 for block in full_transformer.transformer_blocks)
    assert len(full_transformer.transformer_blocks) == 24
    assert count(full_transformer.transformer_blocks) == 3_069_726_720
    assert count(full_transformer.lyric_encoder) == 82_934_784
    assert count(full_transformer.projectors) == 87_840_512
    assert count(full_transformer) == 3_305_659_264


def _safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape read straight from the file's JSON header (8-byte LE length + JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {key: tuple(entry["shape"]) for key, entry in header.items() if key != "__metadata__"}


def test_tiny_checkpoint_header_matches_map_from_its_config(tiny_ckpt: Path) -> None:
    """Spec 10.3.12: the expected map built from config.json equals the safetensors header."""
    folder = tiny_ckpt / "ace_step_transformer"
    config = json.loads((folder / "config.json").read_text())
    header = _safetensors_header(folder / "diffusion_pytorch_model.safetensors")
    expected = expected_transformer_keys(config)
    assert header == expected, _diff_message(expected, header)


# ------------------------------------------------------------------------------------------------
# RoPE (spec 2.5)
# ------------------------------------------------------------------------------------------------


def _rope_reference(x: torch.Tensor, base: float) -> torch.Tensor:
    """Per-element float64 formula for (N, H, S, d): element k at position p uses frequency index
    k mod d/2 (half-split) while pairs (2m, 2m+1) are rotated together (interleaved)."""
    *_, length, dim = x.shape
    x64 = x.double()
    out = torch.empty_like(x64)
    inv = [1.0 / base ** (2 * j / dim) for j in range(dim // 2)]
    for p in range(length):
        for k in range(dim):
            angle = p * inv[k % (dim // 2)]
            partner = -x64[..., p, k + 1] if k % 2 == 0 else x64[..., p, k - 1]
            out[..., p, k] = x64[..., p, k] * math.cos(angle) + partner * math.sin(angle)
    return out


def test_rope_tables_half_split_frequencies() -> None:
    length, dim, base = 40, 128, 1e6
    cos, sin = rope_tables(length, dim, base, torch.float32, torch.device("cpu"))
    assert cos.shape == sin.shape == (length, dim) and cos.dtype == torch.float32
    p = torch.arange(length, dtype=torch.float64)[:, None]
    k = torch.arange(dim)[None, :] % (dim // 2)
    angle = p * (1.0 / base ** (2 * k.double() / dim))
    torch.testing.assert_close(cos.double(), angle.cos(), atol=1e-5, rtol=0)
    torch.testing.assert_close(sin.double(), angle.sin(), atol=1e-5, rtol=0)
    # bf16 tables are the float32 values rounded (cache computed in float32, then cast).
    cos_bf, sin_bf = rope_tables(length, dim, base, torch.bfloat16, torch.device("cpu"))
    assert torch.equal(cos_bf, cos.to(torch.bfloat16)) and torch.equal(sin_bf, sin.to(torch.bfloat16))


def test_apply_rope_matches_per_element_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 16, generator=gen)
    cos, sin = rope_tables(9, 16, 1e6, torch.float32, torch.device("cpu"))
    out = apply_rope(x, cos, sin)
    reference = _rope_reference(x, 1e6)
    torch.testing.assert_close(out.double(), reference, atol=1e-5, rtol=0)

    # The quirk matters: a proper rotation (same frequency for both pair members) is different.
    proper = x.double().clone()
    for p in range(9):
        for m in range(8):
            angle = p * (1.0 / 1e6 ** (2 * m / 16))
            a, b = x.double()[..., p, 2 * m], x.double()[..., p, 2 * m + 1]
            proper[..., p, 2 * m] = a * math.cos(angle) - b * math.sin(angle)
            proper[..., p, 2 * m + 1] = b * math.cos(angle) + a * math.sin(angle)
    assert (out.double() - proper).abs().max() > 1e-2


def test_apply_rope_bf16_multiply_add_in_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 6, 16, generator=gen).to(torch.bfloat16)
    cos, sin = rope_tables(6, 16, 1e6, torch.bfloat16, torch.device("cpu"))
    out = apply_rope(x, cos, sin)
    assert out.dtype == torch.bfloat16
    xf = x.float()
    rotated = torch.empty_like(xf)
    rotated[..., 0::2] = -xf[..., 1::2]
    rotated[..., 1::2] = xf[..., 0::2]
    expected = (xf * cos.float() + rotated * sin.float()).to(torch.bfloat16)
    assert torch.equal(out, expected)


# ------------------------------------------------------------------------------------------------
# Attention against naive formulas (spec 2.6.2, 2.6.3), float32, tiny dims
# ------------------------------------------------------------------------------------------------


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:  # (B, S, H*d) -> (B, H, S, d)
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def _naive_linear_attention(module: LinearSelfAttention, x: torch.Tensor, valid: list[int]) -> torch.Tensor:
    """O(S^2) form: out_s = sum_t phi(k_t).phi(q_s) v_t / (sum_t phi(k_t).phi(q_s) + 1e-15) over
    valid t, phi = ReLU o RoPE, no 1/sqrt(d) scaling; then to_out and the +-65504 clamp."""
    heads = module.heads
    q = _rope_reference(_heads(module.to_q(x), heads), 1e6)
    k = _rope_reference(_heads(module.to_k(x), heads), 1e6)
    v = _heads(module.to_v(x), heads).double()
    q, k = q.clamp_min(0), k.clamp_min(0)
    batch, _, length, dim = q.shape
    out = torch.zeros(batch, length, heads * dim, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for s in range(valid[b]):
                num = torch.zeros(dim, dtype=torch.float64)
                den = 0.0
                for t in range(valid[b]):
                    w = float(k[b, h, t] @ q[b, h, s])
                    num += w * v[b, h, t]
                    den += w
                out[b, s, h * dim : (h + 1) * dim] = num / (den + 1e-15)
    return module.to_out[0](out.float()).clamp(-65504.0, 65504.0)


@pytest.fixture(scope="module")
def small_attention_modules() -> tuple[LinearSelfAttention, CrossAttention]:
    torch.manual_seed(0)
    return LinearSelfAttention(32, 2, 16).eval(), CrossAttention(32, 2, 16).eval()


@torch.no_grad()
def test_linear_attention_matches_naive_formula(small_attention_modules) -> None:
    attn, _ = small_attention_modules
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    rope = rope_tables(7, 16, 1e6, torch.float32, torch.device("cpu"))
    out = attn(x, None, rope)
    reference = _naive_linear_attention(attn, x, [7, 7])
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_linear_attention_mask_excludes_padded_positions(small_attention_modules) -> None:
    attn, _ = small_attention_modules
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 32, generator=gen)
    x[1, 4:] = 10 * torch.randn(3, 32, generator=gen)  # garbage in item 1's padding
    mask = torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3])
    rope = rope_tables(7, 16, 1e6, torch.float32, torch.device("cpu"))
    out = attn(x, mask, rope)
    reference = _naive_linear_attention(attn, x, [7, 4])
    torch.testing.assert_close(out[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :4], reference[1, :4], atol=1e-5, rtol=1e-5)
    # ... and item 1's valid frames equal the unpadded single call.
    single = attn(x[1:, :4], None, rope_tables(4, 16, 1e6, torch.float32, torch.device("cpu")))
    torch.testing.assert_close(out[1:, :4], single, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_linear_attention_output_is_clamped_to_fp16_range() -> None:
    torch.manual_seed(0)
    attn = LinearSelfAttention(32, 2, 16).eval()
    attn.to_out[0].bias.copy_(torch.tensor([1e6, -1e6] * 16))
    x = torch.randn(1, 5, 32)
    out = attn(x, None, rope_tables(5, 16, 1e6, torch.float32, torch.device("cpu")))
    assert torch.equal(out[..., 0::2], torch.full_like(out[..., 0::2], 65504.0))
    assert torch.equal(out[..., 1::2], torch.full_like(out[..., 1::2], -65504.0))


@torch.no_grad()
@pytest.mark.parametrize("query_scale", [None, 0.01])
def test_cross_attention_matches_naive_softmax(small_attention_modules, query_scale) -> None:
    _, cross = small_attention_modules
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(2, 5, 32, generator=gen)
    ctx = torch.randn(2, 6, 32, generator=gen)
    ctx_mask = torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3])
    rope_q = rope_tables(5, 16, 1e6, torch.float32, torch.device("cpu"))
    rope_k = rope_tables(6, 16, 1e6, torch.float32, torch.device("cpu"))
    scale = None if query_scale is None else torch.full((2,), query_scale)
    out = cross(h, ctx, ctx_mask, rope_q, rope_k, scale)

    q_lin = cross.to_q(h) * (1.0 if query_scale is None else query_scale)
    q = _rope_reference(_heads(q_lin, 2), 1e6)
    k = _rope_reference(_heads(cross.to_k(ctx), 2), 1e6)
    v = _heads(cross.to_v(ctx), 2).double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(16)
    scores = scores.masked_fill(ctx_mask[:, None, None, :] == 0, float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v  # (B, H, S, d)
    reference = cross.to_out[0](o.transpose(1, 2).reshape(2, 5, 32).float())
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Heterogeneous batches on the tiny checkpoint's transformer (spec 7.2)
# ------------------------------------------------------------------------------------------------


def _text_and_lyrics(transformer, text_lengths, lyric_lengths, seed=5):
    """Right-padded text states / lyric ids (+ masks) for items of the given valid lengths.
    A lyric length of 0 is the empty-lyrics convention: one id 0 with mask 0."""
    gen = torch.Generator().manual_seed(seed)
    text_dim = transformer.genre_embedder.in_features
    vocab = transformer.lyric_embs.num_embeddings
    lt, ll = max(text_lengths), max(max(lyric_lengths), 1)
    batch = len(text_lengths)
    text = torch.zeros(batch, lt, text_dim)
    text_mask = torch.zeros(batch, lt, dtype=torch.long)
    ids = torch.zeros(batch, ll, dtype=torch.long)
    lyric_mask = torch.zeros(batch, ll, dtype=torch.long)
    singles = []
    for i, (nt, nl) in enumerate(zip(text_lengths, lyric_lengths)):
        t = torch.randn(1, nt, text_dim, generator=gen)
        if nl:
            row_ids = torch.randint(1, vocab, (1, nl), generator=gen)
            row_mask = torch.ones(1, nl, dtype=torch.long)
        else:
            row_ids, row_mask = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long)
        text[i, :nt], text_mask[i, :nt] = t[0], 1
        ids[i, : row_ids.shape[1]], lyric_mask[i, : row_ids.shape[1]] = row_ids[0], row_mask[0]
        singles.append((t, torch.ones(1, nt, dtype=torch.long), row_ids, row_mask))
    # Garbage in the padding: must not matter.
    text = torch.where(text_mask[..., None].bool(), text, 5.0)
    return (text, text_mask, ids, lyric_mask), singles


@torch.no_grad()
def test_encode_repacks_padded_conditions_like_single_runs(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    text_lengths, lyric_lengths = [3, 5, 4], [6, 2, 0]
    (text, text_mask, ids, lyric_mask), singles = _text_and_lyrics(transformer, text_lengths, lyric_lengths)
    speaker = torch.zeros(3, 512)
    states, mask = transformer.encode(text, text_mask, speaker, ids, lyric_mask)
    assert states.shape == (3, 1 + 5 + 6, transformer.dim) and mask.dtype == torch.float32
    for i, (t, tm, li, lm) in enumerate(singles):
        s_states, s_mask = transformer.encode(t, tm, speaker[:1], li, lm)
        valid = s_mask[0].bool()
        count = int(valid.sum())
        assert count == 1 + text_lengths[i] + lyric_lengths[i]
        assert torch.equal(mask[i, :count], torch.ones(count))
        assert torch.equal(mask[i, count:], torch.zeros(mask.shape[1] - count))
        torch.testing.assert_close(states[i, :count], s_states[0][valid], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_encode_lyric_erg_scale_only_touches_lyric_states(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    (text, text_mask, ids, lyric_mask), _ = _text_and_lyrics(transformer, [4], [7], seed=6)
    speaker = torch.zeros(1, 512)
    plain, _ = transformer.encode(text, text_mask, speaker, ids, lyric_mask)
    ones, _ = transformer.encode(text, text_mask, speaker, ids, lyric_mask, torch.ones(1))
    erg, _ = transformer.encode(text, text_mask, speaker, ids, lyric_mask, torch.full((1,), 0.01))
    assert torch.equal(plain, ones)
    assert torch.equal(erg[:, : 1 + 4], plain[:, : 1 + 4])  # speaker + text untouched
    assert (erg[:, 5:] - plain[:, 5:]).abs().max() > 1e-3


@torch.no_grad()
def test_decode_padded_batch_equals_single_decodes(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    gen = torch.Generator().manual_seed(7)
    (text, text_mask, ids, lyric_mask), singles = _text_and_lyrics(transformer, [3, 5], [6, 2], seed=8)
    speaker = torch.zeros(2, 512)
    context, context_mask = transformer.encode(text, text_mask, speaker, ids, lyric_mask)
    frames = [7, 4]
    latent = torch.randn(2, 8, 16, 7, generator=gen)
    latent[1, ..., 4:] = 3.0 * torch.randn(8, 16, 3, generator=gen)  # padding content must not leak
    latent_mask = torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3])
    timestep = torch.tensor([994.30304, 57.393852])
    out = transformer.decode(latent, timestep, context, context_mask, latent_mask)
    assert out.shape == (2, 8, 16, 7)
    for i, (t, tm, li, lm) in enumerate(singles):
        s_context, s_mask = transformer.encode(t, tm, speaker[:1], li, lm)
        single = transformer.decode(latent[i : i + 1, ..., : frames[i]], timestep[i : i + 1], s_context, s_mask)
        torch.testing.assert_close(out[i : i + 1, ..., : frames[i]], single, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[1, ..., 4:], torch.zeros(8, 16, 3))
    assert out[0].abs().max() > 1e-3  # not trivially zero


@torch.no_grad()
def test_decode_all_ones_mask_is_the_unmasked_path(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    (text, text_mask, ids, lyric_mask), _ = _text_and_lyrics(transformer, [4], [5], seed=9)
    context, context_mask = transformer.encode(text, text_mask, torch.zeros(1, 512), ids, lyric_mask)
    latent = torch.randn(1, 8, 16, 5, generator=torch.Generator().manual_seed(10))
    t = torch.tensor([500.0])
    assert torch.equal(
        transformer.decode(latent, t, context, context_mask, torch.ones(1, 5)),
        transformer.decode(latent, t, context, context_mask),
    )


# ------------------------------------------------------------------------------------------------
# ERG-diffusion query scale (spec 5.3): blocks 15..19 only
# ------------------------------------------------------------------------------------------------

_ERG_CONFIG = {
    "num_layers": 22, "attention_head_dim": 8, "num_attention_heads": 2, "mlp_ratio": 2.5, "text_embedding_dim": 16,
    "lyric_hidden_size": 32, "lyric_encoder_heads": 2, "lyric_encoder_linear_units": 32, "lyric_encoder_num_blocks": 6,
    "lyric_encoder_vocab_size": 50, "ssl_latent_dims": [8, 4], "ssl_encoder_depths": [1, 1], "max_width": 64,
}


@pytest.fixture(scope="module")
def erg_setup():
    torch.manual_seed(11)
    model = ACEStepTransformer2DModel(**_ERG_CONFIG).eval()
    gen = torch.Generator().manual_seed(12)
    with torch.no_grad():
        context, mask = model.encode(
            torch.randn(2, 4, 16, generator=gen), torch.ones(2, 4), torch.zeros(2, 512),
            torch.randint(1, 50, (2, 6), generator=gen), torch.ones(2, 6),
        )
    latent = torch.randn(2, 8, 16, 6, generator=gen)
    return model, latent, torch.tensor([600.0, 600.0]), context, mask


@torch.no_grad()
def test_erg_query_scale(erg_setup) -> None:
    model, latent, t, context, mask = erg_setup
    plain = model.decode(latent, t, context, mask)
    ones = model.decode(latent, t, context, mask, erg_query_scale=torch.ones(2))
    assert torch.equal(plain, ones)
    erg = model.decode(latent, t, context, mask, erg_query_scale=torch.full((2,), 0.01))
    assert (erg - plain).abs().max() > 1e-4
    # Per item: item 1 at scale 1.0 is unaffected by item 0's ERG.
    mixed = model.decode(latent, t, context, mask, erg_query_scale=torch.tensor([0.01, 1.0]))
    torch.testing.assert_close(mixed[0], erg[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[1], plain[1], atol=1e-6, rtol=0)


@torch.no_grad()
def test_erg_query_scale_reaches_exactly_blocks_15_to_19(erg_setup) -> None:
    model, latent, t, context, mask = erg_setup
    seen: dict[str, set[int]] = {"attn": set(), "cross_attn": set()}
    handles = []

    def recorder(kind: str, index: int, scale_position: int):
        def hook(_module, args, kwargs):
            scale = kwargs.get("query_scale", args[scale_position] if len(args) > scale_position else None)
            if scale is not None:
                seen[kind].add(index)
                assert torch.equal(scale, torch.full((2,), 0.01))
        return hook

    for index, block in enumerate(model.transformer_blocks):
        handles.append(block.attn.register_forward_pre_hook(recorder("attn", index, 3), with_kwargs=True))
        handles.append(block.cross_attn.register_forward_pre_hook(recorder("cross_attn", index, 5), with_kwargs=True))
    try:
        model.decode(latent, t, context, mask, erg_query_scale=torch.full((2,), 0.01))
    finally:
        for handle in handles:
            handle.remove()
    assert seen["attn"] == set(range(15, 20))
    assert seen["cross_attn"] == set(range(15, 20))
