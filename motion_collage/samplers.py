"""Samplers: plain functions over a sequence denoiser ``(x, sigma) -> x0`` in sigma space.

Every sampler takes the initial noisy sample ``x`` at ``sigmas[0]`` and a decreasing sequence of
noise levels ending in 0, and returns the final sample. None of them knows whether the denoiser
is a plain model or a collage.

* :func:`sample_ddim` — DDIM (Song et al. 2021) with ``eta >= 0``; on the sigma grid of a
  discrete schedule this is exactly the release's DDIM update (``eta = 0`` deterministic).
* :func:`sample_ddpm` — DDPM ancestral sampling: DDIM with ``eta = 1`` over every timestep,
  which equals the posterior step with the "fixed small" variance used by MDM.
* :func:`sample_heun` / :func:`sample_euler` — EDM (Karras et al. 2022) Algorithm 2 with
  stochastic churn; with a discrete schedule, every sigma (including the churned one) is rounded
  to a trained timestep.

The schedule helpers build the sigma grids: :func:`ddim_sigmas` (subset of discrete timesteps),
:func:`karras_sigmas` (EDM's rho schedule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import torch
from torch import Tensor

from motion_core.denoiser import SequenceDenoiser

Callback = Callable[[int, float, Tensor, Tensor], None]  # (step, sigma, x, x0)
NoiseFn = Callable[[Tensor], Tensor]  # like -> standard normal of the same shape


class DiscreteSigmas(Protocol):
    """What the samplers need from a discrete schedule (``mdm_adapter.schedules.DiscreteSchedule``)."""

    @property
    def sigmas(self) -> Tensor: ...

    def timestep_subset(self, steps: int) -> Tensor: ...


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def ddim_sigmas(schedule: DiscreteSigmas, steps: int) -> Tensor:
    """Sigmas of a DDIM timestep subset (the "ddimK" rule), decreasing, then 0. float64."""
    return _append_zero(schedule.sigmas[schedule.timestep_subset(steps)])


def ddpm_sigmas(schedule: DiscreteSigmas) -> Tensor:
    """Sigmas of every timestep of a discrete schedule, decreasing, then 0. float64."""
    return _append_zero(schedule.sigmas.flip(0))


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM's schedule: ``steps`` sigmas from sigma_max to sigma_min spaced in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv_rho = 1 / rho
    sigmas = (sigma_max ** inv_rho + ramp * (sigma_min ** inv_rho - sigma_max ** inv_rho)) ** rho
    return _append_zero(sigmas)


def prior_noise(shape: tuple[int, ...], sigma_max: float, generator: Optional[torch.Generator] = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Initial sample at sigma_max for unit-variance data: ``N(0, (1 + sigma_max^2) I)``.

    This is the VP prior ``N(0, I)`` seen in sigma space.
    """
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return noise * math.sqrt(1 + sigma_max ** 2)


def default_noise(generator: Optional[torch.Generator]) -> NoiseFn:
    """A noise function drawing from `generator` (on the generator's device)."""
    return lambda like: torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _progress(n: int, enabled: bool):
    if not enabled:
        return range(n)
    from tqdm.auto import trange
    return trange(n, desc="sampling", unit="step", leave=False)


def _sigma_batch(sigma: float, x: Tensor) -> Tensor:
    # Built from a Python float: no host-device synchronisation in the loop.
    return torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)


def _as_floats(sigmas: Tensor) -> list[float]:
    """The grid as Python floats (float64 arithmetic on the host, casts only at the tensors)."""
    return [float(s) for s in sigmas.detach().to("cpu", torch.float64)]


def ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """DDIM's split of the step to sigma_next into a deterministic part and fresh noise.

    Returns ``(sigma_down, sigma_up)`` with ``sigma_down^2 + sigma_up^2 = sigma_next^2`` and
    ``sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2)``: the DDIM sigma of Song et
    al. expressed in sigma space.
    """
    if sigma_next == 0:
        return 0.0, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return math.sqrt(sigma_next ** 2 - sigma_up ** 2), sigma_up


@torch.no_grad()
def sample_ddim(denoiser: SequenceDenoiser, x: Tensor, sigmas: Tensor, eta: float = 0.0,
                noise: Optional[NoiseFn] = None, generator: Optional[torch.Generator] = None,
                callback: Optional[Callback] = None, progress: bool = False) -> Tensor:
    """DDIM: ``x_next = x0 + sigma_down * (x - x0) / sigma + sigma_up * z`` (eta = 0: deterministic)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    noise = noise or default_noise(generator)
    grid = _as_floats(sigmas)
    for i in _progress(len(grid) - 1, progress):
        sigma, sigma_next = grid[i], grid[i + 1]
        x0 = denoiser(x, _sigma_batch(sigma, x))
        if callback is not None:
            callback(i, sigma, x, x0)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        x = x0 + (sigma_down / sigma) * (x - x0)
        if sigma_up > 0:
            x = x + sigma_up * noise(x)
    return x


def sample_ddpm(denoiser: SequenceDenoiser, x: Tensor, sigmas: Tensor, noise: Optional[NoiseFn] = None,
                generator: Optional[torch.Generator] = None, callback: Optional[Callback] = None,
                progress: bool = False) -> Tensor:
    """DDPM ancestral sampling (the release's loop); pass :func:`ddpm_sigmas` for all T steps."""
    return sample_ddim(denoiser, x, sigmas, eta=1.0, noise=noise, generator=generator,
                       callback=callback, progress=progress)


@torch.no_grad()
def sample_heun(denoiser: SequenceDenoiser, x: Tensor, sigmas: Tensor, churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                round_sigma: Optional[Callable[[float], float]] = None, second_order: bool = True,
                noise: Optional[NoiseFn] = None, generator: Optional[torch.Generator] = None,
                callback: Optional[Callback] = None, progress: bool = False) -> Tensor:
    """EDM sampler (Karras et al. 2022, Alg. 2): Heun steps with stochastic churn.

    ``churn`` is S_churn (total over the trajectory); ``round_sigma`` maps a sigma onto the
    model's trained grid (for discrete-time models). ``second_order=False`` gives Euler.
    """
    noise = noise or default_noise(generator)
    rnd = round_sigma or (lambda s: s)
    grid = _as_floats(sigmas)
    n = len(grid) - 1
    for i in _progress(n, progress):
        sigma, sigma_next = grid[i], grid[i + 1]
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = rnd(sigma * (1 + gamma)) if gamma > 0 else sigma
        if sigma_hat > sigma:
            x = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * s_noise * noise(x)
        x0 = denoiser(x, _sigma_batch(sigma_hat, x))
        if callback is not None:
            callback(i, sigma_hat, x, x0)
        d = (x - x0) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if second_order and sigma_next > 0:
            x0_next = denoiser(x_next, _sigma_batch(sigma_next, x))
            d_next = (x_next - x0_next) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
    return x


def sample_euler(denoiser: SequenceDenoiser, x: Tensor, sigmas: Tensor, **kwargs) -> Tensor:
    """EDM's first-order variant: Euler steps with optional churn (see :func:`sample_heun`)."""
    return sample_heun(denoiser, x, sigmas, second_order=False, **kwargs)


# --------------------------------------------------------------------------- sigma-grid rules

EDM_SIGMA_RANGE = (0.002, 80.0)  # EDM's defaults, clipped to the model's trained range


class TrainedSigmas(DiscreteSigmas, Protocol):
    """A discrete schedule that can also round sigmas onto its trained timesteps."""

    sigma_min: float
    sigma_max: float

    def sigma_to_t(self, sigma: Tensor) -> Tensor: ...

    def t_to_sigma(self, t: Tensor) -> Tensor: ...


GridRule = Callable[[TrainedSigmas, int], tuple[Tensor, dict[str, Any]]]


def ddim_grid(schedule: TrainedSigmas, steps: int) -> tuple[Tensor, dict[str, Any]]:
    """The DDIM timestep subset of the schedule; no extra sampler arguments."""
    return ddim_sigmas(schedule, steps), {}


def ddpm_grid(schedule: TrainedSigmas, steps: int) -> tuple[Tensor, dict[str, Any]]:
    """Every trained timestep (``steps`` is not used: DDPM walks the whole chain)."""
    return ddpm_sigmas(schedule), {}


def edm_grid(schedule: TrainedSigmas, steps: int) -> tuple[Tensor, dict[str, Any]]:
    """EDM's rho schedule rounded onto trained timesteps (MDM's time embedding is a table lookup),
    plus the ``round_sigma`` the sampler applies to churned sigmas."""
    lo = max(EDM_SIGMA_RANGE[0], schedule.sigma_min)
    hi = min(EDM_SIGMA_RANGE[1], schedule.sigma_max)
    grid = karras_sigmas(steps, lo, hi)
    grid[:-1] = schedule.t_to_sigma(schedule.sigma_to_t(grid[:-1]))

    def round_sigma(s: float) -> float:
        return float(schedule.t_to_sigma(schedule.sigma_to_t(torch.tensor([s], dtype=torch.float64)))[0])

    return grid, {"round_sigma": round_sigma}


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: its function, its sigma-grid rule on a discrete schedule, the user options it takes.

    Calling the spec calls the sampler, so a spec can stand wherever a sampler function does.
    """

    name: str
    sample: Callable[..., Tensor]
    grid: GridRule
    options: tuple[str, ...] = ()
    uses_steps: bool = True
    summary: str = ""

    def __call__(self, denoiser: SequenceDenoiser, x: Tensor, sigmas: Tensor, **kwargs) -> Tensor:
        return self.sample(denoiser, x, sigmas, **kwargs)

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"sampler {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                             f"its options: {list(self.options) or 'none'}")


SAMPLERS: dict[str, SamplerSpec] = {}


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    """Add a sampler to the registry."""
    if spec.name in SAMPLERS:
        raise ValueError(f"sampler {spec.name!r} is registered twice")
    SAMPLERS[spec.name] = spec
    return spec


register_sampler(SamplerSpec("ddim", sample_ddim, ddim_grid, options=("eta",),
                             summary="DDIM subset of the trained steps (eta 0: deterministic)"))
register_sampler(SamplerSpec("ddpm", sample_ddpm, ddpm_grid, uses_steps=False,
                             summary="the release's ancestral loop over every trained step"))
register_sampler(SamplerSpec("edm", sample_heun, edm_grid, options=("churn",),
                             summary="EDM Heun with churn, sigmas rounded to trained steps"))
register_sampler(SamplerSpec("euler", sample_euler, edm_grid, options=("churn",),
                             summary="EDM's first-order (Euler) variant on the same grid"))


def get_sampler(name: str) -> SamplerSpec:
    """Look up a sampler by name; an unknown name lists the choices."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; expected one of {list(SAMPLERS)}") from None
