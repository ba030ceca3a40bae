"""Guidance variants against independent float64 implementations of spec 6.5 formulas."""

from __future__ import annotations

import pytest
import torch

from acestep_batch.model import guidance as guide

pytestmark = pytest.mark.usefixtures("single_thread")


def _pair(seed: int, shape=(2, 8, 16, 6), scale=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=gen), scale * torch.randn(shape, generator=gen)


def _apg_reference(v_c, v_u, g, running):
    """One APG call in float64 (momentum -0.75, eta 0, threshold 2.5, dims (time, height))."""
    v_c, v_u = v_c.double(), v_u.double()
    diff = (v_c - v_u) + (-0.75) * running
    running = diff
    norm = diff.pow(2).sum(dim=(-1, -2), keepdim=True).sqrt()
    diff = diff * torch.clamp(2.5 / norm, max=1.0)
    unit = v_c / v_c.pow(2).sum(dim=(-1, -2), keepdim=True).sqrt().clamp_min(1e-12)
    parallel = (diff * unit).sum(dim=(-1, -2), keepdim=True) * unit
    orthogonal = diff - parallel
    return v_c + (g - 1) * (orthogonal + 0.0 * parallel), running


def test_cfg() -> None:
    v_c, v_u = _pair(0)
    expected = v_u.double() + 7.0 * (v_c.double() - v_u.double())
    torch.testing.assert_close(guide.cfg(v_c, v_u, 7.0).double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guide.cfg(v_c, v_u, 1.0), v_c, atol=1e-6, rtol=0)


def test_apg_momentum_over_three_calls_with_norm_clipping() -> None:
    buffer = guide.MomentumBuffer()
    running = torch.zeros(2, 8, 16, 6, dtype=torch.float64)
    clipped_somewhere = unclipped_somewhere = False
    for call, scale in enumerate((0.02, 0.5, 0.05)):  # small and large differences
        v_c, v_u = _pair(10 + call, scale=1.0)
        v_u = v_c - scale * (v_c - v_u)  # difference norm ~ scale * sqrt(2 * 96)
        out = guide.apg(v_c, v_u, 15.0, buffer)
        expected, running = _apg_reference(v_c, v_u, 15.0, running)
        torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=2e-5)
        norms = running.pow(2).sum(dim=(-1, -2)).sqrt()
        clipped_somewhere |= bool((norms > 2.5).any())
        unclipped_somewhere |= bool((norms < 2.5).any())
        torch.testing.assert_close(buffer.running_average.double(), running, atol=1e-6, rtol=1e-6)
    assert clipped_somewhere and unclipped_somewhere  # both branches of the clip were exercised


def test_apg_result_minus_cond_is_orthogonal_to_cond() -> None:
    v_c, v_u = _pair(20)
    out = guide.apg(v_c, v_u, 5.0, guide.MomentumBuffer())
    delta = (out - v_c).double()
    dots = (delta * v_c.double()).sum(dim=(-1, -2))
    assert dots.abs().max() < 1e-4
    assert delta.abs().max() > 1e-2


def test_apg_is_per_item_and_per_channel() -> None:
    v_c, v_u = _pair(21)
    batch = guide.apg(v_c, v_u, 5.0, guide.MomentumBuffer())
    single = guide.apg(v_c[1:], v_u[1:], 5.0, guide.MomentumBuffer())
    torch.testing.assert_close(batch[1:], single, atol=1e-6, rtol=1e-6)


def _cfg_star_reference(v_c, v_u, g):
    b = v_c.shape[0]
    pc, pu = v_c.double().reshape(b, -1), v_u.double().reshape(b, -1)
    alpha = ((pc * pu).sum(1) / (pu.pow(2).sum(1) + 1e-8)).view(b, 1, 1, 1)
    return alpha * v_u.double() + g * (v_c.double() - alpha * v_u.double())


@pytest.mark.parametrize("step", [0, 1])
def test_cfg_zero_star_zero_init(step: int) -> None:
    v_c, v_u = _pair(30)
    out = guide.cfg_zero_star(v_c, v_u, 7.0, step)
    assert torch.equal(out, torch.zeros_like(v_c))


def test_cfg_zero_star_alpha_formula() -> None:
    v_c, v_u = _pair(31)
    v_u = 0.5 * v_u + 0.8 * v_c  # correlated so alpha is far from 0
    out = guide.cfg_zero_star(v_c, v_u, 7.0, 2)
    torch.testing.assert_close(out.double(), _cfg_star_reference(v_c, v_u, 7.0), atol=1e-5, rtol=1e-5)
    assert (out - guide.cfg(v_c, v_u, 7.0)).abs().max() > 1e-2  # differs from plain CFG
    no_zero_init = guide.cfg_zero_star(v_c, v_u, 7.0, 0, use_zero_init=False)
    torch.testing.assert_close(no_zero_init, out)


def test_double_condition() -> None:
    v_c, v_u = _pair(40)
    v_t, _ = _pair(41)
    out = guide.double_condition(v_c, v_u, v_t, 2.5, 1.5)
    expected = (1 - 2.5) * v_u.double() + (2.5 - 1.5) * v_t.double() + 1.5 * v_c.double()
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_bf16_inputs_stay_bf16() -> None:
    """The model-dtype arithmetic of spec 6.5: bf16 in, bf16 out (APG projects in float64 and
    casts back), values within bf16 precision of the float64 formulas."""
    v_c, v_u = (t.to(torch.bfloat16) for t in _pair(50))
    v_t = _pair(51)[0].to(torch.bfloat16)
    outputs = {
        "cfg": guide.cfg(v_c, v_u, 7.0),
        "apg": guide.apg(v_c, v_u, 7.0, guide.MomentumBuffer()),
        "cfg_star": guide.cfg_zero_star(v_c, v_u, 7.0, 3),
        "double": guide.double_condition(v_c, v_u, v_t, 2.5, 1.5),
    }
    assert {name: out.dtype for name, out in outputs.items()} == dict.fromkeys(outputs, torch.bfloat16)
    apg_ref, _ = _apg_reference(v_c, v_u, 7.0, torch.zeros(v_c.shape, dtype=torch.float64))
    assert (outputs["apg"].double() - apg_ref).abs().max() < 0.1
