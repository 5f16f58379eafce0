"""A stationary Gaussian sequence model whose exact denoiser is known in closed form.

Frames are scalars (or D independent channels) of a zero-mean stationary Gaussian process with
autocovariance ``gamma[k]`` at lag k. For a window of L frames with Toeplitz covariance S and
noise level sigma, the exact denoiser is linear: ``E[x0 | x] = S (S + sigma^2 I)^-1 x``.
An AR(k) process is Markov of order k, so the collage factorisation of its clean density is exact
for chains whose overlaps are at least k frames. Used by the tests, the baseline study and the
demo; prompts are ignored.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from motion_core.denoiser import PieceConditions


def ar_autocovariance(coefficients: list[float], num_lags: int, innovation_var: float = 1.0,
                      unit_variance: bool = True) -> np.ndarray:
    """Autocovariance ``gamma[0..num_lags-1]`` of the AR process ``x_t = sum_i a_i x_{t-i} + e_t``.

    Computed from the process's MA(infinity) weights. With ``unit_variance`` it is scaled so
    that gamma[0] = 1.
    """
    p, n_terms = len(coefficients), 20000
    psi = np.zeros(n_terms)
    psi[0] = 1.0
    for j in range(1, n_terms):
        psi[j] = sum(coefficients[i] * psi[j - 1 - i] for i in range(min(p, j)))
    if not np.isfinite(psi).all() or abs(psi[-1]) > 1e-8:
        raise ValueError(f"AR coefficients {coefficients} do not describe a stationary process")
    gamma = innovation_var * np.array([psi[: n_terms - k] @ psi[k:] for k in range(num_lags)])
    return gamma / gamma[0] if unit_variance else gamma


def toeplitz_covariance(gamma: np.ndarray, n: int, circular: bool = False) -> np.ndarray:
    """``[n, n]`` covariance of n consecutive frames (``circular``: lags measured around a loop)."""
    i = np.arange(n)
    lag = np.abs(i[:, None] - i[None, :])
    if circular:
        lag = np.minimum(lag, n - lag)
    return gamma[lag]


class GaussianPieceDenoiser:
    """Exact piece denoiser of a stationary Gaussian process (see module docstring).

    Follows the piece-denoiser contract: ``(x [P, L, D], sigma [P], mask [P, L], cond) -> x0``.
    Each piece is denoised with the covariance of its own real frames only (padding is
    decoupled), so the result does not depend on what else is in the batch.
    """

    def __init__(self, gamma: np.ndarray) -> None:
        self.gamma = np.asarray(gamma, dtype=np.float64)

    def __call__(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> Tensor:
        P, L, _ = x.shape
        if L > len(self.gamma):
            raise ValueError(f"pieces of {L} frames need at least {L} autocovariance lags, have {len(self.gamma)}")
        S = torch.as_tensor(toeplitz_covariance(self.gamma, L), dtype=x.dtype, device=x.device)
        m = mask.to(x.dtype)
        eye = torch.eye(L, dtype=x.dtype, device=x.device)
        S_p = S * (m[:, :, None] * m[:, None, :]) + eye * (1 - m)[:, None, :]  # padding: unit variance, uncorrelated
        noisy = S_p + (sigma.to(x.dtype) ** 2)[:, None, None] * eye
        # x0 = S (S + s^2 I)^-1 x, solved rather than inverted.
        return S_p @ torch.linalg.solve(noisy, x)
