"""Padded rows against packed rows: one collage piece-denoiser call timed both ways (and in 2
length buckets), its x0 difference at real frames, tokens and analytic FLOPs."""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from motion_collage.methods import get_method

from .device import sync
from .flops import recorded_flops
from .runs import make_inputs
from .settings import FPS, frames as to_frames, method_options
from .zoo import BenchModel

# name -> (packing, length_buckets) of the piece denoiser
MODES = {"padded": ("off", 1), "packed": ("rows", 1), "2 length buckets": ("off", 2)}
# the other attention backends of a packed call (CUDA: varlen SDPA, compiled FlexAttention)
EXTRA_MODES = {"packed, nested": ("nested", 1), "packed, flex": ("flex", 1)}


class _Capture:
    """A piece denoiser that records the inputs of its calls (for replaying one of them)."""

    def __init__(self, denoiser) -> None:
        self.denoiser, self.inputs = denoiser, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.denoiser, name)

    def __call__(self, x, sigma, mask, cond):
        self.inputs.append((x, sigma, mask, cond))
        return self.denoiser(x, sigma, mask, cond)


def collage_call(model: BenchModel, frames: int, device: torch.device, steps: int = 2):
    """The inputs of the last piece-denoiser call of a ``steps``-step collage at batch 1."""
    capture = _Capture(model.denoiser)
    rows, noise, setup = make_inputs(model, frames, 1, steps, device)
    get_method("collage")(capture, rows, noise, setup, max_frames=model.max_frames, fps=FPS,
                          options=method_options("collage"))
    return capture.inputs[-1]


@torch.no_grad()
def packing_comparison(model: BenchModel, duration_s: float, device: torch.device, repeats: int = 3,
                       extra: bool = False) -> dict:
    """Each of :data:`MODES` (and with ``extra`` :data:`EXTRA_MODES`) on the same call: median
    seconds, calls, tokens, FLOPs, x0 difference. A mode that fails is reported, not raised."""
    den = model.denoiser
    saved = den.packing, den.length_buckets
    x, sigma, mask, cond = collage_call(model, to_frames(duration_s), device)
    out: dict[str, Any] = {"duration_s": duration_s, "pieces": x.shape[0], "frames_per_row": x.shape[1],
                           "real_frames": int(mask.sum()), "repeats": repeats, "modes": {}, "failed": {}}
    modes = {**MODES, **(EXTRA_MODES if extra else {})}
    results = {}
    try:
        for name, (packing, buckets) in list(modes.items()):
            den.packing, den.length_buckets = packing, buckets
            try:
                results[name] = den(x, sigma, mask, cond)  # warm-up (and the plan of this mode)
            except Exception as exc:  # noqa: BLE001  (a backend without a kernel here)
                out["failed"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                del modes[name]
                continue
            model.recorder.calls.clear()
            before = den.network_calls
            den(x, sigma, mask, cond)
            calls = list(model.recorder.calls)
            out["modes"][name] = {"network_calls": den.network_calls - before, "rows": sum(c.rows for c in calls),
                                  "tokens": sum(c.computed_tokens for c in calls),
                                  "flops": recorded_flops(model.args, calls)}
        times = {name: [] for name in modes}
        for _ in range(repeats):  # interleaved: a shared machine's load drifts alike for every mode
            for name, (packing, buckets) in modes.items():
                den.packing, den.length_buckets = packing, buckets
                sync(device)
                start = time.perf_counter()
                den(x, sigma, mask, cond)
                sync(device)
                times[name].append(time.perf_counter() - start)
    finally:
        den.packing, den.length_buckets = saved
    for name, mode in out["modes"].items():
        mode.update(seconds=statistics.median(times[name]), seconds_min=min(times[name]), seconds_all=times[name])
    real = mask[..., None]
    base = out["modes"]["padded"]
    for name, mode in out["modes"].items():
        mode["max_abs_diff_vs_padded"] = float(((results[name] - results["padded"]) * real).abs().max())
        mode["time_vs_padded"] = mode["seconds"] / base["seconds"]
        mode["min_time_vs_padded"] = mode["seconds_min"] / base["seconds_min"]
        mode["flops_vs_padded"] = mode["flops"] / base["flops"]
    return out


def format_packing(rows: list) -> str:
    """One line per (duration, mode)."""
    lines = ["packing (one collage piece-denoiser call, batch 1):"]
    for r in rows:
        for name, m in r["modes"].items():
            lines.append(f"  {r['duration_s']:>5g} s {name:<17} {m['seconds'] * 1e3:9.1f} ms  x{m['time_vs_padded']:.2f} time"
                         f" (min {m['seconds_min'] * 1e3:.1f} ms, x{m['min_time_vs_padded']:.2f})"
                         f"  {m['network_calls']} call(s)  {m['tokens']:>6} tokens  {m['flops'] / 1e9:8.2f} GFLOP"
                         f"  x{m['flops_vs_padded']:.2f} FLOPs  max |dx0| {m['max_abs_diff_vs_padded']:.1e}")
    return "\n".join(lines)
