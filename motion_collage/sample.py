"""``python -m motion_collage.sample``: long, multi-action and looped motion from text.

parse (settings, checked before anything slow) -> build (model, segments) -> generate -> save
(into a temporary folder beside the target, renamed into place when complete, videos included;
:mod:`motion_core.atomic`).
Bad input gives one line on stderr and exit status 2; nothing is left at the output path.
"""
from __future__ import annotations

from motion_core.openmp import configure_openmp_waiting

# Before torch is imported (libgomp reads it once): idle OpenMP threads sleep when other
# processes share the cores, and spin briefly on a quiet machine (motion_core.openmp).
configure_openmp_waiting()

import argparse
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from motion_core import defaults
from motion_core.atomic import check_output_folder, staged_dir, terminate_as_exit
from motion_core.cli import OneLineParser, UsageError, exit_without_teardown, run_cli
from motion_core.devices import DTYPES

from .graph import MERGES
from .methods import METHODS, Duration, Frames, get_method, parse_duration, to_frames
from .samplers import SAMPLERS
from .scene_files import clean_prompt, parse_seconds, read_scene_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "save" / "default" / "model.safetensors"
RENDER_CHOICES = ("none", "skeleton", "smpl")
EXPORT_CHOICES = ("bvh",)
MAX_ROW_SECONDS = 3600.0     # one motion at most one hour (graph and noise memory grow with it)
MAX_ROWS = 100_000           # num_samples x num_repetitions
MAX_BATCH = 4096
MAX_GUIDANCE = 100.0         # 1: conditional only, 0: unconditional; the release uses 2.5


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m motion_collage.sample",
        description="Generate one long motion whose segments follow the prompts in order "
                    "(DiffCollage on an MDM model).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", nargs="+", metavar="P", help="one prompt per segment, in order")
    src.add_argument("--text_prompt", metavar="P", help="one prompt (MDM's option): the same as --prompts P")
    src.add_argument("--input_text", metavar="FILE",
                     help="scene file, recognised by content: lines 'prompt' or 'prompt # seconds'; PriorMDM's CSV "
                          "('text,length' header, lengths in frames); FlowMDM's JSON "
                          "({\"text\": [...], \"lengths\": [...]}, frames)")
    durations = p.add_mutually_exclusive_group()
    durations.add_argument("--seconds", nargs="+", metavar="S",
                           help=f"duration of each segment in seconds, or one value for all "
                                f"(default {defaults.SEGMENT_SECONDS})")
    durations.add_argument("--motion_length", metavar="S",
                           help="one duration in seconds (MDM's option): the same as --seconds S")
    p.add_argument("--loop", action="store_true", help="close the motion into a seamless loop (cycle graph)")
    p.add_argument("--overlap", default=None,
                   help=f"overlap between neighbouring pieces: seconds ('1.0', '1s') or frames ('20f') "
                        f"(default {defaults.OVERLAP_SECONDS} s; for doubletake this is the handshake)")
    p.add_argument("--transition", choices=("null", "prompt"), default="null",
                   help="condition of the overlaps: the null condition (default) or the neighbours' prompt "
                        "when both sides share it")
    p.add_argument("--merge", choices=list(MERGES), default=None,
                   help="collage merge rule (default: the method's; 'exact' is DiffCollage's signed merge)")
    p.add_argument("--method", choices=list(METHODS), default=defaults.METHOD,
                   help=f"generation method (default {defaults.METHOD})")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=defaults.SAMPLER,
                   help=f"sampler (default {defaults.SAMPLER})")
    p.add_argument("--steps", type=int, default=defaults.STEPS,
                   help=f"sampling steps for samplers that take a step count (default {defaults.STEPS})")
    p.add_argument("--eta", type=float, default=defaults.ETA, help=f"DDIM eta (default {defaults.ETA:g}; 0: deterministic)")
    p.add_argument("--guidance_param", type=float, default=defaults.GUIDANCE,
                   help=f"classifier-free guidance scale (default {defaults.GUIDANCE})")
    p.add_argument("--num_samples", type=int, default=1, help="motions per repetition (default 1)")
    p.add_argument("--num_repetitions", type=int, default=1, help="repetitions (default 1)")
    p.add_argument("--seed", type=int, default=10, help="random seed (default 10)")
    p.add_argument("--batch_size", type=int, default=64, help="motions generated together (default 64)")
    p.add_argument("--device", default="auto",
                   help="auto (default), cpu, cuda, cuda:N or a GPU index as in MDM (0: the first GPU)")
    p.add_argument("--dtype", choices=list(DTYPES), default=defaults.DTYPE, help="compute dtype; bf16/fp16 on GPU only")
    p.add_argument("--model_path", default=None,
                   help="official MDM checkpoint (save/<name>/model*.pt with args.json) or a folder; "
                        "default: the embedded model in save/default")
    p.add_argument("--clip_path", default=None, help="CLIP ViT-B/32 weights for official checkpoints")
    p.add_argument("--stats_dir", default=None, help="folder with the model's Mean.npy/Std.npy if not beside it")
    p.add_argument("--output_dir", default=None, help="output folder (default save/samples/<readable name>)")
    p.add_argument("--render", choices=RENDER_CHOICES, default="skeleton", help="videos to write (default skeleton)")
    p.add_argument("--smpl_dir", default="body_models", help="folder holding smpl/SMPL_NEUTRAL.pkl (for --render smpl)")
    p.add_argument("--export", choices=EXPORT_CHOICES, default=None,
                   help="also write an animation file per motion into the output folder: bvh (motion_collage.export)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--cuda_graph", action="store_true",
                   help="replay each sampling step as one CUDA graph (CUDA only; same samples as eager)")
    add_constraint_arguments(p)
    return p


def add_constraint_arguments(p: argparse.ArgumentParser) -> None:
    """Known motion the timeline must reproduce (motion_collage.constraints)."""
    g = p.add_argument_group("known motion (a BVH file, our results.npy/features.npy, a HumanML3D new_joint_vecs "
                             "file; frames at the model's fps, START-END excludes END)")
    g.add_argument("--prefix", metavar="FILE[:START-END]", help="continue this motion: it opens the timeline")
    g.add_argument("--keyframes", metavar="FILE@T1,T2,...",
                   help="reproduce the file's frames at these times (seconds, or frames like 30f)")
    g.add_argument("--keep", metavar="FILE[:FRAMES]", help="reproduce these frames of the file at their own times "
                                                          "(FRAMES: 0-20,45,60-80; none: every frame)")
    g.add_argument("--in_between", metavar="FILE[:START-END]",
                   help="keep the first and last quarter of the motion, fill the middle from the prompts")
    g.add_argument("--edit", nargs="+", metavar="PART",
                   help="upper_body or lower_body: keep only that body part of the known motion "
                        "(with FILE[:START-END]: of that whole motion) and regenerate the rest from the prompts")
    g.add_argument("--known_margin", metavar="DURATION",
                   help="generated frames on each side of the known ones eased towards them: seconds or frames "
                        "('4f'); 0: MDM's plain replacement")


# ----------------------------------------------------------------------------------- parse

@dataclass(frozen=True)
class Prompts:
    """The timeline as given: prompts and durations (seconds, or Frames from a scene file)."""

    texts: list[str]
    durations: list[Duration]
    given: bool = True  # durations set by the user (else the defaults)

    def segments(self, fps: float) -> list[tuple[str, int]]:
        """``[(prompt, frames), ...]`` at ``fps`` (a scene file's frames are at the model's fps)."""
        out = [(p, to_frames(d, fps)) for p, d in zip(self.texts, self.durations)]
        for p, frames in out:
            if frames < 1:
                raise UsageError(f"segment {p!r} is shorter than one frame at {fps:g} fps")
        total = sum(f for _, f in out) / fps
        if total > MAX_ROW_SECONDS:
            raise UsageError(f"the motion would last {total:g} s at {fps:g} fps; the limit is "
                             f"{MAX_ROW_SECONDS:g} s per motion")
        return out


def source_prompts(args: argparse.Namespace) -> tuple[list[str], list[Optional[Duration]]]:
    """Prompts and their durations (None: the default) from --prompts, --text_prompt or --input_text."""
    if args.input_text:
        scene = read_scene_file(args.input_text)
        return scene.texts, scene.durations
    given = [args.text_prompt] if args.text_prompt is not None else args.prompts
    texts = [clean_prompt(p, f"prompt {i + 1}") for i, p in enumerate(given)]
    return texts, [None] * len(texts)


def parse_prompts(args: argparse.Namespace) -> Prompts:
    """Prompts and durations from --prompts/--text_prompt/--input_text and --seconds/--motion_length."""
    texts, file_durations = source_prompts(args)
    given = [args.motion_length] if args.motion_length is not None else args.seconds
    if given:
        where = "--motion_length" if args.motion_length is not None else "seconds"
        values: list[Duration] = [parse_seconds(s, where) for s in given]
        if len(values) == 1:
            values = values * len(texts)
        elif len(values) != len(texts):
            raise UsageError(f"got {len(values)} --seconds values for {len(texts)} prompts; "
                             "give one value per prompt or a single value for all")
    else:
        values = [d if d is not None else defaults.SEGMENT_SECONDS for d in file_durations]
    seconds = sum(v for v in values if not isinstance(v, Frames))  # frames are checked at the model's fps
    if seconds > MAX_ROW_SECONDS:
        raise UsageError(f"the motion would last {seconds:g} s; the limit is {MAX_ROW_SECONDS:g} s per motion")
    return Prompts(texts, values, bool(given) or any(d is not None for d in file_durations))


def parse_overlap(text: Optional[str]):
    """The overlap as seconds ('1.0', '1s') or Frames ('20f'); None keeps the method's default."""
    if text is None:
        return None
    try:
        return parse_duration(text, "overlap")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option finite and in range (the limit in the message)."""
    if not 1 <= args.steps <= 1000:
        raise UsageError(f"--steps must be between 1 and 1000 (the trained timesteps), got {args.steps}")
    if not (math.isfinite(args.eta) and args.eta >= 0):
        raise UsageError(f"--eta must be a finite number >= 0, got {args.eta}")
    if args.eta != defaults.ETA and "eta" not in SAMPLERS[args.sampler].options:
        raise UsageError(f"--eta applies to samplers {[n for n, s in SAMPLERS.items() if 'eta' in s.options]}, "
                         f"not to {args.sampler!r}")
    if not (math.isfinite(args.guidance_param) and 0 <= args.guidance_param <= MAX_GUIDANCE):
        raise UsageError(f"--guidance_param must be a finite number between 0 and {MAX_GUIDANCE:g}, "
                         f"got {args.guidance_param}")
    for name, top in (("num_samples", MAX_ROWS), ("num_repetitions", MAX_ROWS), ("batch_size", MAX_BATCH)):
        if not 1 <= getattr(args, name) <= top:
            raise UsageError(f"--{name} must be between 1 and {top}, got {getattr(args, name)}")
    if args.num_samples * args.num_repetitions > MAX_ROWS:
        raise UsageError(f"--num_samples x --num_repetitions must be at most {MAX_ROWS}, "
                         f"got {args.num_samples * args.num_repetitions}")


def method_options(method: str, overlap, transition: str, merge: Optional[str] = None) -> Any:
    """The method's options with the command line's overlap, transition and merge where it has them."""
    spec = get_method(method)
    values: dict[str, Any] = {}
    if overlap is not None and "overlap" in spec.option_names():
        values["overlap"] = overlap
    if "transition" in spec.option_names():
        values["transition"] = transition
    if merge is not None:
        if "merge" not in spec.option_names():
            raise UsageError(f"--merge applies to method 'collage', not to {method!r}")
        values["merge"] = merge
    return spec.make_options(values)


def default_output_dir(prompts: Sequence[str], method: str, loop: bool, seed: int) -> Path:
    words = re.sub(r"[^a-z0-9]+", "_", prompts[0].lower()).strip("_")[:40] or "motion"
    more = f"_and_{len(prompts) - 1}_more" if len(prompts) > 1 else ""
    return REPO_ROOT / "save" / "samples" / f"{method}{'_loop' if loop else ''}_{words}{more}_seed{seed}"


@dataclass(frozen=True)
class Job:
    """Everything ``sample`` will do, checked before the model is loaded."""

    args: argparse.Namespace
    prompts: Prompts
    options: Any
    device: str
    out_dir: Path
    constraint: Any = None  # a constraints.ConstraintRequest


def parse(args: argparse.Namespace) -> Job:
    """Check every setting and the output path before anything slow starts."""
    from motion_core.devices import resolve_device

    check_numbers(args)
    device = resolve_device(args.device)
    if args.dtype != "fp32" and device == "cpu":
        raise UsageError(f"--dtype {args.dtype} needs a GPU; on the CPU use --dtype fp32")
    if getattr(args, "cuda_graph", False) and not device.startswith("cuda"):
        raise UsageError(f"--cuda_graph needs a CUDA device; --device {args.device} resolved to {device}")
    prompts = parse_prompts(args)
    get_method(args.method).check_loop(args.loop)
    constraint = parse_constraint(args)
    options = method_options(args.method, parse_overlap(args.overlap), args.transition, args.merge)
    if args.stats_dir is not None and not Path(args.stats_dir).is_dir():
        raise UsageError(f"--stats_dir {args.stats_dir} is not a folder")
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(
        prompts.texts, args.method, args.loop, args.seed)
    check_output_folder(out_dir, args.overwrite)
    return Job(args, prompts, options, device, out_dir, constraint)


def parse_constraint(args: argparse.Namespace):
    """The known-motion request of --prefix/--keyframes/--keep/--in_between/--edit (files checked now)."""
    from .constraints import parse_request

    request = parse_request(args.prefix, args.keyframes, args.keep, args.in_between, args.edit, args.known_margin)
    if request is not None:
        get_method(args.method).check_constraint(request)
    return request


# ----------------------------------------------------------------------------------- build

def build(job: Job):
    """Load the model (and check the body model and statistics) before sampling."""
    from mdm_adapter import load

    args = job.args
    if args.render == "smpl":
        from .smpl_fit import load_smpl
        load_smpl(args.smpl_dir)  # a missing body model fails now, not after sampling
    model = load(Path(args.model_path) if args.model_path else DEFAULT_MODEL, device=job.device,
                 guidance_scale=args.guidance_param, clip_path=args.clip_path, stats_dir=args.stats_dir)
    _ = model.model_stats  # fail now, not after sampling, if the statistics are missing
    check_skeleton(args, model.spec)
    model.denoiser.cuda_graph = bool(getattr(args, "cuda_graph", False))
    return model


def check_skeleton(args: argparse.Namespace, spec) -> None:
    """--render smpl and --export bvh need HumanML3D's 22 joints: say so before sampling."""
    from motion_core.spec import HUMANML3D

    asked = [f"--{k} {getattr(args, k)}" for k, v in (("render", "smpl"), ("export", "bvh")) if getattr(args, k) == v]
    if asked and spec.num_joints != HUMANML3D.num_joints:
        verb = "need" if len(asked) > 1 else "needs"
        raise UsageError(f"{' and '.join(asked)} {verb} the {HUMANML3D.num_joints}-joint HumanML3D skeleton; this "
                         f"model makes {spec.num_joints}-joint {spec.name} motion (use --render skeleton, no --export)")


# ----------------------------------------------------------------------------------- generate

@dataclass
class Generated:
    results: dict
    features: np.ndarray
    settings: dict


def check_timeline(job: Job, model) -> tuple[list[tuple[str, int]], Any]:
    """The segments at the model's fps (known segments included) and the constraint, after the
    method's check of its graphs (one line if bad)."""
    from .graph import GraphError

    segments, constraint = job.prompts.segments(model.spec.fps), None
    if job.constraint is not None:
        from .constraints import build_constraint, load_known_motion
        motion = load_known_motion(job.constraint.path, model.spec, model.model_stats)
        segments, constraint = build_constraint(job.constraint, motion, segments, job.prompts.given, model.spec)
    try:
        get_method(job.args.method).check_timeline([segments], model.spec.max_frames, model.spec.fps,
                                                   job.options, job.args.loop)
    except GraphError as exc:
        raise UsageError(str(exc)) from None
    return segments, constraint


def generate(job: Job, model) -> Generated:
    """All rows, batch by batch, each row seeded by its global index."""
    from .pipeline import generate_motions

    args = job.args
    segments, constraint = check_timeline(job, model)
    n_rows = args.num_samples * args.num_repetitions
    started = time.perf_counter()
    features, joints, seg_rows = [], [], []
    for first in range(0, n_rows, args.batch_size):
        count = min(args.batch_size, n_rows - first)
        batch = generate_motions(model, [segments] * count, method=args.method, method_options=job.options,
                                 loop=args.loop, sampler=args.sampler, steps=args.steps, eta=args.eta,
                                 guidance=args.guidance_param, seed=args.seed, row_offset=first, dtype=args.dtype,
                                 progress=True, constraint=constraint)
        features.append(batch.features)
        joints += batch.joints
        seg_rows += [[{"text": str(s.prompt), "start": s.start, "end": s.end} for s in g.segments]
                     for g in batch.generation.graphs]
    text = " | ".join(str(p) for p, _ in segments)
    results = results_dict(joints, seg_rows, [text] * n_rows, args.num_samples, args.num_repetitions, args.loop)
    settings = job_settings(job, model, segments, time.perf_counter() - started)
    settings["constraint"] = None if constraint is None else constraint.settings
    return Generated(results, np.concatenate(features), settings)


def job_settings(job: Job, model, segments: list[tuple[str, int]], seconds: float) -> dict:
    """args.json: every setting, resolved."""
    spec = get_method(job.args.method)
    frame_kwargs = spec.make_options(job.options).frame_kwargs(model.spec.fps)
    overlap = getattr(job.options, "overlap", None)
    return {**vars(job.args), "device": job.device, "resolved_model_path": str(model.path),
            "segments_frames": [[str(p), f] for p, f in segments],
            "overlap_frames": None if overlap is None else to_frames(overlap, model.spec.fps),
            "method_options": {**frame_kwargs, **({"loop": job.args.loop} if spec.loops else {})},
            "total_frames": sum(f for _, f in segments), "fps": model.spec.fps,
            "max_piece_frames": model.max_piece_frames,
            "sampling_seconds": round(seconds, 3)}


# ----------------------------------------------------------------------------------- save

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
    (folder / "args.json").write_text(json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")


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
                from .smpl_fit import export_obj, fit_smpl, load_smpl, mdm_smpl_params, render_mesh, save_fit, \
                    save_mdm_params
                body = load_smpl(args.smpl_dir)
                fit = fit_smpl(joints, body, progress=True)
                save_fit(fit, folder / f"{name}_smpl.npz")
                save_mdm_params(mdm_smpl_params(fit, body, caption), folder / f"{name}_smpl_params.npy")
                export_obj(fit.vertices, fit.faces, folder / f"{name}_obj")
                render_mesh(fit.vertices, fit.faces, folder / f"{name}_mesh.mp4", fps=spec.fps, title=caption,
                            progress=True)


def save(job: Job, model, out: Generated) -> Path:
    """Everything into a temporary folder beside the target, renamed into place when complete."""
    with staged_dir(job.out_dir, overwrite=job.args.overwrite) as tmp:
        save_outputs(tmp, out.results, out.features, out.settings)
        render_videos(tmp, out.results, job.args, model.spec)
        if job.args.export is not None:
            from .export import export_results  # lazily: only runs asking for an export need it
            export_results(out.results, tmp, fmt=job.args.export)
    return job.out_dir


# ----------------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> str:
    """parse -> build -> generate -> save; returns the final line to print."""
    job = parse(args)
    model = build(job)
    out_dir = save(job, model, generate(job, model))
    return f"done: results, features, settings and videos in {out_dir}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    with terminate_as_exit():  # SIGTERM removes the temporary output like Ctrl-C does
        return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    exit_without_teardown(main())
