"""Flow-matching schedules and per-step updates (Euler, Heun, PingPong), spec section 6.4.

Schedules are built exactly as upstream (float32/float64 choreography, the double shift, the
oss_steps path). The step functions operate on one item at a time so an item's trajectory does
not depend on its batch: upstream's batch-wide omega mean and shared PingPong generator are the
batch-size-1 case of these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
SHIFT = 3.0


def _shift(sigmas):  # works for numpy arrays and tensors alike, keeping their dtype
    return SHIFT * sigmas / (1 + (SHIFT - 1) * sigmas)


def sigma_bounds(sigma_max: float = 1.0) -> tuple[float, float]:
    """(sigma_max, sigma_min) of a scheduler constructed with `sigma_max` (audio2audio uses < 1)."""
    timesteps = np.linspace(1, NUM_TRAIN_TIMESTEPS * sigma_max, NUM_TRAIN_TIMESTEPS, dtype=np.float32)[::-1].copy()
    sigmas = torch.from_numpy(timesteps).to(dtype=torch.float32) / NUM_TRAIN_TIMESTEPS
    sigmas = _shift(sigmas)
    return sigmas[0].item(), sigmas[-1].item()


@dataclass
class Schedule:
    """timesteps (float32, sigma*1000) and sigmas (float32, with a trailing 0) of one sampler loop.

    `num_steps` is upstream's N (the guidance interval is computed from it even for Heun, whose
    loop has 2N-1 entries).
    """

    scheduler: str
    timesteps: torch.Tensor
    sigmas: torch.Tensor
    num_steps: int
    infer_steps: int = field(default=0)


def flow_sigmas(num_steps: int, sigma_max: float = 1.0) -> torch.Tensor:
    s_max, s_min = sigma_bounds(sigma_max)
    timesteps = np.linspace(s_max * NUM_TRAIN_TIMESTEPS, s_min * NUM_TRAIN_TIMESTEPS, num_steps)
    sigmas = _shift(timesteps / NUM_TRAIN_TIMESTEPS)
    return torch.from_numpy(sigmas).to(dtype=torch.float32)


def explicit_sigmas(sigmas: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(_shift(np.asarray(sigmas).astype(np.float32))).to(dtype=torch.float32)


def make_schedule(
    scheduler: str, steps: int, oss_steps: tuple[int, ...] = (), model_dtype: torch.dtype = torch.float32,
    sigma_max: float = 1.0,
) -> Schedule:
    """Build the loop schedule; `oss_steps` selects steps of a `max(oss_steps)`-step schedule and
    re-shifts them (upstream rounds the selected timesteps to the model dtype first).

    `sigma_max` < 1 is audio-to-audio (spec 6.7): a scheduler built with that sigma_max running
    `int(sigma_max * steps)` steps; oss_steps are ignored there, as upstream does.
    """
    if sigma_max != 1.0:
        infer_steps = int(sigma_max * steps)
        if infer_steps < 1:
            raise ValueError(f"audio2audio with strength {1 - sigma_max:g} and {steps} steps leaves no step to run")
        sigmas = flow_sigmas(infer_steps, sigma_max)
    elif oss_steps:
        if scheduler == "heun":
            raise ValueError("oss_steps cannot be used with the heun scheduler (upstream raises)")
        infer_steps = max(oss_steps)
        base = flow_sigmas(infer_steps) * NUM_TRAIN_TIMESTEPS
        selected = torch.tensor([base[index - 1].item() for index in oss_steps], dtype=model_dtype)
        sigmas = explicit_sigmas((selected / NUM_TRAIN_TIMESTEPS).float().numpy())
    else:
        infer_steps = steps
        sigmas = flow_sigmas(steps)
    timesteps = sigmas * NUM_TRAIN_TIMESTEPS
    all_sigmas = torch.cat([sigmas, torch.zeros(1)])
    num_steps = len(timesteps)
    if scheduler == "heun":
        timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        all_sigmas = torch.cat([all_sigmas[:1], all_sigmas[1:-1].repeat_interleave(2), all_sigmas[-1:]])
    elif scheduler not in ("euler", "pingpong"):
        raise ValueError(f"unknown scheduler {scheduler!r}; expected euler, heun or pingpong")
    return Schedule(scheduler, timesteps, all_sigmas, num_steps, infer_steps)


def omega_factor(omega_scale: float) -> float:
    """Mean-preserving amplification factor of the Euler/Heun update ('granularity')."""
    # written as upstream does, (1.1 - 0.9) rather than 0.2: the two differ in the last bit
    return float(0.9 + (1.1 - 0.9) / (1 + np.exp(-0.1 * omega_scale)))


def _omega(dx: torch.Tensor, omega_scale: float) -> torch.Tensor:
    mean = dx.mean()
    return (dx - mean) * omega_factor(omega_scale) + mean


@dataclass
class HeunState:
    derivative: torch.Tensor | None = None
    dt: torch.Tensor | None = None
    sample: torch.Tensor | None = None


def euler_step(v: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, omega_scale: float) -> torch.Tensor:
    x32 = x.float()
    dx = (sigma_next - sigma) * v  # the sigma difference is rounded to v's dtype, as upstream
    return (x32 + _omega(dx, omega_scale)).to(v.dtype)


def heun_step(
    v: torch.Tensor, x: torch.Tensor, sigmas: torch.Tensor, index: int, state: HeunState, omega_scale: float
) -> torch.Tensor:
    x32 = x.float()
    if state.dt is None:  # first-order step sigma[k] -> sigma[k+1]
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        denoised = x32 - v * sigma
        derivative = (x32 - denoised) / sigma
        dt = sigma_next - sigma
        state.derivative, state.dt, state.sample = derivative, dt, x32
        dx = derivative * dt
        base = x32
    else:  # second-order correction evaluated at sigma[k]
        sigma_next = sigmas[index]
        denoised = x32 - v * sigma_next
        derivative = (x32 - denoised) / sigma_next
        derivative = (state.derivative + derivative) / 2
        dx = derivative * state.dt
        base = state.sample
        state.derivative = state.dt = state.sample = None
    return (base + _omega(dx, omega_scale)).to(v.dtype)


def pingpong_step(
    v: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    x32 = x.float()
    denoised = x32 - sigma * v
    noise = torch.empty_like(x32).normal_(generator=generator)
    return ((1 - sigma_next) * denoised + sigma_next * noise).to(v.dtype)


def guidance_window(num_steps: int, guidance_interval: float) -> tuple[int, int]:
    """[start, end) loop indices where guidance is active (computed from N, as upstream)."""
    start = int(num_steps * ((1 - guidance_interval) / 2))
    end = int(num_steps * (guidance_interval / 2 + 0.5))
    return start, end


def guidance_scale_at(
    index: int, start: int, end: int, guidance_scale: float, min_guidance_scale: float, decay: float
) -> float:
    if decay <= 0:
        return guidance_scale
    if end - start - 1 == 0:
        raise ValueError("guidance_interval_decay > 0 needs a guidance interval of at least two steps")
    return guidance_scale - (guidance_scale - min_guidance_scale) * (index - start) / (end - start - 1) * decay


__all__ = [
    "Schedule", "HeunState", "make_schedule", "sigma_bounds", "omega_factor", "euler_step", "heun_step",
    "pingpong_step", "guidance_window", "guidance_scale_at",
]
