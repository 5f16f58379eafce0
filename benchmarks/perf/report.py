"""The report: the run's environment, ratios between methods, printed tables, plot and files."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Sequence

import torch

from motion_core import defaults
from motion_core.atomic import staged_file

from .memory import PeakMemory
from .runs import RunResult
from .zoo import REPO_ROOT, BenchModel


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def environment(device: torch.device, args: argparse.Namespace, model: BenchModel) -> dict:
    """Date, device, settings, versions, commit and model of the run (the report's header)."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "dtype": args.dtype, "tf32": bool(args.tf32), "compile": args.compile,
        "steps": args.steps, "sampler": "ddim (eta 0)", "guidance": defaults.GUIDANCE,
        "torch": torch.__version__, "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "model": model.name, "model_parameters": model.parameters,
        "architecture": {k: getattr(model.args, k) for k in ("arch", "layers", "latent_dim", "ff_size", "num_heads",
                                                             "diffusion_steps", "text_encoder_type")},
        "text_encoder": "stand-in (fixed random features, encoded once per prompt, outside the loop)"
                        if model.loaded is None else model.args.text_encoder_type,
        "memory_method": PeakMemory(device).method,
        "timing": f"median of {args.repeats} after a {args.warmup_steps}-step warm-up with the same shapes",
        "flops": "analytic, from the shapes of every network call (padded tokens included)",
        "max_rows_per_call": args.max_rows_per_call, "length_buckets": args.length_buckets,
        "packing": model.denoiser.packing,
    }


def ratios(results: Sequence[RunResult]) -> dict:
    """Latency ratios between methods measured in this run (batch 1)."""
    lat = {(r.method, r.duration_s): r.latency_per_motion_s for r in results if r.batch == 1}
    durations = sorted({d for _, d in lat})
    out: dict[str, Any] = {}
    for d in durations:
        if ("replacement", d) in lat and ("collage", d) in lat:
            out[f"replacement/collage @ {d:g}s"] = lat[("replacement", d)] / lat[("collage", d)]
    if durations and ("collage", durations[0]) in lat:
        d0 = durations[0]
        for d in durations[1:]:
            if ("collage", d) in lat:
                out[f"collage {d:g}s / {d0:g}s"] = lat[("collage", d)] / lat[("collage", d0)]
            if ("replacement", d) in lat and ("replacement", d0) in lat:
                out[f"replacement {d:g}s / {d0:g}s"] = lat[("replacement", d)] / lat[("replacement", d0)]
    return out


def _table_row(r: dict) -> str:
    mem = "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2 ** 20:.0f}"
    return (f"{r['method']:<15}{r['duration_s']:>6g}{r['batch']:>6}{r['latency_per_motion_s']:>10.3f}"
            f"{r['seconds'] / r['steps']:>9.3f}{r['sequential_calls']:>10}{r['network_calls']:>10}"
            f"{r['network_rows_per_call_max']:>6}{r['frame_evaluations']:>12}{r['flops'] / 1e9:>10.1f}"
            f"{r['achieved_flops_per_s'] / 1e9:>9.1f}{mem:>9}")


def _throughput_line(t: dict) -> str:
    return (f"throughput: {t['batch']} motions of {t['duration_s']:g} s: "
            f"{t['extra']['motions_per_s']:.3f} motions/s, {t['extra']['frames_per_s']:.0f} frames/s, "
            f"{t['achieved_flops_per_s'] / 1e12:.3f} TFLOP/s"
            + "".join(f", {v:.1%} of {k}" for k, v in t['extra'].get('fraction_of', {}).items()))


def format_table(report: dict) -> str:
    """The measured report as printed: header, one line per timed point, ratios, other sections."""
    env = report["environment"]
    lines = [f"motion-collage bench  {env['date']}  {env['device']} ({env['device_name']}, {env['cpu_threads']} threads)"
             f"  {env['dtype']}  {env['steps']} steps  torch {env['torch']}  commit {env['git_commit'][:10]}"
             f"{' (dirty)' if env['git_dirty'] else ''}  model {env['model']}",
             "", f"{'method':<15}{'dur s':>6}{'batch':>6}{'s/motion':>10}{'s/step':>9}{'seq calls':>10}{'net calls':>10}"
             f"{'rows':>6}{'frame evals':>12}{'GFLOP':>10}{'GFLOP/s':>9}{'peak MiB':>9}"]
    lines += [_table_row(r) for r in report["latency"] + report.get("throughput", [])]
    if report.get("ratios"):
        lines += ["", "ratios (same run):"] + [f"  {k}: {v:.2f}" for k, v in report["ratios"].items()]
    lines += [_throughput_line(t) for t in report.get("throughput", [])]
    for key in ("peaks", "sync_audit", "chunking", "numerics", "quickstart", "long", "compile"):
        if report.get(key):
            lines.append(f"{key}: {json.dumps(report[key])}")
    if report.get("packing"):
        from .packing import format_packing
        lines.append(format_packing(report["packing"]))
    return "\n".join(lines)


def format_estimate(est: dict) -> str:
    """The analytic estimate as printed, labelled as an estimate."""
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


def plot(report: dict, path: Path) -> None:
    """Latency per motion and peak memory against duration, one line per method (PNG at ``path``)."""
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
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def save(report: dict, out: Path, tag: str) -> list[Path]:
    """Write ``<tag>.json`` (and ``<tag>.png`` when the latency has several durations) atomically
    (:mod:`motion_core.atomic`: a temporary beside each, renamed into place when complete; a killed
    earlier run's temporaries are removed first)."""
    paths = [out / f"{tag}.json"]
    with staged_file(paths[0]) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    if len({r["duration_s"] for r in report.get("latency", [])}) > 1:
        paths.append(out / f"{tag}.png")
        with staged_file(paths[1]) as tmp:
            plot(report, tmp)
    return paths


def wrote(paths: Sequence[Path]) -> str:
    """``wrote A`` or ``wrote A and B``."""
    return "wrote " + " and ".join(str(p) for p in paths)
