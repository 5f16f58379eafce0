"""Samplers against the release's variance-preserving update formulas."""
import math

import numpy as np
import pytest
import torch

from mdm_adapter.schedules import DiscreteSchedule
from motion_collage.samplers import (ancestral_split, ddim_sigmas, ddpm_sigmas, get_sampler, karras_sigmas,
                                     prior_noise, sample_ddim, sample_ddpm, sample_euler, sample_heun)


def linear_x0(x, sigma):
    """A fixed linear 'model' in sigma space: x0 = x / (1 + sigma^2) (exact for unit-variance white data)."""
    return x / (1 + sigma[:, None, None] ** 2)


def test_ddim_matches_the_release_vp_update():
    sched = DiscreteSchedule.from_name("cosine", 1000)
    abar = sched.alphas_cumprod
    ts = sched.timestep_subset(50)
    x_vp = torch.randn(3, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # Reference: DDIM in VP space with the model called on (x_vp, t).
    ref = x_vp.clone()
    for i, t in enumerate(ts.tolist()):
        a_t = abar[t]
        a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        sigma = math.sqrt((1 - a_t) / a_t)
        x0 = linear_x0(ref / a_t.sqrt(), torch.full((3,), sigma, dtype=torch.float64))
        eps = (ref - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        ref = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    # Ours: sigma space, starting from x_vp / sqrt(abar_T).
    x = x_vp / abar[ts[0]].sqrt()
    out = sample_ddim(linear_x0, x, ddim_sigmas(sched, 50))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def test_ddpm_step_equals_posterior_with_fixed_small_variance():
    """One ancestral step from t to t-1 equals the DDPM posterior mean plus sqrt(posterior var) z."""
    sched = DiscreteSchedule.from_name("cosine", 1000)
    abar, betas = sched.alphas_cumprod, sched.betas
    t = 500
    a_t, a_prev = abar[t], abar[t - 1]
    x_vp = torch.randn(2, 5, 3, dtype=torch.float64)
    z = torch.randn(2, 5, 3, dtype=torch.float64)
    sigma = math.sqrt((1 - a_t) / a_t)
    x0 = linear_x0(x_vp / a_t.sqrt(), torch.full((2,), sigma, dtype=torch.float64))
    coef1 = betas[t] * a_prev.sqrt() / (1 - a_t)
    coef2 = (1 - a_prev) * (1 - betas[t]).sqrt() / (1 - a_t)
    post_var = betas[t] * (1 - a_prev) / (1 - a_t)
    ref = coef1 * x0 + coef2 * x_vp + post_var.sqrt() * z
    sigmas = torch.stack([sched.sigmas[t], sched.sigmas[t - 1], sched.sigmas[t - 2]])  # two steps; check the first
    seen = []
    out = sample_ddpm(linear_x0, x_vp / a_t.sqrt(), sigmas,
                      noise=lambda like: z, callback=lambda i, s, x, x0: seen.append(x.clone()))
    # After the first step the sigma-space sample, mapped back to VP, equals the posterior sample.
    torch.testing.assert_close(seen[1] * a_prev.sqrt(), ref, rtol=1e-10, atol=1e-12)
    assert out.shape == x_vp.shape


def test_ancestral_split_conserves_variance_and_eta_zero_is_deterministic():
    down, up = ancestral_split(2.0, 1.0, eta=1.0)
    assert math.isclose(down ** 2 + up ** 2, 1.0)
    assert ancestral_split(2.0, 1.0, eta=0.0) == (1.0, 0.0)
    assert ancestral_split(2.0, 0.0, eta=1.0) == (0.0, 0.0)


def test_ddpm_sigmas_cover_every_step_and_end_at_zero():
    sched = DiscreteSchedule.from_name("cosine", 50)
    s = ddpm_sigmas(sched)
    assert len(s) == 51 and s[-1] == 0 and torch.all(s[:-1].diff() < 0)
    assert math.isclose(float(s[0]), sched.sigma_max)


def test_karras_sigmas_endpoints_and_rho():
    s = karras_sigmas(5, 0.002, 80.0, rho=7.0)
    assert math.isclose(float(s[0]), 80.0) and math.isclose(float(s[4]), 0.002) and s[5] == 0
    mid = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert math.isclose(float(s[2]), mid, rel_tol=1e-12)


def test_heun_is_exact_for_white_gaussian_data():
    """For unit white data the probability-flow ODE maps N(0, (1+s^2)) to N(0, 1); Heun gets close."""
    x = prior_noise((4000, 1, 1), 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_heun(linear_x0, x, karras_sigmas(40, 0.002, 80.0))
    assert abs(out.std().item() - 1.0) < 0.05


def test_heun_rounds_churned_sigmas_onto_the_schedule():
    sched = DiscreteSchedule.from_name("cosine", 1000)
    seen = []

    def spy(x, sigma):
        seen.append(float(sigma[0]))
        return linear_x0(x, sigma)

    def rnd(s: float) -> float:
        return float(sched.t_to_sigma(sched.sigma_to_t(torch.tensor([s])))[0])

    sigmas = ddim_sigmas(sched, 10)
    sample_heun(spy, torch.randn(1, 3, 2, dtype=torch.float64) * 100, sigmas, churn=5.0, round_sigma=rnd,
                generator=torch.Generator().manual_seed(0))
    grid = sched.sigmas.numpy()
    assert all(np.isclose(grid, s, rtol=1e-9).any() for s in seen)


def test_euler_and_ddim_agree_deterministically():
    """DDIM (eta=0) is the Euler step of the probability-flow ODE in sigma space."""
    sigmas = karras_sigmas(20, 0.01, 50.0)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(sample_ddim(linear_x0, x, sigmas), sample_euler(linear_x0, x, sigmas))


def test_seeded_stochastic_sampling_is_reproducible_and_callback_sees_every_step():
    sigmas = karras_sigmas(6, 0.01, 10.0)
    x = torch.randn(2, 4, 3)
    calls = []
    a = sample_ddim(linear_x0, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(3),
                    callback=lambda i, s, xx, x0: calls.append(i))
    b = sample_ddim(linear_x0, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert calls == list(range(6))


def test_registry_lists_choices_on_unknown_name():
    assert get_sampler("ddim").sample is sample_ddim
    with pytest.raises(ValueError, match="expected one of"):
        get_sampler("plms")
