"""The two contracts of motion_core.denoiser, checked on every implementation the project ships.

Every piece denoiser and every registered sampler runs through the same checks, so a new one is
added to a list here and inherits them all.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

import mdm_adapter  # noqa: E402
from motion_collage.analytic import GaussianPieceDenoiser, ar_autocovariance  # noqa: E402
from motion_collage.denoiser import CallCounter  # noqa: E402
from motion_collage.samplers import SAMPLERS, karras_sigmas  # noqa: E402
from motion_core.denoiser import PieceConditions  # noqa: E402


@pytest.fixture(scope="module")
def piece_denoisers(tmp_path_factory):
    tiny = mdm_adapter.load(build_tiny_model(tmp_path_factory.mktemp("tiny")), guidance_scale=2.5)
    gauss = GaussianPieceDenoiser(ar_autocovariance([0.9], 64))
    return {
        "mdm": (tiny.denoiser, 263, torch.float32, 1e-5),
        "mdm-bucketed": (_bucketed(tiny.denoiser), 263, torch.float32, 1e-5),
        "gaussian": (gauss, 3, torch.float64, 1e-10),
        "counted-gaussian": (CallCounter(gauss), 3, torch.float64, 1e-10),
    }


def _bucketed(denoiser):
    import copy
    other = copy.copy(denoiser)
    other.length_buckets = 2
    return other


def _pieces(D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 24, D, generator=g, dtype=dtype) * 3
    sigma = torch.tensor([3.0, 0.5, 0.05], dtype=dtype)
    mask = torch.ones(3, 24, dtype=torch.bool)
    mask[1, 16:] = False  # a short piece, padded
    cond = PieceConditions(("a person walks forward", None, "a person runs forward"))
    return x, sigma, mask, cond


NAMES = ["mdm", "mdm-bucketed", "gaussian", "counted-gaussian"]


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_inputs_untouched(piece_denoisers, name):
    den, D, dtype, _ = piece_denoisers[name]
    x, sigma, mask, cond = _pieces(D, dtype)
    copies = (x.clone(), sigma.clone(), mask.clone())
    out = den(x, sigma, mask, cond)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out[mask]).all()
    for before, after in zip(copies, (x, sigma, mask)):
        assert torch.equal(before, after)
    assert cond.prompts == ("a person walks forward", None, "a person runs forward")


@pytest.mark.parametrize("name", NAMES)
def test_a_piece_does_not_depend_on_its_batch_or_its_padding(piece_denoisers, name):
    den, D, dtype, tol = piece_denoisers[name]
    x, sigma, mask, cond = _pieces(D, dtype)
    together = den(x, sigma, mask, cond)
    for i in range(3):
        alone = den(x[i:i + 1], sigma[i:i + 1], mask[i:i + 1], cond.select([i]))
        real = mask[i]
        torch.testing.assert_close(together[i][real], alone[0][real], atol=tol, rtol=0)
    # what sits in the padded frames never reaches the real ones
    garbage = x.clone()
    garbage[1, 16:] = 1e3
    torch.testing.assert_close(den(garbage, sigma, mask, cond)[1, :16], together[1, :16], atol=tol, rtol=0)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_lands_on_a_constant_denoisers_answer(sampler):
    """With x0(x, sigma) = c the last step (to sigma 0) must return c exactly, and every call gets
    sigma [B] from the grid (or a churned value above it)."""
    spec = SAMPLERS[sampler]
    c = torch.linspace(-1, 1, 2 * 10 * 3, dtype=torch.float64).reshape(2, 10, 3)
    grid = karras_sigmas(8, 0.01, 10.0)
    seen = []

    def constant(x, sigma):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        seen.append(float(sigma[0]))
        return c.clone()

    x = torch.randn(2, 10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 10
    out = spec(constant, x, grid, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, c, atol=1e-12, rtol=0)
    assert min(seen) >= float(grid[-2]) - 1e-12 and max(seen) <= float(grid[0]) * np.sqrt(2) + 1e-9


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_is_reproducible_from_its_generator(sampler):
    spec = SAMPLERS[sampler]
    den = lambda x, sigma: x / (1 + sigma[:, None, None] ** 2)  # noqa: E731  exact for N(0, I) data
    grid = karras_sigmas(6, 0.01, 10.0)
    x = torch.randn(2, 10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 10
    a = spec(den, x, grid, generator=torch.Generator().manual_seed(5))
    b = spec(den, x, grid, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert spec.grid is not None and all(isinstance(o, str) for o in spec.options)
