"""Maps from mocap skeletons onto the 22-joint HumanML3D (SMPL body) chain, units and axes,
and resampling to the dataset's frame rate.

Each of the 22 HumanML3D joints (order in ``motion_core.spec`` / formats.md section 3) is a
weighted average of source joints' world positions, which covers joints that exist
one-to-one as well as joints interpolated between two source joints (e.g. SMPL's spine2 lies
between Bandai Namco's Spine and Chest).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motion_core.spec import HUMANML3D
from prepare.bvh import Bvh, forward_kinematics, select_joints

Source = tuple[tuple[str, float], ...]  # ((joint name, weight), ...), weights sum to 1


def names_preview(names: list[str], limit: int = 25) -> str:
    """``names`` for a message, cut after ``limit`` (a hostile file may have thousands)."""
    if len(names) <= limit:
        return str(names)
    return f"{names[:limit]}"[:-1] + f", ... ({len(names)} joints in all)]"


def _one(name: str) -> Source:
    return ((name, 1.0),)


def _between(a: str, b: str, t: float = 0.5) -> Source:
    return ((a, 1.0 - t), (b, t))


@dataclass(frozen=True)
class SkeletonMap:
    """How to turn one mocap skeleton into HumanML3D joint positions (metres, Y up)."""

    name: str
    sources: tuple[Source, ...]  # one per HumanML3D joint, in HumanML3D order
    unit_scale: float  # file units -> metres
    to_y_up: tuple[tuple[float, ...], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))  # 3x3, applied to columns
    note: str = ""

    def required_joints(self) -> list[str]:
        """Source joint names this map reads."""
        return sorted({name for src in self.sources for name, _ in src})

    def missing_joints(self, bvh: Bvh) -> list[str]:
        """Names this map needs that ``bvh`` lacks."""
        have = set(bvh.names)
        return [n for n in self.required_joints() if n not in have]

    def weight_matrix(self, bvh: Bvh) -> np.ndarray:
        """``[22, J_bvh]`` matrix turning BVH joint positions into HumanML3D joints."""
        missing = self.missing_joints(bvh)
        if missing:
            raise ValueError(
                f"{bvh.source}: skeleton {self.name!r} needs joints {missing} that the file lacks "
                f"(it has {names_preview(bvh.names)}); pick the matching --skeleton"
            )
        index = {n: i for i, n in enumerate(bvh.names)}
        weights = np.zeros((len(self.sources), len(bvh.joints)))
        for k, src in enumerate(self.sources):
            for name, w in src:
                weights[k, index[name]] += w
        return weights

    def joints(self, bvh: Bvh) -> np.ndarray:
        """HumanML3D joint positions ``[F, 22, 3]`` (metres, Y up) of every BVH frame.
        Only the joints read and their ancestors are posed (other joints cost nothing)."""
        self.weight_matrix(bvh)  # names missing joints before any work
        used = select_joints(bvh, self.required_joints())
        pos = forward_kinematics(used)  # [F, J_used, 3] file units
        out = np.einsum("kj,fjc->fkc", self.weight_matrix(used), pos)
        out = out @ np.asarray(self.to_y_up, dtype=np.float64).T
        return out * self.unit_scale


# Bandai Namco Research Motion dataset: joint_Root, Hips, Spine, Chest, Neck, Head,
# Shoulder/UpperArm/LowerArm/Hand_{L,R}, UpperLeg/LowerLeg/Foot/Toes_{L,R}; cm, Y up.
BANDAI = SkeletonMap(
    name="bandai",
    sources=(
        _one("Hips"),  # 0 pelvis
        _one("UpperLeg_L"), _one("UpperLeg_R"),  # 1, 2 hips
        _one("Spine"),  # 3 spine1
        _one("LowerLeg_L"), _one("LowerLeg_R"),  # 4, 5 knees
        _between("Spine", "Chest"),  # 6 spine2
        _one("Foot_L"), _one("Foot_R"),  # 7, 8 ankles
        _one("Chest"),  # 9 spine3
        _one("Toes_L"), _one("Toes_R"),  # 10, 11 feet
        _one("Neck"),  # 12 neck
        _one("Shoulder_L"), _one("Shoulder_R"),  # 13, 14 collars
        _one("Head"),  # 15 head
        _one("UpperArm_L"), _one("UpperArm_R"),  # 16, 17 shoulders
        _one("LowerArm_L"), _one("LowerArm_R"),  # 18, 19 elbows
        _one("Hand_L"), _one("Hand_R"),  # 20, 21 wrists
    ),
    unit_scale=0.01,
    note="Bandai Namco Research Motion dataset (centimetres, Y up, 30 fps)",
)

# CMU mocap in the widely used BVH conversion (Hips, LHipJoint, LeftUpLeg, ..., LowerBack,
# Spine, Spine1, Neck, Neck1, Head, LeftShoulder, LeftArm, ...). Its units are the ASF's
# (1/0.45 inch = 5.644 cm), Y up, 120 fps. Its Neck and LeftShoulder/RightShoulder joints sit
# exactly on Spine1 (zero-length bones), so the SMPL neck is Neck1 and the collars are placed
# halfway between Spine1 and the shoulder joints.
CMU = SkeletonMap(
    name="cmu",
    sources=(
        _one("Hips"),
        _one("LeftUpLeg"), _one("RightUpLeg"),
        _one("Spine"),
        _one("LeftLeg"), _one("RightLeg"),
        _between("Spine", "Spine1"),
        _one("LeftFoot"), _one("RightFoot"),
        _one("Spine1"),
        _one("LeftToeBase"), _one("RightToeBase"),
        _one("Neck1"),
        _between("Spine1", "LeftArm"), _between("Spine1", "RightArm"),
        _one("Head"),
        _one("LeftArm"), _one("RightArm"),
        _one("LeftForeArm"), _one("RightForeArm"),
        _one("LeftHand"), _one("RightHand"),
    ),
    unit_scale=0.0254 / 0.45,
    note="CMU Graphics Lab mocap, BVH conversion with ASF units (5.644 cm per unit), Y up",
)

SKELETONS = {m.name: m for m in (BANDAI, CMU)}
assert all(len(m.sources) == HUMANML3D.num_joints for m in SKELETONS.values())


def get_skeleton(name: str) -> SkeletonMap:
    """Look up a skeleton map by name ("bandai" or "cmu")."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; expected one of {sorted(SKELETONS)}") from None


def guess_skeleton(bvh: Bvh) -> SkeletonMap:
    """The first known skeleton map whose joint names all exist in ``bvh``."""
    for skel in SKELETONS.values():
        if not skel.missing_joints(bvh):
            return skel
    raise ValueError(
        f"{bvh.source}: joint names match no known skeleton ({sorted(SKELETONS)}); "
        f"the file has {names_preview(bvh.names)}"
    )


def resample(frames: np.ndarray, src_fps: float, dst_fps: float = HUMANML3D.fps) -> np.ndarray:
    """Linearly interpolate ``frames [F, ...]`` sampled at ``src_fps`` onto a ``dst_fps`` grid
    starting at the first frame; returns ``[floor((F-1) * dst/src + eps) + 1, ...]`` frames."""
    if not (np.isfinite(src_fps) and np.isfinite(dst_fps) and src_fps > 0 and dst_fps > 0):
        raise ValueError(f"frame rates must be finite and > 0, got src_fps={src_fps}, dst_fps={dst_fps}")
    frames = np.asarray(frames, dtype=np.float64)
    count = frames.shape[0]
    if count == 0:
        return frames.copy()
    num_out = int(np.floor((count - 1) * dst_fps / src_fps + 1e-6)) + 1
    t = np.arange(num_out) * (src_fps / dst_fps)
    lo = np.minimum(np.floor(t + 1e-9).astype(np.int64), count - 1)
    hi = np.minimum(lo + 1, count - 1)
    frac = (t - lo).reshape((-1,) + (1,) * (frames.ndim - 1))
    frac = np.clip(frac, 0.0, 1.0)
    return frames[lo] * (1.0 - frac) + frames[hi] * frac
