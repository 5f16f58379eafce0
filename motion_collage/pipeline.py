"""From prompts and durations to motion: the whole generation path as one function.

segments per row -> method (collage or a baseline) over the model's piece denoiser -> sampler
-> normalised features -> de-normalised features -> joint positions.
Used by the ``sample`` command and by the benchmark suites.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .methods import Generation, SamplingSetup, get_method, total_frames
from .representation import features_to_joints
from .samplers import ddim_sigmas, ddpm_sigmas, get_sampler, karras_sigmas, prior_noise

SAMPLER_NAMES = ("ddim", "ddpm", "edm")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EDM_SIGMA_RANGE = (0.002, 80.0)  # EDM's defaults, clipped to the model's trained range


@dataclass
class Motions:
    """Generated motions of one batch.

    features: ``[B, T, D]`` normalised model features (padded rows are zero past their length)
    joints: one ``[T_b, J, 3]`` array per row
    generation: the method's :class:`Generation` (graphs, costs)
    """

    features: np.ndarray
    joints: list[np.ndarray]
    generation: Generation


def sigma_grid(schedule, sampler: str, steps: int) -> tuple[Tensor, dict[str, Any]]:
    """Sigma grid and extra sampler arguments for a discrete schedule."""
    if sampler == "ddim":
        return ddim_sigmas(schedule, steps), {}
    if sampler == "ddpm":
        return ddpm_sigmas(schedule), {}
    if sampler == "edm":
        lo = max(EDM_SIGMA_RANGE[0], schedule.sigma_min)
        hi = min(EDM_SIGMA_RANGE[1], schedule.sigma_max)
        grid = karras_sigmas(steps, lo, hi)
        # Round onto trained timesteps: MDM's time embedding is a table lookup.
        grid[:-1] = schedule.t_to_sigma(schedule.sigma_to_t(grid[:-1]))

        def round_sigma(s: float) -> float:
            return float(schedule.t_to_sigma(schedule.sigma_to_t(torch.tensor([s], dtype=torch.float64)))[0])

        return grid, {"round_sigma": round_sigma}
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {list(SAMPLER_NAMES)}")


def row_generators(seed: int, rows: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One generator per batch row, seeded by ``seed`` and the row's global index.

    A row's noise therefore does not depend on the batch it is generated in.
    """
    return [torch.Generator(device=device).manual_seed(seed * 1_000_003 + r) for r in rows]


def row_noise_fn(generators: Sequence[torch.Generator]):
    """Noise function drawing each row from its own generator."""
    def noise(like: Tensor) -> Tensor:
        return torch.stack([torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype)
                            for g in generators])
    return noise


def generate_motions(model, rows: Sequence[Sequence[tuple[str, int]]], *, method: str = "collage",
                     method_options: Optional[dict] = None, sampler: str = "ddim", steps: int = 50,
                     eta: float = 0.0, guidance: Optional[float | Sequence[float]] = None, seed: int = 0,
                     row_offset: int = 0, dtype: str = "fp32", progress: bool = False) -> Motions:
    """Generate one long motion per row of segments ``[(prompt, frames), ...]`` with a loaded model.

    ``model`` is an :func:`mdm_adapter.load` result (or anything with ``denoiser``, ``schedule``,
    ``spec``, ``model_stats`` and ``device`` of its network). ``row_offset`` is the global index
    of the first row, for per-row seeding across batches.
    """
    device = next(model.network.parameters()).device
    grid, extra = sigma_grid(model.schedule, sampler, steps)
    T = total_frames(rows)
    gens = row_generators(seed, range(row_offset, row_offset + len(rows)), device)
    noise = torch.stack([prior_noise((T, model.spec.feature_dim), float(grid[0]), g, device=device)
                         for g in gens])
    kwargs = {**extra, "noise": row_noise_fn(gens), "progress": progress}
    if sampler == "ddim":
        kwargs["eta"] = eta
    setup = SamplingSetup(get_sampler(sampler), grid, kwargs)
    autocast = (torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype != "fp32" else contextlib.nullcontext())
    options = dict(method_options or {})
    if method == "doubletake":
        options.setdefault("generators", gens)  # the second take's re-noising, per row
    with autocast:
        gen = get_method(method)(model.denoiser, rows, noise, setup, max_frames=model.spec.max_frames,
                                 guidance=guidance, **options)
    features = gen.motion.float().cpu().numpy()
    for b, g in enumerate(gen.graphs):
        features[b, g.num_frames:] = 0
    stats = model.model_stats
    joints = [np.asarray(features_to_joints(stats.denormalize(features[b, :g.num_frames]), model.spec))
              for b, g in enumerate(gen.graphs)]
    return Motions(features, joints, gen)
