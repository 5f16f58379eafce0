"""Constrained collage: known motion (a prefix, keyframes, kept frames, the ends of an in-between,
a body part) that the generated timeline must reproduce.

A :class:`Constraint` holds, for one timeline of ``T`` frames, the known de-normalised features
``known [T, D]`` and a mask ``mask [T, D]`` over frames and feature dimensions. The collage
denoiser applies it to the merged x0 at every step (:class:`ConstraintApplier`): MDM's editing
choice, replacement of x0 on the mask, inside the same single batched network call. Samplers
never see it. Two more things make the known frames exact in *joints*, not only in features:

* Joints come from features by integrating the root velocities
  (:func:`motion_collage.representation.recover_root`). Known frames keep their own root
  velocities, so a prefix's joints are the given ones and the generated part starts where the
  prefix ends.
* A generated gap *before* known frames (a keyframe, the end of an in-between) would leave those
  frames wherever the gap's integrated root happens to arrive. Each such gap is **anchored**:
  after the replacement, the gap's root rotation velocities get the uniform offset that makes the
  heading arrive at the known one, then its root linear velocities the smallest (uniform in world
  space) correction that makes the position arrive at the known one. So every known frame lands
  at the given joints (the clip's, with its frame 0 at the timeline's origin).

Body parts (:func:`part_joints`, :func:`part_mask`) are derived from the spec: the lower body is
the root plus every joint on a kinematic chain that holds a foot joint; the upper body is the
rest. Every feature dimension belongs to one joint (:func:`feature_joints`): root velocities and
height to the root, ``ric``/``rot``/``local_vel`` entries to their joint, foot contacts to their
foot joints.

Sources (:func:`load_known_motion`): a BVH file (through :mod:`prepare.convert_bvh`), our
``results.npy`` (its ``features.npy`` when beside it) or ``features.npy``, a HumanML3D
``new_joint_vecs`` file ``[T, D]`` (de-normalised features) or ``new_joints`` ``[T, J, 3]``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from motion_core.normalization import ModelStats
from motion_core.spec import DatasetSpec, feature_slices

from .graph import FactorGraph, Node

PathLike = Union[str, Path]
PARTS = ("upper_body", "lower_body")
MODES = ("prefix", "keyframes", "keep", "in_between", "edit")
# MDM's in-between split (sample/edit.py defaults prefix_end 0.25, suffix_start 0.75): the first
# quarter and the last quarter of the given motion are kept.
IN_BETWEEN_SPLIT = (0.25, 0.75)
DEFAULT_MARGIN = 0.5  # seconds eased on each side of known frames (margin_weights); chosen by measurement, README
ROOT_DIMS = 3  # root rotation velocity, root linear velocity x, z: what the root trajectory integrates


# ----------------------------------------------------------------------------------- body parts

def part_joints(spec: DatasetSpec) -> dict[str, tuple[int, ...]]:
    """Joints of each body part: ``lower_body`` = the root and the joints of every kinematic chain
    that holds a foot joint; ``upper_body`` = all other joints."""
    feet = {j for side in spec.foot_joints for j in side}
    lower = {0}
    for chain in spec.kinematic_chains:
        if feet & set(chain):
            lower |= set(chain)
    upper = set(range(spec.num_joints)) - lower
    return {"upper_body": tuple(sorted(upper)), "lower_body": tuple(sorted(lower))}


def feature_joints(spec: DatasetSpec) -> np.ndarray:
    """The joint each feature dimension describes, ``[D]`` int (from :func:`feature_slices`)."""
    s = feature_slices(spec)
    out = np.full(spec.feature_dim, -1, dtype=np.int64)
    for name in ("root_rot_vel", "root_lin_vel", "root_y"):
        out[s[name]] = 0
    joints = np.arange(1, spec.num_joints)
    out[s["ric"]] = np.repeat(joints, 3)
    out[s["rot"]] = np.repeat(joints, 6)
    out[s["local_vel"]] = np.repeat(np.arange(spec.num_joints), 3)
    out[s["foot_contact"]] = [j for side in spec.foot_joints for j in side]
    assert (out >= 0).all()
    return out


def part_mask(spec: DatasetSpec, part: str) -> np.ndarray:
    """Boolean ``[D]``: the feature dimensions of a body part (``upper_body`` or ``lower_body``)."""
    if part not in PARTS:
        raise ValueError(f"unknown body part {part!r}; expected one of {list(PARTS)}")
    return np.isin(feature_joints(spec), part_joints(spec)[part])


def kept_mask(spec: DatasetSpec, part: str) -> np.ndarray:
    """Boolean ``[D]``: the dimensions an edit that keeps ``part`` reproduces. A part without the
    root keeps its joints' positions, rotations and contacts but not their velocities: those are
    world-frame differences (HumanML3D's ``local_vel``), so they carry the root's travel, and a
    kept standing upper body would forbid the generated legs to walk."""
    mask = part_mask(spec, part).copy()
    if 0 not in part_joints(spec)[part]:
        mask[feature_slices(spec)["local_vel"]] = False
    return mask


# ----------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class KnownMotion:
    """A given clip: de-normalised features ``[T, D]`` (float64) and where they came from."""

    features: np.ndarray
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])


def _check_features(features: np.ndarray, path: Path, spec: DatasetSpec) -> np.ndarray:
    if features.shape[-1] != spec.feature_dim:
        raise ValueError(f"{path} has {features.shape[-1]}-dim features; this model uses {spec.feature_dim}-dim "
                         f"{spec.name} features (a motion of another dataset)")
    if features.shape[0] < 1:
        raise ValueError(f"{path} holds no frames")
    if not np.isfinite(features).all():
        raise ValueError(f"{path} contains NaN or inf values")
    return features.astype(np.float64)


def _from_joints(joints: np.ndarray, path: Path, spec: DatasetSpec, retarget: bool) -> np.ndarray:
    from .representation import REFERENCE_BONE_LENGTHS, joints_to_features
    if joints.ndim != 3 or joints.shape[1:] != (spec.num_joints, 3):
        raise ValueError(f"{path} holds joints of shape {tuple(joints.shape)}; this model uses "
                         f"[T, {spec.num_joints}, 3] ({spec.name}), a motion of another skeleton")
    if joints.shape[0] < 2:
        raise ValueError(f"{path} has {joints.shape[0]} frame; at least 2 are needed")
    return joints_to_features(joints, bone_lengths=REFERENCE_BONE_LENGTHS if retarget else None, spec=spec)


def _stats_beside(path: Path, fallback: ModelStats) -> ModelStats:
    """The statistics a ``features.npy`` was normalised with: those of the model named in the
    ``args.json`` beside it, else ``fallback`` (the current model's)."""
    settings = path.parent / "args.json"
    if settings.is_file():
        try:
            cfg = json.loads(settings.read_text())
        except (OSError, ValueError):
            cfg = {}
        for folder in (cfg.get("stats_dir"), cfg.get("resolved_model_path")):
            if not folder:
                continue
            folder = Path(folder)
            folder = folder if folder.is_dir() else folder.parent
            if (folder / "Mean.npy").is_file() and (folder / "Std.npy").is_file():
                return ModelStats.from_dir(folder)
    return fallback


def load_known_motion(path: PathLike, spec: DatasetSpec, stats: ModelStats, row: int = 0) -> KnownMotion:
    """The de-normalised features of a given motion file (see the module doc for the formats).

    ``stats``: the current model's statistics (to read a ``features.npy`` that has no
    ``args.json`` beside it). ``row``: which motion of a ``results.npy``/``features.npy``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        if spec.num_joints != 22:
            raise ValueError(f"{path}: BVH files convert to the 22-joint HumanML3D skeleton; this model "
                             f"uses {spec.num_joints}-joint {spec.name} motion")
        from prepare.convert_bvh import bvh_to_joints
        joints = bvh_to_joints(path, "auto", spec.fps)
        return KnownMotion(_check_features(_from_joints(joints, path, spec, retarget=True), path, spec), str(path))
    if suffix != ".npy":
        raise ValueError(f"{path}: expected a .bvh or .npy motion (results.npy, features.npy, new_joint_vecs "
                         f"or new_joints), got {suffix or 'no extension'}")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError:  # a pickled dict: our results.npy
        return _from_results(path, spec, stats, row)
    except OSError as exc:
        raise ValueError(f"cannot read {path} ({' '.join(str(exc).split())})") from None
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{path} holds a {array.dtype} array, not motion")
    if array.ndim == 3 and array.shape[-1] == 3 and array.shape[-2] == spec.num_joints:  # new_joints [T, J, 3]
        return KnownMotion(_check_features(_from_joints(array, path, spec, retarget=False), path, spec), str(path))
    if array.ndim == 3:  # our features.npy [N, T, D], normalised
        _check_features(array[0], path, spec)
        if not 0 <= row < array.shape[0]:
            raise ValueError(f"{path} holds {array.shape[0]} motions; row {row} does not exist")
        return KnownMotion(_check_features(_stats_beside(path, stats).denormalize(array[row].astype(np.float64)),
                                           path, spec), str(path))
    if array.ndim == 2:  # HumanML3D new_joint_vecs [T, D], de-normalised
        return KnownMotion(_check_features(array, path, spec), str(path))
    raise ValueError(f"{path} holds an array of shape {tuple(array.shape)}; expected features [T, {spec.feature_dim}], "
                     f"[N, T, {spec.feature_dim}] or joints [T, {spec.num_joints}, 3]")


def _from_results(path: Path, spec: DatasetSpec, stats: ModelStats, row: int) -> KnownMotion:
    from .safe_pickle import load_npy_object
    results = load_npy_object(path)
    if not isinstance(results, dict) or "motion" not in results:
        raise ValueError(f"{path} is not a results.npy (a dict with 'motion')")
    motion = np.asarray(results["motion"])
    if motion.ndim != 4 or not 0 <= row < motion.shape[0]:
        raise ValueError(f"{path}: 'motion' has shape {tuple(motion.shape)}; expected [N, J, 3, T] with row {row}")
    length = int(np.asarray(results.get("lengths", [motion.shape[-1]] * motion.shape[0]))[row])
    beside = path.parent / "features.npy"
    if beside.is_file():  # the features the joints were recovered from: exact
        feats = load_known_motion(beside, spec, stats, row).features[:length]
        return KnownMotion(feats, str(path))
    joints = np.transpose(motion[row], (2, 0, 1))[:length].astype(np.float64)
    return KnownMotion(_check_features(_from_joints(joints, path, spec, retarget=False), path, spec), str(path))


# ----------------------------------------------------------------------------------- requests

_RANGE = re.compile(r"(\d+)-(\d+)")


@dataclass(frozen=True)
class ConstraintRequest:
    """What the user asked for, checked for syntax (files are read by :meth:`build`).

    ``frames``: for ``prefix``/``in_between``/``edit`` an optional clip range ``(start, end)``
    (end excluded); for ``keep`` a tuple of frame indices (None: every frame); for ``keyframes``
    a tuple of times in seconds or frames (:class:`~motion_collage.methods.base.Frames`).
    ``part``: the body part kept (None: every feature). ``margin``: the soft margin around known
    frames (see :func:`margin_weights`), seconds or :class:`~motion_collage.methods.base.Frames`.
    """

    mode: str
    path: Path
    frames: Optional[tuple] = None
    part: Optional[str] = None
    margin: Union[int, float] = 0  # frames (int or Frames) or seconds (float)

    def settings(self) -> dict:
        return {"mode": self.mode, "file": str(self.path), "part": self.part, "margin": repr(self.margin),
                "frames": None if self.frames is None else [repr(f) if not isinstance(f, (int, float)) else f
                                                            for f in self.frames]}


def _split_path(text: str, sep: str, flag: str) -> tuple[Path, Optional[str]]:
    """``FILE`` or ``FILE<sep>TAIL`` (the last separator, so paths may hold it); the file must exist."""
    path, tail = Path(text), None
    if not path.is_file() and sep in text:
        head, tail = text.rsplit(sep, 1)
        path = Path(head)
    if not str(path):
        raise ValueError(f"{flag}: no file given in {text!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{flag}: motion file {path} does not exist")
    return path, tail


def parse_range(text: Optional[str], flag: str) -> Optional[tuple[int, int]]:
    """``start-end`` frames (end excluded) or None."""
    if text is None:
        return None
    m = _RANGE.fullmatch(text.strip())
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"{flag}: frame range must be START-END with START < END (frames, END excluded), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_frames(text: str, flag: str) -> tuple[int, ...]:
    """``a-b,c,d-e`` -> sorted unique frame indices (ranges exclude their end)."""
    frames: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            frames.add(int(part))
        else:
            start, end = parse_range(part, flag)
            frames.update(range(start, end))
    return tuple(sorted(frames))


def parse_times(text: str, flag: str) -> tuple:
    """``t1,t2,...``: seconds (``1.5``, ``1.5s``) or frames (``30f``)."""
    from .methods.base import parse_duration
    if not text.strip():
        raise ValueError(f"{flag}: give keyframe times after '@', e.g. FILE@1,2.5 (seconds) or FILE@20f,50f")
    return tuple(parse_duration(t, f"{flag} time") for t in text.split(","))


def parse_request(prefix: Optional[str] = None, keyframes: Optional[str] = None, keep: Optional[str] = None,
                  in_between: Optional[str] = None, edit: Optional[Sequence[str]] = None,
                  margin: Optional[str] = None) -> Optional[ConstraintRequest]:
    """The constraint of the command line's flags (at most one source; ``edit`` = ``[PART]`` or
    ``[PART, FILE[:start-end]]``; ``margin``: seconds or ``'Nf'`` frames, None: the default), or
    None. Bad syntax and missing files are one-line errors."""
    from .methods.base import parse_duration
    margin_value = DEFAULT_MARGIN if margin is None else parse_duration(margin, "--known_margin")
    part, edit_file = None, None
    if edit is not None:
        if not 1 <= len(edit) <= 2:
            raise ValueError(f"--edit takes a body part and optionally a motion file: --edit PART [FILE[:START-END]], "
                             f"got {len(edit)} values")
        part = edit[0]
        if part not in PARTS:
            raise ValueError(f"--edit: unknown body part {part!r}; expected one of {list(PARTS)}")
        edit_file = edit[1] if len(edit) == 2 else None
    given = [(m, v) for m, v in (("prefix", prefix), ("keyframes", keyframes), ("keep", keep),
                                 ("in_between", in_between), ("edit", edit_file)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give one motion constraint at a time, got {', '.join('--' + m for m, _ in given)}")
    if not given:
        if margin is not None:
            raise ValueError("--known_margin needs known motion "
                             "(--prefix, --keyframes, --keep, --in_between or --edit)")
        if part is not None:
            raise ValueError("--edit needs a motion: --edit PART FILE[:START-END], or add --keep/--prefix/"
                             "--keyframes/--in_between")
        return None
    mode, text = given[0]
    flag = f"--{mode}"
    if mode == "keyframes":
        path, tail = _split_path(text, "@", flag)
        if tail is None:
            raise ValueError(f"{flag}: expected FILE@T1,T2,... (times in seconds or frames like 20f), got {text!r}")
        return ConstraintRequest(mode, path, parse_times(tail, flag), part, margin_value)
    path, tail = _split_path(text, ":", flag)
    if mode == "keep":
        return ConstraintRequest(mode, path, None if tail is None else parse_frames(tail, flag), part, margin_value)
    return ConstraintRequest(mode, path, parse_range(tail, flag), part, margin_value)


# ----------------------------------------------------------------------------------- constraints

class KnownPrompt(str):
    """The label of a timeline segment made of known motion (a prefix, the ends of an in-between).

    Its factors are denoised with the null condition (see :func:`null_known`); the label only names
    the segment in captions and results."""


@dataclass(frozen=True)
class Constraint:
    """Known de-normalised features on one timeline.

    known: ``[T, D]`` float64 (0 where unknown); mask: ``[T, D]`` bool; clip_frame: ``[T]`` the
    clip frame each known frame comes from (-1: none); trajectory: the clip's root heading
    ``[Tc + 1]`` and position ``[Tc + 1, 3]`` (frame Tc: after its last frame), used to anchor the
    generated gaps before known frames. ``margin``: generated frames on each side of known ones
    eased towards them (0: MDM's plain replacement; see :func:`margin_weights`).
    """

    known: np.ndarray
    mask: np.ndarray
    clip_frame: np.ndarray
    heading: np.ndarray
    position: np.ndarray
    settings: dict = field(default_factory=dict)
    margin: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.known.shape[0])

    def root_known(self) -> np.ndarray:
        """``[T]`` bool: frames whose root velocities are all known."""
        return self.mask[:, :ROOT_DIMS].all(-1)

    def anchors(self) -> list[tuple[int, int, float, np.ndarray]]:
        """Gaps to anchor: ``(start, end, heading change, world xz displacement)`` over frames
        ``start .. end-1``, each followed by a frame whose root is known."""
        known = self.root_known()
        out, t, T = [], 0, self.num_frames
        while t < T:
            if known[t]:
                t += 1
                continue
            start = t
            while t < T and not known[t]:
                t += 1
            if t == T:
                break  # a free end: nothing to arrive at
            if start == 0:
                a0, p0 = 0.0, np.zeros(3)
            else:
                c = self.clip_frame[start - 1] + 1
                a0, p0 = self.heading[c], self.position[c]
            c = self.clip_frame[t]
            out.append((start, t, float(self.heading[c] - a0), (self.position[c] - p0)[[0, 2]]))
        return out


def _clip_trajectory(features: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    from .representation import recover_root
    padded = np.concatenate([features, np.zeros((1, features.shape[1]))])
    heading, position = recover_root(padded, spec)
    return heading, position


def make_constraint(clip: np.ndarray, placements: Sequence[tuple[int, int, int]], num_frames: int,
                    spec: DatasetSpec, part: Optional[str] = None, settings: Optional[dict] = None,
                    margin: int = 0) -> Constraint:
    """A constraint from clip features ``[Tc, D]`` (de-normalised) and placements
    ``(timeline_start, clip_start, count)``: clip frames ``clip_start ..`` at timeline frames
    ``timeline_start ..``. ``part`` keeps only that body part's dimensions."""
    D = spec.feature_dim
    known = np.zeros((num_frames, D))
    frame_known = np.zeros(num_frames, dtype=bool)
    clip_frame = np.full(num_frames, -1, dtype=np.int64)
    for t0, c0, n in placements:
        if not (0 <= t0 and t0 + n <= num_frames and 0 <= c0 and c0 + n <= clip.shape[0]):
            raise ValueError(f"placement {(t0, c0, n)} leaves the timeline ({num_frames}) "
                             f"or the clip ({clip.shape[0]})")
        known[t0:t0 + n] = clip[c0:c0 + n]
        frame_known[t0:t0 + n] = True
        clip_frame[t0:t0 + n] = np.arange(c0, c0 + n)
    dims = np.ones(D, dtype=bool) if part is None else kept_mask(spec, part)
    mask = frame_known[:, None] & dims[None, :]
    known = np.where(mask, known, 0.0)
    heading, position = _clip_trajectory(clip, spec)
    return Constraint(known, mask, clip_frame, heading, position, dict(settings or {}), int(margin))


def null_known(graph: FactorGraph) -> FactorGraph:
    """The graph with every node of a known segment (a :class:`KnownPrompt`) on the null condition."""
    def fix(n: Node) -> Node:
        return Node(n.start, n.length, None) if isinstance(n.prompt, KnownPrompt) else n
    return FactorGraph(graph.num_frames, tuple(map(fix, graph.factors)), tuple(map(fix, graph.variables)),
                       graph.segments, graph.loop)


# ----------------------------------------------------------------------------------- building

def _split_frames(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _fit(segments: list[tuple[str, int]], durations_given: bool, frames: int, what: str, fps: float
         ) -> list[tuple[str, int]]:
    """The prompts' segments filling ``frames``: split equally when no durations were given."""
    if not durations_given:
        if frames < len(segments):
            raise ValueError(f"{what} has {frames} frames, fewer than the {len(segments)} prompts")
        return [(p, n) for (p, _), n in zip(segments, _split_frames(frames, len(segments)))]
    total = sum(n for _, n in segments)
    if total != frames:
        raise ValueError(f"the prompts last {total} frames ({total / fps:g} s) but {what} has {frames} frames "
                         f"({frames / fps:g} s); give durations adding up to it, or none to split it equally")
    return segments


def _clip_range(motion: KnownMotion, frames: Optional[tuple[int, int]], flag: str) -> tuple[int, int]:
    if frames is None:
        return 0, motion.num_frames
    start, end = frames
    if end > motion.num_frames:
        raise ValueError(f"{flag}: frames {start}-{end} are outside {Path(motion.source).name}, which has "
                         f"{motion.num_frames} frames (0-{motion.num_frames})")
    return start, end


def build_constraint(request: ConstraintRequest, motion: KnownMotion, segments: list[tuple[str, int]],
                     durations_given: bool, spec: DatasetSpec) -> tuple[list[tuple[str, int]], Constraint]:
    """The whole timeline's segments (known segments included) and its constraint.

    ``segments``: the prompts' ``(prompt, frames)``; ``durations_given``: whether the user set their
    durations (else modes with a natural length split it equally among the prompts).
    """
    from .methods.base import Frames, to_frames
    flag, fps, name = f"--{request.mode}", spec.fps, Path(motion.source).name
    margin = to_frames(request.margin if isinstance(request.margin, (Frames, float)) else Frames(request.margin), fps)
    settings = {**request.settings(), "clip_frames": motion.num_frames, "margin_frames": margin}
    if request.mode in ("prefix", "in_between", "edit"):
        start, end = _clip_range(motion, request.frames, flag)
        clip = motion.features[start:end]
        length = end - start
        settings["range"] = [start, end]
        if request.mode == "prefix":
            label = KnownPrompt(f"known motion: {name} frames {start}-{end}")
            full = [(label, length)] + segments
            placements = [(0, 0, length)]
        elif request.mode == "edit":
            full = _fit(segments, durations_given, length, f"the edited motion ({name} {start}-{end})", fps)
            placements = [(0, 0, length)]
        else:
            head, tail = int(IN_BETWEEN_SPLIT[0] * length), length - int(IN_BETWEEN_SPLIT[1] * length)
            if head < 1 or tail < 1:
                raise ValueError(f"{flag}: {name} frames {start}-{end} are too short to keep a first and a last part")
            middle = _fit(segments, durations_given, length - head - tail, f"the middle of {name}", fps) \
                if not durations_given else segments
            full = ([(KnownPrompt(f"known motion: {name} frames {start}-{start + head}"), head)] + middle
                    + [(KnownPrompt(f"known motion: {name} frames {end - tail}-{end}"), tail)])
            total = sum(n for _, n in full)
            placements = [(0, 0, head), (total - tail, length - tail, tail)]
            settings["kept"] = [[start, start + head], [end - tail, end]]
        total = sum(n for _, n in full)
        return full, make_constraint(clip, placements, total, spec, request.part, settings, margin)
    # keep / keyframes: the clip's frame t is the timeline's frame t
    total = sum(n for _, n in segments)
    if request.mode == "keep" and request.frames is None:
        segments = _fit(segments, durations_given, motion.num_frames, name, fps)
        frames: Sequence[int] = range(motion.num_frames)
        total = motion.num_frames
    elif request.mode == "keep":
        frames = request.frames
    else:
        frames = sorted({to_frames(t, fps) for t in request.frames})
    for f in frames:
        when = f"frame {f}" + (f" ({f / fps:g} s)" if request.mode == "keyframes" else "")
        if f >= total:
            raise ValueError(f"{flag}: {when} is beyond the motion ({total} frames, {total / fps:g} s)")
        if f >= motion.num_frames:
            raise ValueError(f"{flag}: {when} is beyond {name}, which has {motion.num_frames} frames "
                             f"({motion.num_frames / fps:g} s)")
    settings["kept_frames"] = _runs(frames)
    placements = [(a, a, b - a) for a, b in _runs(frames)]
    return segments, make_constraint(motion.features, placements, total, spec, request.part, settings, margin)


def _runs(frames: Sequence[int]) -> list[list[int]]:
    """Sorted frame indices as ``[start, end)`` runs."""
    out: list[list[int]] = []
    for f in sorted(frames):
        if out and f == out[-1][1]:
            out[-1][1] = f + 1
        else:
            out.append([f, f + 1])
    return out


def borders(constraint: Constraint) -> list[int]:
    """Frame boundaries ``f`` (between frames f-1 and f) where known and generated frames meet."""
    known = constraint.mask.any(-1)
    return [int(f) for f in np.flatnonzero(known[1:] != known[:-1]) + 1]


# ----------------------------------------------------------------------------------- applying

def margin_weights(constraint: Constraint, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The soft margin around known frames: ``(weight [T], source [T])``.

    A generated frame at distance ``d <= margin`` from the nearest frame with known dimensions is
    pulled towards that frame's known values with weight ``(1 + cos(pi d / (margin + 1))) / 2``
    (1 at the known frame, easing to 0); weight 0 elsewhere and on the known frames themselves.
    """
    T = constraint.num_frames
    known = constraint.mask.any(-1)
    weight, source = np.zeros(T), np.zeros(T, dtype=np.int64)
    idx = np.flatnonzero(known)
    if margin <= 0 or idx.size == 0:
        return weight, source
    for t in np.flatnonzero(~known):
        k = idx[np.argmin(np.abs(idx - t))]
        d = abs(int(k) - int(t))
        if d <= margin:
            weight[t], source[t] = 0.5 * (1 + np.cos(np.pi * d / (margin + 1))), k
    return weight, source


class ConstraintApplier:
    """Applies one constraint per batch row to a merged x0 ``[B, T, D]`` (normalised features).

    Replacement on the mask (MDM's editing choice), optionally a soft margin of generated frames
    pulled towards the nearest known frame (``Constraint.margin``, :func:`margin_weights`), then
    the anchoring of each generated gap's root (module doc). Rows without a constraint (None) pass unchanged. Tensors
    are moved to a device once.
    """

    def __init__(self, constraints: Sequence[Optional[Constraint]], num_frames: int, stats: ModelStats) -> None:
        B, D = len(constraints), stats.dim
        blend = np.zeros((B, num_frames, D))
        known = np.zeros((B, num_frames, D))
        mask = np.zeros((B, num_frames, D), dtype=bool)
        gap_id = np.full((B, num_frames), -1, dtype=np.int64)
        rot_need, pos_need, counts = [], [], []
        for b, c in enumerate(constraints):
            if c is None:
                continue
            if c.num_frames > num_frames or c.known.shape[1] != D:
                raise ValueError(f"constraint of shape {c.known.shape} does not fit rows of {num_frames} x {D}")
            known[b, :c.num_frames] = np.where(c.mask, stats.normalize(c.known), 0.0)
            mask[b, :c.num_frames] = c.mask
            weight, source = margin_weights(c, c.margin)
            blend[b, :c.num_frames] = weight[:, None] * c.mask[source]
            known[b, :c.num_frames] = np.where(weight[:, None] > 0, known[b, source], known[b, :c.num_frames])
            for start, end, da, dp in c.anchors():
                gap_id[b, start:end] = len(counts)
                rot_need.append(da)
                pos_need.append(dp)
                counts.append(end - start)
        self.constraints = tuple(constraints)
        self.margin = any(c is not None and c.margin > 0 for c in constraints)
        self._cpu = {"known": torch.as_tensor(known, dtype=torch.float32), "mask": torch.as_tensor(mask),
                     "blend": torch.as_tensor(blend, dtype=torch.float32),
                     "gap_id": torch.as_tensor(gap_id),
                     "rot_need": torch.as_tensor(np.asarray(rot_need, dtype=np.float64).reshape(-1)),
                     "pos_need": torch.as_tensor(np.asarray(pos_need, dtype=np.float64).reshape(-1, 2)),
                     "count": torch.as_tensor(np.asarray(counts, dtype=np.float64).reshape(-1)),
                     "mean": torch.as_tensor(stats.mean[:ROOT_DIMS], dtype=torch.float64),
                     "std": torch.as_tensor(stats.std[:ROOT_DIMS], dtype=torch.float64)}
        self.num_anchors = len(counts)
        self._on: dict[torch.device, dict[str, Tensor]] = {}

    def _tensors(self, device: torch.device) -> dict[str, Tensor]:
        if device not in self._on:
            self._on[device] = {k: v.to(device) for k, v in self._cpu.items()}
        return self._on[device]

    def __call__(self, x0: Tensor, sigma: Optional[Tensor] = None) -> Tensor:
        """The constrained x0; ``sigma [B]`` (the step's noise level) scales the soft margin by the
        noise fraction ``sigma^2 / (1 + sigma^2)``: it shapes the coarse motion, then fades out."""
        t = self._tensors(x0.device)
        if x0.shape != t["known"].shape:
            raise ValueError(f"x0 of shape {tuple(x0.shape)} does not match the constraint {tuple(t['known'].shape)}")
        target = t["known"].to(x0.dtype)
        out = torch.where(t["mask"], target, x0)
        if self.margin:
            blend = t["blend"].to(x0.dtype)
            if sigma is not None:
                s2 = sigma.to(x0.dtype) ** 2
                blend = blend * (s2 / (1 + s2))[:, None, None]
            out = out + blend * (target - out)
        if self.num_anchors:
            out = self._anchor(out, t)
        return out

    def _anchor(self, x0: Tensor, t: dict[str, Tensor]) -> Tensor:
        """Offsets on each gap's root velocities so that its heading and position arrive at the known ones."""
        K = self.num_anchors
        gap = t["gap_id"]
        in_gap = gap >= 0
        ids = torch.where(in_gap, gap, torch.full_like(gap, K))  # bucket K: frames in no gap
        raw = x0[..., :ROOT_DIMS].double() * t["std"] + t["mean"]  # [B, T, 3] de-normalised
        rot, vel = raw[..., 0], raw[..., 1:3]
        zero = rot.new_zeros(1)
        # heading: a uniform offset on the gap's rotation velocities
        sums = rot.new_zeros(K + 1).scatter_add(0, ids.reshape(-1), rot.reshape(-1))[:K]
        rot = rot + torch.cat([(t["rot_need"] - sums) / t["count"], zero])[ids]
        # position: velocity t moves the root by R^-1(a_{t+1}) v_t (recover_root)
        angle_next = 2 * torch.cumsum(rot, dim=-1)
        c, s = torch.cos(angle_next), torch.sin(angle_next)
        vx, vz = vel[..., 0], vel[..., 1]
        world = torch.stack([c * vx - s * vz, s * vx + c * vz], dim=-1)  # [B, T, 2]
        moved = world.new_zeros(K + 1, 2).index_add(0, ids.reshape(-1), world.reshape(-1, 2))[:K]
        err = torch.cat([(t["pos_need"] - moved) / t["count"][:, None], world.new_zeros(1, 2)])[ids]  # [B, T, 2]
        vx = vx + c * err[..., 0] + s * err[..., 1]
        vz = vz - s * err[..., 0] + c * err[..., 1]
        fixed = (torch.stack([rot, vx, vz], dim=-1) - t["mean"]) / t["std"]
        root = torch.where(in_gap[..., None], fixed.to(x0.dtype), x0[..., :ROOT_DIMS])
        return torch.cat([root, x0[..., ROOT_DIMS:]], dim=-1)
