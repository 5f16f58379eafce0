"""``python -m benchmarks.perf``: parse -> build (device, model) -> run (sections) -> save (JSON, PNG).

Every user mistake (a bad number, CUDA asked for but absent, a missing checkpoint, an output
folder that is a file) is one line on stderr and exit status 2 (:func:`motion_core.cli.run_cli`),
checked before anything is timed or written. Outputs are written under temporary names and
renamed into place when complete.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from motion_collage.methods import METHODS
from motion_core import defaults
from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.devices import DTYPES, resolve_device

from .device import estimate_targets
from .estimate import estimate_section
from .report import environment, format_estimate, format_table, save, wrote
from .sections import measured_report
from .settings import TIMED_METHODS
from .zoo import REPO_ROOT, BenchModel, build_model

DEFAULT_DURATIONS = [10.0, 24.0, 60.0, 120.0]
SMOKE_DURATIONS = [10.0, 24.0]
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="official",
                   help="official (release architecture, random weights), default-arch (the default model's sizes, "
                        "random weights), default (save/default), tiny, or a checkpoint path")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=list(DTYPES), default=defaults.DTYPE, help="autocast dtype of the network")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA only)")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE", choices=COMPILE_MODES,
                   help="torch.compile the network (MODE: default, reduce-overhead, max-autotune)")
    p.add_argument("--max-rows-per-call", type=int, default=None, help="chunk the piece batch (memory bound)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--length-buckets", type=int, default=1,
                   help="run the piece rows in up to this many length groups, each cut to its longest row "
                        "(fewer FLOPs, more network calls per step; default 1 = one call)")


def _add_timing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--durations", nargs="+", type=float, default=DEFAULT_DURATIONS, help="motion durations in seconds")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(TIMED_METHODS))
    p.add_argument("--steps", type=int, default=defaults.STEPS, help=f"DDIM steps (default {defaults.STEPS})")
    p.add_argument("--batch", nargs="+", type=int, default=[1], help="batch sizes for the latency table (default 1)")
    p.add_argument("--throughput-batch", type=int, default=None,
                   help="collage batch for the throughput figure (default 1000 on CUDA, 4 on CPU; 0 = skip)")
    p.add_argument("--throughput-duration", type=float, default=24.0)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per point (default 3 on CUDA, 1 on CPU)")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps of the untimed warm-up run (0 = none)")
    p.add_argument("--long", type=float, default=None, metavar="SECONDS",
                   help="also run one collage of this duration (e.g. 600) and report its time and memory")
    p.add_argument("--long-steps", type=int, default=None, help="steps of the --long run (default --steps)")


def _add_section_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--numerics", nargs="*", choices=("bf16", "fp16"), default=None,
                   help="deviation of low-precision collages from fp32 (default: bf16)")
    p.add_argument("--numerics-steps", type=int, default=None, help="steps of the numerics runs (default min(steps, 10))")
    p.add_argument("--quickstart", nargs="*", choices=list(DTYPES), default=None,
                   help="time the README quickstart generation in these dtypes (default: fp32 for the default model)")
    p.add_argument("--estimate", choices=estimate_targets(), default=None,
                   help="only an analytic estimate for this GPU (release architecture; shapes and host overhead "
                        "from skeleton runs on this machine); no timing of the real-size network")
    p.add_argument("--quickstart-steps", type=int, default=defaults.STEPS,
                   help=f"DDIM steps of the quickstart timing (default {defaults.STEPS})")
    p.add_argument("--no-checks", action="store_true", help="skip the sync audit, chunking and numerics sections")
    p.add_argument("--packing-durations", nargs="*", type=float, default=None, metavar="SECONDS",
                   help="time one collage piece-denoiser call padded, packed and in 2 length buckets at these "
                        "durations (default 24 60; smoke: 10; none given: skip)")
    p.add_argument("--packing", choices=("rows", "nested", "flex", "off"), default=None,
                   help="packed rows of the piece denoiser (default: its own, rows)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, CPU, 2 steps, durations 10 24 s, batch 2 throughput: a seconds-long check")
    p.add_argument("--tag", default=None, help="file name stem of the outputs (default from device/model/dtype/steps)")
    p.add_argument("--out", default=str(REPO_ROOT / "docs" / "performance"), help="output folder (JSON + PNG)")


def build_parser() -> argparse.ArgumentParser:
    """The command's options (one-line errors)."""
    p = OneLineParser(prog="python -m benchmarks.perf",
                      description="Latency, throughput, memory and call counts of the generation methods.")
    _add_model_options(p)
    _add_timing_options(p)
    _add_section_options(p)
    return p


# ------------------------------------------------------------------------------------ parse

def _apply_smoke(args: argparse.Namespace) -> None:
    if args.smoke:
        args.model, args.device, args.steps = "tiny", "cpu", 2
        if args.durations == DEFAULT_DURATIONS:
            args.durations = list(SMOKE_DURATIONS)
        args.throughput_batch = 2 if args.throughput_batch is None else args.throughput_batch
        args.numerics = [] if args.numerics is None else args.numerics
        args.packing_durations = [10.0] if args.packing_durations is None else args.packing_durations


def _require(ok: bool, option: str, value, expected: str) -> None:
    if not ok:
        raise UsageError(f"{option} must be {expected}, got {value}")


def _positive_seconds(x: float) -> bool:
    return math.isfinite(x) and x > 0


def check_args(args: argparse.Namespace) -> None:
    """Raise UsageError (one line: the option, what it must be, the value) for a bad setting."""
    for option, value in (("--steps", args.steps), ("--long-steps", args.long_steps),
                          ("--numerics-steps", args.numerics_steps), ("--quickstart-steps", args.quickstart_steps),
                          ("--max-rows-per-call", args.max_rows_per_call), ("--threads", args.threads),
                          ("--length-buckets", args.length_buckets), ("--repeats", args.repeats)):
        _require(value is None or value >= 1, option, value, "an integer >= 1")
    for b in args.batch:
        _require(b >= 1, "--batch", b, "an integer >= 1")
    _require(args.throughput_batch is None or args.throughput_batch >= 0, "--throughput-batch",
             args.throughput_batch, "an integer >= 0 (0 = skip)")
    _require(args.warmup_steps >= 0, "--warmup-steps", args.warmup_steps, "an integer >= 0 (0 = no warm-up)")
    for d in args.durations:
        _require(_positive_seconds(d), "--durations", d, "positive seconds")
    for d in args.packing_durations or []:
        _require(_positive_seconds(d), "--packing-durations", d, "positive seconds")
    _require(_positive_seconds(args.throughput_duration), "--throughput-duration", args.throughput_duration,
             "positive seconds")
    _require(args.long is None or _positive_seconds(args.long), "--long", args.long, "positive seconds")
    _require(args.tag is None or (args.tag.strip() != "" and "/" not in args.tag and "\\" not in args.tag
                                  and args.tag not in (".", "..")),
             "--tag", repr(args.tag), "a file name stem without '/'")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; give a folder for the JSON and PNG")


def _default_tag(args: argparse.Namespace) -> str:
    tf32 = "-tf32" if args.tf32 else ""
    if args.estimate:
        return f"estimate-{args.estimate}-{args.dtype}{tf32}-{args.steps}steps"
    tag = f"bench-{args.device}-{Path(args.model).name}-{args.dtype}{tf32}-{args.steps}steps"
    if args.compile:
        tag += f"-compile-{args.compile}"
    if args.length_buckets > 1:
        tag += f"-buckets{args.length_buckets}"
    if args.max_rows_per_call:
        tag += f"-chunk{args.max_rows_per_call}"
    if args.packing:
        tag += f"-packing-{args.packing}"
    return tag


def resolve_args(parsed: argparse.Namespace) -> argparse.Namespace:
    """The settings of the run: ``--smoke`` applied, device resolved, defaults that depend on the
    device filled in, every value checked. Returns a new namespace."""
    args = argparse.Namespace(**vars(parsed))
    _apply_smoke(args)
    args.device = resolve_device(args.device)
    if args.throughput_batch is None:
        args.throughput_batch = 1000 if (args.device.startswith("cuda") or args.estimate) else 4
    if args.repeats is None:
        args.repeats = 3 if args.device.startswith("cuda") else 1
    if args.numerics is None:
        args.numerics = ["bf16"]
    if args.packing_durations is None:
        args.packing_durations = [24.0, 60.0]
    if args.quickstart is None:
        args.quickstart = ["fp32"] if args.model in ("default", "default-arch") else []
    check_args(args)
    if args.tag is None:
        args.tag = _default_tag(args)
    return args


# ------------------------------------------------------------------------------------ build, run, save

def build(args: argparse.Namespace) -> tuple[torch.device, BenchModel]:
    """The device (TF32 allowed when asked) and the model with its recording piece denoiser."""
    device = torch.device(args.device)
    if args.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(args.model, device, args.compile, args.max_rows_per_call, length_buckets=args.length_buckets)
    if args.packing:
        model.denoiser.packing = args.packing
    return device, model


def run_estimate(args: argparse.Namespace, progress) -> dict:
    """The analytic GPU estimate (skeleton runs on this CPU); no real-size network is timed."""
    cpu = torch.device("cpu")
    skeleton = build_model("skeleton", cpu)
    return {"environment": environment(cpu, args, skeleton),
            "estimate": estimate_section(args.estimate, args.durations, args.methods, args.steps, args.dtype,
                                         args.tf32, args.throughput_batch, progress)}


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def command(parsed: argparse.Namespace) -> str:
    """parse (resolve) -> build -> run -> save; returns what to print."""
    args = resolve_args(parsed)
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.estimate:
        report = run_estimate(args, _progress)
        return f"{format_estimate(report['estimate'])}\n{wrote(save(report, out, args.tag))}"
    device, model = build(args)
    report = measured_report(model, device, args, _progress)
    return f"{format_table(report)}\n{wrote(save(report, out, args.tag))}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; a user mistake is one line on stderr and exit status 2."""
    return run_cli(build_parser(), argv, command)
