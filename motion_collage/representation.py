"""HumanML3D motion representation: 263-dim features <-> 22 joint positions.

Layouts used throughout: features ``[..., T, D]`` (D = ``spec.feature_dim``) and joint
positions ``[..., T, J, 3]`` (J = ``spec.num_joints``), metres, Y up, floor at y = 0.

Two directions:

* :func:`features_to_joints` (what every renderer and evaluator uses) is batched and accepts
  a torch tensor or a numpy array, returning the same kind.
* :func:`joints_to_features` is the dataset pipeline of Guo et al. (2022): retarget to a
  uniform skeleton, canonicalise (floor, origin, facing +Z), then compute root velocities,
  root-relative joints ("rifke"), 6D joint rotations from inverse kinematics, local joint
  velocities and foot contacts. ``T`` joint frames give ``T - 1`` feature frames.

Where the reference pipeline has a quirk that changes the features, we keep it so that our
features match the public dataset, and say so in the code (search "reference quirk"). One
quirk we do *not* keep: the reference computes the root angular velocity as
``arcsin(q_y)`` of the frame-to-frame yaw quaternion without fixing its sign, which flips the
sign of the turn on the frame where the heading crosses 180 degrees (facing -Z). We take the
shortest rotation, so features only differ from the reference on those frames, and
recovery is exact there.
"""
from __future__ import annotations

from typing import Optional, TypeVar

import numpy as np
import torch

from motion_core.spec import HUMANML3D, DatasetSpec, feature_slices

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

# Unit direction of each joint's bone (from its parent) in the uniform skeleton's rest pose,
# HumanML3D joint order (formats.md section 3). Row 0 (the root) has no bone.
T2M_RAW_OFFSETS = np.array(
    [
        [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0],
        [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0],
        [-1, 0, 0], [0, 0, 1], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
        [0, -1, 0],
    ],
    dtype=np.float64,
)

# Rest-pose joint positions of the SMPL neutral body (J_regressor applied to v_template, in
# metres, Y up), the first 22 joints. Used only for its bone lengths: the default target
# skeleton of the uniform retargeting. (The public HumanML3D data used the skeleton of one
# AMASS subject, clip 000021, which is not available here; its lengths differ by a few cm.)
SMPL_NEUTRAL_REST_JOINTS = np.array(
    [
        [-0.001795, -0.223333, 0.028219], [0.067725, -0.314740, 0.021404],
        [-0.069466, -0.313855, 0.023899], [-0.004328, -0.114370, 0.001523],
        [0.102001, -0.689938, 0.016908], [-0.107756, -0.696424, 0.015049],
        [0.001159, 0.020810, 0.002615], [0.088406, -1.087899, -0.026785],
        [-0.091982, -1.094839, -0.027263], [0.002616, 0.073732, 0.028040],
        [0.114764, -1.143690, 0.092503], [-0.117354, -1.142983, 0.096085],
        [-0.000162, 0.287603, -0.014817], [0.081461, 0.195482, -0.006050],
        [-0.079143, 0.192565, -0.010575], [0.004990, 0.352572, 0.036532],
        [0.172438, 0.225951, -0.014918], [-0.175155, 0.225116, -0.019719],
        [0.432050, 0.213179, -0.042374], [-0.428897, 0.211787, -0.041119],
        [0.681284, 0.222165, -0.043545], [-0.684196, 0.219560, -0.046679],
    ],
    dtype=np.float64,
)

# Joints used to find the facing direction: right hip, left hip, right shoulder, left shoulder.
FACE_JOINTS = (2, 1, 17, 16)
# Joints whose bones set the leg length used to scale root translation when retargeting
# (right knee: thigh length, right ankle: shin length).
_LEG_JOINTS = (5, 8)
# Left/right joint pairs, for mirroring.
_MIRROR_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21))
# Gaussian smoothing (frames) of the facing direction before computing the root heading.
_FORWARD_SMOOTHING = 20.0
FOOT_CONTACT_THRESHOLD = 0.002  # squared displacement per frame, m^2


def gaussian_filter1d(x: np.ndarray, sigma: float, axis: int = 0) -> np.ndarray:
    """Gaussian smoothing of ``x`` along ``axis``, edges extended by the nearest value: the
    numbers of ``scipy.ndimage.gaussian_filter1d(x, sigma, axis=axis, mode="nearest")``
    (kernel radius 4 sigma, float inputs keep their dtype), without importing scipy (0.4 s) for it."""
    x = np.asarray(x)
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 / sigma ** 2 * np.arange(-radius, radius + 1) ** 2)
    kernel /= kernel.sum()
    moved = np.moveaxis(x.astype(np.float64), axis, -1)
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(radius, radius)], mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=-1)
    out = np.moveaxis(windows @ kernel, -1, axis)
    return out.astype(x.dtype) if x.dtype.kind == "f" else out


def parents_from_chains(chains: tuple[tuple[int, ...], ...], num_joints: int) -> np.ndarray:
    """Parent index of every joint (-1 for the root) from kinematic chains."""
    parents = np.full(num_joints, -1, dtype=np.int64)
    for chain in chains:
        for parent, child in zip(chain[:-1], chain[1:]):
            parents[child] = parent
    return parents


T2M_PARENTS = parents_from_chains(HUMANML3D.kinematic_chains, HUMANML3D.num_joints)
REFERENCE_BONE_LENGTHS = np.linalg.norm(
    SMPL_NEUTRAL_REST_JOINTS - SMPL_NEUTRAL_REST_JOINTS[np.maximum(T2M_PARENTS, 0)], axis=-1
)  # [22], 0 for the root


# ---------------------------------------------------------------------------------------------
# Quaternion helpers (numpy, (w, x, y, z), broadcasting over leading dimensions)
# ---------------------------------------------------------------------------------------------

def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of quaternions ``[..., 4]``."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def qinv(q: np.ndarray) -> np.ndarray:
    """Inverse (conjugate) of unit quaternions ``[..., 4]``."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v [..., 3]`` by unit quaternions ``q [..., 4]`` (broadcast)."""
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def qbetween(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Unit quaternion rotating direction v0 onto v1 (``[..., 3]`` each), with w >= 0."""
    axis = np.cross(v0, v1)
    w = np.sqrt((v0**2).sum(-1, keepdims=True) * (v1**2).sum(-1, keepdims=True))
    w = w + (v0 * v1).sum(-1, keepdims=True)
    q = np.concatenate([w, axis], axis=-1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` of unit quaternions ``[..., 4]``."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def quat_to_cont6d(q: np.ndarray) -> np.ndarray:
    """6D rotation ``[..., 6]``: first column then second column of the rotation matrix."""
    m = quat_to_matrix(q)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


# ---------------------------------------------------------------------------------------------
# Skeleton: inverse and forward kinematics of the uniform skeleton
# ---------------------------------------------------------------------------------------------

def _facing(joints: np.ndarray, across_sign_quirk: bool) -> np.ndarray:
    """Unit horizontal facing direction ``[T, 3]`` of joints ``[T, J, 3]``.

    across = (r_hip - l_hip) + (r_shoulder - l_shoulder); forward = up x across.
    ``across_sign_quirk`` reproduces the reference inverse kinematics, which unpacks the
    face-joint indices in a different order and so uses (l_hip - r_hip) for the hip term
    (reference quirk; the shoulder term dominates, so the direction is still forward).
    """
    r_hip, l_hip, r_sdr, l_sdr = FACE_JOINTS
    hips = joints[:, r_hip] - joints[:, l_hip]
    if across_sign_quirk:
        hips = -hips
    across = hips + (joints[:, r_sdr] - joints[:, l_sdr])
    across = across / np.linalg.norm(across, axis=-1, keepdims=True)
    return np.cross(np.array([0.0, 1.0, 0.0]), across)


def inverse_kinematics(
    joints: np.ndarray, *, smooth_forward: bool = False, spec: DatasetSpec = HUMANML3D
) -> np.ndarray:
    """Local joint quaternions ``[T, J, 4]`` of the uniform skeleton posed as ``joints [T, J, 3]``.

    Quaternion 0 is the root heading (yaw only, frame 0 forced to identity, as in the
    reference); quaternion ``c`` rotates the rest direction of bone (parent(c) -> c) onto the
    observed one, relative to the accumulated rotation along its kinematic chain. Each chain
    starts from the root heading (so the arm chains ignore the spine's rotations: reference
    convention).
    """
    forward = _facing(joints, across_sign_quirk=True)
    if smooth_forward:
        forward = gaussian_filter1d(forward, _FORWARD_SMOOTHING, axis=0)
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    root_quat = qbetween(forward, np.broadcast_to([0.0, 0.0, 1.0], forward.shape))
    root_quat[0] = [1.0, 0.0, 0.0, 0.0]  # reference quirk: frame 0 heading is the identity

    quats = np.zeros(joints.shape[:-1] + (4,))
    quats[:, 0] = root_quat
    for chain in spec.kinematic_chains:
        acc = root_quat
        for parent, child in zip(chain[:-1], chain[1:]):
            bone = joints[:, child] - joints[:, parent]
            bone = bone / np.linalg.norm(bone, axis=-1, keepdims=True)
            rest = np.broadcast_to(T2M_RAW_OFFSETS[child], bone.shape)
            local = qmul(qinv(acc), qbetween(rest, bone))
            quats[:, child] = local
            acc = qmul(acc, local)
    return quats


def forward_kinematics(
    quats: np.ndarray, root_pos: np.ndarray, bone_lengths: np.ndarray, *, spec: DatasetSpec = HUMANML3D
) -> np.ndarray:
    """Joint positions ``[T, J, 3]`` of the uniform skeleton from local quaternions ``[T, J, 4]``
    (as given by :func:`inverse_kinematics`), root positions ``[T, 3]`` and bone lengths ``[J]``."""
    offsets = T2M_RAW_OFFSETS * np.asarray(bone_lengths, dtype=np.float64)[:, None]
    joints = np.zeros(quats.shape[:-1] + (3,))
    joints[:, 0] = root_pos
    for chain in spec.kinematic_chains:
        acc = quats[:, 0]
        for parent, child in zip(chain[:-1], chain[1:]):
            acc = qmul(acc, quats[:, child])
            joints[:, child] = joints[:, parent] + qrot(acc, np.broadcast_to(offsets[child], root_pos.shape))
    return joints


def bone_lengths_of(joints: np.ndarray, parents: np.ndarray = T2M_PARENTS) -> np.ndarray:
    """Bone length of every joint to its parent, ``[..., J]`` (0 for the root)."""
    return np.linalg.norm(joints - joints[..., np.maximum(parents, 0), :], axis=-1)


def uniform_skeleton(
    joints: np.ndarray, bone_lengths: np.ndarray = REFERENCE_BONE_LENGTHS, *, spec: DatasetSpec = HUMANML3D
) -> np.ndarray:
    """Retarget ``joints [T, J, 3]`` onto a skeleton with the given bone lengths ``[J]``.

    Bone directions come from inverse kinematics; the root trajectory is scaled by the ratio
    of target to source leg length (thigh + shin, measured on frame 0).
    """
    src_lengths = bone_lengths_of(joints[0])
    src_leg = src_lengths[list(_LEG_JOINTS)].sum()
    tgt_leg = np.asarray(bone_lengths)[list(_LEG_JOINTS)].sum()
    quats = inverse_kinematics(joints, smooth_forward=False, spec=spec)
    return forward_kinematics(quats, joints[:, 0] * (tgt_leg / src_leg), bone_lengths, spec=spec)


def check_joints(joints: np.ndarray, spec: DatasetSpec = HUMANML3D, min_frames: int = 2) -> np.ndarray:
    """Joint positions ``[T, J, 3]`` as float64; ValueError (one line) for a wrong shape, fewer
    than ``min_frames`` frames, or NaN/inf values."""
    arr = np.asarray(joints, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (spec.num_joints, 3):
        raise ValueError(
            f"joints have shape {tuple(arr.shape)}; expected [T, {spec.num_joints}, 3] "
            f"(frames, joints, xyz) for the {spec.name} skeleton"
        )
    if arr.shape[0] < min_frames:
        raise ValueError(f"joints have {arr.shape[0]} frames; at least {min_frames} are needed")
    if not np.isfinite(arr).all():
        raise ValueError("joints contain NaN or inf values; drop the clip or fix its frames")
    return arr


def canonicalize(
    joints: np.ndarray,
    *,
    bone_lengths: Optional[np.ndarray] = REFERENCE_BONE_LENGTHS,
    spec: DatasetSpec = HUMANML3D,
) -> np.ndarray:
    """Joint positions as the features encode them, ``[T, J, 3]`` float64.

    Retargets to the uniform skeleton (skipped when ``bone_lengths`` is None), puts the
    lowest point of the whole clip on the floor, moves frame 0's root to x = z = 0 and
    rotates about Y so that frame 0 faces +Z.
    """
    pos = check_joints(joints, spec, min_frames=1)
    if bone_lengths is not None:
        _check_bones(pos)
        pos = uniform_skeleton(pos, bone_lengths, spec=spec)
    pos = pos.copy()
    pos[..., 1] -= pos[..., 1].min()
    pos = pos - pos[0, 0] * np.array([1.0, 0.0, 1.0])
    forward = _facing(pos[:1], across_sign_quirk=False)[0]
    quat = qbetween(forward, np.array([0.0, 0.0, 1.0]))
    return qrot(np.broadcast_to(quat, pos.shape[:-1] + (4,)), pos)


def joints_to_features(
    joints: np.ndarray,
    *,
    bone_lengths: Optional[np.ndarray] = REFERENCE_BONE_LENGTHS,
    feet_threshold: float = FOOT_CONTACT_THRESHOLD,
    spec: DatasetSpec = HUMANML3D,
) -> np.ndarray:
    """HumanML3D features ``[T-1, D]`` (float64) of joint positions ``[T, J, 3]`` in metres, Y up.

    ``bone_lengths``: target skeleton ``[J]`` (default: SMPL neutral rest pose, see
    ``REFERENCE_BONE_LENGTHS``); ``None`` keeps the input's own bones (for motion that is
    already on the uniform skeleton, e.g. generated motion).
    """
    return canonical_joints_and_features(
        joints, bone_lengths=bone_lengths, feet_threshold=feet_threshold, spec=spec
    )[1]


def canonical_joints_and_features(
    joints: np.ndarray,
    *,
    bone_lengths: Optional[np.ndarray] = REFERENCE_BONE_LENGTHS,
    feet_threshold: float = FOOT_CONTACT_THRESHOLD,
    spec: DatasetSpec = HUMANML3D,
) -> tuple[np.ndarray, np.ndarray]:
    """Both :func:`canonicalize` ``[T, J, 3]`` and :func:`joints_to_features` ``[T-1, D]`` of
    ``joints [T, J, 3]`` (float64), computing the retargeting once."""
    slices = feature_slices(spec)  # validates the layout
    pos = canonicalize(joints, bone_lengths=bone_lengths, spec=spec)
    if pos.shape[0] < 2:
        raise ValueError("joints have 1 frame; at least 2 are needed to compute features")
    _check_bones(pos)
    num_frames, num_joints = pos.shape[:2]

    # foot contacts: squared displacement between consecutive frames below the threshold
    (left_feet, right_feet) = spec.foot_joints
    disp = ((pos[1:] - pos[:-1]) ** 2).sum(-1)  # [T-1, J]
    contacts = np.concatenate(
        [disp[:, list(left_feet)] < feet_threshold, disp[:, list(right_feet)] < feet_threshold], axis=-1
    ).astype(np.float64)

    quats = inverse_kinematics(pos, smooth_forward=True, spec=spec)
    cont6d = quat_to_cont6d(quats)  # [T, J, 6]
    heading = quats[:, 0]  # [T, 4] yaw only

    # root linear velocity in the heading frame of the *next* frame (reference convention)
    root_vel = qrot(heading[1:], pos[1:, 0] - pos[:-1, 0])
    # root angular velocity: half the yaw change, via the shortest relative rotation
    rel = qmul(heading[1:], qinv(heading[:-1]))
    rel = rel * np.where(rel[:, :1] < 0, -1.0, 1.0)
    rot_vel = np.arcsin(np.clip(rel[:, 2], -1.0, 1.0))

    # root-relative joints, rotated into each frame's heading frame (y absolute)
    ric = pos - pos[:, :1] * np.array([1.0, 0.0, 1.0])
    ric = qrot(np.broadcast_to(heading[:, None], ric.shape[:-1] + (4,)), ric)

    local_vel = qrot(
        np.broadcast_to(heading[:-1, None], (num_frames - 1, num_joints, 4)), pos[1:] - pos[:-1]
    )

    feats = np.empty((num_frames - 1, spec.feature_dim))
    feats[:, slices["root_rot_vel"]] = rot_vel[:, None]
    feats[:, slices["root_lin_vel"]] = root_vel[:, [0, 2]]
    feats[:, slices["root_y"]] = ric[:-1, 0, 1:2]
    feats[:, slices["ric"]] = ric[:-1, 1:].reshape(num_frames - 1, -1)
    feats[:, slices["rot"]] = cont6d[:-1, 1:].reshape(num_frames - 1, -1)
    feats[:, slices["local_vel"]] = local_vel.reshape(num_frames - 1, -1)
    feats[:, slices["foot_contact"]] = contacts
    return pos, feats


def _check_bones(pos: np.ndarray, min_length: float = 1e-6) -> None:
    lengths = bone_lengths_of(pos)[:, 1:]
    if (lengths < min_length).any():
        frame, joint = np.argwhere(lengths < min_length)[0]
        raise ValueError(
            f"joint {joint + 1} coincides with its parent {T2M_PARENTS[joint + 1]} in frame {frame} "
            f"(zero-length bone); the skeleton map must place every joint apart from its parent"
        )


# ---------------------------------------------------------------------------------------------
# Recovery: features -> joints (torch or numpy, batched)
# ---------------------------------------------------------------------------------------------

def _rotate_y_inverse(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate ``v [..., 3]`` by the inverse of the yaw quaternion (cos a, 0, sin a, 0),
    i.e. by -2a about +Y. ``angle`` broadcasts against ``v[..., 0]``."""
    c, s = torch.cos(2 * angle), torch.sin(2 * angle)
    x, y, z = v.unbind(-1)
    return torch.stack([c * x - s * z, y, s * x + c * z], dim=-1)


def recover_root(features: ArrayLike, spec: DatasetSpec = HUMANML3D) -> tuple[ArrayLike, ArrayLike]:
    """Root heading angle ``[..., T]`` (half the yaw, radians; the heading quaternion is
    (cos a, 0, sin a, 0)) and root position ``[..., T, 3]`` from features ``[..., T, D]``."""
    x, to_out = _as_tensor(features, spec)
    rot_vel = x[..., 0]
    angle = torch.cumsum(torch.cat([torch.zeros_like(rot_vel[..., :1]), rot_vel[..., :-1]], -1), -1)
    step = torch.zeros(x.shape[:-1] + (3,), dtype=x.dtype, device=x.device)
    step[..., 1:, 0] = x[..., :-1, 1]
    step[..., 1:, 2] = x[..., :-1, 2]
    root = torch.cumsum(_rotate_y_inverse(step, angle), dim=-2)
    root[..., 1] = x[..., 3]
    return to_out(angle), to_out(root)


def features_to_joints(features: ArrayLike, spec: DatasetSpec = HUMANML3D) -> ArrayLike:
    """Joint positions ``[..., T, J, 3]`` from HumanML3D features ``[..., T, D]``.

    Heading angle a_0 = 0, a_t = sum_{i<t} f_i[0]; the root velocity of frame t-1 rotated by
    the inverse heading of frame t and summed gives the root's x, z (frame 0 at the origin);
    root y = f[3]; the relative joints f[4:4+3(J-1)] are rotated by the inverse heading and
    shifted by the root's x, z. Accepts numpy or torch; returns the same kind and dtype.
    """
    x, to_out = _as_tensor(features, spec)
    angle, root = recover_root(x, spec)
    ric = x[..., feature_slices(spec)["ric"]].reshape(x.shape[:-1] + (spec.num_joints - 1, 3))
    joints = _rotate_y_inverse(ric, angle[..., None])
    joints = joints + torch.stack(
        [root[..., 0], torch.zeros_like(root[..., 0]), root[..., 2]], dim=-1
    )[..., None, :]
    return to_out(torch.cat([root[..., None, :], joints], dim=-2))


def _as_tensor(features, spec: DatasetSpec):
    """Tensor view of features plus a function converting results back to the input's kind."""
    if isinstance(features, torch.Tensor):
        x = features if features.is_floating_point() else features.float()
        to_out = lambda t: t  # noqa: E731
    elif isinstance(features, np.ndarray):
        dtype = features.dtype if np.issubdtype(features.dtype, np.floating) else np.float32
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=dtype))
        to_out = lambda t: t.numpy()  # noqa: E731
    else:
        raise TypeError(f"features must be a numpy array or torch tensor, got {type(features).__name__}")
    if x.ndim < 2 or x.shape[-1] != spec.feature_dim:
        raise ValueError(
            f"features have shape {tuple(x.shape)}; expected [..., T, {spec.feature_dim}] "
            f"({spec.name} features, frames last but one)"
        )
    return x, to_out


def mirror_joints(joints: ArrayLike) -> ArrayLike:
    """Left-right mirror of joint positions ``[..., T, 22, 3]``: negate x and swap the
    left/right joints (the HumanML3D augmentation). Returns a new array of the same kind."""
    order = np.arange(HUMANML3D.num_joints)
    for a, b in _MIRROR_PAIRS:
        order[a], order[b] = b, a
    if isinstance(joints, torch.Tensor):
        out = joints[..., torch.as_tensor(order, device=joints.device), :].clone()
    else:
        out = np.asarray(joints)[..., order, :].copy()
    out[..., 0] = -out[..., 0]
    return out
