"""``python -m motion_collage.bench``: speed, memory and call counts of every generation method.

Measures, in one process and on one device, side by side:

* latency per motion against duration for each method (same noise, sampler, steps, guidance);
* throughput of the collage at a large batch (motions/s, generated frames/s, achieved FLOP/s);
* peak memory of each run (CUDA ``max_memory_allocated``; on CPU the growth of the resident set
  over the run, from the kernel's peak-RSS counter reset before it: allocator slack included);
* sequential piece-denoiser calls, network calls, network rows and frame evaluations;
* a host-synchronisation audit of the collage's sampling loop, the equality of chunked and
  unchunked piece evaluation, and the bf16/fp16 deviation from fp32.

FLOPs are counted analytically from the shapes of every network call (matmuls and attention of
the transformer, padded tokens included), so the achieved fraction of the device's peak can be
printed. Warm-up runs (same shapes, one step) are excluded from the timings; on CUDA the timers
are bracketed by ``torch.cuda.synchronize()``.

The ``official`` model is the release's architecture (trans_enc, 8 layers, latent 512, ff 1024,
4 heads) with random weights: it runs exactly as fast as the released checkpoint. Its text
feature comes from a stand-in encoder (a fixed random 512-dim feature per prompt): text is
encoded once per prompt before sampling and is not part of the sampling loop.

parse -> build (device, model) -> run (sections) -> save (JSON, PNG) -> print.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM
from mdm_adapter.piece_denoiser import MDMPieceDenoiser
from mdm_adapter.schedules import DiscreteSchedule
from mdm_adapter.text_encoders import CachedEncoder

from .methods import METHODS, SamplingSetup
from .samplers import ddim_sigmas, prior_noise, sample_ddim

REPO_ROOT = Path(__file__).resolve().parent.parent
ALL_METHODS = ("collage", "average", "replacement", "reconstruction", "doubletake", "naive")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROMPT = "a person walks forward"
FPS = 20
OVERLAP = 20  # frames (1 s): collage/average overlap, DoubleTake handshake
GUIDANCE = 2.5

# Nominal dense peaks (TFLOP/s, no sparsity) of the accelerators we may be lent, from the vendors'
# data sheets: (bf16/fp16 tensor core, tf32 tensor core, fp32 without tensor cores).
NOMINAL_PEAK_TFLOPS = {
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100": (989.4, 494.7, 66.9),  # SXM5
    "H200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
}


# ------------------------------------------------------------------------------------ models

class StandInTextEncoder(CachedEncoder):
    """A fixed random feature per prompt, in place of CLIP (whose weights are not available).

    Text is encoded once per prompt before sampling; its cost is not part of the sampling loop.
    """

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.feature_dim = dim

    def _compute(self, prompts):
        return [torch.randn(self.feature_dim, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
                for p in prompts]


class ShapeRecorder(nn.Module):
    """Wraps the network (possibly compiled) and records ``(rows, frames, grad)`` of every call."""

    def __init__(self, net: nn.Module, base: MDM) -> None:
        super().__init__()
        self.net = net
        self.calls: list[tuple[int, int, bool]] = []
        for name in ("feature_dim", "text_dim", "text_tokens", "max_timestep_rows", "arch"):
            setattr(self, name, getattr(base, name))

    def forward(self, x: Tensor, *rest) -> Tensor:
        self.calls.append((x.shape[0], x.shape[-1], torch.is_grad_enabled()))
        return self.net(x, *rest)


@dataclass
class BenchModel:
    """What the bench needs from a model: its piece denoiser and the architecture's sizes."""

    name: str
    denoiser: MDMPieceDenoiser
    recorder: ShapeRecorder
    args: MDMArgs
    parameters: int
    max_frames: int = 196
    loaded: Any = None  # the mdm_adapter.load result, when loaded from disk

    @property
    def schedule(self) -> DiscreteSchedule:
        return self.denoiser.schedule


def tiny_args() -> MDMArgs:
    """A one-layer, 16-wide MDM for smoke runs (seconds on a CPU)."""
    return MDMArgs(latent_dim=16, layers=1, ff_size=32, num_heads=2, diffusion_steps=100)


def default_arch_args() -> MDMArgs:
    """The shipped default model's sizes (latent 256, 4 layers, ff 512, 100-dim bag-of-words text)."""
    return MDMArgs(latent_dim=256, layers=4, ff_size=512, num_heads=4, text_encoder_type="bow",
                   text_feature_dim=100, mask_frames=True)


def skeleton_args() -> MDMArgs:
    """The release's op graph (8 layers, 4 heads, trans_enc) with 8-wide layers: arithmetic is
    negligible, so a step's time is the host's dispatch overhead, and its calls have the real shapes."""
    return MDMArgs(latent_dim=8, ff_size=8, layers=8, num_heads=4)


RANDOM_MODELS = {"official": MDMArgs, "default-arch": default_arch_args, "tiny": tiny_args,
                 "skeleton": skeleton_args}


def build_model(spec: str, device: torch.device, compile_mode: Optional[str] = None,
                max_rows_per_call: Optional[int] = None, seed: int = 0, length_buckets: int = 1) -> BenchModel:
    """A model with random weights (``official``: the release's architecture; ``default-arch``: the
    default model's sizes; ``tiny``), or ``default`` (save/default) or a checkpoint path."""
    loaded = None
    if spec in RANDOM_MODELS:
        args = RANDOM_MODELS[spec]()
        torch.manual_seed(seed)
        network = MDM.from_args(args).to(device).eval().requires_grad_(False)
        encoder = StandInTextEncoder(args.text_dim)
        schedule = DiscreteSchedule.from_name(args.noise_schedule, args.diffusion_steps)
        denoiser = MDMPieceDenoiser(network, encoder, schedule, guidance_scale=GUIDANCE)
    else:
        import mdm_adapter
        path = REPO_ROOT / "save" / "default" if spec == "default" else Path(spec)
        loaded = mdm_adapter.load(path, device=device)
        network, args, denoiser = loaded.network, loaded.args, loaded.denoiser
    denoiser.max_rows_per_call = max_rows_per_call
    denoiser.length_buckets = length_buckets
    compiled = torch.compile(network, mode=compile_mode, dynamic=False) if compile_mode else network
    recorder = ShapeRecorder(compiled, network)
    denoiser.network = recorder
    params = sum(p.numel() for p in network.parameters())
    return BenchModel(spec, denoiser, recorder, args, params, loaded=loaded)


# ------------------------------------------------------------------------------------ FLOPs

def forward_flops(args: MDMArgs, rows: int, frames: int, attention: bool = True) -> float:
    """Floating-point operations of one network forward on ``rows`` pieces of ``frames`` frames.

    Counts multiply-adds as 2 FLOPs: input/output projections, time and text embeddings, and per
    layer the q/k/v/out projections, the attention scores and their product with V, and the
    feed-forward block (trans_dec adds cross-attention to its one condition token). Padded tokens
    are counted: they are computed. Layer norms, softmax and GELU are left out (< 1%).
    ``attention=False`` leaves out the two attention products (the matmuls with weights only).
    """
    d, ff, D = args.latent_dim, args.ff_size, args.feature_dim
    S = frames + (1 if args.arch == "trans_enc" or args.emb_trans_dec else 0)
    per_layer = 2 * S * (4 * d * d + 2 * d * ff) + (4 * S * S * d if attention else 0)
    if args.arch == "trans_dec":
        # cross-attention: q/out projections, k/v of the one condition token, scores and values
        per_layer += 2 * S * 2 * d * d + 2 * 2 * d * d + (4 * S * d if attention else 0)
    io = 2 * frames * 2 * D * d + 2 * 2 * d * d + 2 * args.text_dim * d
    return float(rows) * (args.layers * per_layer + io)


def recorded_flops(args: MDMArgs, calls: Sequence[tuple[int, int, bool]]) -> float:
    """FLOPs of recorded calls; a call under autograd (reconstruction) adds its backward (2x)."""
    return sum(forward_flops(args, b, n) * (3 if grad else 1) for b, n, grad in calls)


def gemm_rate(device: torch.device, dtype: torch.dtype, m: int = 4096, k: int = 512, n: int = 1024,
              seconds: float = 1.0) -> float:
    """Measured FLOP/s of the model's dominant matmul shape (tokens x 512 -> 1024)."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        count += 10
        _sync(device)
    return 2.0 * m * k * n * count / (time.perf_counter() - start)


def nominal_peak(device: torch.device, dtype: str, tf32: bool) -> Optional[float]:
    """Vendor peak FLOP/s for this GPU and dtype, or None when unknown (CPUs included)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, tf, fp32) in NOMINAL_PEAK_TFLOPS.items():
        if key in name:
            return 1e12 * (half if dtype in ("bf16", "fp16") else tf if tf32 else fp32)
    return None


# ------------------------------------------------------------------------------------ memory

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or on CPU the peak-RSS growth.

    CPU: freed heap is returned to the system (``malloc_trim``), the kernel's peak-RSS counter
    is reset (``/proc/self/clear_refs``), and the result is ``VmHWM - VmRSS before``: what the
    block made resident, allocator slack included. ``None`` when the counters are unavailable.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: Optional[int] = None
        self.method = ("cuda max_memory_allocated - allocated before" if device.type == "cuda"
                       else "peak RSS growth (VmHWM after clear_refs, minus VmRSS before)")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self._base = _proc_status_kib("VmRSS")
            except OSError:
                self._base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._base is not None:
            peak = _proc_status_kib("VmHWM")
            self.bytes = None if peak is None else max(0, peak - self._base) * 1024


# ------------------------------------------------------------------------------------ sync audit

HOST_READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "nonzero",
              "masked_select", "unique", "unique_consecutive", "argwhere", "nonzero_static"}
HOST_WRITES = {"tensor", "as_tensor", "from_numpy", "asarray"}
DEVICE_MOVES = {"to", "cpu", "cuda"}


class HostSyncAudit(TorchFunctionMode):
    """Records torch calls that would make the host wait for a GPU, per sampling step.

    * host reads: a tensor's value read by Python (``bool``, ``float``, ``int``, ``.item()``,
      ``.tolist()``, ``nonzero``, boolean-mask indexing, ...): a device-to-host copy and a sync;
    * host writes: tensors built from Python data (``torch.tensor``, ``as_tensor``): on a GPU a
      pageable host-to-device copy, which PyTorch completes synchronously;
    * device moves: ``.to(device)`` / ``.cpu()`` with an explicit device (a copy unless the tensor
      is already there; on a CPU-only run this cannot be told apart, so they are listed apart).

    Only calls made from this toolkit's files are recorded, with their call site; ``step`` is set
    by the sampler callback.
    """

    def __init__(self) -> None:
        super().__init__()
        self.step = -1
        self.events: list[dict] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        kind = None
        if name in HOST_READS:
            kind = "host_read"
        elif name == "__getitem__" and len(args) > 1 and _has_bool_index(args[1]):
            kind = "host_read"
        elif name in HOST_WRITES:
            kind = "host_write"
        elif name in DEVICE_MOVES and (name != "to" or _moves_device(args[1:], kwargs)):
            kind = "device_move"
        if kind is not None:
            site = _call_site()
            if site is not None:
                self.events.append({"step": self.step, "kind": kind, "call": name, "site": site})
        return func(*args, **kwargs)

    def per_step(self, kind: str, first: int = 1) -> dict[str, int]:
        """Call sites of ``kind`` events in steps >= ``first`` (after the one-off setup), with counts."""
        out: dict[str, int] = {}
        for e in self.events:
            if e["kind"] == kind and e["step"] >= first:
                key = f"{e['call']} @ {e['site']}"
                out[key] = out.get(key, 0) + 1
        return out


def _has_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in items)


def _moves_device(args, kwargs) -> bool:
    targets = list(args) + [kwargs.get("device")]
    return any(isinstance(a, (torch.device, str)) or (isinstance(a, Tensor)) for a in targets if a is not None)


def _call_site() -> Optional[str]:
    """file:line:function of the innermost caller inside motion_collage/ or mdm_adapter/ (not this file)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if ("motion_collage" in path or "mdm_adapter" in path) and not path.endswith("bench.py"):
            rel = os.path.relpath(path, REPO_ROOT)
            return f"{rel}:{frame.f_lineno}:{frame.f_code.co_name}"
        if path.endswith("bench.py"):
            return None
        frame = frame.f_back
    return None


# ------------------------------------------------------------------------------------ runs

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
    tokens_per_step: float  # network tokens (rows x (frames + 1)) averaged over steps
    frame_evaluations: int
    flops: float
    achieved_flops_per_s: float
    peak_memory_bytes: Optional[int]
    extra: dict = field(default_factory=dict)


def method_options(method: str, guidance: Optional[float]) -> dict:
    """Each method's settings in the benchmark (single prompt, 1 s overlaps, 50% AR windows)."""
    base = {"guidance": guidance}
    if method == "collage":
        return {**base, "overlap": OVERLAP, "transition": "prompt"}
    if method == "average":
        return {**base, "overlap": OVERLAP}
    if method == "doubletake":
        return {**base, "handshake": OVERLAP, "blend": 10}
    if method == "reconstruction":
        return {**base, "weight": 1.0}
    return base


def make_inputs(model: BenchModel, frames: int, batch: int, steps: int, device: torch.device,
                seed: int = 0) -> tuple[list, Tensor, SamplingSetup]:
    rows = [[(PROMPT, frames)] for _ in range(batch)]
    sigmas = ddim_sigmas(model.schedule, steps)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = prior_noise((batch, frames, model.args.feature_dim), float(sigmas[0]), gen).to(device)
    setup = SamplingSetup(sample_ddim, sigmas, {"eta": 0.0})
    return rows, noise, setup


def generate(model: BenchModel, method: str, frames: int, batch: int, steps: int, device: torch.device,
             dtype: str, guidance: Optional[float] = None, callback=None, seed: int = 0):
    """One generation; returns the :class:`~motion_collage.methods.Generation`."""
    rows, noise, setup = make_inputs(model, frames, batch, steps, device, seed)
    if callback is not None:
        setup = SamplingSetup(setup.sampler, setup.sigmas, {**setup.kwargs, "callback": callback})
    autocast = (torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype != "fp32" else contextlib.nullcontext())
    with autocast:
        return METHODS[method](model.denoiser, rows, noise, setup, max_frames=model.max_frames,
                               **method_options(method, guidance))


def timed_run(model: BenchModel, method: str, duration_s: float, batch: int, steps: int, device: torch.device,
              dtype: str, repeats: int = 1, warmup_steps: int = 1) -> RunResult:
    """Warm up (same shapes, ``warmup_steps`` steps), then time ``repeats`` runs; median wall time."""
    frames = int(round(duration_s * FPS))
    warmup = None
    if warmup_steps > 0:
        start = time.perf_counter()
        generate(model, method, frames, batch, min(warmup_steps, steps), device, dtype)
        _sync(device)
        warmup = time.perf_counter() - start
    times = []
    gen = None
    for r in range(max(1, repeats)):
        model.recorder.calls.clear()
        calls_before = model.denoiser.network_calls
        with PeakMemory(device) as mem:
            _sync(device)
            start = time.perf_counter()
            gen = generate(model, method, frames, batch, steps, device, dtype)
            _sync(device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    calls = list(model.recorder.calls)
    flops = recorded_flops(model.args, calls)
    tokens = sum(b * (n + 1) for b, n, _ in calls) / steps
    return RunResult(
        method=method, duration_s=duration_s, frames=frames, batch=batch, steps=steps, seconds=seconds,
        seconds_all=times, seconds_min=min(times), warmup_seconds=warmup, latency_per_motion_s=seconds / batch, sequential_calls=gen.sequential_calls,
        network_calls=model.denoiser.network_calls - calls_before,
        network_rows_per_call_max=max((b for b, _, _ in calls), default=0), tokens_per_step=tokens,
        frame_evaluations=gen.frame_evaluations, flops=flops, achieved_flops_per_s=flops / seconds,
        peak_memory_bytes=mem.bytes, extra={k: v for k, v in gen.extra.items() if isinstance(v, (int, float, list))})


# ------------------------------------------------------------------------------------ sections

def audit_collage(model: BenchModel, frames: int, device: torch.device, dtype: str,
                  guidance: Optional[float], steps: int = 3) -> dict:
    """Host reads/writes per step of the collage's sampling loop (after its first step)."""
    audit = HostSyncAudit()

    def mark(i, *_):  # called after step i's network call: later calls belong to step i + 1
        audit.step = i + 1

    audit.step = 0
    with audit:
        rows, noise, setup = make_inputs(model, frames, 1, steps, device)

        def sampler(*a, **kw):
            out = sample_ddim(*a, **kw, callback=mark)
            audit.step = -2  # after the loop: results are read back once, on purpose
            return out

        METHODS["collage"](model.denoiser, rows, noise, SamplingSetup(sampler, setup.sigmas, setup.kwargs),
                           max_frames=model.max_frames, **method_options("collage", guidance))
    return {"guidance_argument": guidance, "steps": steps,
            "host_reads_after_first_step": audit.per_step("host_read"),
            "host_writes_after_first_step": audit.per_step("host_write"),
            "device_moves_after_first_step": audit.per_step("device_move"),
            "first_step_host_reads": audit.per_step("host_read", first=0)}


def chunking_check(model: BenchModel, frames: int, device: torch.device, rows_per_call: int = 3,
                   steps: int = 2) -> dict:
    """Collage with the piece batch in chunks of ``rows_per_call`` rows, and in 2 length buckets,
    against one call per step."""
    saved = model.denoiser.max_rows_per_call, model.denoiser.length_buckets
    variants = {"one call": (None, 1), f"chunks of {rows_per_call} rows": (rows_per_call, 1), "2 length buckets": (None, 2)}
    outs, calls = {}, {}
    try:
        for name, (chunk, buckets) in variants.items():
            model.denoiser.max_rows_per_call, model.denoiser.length_buckets = chunk, buckets
            before = model.denoiser.network_calls
            outs[name] = generate(model, "collage", frames, 1, steps, device, "fp32").motion
            calls[name] = model.denoiser.network_calls - before
    finally:
        model.denoiser.max_rows_per_call, model.denoiser.length_buckets = saved
    ref = outs["one call"]
    return {"frames": frames, "steps": steps, "rows_per_call": rows_per_call,
            "network_calls_unchunked": calls["one call"], "network_calls_chunked": calls[f"chunks of {rows_per_call} rows"],
            "network_calls_bucketed": calls["2 length buckets"],
            "max_abs_diff": float((outs[f"chunks of {rows_per_call} rows"] - ref).abs().max()),
            "max_abs_diff_bucketed": float((outs["2 length buckets"] - ref).abs().max())}


def numerics_check(model: BenchModel, frames: int, steps: int, device: torch.device, low: str) -> dict:
    """Deviation of a low-precision collage (autocast ``low``) from fp32, same noise and steps."""
    ref = generate(model, "collage", frames, 1, steps, device, "fp32").motion.float()
    out = generate(model, "collage", frames, 1, steps, device, low).motion.float()
    err = out - ref
    return {"dtype": low, "frames": frames, "steps": steps, "max_abs_diff": float(err.abs().max()),
            "rel_rms_diff": float(err.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()),
            "reference_rms": float(ref.pow(2).mean().sqrt())}


QUICKSTART = (("a person walks forward", 80), ("a person waves the right hand", 80), ("a person runs", 80))


def quickstart_time(model: BenchModel, steps: int, repeats: int, device: torch.device, dtype: str) -> dict:
    """The README quickstart's generation: 3 prompts x 4 s, collage with 1 s null overlaps, DDIM.

    With a loaded model (``default`` or a path) the whole ``generate_motions`` path is timed
    (sampling, de-normalisation, joints); otherwise the collage sampling alone.
    """
    rows = [list(QUICKSTART)]
    options = {"overlap": OVERLAP}
    if model.loaded is not None:
        from .pipeline import generate_motions

        def once(n):
            generate_motions(model.loaded, rows, steps=n, guidance=GUIDANCE, method_options=options, dtype=dtype)
        what = "pipeline.generate_motions (sampling + joints)"
    else:
        def once(n):
            sigmas = ddim_sigmas(model.schedule, n)
            noise = prior_noise((1, 240, model.args.feature_dim), float(sigmas[0]),
                                torch.Generator().manual_seed(0)).to(device)
            autocast = (torch.autocast(device.type, dtype=DTYPES[dtype]) if dtype != "fp32"
                        else contextlib.nullcontext())
            with autocast:
                METHODS["collage"](model.denoiser, rows, noise, SamplingSetup(sample_ddim, sigmas, {}),
                                   max_frames=model.max_frames, **options)
        what = "collage sampling only"
    once(1)
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        once(steps)
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"segments": "3 x 4 s", "steps": steps, "dtype": dtype, "timed": what,
            "seconds": statistics.median(times), "seconds_min": min(times), "seconds_all": times}


def ratios(results: Sequence[RunResult]) -> dict:
    """Latency ratios between methods measured in this run."""
    lat = {(r.method, r.duration_s): r.latency_per_motion_s for r in results if r.batch == 1}
    durations = sorted({d for _, d in lat})
    out: dict[str, Any] = {}
    for d in durations:
        if ("replacement", d) in lat and ("collage", d) in lat:
            out[f"replacement/collage @ {d:g}s"] = lat[("replacement", d)] / lat[("collage", d)]
    if durations and ("collage", durations[0]) in lat:
        for d in durations[1:]:
            if ("collage", d) in lat:
                out[f"collage {d:g}s / {durations[0]:g}s"] = lat[("collage", d)] / lat[("collage", durations[0])]
            if ("replacement", d) in lat and ("replacement", durations[0]) in lat:
                out[f"replacement {d:g}s / {durations[0]:g}s"] = (lat[("replacement", d)]
                                                                  / lat[("replacement", durations[0])])
    return out


# ------------------------------------------------------------------------------------ GPU estimate

# Accelerators for the analytic estimate: nominal dense bf16 / tf32 / fp32 peaks (FLOP/s) and HBM
# bandwidth (bytes/s), from the vendors' data sheets.
GPU_SPECS = {
    "h100": {"name": "H100 SXM5", "bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12, "hbm": 3.35e12},
    "h200": {"name": "H200", "bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12, "hbm": 4.8e12},
}
# Assumptions of the estimate (stated in the report): fraction of the peak a GEMM of these shapes
# reaches, fraction of the bandwidth, and the GPU time of the smallest kernel (launch to finish).
ASSUMED_GEMM_EFFICIENCY = 0.6
ASSUMED_BANDWIDTH_EFFICIENCY = 0.8
ASSUMED_KERNEL_FLOOR_S = 4e-6
NON_KERNEL_OPS = {"empty", "empty_like", "empty_strided", "detach", "alias", "lift_fresh", "_local_scalar_dense",
                  "set_", "resize_", "zeros", "new_empty", "new_empty_strided"}


class KernelCounter(TorchDispatchMode):
    """Counts ATen operations that would launch a device kernel (views and allocations excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in NON_KERNEL_OPS:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def bytes_per_call(args: MDMArgs, rows: int, frames: int, dtype_bytes: int) -> float:
    """Memory traffic of one forward: the weights once, and per layer and token the activations
    written and read back once (q/k/v, attention output, projection, residuals, norms, both
    feed-forward tensors and GELU: about ``9 d + 2 ff`` values each way). Attention scores are
    not stored (fused attention)."""
    d, ff = args.latent_dim, args.ff_size
    params = sum(p.numel() for p in _meta_network(args).parameters())
    tokens = rows * (frames + 1)
    return dtype_bytes * (params + 2 * tokens * args.layers * (9 * d + 2 * ff) + 2 * rows * frames * args.feature_dim)


_META_CACHE: dict = {}


def _meta_network(args: MDMArgs) -> MDM:
    key = json.dumps(args.to_dict(), sort_keys=True)
    if key not in _META_CACHE:
        with torch.device("meta"):
            _META_CACHE[key] = MDM.from_args(args)
    return _META_CACHE[key]


def host_time_per_kernel(skeleton: BenchModel, steps: int = 4) -> float:
    """Host time per kernel-launching op of an eager sampling step, measured on this CPU.

    A 2 s collage (one piece: nothing but dispatch) with the skeleton model on one thread, best
    of 5; divided by the ops the step would launch on a GPU.
    """
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generate(skeleton, "collage", 40, 1, steps, cpu, "fp32")
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            generate(skeleton, "collage", 40, 1, steps, cpu, "fp32")
            best = min(best, time.perf_counter() - start)
        counter = KernelCounter()
        with counter:
            generate(skeleton, "collage", 40, 1, steps, cpu, "fp32")
    finally:
        torch.set_num_threads(threads)
    return best / counter.kernels


def estimate_section(target: str, durations: Sequence[float], methods: Sequence[str], steps: int, dtype: str,
                     tf32: bool, throughput_batch: int, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Analytic GPU time of every (method, duration) for the release architecture.

    The shapes of every network call come from running the method with the ``skeleton`` model on
    the CPU (same graphs, rows and frames as the real model); the same run gives the host's
    dispatch time per step and, counted per op, the kernels per step. Per network call:
    ``max(kernels x floor, FLOPs / (peak x eff) + bytes / (bandwidth x eff))``; per step, the
    larger of that and the host time (the host queues kernels ahead while the GPU works).
    """
    spec = GPU_SPECS[target]
    peak = spec["bf16"] if dtype in ("bf16", "fp16") else spec["tf32"] if tf32 else spec["fp32"]
    dtype_bytes = 2 if dtype in ("bf16", "fp16") else 4
    official = MDMArgs()
    cpu = torch.device("cpu")
    skeleton = build_model("skeleton", cpu)
    host_per_kernel = host_time_per_kernel(skeleton)
    rows_out = []
    for duration in durations:
        for method in methods:
            progress(f"estimate {method} {duration:g}s")
            frames = int(round(duration * FPS))
            skeleton.recorder.calls.clear()
            counter = KernelCounter()
            with counter:
                gen = generate(skeleton, method, frames, 1, 2, cpu, "fp32")
            calls = list(skeleton.recorder.calls)
            host = counter.kernels / 2 * host_per_kernel
            per_call_kernels = counter.kernels / max(1, len(calls))
            gpu = launch_total = roof_total = 0.0
            for b, n, grad in calls:
                mult = 3 if grad else 1
                roof = mult * (forward_flops(official, b, n) / (peak * ASSUMED_GEMM_EFFICIENCY)
                               + bytes_per_call(official, b, n, dtype_bytes) / (spec["hbm"] * ASSUMED_BANDWIDTH_EFFICIENCY))
                launch = mult * per_call_kernels * ASSUMED_KERNEL_FLOOR_S
                gpu += max(launch, roof)
                launch_total, roof_total = launch_total + launch, roof_total + roof
            per_step_gpu = gpu / 2
            per_step = max(per_step_gpu, host)
            bound = ("host dispatch" if host >= per_step_gpu
                     else "kernel launches" if launch_total >= roof_total else "compute/memory")
            rows_out.append({
                "method": method, "duration_s": duration, "frames": frames,
                "sequential_calls_per_step": gen.sequential_calls / 2, "kernels_per_step": counter.kernels / 2,
                "flops_per_step": recorded_flops(official, calls) / 2,
                "bytes_per_step": sum(bytes_per_call(official, b, n, dtype_bytes) * (3 if g else 1)
                                      for b, n, g in calls) / 2,
                "host_dispatch_per_step_s": host, "gpu_per_step_s": per_step_gpu,
                "estimated_latency_s": per_step * steps, "bound": bound,
            })
    # Throughput: the 24 s collage at a large batch; every row scales with the batch.
    frames = int(round(24 * FPS))
    generate(skeleton, "collage", frames, 1, 2, cpu, "fp32")
    skeleton.recorder.calls.clear()
    generate(skeleton, "collage", frames, 1, 2, cpu, "fp32")
    (b, n, _), = set(skeleton.recorder.calls)
    B = throughput_batch
    flops = forward_flops(official, b * B, n) * steps
    seconds = steps * (forward_flops(official, b * B, n) / (peak * ASSUMED_GEMM_EFFICIENCY)
                       + bytes_per_call(official, b * B, n, dtype_bytes) / (spec["hbm"] * ASSUMED_BANDWIDTH_EFFICIENCY))
    activation_bytes = dtype_bytes * b * B * (n + 1) * (3 * official.latent_dim + official.ff_size) * 2
    throughput = {"batch": B, "duration_s": 24, "rows_per_call": b * B, "frames_per_row": n, "flops": flops,
                  "estimated_seconds": seconds, "motions_per_s": B / seconds,
                  "flops_at_peak_seconds": flops / peak,
                  "estimated_peak_activation_bytes": activation_bytes}
    return {"target": spec["name"], "dtype": dtype, "tf32": tf32, "steps": steps, "peak_flops_per_s": peak,
            "hbm_bytes_per_s": spec["hbm"],
            "assumptions": {"gemm_efficiency": ASSUMED_GEMM_EFFICIENCY,
                            "bandwidth_efficiency": ASSUMED_BANDWIDTH_EFFICIENCY,
                            "kernel_floor_s": ASSUMED_KERNEL_FLOOR_S,
                            "host_dispatch": "kernels per step x host time per kernel-launching op, measured on "
                                             "this machine's CPU (eager PyTorch, skeleton model, one thread, best of 5)",
                            "host_s_per_kernel": host_per_kernel},
            "latency": rows_out, "throughput": throughput,
            "note": "ANALYTIC ESTIMATE, not a GPU measurement"}


# ------------------------------------------------------------------------------------ report

def environment(device: torch.device, args: argparse.Namespace, model: BenchModel) -> dict:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "dtype": args.dtype, "tf32": bool(args.tf32), "compile": args.compile,
        "steps": args.steps, "sampler": "ddim (eta 0)", "guidance": GUIDANCE,
        "torch": torch.__version__, "python": platform.python_version(),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "model": model.name, "model_parameters": model.parameters,
        "architecture": {k: getattr(model.args, k) for k in ("arch", "layers", "latent_dim", "ff_size", "num_heads",
                                                             "diffusion_steps", "text_encoder_type")},
        "text_encoder": "stand-in (fixed random features, encoded once per prompt, outside the loop)"
                        if model.loaded is None else model.args.text_encoder_type,
        "memory_method": PeakMemory(device).method,
        "timing": f"median of {args.repeats} after a {args.warmup_steps}-step warm-up with the same shapes",
        "flops": "analytic, from the shapes of every network call (padded tokens included)",
        "max_rows_per_call": args.max_rows_per_call, "length_buckets": args.length_buckets,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def format_table(report: dict) -> str:
    env = report["environment"]
    lines = [f"motion-collage bench  {env['date']}  {env['device']} ({env['device_name']}, {env['cpu_threads']} threads)"
             f"  {env['dtype']}  {env['steps']} steps  torch {env['torch']}  commit {env['git_commit'][:10]}"
             f"{' (dirty)' if env['git_dirty'] else ''}  model {env['model']}",
             "", f"{'method':<15}{'dur s':>6}{'batch':>6}{'s/motion':>10}{'s/step':>9}{'seq calls':>10}{'net calls':>10}"
             f"{'rows':>6}{'frame evals':>12}{'GFLOP':>10}{'GFLOP/s':>9}{'peak MiB':>9}"]
    for r in report["latency"] + report.get("throughput", []):
        mem = "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2 ** 20:.0f}"
        lines.append(f"{r['method']:<15}{r['duration_s']:>6g}{r['batch']:>6}{r['latency_per_motion_s']:>10.3f}"
                     f"{r['seconds'] / r['steps']:>9.3f}{r['sequential_calls']:>10}{r['network_calls']:>10}"
                     f"{r['network_rows_per_call_max']:>6}{r['frame_evaluations']:>12}{r['flops'] / 1e9:>10.1f}"
                     f"{r['achieved_flops_per_s'] / 1e9:>9.1f}{mem:>9}")
    if report.get("ratios"):
        lines += ["", "ratios (same run):"] + [f"  {k}: {v:.2f}" for k, v in report["ratios"].items()]
    for t in report.get("throughput", []):
        lines.append(f"throughput: {t['batch']} motions of {t['duration_s']:g} s: "
                     f"{t['extra']['motions_per_s']:.3f} motions/s, {t['extra']['frames_per_s']:.0f} frames/s, "
                     f"{t['achieved_flops_per_s'] / 1e12:.3f} TFLOP/s"
                     + "".join(f", {v:.1%} of {k}" for k, v in t['extra'].get('fraction_of', {}).items()))
    for key in ("peaks", "sync_audit", "chunking", "numerics", "quickstart", "long"):
        if report.get(key):
            lines.append(f"{key}: {json.dumps(report[key])}")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = report["environment"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    by_method: dict[str, list] = {}
    for r in report["latency"]:
        by_method.setdefault(r["method"], []).append(r)
    for m, rs in by_method.items():
        rs = sorted(rs, key=lambda r: r["duration_s"])
        d = [r["duration_s"] for r in rs]
        ax1.plot(d, [r["latency_per_motion_s"] for r in rs], marker="o", label=m)
        mem = [r["peak_memory_bytes"] for r in rs]
        if all(v is not None for v in mem):
            ax2.plot(d, [v / 2 ** 20 for v in mem], marker="o", label=m)
    for ax, title in ((ax1, "latency per motion (s)"), (ax2, "peak memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("motion duration (s)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"{env['device']} ({env['device_name']}), model {env['model']}, {env['dtype']}, "
                 f"{env['steps']} DDIM steps, batch 1, {env['date'][:10]}, commit {env['git_commit'][:8]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m motion_collage.bench",
                                description="Latency, throughput, memory and call counts of the generation methods.")
    p.add_argument("--model", default="official",
                   help="official (release architecture, random weights), default-arch (the default model's sizes, "
                        "random weights), default (save/default), tiny, or a checkpoint path")
    p.add_argument("--durations", nargs="+", type=float, default=[10, 24, 60, 120], help="motion durations in seconds")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(ALL_METHODS))
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--batch", nargs="+", type=int, default=[1], help="batch sizes for the latency table (default 1)")
    p.add_argument("--throughput-batch", type=int, default=None,
                   help="collage batch for the throughput figure (default 1000 on CUDA, 4 on CPU; 0 = skip)")
    p.add_argument("--throughput-duration", type=float, default=24.0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast dtype of the network")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA only)")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the network (MODE: default, reduce-overhead, max-autotune)")
    p.add_argument("--max-rows-per-call", type=int, default=None, help="chunk the piece batch (memory bound)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--length-buckets", type=int, default=1,
                   help="run the piece rows in up to this many length groups, each cut to its longest row "
                        "(fewer FLOPs, more network calls per step; default 1 = one call)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per point (default 3 on CUDA, 1 on CPU)")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps of the untimed warm-up run (0 = none)")
    p.add_argument("--long", type=float, default=None, metavar="SECONDS",
                   help="also run one collage of this duration (e.g. 600) and report its time and memory")
    p.add_argument("--long-steps", type=int, default=None, help="steps of the --long run (default --steps)")
    p.add_argument("--numerics", nargs="*", choices=("bf16", "fp16"), default=None,
                   help="deviation of low-precision collages from fp32 (default: bf16)")
    p.add_argument("--numerics-steps", type=int, default=None, help="steps of the numerics runs (default min(steps, 10))")
    p.add_argument("--quickstart", nargs="*", choices=list(DTYPES), default=None,
                   help="time the README quickstart generation in these dtypes (default: fp32 for the default model)")
    p.add_argument("--estimate", choices=sorted(GPU_SPECS), default=None,
                   help="only an analytic estimate for this GPU (release architecture; shapes and host overhead "
                        "from skeleton runs on this machine); no timing of the real-size network")
    p.add_argument("--quickstart-steps", type=int, default=50, help="DDIM steps of the quickstart timing (default 50)")
    p.add_argument("--no-checks", action="store_true", help="skip the sync audit, chunking and numerics sections")
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, CPU, 2 steps, durations 10 24 s, batch 2 throughput: a seconds-long check")
    p.add_argument("--tag", default=None, help="file name stem of the outputs (default from device/model/dtype/steps)")
    p.add_argument("--out", default=str(REPO_ROOT / "docs" / "performance"), help="output folder (JSON + PNG)")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.smoke:
        args.model, args.device, args.steps = "tiny", "cpu", 2
        if args.durations == [10, 24, 60, 120]:
            args.durations = [10, 24]
        args.throughput_batch = 2 if args.throughput_batch is None else args.throughput_batch
        args.numerics = [] if args.numerics is None else args.numerics
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    if args.throughput_batch is None:
        args.throughput_batch = 1000 if (args.device == "cuda" or args.estimate) else 4
    if args.repeats is None:
        args.repeats = 3 if args.device == "cuda" else 1
    if args.numerics is None:
        args.numerics = ["bf16"]
    if args.quickstart is None:
        args.quickstart = ["fp32"] if args.model in ("default", "default-arch") else []
    if args.steps < 1:
        raise SystemExit(f"error: --steps must be >= 1, got {args.steps}")
    if args.tag is None:
        args.tag = f"bench-{args.device}-{Path(args.model).name}-{args.dtype}{'-tf32' if args.tf32 else ''}-{args.steps}steps"
        if args.compile:
            args.tag += f"-compile-{args.compile}"
        if args.length_buckets > 1:
            args.tag += f"-buckets{args.length_buckets}"
        if args.max_rows_per_call:
            args.tag += f"-chunk{args.max_rows_per_call}"
    return args


def run(args: argparse.Namespace, progress: Callable[[str], None] = lambda s: None) -> dict:
    """All sections; returns the report (JSON-ready)."""
    device = torch.device(args.device)
    if args.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(args.model, device, args.compile, args.max_rows_per_call, length_buckets=args.length_buckets)
    report: dict[str, Any] = {"environment": environment(device, args, model)}
    compute_dtype = DTYPES[args.dtype]
    measured = gemm_rate(device, compute_dtype, seconds=0.5 if args.smoke else 2.0)
    nominal = nominal_peak(device, args.dtype, args.tf32)
    report["peaks"] = {"measured_gemm_flops_per_s": measured, "nominal_peak_flops_per_s": nominal,
                       "note": "measured at the start and at the end of the run; fractions use the larger",
                       "gemm": f"[4096 x 512] @ [512 x 1024] in {args.dtype}"}

    latency = []
    for batch in args.batch:
        for duration in sorted(args.durations):
            for method in args.methods:
                progress(f"{method} {duration:g}s batch {batch}")
                latency.append(timed_run(model, method, duration, batch, args.steps, device, args.dtype,
                                         args.repeats, args.warmup_steps))
    report["latency"] = [dataclasses.asdict(r) for r in latency]
    report["ratios"] = ratios(latency)

    if args.throughput_batch:
        progress(f"throughput: collage {args.throughput_duration:g}s batch {args.throughput_batch}")
        t = timed_run(model, "collage", args.throughput_duration, args.throughput_batch, args.steps, device,
                      args.dtype, args.repeats, args.warmup_steps)
        t.extra["motions_per_s"] = t.batch / t.seconds
        t.extra["frames_per_s"] = t.batch * t.frames / t.seconds
        t.extra["fraction_of"] = {"measured GEMM rate": t.achieved_flops_per_s / measured}
        if nominal:
            t.extra["fraction_of"]["nominal peak"] = t.achieved_flops_per_s / nominal
        report["throughput"] = [dataclasses.asdict(t)]

    if args.long:
        progress(f"long: collage {args.long:g}s")
        r = timed_run(model, "collage", args.long, 1, args.long_steps or args.steps, device, args.dtype, 1, 0)
        report["long"] = {k: v for k, v in dataclasses.asdict(r).items() if k != "extra"}

    # The GEMM rate again at the end (a shared machine's speed drifts); the larger one is the reference.
    again = gemm_rate(device, compute_dtype, seconds=0.5 if args.smoke else 2.0)
    report["peaks"]["measured_gemm_flops_per_s_end"] = again
    if again > measured and report.get("throughput"):
        for t in report["throughput"]:
            t["extra"]["fraction_of"]["measured GEMM rate"] = t["achieved_flops_per_s"] / again

    if not args.no_checks:
        first = int(round(min(args.durations) * FPS))
        progress("sync audit")
        report["sync_audit"] = [audit_collage(model, first, device, "fp32", g) for g in (None, GUIDANCE)]
        progress("chunking")
        report["chunking"] = chunking_check(model, first, device)
        report["numerics"] = []
        for low in args.numerics:
            progress(f"numerics {low}")
            report["numerics"].append(numerics_check(model, first, args.numerics_steps or min(args.steps, 10),
                                                     device, low))

    if args.quickstart:
        report["quickstart"] = []
        for dtype in args.quickstart:
            progress(f"quickstart {dtype}")
            report["quickstart"].append(quickstart_time(model, args.quickstart_steps, args.repeats, device, dtype))
    return report


def format_estimate(est: dict) -> str:
    lines = [f"ANALYTIC ESTIMATE (not a measurement) for {est['target']}, {est['dtype']}"
             f"{' + tf32' if est['tf32'] else ''}, {est['steps']} steps, release architecture",
             f"{'method':<15}{'dur s':>6}{'seq/step':>9}{'kernels':>9}{'GFLOP/step':>11}{'MB/step':>9}"
             f"{'host ms':>9}{'gpu ms':>8}{'est. s':>8}  bound"]
    for r in est["latency"]:
        lines.append(f"{r['method']:<15}{r['duration_s']:>6g}{r['sequential_calls_per_step']:>9g}"
                     f"{r['kernels_per_step']:>9.0f}{r['flops_per_step'] / 1e9:>11.1f}{r['bytes_per_step'] / 1e6:>9.0f}"
                     f"{r['host_dispatch_per_step_s'] * 1e3:>9.2f}{r['gpu_per_step_s'] * 1e3:>8.2f}"
                     f"{r['estimated_latency_s']:>8.3f}  {r['bound']}")
    t = est["throughput"]
    lines.append(f"throughput: {t['batch']} x 24 s: {t['flops'] / 1e15:.2f} PFLOP, {t['estimated_seconds']:.1f} s "
                 f"({t['motions_per_s']:.0f} motions/s; {t['flops_at_peak_seconds']:.1f} s at 100% of peak); "
                 f"activations about {t['estimated_peak_activation_bytes'] / 2 ** 30:.1f} GiB")
    return "\n".join(lines)


def save(report: dict, out: Path, tag: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{tag}.json", out / f"{tag}.png"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(json_path)
    if len({r["duration_s"] for r in report.get("latency", [])}) > 1:
        plot(report, png_path)
    return json_path, png_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True)  # noqa: E731
    if args.estimate:
        skeleton = build_model("skeleton", torch.device("cpu"))
        report = {"environment": environment(torch.device("cpu"), args, skeleton),
                  "estimate": estimate_section(args.estimate, args.durations, args.methods, args.steps, args.dtype,
                                               args.tf32, args.throughput_batch, progress)}
        tag = (f"estimate-{args.estimate}-{args.dtype}{'-tf32' if args.tf32 else ''}-{args.steps}steps"
               if args.tag.startswith("bench-") else args.tag)
        json_path, _ = save(report, Path(args.out), tag)
        print(format_estimate(report["estimate"]))
        print(f"wrote {json_path}")
        return 0
    report = run(args, progress=progress)
    json_path, png_path = save(report, Path(args.out), args.tag)
    print(format_table(report))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
