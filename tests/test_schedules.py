"""MDM's cosine schedule against the check values of formats.md section 2."""
import math

import pytest
import torch

from mdm_adapter.schedules import DiscreteSchedule


def close(a, b, rel=1e-10):
    return math.isclose(float(a), b, rel_tol=rel, abs_tol=0)


def test_cosine_1000_check_values():
    s = DiscreteSchedule.from_name("cosine", 1000)
    beta, abar = s.betas, s.alphas_cumprod
    assert beta.dtype == torch.float64
    assert close(beta[0], 4.128422482197e-05) and close(beta[1], 4.614175273665e-05)
    assert close(beta[998], 0.7499993929011) and beta[999] == 0.999
    assert int((beta == 0.999).sum()) == 1  # the only clipped value
    assert close(abar[500], 0.4922851724488) and close(abar[999], 2.428766907035e-09)
    assert close(beta.sum(), 12.441496417056296, rel=1e-13)


def test_cosine_50_check_values():
    s = DiscreteSchedule.from_name("cosine", 50)
    assert close(s.betas[0], 1.747513533865e-03)
    assert close(s.alphas_cumprod[49], 9.711930298713e-07)
    assert close(s.betas.sum(), 6.537902164418104, rel=1e-13)


@pytest.mark.parametrize("T, lo, hi", [(1000, 0.0064, 2.0e4), (50, 0.042, 1015)])
def test_sigma_range(T, lo, hi):
    s = DiscreteSchedule.from_name("cosine", T)
    assert math.isclose(s.sigma_min, lo, rel_tol=0.01) and math.isclose(s.sigma_max, hi, rel_tol=0.02)  # 2 significant digits
    assert bool((s.sigmas[1:] > s.sigmas[:-1]).all())


def test_sigma_to_t_rounds_to_trained_steps():
    s = DiscreteSchedule.from_name("cosine", 1000)
    t = torch.tensor([0, 1, 499, 998, 999])
    assert torch.equal(s.sigma_to_t(s.t_to_sigma(t)), t)
    # values between two trained sigmas go to the nearer one in log space
    mid = (s.sigmas[10].log() * 0.4 + s.sigmas[11].log() * 0.6).exp()
    assert int(s.sigma_to_t(mid[None])) == 11
    # beyond the range: clamp to the ends
    assert s.sigma_to_t(torch.tensor([1e-9, 1e9])).tolist() == [0, 999]


def test_ddim50_subset():
    s = DiscreteSchedule.from_name("cosine", 1000)
    sub = s.timestep_subset(50)
    assert sub.tolist() == list(range(980, -1, -20))


def test_unknown_schedule_message():
    with pytest.raises(ValueError, match="unknown noise schedule 'sqrt'"):
        DiscreteSchedule.from_name("sqrt", 10)
