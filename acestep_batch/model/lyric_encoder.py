"""The lyric encoder of the ACE-Step transformer (`lyric_encoder.*` keys).

Upstream calls it a Conformer, but as configured there is no convolution module and no macaron
feed-forward: each layer is a pre-norm Transformer layer with relative-position (Transformer-XL
style) self-attention. Module names below are the checkpoint's key contract (spec section 2.9).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_table(length: int, d_model: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Sinusoidal table for relative offsets +(L-1) ... 0 ... -(L-1), shape (1, 2L-1, d_model).

    Values are computed in float32 on the CPU and then rounded to the model dtype, as upstream
    does; each row depends only on its offset, so building it for `length` equals slicing the
    centre of upstream's fixed +-4999 table.
    """
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    positive = torch.zeros(length, d_model)
    negative = torch.zeros(length, d_model)
    positive[:, 0::2] = torch.sin(position * div_term)
    positive[:, 1::2] = torch.cos(position * div_term)
    negative[:, 0::2] = torch.sin(-1 * position * div_term)
    negative[:, 1::2] = torch.cos(-1 * position * div_term)
    positive = torch.flip(positive, [0])  # +(L-1) ... 0
    table = torch.cat([positive, negative[1:]], dim=0).unsqueeze(0)
    return table.to(device=device, dtype=dtype)


class LinearEmbedding(nn.Module):
    """Input layer: Linear -> LayerNorm -> Dropout, then scaling by sqrt(d_model)."""

    def __init__(self, input_size: int, output_size: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(input_size, output_size), nn.LayerNorm(output_size, eps=1e-5), nn.Dropout(0.1))
        self.xscale = math.sqrt(output_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.out(x) * self.xscale
        pos_emb = relative_position_table(x.shape[1], x.shape[2], x.dtype, x.device)
        return x, pos_emb


class RelPositionMultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int) -> None:
        super().__init__()
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(self.h, self.d_k))

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor, pos_emb: torch.Tensor, query_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.linear_q(x)
        if query_scale is not None:
            # ERG-lyric: scale the projection output (before the position biases are added), rounded
            # to the model dtype like upstream's in-place hook.
            q = (q.float() * query_scale.view(-1, 1, 1)).to(q.dtype)
        q = q.view(batch, length, self.h, self.d_k)
        k = self.linear_k(x).view(batch, length, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(batch, length, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(1, -1, self.h, self.d_k).transpose(1, 2)  # (1, H, 2L-1, dk)

        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        content = torch.matmul(q_u, k.transpose(-2, -1))  # (B, H, L, L)
        position = torch.matmul(q_v, p.transpose(-2, -1))  # (B, H, L, 2L-1)
        # Relative shift: the term for query i and key j uses offset i - j, stored at column L-1-i+j.
        rows = torch.arange(length, device=x.device).view(length, 1)
        cols = torch.arange(length, device=x.device).view(1, length)
        index = (cols + length - 1 - rows).expand(batch, self.h, length, length)
        position = torch.gather(position, -1, index)
        scores = (content + position) / math.sqrt(self.d_k)

        masked = pad_mask[:, None, None, :].eq(0)  # (B, 1, 1, L)
        scores = scores.masked_fill(masked, -float("inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(masked, 0.0)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, length, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, hidden)
        self.w_2 = nn.Linear(hidden, d_model)
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    def __init__(self, size: int, heads: int, linear_units: int) -> None:
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size)
        self.feed_forward = PositionwiseFeedForward(size, linear_units)
        self.norm_ff = nn.LayerNorm(size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(size, eps=1e-5)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor, pos_emb: torch.Tensor, query_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pad_mask, pos_emb, query_scale)
        x = x + 1.0 * self.feed_forward(self.norm_ff(x))
        return x


class ConformerEncoder(nn.Module):
    """6 pre-norm rel-pos attention layers (full size: 1024 wide, 16 heads, FFN 4096).

    `erg_layers` are the layers whose query projection ERG-lyric scales (upstream: 4 and 5).
    """

    erg_layers: tuple[int, ...] = (4, 5)

    def __init__(
        self, input_size: int = 1024, output_size: int = 1024, attention_heads: int = 16,
        linear_units: int = 4096, num_blocks: int = 6,
    ) -> None:
        super().__init__()
        self.embed = LinearEmbedding(input_size, output_size)
        self.encoders = nn.ModuleList(
            [ConformerEncoderLayer(output_size, attention_heads, linear_units) for _ in range(num_blocks)]
        )
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor, erg_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: embedded tokens (B, L, input_size); pad_mask: (B, L) 1 = token, 0 = padding.

        erg_scale: optional per-item (B,) query scale for the ERG layers (1.0 = off).
        """
        x, pos_emb = self.embed(x)
        for index, layer in enumerate(self.encoders):
            scale = erg_scale if (erg_scale is not None and index in self.erg_layers) else None
            x = layer(x, pad_mask, pos_emb, scale)
        return self.after_norm(x)

