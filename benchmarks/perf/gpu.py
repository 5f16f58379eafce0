"""``python -m benchmarks.perf.gpu --out DIR``: every goal of issue 18, measured on the GPU found.

Release architecture (trans_enc, latent 512, 8 layers, random weights: as fast as the released
checkpoint), 50 DDIM steps, guidance 2.5 with both branches in one batch, in fp32, TF32 and bf16
(autocast). Goals, each written to ``DIR/goals/<goal>-<precision>.json`` as soon as it is
measured (a rerun skips the goals already there unless ``--fresh``):

* ``latency``: the 24 s collage at batch 1, eager and through CUDA graphs (``cuda_graph``);
* ``scaling``: the collage at 10 s and 120 s, batch 1: the 120 s / 10 s ratio (goal <= 2);
* ``replacement``: replacement / collage at 60 s, batch 1 (goal >= 10);
* ``throughput``: 1,000 motions of 24 s in one batch (goal <= 20 s), with the achieved TFLOP/s and
  its fraction of the matmul rate measured now and of the nominal peak; steps are timed until
  ``--throughput-seconds`` and the 50-step time extrapolated from the per-step time (shapes are
  the same at every step), as the JSON says;
* ``agreement``: eager vs CUDA graph on a fixed-seed 24 s sample (max |difference|);
* ``packing``: one collage call padded, packed and in 2 length buckets at 24 s and 60 s;
* ``compile``: the 24 s latency with the network under ``torch.compile(mode="reduce-overhead")``
  instead of the denoiser's CUDA graph (bf16 only: it costs a compilation), compile time apart.

``DIR/summary.json`` and ``DIR/summary.png`` are rewritten after every goal, so an interrupted
run leaves a consistent partial summary. ``--budget-s`` (default 330) skips the goals that would
start after it. ``--quick``: the tiny model, 2 steps, batch 4, on whatever device (CPU included,
where TF32 is skipped and CUDA graphs are emulated): an end-to-end check of the command.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from mdm_adapter.graphs import EmulatedGraphs
from motion_core import defaults
from motion_core.atomic import staged_file
from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.devices import resolve_device

from .device import gemm_rate, nominal_peak, sync
from .flops import recorded_flops
from .packing import packing_comparison
from .report import environment
from .runs import autocast, generate
from .settings import frames as to_frames
from .zoo import BenchModel, build_model

PRECISIONS = ("fp32", "tf32", "bf16")
GOALS = ("latency", "scaling", "replacement", "throughput", "agreement", "packing", "compile")
COMPILE_PRECISION = "bf16"  # torch.compile(mode="reduce-overhead") is measured in one precision (compile time)
TARGETS = {"latency_24s_s": 0.15, "collage_120s_over_10s": 2.0, "replacement_over_collage_60s": 10.0,
           "throughput_1000x24s_s": 20.0}
Progress = Callable[[str], None]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m benchmarks.perf.gpu",
                      description="Every goal of issue 18 on this GPU: JSON per goal, summary JSON + PNG.")
    p.add_argument("--out", required=True, help="output folder (goal files, summary.json, summary.png)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--goals", nargs="+", choices=GOALS, default=list(GOALS))
    p.add_argument("--steps", type=int, default=defaults.STEPS, help=f"DDIM steps (default {defaults.STEPS})")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per latency point (median)")
    p.add_argument("--throughput-batch", type=int, default=1000)
    p.add_argument("--throughput-seconds", type=float, default=20.0,
                   help="time the throughput batch for at most about this long per precision, then extrapolate")
    p.add_argument("--budget-s", type=float, default=330.0, help="start no goal after this many seconds")
    p.add_argument("--fresh", action="store_true", help="measure again the goals already written in --out")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 steps, batch 4: an end-to-end check")
    return p


def resolve(parsed: argparse.Namespace) -> argparse.Namespace:
    args = argparse.Namespace(**vars(parsed))
    args.device = resolve_device(args.device)
    if args.quick:
        args.steps, args.repeats, args.throughput_batch, args.throughput_seconds = 2, 1, 4, 2.0
    for option in ("steps", "repeats", "throughput_batch"):
        if getattr(args, option) < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be an integer >= 1, got {getattr(args, option)}")
    if not args.throughput_seconds > 0 or not args.budget_s > 0:
        raise UsageError("--throughput-seconds and --budget-s must be positive seconds")
    if not args.device.startswith("cuda") and not args.quick:
        raise UsageError(f"no CUDA device here ({args.device}); this command measures a GPU "
                         "(use --quick for an end-to-end check on the CPU)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    return args


# ------------------------------------------------------------------------------------ precision

@contextlib.contextmanager
def precision(name: str, device: torch.device):
    """TF32 matmuls on for ``tf32`` only; bf16 autocast for ``bf16``."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        with autocast(device, "bf16" if name == "bf16" else "fp32"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def compute_dtype(name: str) -> torch.dtype:
    return torch.bfloat16 if name == "bf16" else torch.float32


# ------------------------------------------------------------------------------------ timing

def _generate(model: BenchModel, method: str, seconds: float, batch: int, steps: int, device: torch.device,
              seed: int = 0):
    # dtype "fp32" here: the precision context around the call sets autocast and TF32
    return generate(model, method, to_frames(seconds), batch, steps, device, "fp32", seed=seed)


def timed(model: BenchModel, method: str, seconds: float, batch: int, steps: int, device: torch.device,
          repeats: int, graph: bool) -> dict:
    """Median wall time of a generation after a one-step warm-up (which also captures the graph)."""
    den = model.denoiser
    den.cuda_graph = graph
    try:
        _generate(model, method, seconds, batch, 1, device)
        sync(device)
        times, calls = [], []
        for _ in range(repeats):
            model.recorder.calls.clear()
            sync(device)
            start = time.perf_counter()
            _generate(model, method, seconds, batch, steps, device)
            sync(device)
            times.append(time.perf_counter() - start)
            calls = list(model.recorder.calls)
    finally:
        den.cuda_graph = False
        den.release_graphs()
    flops = recorded_flops(model.args, calls) if not graph else None  # replays are not recorded
    return {"method": method, "duration_s": seconds, "batch": batch, "steps": steps, "cuda_graph": graph,
            "seconds": statistics.median(times), "seconds_all": times, "flops": flops}


GRAPH_MODES = (False, True)  # eager, then through CUDA graphs


def goal_latency(model, device, args, name) -> dict:
    rows = {("graph" if g else "eager"): timed(model, "collage", 24.0, 1, args.steps, device, args.repeats, g)
            for g in GRAPH_MODES}
    best = min(r["seconds"] for r in rows.values())
    return {"runs": rows, "best_s": best, "target_s": TARGETS["latency_24s_s"], "met": best <= TARGETS["latency_24s_s"]}


def goal_scaling(model, device, args, name) -> dict:
    out = {}
    for g in GRAPH_MODES:
        mode = "graph" if g else "eager"
        short = timed(model, "collage", 10.0, 1, args.steps, device, args.repeats, g)
        long = timed(model, "collage", 120.0, 1, args.steps, device, args.repeats, g)
        out[mode] = {"10s": short, "120s": long, "ratio": long["seconds"] / short["seconds"]}
    best = min(v["ratio"] for v in out.values())
    return {"runs": out, "best_ratio": best, "target": TARGETS["collage_120s_over_10s"],
            "met": best <= TARGETS["collage_120s_over_10s"]}


def goal_replacement(model, device, args, name) -> dict:
    # replacement's windows are new layouts at every call: eager only
    replacement = timed(model, "replacement", 60.0, 1, args.steps, device, args.repeats, False)
    collage = {("graph" if g else "eager"): timed(model, "collage", 60.0, 1, args.steps, device, args.repeats, g)
               for g in GRAPH_MODES}
    ratios = {k: replacement["seconds"] / v["seconds"] for k, v in collage.items()}
    best = max(ratios.values())
    return {"replacement": replacement, "collage": collage, "ratios": ratios, "best_ratio": best,
            "target": TARGETS["replacement_over_collage_60s"], "met": best >= TARGETS["replacement_over_collage_60s"]}


def goal_throughput(model, device, args, name) -> dict:
    """Per-step time of the 24 s collage at the throughput batch, extrapolated to ``steps``."""
    batch, steps_cap = args.throughput_batch, args.steps
    _generate(model, "collage", 24.0, batch, 1, device)  # warm-up: shapes, plans, allocator
    sync(device)
    start = time.perf_counter()
    model.recorder.calls.clear()
    _generate(model, "collage", 24.0, batch, 1, device)
    sync(device)
    one = time.perf_counter() - start
    flops_step = recorded_flops(model.args, model.recorder.calls)
    steps = max(1, min(steps_cap, int(args.throughput_seconds / max(one, 1e-9))))
    start = time.perf_counter()
    _generate(model, "collage", 24.0, batch, steps, device)
    sync(device)
    timed_s = time.perf_counter() - start
    per_step = timed_s / steps
    total = per_step * args.steps
    achieved = flops_step / per_step
    size = {"m": 256, "k": 128, "n": 256, "seconds": 0.1} if args.quick else {"seconds": 1.0}
    gemm = gemm_rate(device, compute_dtype(name), **size)
    peak = nominal_peak(device, "bf16" if name == "bf16" else "fp32", name == "tf32")
    return {"batch": batch, "duration_s": 24.0, "steps_timed": steps, "steps": args.steps,
            "extrapolated": steps != args.steps, "timed_s": timed_s, "seconds_per_step": per_step,
            "seconds_for_steps": total, "flops_per_step": flops_step, "achieved_flops_per_s": achieved,
            "measured_gemm_flops_per_s": gemm, "fraction_of_measured_gemm": achieved / gemm,
            "nominal_peak_flops_per_s": peak, "fraction_of_nominal_peak": None if peak is None else achieved / peak,
            "packing": model.denoiser.packing, "target_s": TARGETS["throughput_1000x24s_s"],
            "met": total <= TARGETS["throughput_1000x24s_s"] if args.throughput_batch == 1000 else None}


def goal_agreement(model, device, args, name) -> dict:
    den = model.denoiser
    eager = _generate(model, "collage", 24.0, 1, args.steps, device, seed=7).motion.float()
    den.cuda_graph = True
    try:
        graphed = _generate(model, "collage", 24.0, 1, args.steps, device, seed=7).motion.float()
    finally:
        den.cuda_graph = False
        den.release_graphs()
    diff = (graphed - eager).abs()
    return {"seed": 7, "duration_s": 24.0, "steps": args.steps, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "reference_rms": float(eager.pow(2).mean().sqrt())}


def goal_packing(model, device, args, name) -> dict:
    extra = device.type == "cuda"  # nested (varlen SDPA) and flex (compiled) backends too
    return {"calls": [packing_comparison(model, d, device, max(3, args.repeats), extra) for d in (24.0, 60.0)]}


def goal_compile(model, device, args, name) -> dict:
    from .zoo import compile_status

    compiled = build_model("tiny" if args.quick else "official", device, compile_mode="reduce-overhead")
    start = time.perf_counter()
    _generate(compiled, "collage", 24.0, 1, 1, device)  # compiles the one shape of the 24 s collage
    sync(device)
    compile_s = time.perf_counter() - start
    run = timed(compiled, "collage", 24.0, 1, args.steps, device, args.repeats, False)
    return {"run": run, "compile_and_first_step_s": compile_s, "compile": compile_status(compiled.recorder),
            "best_s": run["seconds"], "target_s": TARGETS["latency_24s_s"],
            "met": run["seconds"] <= TARGETS["latency_24s_s"]}


GOAL_FUNCTIONS = {"latency": goal_latency, "scaling": goal_scaling, "replacement": goal_replacement,
                  "throughput": goal_throughput, "agreement": goal_agreement, "packing": goal_packing,
                  "compile": goal_compile}


# ------------------------------------------------------------------------------------ files

def _write_json(path: Path, data: Any) -> None:
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def summarise(goals: dict, env: dict) -> dict:
    """Where each goal stands, per precision (from the goal files written so far)."""
    table = {}
    for key, result in goals.items():
        goal, prec = key.rsplit("-", 1)
        r = result.get("result", {})
        figure = {"latency": r.get("best_s"), "compile": r.get("best_s"), "scaling": r.get("best_ratio"), "replacement": r.get("best_ratio"),
                  "throughput": r.get("seconds_for_steps"), "agreement": r.get("max_abs_diff")}.get(goal)
        table.setdefault(goal, {})[prec] = {"figure": figure, "met": r.get("met"), "status": result["status"]}
    return {"environment": env, "goals": table, "targets": TARGETS}


def plot_summary(goals: dict, path: Path, env: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    lat = {k.rsplit("-", 1)[1]: v["result"] for k, v in goals.items() if k.startswith("latency-") and v["status"] == "ok"}
    for i, (prec, r) in enumerate(sorted(lat.items())):
        for j, (mode, run) in enumerate(sorted(r["runs"].items())):
            axes[0].bar(i + 0.4 * j, run["seconds"], width=0.38, color="C0" if mode == "eager" else "C1",
                        label=mode if i == 0 else None)
    axes[0].axhline(TARGETS["latency_24s_s"], color="k", ls="--", lw=1)
    axes[0].set_xticks([i + 0.2 for i in range(len(lat))], sorted(lat))
    axes[0].set_title("24 s collage, batch 1 (s)")
    if lat:
        axes[0].legend(fontsize=8)
    thr = {k.rsplit("-", 1)[1]: v["result"] for k, v in goals.items() if k.startswith("throughput-") and v["status"] == "ok"}
    names = sorted(thr)
    axes[1].bar(names, [thr[n]["seconds_for_steps"] for n in names], color="C2")
    axes[1].axhline(TARGETS["throughput_1000x24s_s"], color="k", ls="--", lw=1)
    axes[1].set_title("throughput batch of 24 s motions (s)")
    for j, (label, key) in enumerate((("achieved", "achieved_flops_per_s"), ("matmul", "measured_gemm_flops_per_s"),
                                      ("peak", "nominal_peak_flops_per_s"))):
        axes[2].bar([i + 0.27 * j for i in range(len(names))], [(thr[n][key] or 0) / 1e12 for n in names],
                    width=0.25, label=label)
    axes[2].set_xticks([i + 0.27 for i in range(len(names))], names)
    axes[2].set_title("TFLOP/s")
    if names:
        axes[2].legend(fontsize=8)
    fig.suptitle(f"{env['device_name']}  {env['date']}  commit {env['git_commit'][:8]}  steps {env['steps']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def save_summary(out: Path, goals: dict, env: dict) -> list[Path]:
    summary = summarise(goals, env)
    _write_json(out / "summary.json", {**summary, "results": goals})
    with staged_file(out / "summary.png") as tmp:
        plot_summary(goals, tmp, env)
    return [out / "summary.json", out / "summary.png"]


# ------------------------------------------------------------------------------------ run

def run_goals(args: argparse.Namespace, progress: Progress) -> tuple[dict, dict]:
    out = Path(args.out)
    device = torch.device(args.device)
    model = build_model("tiny" if args.quick else "official", device)
    if device.type != "cuda":
        model.denoiser.graph_backend = EmulatedGraphs()  # --quick on a CPU: the capture logic, emulated
    env_args = argparse.Namespace(dtype="fp32/tf32/bf16", tf32=None, compile=None, steps=args.steps,
                                  repeats=args.repeats, warmup_steps=1, max_rows_per_call=None, length_buckets=1)
    env = environment(device, env_args, model)
    env["cuda_graph"] = "cuda" if device.type == "cuda" else "emulated (no GPU: capture logic only)"
    start = time.perf_counter()
    goals: dict[str, dict] = {}
    for goal in args.goals:
        for prec in args.precisions:
            key = f"{goal}-{prec}"
            path = out / "goals" / f"{key}.json"
            if path.exists() and not args.fresh:
                goals[key] = json.loads(path.read_text())
                progress(f"{key}: kept from {path}")
                continue
            if prec == "tf32" and device.type != "cuda":
                goals[key] = {"status": "skipped: TF32 is a CUDA setting"}
            elif goal == "compile" and (prec != COMPILE_PRECISION or args.quick):
                goals[key] = {"status": f"skipped: compile is measured in {COMPILE_PRECISION} only, not in --quick"}
            elif time.perf_counter() - start > args.budget_s:
                goals[key] = {"status": f"skipped: past the {args.budget_s:g} s budget"}
            else:
                progress(f"{key} ...")
                t0 = time.perf_counter()
                try:
                    with precision(prec, device), torch.no_grad():
                        result = GOAL_FUNCTIONS[goal](model, device, args, prec)
                    goals[key] = {"status": "ok", "wall_s": time.perf_counter() - t0, "result": result}
                    _write_json(path, goals[key])
                except Exception as exc:  # noqa: BLE001  (out of memory, a compile error: recorded, the run goes on)
                    goals[key] = {"status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                progress(f"{key}: {goals[key]['status']} ({time.perf_counter() - t0:.1f} s)")
            save_summary(out, goals, env)
    return goals, env


def format_summary(goals: dict) -> str:
    lines = []
    for key, g in goals.items():
        r = g.get("result")
        if not r:
            lines.append(f"{key:<22} {g['status']}")
            continue
        goal = key.rsplit("-", 1)[0]
        if goal == "latency":
            text = "  ".join(f"{m} {v['seconds']:.3f} s" for m, v in r["runs"].items()) + f"  (goal <= {r['target_s']} s)"
        elif goal == "scaling":
            text = "  ".join(f"{m} 120s/10s {v['ratio']:.2f}" for m, v in r["runs"].items()) + f"  (goal <= {r['target']})"
        elif goal == "replacement":
            text = "  ".join(f"vs {m} {v:.1f}x" for m, v in r["ratios"].items()) + f"  (goal >= {r['target']})"
        elif goal == "throughput":
            peak = r["fraction_of_nominal_peak"]
            text = (f"{r['batch']} x 24 s: {r['seconds_for_steps']:.1f} s for {r['steps']} steps"
                    f"{' (from ' + str(r['steps_timed']) + ' timed)' if r['extrapolated'] else ''}, "
                    f"{r['achieved_flops_per_s'] / 1e12:.1f} TFLOP/s = {r['fraction_of_measured_gemm']:.0%} of the "
                    f"measured matmul rate ({r['measured_gemm_flops_per_s'] / 1e12:.1f})"
                    + ("" if peak is None else f", {peak:.0%} of the nominal peak"))
        elif goal == "compile":
            text = (f"reduce-overhead {r['best_s']:.3f} s (compile + first step {r['compile_and_first_step_s']:.0f} s, "
                    f"{r['compile']['call_shapes']} shape(s), fell back: {r['compile']['fell_back_to_eager']})")
        elif goal == "agreement":
            text = f"eager vs graph, seed 7: max |diff| {r['max_abs_diff']:.2e} (rms {r['reference_rms']:.2f})"
        else:
            text = "; ".join(f"{c['duration_s']:g}s packed x{c['modes']['packed']['time_vs_padded']:.2f} time "
                             f"x{c['modes']['packed']['flops_vs_padded']:.2f} FLOPs" for c in r["calls"])
        lines.append(f"{key:<22} {text}")
    return "\n".join(lines)


def command(parsed: argparse.Namespace) -> str:
    args = resolve(parsed)
    if args.device.startswith("cuda"):
        torch.cuda.init()
    goals, env = run_goals(args, lambda m: print(f"[gpu] {m}", file=sys.stderr, flush=True))
    out = Path(args.out)
    return (f"{env['device_name']}, torch {env['torch']}, commit {env['git_commit'][:10]}\n{format_summary(goals)}\n"
            f"wrote {out / 'summary.json'}, {out / 'summary.png'} and {out / 'goals'}/")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())
