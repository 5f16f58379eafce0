"""The measured report, section by section, in the order they run (timings depend on it)."""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any, Callable

import torch

from motion_collage.methods import SamplingSetup, get_method
from motion_collage.samplers import get_sampler, prior_noise
from motion_core import defaults
from motion_core.devices import DTYPES

from .checks import audit_collage, chunking_check, numerics_check
from .device import gemm_rate, nominal_peak, sync
from .report import environment, ratios
from .runs import autocast, timed_run
from .packing import packing_comparison
from .settings import FPS, QUICKSTART, SAMPLER, frames as to_frames
from .zoo import BenchModel, compile_status

Progress = Callable[[str], None]


def _gemm(device: torch.device, args: argparse.Namespace) -> float:
    return gemm_rate(device, DTYPES[args.dtype], seconds=0.5 if args.smoke else 2.0)


def peaks_section(device: torch.device, args: argparse.Namespace) -> dict:
    """The matmul rate measured now and the nominal peak of this device."""
    return {"measured_gemm_flops_per_s": _gemm(device, args),
            "nominal_peak_flops_per_s": nominal_peak(device, args.dtype, args.tf32),
            "note": "measured at the start and at the end of the run; fractions use the larger",
            "gemm": f"[4096 x 512] @ [512 x 1024] in {args.dtype}"}


def latency_section(model: BenchModel, device: torch.device, args: argparse.Namespace, progress: Progress) -> list:
    """Every method at every duration and batch size (the timed points)."""
    results = []
    for batch in args.batch:
        for duration in sorted(args.durations):
            for method in args.methods:
                progress(f"{method} {duration:g}s batch {batch}")
                results.append(timed_run(model, method, duration, batch, args.steps, device, args.dtype,
                                         args.repeats, args.warmup_steps))
    return results


def throughput_section(model: BenchModel, device: torch.device, args: argparse.Namespace, peaks: dict,
                       progress: Progress) -> dict:
    """The collage at the throughput batch: motions/s, frames/s, fraction of the peaks."""
    progress(f"throughput: collage {args.throughput_duration:g}s batch {args.throughput_batch}")
    t = timed_run(model, "collage", args.throughput_duration, args.throughput_batch, args.steps, device,
                  args.dtype, args.repeats, args.warmup_steps)
    t.extra["motions_per_s"] = t.batch / t.seconds
    t.extra["frames_per_s"] = t.batch * t.frames / t.seconds
    t.extra["fraction_of"] = {"measured GEMM rate": t.achieved_flops_per_s / peaks["measured_gemm_flops_per_s"]}
    if peaks["nominal_peak_flops_per_s"]:
        t.extra["fraction_of"]["nominal peak"] = t.achieved_flops_per_s / peaks["nominal_peak_flops_per_s"]
    return dataclasses.asdict(t)


def long_section(model: BenchModel, device: torch.device, args: argparse.Namespace, progress: Progress) -> dict:
    """One collage of ``--long`` seconds, one run without warm-up: its time, calls and memory."""
    progress(f"long: collage {args.long:g}s")
    r = timed_run(model, "collage", args.long, 1, args.long_steps or args.steps, device, args.dtype, 1, 0)
    return {k: v for k, v in dataclasses.asdict(r).items() if k != "extra"}


def refresh_peaks(report: dict, device: torch.device, args: argparse.Namespace) -> None:
    """The matmul rate again at the end (a shared machine's speed drifts); the larger one is the
    reference of the throughput's fraction."""
    again = _gemm(device, args)
    report["peaks"]["measured_gemm_flops_per_s_end"] = again
    if again > report["peaks"]["measured_gemm_flops_per_s"]:
        for t in report.get("throughput", []):
            t["extra"]["fraction_of"]["measured GEMM rate"] = t["achieved_flops_per_s"] / again


def checks_section(model: BenchModel, device: torch.device, args: argparse.Namespace, progress: Progress) -> dict:
    """Sync audit (without and with a guidance argument), chunking, low-precision numerics."""
    first = to_frames(min(args.durations))
    progress("sync audit")
    out: dict[str, Any] = {"sync_audit": [audit_collage(model, first, device, "fp32", g)
                                          for g in (None, defaults.GUIDANCE)]}
    progress("chunking")
    out["chunking"] = chunking_check(model, first, device)
    out["numerics"] = []
    for low in args.numerics:
        progress(f"numerics {low}")
        out["numerics"].append(numerics_check(model, first, args.numerics_steps or min(args.steps, 10), device, low))
    return out


def _quickstart_once(model: BenchModel, device: torch.device, dtype: str) -> tuple[Callable[[int], Any], str]:
    """The quickstart generation as a function of the step count, and what it times."""
    rows = [list(QUICKSTART)]
    if model.loaded is not None:
        from motion_collage.pipeline import generate_motions

        def once(steps: int):
            generate_motions(model.loaded, rows, steps=steps, guidance=defaults.GUIDANCE, dtype=dtype)
        return once, "pipeline.generate_motions (sampling + joints)"
    sampler, spec = get_sampler(SAMPLER), get_method("collage")

    def once(steps: int):
        sigmas, extra = sampler.grid(model.schedule, steps)
        frames = sum(f for _, f in QUICKSTART)
        noise = prior_noise((1, frames, model.args.feature_dim), float(sigmas[0]),
                            torch.Generator().manual_seed(0)).to(device)
        with autocast(device, dtype):
            spec(model.denoiser, rows, noise, SamplingSetup(sampler, sigmas, extra), max_frames=model.max_frames,
                 fps=FPS)
    return once, "collage sampling only"


def quickstart_time(model: BenchModel, steps: int, repeats: int, device: torch.device, dtype: str) -> dict:
    """The README quickstart's generation: 3 prompts x 4 s, the collage with its default options
    (1 s null overlaps), DDIM.

    With a loaded model (``default`` or a path) the whole ``generate_motions`` path is timed
    (sampling, de-normalisation, joints); otherwise the collage sampling alone.
    """
    once, what = _quickstart_once(model, device, dtype)
    once(1)
    times = []
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        once(steps)
        sync(device)
        times.append(time.perf_counter() - start)
    return {"segments": "3 x 4 s", "steps": steps, "dtype": dtype, "timed": what,
            "seconds": statistics.median(times), "seconds_min": min(times), "seconds_all": times}


def measured_report(model: BenchModel, device: torch.device, args: argparse.Namespace, progress: Progress) -> dict:
    """All measured sections; returns the report (JSON-ready)."""
    report: dict[str, Any] = {"environment": environment(device, args, model), "peaks": peaks_section(device, args)}
    latency = latency_section(model, device, args, progress)
    report["latency"] = [dataclasses.asdict(r) for r in latency]
    report["ratios"] = ratios(latency)
    if args.throughput_batch:
        report["throughput"] = [throughput_section(model, device, args, report["peaks"], progress)]
    if args.long:
        report["long"] = long_section(model, device, args, progress)
    refresh_peaks(report, device, args)
    if not args.no_checks:
        report.update(checks_section(model, device, args, progress))
    if args.packing_durations:
        report["packing"] = []
        for duration in args.packing_durations:
            progress(f"packing {duration:g}s")
            report["packing"].append(packing_comparison(model, duration, device, max(3, args.repeats)))
    if args.compile:
        report["compile"] = compile_status(model.recorder)
    if args.quickstart:
        report["quickstart"] = []
        for dtype in args.quickstart:
            progress(f"quickstart {dtype}")
            report["quickstart"].append(quickstart_time(model, args.quickstart_steps, args.repeats, device, dtype))
    return report
