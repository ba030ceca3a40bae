"""ACE-Step v1 diffusion transformer (`ace_step_transformer/`, class `ACEStepTransformer2DModel`).

Module attribute names are the checkpoint's state-dict key contract (spec section 2.1). The
forward pass follows the upstream numerics (spec 2.2-2.8), including its quirks (interleaved
RoPE pairs with half-split frequencies, ReLU linear attention in float32 with the ones-row
normaliser, the always-on +-65504 clamp, un-normalised cross-attention input).

Heterogeneous batches (spec 7.2) are supported through explicit masks: padded latent frames are
excluded from GroupNorm statistics, from the depthwise convolution and from attention, and the
residual stream is zeroed there after every block, so an item's output does not depend on what
else is in its batch. Without padding the code takes the exact upstream path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .lyric_encoder import ConformerEncoder

FP16_MAX = 65504.0

# Transformer blocks whose query projections ERG-diffusion scales (upstream l_min=15, l_max=20).
ERG_DIFFUSION_BLOCKS = range(15, 20)


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """diffusers' RMSNorm without affine: float32 variance, result cast back to the input dtype."""
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return (x * torch.rsqrt(variance + eps)).to(x.dtype)


def rope_tables(length: int, dim: int, base: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (length, dim): float32 on CPU, then rounded to the model dtype (upstream cache)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    positions = torch.arange(length, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(device=device, dtype=dtype), emb.sin().to(device=device, dtype=dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Upstream's rotary embedding on (N, H, S, d): pairs are interleaved (2m, 2m+1) while the
    frequencies are half-split; the multiply-add runs in float32 and is rounded back."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def scale_rows(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Multiply each batch item by its own scale, rounding to the model dtype (ERG hooks)."""
    if scale is None:
        return x
    return (x.float() * scale.view(-1, *([1] * (x.dim() - 1)))).to(x.dtype)


class _AttentionProjections(nn.Module):
    """The q/k/v/out projections every attention of the block owns (diffusers `Attention` names)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])


class LinearSelfAttention(_AttentionProjections):
    """`attn`: ReLU linear attention with RoPE on q and k, no 1/sqrt(d) scaling."""

    def forward(
        self, x: torch.Tensor, latent_mask: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor],
        query_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q = scale_rows(self.to_q(x), query_scale)
        q = q.view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(x).view(batch, length, self.heads, self.head_dim).permute(0, 2, 3, 1)  # (N, H, d, S)
        q = apply_rope(q, *rope)
        k = apply_rope(k, *rope)
        if latent_mask is not None:
            m = latent_mask.to(k.dtype)
            q = q * m[:, None, :, None]
            k = k * m[:, None, :, None]
            v = v * m[:, None, None, :]
        q = F.relu(q).float()
        k = F.relu(k).float()
        v = F.pad(v.float(), (0, 0, 0, 1), value=1.0)  # ones row -> normaliser
        vk = torch.matmul(v, k)  # (N, H, d+1, d): keep the (V K) Q association
        o = torch.matmul(vk, q.transpose(-1, -2))  # (N, H, d+1, S)
        o = o[:, :, :-1] / (o[:, :, -1:] + 1e-15)
        o = o.reshape(batch, self.heads * self.head_dim, length).transpose(1, 2).to(x.dtype)
        o = self.to_out[1](self.to_out[0](o))
        return o.clamp(-FP16_MAX, FP16_MAX)


class CrossAttention(_AttentionProjections):
    """`cross_attn`: softmax SDPA over the condition sequence with RoPE on q and k.

    The `add_*` projections and `to_add_out` exist in the checkpoint but are never used.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__(dim, heads, head_dim)
        inner = heads * head_dim
        self.add_k_proj = nn.Linear(dim, inner)
        self.add_v_proj = nn.Linear(dim, inner)
        self.add_q_proj = nn.Linear(dim, inner)
        self.to_add_out = nn.Linear(inner, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
        rope_q: tuple[torch.Tensor, torch.Tensor], rope_k: tuple[torch.Tensor, torch.Tensor],
        query_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q = scale_rows(self.to_q(x), query_scale)
        q = q.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(context).view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(context).view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, *rope_q)
        k = apply_rope(k, *rope_k)
        # Additive bias from the key mask only: padded query rows (masked latent frames) then get a
        # finite output instead of NaN; they are zeroed by the caller.
        bias = torch.zeros(context_mask.shape, dtype=torch.float32, device=x.device)
        bias = bias.masked_fill(context_mask == 0, float("-inf"))
        bias = bias[:, None, None, :].expand(batch, self.heads, length, context.shape[1]).to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=False)
        o = o.transpose(1, 2).reshape(batch, -1, self.heads * self.head_dim).to(q.dtype)
        return self.to_out[1](self.to_out[0](o))


class ConvLayer(nn.Module):
    """A bare Conv1d wrapped so that its keys read `<name>.conv.weight` like upstream."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GLUMBConv(nn.Module):
    """`ff`: 1x1 expand + SiLU, depthwise k=3 over time, GLU gate, 1x1 project."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.inverted_conv = ConvLayer(dim, hidden * 2, 1)
        self.depth_conv = ConvLayer(hidden * 2, hidden * 2, 3, groups=hidden * 2)
        self.point_conv = ConvLayer(hidden, dim, 1, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, latent_mask: torch.Tensor | None) -> torch.Tensor:
        a = self.act(self.inverted_conv(x.transpose(1, 2)))
        if latent_mask is not None:
            # A padded frame must look like the zero padding of the unpadded run to its neighbour.
            a = torch.where(latent_mask[:, None, :].bool(), a, torch.zeros((), dtype=a.dtype, device=a.device))
        a = self.depth_conv(a)
        value, gate = a.chunk(2, dim=1)
        return self.point_conv(value * self.act(gate)).transpose(1, 2)


class LinearTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.attn = LinearSelfAttention(dim, heads, head_dim)
        self.cross_attn = CrossAttention(dim, heads, head_dim)
        self.ff = GLUMBConv(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self, h: torch.Tensor, latent_mask: torch.Tensor | None, context: torch.Tensor, context_mask: torch.Tensor,
        rope_latent: tuple[torch.Tensor, torch.Tensor], rope_context: tuple[torch.Tensor, torch.Tensor],
        temb: torch.Tensor, query_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch = h.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + temb.reshape(batch, 6, -1)
        ).chunk(6, dim=1)
        n = rms_norm(h) * (1 + scale_msa) + shift_msa
        h = h + gate_msa * self.attn(n, latent_mask, rope_latent, query_scale)
        h = h + self.cross_attn(h, context, context_mask, rope_latent, rope_context, query_scale)
        n = rms_norm(h) * (1 + scale_mlp) + shift_mlp
        h = h + gate_mlp * self.ff(n, latent_mask)
        return h


class PatchEmbed(nn.Module):
    """`proj_in`: Conv2d(8->2048, kernel=stride=(16,1)) -> GroupNorm(32) -> 1x1 Conv2d(2048->D)."""

    def __init__(self, out_dim: int, patch_size: tuple[int, int] = (16, 1), in_channels: int = 8, hidden: int = 2048) -> None:
        super().__init__()
        self.early_conv_layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size, bias=True),
            nn.GroupNorm(num_groups=32, num_channels=hidden, eps=1e-6, affine=True),
            nn.Conv2d(hidden, out_dim, kernel_size=1, stride=1, bias=True),
        )

    def forward(self, latent: torch.Tensor, latent_mask: torch.Tensor | None) -> torch.Tensor:
        conv_in, norm, conv_out = self.early_conv_layers
        x = conv_in(latent)
        x = norm(x) if latent_mask is None else masked_group_norm(x, norm, latent_mask)
        x = conv_out(x)
        return x.flatten(2).transpose(1, 2)


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, mask: torch.Tensor) -> torch.Tensor:
    """GroupNorm whose statistics cover only the valid time frames of each item."""
    batch, channels, height, width = x.shape
    groups = norm.num_groups
    xg = x.float().view(batch, groups, channels // groups, height, width)
    m = mask.float().view(batch, 1, 1, 1, width)
    count = m.sum(dim=(2, 3, 4), keepdim=True) * (channels // groups) * height
    mean = (xg * m).sum(dim=(2, 3, 4), keepdim=True) / count
    var = (((xg - mean) * m) ** 2).sum(dim=(2, 3, 4), keepdim=True) / count
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).view(batch, channels, height, width).to(x.dtype)
    return y * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


class T2IFinalLayer(nn.Module):
    def __init__(self, dim: int, patch_size: tuple[int, int], out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.RMSNorm(dim, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(dim, patch_size[0] * patch_size[1] * out_channels, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.patch_size, self.out_channels = patch_size, out_channels

    def forward(self, h: torch.Tensor, emb_t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + emb_t[:, None]).chunk(2, dim=1)
        x = self.linear(self.norm_final(h) * (1 + scale) + shift)  # (N, S, p0*p1*C)
        batch, length, _ = x.shape
        height = self.patch_size[0]
        # out[n, c, p, s] = x[n, s, C*p + c] (patch width 1)
        return x.view(batch, length, height, self.out_channels).permute(0, 3, 2, 1).contiguous()


class ACEStepTransformer2DModel(ModelMixin, ConfigMixin):
    """The 3.5B diffusion transformer. Defaults are upstream's constructor defaults, which are not
    the 3.5B values: always build from the checkpoint's config.json.

    Extension (not upstream): `lyric_encoder_heads`, `lyric_encoder_linear_units` and
    `lyric_encoder_num_blocks` size the lyric encoder; absent (as in the official config) they take
    the fixed upstream values. Tiny test checkpoints use them to stay small.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        num_layers: int = 28,
        inner_dim: int = 1536,
        attention_head_dim: int = 64,
        num_attention_heads: int = 24,
        mlp_ratio: float = 4.0,
        out_channels: int = 8,
        max_position: int = 32768,
        rope_theta: float = 1000000.0,
        speaker_embedding_dim: int = 512,
        text_embedding_dim: int = 768,
        ssl_encoder_depths: list[int] = [9, 9],  # noqa: B006 - config default, never mutated
        ssl_names: list[str] = ["mert", "m-hubert"],  # noqa: B006
        ssl_latent_dims: list[int] = [1024, 768],  # noqa: B006
        lyric_encoder_vocab_size: int = 6681,
        lyric_hidden_size: int = 1024,
        patch_size: list[int] = [16, 1],  # noqa: B006
        max_height: int = 16,
        max_width: int = 4096,
        lyric_encoder_heads: int = 16,
        lyric_encoder_linear_units: int = 4096,
        lyric_encoder_num_blocks: int = 6,
        **kwargs,
    ) -> None:
        super().__init__()
        dim = num_attention_heads * attention_head_dim  # config's inner_dim is ignored upstream
        self.dim, self.heads, self.head_dim = dim, num_attention_heads, attention_head_dim
        self.rope_theta = rope_theta
        self.transformer_blocks = nn.ModuleList(
            [LinearTransformerBlock(dim, num_attention_heads, attention_head_dim, mlp_ratio) for _ in range(num_layers)]
        )
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))
        self.speaker_embedder = nn.Linear(speaker_embedding_dim, dim)
        self.genre_embedder = nn.Linear(text_embedding_dim, dim)
        self.lyric_embs = nn.Embedding(lyric_encoder_vocab_size, lyric_hidden_size)
        self.lyric_encoder = ConformerEncoder(
            input_size=lyric_hidden_size, output_size=lyric_hidden_size, attention_heads=lyric_encoder_heads,
            linear_units=lyric_encoder_linear_units, num_blocks=lyric_encoder_num_blocks,
        )
        self.lyric_proj = nn.Linear(lyric_hidden_size, dim)
        self.projectors = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, ssl_dim)
                )
                for ssl_dim in ssl_latent_dims
            ]
        )
        patch = (int(patch_size[0]), int(patch_size[1]))
        self.proj_in = PatchEmbed(dim, patch_size=patch)
        self.final_layer = T2IFinalLayer(dim, patch, out_channels)

    # ------------------------------------------------------------------ conditioning
    def encode(
        self,
        text_states: torch.Tensor,
        text_mask: torch.Tensor,
        speaker_embeds: torch.Tensor,
        lyric_ids: torch.Tensor,
        lyric_mask: torch.Tensor,
        lyric_erg_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition sequence [speaker, text, lyrics] (B, 1+Lt+Ll, D) and its mask.

        Each item's valid tokens are packed to the front (positions 0..len-1, as in an unpadded
        single run) and padding goes to the end, so RoPE positions never depend on padding.
        """
        speaker = self.speaker_embedder(speaker_embeds)[:, None, :]
        text = self.genre_embedder(text_states)
        lyric = self.lyric_proj(self.lyric_encoder(self.lyric_embs(lyric_ids), lyric_mask, lyric_erg_scale))
        states = torch.cat([speaker, text, lyric], dim=1)
        speaker_mask = torch.ones(speaker.shape[:2], device=states.device)
        mask = torch.cat([speaker_mask, text_mask.float(), lyric_mask.float()], dim=1)
        if bool((mask[:, :-1] >= mask[:, 1:]).all()):  # already packed (no holes): upstream layout
            return states, mask
        order = torch.argsort(1 - mask, dim=1, stable=True)  # valid tokens first, original order kept
        states = torch.gather(states, 1, order[..., None].expand_as(states))
        mask = torch.gather(mask, 1, order)
        states = states * mask[..., None].to(states.dtype)
        return states, mask

    # ------------------------------------------------------------------ denoiser
    def decode(
        self,
        latent: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        latent_mask: torch.Tensor | None = None,
        erg_query_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity for latents (B, 8, 16, T) at per-item timesteps (B,) (sigma * 1000).

        latent_mask (B, T): 1 for real frames; None means every frame is real (the upstream path).
        erg_query_scale (B,): ERG-diffusion query scale for blocks 15-19 (1.0 = off), per item.
        """
        dtype = latent.dtype
        if latent_mask is not None and bool(latent_mask.all()):
            latent_mask = None
        t_proj = get_timestep_embedding(timestep, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb_t = self.timestep_embedder(t_proj.to(dtype))
        temb = self.t_block(emb_t)
        h = self.proj_in(latent, latent_mask)
        length, context_length = h.shape[1], context.shape[1]
        rope_latent = rope_tables(length, self.head_dim, self.rope_theta, h.dtype, h.device)
        rope_context = rope_tables(context_length, self.head_dim, self.rope_theta, context.dtype, context.device)
        keep = None if latent_mask is None else latent_mask.bool()[..., None]
        for index, block in enumerate(self.transformer_blocks):
            scale = erg_query_scale if index in ERG_DIFFUSION_BLOCKS else None
            h = block(h, latent_mask, context, context_mask, rope_latent, rope_context, temb, scale)
            if keep is not None:
                h = torch.where(keep, h, torch.zeros((), dtype=h.dtype, device=h.device))
        out = self.final_layer(h, emb_t)
        if latent_mask is not None:
            out = out * latent_mask[:, None, None, :].to(out.dtype)
        return out

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, encoder_text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor, speaker_embeds: torch.Tensor, lyric_token_idx: torch.Tensor,
        lyric_mask: torch.Tensor, timestep: torch.Tensor,
    ) -> torch.Tensor:
        context, context_mask = self.encode(
            encoder_text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_idx, lyric_mask
        )
        return self.decode(hidden_states, timestep, context, context_mask, attention_mask)
