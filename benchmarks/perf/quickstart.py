"""``python -m benchmarks.perf.quickstart``: the README's CPU quickstart, timed whole and by parts.

    python -m benchmarks.perf.quickstart [--base CHECKOUT] [--runs 3] [--json OUT.json]

Every figure comes from a fresh Python process started in the checkout being measured (its
``motion_collage`` is the one imported), so that imports are paid as a user pays them:

* ``command``: the README's quickstart command (3 prompts x 4 s, 50 DDIM steps, the video),
  wall time of the whole process, written into a scratch folder;
* ``imports`` / ``load``: ``motion_collage.sample``, ``motion_collage.pipeline`` and
  ``mdm_adapter`` imported, then ``mdm_adapter.load("save/default")`` with its statistics
  (what the command does before sampling); the heavy modules that got imported are listed;
* ``render``: ``render_skeleton`` of one fixed 12 s motion to mp4 (frames/s over the whole call,
  matplotlib and torch imported before), its CPU seconds (this process, ffmpeg), and the drawing alone.

With ``--base`` (e.g. a ``git worktree add`` of an older commit) both checkouts are measured in
the same session, alternately (ABBA order), so that both see the same machine load; medians are
printed with the load average before and after. Nothing in the checkouts is written to.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from motion_core.atomic import staged_file
from motion_core.cli import OneLineParser, UsageError, run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("a person walks forward", "a person waves the right hand", "a person runs forward")
HEAVY = ("scipy", "sympy", "torch._dynamo", "torch._inductor", "matplotlib")

_STARTUP = """
import json, sys, time
t0 = time.perf_counter()
import motion_collage.sample, motion_collage.pipeline, mdm_adapter
t1 = time.perf_counter()
model = mdm_adapter.load("save/default")
_ = model.model_stats
t2 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "heavy": [m for m in %r if m in sys.modules]}))
"""

_RENDER = """
import json, resource, sys, time
import matplotlib.backends.backend_agg, matplotlib.figure, motion_collage.representation  # as in the command
from motion_collage import render
from motion_collage.render import GridPanel, load_results, render_skeleton, results_row
Scene = getattr(render, "Scene", None) or render._Scene  # older checkouts (the --base) keep it private
joints, segments, caption, loop = results_row(load_results(sys.argv[1]), 0, 0)
c0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
p0 = time.process_time()
render_skeleton(joints, sys.argv[2], segments=segments, loop=loop, title=caption)
wall, cpu = time.perf_counter() - w0, time.process_time() - p0
c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
scene = Scene([GridPanel(joints, None, segments, caption, loop)], 20.0)
d0 = time.perf_counter()
for t in range(scene.num_frames):
    scene.update(t)
    scene.rgba()
draw = time.perf_counter() - d0
print(json.dumps({"frames": len(joints), "video_s": wall, "video_fps": len(joints) / wall, "draw_fps": len(joints) / draw,
                  "cpu_s": cpu, "encoder_cpu_s": (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)}))
"""


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m benchmarks.perf.quickstart",
                           description="Time the README's CPU quickstart (whole command, imports, model load, "
                                       "rendering), optionally against another checkout in the same session.")
    parser.add_argument("--base", default=None, help="another checkout to measure alternately (e.g. a git worktree)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement per checkout (default 3)")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    return parser


def _check_checkout(path: str) -> Path:
    root = Path(path).expanduser().resolve()
    if not (root / "motion_collage" / "sample.py").is_file() or not (root / "save" / "default").is_dir():
        raise UsageError(f"--base {path} is not a checkout of this project (no motion_collage/sample.py or "
                         f"save/default); make one with: git worktree add {path} <commit>")
    return root


def _python(root: Path, args: list[str], timeout: float = 600.0) -> tuple[float, str]:
    """Wall seconds and stdout of ``python ARGS`` started in ``root`` (its packages first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"{' '.join(args[:3])} failed in {root} (status {proc.returncode}): {tail}")
    return wall, proc.stdout


def measure_once(root: Path, scratch: Path, tag: str, motion: Optional[Path]) -> dict:
    """One run of every measurement in checkout ``root``; ``motion`` is the results file to render
    (None: the one this run's command wrote)."""
    out_dir = scratch / f"{tag}_{time.monotonic_ns()}"
    wall, _ = _python(root, ["-m", "motion_collage.sample", "--prompts", *PROMPTS, "--output_dir", str(out_dir)])
    row = {"command_s": wall}
    _, text = _python(root, ["-c", _STARTUP % (HEAVY,)])
    row.update(json.loads(text.strip().splitlines()[-1]))
    motion = motion or out_dir / "results.npy"
    _, text = _python(root, ["-c", _RENDER, str(motion), str(out_dir / "render.mp4")])
    row.update(json.loads(text.strip().splitlines()[-1]))
    row["motion"] = str(motion)
    return row


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def summarise(rows: list[dict]) -> dict:
    """Medians of the numeric figures of several runs (and the heavy modules of the last)."""
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
    out = {k: statistics.median(r[k] for r in rows) for k in keys}
    out["imports_and_load"] = statistics.median(r["imports"] + r["load"] for r in rows)
    out["heavy"] = rows[-1]["heavy"]
    out["runs"] = len(rows)
    return out


LINES = (("command_s", "whole command, with the video (s)", "{:.2f}"),
         ("imports", "imports before sampling (s)", "{:.2f}"),
         ("load", "model load (s)", "{:.2f}"),
         ("imports_and_load", "imports + load (s)", "{:.2f}"),
         ("video_fps", "render_skeleton, 240 frames (frames/s)", "{:.0f}"),
         ("draw_fps", "drawing alone (frames/s)", "{:.0f}"),
         ("cpu_s", "render CPU, this process (s)", "{:.2f}"),
         ("encoder_cpu_s", "render CPU, ffmpeg (s)", "{:.2f}"))


def format_report(results: dict[str, dict], load: tuple[str, str]) -> str:
    names = list(results)
    lines = [f"load average before {load[0]}, after {load[1]} (1, 5, 15 min); medians of "
             f"{results[names[0]]['runs']} runs", "| figure | " + " | ".join(names) +
             (" | ratio |" if len(names) == 2 else " |"), "|---" * (len(names) + 1 + (len(names) == 2)) + "|"]
    for key, label, fmt in LINES:
        cells = [fmt.format(results[n][key]) for n in names]
        ratio = [f"{results[names[0]][key] / results[names[1]][key]:.2f}x"] if len(names) == 2 else []
        lines.append(f"| {label} | " + " | ".join(cells + ratio) + " |")
    for n in names:
        lines.append(f"{n}: heavy modules imported before sampling: {', '.join(results[n]['heavy']) or 'none'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    if args.runs < 1:
        raise UsageError(f"--runs must be at least 1, got {args.runs}")
    roots = {"this checkout": REPO_ROOT}
    if args.base is not None:
        roots["base"] = _check_checkout(args.base)
    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.is_dir():
        raise UsageError(f"--json {json_path} is a folder; give a file name")
    rows: dict[str, list[dict]] = {name: [] for name in roots}
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="quickstart_") as scratch:
        motion = None  # every checkout renders the motion of the first command run, for the same frames
        for i in range(args.runs):
            order = list(roots) if i % 2 == 0 else list(reversed(roots))
            for name in order:
                row = measure_once(roots[name], Path(scratch), name.replace(" ", "_"), motion)
                motion = motion or Path(row["motion"])
                rows[name].append(row)
                print(f"run {i + 1} {name}: command {row['command_s']:.2f} s, imports {row['imports']:.2f} s, "
                      f"load {row['load']:.2f} s, video {row['video_fps']:.0f} frames/s (load {_load()})",
                      file=sys.stderr, flush=True)
        results = {name: summarise(r) for name, r in rows.items()}
    report = format_report(results, (load_before, _load()))
    if json_path is not None:
        with staged_file(json_path) as tmp:
            tmp.write_text(json.dumps({"load_before": load_before, "results": results, "runs": rows}, indent=2))
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
