"""BVH motion capture files: reader and forward kinematics (numpy, vectorised over frames).

Conventions:

* Rotation channels are Euler angles in degrees; a joint's rotation is the product of the
  per-axis rotations in the order its channels are listed (``Zrotation Xrotation Yrotation``
  gives ``R = Rz @ Rx @ Ry``), acting on column vectors. Any order, per joint.
* Position channels give the joint's full local translation and replace its ``OFFSET``
  (how MotionBuilder-style exports such as the Bandai Namco data write them: the values equal
  the offsets for every non-root joint). For the usual files whose root ``OFFSET`` is zero
  (e.g. CMU) this is the same as adding them. A missing axis keeps the offset's component.
* Positions are returned in the file's units and axes; see :mod:`prepare.skeletons` for
  units and axes of known skeletons.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

PathLike = Union[str, Path]

_POSITION = {"xposition": 0, "yposition": 1, "zposition": 2}
_ROTATION = {"xrotation": 0, "yrotation": 1, "zrotation": 2}


@dataclass(frozen=True)
class BvhJoint:
    """One joint of the hierarchy."""

    name: str
    parent: int  # index into Bvh.joints, -1 for the root
    offset: np.ndarray  # [3], file units
    channels: tuple[str, ...]  # as written, e.g. ("Xposition", ..., "Zrotation", ...)


@dataclass(frozen=True)
class Bvh:
    """A parsed BVH file: hierarchy plus the motion block ``[F, C]``."""

    joints: tuple[BvhJoint, ...]
    end_sites: tuple[tuple[int, np.ndarray], ...]  # (parent joint index, offset [3])
    frame_time: float
    motion: np.ndarray  # [F, C] float64, C = total number of channels
    source: str = "<string>"

    @property
    def names(self) -> list[str]:
        """Joint names in file order."""
        return [j.name for j in self.joints]

    @property
    def parents(self) -> np.ndarray:
        """Parent index of each joint ``[J]`` (-1 for the root)."""
        return np.array([j.parent for j in self.joints], dtype=np.int64)

    @property
    def offsets(self) -> np.ndarray:
        """``OFFSET`` of each joint ``[J, 3]``."""
        return np.stack([j.offset for j in self.joints])

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def fps(self) -> float:
        """Frames per second; snapped to the nearest integer when within 1e-4 relative
        (files write 1/30 s as 0.0333333)."""
        fps = 1.0 / self.frame_time
        return float(round(fps)) if abs(fps - round(fps)) < 1e-4 * fps else fps

    def index(self, name: str) -> int:
        """Index of the joint called ``name``."""
        for i, joint in enumerate(self.joints):
            if joint.name == name:
                return i
        raise KeyError(f"{self.source}: no joint named {name!r}; joints are {self.names}")

    def channel_starts(self) -> np.ndarray:
        """Column of each joint's first channel in :attr:`motion` ``[J]``."""
        sizes = [len(j.channels) for j in self.joints]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


class _Tokens:
    """Whitespace tokens of the hierarchy with their 1-based line numbers."""

    def __init__(self, lines: list[str], source: str) -> None:
        self.items = [(tok, n + 1) for n, line in enumerate(lines) for tok in line.split()]
        self.pos = 0
        self.source = source

    def error(self, message: str, line: Optional[int] = None) -> ValueError:
        if line is None:
            line = self.items[min(self.pos, len(self.items) - 1)][1] if self.items else 1
        return ValueError(f"{self.source} line {line}: {message}")

    def next(self, what: str) -> tuple[str, int]:
        if self.pos >= len(self.items):
            raise self.error(f"file ends where {what} was expected")
        item = self.items[self.pos]
        self.pos += 1
        return item

    def expect(self, word: str) -> None:
        tok, line = self.next(repr(word))
        if tok.upper() != word.upper():
            raise self.error(f"expected {word!r}, found {tok!r}", line)

    def floats(self, count: int, what: str) -> np.ndarray:
        out = []
        for _ in range(count):
            tok, line = self.next(what)
            try:
                out.append(float(tok))
            except ValueError:
                raise self.error(f"expected a number in {what}, found {tok!r}", line) from None
        return np.array(out, dtype=np.float64)


MIN_FRAME_TIME = 1e-5  # seconds (100 kHz); shorter frame times are not motion capture
MAX_FRAME_TIME = 10.0  # seconds; longer ones would make resampling to 20 fps explode


def _open_joint(tokens: _Tokens, name: str, parent: int, joints: list, stack: list) -> None:
    """Read ``{ OFFSET x y z`` of a joint and push it on the stack of open joints."""
    tokens.expect("{")
    tokens.expect("OFFSET")
    offset = tokens.floats(3, f"OFFSET of {name}")
    joints.append(dict(name=name, parent=parent, offset=offset, channels=()))
    stack.append(len(joints) - 1)


def _read_channels(tokens: _Tokens, name: str) -> tuple[str, ...]:
    count_tok, count_line = tokens.next("a channel count")
    if not count_tok.isdigit():
        raise tokens.error(f"expected a channel count, found {count_tok!r}", count_line)
    if int(count_tok) > len(tokens.items) - tokens.pos:
        raise tokens.error(f"channel count {count_tok} of joint {name} is more than the rest of the "
                           f"hierarchy holds", count_line)
    channels = tuple(tokens.next("a channel name")[0] for _ in range(int(count_tok)))
    for ch in channels:
        if ch.lower() not in _POSITION and ch.lower() not in _ROTATION:
            raise tokens.error(f"unknown channel {ch!r} in joint {name}", count_line)
    return channels


def _read_end_site(tokens: _Tokens, name: str) -> np.ndarray:
    tokens.expect("Site")
    tokens.expect("{")
    tokens.expect("OFFSET")
    offset = tokens.floats(3, f"End Site OFFSET of {name}")
    tokens.expect("}")
    return offset


def _parse_hierarchy(tokens: _Tokens, root_name: str) -> tuple[list[BvhJoint], list]:
    """Joints (parents before children, file order) and end sites, read with an explicit
    stack of open joints: any nesting depth works, no recursion."""
    joints: list[dict] = []
    end_sites: list = []
    stack: list[int] = []
    _open_joint(tokens, root_name, -1, joints, stack)
    while stack:
        index = stack[-1]
        name = joints[index]["name"]
        tok, line = tokens.next(f"the body of joint {name}")
        key = tok.upper()
        if key == "CHANNELS":
            joints[index]["channels"] = _read_channels(tokens, name)
        elif key == "JOINT":
            child, _ = tokens.next("a joint name")
            _open_joint(tokens, child, index, joints, stack)
        elif key == "END":
            end_sites.append((index, _read_end_site(tokens, name)))
        elif key == "}":
            stack.pop()
        else:
            raise tokens.error(f"unexpected {tok!r} in joint {name}", line)
    return [BvhJoint(**j) for j in joints], end_sites


def parse_bvh(text: str, source: str = "<string>") -> Bvh:
    """Parse the text of a BVH file. Raises ``ValueError("<source> line N: ...")`` on a
    malformed file."""
    lines = text.splitlines()
    motion_line = next((i for i, ln in enumerate(lines) if ln.strip().upper() == "MOTION"), None)
    if motion_line is None:
        raise ValueError(f"{source} line {len(lines)}: no MOTION section; is this a BVH file?")

    tokens = _Tokens(lines[:motion_line], source)
    tokens.expect("HIERARCHY")
    tokens.expect("ROOT")
    root_name, _ = tokens.next("the root joint's name")
    joints, end_sites = _parse_hierarchy(tokens, root_name)
    if tokens.pos != len(tokens.items):
        raise tokens.error(f"unexpected {tokens.items[tokens.pos][0]!r} after the hierarchy")

    num_frames, frame_time = _motion_header(lines, motion_line, source)
    num_channels = sum(len(j.channels) for j in joints)
    motion = _parse_motion(lines, motion_line + 3, num_frames, num_channels, source)
    return Bvh(tuple(joints), tuple(end_sites), float(frame_time), motion, source)


def _motion_header(lines: list[str], motion_line: int, source: str) -> tuple[int, float]:
    """``Frames:`` and ``Frame Time:`` after the MOTION line, checked."""
    num_frames = _header_value(lines, motion_line + 1, "Frames:", source)
    frame_time = _header_value(lines, motion_line + 2, "Frame Time:", source)
    if not np.isfinite(num_frames) or num_frames != int(num_frames) or num_frames < 0:
        raise ValueError(f"{source} line {motion_line + 2}: frame count {num_frames} is not a count")
    if not frame_time > 0:
        raise ValueError(f"{source} line {motion_line + 3}: frame time {frame_time} must be > 0")
    if not MIN_FRAME_TIME <= frame_time <= MAX_FRAME_TIME:
        raise ValueError(f"{source} line {motion_line + 3}: frame time {frame_time} s is outside "
                         f"[{MIN_FRAME_TIME:g}, {MAX_FRAME_TIME:g}] s (e.g. 0.0333333 for 30 fps)")
    return int(num_frames), frame_time


def _header_value(lines: list[str], index: int, label: str, source: str) -> float:
    if index >= len(lines) or not lines[index].strip().lower().startswith(label.lower()):
        raise ValueError(f"{source} line {index + 1}: expected '{label} <value>'")
    value = lines[index].strip()[len(label):].strip()
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{source} line {index + 1}: expected a number after '{label}', found {value!r}") from None


def _parse_motion(lines: list[str], first: int, frames: int, channels: int, source: str) -> np.ndarray:
    """Motion block ``[frames, channels]`` parsed in one numpy call; the slow line-by-line
    scan only runs to locate an error."""
    body = "\n".join(lines[first:])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(body, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            values = None
    if values is not None and values.size == frames * channels and np.isfinite(values).all():
        return values.reshape(frames, channels)
    _locate_motion_error(lines, first, frames, channels, source)
    raise ValueError(f"{source} line {first + 1}: malformed motion data")  # pragma: no cover


def _locate_motion_error(lines: list[str], first: int, frames: int, channels: int, source: str) -> None:
    rows = 0
    for n in range(first, len(lines)):
        toks = lines[n].split()
        if not toks:
            continue
        if rows == frames:
            raise ValueError(f"{source} line {n + 1}: more motion rows than the {frames} frames declared")
        if len(toks) != channels:
            raise ValueError(f"{source} line {n + 1}: {len(toks)} values, expected {channels} channels")
        try:
            row = np.array(toks, dtype=np.float64)
        except ValueError:
            bad = next(t for t in toks if not _is_float(t))
            raise ValueError(f"{source} line {n + 1}: {bad!r} is not a number") from None
        if not np.isfinite(row).all():
            raise ValueError(f"{source} line {n + 1}: motion values contain NaN or inf")
        rows += 1
    if rows != frames:
        raise ValueError(f"{source} line {len(lines)}: {rows} motion rows, but 'Frames:' declares {frames}")


def _is_float(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def read_bvh(path: PathLike) -> Bvh:
    """Read a BVH file. Raises FileNotFoundError, or ValueError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BVH file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} line 1: not a text file ({exc.reason} at byte {exc.start})") from None
    return parse_bvh(text, source=str(path))


def select_joints(bvh: Bvh, names: Sequence[str]) -> Bvh:
    """The joints called ``names`` (the last of a repeated name, as the skeleton maps read
    them) and all their ancestors, in file order, with their motion columns and end sites.
    Forward kinematics gives the kept joints the same positions as in ``bvh``, at the cost
    of the kept joints only."""
    index = {n: i for i, n in enumerate(bvh.names)}
    keep: set[int] = set()
    for name in names:
        j = index[name]
        while j >= 0 and j not in keep:
            keep.add(j)
            j = bvh.joints[j].parent
    order = sorted(keep)
    new_index = {old: new for new, old in enumerate(order)}
    starts = bvh.channel_starts()
    columns = [int(starts[j]) + k for j in order for k in range(len(bvh.joints[j].channels))]
    joints = tuple(BvhJoint(bvh.joints[j].name, new_index.get(bvh.joints[j].parent, -1),
                            bvh.joints[j].offset, bvh.joints[j].channels) for j in order)
    ends = tuple((new_index[p], off) for p, off in bvh.end_sites if p in new_index)
    return Bvh(joints, ends, bvh.frame_time, bvh.motion[:, columns], bvh.source)


def euler_to_matrix(angles_deg: np.ndarray, axes: str) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` from Euler angles ``[..., k]`` in degrees applied in the
    order of ``axes`` (e.g. ``"zxy"`` gives ``Rz @ Rx @ Ry``)."""
    rad = np.deg2rad(angles_deg)
    out = np.broadcast_to(np.eye(3), rad.shape[:-1] + (3, 3)).copy()
    for k, axis in enumerate(axes.lower()):
        c, s = np.cos(rad[..., k]), np.sin(rad[..., k])
        m = np.zeros(rad.shape[:-1] + (3, 3))
        i = "xyz".index(axis)
        j, l = (i + 1) % 3, (i + 2) % 3
        m[..., i, i] = 1.0
        m[..., j, j] = c
        m[..., l, l] = c
        m[..., j, l] = -s
        m[..., l, j] = s
        out = out @ m
    return out


def local_transforms(bvh: Bvh) -> tuple[np.ndarray, np.ndarray]:
    """Local rotations ``[F, J, 3, 3]`` and translations ``[F, J, 3]`` of every joint."""
    frames, num_joints = bvh.num_frames, len(bvh.joints)
    rot = np.broadcast_to(np.eye(3), (frames, num_joints, 3, 3)).copy()
    trans = np.broadcast_to(bvh.offsets, (frames, num_joints, 3)).copy()
    for j, (joint, start) in enumerate(zip(bvh.joints, bvh.channel_starts())):
        rot_cols, axes = [], ""
        for k, ch in enumerate(joint.channels):
            key = ch.lower()
            if key in _POSITION:
                trans[:, j, _POSITION[key]] = bvh.motion[:, start + k]
            else:
                rot_cols.append(start + k)
                axes += key[0]
        if rot_cols:
            rot[:, j] = euler_to_matrix(bvh.motion[:, rot_cols], axes)
    return rot, trans


def forward_kinematics(bvh: Bvh, *, end_sites: bool = False) -> np.ndarray:
    """World positions of all joints ``[F, J, 3]`` in file units (``[F, J + E, 3]`` with the
    end sites appended, in file order, when ``end_sites`` is True)."""
    rot, trans = local_transforms(bvh)
    glob_rot = np.empty_like(rot)
    pos = np.empty_like(trans)
    for j, joint in enumerate(bvh.joints):
        p = joint.parent
        if p < 0:
            glob_rot[:, j] = rot[:, j]
            pos[:, j] = trans[:, j]
        else:
            glob_rot[:, j] = glob_rot[:, p] @ rot[:, j]
            pos[:, j] = pos[:, p] + np.einsum("fab,fb->fa", glob_rot[:, p], trans[:, j])
    if not end_sites or not bvh.end_sites:
        return pos
    ends = [pos[:, p] + glob_rot[:, p] @ off for p, off in bvh.end_sites]
    return np.concatenate([pos, np.stack(ends, axis=1)], axis=1)


def rest_positions(bvh: Bvh) -> np.ndarray:
    """Joint positions ``[J, 3]`` of the rest pose (all rotations zero, offsets as bones)."""
    pos = np.zeros((len(bvh.joints), 3))
    for j, joint in enumerate(bvh.joints):
        pos[j] = joint.offset + (pos[joint.parent] if joint.parent >= 0 else 0.0)
    return pos
