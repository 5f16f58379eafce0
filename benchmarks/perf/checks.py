"""Correctness checks of the fast paths: host syncs per step, chunked pieces, low precision."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from motion_collage.samplers import get_sampler

from .runs import generate
from .settings import SAMPLER, method_options
from .sync_audit import HostSyncAudit
from .zoo import BenchModel


def audit_collage(model: BenchModel, frames: int, device: torch.device, dtype: str,
                  guidance: Optional[float], steps: int = 3) -> dict:
    """Host reads/writes per step of the collage's sampling loop (after its first step)."""
    audit = HostSyncAudit()
    sample = get_sampler(SAMPLER)

    def mark(i, *_):  # called after step i's network call: later calls belong to step i + 1
        audit.step = i + 1

    def sampler(*args, **kwargs):
        out = sample(*args, **kwargs, callback=mark)
        audit.step = -2  # after the loop: results are read back once, on purpose
        return out

    audit.step = 0
    with audit:
        generate(model, "collage", frames, 1, steps, device, dtype, guidance=guidance, sampler=sampler)
    return {"guidance_argument": guidance, "steps": steps,
            "host_reads_after_first_step": audit.per_step("host_read"),
            "host_writes_after_first_step": audit.per_step("host_write"),
            "device_moves_after_first_step": audit.per_step("device_move"),
            "first_step_host_reads": audit.per_step("host_read", first=0)}


def chunking_check(model: BenchModel, frames: int, device: torch.device, rows_per_call: int = 3,
                   steps: int = 2) -> dict:
    """Collage with the piece batch in chunks of ``rows_per_call`` rows, and in 2 length buckets,
    against one call per step (the bench's own denoiser's settings, restored afterwards). The
    collage runs with the exact merge, whose variable nodes give the batch pieces of two lengths."""
    den = model.denoiser
    chunked = f"chunks of {rows_per_call} rows"
    variants = {"one call": (None, 1), chunked: (rows_per_call, 1), "2 length buckets": (None, 2)}
    saved = den.max_rows_per_call, den.length_buckets
    exact = dataclasses.replace(method_options("collage"), merge="exact")
    outs, calls = {}, {}
    try:
        for name, (chunk, buckets) in variants.items():
            den.max_rows_per_call, den.length_buckets = chunk, buckets
            before = den.network_calls
            outs[name] = generate(model, "collage", frames, 1, steps, device, "fp32", options=exact).motion
            calls[name] = den.network_calls - before
    finally:
        den.max_rows_per_call, den.length_buckets = saved
    ref = outs["one call"]
    return {"frames": frames, "steps": steps, "rows_per_call": rows_per_call,
            "network_calls_unchunked": calls["one call"], "network_calls_chunked": calls[chunked],
            "network_calls_bucketed": calls["2 length buckets"],
            "max_abs_diff": float((outs[chunked] - ref).abs().max()),
            "max_abs_diff_bucketed": float((outs["2 length buckets"] - ref).abs().max())}


def numerics_check(model: BenchModel, frames: int, steps: int, device: torch.device, low: str) -> dict:
    """Deviation of a low-precision collage (autocast ``low``) from fp32, same noise and steps."""
    ref = generate(model, "collage", frames, 1, steps, device, "fp32").motion.float()
    out = generate(model, "collage", frames, 1, steps, device, low).motion.float()
    err = out - ref
    return {"dtype": low, "frames": frames, "steps": steps, "max_abs_diff": float(err.abs().max()),
            "rel_rms_diff": float(err.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()),
            "reference_rms": float(ref.pow(2).mean().sqrt())}
