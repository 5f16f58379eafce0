"""From prompts and durations to motion: the whole generation path as one function.

segments per row -> method (collage or a baseline) over the model's piece denoiser -> sampler
-> normalised features -> de-normalised features -> joint positions.
Used by the ``sample`` command and by the benchmark suites.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from motion_core import defaults
from motion_core.devices import get_dtype

from .methods import Generation, SamplingSetup, get_method, total_frames
from .representation import features_to_joints
from .samplers import get_sampler, prior_noise


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


class FiniteCheck:
    """Sequence-denoiser wrapper that notes the first sampler step whose x0 is not finite.

    The check runs on the device (no host read per step); :meth:`raise_if_bad` reads it once.
    A method may run the sampler several times (windows, a second take): :meth:`wrap` starts a run.
    """

    _RUN = 1_000_000  # a step is recorded as run * _RUN + step

    def __init__(self) -> None:
        self.denoiser = None
        self.run = self.step = 0
        self.first_bad: Optional[Tensor] = None

    def wrap(self, denoiser) -> "FiniteCheck":
        self.denoiser, self.run, self.step = denoiser, self.run + 1, 0
        return self

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        x0 = self.denoiser(x, sigma)
        self.step += 1
        if self.first_bad is None:
            self.first_bad = torch.zeros((), dtype=torch.long, device=x0.device)
        code = torch.full((), self.run * self._RUN + self.step, dtype=torch.long, device=x0.device)
        bad = ~torch.isfinite(x0).all()
        self.first_bad = torch.where(bad & (self.first_bad == 0), code, self.first_bad)
        return x0

    def raise_if_bad(self) -> None:
        code = 0 if self.first_bad is None else int(self.first_bad)
        if code:
            run, step = divmod(code, self._RUN)
            where = f"sampling step {step}" + (f" of sampler run {run} (windows / takes)" if self.run > 1 else "")
            raise ValueError(f"the model produced NaN or inf at {where}; "
                             f"check the model weights and the guidance scale")


def _check_settings(steps: int, eta: float, guidance) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    if guidance is not None and not torch.isfinite(torch.as_tensor(guidance, dtype=torch.float64)).all():
        raise ValueError(f"guidance must be finite, got {guidance}")


def _sampling_setup(model, sampler: str, steps: int, eta: float, gens, progress: bool) -> SamplingSetup:
    spec = get_sampler(sampler)
    grid, extra = spec.grid(model.schedule, steps)
    kwargs: dict[str, Any] = {**extra, "noise": row_noise_fn(gens), "progress": progress}
    if "eta" in spec.options:
        kwargs["eta"] = eta
    return SamplingSetup(spec, grid, kwargs)


def generate_motions(model, rows: Sequence[Sequence[tuple[str, int]]], *, method: str = defaults.METHOD,
                     method_options: Any = None, loop: bool = False, sampler: str = defaults.SAMPLER,
                     steps: int = defaults.STEPS, eta: float = defaults.ETA,
                     guidance: Optional[float | Sequence[float]] = None, seed: int = 0, row_offset: int = 0,
                     dtype: str = defaults.DTYPE, progress: bool = False, constraint=None) -> Motions:
    """Generate one long motion per row of segments ``[(prompt, frames), ...]`` with a loaded model.

    ``model`` is an :func:`mdm_adapter.load` result (or anything with ``denoiser``, ``schedule``,
    ``spec``, ``model_stats`` and ``device`` of its network). ``method_options``: the method's
    options (its dataclass, or a mapping of user values: durations in seconds or ``'20f'``);
    missing ones take the method's defaults. ``loop`` closes each row into a cycle (methods that
    can). ``guidance`` None: the model's default scale. ``row_offset`` is the global index of the
    first row, for per-row seeding across batches. ``constraint``: known motion the rows must
    reproduce, one :class:`~motion_collage.constraints.Constraint` for every row or a list with
    one (or None) per row, on timelines that include the known segments (see
    :func:`motion_collage.constraints.build_constraint`); methods that cannot take one refuse it.
    """
    _check_settings(steps, eta, guidance)
    spec = get_method(method)
    options = spec.make_options(method_options)
    spec.check_loop(loop)
    spec.check_constraint(constraint)
    device = next(model.network.parameters()).device
    gens = row_generators(seed, range(row_offset, row_offset + len(rows)), device)
    setup = _sampling_setup(model, sampler, steps, eta, gens, progress)
    T = total_frames(rows)
    noise = torch.stack([prior_noise((T, model.spec.feature_dim), float(setup.sigmas[0]), g, device=device)
                         for g in gens])
    autocast = (torch.autocast(device.type, dtype=get_dtype(dtype)) if dtype != "fp32" else contextlib.nullcontext())
    applier = _constraint_applier(constraint, len(rows), T, model) if constraint is not None else None
    check = FiniteCheck()
    checked = SamplingSetup(lambda den, x, sigmas, **kw: setup.sampler(check.wrap(den), x, sigmas, **kw),
                            setup.sigmas, setup.kwargs)
    with autocast:
        gen = spec(model.denoiser, rows, noise, checked, max_frames=model.spec.max_frames, fps=model.spec.fps,
                   options=options, loop=loop, guidance=guidance, generators=gens, constraint=applier)
    check.raise_if_bad()
    return Motions(*_to_joints(gen, model), gen)


def _constraint_applier(constraint, batch: int, num_frames: int, model):
    from .constraints import Constraint, ConstraintApplier
    per_row = [constraint] * batch if isinstance(constraint, Constraint) else list(constraint)
    if len(per_row) != batch:
        raise ValueError(f"got {len(per_row)} constraints for {batch} rows; give one, or one per row")
    return ConstraintApplier(per_row, num_frames, model.model_stats)


def _to_joints(gen: Generation, model) -> tuple[np.ndarray, list[np.ndarray]]:
    features = gen.motion.float().cpu().numpy()
    for b, g in enumerate(gen.graphs):
        features[b, g.num_frames:] = 0
    stats = model.model_stats
    joints = [np.asarray(features_to_joints(stats.denormalize(features[b, :g.num_frames]), model.spec))
              for b, g in enumerate(gen.graphs)]
    return features, joints
