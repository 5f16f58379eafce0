"""Discrete variance-preserving noise schedules of MDM, and their sigma-space view.

All schedule arithmetic is float64 (as in the release); values are cast to float32 only where
they are applied to tensors of that type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved-DDPM cosine schedule: beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta)."""
    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_steps: int) -> Tensor:
    """DDPM's linear schedule, rescaled to the number of steps as in guided-diffusion."""
    scale = 1000 / num_steps
    return torch.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=torch.float64)


BETA_SCHEDULES = {"cosine": cosine_betas, "linear": linear_betas}


@dataclass(frozen=True)
class DiscreteSchedule:
    """A discrete VP schedule with T steps; index t = 0 is the least noisy.

    In sigma space ``x_sigma = x_vp / sqrt(abar)`` and ``sigma = sqrt((1 - abar) / abar)``.
    ``sigmas`` is increasing in t.
    """

    betas: Tensor  # [T] float64

    @classmethod
    def from_name(cls, name: str, num_steps: int) -> "DiscreteSchedule":
        try:
            make = BETA_SCHEDULES[name]
        except KeyError:
            raise ValueError(f"unknown noise schedule {name!r}; expected one of {sorted(BETA_SCHEDULES)}") from None
        if num_steps < 1:
            raise ValueError(f"diffusion_steps must be positive, got {num_steps}")
        return cls(make(num_steps))

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas_cumprod(self) -> Tensor:
        return torch.cumprod(1 - self.betas, dim=0)

    @property
    def sigmas(self) -> Tensor:
        abar = self.alphas_cumprod
        return ((1 - abar) / abar).sqrt()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Nearest trained timestep (in log sigma) for each sigma; returns int64 indices."""
        log_sigmas = self.sigmas.to(sigma.device).log()
        dist = (sigma.to(torch.float64).clamp_min(1e-30).log()[..., None] - log_sigmas).abs()
        return dist.argmin(dim=-1)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        return self.sigmas.to(t.device)[t]

    def timestep_subset(self, steps: int) -> Tensor:
        """The "ddimK" rule: indices {0, s, 2s, ...} with the smallest stride s giving `steps` indices.

        Returned in decreasing order (the order a sampler visits them).
        """
        T = self.num_steps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be in 1..{T} for a {T}-step schedule, got {steps}")
        for stride in range(1, T + 1):
            if len(range(0, T, stride)) == steps:
                return torch.arange(0, T, stride, dtype=torch.long).flip(0)
        # No stride gives exactly `steps` indices: fall back to evenly spaced rounding.
        return torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().unique().flip(0)
