"""Convert a folder of BVH files into a HumanML3D-layout dataset folder.

    python -m prepare.convert_bvh SRC_DIR OUT_DIR [--skeleton bandai|cmu|auto] [--workers N]
                                  [--mirror] [--overwrite]

Output (written to a temporary folder next to OUT_DIR and moved into place at the end, so
OUT_DIR is never half-written; a temporary left by a killed run is removed by the next)::

    OUT_DIR/new_joint_vecs/<id>.npy   float32 [T-1, 263]  HumanML3D features
    OUT_DIR/new_joints/<id>.npy       float32 [T, 22, 3]  the joints the features encode
                                      (uniform skeleton, floor at 0, frame 0 at the origin
                                      facing +Z; note: HumanML3D's own new_joints holds the
                                      T-1 frames recovered from the features, which equal
                                      our first T-1 frames to float precision)
    OUT_DIR/Mean.npy, Std.npy         float32 [263]  (Std: HumanML3D convention, see
                                      motion_core.normalization.humanml_std)
    OUT_DIR/conversion.json           settings, per-clip records and skipped files
    OUT_DIR/texts/<id>.txt            only when a ``captions`` callback is given

``<id>`` is the BVH file's stem (``M<id>`` for mirrored copies). A JSON file with the same
stem next to a BVH file is read as the clip's labels; for the Bandai Namco layout
(``<dataset>/data/*.bvh`` with ``<dataset>/cfg/{content,style}_label.txt``) label names are
added as ``content_name`` / ``style_name``. Unreadable files are skipped and reported.
"""
from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.spec import HUMANML3D
from motion_core.atomic import init_worker, staged_dir, terminate_as_exit
from prepare.bvh import read_bvh
from prepare.skeletons import SKELETONS, SkeletonMap, get_skeleton, guess_skeleton, resample

if TYPE_CHECKING:
    from motion_core.normalization import RunningMoments

PathLike = Union[str, Path]
SkeletonArg = Union[str, SkeletonMap]  # "bandai", "cmu", "auto" or a map


@dataclass(frozen=True)
class ClipRecord:
    """One converted clip. ``num_frames`` counts joint frames at the dataset's frame rate
    (the features have ``num_frames - 1`` rows)."""

    id: str
    source: str
    num_frames: int
    labels: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be converted, and why (``kind``: "unreadable", "too-short" or
    "duplicate-id")."""

    path: str
    reason: str
    kind: str = "unreadable"


def find_bvh_files(src_dir: PathLike) -> list[Path]:
    """All ``*.bvh`` files under ``src_dir`` (recursive), sorted by path."""
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist; pass a folder of .bvh files")
    return sorted(p for p in src.rglob("*") if p.suffix.lower() == ".bvh" and p.is_file())


def read_labels(bvh_path: PathLike) -> dict:
    """Labels of a clip from the JSON file next to it (``{}`` if there is none). Adds
    ``content_name`` / ``style_name`` from ``../cfg/*_label.txt`` when present (Bandai Namco
    layout; the ``dataset-N_`` prefix of the names is removed)."""
    bvh_path = Path(bvh_path)
    json_path = bvh_path.with_suffix(".json")
    if not json_path.is_file():
        return {}
    try:
        labels = json.loads(json_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"labels file {json_path}: invalid JSON ({exc})") from None
    if not isinstance(labels, dict):
        raise ValueError(f"labels file {json_path}: expected a JSON object, got {type(labels).__name__}")
    cfg = bvh_path.parent.parent / "cfg"
    for key in ("content", "style"):
        names_file = cfg / f"{key}_label.txt"
        if isinstance(labels.get(key), int) and names_file.is_file():
            names = [ln.strip() for ln in names_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if 0 <= labels[key] < len(names):
                name = names[labels[key]]
                if name.startswith("dataset-") and "_" in name:
                    name = name.split("_", 1)[1]
                labels[f"{key}_name"] = name
    return labels


MAX_FPS = 1000.0  # output frame rates above this are a typo, not a dataset
MAX_WORKERS = 64
MAX_CLIP_FRAMES = 1_000_000  # output frames of one clip (14 h at 20 fps): beyond, memory runs out


def check_options(fps: float, min_frames: int, workers: int, skeleton: SkeletonArg = "bandai") -> None:
    """Raise ValueError naming the option, its value and the accepted range."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise ValueError(f"fps {fps!r} is not a frame rate in (0, {MAX_FPS:g}]; "
                         f"pass e.g. {HUMANML3D.fps:g} (the HumanML3D rate)")
    if isinstance(min_frames, bool) or not isinstance(min_frames, numbers.Integral) \
            or not 2 <= min_frames <= MAX_CLIP_FRAMES:
        raise ValueError(f"min_frames {min_frames!r} is not a whole number in [2, {MAX_CLIP_FRAMES}]; "
                         f"a clip needs at least 2 frames (one feature row)")
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be >= 1 and <= {MAX_WORKERS}, got {workers!r}")
    if isinstance(skeleton, str) and skeleton != "auto":
        get_skeleton(skeleton)


def check_output(out: Path, src: Path, overwrite: bool) -> None:
    """Refuse an output folder that is a file, holds files (unless ``overwrite``), or holds
    the source folder (writing it would replace the BVH files)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} is a file; give the path of a folder")
    resolved_src, resolved_out = src.resolve(), out.resolve()
    if resolved_src == resolved_out or resolved_out in resolved_src.parents:
        raise ValueError(f"output folder {out} holds the source folder {src}; writing it would replace "
                         f"the BVH files: choose an output folder outside {src}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} exists and is not empty; choose another folder or pass overwrite")


def bvh_to_joints(path: PathLike, skeleton: SkeletonArg = "bandai", fps: float = HUMANML3D.fps) -> np.ndarray:
    """HumanML3D joint positions ``[T, 22, 3]`` (metres, Y up, resampled to ``fps``) of a BVH
    file, before retargeting and canonicalisation."""
    bvh = read_bvh(path)
    skel = _resolve_skeleton(skeleton, bvh)
    out_frames = int((bvh.num_frames - 1) * fps / bvh.fps) + 1 if bvh.num_frames else 0
    if out_frames > MAX_CLIP_FRAMES:
        raise ValueError(f"{bvh.source}: {bvh.num_frames} frames at {bvh.fps:g} fps make {out_frames} frames at "
                         f"{fps:g} fps, more than the {MAX_CLIP_FRAMES} one clip may have; split the file")
    return resample(skel.joints(bvh), bvh.fps, fps)


def _resolve_skeleton(skeleton: SkeletonArg, bvh=None) -> SkeletonMap:
    if isinstance(skeleton, SkeletonMap):
        return skeleton
    if skeleton == "auto":
        if bvh is None:
            raise ValueError("skeleton 'auto' needs a BVH file to inspect")
        return guess_skeleton(bvh)
    return get_skeleton(skeleton)


@dataclass(frozen=True)
class _Job:
    path: Path
    out_dir: Path
    skeleton: SkeletonArg
    fps: float
    mirror: bool
    min_frames: int


@dataclass
class _JobResult:
    records: list[ClipRecord]
    moments: list[tuple[int, np.ndarray, np.ndarray]]  # per clip: (count, mean, m2)
    skipped: Optional[SkippedFile] = None


class _TooShort(ValueError):
    """A clip with fewer frames than ``min_frames``."""


# Errors that make one file unusable (its numbers, its text, its disk): it is skipped, the others go on.
_FILE_ERRORS = (ValueError, KeyError, OSError, ArithmeticError, MemoryError, RecursionError)


def _clip_outputs(job: _Job) -> tuple[dict, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Labels and (id, canonical joints, features) of the clip and its mirror; raises on a bad file."""
    from motion_collage.representation import canonical_joints_and_features, mirror_joints

    labels = read_labels(job.path)
    with np.errstate(all="ignore"):  # overflow in a hostile file ends in the finiteness check
        joints = bvh_to_joints(job.path, job.skeleton, job.fps)
        if joints.shape[0] < job.min_frames:
            raise _TooShort(f"{joints.shape[0]} frames at {job.fps:g} fps, fewer than the minimum {job.min_frames}")
        variants = [(job.path.stem, joints)]
        if job.mirror:
            variants.append(("M" + job.path.stem, mirror_joints(joints)))
        outputs = []
        for clip_id, clip_joints in variants:
            canon, feats = canonical_joints_and_features(clip_joints)
            if not (np.isfinite(canon).all() and np.isfinite(feats).all()):
                raise ValueError("features contain NaN or inf")
            outputs.append((clip_id, canon.astype(np.float32), feats.astype(np.float32)))
    return labels, outputs


def _convert_one(job: _Job) -> _JobResult:
    """Convert one BVH file (runs in a worker process). Never raises for a bad file."""
    try:
        labels, outputs = _clip_outputs(job)
    except _FILE_ERRORS as exc:
        reason = str(exc).replace(str(job.path), "").strip(" :") or type(exc).__name__
        kind = "too-short" if isinstance(exc, _TooShort) else "unreadable"
        return _JobResult([], [], SkippedFile(str(job.path), " ".join(reason.split()), kind))

    records, moments = [], []
    for clip_id, canon, feats in outputs:
        np.save(job.out_dir / "new_joints" / f"{clip_id}.npy", canon)
        np.save(job.out_dir / "new_joint_vecs" / f"{clip_id}.npy", feats)
        f64 = feats.astype(np.float64)
        mean = f64.mean(0)
        moments.append((f64.shape[0], mean, ((f64 - mean) ** 2).sum(0)))
        records.append(ClipRecord(clip_id, str(job.path), int(canon.shape[0]), dict(labels)))
    return _JobResult(records, moments)


def convert_folder(
    src_dir: PathLike,
    out_dir: PathLike,
    *,
    skeleton: SkeletonArg = "bandai",
    fps: float = HUMANML3D.fps,
    mirror: bool = False,
    min_frames: int = 2,
    captions: Optional[Callable[[ClipRecord], Sequence[str]]] = None,
    finalize: Optional[Callable[[Path, list[ClipRecord]], None]] = None,
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
) -> tuple[list[ClipRecord], list[SkippedFile]]:
    """Convert every BVH file under ``src_dir`` into a HumanML3D-layout folder ``out_dir``.

    skeleton: "bandai", "cmu", "auto" (per file, by joint names) or a ``SkeletonMap``.
    fps: output frame rate, in (0, MAX_FPS].
    mirror: also write a left-right mirrored copy ``M<id>`` of each clip (HumanML3D's
        augmentation); mirrored clips count in Mean/Std.
    min_frames: clips shorter than this (joint frames at ``fps``; at least 2) are skipped.
    captions: called with each record; the returned lines are written verbatim to
        ``texts/<id>.txt`` (HumanML3D format ``caption#tokens#from#to`` is up to the caller).
    finalize: called as ``finalize(tmp_out_dir, records)`` after everything else is written
        and before the folder is moved into place, e.g. to write split files.
    workers: processes converting files in parallel (results do not depend on it).
    overwrite: replace an existing non-empty ``out_dir``; otherwise that is an error.

    Everything is written into a temporary folder beside ``out_dir`` that is renamed into
    place when complete; temporaries of killed earlier runs are removed first.
    Returns the records of converted clips (sorted by id) and the skipped files with reasons.
    """
    check_options(fps, min_frames, workers, skeleton)
    src, out = Path(src_dir), Path(out_dir)
    files = find_bvh_files(src)
    if not files:
        raise FileNotFoundError(f"no .bvh files under {src_dir}; pass the folder that holds them")
    check_output(out, src, overwrite)
    from motion_core.normalization import ModelStats  # torch: imported once the inputs look right

    with staged_dir(out, overwrite=overwrite) as tmp:
        (tmp / "new_joints").mkdir()
        (tmp / "new_joint_vecs").mkdir()
        jobs, skipped = _plan_jobs(files, _Job(Path(), tmp, skeleton, fps, mirror, min_frames))
        records, more_skipped, moments = _collect(_run_jobs(jobs, workers, progress))
        skipped = sorted(skipped + more_skipped, key=lambda s: s.path)
        if not records:
            raise ValueError(_nothing_converted(len(files), src_dir, skipped, min_frames))
        ModelStats(*moments.humanml_stats()).save(tmp)
        _write_captions(tmp, records, captions)
        _write_manifest(tmp / "conversion.json", src, skeleton, fps, mirror, records, skipped)
        if finalize is not None:
            finalize(tmp, records)
    return records, skipped


def _plan_jobs(files: list[Path], template: _Job) -> tuple[list[_Job], list[SkippedFile]]:
    """One job per file; files sharing a stem (the clip id) are all skipped."""
    stems: dict[str, list[Path]] = {}
    for path in files:
        stems.setdefault(path.stem, []).append(path)
    jobs, skipped = [], []
    for path in files:
        users = len(stems[path.stem])
        if users > 1:
            skipped.append(SkippedFile(str(path), f"clip id {path.stem!r} is used by {users} files", "duplicate-id"))
        else:
            jobs.append(replace(template, path=path))
    return jobs, skipped


def _collect(results: list[_JobResult]) -> tuple[list[ClipRecord], list[SkippedFile], RunningMoments]:
    """Records sorted by id, skipped files, and feature moments summed in clip-id order."""
    from motion_core.normalization import RunningMoments

    records: list[ClipRecord] = []
    skipped: list[SkippedFile] = []
    clip_moments = []
    for res in results:
        if res.skipped is not None:
            skipped.append(res.skipped)
        records.extend(res.records)
        clip_moments.extend(zip((r.id for r in res.records), res.moments))
    moments = RunningMoments(HUMANML3D.feature_dim)
    for _, (count, mean, m2) in sorted(clip_moments, key=lambda item: item[0]):
        moments.add_moments(count, mean, m2)
    records.sort(key=lambda r: r.id)
    return records, skipped, moments


_KIND_TEXT = {"too-short": "too short (lower min_frames)", "unreadable": "unreadable",
              "duplicate-id": "sharing a clip id (rename them)"}


def _nothing_converted(count: int, src_dir: PathLike, skipped: list[SkippedFile], min_frames: int) -> str:
    """One line: why none of ``count`` files converted, most common reason first, one example each."""
    groups: dict[str, list[SkippedFile]] = {}
    for s in skipped:
        groups.setdefault(s.kind, []).append(s)
    parts = [f"{len(items)} {_KIND_TEXT.get(kind, kind)}, e.g. {Path(items[0].path).name}: {items[0].reason}"
             for kind, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    return f"none of the {count} BVH files under {src_dir} could be converted: " + "; ".join(parts)


def _write_captions(tmp: Path, records: list[ClipRecord],
                    captions: Optional[Callable[[ClipRecord], Sequence[str]]]) -> None:
    if captions is None:
        return
    (tmp / "texts").mkdir()
    for rec in records:
        lines = list(captions(rec))
        (tmp / "texts" / f"{rec.id}.txt").write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")


def _run_jobs(jobs: list[_Job], workers: int, progress: bool) -> list[_JobResult]:
    bar = tqdm(total=len(jobs), desc="converting BVH", unit="file", disable=not progress)
    try:
        if workers == 1 or len(jobs) < 2:
            results = []
            for job in jobs:
                results.append(_convert_one(job))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
            results = []
            for res in pool.map(_convert_one, jobs, chunksize=4):
                results.append(res)
                bar.update()
            return results
    finally:
        bar.close()


def _write_manifest(path: Path, src: Path, skeleton: SkeletonArg, fps: float, mirror: bool,
                    records: list[ClipRecord], skipped: list[SkippedFile]) -> None:
    from motion_core.normalization import STD_FLOOR

    def rel(p: str) -> str:
        try:
            return str(Path(p).relative_to(src))
        except ValueError:
            return p

    manifest = {
        "skeleton": skeleton.name if isinstance(skeleton, SkeletonMap) else skeleton,
        "fps": fps,
        "mirror": mirror,
        "target_skeleton": "SMPL neutral rest-pose bone lengths (motion_collage.representation.REFERENCE_BONE_LENGTHS)",
        "std_floor": STD_FLOOR,
        "clips": [dict(asdict(r), source=rel(r.source)) for r in records],
        "skipped": [dict(path=rel(s.path), reason=s.reason) for s in skipped],
    }
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# CLI: parse -> convert -> report
# ---------------------------------------------------------------------------------------------

def build_parser() -> OneLineParser:
    """The command line of ``python -m prepare.convert_bvh``."""
    parser = OneLineParser(
        prog="python -m prepare.convert_bvh",
        description="Convert a folder of BVH mocap into a HumanML3D-layout dataset folder.",
    )
    parser.add_argument("src_dir", help="folder searched recursively for .bvh files (+ label .json)")
    parser.add_argument("out_dir", help="output folder (must not exist or be empty unless --overwrite)")
    parser.add_argument("--skeleton", default="bandai", choices=[*SKELETONS, "auto"],
                        help="joint naming of the files (default: bandai)")
    parser.add_argument("--fps", type=float, default=HUMANML3D.fps,
                        help=f"output frame rate, in (0, {MAX_FPS:g}] (default: 20)")
    parser.add_argument("--workers", type=int, default=1, help=f"parallel processes, 1 to {MAX_WORKERS} (default: 1)")
    parser.add_argument("--mirror", action="store_true", help="also write mirrored copies M<id>")
    parser.add_argument("--min-frames", type=int, default=2, help="skip shorter clips (at least 2; default: 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    return parser


def run(args: argparse.Namespace) -> str:
    """Convert as the parsed command line says; skipped files go to stderr; returns the summary."""
    try:
        with terminate_as_exit():
            records, skipped = convert_folder(
                args.src_dir, args.out_dir, skeleton=args.skeleton, fps=args.fps, mirror=args.mirror,
                min_frames=args.min_frames, workers=args.workers, progress=sys.stderr.isatty(),
                overwrite=args.overwrite,
            )
    except FileExistsError as exc:
        raise UsageError(str(exc).replace("pass overwrite", "pass --overwrite")) from None
    for s in skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    frames = sum(r.num_frames for r in records)
    return f"converted {len(records)} clips ({frames} frames, {frames / args.fps / 60:.1f} min) into {args.out_dir}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: parse, convert, report; a user mistake is one line and exit status 2."""
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
