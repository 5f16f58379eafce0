"""Analytic GPU estimate for the release architecture: shapes and host overhead measured here.

**An estimate, not a measurement.** The shapes of every network call come from running each
method with the ``skeleton`` model on this CPU (the release's op graph with 8-wide layers: same
graphs, rows, frames and kernels, negligible arithmetic); the same runs give the host's dispatch
time per step and the kernels per step.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch

from mdm_adapter.args import MDMArgs

from .device import GPU, GPUS
from .flops import Call, bytes_per_call, call_flops, recorded_flops
from .kernels import KernelCounter
from .runs import generate
from .settings import frames as to_frames
from .zoo import BenchModel, build_model

# Assumptions of the estimate (stated in the report): fraction of the peak a GEMM of these shapes
# reaches, fraction of the bandwidth, and the GPU time of the smallest kernel (launch to finish).
ASSUMED_GEMM_EFFICIENCY = 0.6
ASSUMED_BANDWIDTH_EFFICIENCY = 0.8
ASSUMED_KERNEL_FLOOR_S = 4e-6
THROUGHPUT_DURATION_S = 24
SKELETON_STEPS = 2  # steps of each skeleton run; figures are per step
CPU = torch.device("cpu")


def host_time_per_kernel(skeleton: BenchModel, steps: int = 4) -> float:
    """Host time per kernel-launching op of an eager sampling step, measured on this CPU.

    A 2 s collage (one piece: nothing but dispatch) with the skeleton model on one thread, best
    of 5; divided by the ops the step would launch on a GPU.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generate(skeleton, "collage", 40, 1, steps, CPU, "fp32")
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            generate(skeleton, "collage", 40, 1, steps, CPU, "fp32")
            best = min(best, time.perf_counter() - start)
        counter = KernelCounter()
        with counter:
            generate(skeleton, "collage", 40, 1, steps, CPU, "fp32")
    finally:
        torch.set_num_threads(threads)
    return best / counter.kernels


class _Roofline:
    """GPU time of one network call of the release architecture on the target GPU."""

    def __init__(self, gpu: GPU, dtype: str, tf32: bool) -> None:
        self.args = MDMArgs()
        self.gpu, self.peak = gpu, gpu.peak(dtype, tf32)
        self.dtype_bytes = 2 if dtype in ("bf16", "fp16") else 4

    def bytes(self, call: Call) -> float:
        return bytes_per_call(self.args, call.rows, call.frames, self.dtype_bytes, call.tokens)

    def seconds(self, call: Call) -> float:
        """Compute plus memory time of one forward at the assumed efficiencies."""
        forward = call._replace(grad=False)
        return (call_flops(self.args, forward) / (self.peak * ASSUMED_GEMM_EFFICIENCY)
                + self.bytes(forward) / (self.gpu.hbm * ASSUMED_BANDWIDTH_EFFICIENCY))


def _estimate_point(skeleton: BenchModel, roof: _Roofline, method: str, duration: float, steps: int,
                    host_per_kernel: float) -> dict:
    """One (method, duration): per call ``max(kernels x floor, roofline)``, per step the larger of
    the GPU time and the host's dispatch time (the host queues kernels ahead while the GPU works)."""
    frames = to_frames(duration)
    skeleton.recorder.calls.clear()
    counter = KernelCounter()
    with counter:
        gen = generate(skeleton, method, frames, 1, SKELETON_STEPS, CPU, "fp32")
    calls = list(skeleton.recorder.calls)
    host = counter.kernels / SKELETON_STEPS * host_per_kernel
    per_call_kernels = counter.kernels / max(1, len(calls))
    gpu = launch_total = roof_total = 0.0
    for call in calls:
        mult = 3 if call.grad else 1
        roofline, launch = mult * roof.seconds(call), mult * per_call_kernels * ASSUMED_KERNEL_FLOOR_S
        gpu += max(launch, roofline)
        launch_total, roof_total = launch_total + launch, roof_total + roofline
    per_step_gpu = gpu / SKELETON_STEPS
    bound = ("host dispatch" if host >= per_step_gpu
             else "kernel launches" if launch_total >= roof_total else "compute/memory")
    return {"method": method, "duration_s": duration, "frames": frames,
            "sequential_calls_per_step": gen.sequential_calls / SKELETON_STEPS,
            "kernels_per_step": counter.kernels / SKELETON_STEPS,
            "flops_per_step": recorded_flops(roof.args, calls) / SKELETON_STEPS,
            "bytes_per_step": sum(roof.bytes(c) * (3 if c.grad else 1) for c in calls) / SKELETON_STEPS,
            "host_dispatch_per_step_s": host, "gpu_per_step_s": per_step_gpu,
            "estimated_latency_s": max(per_step_gpu, host) * steps, "bound": bound}


def _throughput_estimate(skeleton: BenchModel, roof: _Roofline, steps: int, batch: int) -> dict:
    """The 24 s collage at a large batch: every row of its one call per step scales with the batch."""
    frames = to_frames(THROUGHPUT_DURATION_S)
    generate(skeleton, "collage", frames, 1, SKELETON_STEPS, CPU, "fp32")
    skeleton.recorder.calls.clear()
    generate(skeleton, "collage", frames, 1, SKELETON_STEPS, CPU, "fp32")
    (one,) = set(skeleton.recorder.calls)
    n = one.frames
    scaled = lambda v: None if v is None else v * batch  # noqa: E731
    call = Call(one.rows * batch, n, False, scaled(one.tokens), scaled(one.attention_pairs))
    args, rows = roof.args, call.rows
    flops = call_flops(args, call) * steps
    seconds = steps * roof.seconds(call)
    activation_bytes = roof.dtype_bytes * call.computed_tokens * (3 * args.latent_dim + args.ff_size) * 2
    return {"batch": batch, "duration_s": THROUGHPUT_DURATION_S, "rows_per_call": rows, "frames_per_row": n,
            "flops": flops, "estimated_seconds": seconds, "motions_per_s": batch / seconds,
            "flops_at_peak_seconds": flops / roof.peak, "estimated_peak_activation_bytes": activation_bytes}


def estimate_section(target: str, durations: Sequence[float], methods: Sequence[str], steps: int, dtype: str,
                     tf32: bool, throughput_batch: int, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Analytic GPU time of every (method, duration) for the release architecture on ``target``
    (a key of :data:`~benchmarks.perf.device.GPUS` with a bandwidth), and of the throughput batch."""
    roof = _Roofline(GPUS[target], dtype, tf32)
    skeleton = build_model("skeleton", CPU)
    host_per_kernel = host_time_per_kernel(skeleton)
    latency = []
    for duration in durations:
        for method in methods:
            progress(f"estimate {method} {duration:g}s")
            latency.append(_estimate_point(skeleton, roof, method, duration, steps, host_per_kernel))
    return {"target": roof.gpu.name, "dtype": dtype, "tf32": tf32, "steps": steps, "peak_flops_per_s": roof.peak,
            "hbm_bytes_per_s": roof.gpu.hbm,
            "assumptions": {"gemm_efficiency": ASSUMED_GEMM_EFFICIENCY,
                            "bandwidth_efficiency": ASSUMED_BANDWIDTH_EFFICIENCY,
                            "kernel_floor_s": ASSUMED_KERNEL_FLOOR_S,
                            "host_dispatch": "kernels per step x host time per kernel-launching op, measured on "
                                             "this machine's CPU (eager PyTorch, skeleton model, one thread, best of 5)",
                            "host_s_per_kernel": host_per_kernel},
            "latency": latency, "throughput": _throughput_estimate(skeleton, roof, steps, throughput_batch),
            "note": "ANALYTIC ESTIMATE, not a GPU measurement"}
