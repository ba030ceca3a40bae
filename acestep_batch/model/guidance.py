"""Classifier-free guidance variants of ACE-Step v1 (spec 6.5): CFG, APG, CFG-Zero*, and the
double-condition (text + lyric) formula. All take (B, C, H, T) velocities; padded frames must be
zero so that norms and projections cover only an item's own frames."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
APG_ETA = 0.0
CFG_ZERO_STEPS = 1


@dataclass
class MomentumBuffer:
    """APG's running average of guidance differences; persists across the steps of one run."""

    momentum: float = APG_MOMENTUM
    running_average: torch.Tensor | float = 0.0

    def update(self, value: torch.Tensor) -> torch.Tensor:
        self.running_average = value + self.momentum * self.running_average
        return self.running_average


def cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return v_uncond + scale * (v_cond - v_uncond)


def apg(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, momentum: MomentumBuffer | None = None,
    eta: float = APG_ETA, norm_threshold: float = APG_NORM_THRESHOLD, dims: tuple[int, int] = (-1, -2),
) -> torch.Tensor:
    """Adaptive projected guidance: momentum on the difference, norm clipping, and removal of the
    component parallel to the conditional prediction (projection in float64)."""
    diff = v_cond - v_uncond
    if momentum is not None:
        diff = momentum.update(diff)
    if norm_threshold > 0:
        diff_norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / diff_norm)
    v0, v1 = diff.double(), v_cond.double()
    v1 = F.normalize(v1, dim=dims)
    parallel = (v0 * v1).sum(dim=dims, keepdim=True) * v1
    orthogonal = v0 - parallel
    parallel, orthogonal = parallel.to(diff.dtype), orthogonal.to(diff.dtype)
    return v_cond + (scale - 1) * (orthogonal + eta * parallel)


def cfg_zero_star(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, step_index: int,
    zero_steps: int = CFG_ZERO_STEPS, use_zero_init: bool = True,
) -> torch.Tensor:
    batch = v_cond.shape[0]
    positive = v_cond.reshape(batch, -1)
    negative = v_uncond.reshape(batch, -1)
    dot = torch.sum(positive * negative, dim=1, keepdim=True)
    squared_norm = torch.sum(negative**2, dim=1, keepdim=True) + 1e-8
    alpha = (dot / squared_norm).view(batch, *([1] * (v_cond.dim() - 1)))
    if step_index <= zero_steps and use_zero_init:
        return v_cond * 0.0
    return v_uncond * alpha + scale * (v_cond - v_uncond * alpha)


def double_condition(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, v_text_only: torch.Tensor, scale_text: float, scale_lyric: float
) -> torch.Tensor:
    """Separate text and lyric guidance: (1-gt)*v_u + (gt-gl)*v_t + gl*v_c, left to right."""
    return (1 - scale_text) * v_uncond + (scale_text - scale_lyric) * v_text_only + scale_lyric * v_cond
