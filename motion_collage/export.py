"""Export generated motion for animation tools: BVH (Blender, Maya, MotionBuilder, Unity).

    python -m motion_collage.export RESULTS.npy --format bvh [--sample I --rep J]
        [--fps 20|30|60] [--units m|cm] [--out PATH]

The skeleton has the 22 HumanML3D joints under the MotionBuilder / Mixamo names (``Hips``,
``LeftUpLeg``, ``LeftLeg``, ``LeftFoot``, ``LeftToeBase``, ``Spine``, ``Spine1``, ``Spine2``,
``Neck``, ``Head``, ``LeftShoulder``, ``LeftArm``, ``LeftForeArm``, ``LeftHand``, ...), Y up,
facing +Z. Its rest pose is a T-pose of the uniform skeleton: legs straight down, spine and neck
straight up, arms straight out, feet forward; the hips (from the pelvis) and the neck and
collars (from the chest) keep the clip's own average layout, so the pelvis and chest move as
rigid bodies. Bone lengths are the clip's median lengths (the model's uniform skeleton).

Rotations come from inverse kinematics on the joint positions, parents first: the root
(``Hips``) and the chest (``Spine2``) take the rotation that best fits their three child bones
(Wahba / Kabsch); every other joint takes the smallest rotation that aims its bone from the
fitted parent at the observed child. The positions the file encodes (:func:`fit_skeleton`'s
``positions``) differ from the input only where the input's bones stretch, or its pelvis or
chest bend (a generated clip: 2.5 mm on average, up to 9 cm at a stretching wrist). Each joint writes
its Euler angles in an order whose middle axis is its bone's own axis (twist), so the usual
large rotations (hip flexion, arms down or forward, the root's heading) stay clear of gimbal
lock.

BVH has no markers, so segment boundaries (and, for a loop, the root displacement over one
period) go to a sidecar ``NAME.markers.json`` (frames are 0-based BVH rows; Blender's importer
puts row 0 on frame 1). A loop is written as one period: its last frame
flows into its first and is not a copy of it. Outputs are staged beside the target and renamed
into place when complete (:mod:`motion_core.atomic`).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from motion_collage.graph import Segment
from motion_collage.render import check_results, load_results, parse_segments, results_row
from motion_collage.representation import T2M_PARENTS, T2M_RAW_OFFSETS, check_joints
from motion_core.atomic import check_output_file, staged_file
from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.spec import HUMANML3D

PathLike = Union[str, Path]

JOINT_NAMES = (
    "Hips", "LeftUpLeg", "RightUpLeg", "Spine", "LeftLeg", "RightLeg", "Spine1", "LeftFoot",
    "RightFoot", "Spine2", "LeftToeBase", "RightToeBase", "Neck", "LeftShoulder", "RightShoulder",
    "Head", "LeftArm", "RightArm", "LeftForeArm", "RightForeArm", "LeftHand", "RightHand",
)  # HumanML3D order: pelvis, l_hip, r_hip, spine1, l_knee, ... (formats.md section 3)
# Rest pose: the uniform skeleton's bone directions (representation.T2M_RAW_OFFSETS) with the
# arms straight out and the head up, i.e. a T-pose facing +Z (left is +x).
T_POSE_DIRECTIONS = T2M_RAW_OFFSETS.copy()
T_POSE_DIRECTIONS[[16, 18, 20]] = [1.0, 0.0, 0.0]
T_POSE_DIRECTIONS[[17, 19, 21]] = [-1.0, 0.0, 0.0]
T_POSE_DIRECTIONS[15] = [0.0, 1.0, 0.0]
# Joints with several children, fitted as rigid bodies: (joint, (left child, right child, main child)).
_BRANCHES = ((0, (1, 2, 3)), (9, (13, 14, 12)))
# End sites (metres along the leaf's rest bone direction): toes, head top, hands.
_END_SITES = {10: 0.05, 11: 0.05, 15: 0.15, 20: 0.08, 21: 0.08}
# Euler order per bone axis (x, y, z): the bone's own axis in the middle. Root: heading first.
_ORDER_BY_AXIS = ("ZXY", "ZYX", "XZY")
_ROOT_ORDER = "YXZ"
UNITS = {"m": 1.0, "cm": 100.0}
MAX_FPS = 1000.0
FORMATS = ("bvh",)
_EPS = 1e-9


def _children() -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in JOINT_NAMES]
    for j, p in enumerate(T2M_PARENTS):
        if p >= 0:
            kids[p].append(j)
    return kids


CHILDREN = _children()


def _depth_first() -> list[int]:
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(CHILDREN[j]))
    return order


FILE_ORDER = tuple(_depth_first())  # joints in the order the BVH hierarchy lists them


# ---------------------------------------------------------------------------------------------
# Rotations (numpy, batched over leading dimensions)
# ---------------------------------------------------------------------------------------------

def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``[..., 3]`` and a mask of the (near) zero ones (returned as zeros)."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    zero = norm[..., 0] < _EPS
    return np.where(zero[..., None], 0.0, v / np.maximum(norm, _EPS)), zero


def _skew(a: np.ndarray) -> np.ndarray:
    x, y, z = np.moveaxis(a, -1, 0)
    o = np.zeros_like(x)
    return np.stack([np.stack([o, -z, y], -1), np.stack([z, o, -x], -1), np.stack([-y, x, o], -1)], -2)


def swing(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Smallest rotations ``[..., 3, 3]`` taking directions ``v`` onto ``u`` (``[..., 3]``);
    the identity where ``u`` is zero, a half turn about an axis normal to ``v`` where opposite."""
    v, _ = _unit(v)
    u, zero = _unit(u)
    c = (v * u).sum(-1)
    k = _skew(np.cross(v, u))
    eye = np.broadcast_to(np.eye(3), k.shape)
    rot = eye + k + (k @ k) / np.maximum(1.0 + c, _EPS)[..., None, None]
    normal, _ = _unit(np.cross(v, np.where(np.abs(v[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])))
    half_turn = 2.0 * normal[..., :, None] * normal[..., None, :] - eye
    rot = np.where((c < -1.0 + 1e-9)[..., None, None], half_turn, rot)
    return np.where(zero[..., None, None], eye, rot)


def fit_rotation(rest: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Rotations ``[T, 3, 3]`` best taking the rest vectors ``[K, 3]`` onto ``observed [T, K, 3]``
    (least squares, Kabsch)."""
    cov = np.einsum("tki,kj->tij", observed, rest)
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[:, :, 2] *= np.where(d == 0, 1.0, d)[:, None]
    return u @ vt


def _axis_matrix(axis: str, rad: np.ndarray) -> np.ndarray:
    c, s = np.cos(rad), np.sin(rad)
    i = "XYZ".index(axis)
    j, k = (i + 1) % 3, (i + 2) % 3
    m = np.zeros(rad.shape + (3, 3))
    m[..., i, i] = 1.0
    m[..., j, j], m[..., k, k], m[..., j, k], m[..., k, j] = c, c, -s, s
    return m


def euler_angles(rot: np.ndarray, order: str) -> np.ndarray:
    """Euler angles ``[T, 3]`` in degrees with ``rot = R_a @ R_b @ R_c`` for ``order = "abc"``,
    unwrapped over frames (no 360-degree jumps)."""
    a, b, c = ("XYZ".index(ch) for ch in order)
    sign = 1.0 if (b - a) % 3 == 1 else -1.0  # cyclic orders (XYZ, YZX, ZXY) have sign +1
    mid = np.arcsin(np.clip(sign * rot[:, a, c], -1.0, 1.0))
    first = np.arctan2(-sign * rot[:, b, c], rot[:, c, c])
    last = np.arctan2(-sign * rot[:, a, b], rot[:, a, a])
    locked = np.cos(mid) < 1e-7  # gimbal lock: put the whole turn on the first axis
    first = np.where(locked, np.arctan2(sign * rot[:, c, b], rot[:, b, b]), first)
    last = np.where(locked, 0.0, last)
    return np.degrees(np.unwrap(np.stack([first, mid, last], -1), axis=0))


def euler_matrix(angles_deg: np.ndarray, order: str) -> np.ndarray:
    """Inverse of :func:`euler_angles`: rotations ``[T, 3, 3]`` from angles ``[T, 3]``."""
    rad = np.radians(angles_deg)
    return _axis_matrix(order[0], rad[:, 0]) @ _axis_matrix(order[1], rad[:, 1]) @ _axis_matrix(order[2], rad[:, 2])


def rotation_order(joint: int) -> str:
    """Euler order of ``joint``'s channels: its outgoing bone's axis in the middle."""
    if joint == 0:
        return _ROOT_ORDER
    bone = CHILDREN[joint][-1] if CHILDREN[joint] else joint  # main child (neck for the chest)
    return _ORDER_BY_AXIS[int(np.argmax(np.abs(T_POSE_DIRECTIONS[bone])))]


# ---------------------------------------------------------------------------------------------
# Inverse kinematics onto a fixed skeleton
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SkeletonFit:
    """A rigid 22-joint skeleton posed to follow joint positions (metres, Y up).

    ``offsets [22, 3]``: rest offset of each joint from its parent (root: zero);
    ``rotations [T, 22, 3, 3]``: local rotation of each joint (root: global);
    ``positions [T, 22, 3]``: the joint positions these encode (root position = input root).
    """

    offsets: np.ndarray
    rotations: np.ndarray
    positions: np.ndarray


def _branch_rest(joints: np.ndarray) -> dict[int, np.ndarray]:
    """Rest directions of the children of the pelvis and the chest: their average layout in
    a frame with x from the right to the left child and y along the main child."""
    rest = {}
    for parent, (left, right, main) in _BRANCHES:
        bones = {c: _unit(joints[:, c] - joints[:, parent])[0] for c in (left, right, main)}
        x, _ = _unit(bones[left] - bones[right])
        y, _ = _unit(bones[main] - (bones[main] * x).sum(-1, keepdims=True) * x)
        frame = np.stack([x, y, np.cross(x, y)], axis=-1)  # [T, 3, 3], columns x, y, z
        for c, bone in bones.items():
            rest[c] = _unit(np.einsum("tij,ti->j", frame, bone))[0]
    return rest


def _check_bones(joints: np.ndarray) -> np.ndarray:
    """Median bone lengths ``[22]``; ValueError if a joint sits on its parent in most frames."""
    lengths = np.linalg.norm(joints[:, 1:] - joints[:, T2M_PARENTS[1:]], axis=-1)
    median = np.median(lengths, axis=0)
    if (median < 1e-4).any():
        j = int(np.argmax(median < 1e-4)) + 1
        raise ValueError(f"joint {j} ({JOINT_NAMES[j]}) coincides with its parent "
                         f"{JOINT_NAMES[T2M_PARENTS[j]]} (bone length {median[j - 1]:.2g} m); "
                         f"BVH export needs joint positions of a 22-joint HumanML3D skeleton")
    return np.concatenate([[0.0], median])


def fit_skeleton(joints: np.ndarray) -> SkeletonFit:
    """Fit the export skeleton to ``joints [T, 22, 3]`` (metres, Y up). See the module doc."""
    joints = check_joints(joints, HUMANML3D, min_frames=1)
    lengths = _check_bones(joints)
    dirs = T_POSE_DIRECTIONS.copy()
    for child, d in _branch_rest(joints).items():
        dirs[child] = d
    offsets = dirs * lengths[:, None]
    frames = joints.shape[0]
    glob = np.zeros((frames, 22, 3, 3))
    pos = np.zeros((frames, 22, 3))
    pos[:, 0] = joints[:, 0]
    for j in FILE_ORDER:
        p = T2M_PARENTS[j]
        if p >= 0:
            pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
        kids = CHILDREN[j]
        if len(kids) > 1:
            glob[:, j] = fit_rotation(offsets[kids], joints[:, kids] - pos[:, j, None])
        elif kids:
            glob[:, j] = swing(glob[:, p] @ dirs[kids[0]], joints[:, kids[0]] - pos[:, j]) @ glob[:, p]
        else:
            glob[:, j] = glob[:, p]
    local = glob.copy()
    local[:, 1:] = np.swapaxes(glob[:, T2M_PARENTS[1:]], -1, -2) @ glob[:, 1:]
    return SkeletonFit(offsets, local, pos)


# ---------------------------------------------------------------------------------------------
# Frame rate and loops
# ---------------------------------------------------------------------------------------------

def _yaw(joints: np.ndarray) -> np.ndarray:
    """Heading angle ``[T]`` (radians about +Y, 0 facing +Z, unwrapped) from the hips and shoulders."""
    across = joints[:, 2] - joints[:, 1] + joints[:, 17] - joints[:, 16]  # right minus left
    forward = np.cross([0.0, 1.0, 0.0], across)
    return np.unwrap(np.arctan2(forward[:, 0], forward[:, 2]))


def _yaw_matrix(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def loop_offset(joints: np.ndarray) -> tuple[float, np.ndarray]:
    """The rigid move of one period of a loop ``[T, 22, 3]``: (yaw, translation ``[3]``) such
    that the frame after the last is ``Ry(yaw) @ frame0 + translation``. A loop's pose repeats
    but its root may travel and turn; the move is extrapolated from both ends of the period."""
    yaw = _yaw(joints)
    turn = yaw[-1] - yaw[0] + 0.5 * ((yaw[-1] - yaw[-2]) + (yaw[1] - yaw[0]))
    rot = _yaw_matrix(turn)
    root = joints[:, 0] * np.array([1.0, 0.0, 1.0])
    step = 0.5 * ((root[-1] - root[-2]) + rot @ (root[1] - root[0]))
    return float(turn), root[-1] + step - rot @ root[0]


def resample_joints(joints: np.ndarray, fps_in: float, fps_out: float, loop: bool = False) -> np.ndarray:
    """Joints ``[T, 22, 3]`` at ``fps_in`` resampled (linearly) to ``fps_out``, keeping the
    duration ``T / fps`` to the nearest frame: ``round(T * fps_out / fps_in)`` frames. A clip
    keeps its first and last frames; a loop is sampled over one period, its last frame
    interpolated towards the (moved) first, so it still cycles without a repeated frame."""
    count = joints.shape[0]
    num = max(1, int(round(count * fps_out / fps_in)))
    if num == count or (count == 1 and not loop):
        return joints.copy()
    if loop:
        turn, shift = loop_offset(joints)
        after = joints[0] @ _yaw_matrix(turn).T + shift
        source, times = np.concatenate([joints, after[None]]), np.arange(num) * count / num
    else:
        source, times = joints, np.arange(num) * (count - 1) / max(num - 1, 1)
    lo = np.clip(np.floor(times + 1e-9).astype(np.int64), 0, source.shape[0] - 2)
    frac = np.clip(times - lo, 0.0, 1.0)[:, None, None]
    return source[lo] * (1.0 - frac) + source[lo + 1] * frac


def check_fps(fps, what: str = "fps") -> float:
    """A frame rate as float; ValueError (one line) unless finite and in (0, MAX_FPS]."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {fps!r}; expected a number of frames per second, e.g. 20, 30 or 60") from None
    if not (np.isfinite(value) and 0.0 < value <= MAX_FPS):
        raise ValueError(f"{what} is {fps!r}; expected a frame rate in (0, {MAX_FPS:g}], e.g. 20, 30 or 60")
    return value


def check_units(units) -> float:
    """Scale from metres to ``units`` ("m" or "cm"); ValueError (one line) otherwise."""
    if not isinstance(units, str) or units not in UNITS:
        raise ValueError(f"units {units!r} are not supported; expected one of {sorted(UNITS)}")
    return UNITS[units]


# ---------------------------------------------------------------------------------------------
# BVH text
# ---------------------------------------------------------------------------------------------

def _channels(joint: int) -> str:
    rot = " ".join(f"{axis}rotation" for axis in rotation_order(joint))
    return f"CHANNELS 6 Xposition Yposition Zposition {rot}" if joint == 0 else f"CHANNELS 3 {rot}"


def _hierarchy(offsets: np.ndarray, scale: float) -> list[str]:
    """HIERARCHY lines of the skeleton, depth first (the joints in :data:`FILE_ORDER`)."""
    lines, stack = ["HIERARCHY"], [(0, 0)]  # (joint, depth); a negative joint closes ~joint
    while stack:
        j, depth = stack.pop()
        pad = "  " * depth
        if j < 0:
            lines.append(f"{pad}}}")
            continue
        x, y, z = offsets[j] * scale
        lines += [f"{pad}{'ROOT' if j == 0 else 'JOINT'} {JOINT_NAMES[j]}", f"{pad}{{",
                  f"{pad}  OFFSET {x:.6f} {y:.6f} {z:.6f}", f"{pad}  {_channels(j)}"]
        if j in _END_SITES:
            ex, ey, ez = T_POSE_DIRECTIONS[j] * _END_SITES[j] * scale
            lines += [f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {ex:.6f} {ey:.6f} {ez:.6f}", f"{pad}  }}"]
        stack.append((~j, depth))
        stack.extend((c, depth + 1) for c in reversed(CHILDREN[j]))
    return lines


def motion_channels(fit: SkeletonFit, scale: float = 1.0) -> np.ndarray:
    """The MOTION block ``[T, 3 + 3 * 22]``: root position (``scale`` x metres), then each
    joint's Euler angles in degrees, joints in :data:`FILE_ORDER`."""
    columns = [fit.positions[:, 0] * scale]
    columns += [euler_angles(fit.rotations[:, j], rotation_order(j)) for j in FILE_ORDER]
    return np.concatenate(columns, axis=1)


def bvh_text(fit: SkeletonFit, fps: float, units: str = "m") -> str:
    """The BVH file of a fitted skeleton at ``fps`` frames per second, in ``units``."""
    scale = check_units(units)
    motion = motion_channels(fit, scale)
    rows = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in motion)
    header = ["MOTION", f"Frames: {motion.shape[0]}", f"Frame Time: {1.0 / fps:.8f}"]
    return "\n".join(_hierarchy(fit.offsets, scale) + header) + "\n" + rows + "\n"


def markers_path(bvh_path: PathLike) -> Path:
    """The sidecar of segment markers beside a BVH file: ``NAME.markers.json``."""
    bvh_path = Path(bvh_path)
    return bvh_path.with_name(bvh_path.stem + ".markers.json")


def markers(name: str, segments: list[Segment], num_frames: int, fps: float, units: str,
            offset: Optional[tuple[float, np.ndarray]]) -> dict:
    """The sidecar's content: one marker per segment start (0-based BVH frame), the segments
    ``[start, end)``, and for a loop the rigid move of one period (``loop_offset``)."""
    data = {
        "bvh": name, "fps": fps, "frames": num_frames, "duration_s": num_frames / fps,
        "units": units, "loop": offset is not None,
        "markers": [{"frame": s.start, "time_s": s.start / fps, "name": s.prompt} for s in segments],
        "segments": [{"text": s.prompt, "start": s.start, "end": s.end} for s in segments],
    }
    if offset is not None:
        data["loop_offset"] = {"yaw_deg": float(np.degrees(offset[0])),
                               "translation": [float(v) * UNITS[units] for v in offset[1]],
                               "meaning": "the frame after the last is frame 0 turned by yaw_deg about +Y "
                                          "through the origin, then moved by translation"}
    return data


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def _write_text(path: Path, text: str) -> None:
    with staged_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _export(joints: np.ndarray, path: Path, fps_in: float, fps_out: Optional[float], units: str,
            segments, loop: bool) -> list[Path]:
    """Checks everything, then writes the BVH (last) and its sidecar; returns the files written."""
    path = check_output_file(path, (".bvh",))
    fps_in = check_fps(fps_in, "fps_in")
    fps_out = fps_in if fps_out is None else check_fps(fps_out, "fps_out")
    check_units(units)
    joints = check_joints(joints, HUMANML3D, min_frames=2 if loop else 1)
    segs = parse_segments(segments, joints.shape[0])
    frames = resample_joints(joints, fps_in, fps_out, loop)
    ratio = frames.shape[0] / joints.shape[0]
    segs = [Segment(s.prompt, int(round(s.start * ratio)), int(round(s.end * ratio))) for s in segs]
    text = bvh_text(fit_skeleton(frames), fps_out, units)
    written = []
    if segs or loop:
        side = check_output_file(markers_path(path), (".json",))
        data = markers(path.name, segs, frames.shape[0], fps_out, units, loop_offset(frames) if loop else None)
        _write_text(side, json.dumps(data, indent=1) + "\n")
        written.append(side)
    _write_text(path, text)
    return [path] + written


def export_bvh(joints: np.ndarray, path: PathLike, *, fps_in: float = HUMANML3D.fps,
               fps_out: Optional[float] = None, units: str = "m", segments=None, loop: bool = False) -> Path:
    """Write joint positions ``[T, 22, 3]`` (metres, Y up, HumanML3D order, ``fps_in``) as a
    BVH file at ``path``, resampled to ``fps_out`` (default: ``fps_in``), lengths in ``units``
    ("m" or "cm"). ``segments`` (``graph.Segment`` or dicts with text, start, end in input
    frames) and, for a ``loop`` (one period, no repeated frame), the period's root move go to
    ``NAME.markers.json`` beside it. Raises ValueError (one line) on bad input; returns ``path``."""
    return _export(joints, Path(path), fps_in, fps_out, units, segments, loop)[0]


def _rows(results: dict, sample: Optional[int], rep: Optional[int]) -> list[tuple[int, int]]:
    """The (sample, rep) pairs selected (None: all), each checked against the results."""
    num = results["motion"].shape[0]
    samples = int(results.get("num_samples", num))
    reps = int(results.get("num_repetitions", max(1, num // max(samples, 1))))
    pairs = [(s, r) for r in (range(reps) if rep is None else [rep])
             for s in (range(samples) if sample is None else [sample])]
    for s, r in pairs:
        results_row(results, s, r)  # raises for an index out of range
    return pairs


def row_name(sample: int, rep: int) -> str:
    """File stem of one motion, as the renderer names its video: ``sampleII_repJJ``."""
    return f"sample{sample:02d}_rep{rep:02d}"


def _check_results_skeleton(results: dict, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")
    check_results(results)
    joints = results["motion"].shape[1]
    if joints != HUMANML3D.num_joints:
        raise ValueError(f"the results hold {joints}-joint motion; BVH export needs the "
                         f"{HUMANML3D.num_joints}-joint HumanML3D skeleton (KIT motion is not supported)")


def export_rows(results: dict, targets: Sequence[tuple[int, int, Path]], *, fps: Optional[float] = None,
                units: str = "m") -> list[Path]:
    """Export the motions ``(sample, rep, path)`` of a results dict; returns every file written.
    All inputs and paths are checked before the first file is written."""
    fps = None if fps is None else check_fps(fps)
    check_units(units)
    rows = []
    for sample, rep, path in targets:
        joints, segments, _, loop = results_row(results, sample, rep)
        check_joints(joints, HUMANML3D, min_frames=2 if loop else 1)
        check_output_file(path, (".bvh",))
        rows.append((joints, path, segments, loop))
    written = []
    for joints, path, segments, loop in rows:
        written += _export(joints, path, HUMANML3D.fps, fps, units, segments, loop)
    return written


def _check_folder(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} is a file; choose a folder, or a .bvh path for one motion")
    return out_dir


def export_results(results: dict, out_dir: PathLike, *, sample: Optional[int] = None,
                   rep: Optional[int] = None, fmt: str = "bvh", fps: Optional[float] = None,
                   units: str = "m") -> list[Path]:
    """Export motions of a results dict (``render.load_results``) into ``out_dir`` as
    ``sampleII_repJJ.bvh`` (plus ``.markers.json``): every sample and repetition, or only
    ``sample`` and/or ``rep``. Returns the BVH paths. Raises ValueError (one line)."""
    _check_results_skeleton(results, fmt)
    out_dir = _check_folder(Path(out_dir))
    targets = [(s, r, out_dir / f"{row_name(s, r)}.bvh") for s, r in _rows(results, sample, rep)]
    export_rows(results, targets, fps=fps, units=units)
    return [path for _, _, path in targets]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def build_parser() -> OneLineParser:
    """The ``python -m motion_collage.export`` command line."""
    parser = OneLineParser(prog="python -m motion_collage.export",
                           description="Export motions of a results.npy for animation tools (BVH).")
    parser.add_argument("results", help="results.npy (or results.npz) written by sampling")
    parser.add_argument("--format", default="bvh", choices=FORMATS, help="file format (default bvh)")
    parser.add_argument("--sample", type=int, default=None, help="only this sample (default: all)")
    parser.add_argument("--rep", type=int, default=None, help="only this repetition (default: all)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate, e.g. 30 or 60 (default: the data's 20)")
    parser.add_argument("--units", default="m", choices=sorted(UNITS), help="length unit (default m)")
    parser.add_argument("--out", default=None,
                        help="a .bvh file (one motion) or a folder (default: the folder of RESULTS)")
    return parser


def run(args) -> str:
    """Check the options, load the results, export; returns the lines to print."""
    fps = None if args.fps is None else check_fps(args.fps, "--fps")
    out = Path(args.out) if args.out else Path(args.results).parent
    one_file = out.suffix.lower() == ".bvh"
    if out.suffix and not one_file and not out.is_dir():
        raise UsageError(f"--out {out} must be a .bvh file (one motion) or a folder")
    if not one_file:
        _check_folder(out)
    results = load_results(args.results)
    _check_results_skeleton(results, args.format)
    pairs = _rows(results, args.sample, args.rep)
    if one_file and len(pairs) != 1:
        raise UsageError(f"--out {out} is one .bvh file but {len(pairs)} motions are selected; "
                         f"pass --sample I --rep J, or a folder as --out")
    targets = [(s, r, out if one_file else out / f"{row_name(s, r)}.bvh") for s, r in pairs]
    written = export_rows(results, targets, fps=fps, units=args.units)
    return "\n".join(f"wrote {p}" for p in written)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point. User errors: one line on stderr, exit status 2."""
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
