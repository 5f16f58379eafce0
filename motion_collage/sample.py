"""``python -m motion_collage.sample``: long, multi-action and looped motion from text.

parse -> build (model, segments) -> generate -> save (atomically) -> render. Bad input gives one
line on stderr and exit status 2; outputs are written to a temporary folder and moved into place
only when complete.
"""
from __future__ import annotations

import os

# Before torch is imported (libgomp reads it once): idle OpenMP threads sleep instead of
# spinning, which keeps 2-thread CPU runs fast when other processes share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .methods import METHODS
from .pipeline import DTYPES, SAMPLER_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "save" / "default" / "model.safetensors"
DEFAULT_SECONDS = 4.0
DEFAULT_OVERLAP_SECONDS = 1.0
RENDER_CHOICES = ("none", "skeleton", "smpl")


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (and exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m motion_collage.sample",
        description="Generate one long motion whose segments follow the prompts in order "
                    "(DiffCollage on an MDM model).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", nargs="+", metavar="P", help="one prompt per segment, in order")
    src.add_argument("--input_text", metavar="FILE",
                     help="text file, one segment per line: 'prompt' or 'prompt # seconds'")
    p.add_argument("--seconds", nargs="+", metavar="S",
                   help=f"duration of each segment in seconds, or one value for all (default {DEFAULT_SECONDS})")
    p.add_argument("--loop", action="store_true", help="close the motion into a seamless loop (cycle graph)")
    p.add_argument("--overlap", default=None,
                   help=f"overlap between neighbouring pieces: seconds ('1.0', '1s') or frames ('20f') "
                        f"(default {DEFAULT_OVERLAP_SECONDS} s; for doubletake this is the handshake)")
    p.add_argument("--transition", choices=("null", "prompt"), default="null",
                   help="condition of the overlaps: the null condition (default) or the neighbours' prompt "
                        "when both sides share it")
    p.add_argument("--method", choices=list(METHODS), default="collage", help="generation method (default collage)")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default="ddim", help="sampler (default ddim)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps for ddim/edm (default 50)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0: deterministic)")
    p.add_argument("--guidance_param", type=float, default=2.5, help="classifier-free guidance scale (default 2.5)")
    p.add_argument("--num_samples", type=int, default=1, help="motions per repetition (default 1)")
    p.add_argument("--num_repetitions", type=int, default=1, help="repetitions (default 1)")
    p.add_argument("--seed", type=int, default=10, help="random seed (default 10)")
    p.add_argument("--batch_size", type=int, default=64, help="motions generated together (default 64)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default auto)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="compute dtype; bf16/fp16 on GPU only")
    p.add_argument("--model_path", default=None,
                   help="official MDM checkpoint (save/<name>/model*.pt with args.json) or a folder; "
                        "default: the embedded model in save/default")
    p.add_argument("--clip_path", default=None, help="CLIP ViT-B/32 weights for official checkpoints")
    p.add_argument("--stats_dir", default=None, help="folder with the model's Mean.npy/Std.npy if not beside it")
    p.add_argument("--output_dir", default=None, help="output folder (default save/samples/<readable name>)")
    p.add_argument("--render", choices=RENDER_CHOICES, default="skeleton", help="videos to write (default skeleton)")
    p.add_argument("--smpl_dir", default="body_models", help="folder holding smpl/SMPL_NEUTRAL.pkl (for --render smpl)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


# ----------------------------------------------------------------------------------- parsing

def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"seconds must be numbers, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise UsageError(f"seconds must be positive, got {text}")
    return value


def read_prompt_file(path: str) -> tuple[list[str], list[Optional[float]]]:
    """Prompts and optional durations from a file of 'prompt' or 'prompt # seconds' lines."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"prompt file {path} does not exist")
    prompts, seconds = [], []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        text, _, dur = line.partition("#")
        if not text.strip():
            raise UsageError(f"{path}:{n}: empty prompt")
        prompts.append(text.strip())
        seconds.append(parse_seconds(dur.strip()) if dur.strip() else None)
    if not prompts:
        raise UsageError(f"prompt file {path} is empty")
    return prompts, seconds


def resolve_segments(args: argparse.Namespace, fps: float) -> list[tuple[str, int]]:
    """``[(prompt, frames), ...]`` from --prompts/--input_text and --seconds."""
    if args.input_text:
        prompts, file_seconds = read_prompt_file(args.input_text)
    else:
        prompts, file_seconds = list(args.prompts), [None] * len(args.prompts)
    for i, p in enumerate(prompts):
        if not p.strip():
            raise UsageError(f"prompt {i + 1} is empty")
    if args.seconds:
        values = [parse_seconds(s) for s in args.seconds]
        if len(values) == 1:
            values = values * len(prompts)
        elif len(values) != len(prompts):
            raise UsageError(f"got {len(values)} --seconds values for {len(prompts)} prompts; "
                             "give one value per prompt or a single value for all")
    else:
        values = [s if s is not None else DEFAULT_SECONDS for s in file_seconds]
    segments = [(p.strip(), int(round(s * fps))) for p, s in zip(prompts, values)]
    for p, frames in segments:
        if frames < 1:
            raise UsageError(f"segment {p!r} is shorter than one frame at {fps:g} fps")
    return segments


def parse_overlap(text: Optional[str], fps: float) -> int:
    """Overlap in frames from '1.0' / '1s' (seconds) or '20f' (frames)."""
    if text is None:
        return int(round(DEFAULT_OVERLAP_SECONDS * fps))
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|f)?\s*", text)
    if not m:
        raise UsageError(f"overlap must be seconds ('1.0', '1s') or frames ('20f'), got {text!r}")
    value, unit = float(m.group(1)), m.group(2) or "s"
    if unit == "f" and value != int(value):
        raise UsageError(f"an overlap in frames must be a whole number, got {text!r}")
    return int(value) if unit == "f" else int(round(value * fps))


def method_options(method: str, overlap: int) -> dict:
    """Per-method options derived from the common ones."""
    if method in ("collage", "average"):
        return {"overlap": overlap}
    if method == "doubletake":
        return {"handshake": overlap}
    return {}


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    return name


def default_output_dir(segments: Sequence[tuple[str, int]], method: str, loop: bool, seed: int) -> Path:
    words = re.sub(r"[^a-z0-9]+", "_", segments[0][0].lower()).strip("_")[:40] or "motion"
    more = f"_and_{len(segments) - 1}_more" if len(segments) > 1 else ""
    return REPO_ROOT / "save" / "samples" / f"{method}{'_loop' if loop else ''}_{words}{more}_seed{seed}"


# ----------------------------------------------------------------------------------- saving

def results_dict(joints: list[np.ndarray], segments_rows: list[list[dict]], texts: list[str],
                 num_samples: int, num_repetitions: int, loop: bool) -> dict:
    """MDM's results.npy dict (motion ``[N*R, J, 3, T]``, rep-major) plus our segment table."""
    T = max(j.shape[0] for j in joints)
    motion = np.zeros((len(joints), joints[0].shape[1], 3, T), dtype=np.float32)
    for i, j in enumerate(joints):
        motion[i, :, :, : j.shape[0]] = np.transpose(j, (1, 2, 0))
    return {
        "motion": motion,
        "text": texts,
        "lengths": np.array([j.shape[0] for j in joints], dtype=np.int64),
        "num_samples": num_samples,
        "num_repetitions": num_repetitions,
        "segments": segments_rows,
        "loop": loop,
    }


def save_outputs(folder: Path, results: dict, features: np.ndarray, settings: dict) -> None:
    """results.npy (pickled, for MDM tools), results.npz (no pickle), texts, features, settings."""
    np.save(folder / "results.npy", results, allow_pickle=True)
    np.savez(folder / "results.npz", motion=results["motion"], lengths=results["lengths"],
             text=np.array(results["text"]), segments_json=np.array(json.dumps(results["segments"])),
             num_samples=results["num_samples"], num_repetitions=results["num_repetitions"], loop=results["loop"])
    (folder / "results.txt").write_text("\n".join(results["text"]) + "\n", encoding="utf-8")
    (folder / "results_len.txt").write_text("\n".join(str(int(n)) for n in results["lengths"]) + "\n")
    np.save(folder / "features.npy", features.astype(np.float32))
    (folder / "args.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> Path:
    """Generate, save and render; returns the output folder."""
    import torch

    from mdm_adapter import load

    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    for name in ("num_samples", "num_repetitions", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.eta < 0:
        raise UsageError(f"--eta must be >= 0, got {args.eta}")
    device = resolve_device(args.device)
    if args.dtype != "fp32" and device == "cpu":
        raise UsageError(f"--dtype {args.dtype} needs a GPU; on the CPU use --dtype fp32")

    from motion_core.spec import HUMANML3D
    segments = resolve_segments(args, HUMANML3D.fps)  # fps checked again against the model below
    overlap = parse_overlap(args.overlap, HUMANML3D.fps)
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(segments, args.method, args.loop, args.seed)
    if out_dir.exists() and not args.overwrite:
        raise UsageError(f"output folder {out_dir} exists; pass --overwrite or choose --output_dir")

    # Check the graph before the (slow) model load: bad lengths fail fast.
    from .graph import chain, cycle
    opts = method_options(args.method, overlap)
    if args.method in ("collage", "average", "doubletake"):
        (cycle if args.loop else chain)(segments, overlap=overlap, max_frames=HUMANML3D.max_frames)

    if args.render == "smpl":
        from .smpl_fit import load_smpl
        load_smpl(args.smpl_dir)  # a missing body model fails now, not after sampling
    model_path = Path(args.model_path) if args.model_path else DEFAULT_MODEL
    model = load(model_path, device=device, guidance_scale=args.guidance_param, clip_path=args.clip_path,
                 stats_dir=args.stats_dir)
    if model.spec.fps != HUMANML3D.fps:
        segments = resolve_segments(args, model.spec.fps)
        overlap = parse_overlap(args.overlap, model.spec.fps)
        opts = method_options(args.method, overlap)
    _ = model.model_stats  # fail now, not after sampling, if the statistics are missing
    if device == "cpu":
        # Same x0 (within 1e-5), but short overlap pieces are not padded to the longest piece:
        # about 1.8x faster where FLOPs are the limit (docs/performance.md). On a GPU one call wins.
        model.denoiser.length_buckets = 2

    if args.method in ("collage", "average", "doubletake"):
        opts = {**opts, "loop": args.loop}
    elif args.loop:
        raise UsageError(f"--method {args.method} cannot make a loop; use collage, average or doubletake")
    if args.method == "collage":
        opts = {**opts, "transition": args.transition}

    from .pipeline import generate_motions
    n_rows = args.num_samples * args.num_repetitions
    started = time.perf_counter()
    features, joints, seg_rows = [], [], []
    T = sum(f for _, f in segments)
    for first in range(0, n_rows, args.batch_size):
        count = min(args.batch_size, n_rows - first)
        batch = generate_motions(model, [segments] * count, method=args.method, method_options=opts,
                                 sampler=args.sampler, steps=args.steps, eta=args.eta, guidance=args.guidance_param,
                                 seed=args.seed, row_offset=first, dtype=args.dtype, progress=True)
        features.append(batch.features)
        joints += batch.joints
        seg_rows += [[{"text": s.prompt, "start": s.start, "end": s.end} for s in g.segments]
                     for g in batch.generation.graphs]
    sampling_seconds = time.perf_counter() - started
    text = " | ".join(p for p, _ in segments)
    results = results_dict(joints, seg_rows, [text] * n_rows, args.num_samples, args.num_repetitions, args.loop)
    settings = {**vars(args), "device": device, "resolved_model_path": str(model.path),
                "segments_frames": [[p, f] for p, f in segments], "overlap_frames": overlap,
                "method_options": {k: v for k, v in opts.items()}, "total_frames": T,
                "fps": model.spec.fps, "sampling_seconds": round(sampling_seconds, 3)}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_outputs(tmp, results, np.concatenate(features), settings)
        render_videos(tmp, results, args, model.spec)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # only with --overwrite, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def render_videos(folder: Path, results: dict, args: argparse.Namespace, spec) -> None:
    """One video per (sample, repetition) into `folder`."""
    if args.render == "none":
        return
    from .render import render_skeleton, results_row
    for rep in range(args.num_repetitions):
        for i in range(args.num_samples):
            joints, segments, caption, loop = results_row(results, i, rep)
            name = f"sample{i:02d}_rep{rep:02d}"
            if args.render == "skeleton":
                render_skeleton(joints, folder / f"{name}.mp4", segments=segments, fps=spec.fps, loop=loop,
                                title=caption, progress=True)
            else:
                from .smpl_fit import export_obj, fit_smpl, load_smpl, render_mesh, save_fit
                fit = fit_smpl(joints, load_smpl(args.smpl_dir), progress=True)
                save_fit(fit, folder / f"{name}_smpl.npz")
                export_obj(fit.vertices, fit.faces, folder / f"{name}_obj")
                render_mesh(fit.vertices, fit.faces, folder / f"{name}_mesh.mp4", fps=spec.fps, title=caption,
                            progress=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # one line and status 2 on unknown options or values
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        out_dir = run(args)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    print(f"done: results, features, settings and videos in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
