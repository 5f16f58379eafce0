"""Constants of a motion representation, named once.

Every module that needs a feature size, a joint count, a frame rate or a maximum clip length
takes a :class:`DatasetSpec` instead of hard-coding 263 / 22 / 20 / 196.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """Shape facts of one motion representation (HumanML3D-style features)."""

    name: str
    num_joints: int
    feature_dim: int
    fps: float
    max_frames: int
    min_frames: int
    kinematic_chains: tuple[tuple[int, ...], ...]
    foot_joints: tuple[tuple[int, ...], tuple[int, ...]]  # (left, right)

    def seconds_to_frames(self, seconds: float) -> int:
        """Number of frames for a duration, rounded to the nearest frame."""
        return int(round(seconds * self.fps))

    def frames_to_seconds(self, frames: int) -> float:
        return frames / self.fps


def feature_slices(spec: DatasetSpec) -> dict[str, slice]:
    """Named slices of the feature vector (root_rot_vel, root_lin_vel, root_y, ric, rot,
    local_vel, foot_contact), following formats.md section 3."""
    j = spec.num_joints
    bounds = [
        ("root_rot_vel", 1), ("root_lin_vel", 2), ("root_y", 1), ("ric", (j - 1) * 3),
        ("rot", (j - 1) * 6), ("local_vel", j * 3), ("foot_contact", 4),
    ]
    out, start = {}, 0
    for name, size in bounds:
        out[name] = slice(start, start + size)
        start += size
    if start != spec.feature_dim:
        raise ValueError(
            f"spec {spec.name!r} has feature_dim {spec.feature_dim} but the HumanML3D layout for "
            f"{j} joints has {start}; use a spec with the HumanML3D feature layout"
        )
    return out


HUMANML3D = DatasetSpec(
    name="humanml",
    num_joints=22,
    feature_dim=263,
    fps=20.0,
    max_frames=196,
    min_frames=40,
    kinematic_chains=(
        (0, 2, 5, 8, 11),
        (0, 1, 4, 7, 10),
        (0, 3, 6, 9, 12, 15),
        (9, 14, 17, 19, 21),
        (9, 13, 16, 18, 20),
    ),
    foot_joints=((7, 10), (8, 11)),
)

KIT = DatasetSpec(
    name="kit",
    num_joints=21,
    feature_dim=251,
    fps=12.5,
    max_frames=196,
    min_frames=24,
    kinematic_chains=(
        (0, 11, 12, 13, 14, 15),
        (0, 16, 17, 18, 19, 20),
        (0, 1, 2, 3, 4),
        (3, 5, 6, 7),
        (3, 8, 9, 10),
    ),
    foot_joints=((19, 20), (14, 15)),
)

SPECS = {"humanml": HUMANML3D, "kit": KIT}


def get_spec(name: str) -> DatasetSpec:
    """Look up a spec by dataset name ("humanml" or "kit")."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SPECS)}") from None
