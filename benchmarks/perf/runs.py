"""One generation with the bench's settings, and one timed point (a method at a duration and batch)."""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from motion_collage.methods import Generation, SamplingSetup, get_method
from motion_collage.samplers import get_sampler, prior_noise
from motion_core import defaults
from motion_core.devices import DTYPES

from .device import sync
from .flops import recorded_flops
from .memory import PeakMemory
from .settings import FPS, PROMPT, SAMPLER, frames as to_frames, method_options
from .zoo import BenchModel


@dataclass
class RunResult:
    """One timed generation: a method at a duration and batch size."""

    method: str
    duration_s: float
    frames: int
    batch: int
    steps: int
    seconds: float  # median wall time of the batch
    seconds_all: list[float]
    seconds_min: float
    warmup_seconds: Optional[float]
    latency_per_motion_s: float
    sequential_calls: int
    network_calls: int
    network_rows_per_call_max: int
    tokens_per_step: float  # network tokens computed (padded: rows x (frames + 1)) averaged over steps
    frame_evaluations: int
    flops: float
    achieved_flops_per_s: float
    peak_memory_bytes: Optional[int]
    extra: dict = field(default_factory=dict)


def sampling_setup(model: BenchModel, steps: int, sampler: Optional[Callable] = None,
                   device: torch.device | str = "cpu", seed: int = 0) -> SamplingSetup:
    """The bench's sampler (DDIM, eta from the defaults) on ``steps`` steps; ``sampler`` replaces
    the sampler function (e.g. one that marks steps) on the same grid. Its per-step noise (eta > 0)
    comes from a fresh generator on ``device`` seeded with ``seed``, so two runs draw the same."""
    spec = get_sampler(SAMPLER)
    sigmas, extra = spec.grid(model.schedule, steps)
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    return SamplingSetup(sampler or spec, sigmas, {"eta": defaults.ETA, "generator": generator, **extra})


def make_inputs(model: BenchModel, frames: int, batch: int, steps: int, device: torch.device,
                seed: int = 0) -> tuple[list, Tensor, SamplingSetup]:
    """Rows of one segment (the bench's prompt), the initial noise ``[batch, frames, D]``, the sampler."""
    rows = [[(PROMPT, frames)] for _ in range(batch)]
    setup = sampling_setup(model, steps, device=device, seed=seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = prior_noise((batch, frames, model.args.feature_dim), float(setup.sigmas[0]), gen).to(device)
    return rows, noise, setup


def autocast(device: torch.device, dtype: str):
    """Autocast to ``dtype`` on ``device``; no context for fp32."""
    return torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype != "fp32" else contextlib.nullcontext()


def generate(model: BenchModel, method: str, frames: int, batch: int, steps: int, device: torch.device,
             dtype: str, guidance: Optional[float] = None, seed: int = 0,
             sampler: Optional[Callable] = None, options: Any = None) -> Generation:
    """One generation of ``method`` with the bench's options (or ``options``); ``sampler`` as in
    :func:`sampling_setup`."""
    rows, noise, setup = make_inputs(model, frames, batch, steps, device, seed)
    if sampler is not None:
        setup = SamplingSetup(sampler, setup.sigmas, setup.kwargs)
    with autocast(device, dtype):
        return get_method(method)(model.denoiser, rows, noise, setup, max_frames=model.max_frames, fps=FPS,
                                  options=method_options(method) if options is None else options,
                                  guidance=guidance)


def _warmup(model: BenchModel, method: str, frames: int, batch: int, steps: int, device: torch.device,
            dtype: str) -> Optional[float]:
    """An untimed run with the same shapes and ``steps`` steps (0: none); its wall time."""
    if steps <= 0:
        return None
    start = time.perf_counter()
    generate(model, method, frames, batch, steps, device, dtype)
    sync(device)
    return time.perf_counter() - start


def timed_run(model: BenchModel, method: str, duration_s: float, batch: int, steps: int, device: torch.device,
              dtype: str, repeats: int = 1, warmup_steps: int = 1) -> RunResult:
    """Warm up (same shapes, ``warmup_steps`` steps), then time ``repeats`` runs; median wall time."""
    frames = to_frames(duration_s)
    warmup = _warmup(model, method, frames, batch, min(warmup_steps, steps), device, dtype)
    times = []
    for _ in range(max(1, repeats)):
        model.recorder.calls.clear()
        calls_before = model.denoiser.network_calls
        with PeakMemory(device) as mem:
            sync(device)
            start = time.perf_counter()
            gen = generate(model, method, frames, batch, steps, device, dtype)
            sync(device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    calls = list(model.recorder.calls)
    flops = recorded_flops(model.args, calls)
    return RunResult(
        method=method, duration_s=duration_s, frames=frames, batch=batch, steps=steps, seconds=seconds,
        seconds_all=times, seconds_min=min(times), warmup_seconds=warmup, latency_per_motion_s=seconds / batch,
        sequential_calls=gen.sequential_calls, network_calls=model.denoiser.network_calls - calls_before,
        network_rows_per_call_max=max((c.rows for c in calls), default=0),
        tokens_per_step=sum(c.computed_tokens for c in calls) / steps,
        frame_evaluations=gen.frame_evaluations, flops=flops, achieved_flops_per_s=flops / seconds,
        peak_memory_bytes=mem.bytes, extra={k: v for k, v in gen.extra.items() if isinstance(v, (int, float, list))})
