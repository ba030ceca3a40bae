"""Flow-matching schedules and steps against the exact values and formulas of spec 6.3-6.4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acestep_batch.model import schedulers as sched

pytestmark = pytest.mark.usefixtures("single_thread")


def f32(value: float) -> torch.Tensor:
    """The float32 nearest to a value the spec prints with float32's shortest repr."""
    return torch.tensor(value, dtype=torch.float32)


def test_sigma_bounds() -> None:
    sigma_max, sigma_min = sched.sigma_bounds()
    assert sigma_max == 1.0
    assert sigma_min == 0.002994012087583542


def test_sixty_step_timesteps_exact() -> None:
    schedule = sched.make_schedule("euler", 60)
    ts = schedule.timesteps
    assert ts.dtype == torch.float32 and ts.shape == (60,)
    printed = (1000.0, 994.30304, 988.47473, 982.5105, 102.80772, 57.393852, 8.928572)
    for index, value in zip((0, 1, 2, 3, -3, -2, -1), printed):
        assert torch.equal(ts[index], f32(value)), (index, ts[index].item(), value)
    assert torch.all(ts[:-1] > ts[1:])  # strictly decreasing
    assert schedule.num_steps == 60 and schedule.infer_steps == 60


def test_sixty_step_sigmas_end_in_zero() -> None:
    schedule = sched.make_schedule("euler", 60)
    sigmas = schedule.sigmas
    assert sigmas.shape == (61,) and sigmas.dtype == torch.float32
    assert sigmas[-1].item() == 0.0
    assert torch.equal(sigmas[-2], f32(0.008928572))
    assert torch.equal(sigmas[:-1] * 1000, schedule.timesteps)


def _reference_sigmas(n: int) -> np.ndarray:
    """Independent float64 construction: linspace between the bounds, shifted again (spec 6.4)."""
    sigma_max, sigma_min = 1.0, 0.002994012087583542
    t = np.linspace(sigma_max * 1000, sigma_min * 1000, n, dtype=np.float64) / 1000
    return (3.0 * t / (1.0 + 2.0 * t)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 2, 27, 60])
def test_schedule_for_several_lengths(n: int) -> None:
    schedule = sched.make_schedule("pingpong", n)
    expected = torch.from_numpy(_reference_sigmas(n))
    assert torch.equal(schedule.sigmas[:-1], expected)
    assert schedule.sigmas[-1].item() == 0.0
    assert torch.equal(schedule.timesteps, expected * 1000)


def test_heun_duplicated_layout() -> None:
    n = 5
    euler = sched.make_schedule("euler", n)
    heun = sched.make_schedule("heun", n)
    t, s = euler.timesteps.tolist(), euler.sigmas.tolist()
    assert len(heun.timesteps) == 2 * n - 1
    assert heun.timesteps.tolist() == [t[0], t[1], t[1], t[2], t[2], t[3], t[3], t[4], t[4]]
    assert heun.sigmas.tolist() == [s[0], s[1], s[1], s[2], s[2], s[3], s[3], s[4], s[4], 0.0]
    assert heun.num_steps == n  # the guidance interval is still computed from N


def test_oss_steps_select_and_reshift_with_bf16_snapping() -> None:
    oss = (16, 29, 52)
    schedule = sched.make_schedule("euler", 60, oss, torch.bfloat16)
    assert schedule.infer_steps == 52 and schedule.num_steps == 3 and schedule.timesteps.shape == (3,)
    # Independent construction: the 52-step schedule, the selected timesteps rounded to bf16,
    # sigma = t/1000 in bf16, then the shift applied once more in numpy float32.
    base = torch.from_numpy(_reference_sigmas(52)) * 1000
    selected = torch.tensor([base[i - 1].item() for i in oss], dtype=torch.bfloat16)
    sigma = (selected / 1000).float().numpy()
    shifted = (np.float32(3.0) * sigma / (np.float32(1.0) + np.float32(2.0) * sigma)).astype(np.float32)
    assert torch.equal(schedule.sigmas[:-1], torch.from_numpy(shifted))
    assert torch.equal(schedule.timesteps, torch.from_numpy(shifted) * 1000)
    assert schedule.sigmas[-1].item() == 0.0
    # The snapping is real: selected values in [512, 1024) are multiples of 4 in bf16, and the
    # float32 model dtype gives a different schedule.
    assert selected[0].item() % 4 == 0
    float32 = sched.make_schedule("euler", 60, oss, torch.float32)
    assert not torch.equal(float32.timesteps, schedule.timesteps)
    assert float32.infer_steps == 52


def test_heun_with_oss_steps_raises() -> None:
    with pytest.raises(ValueError, match="heun"):
        sched.make_schedule("heun", 60, (10, 20, 30))


def test_unknown_scheduler_raises() -> None:
    with pytest.raises(ValueError, match="unknown scheduler"):
        sched.make_schedule("ddim", 10)


def test_omega_factor() -> None:
    """The spec prints 16 significant digits (1.046211715726001); upstream's double, written as
    0.9 + (1.1 - 0.9) / (1 + exp(-1)), is 1.0462117157260011, one ulp above the double nearest
    the printed value. Compare on the printed digits and within that ulp."""
    value = sched.omega_factor(10.0)
    assert f"{value:.16g}" == "1.046211715726001"
    assert abs(value - 1.046211715726001) <= 2.3e-16
    assert sched.omega_factor(0.0) == 1.0


def test_guidance_window() -> None:
    assert sched.guidance_window(60, 0.5) == (15, 45)
    assert sched.guidance_window(60, 1.0) == (0, 60)
    assert sched.guidance_window(3, 0.5) == (0, 2)


def test_guidance_decay_formula_and_one_step_interval() -> None:
    start, end = sched.guidance_window(60, 0.5)
    assert sched.guidance_scale_at(15, start, end, 15.0, 3.0, 0.0) == 15.0
    assert sched.guidance_scale_at(15, start, end, 15.0, 3.0, 1.0) == 15.0
    assert sched.guidance_scale_at(44, start, end, 15.0, 3.0, 1.0) == pytest.approx(3.0)
    assert sched.guidance_scale_at(30, start, end, 15.0, 3.0, 0.5) == pytest.approx(15.0 - 12.0 * 15 / 29 * 0.5)
    # N=4, interval 0.3 -> [1, 2): a one-step interval; upstream divides by zero.
    start, end = sched.guidance_window(4, 0.3)
    assert end - start == 1
    with pytest.raises((ValueError, ZeroDivisionError)):
        sched.guidance_scale_at(start, start, end, 15.0, 3.0, 1.0)
    assert sched.guidance_scale_at(start, start, end, 15.0, 3.0, 0.0) == 15.0  # no decay: fine


# ------------------------------------------------------------------------------------------------
# Steps (spec 6.4): formulas on fixed tensors
# ------------------------------------------------------------------------------------------------


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_euler_step_with_mean_preserving_omega() -> None:
    x, v = _randn(1, 8, 16, 5, seed=0), _randn(1, 8, 16, 5, seed=1)
    sigma, sigma_next = torch.tensor(0.9), torch.tensor(0.7)
    out = sched.euler_step(v, x, sigma, sigma_next, 10.0)
    dx = (0.7 - 0.9) * v.double()
    m = dx.mean()
    expected = x.double() + (dx - m) * 1.046211715726001 + m
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    plain = sched.euler_step(v, x, sigma, sigma_next, 0.0)
    torch.testing.assert_close(plain.double(), x.double() + dx, atol=1e-5, rtol=1e-5)


def test_heun_two_stage_update() -> None:
    sigmas = torch.tensor([1.0, 0.6, 0.6, 0.0])
    x0, v0, v1 = _randn(1, 8, 16, 3, seed=2), _randn(1, 8, 16, 3, seed=3), _randn(1, 8, 16, 3, seed=4)
    state = sched.HeunState()
    x1 = sched.heun_step(v0, x0, sigmas, 0, state, 0.0)  # Euler predictor to sigma 0.6
    torch.testing.assert_close(x1, x0 + (0.6 - 1.0) * v0, atol=1e-6, rtol=1e-6)
    x2 = sched.heun_step(v1, x1, sigmas, 1, state, 0.0)  # corrector from x0 with the mean slope
    torch.testing.assert_close(x2, x0 + (0.6 - 1.0) * (v0 + v1) / 2, atol=1e-5, rtol=1e-5)
    assert state.dt is None and state.sample is None


def test_pingpong_step_uses_the_generator() -> None:
    x, v = _randn(1, 8, 16, 4, seed=5), _randn(1, 8, 16, 4, seed=6)
    sigma, sigma_next = torch.tensor(0.8), torch.tensor(0.5)
    out = sched.pingpong_step(v, x, sigma, sigma_next, torch.Generator().manual_seed(9))
    noise = torch.empty(1, 8, 16, 4).normal_(generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, 0.5 * (x - 0.8 * v) + 0.5 * noise, atol=1e-6, rtol=1e-6)
