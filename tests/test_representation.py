"""HumanML3D representation: joints -> features -> joints round trips and known values."""
from pathlib import Path

import numpy as np
import pytest
import torch

from motion_collage import representation as rep
from motion_core.spec import HUMANML3D

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "bandai-namco-sample"
FPS = HUMANML3D.fps
SL = rep.feature_slices(HUMANML3D)


def t_pose() -> np.ndarray:
    """Uniform-skeleton T-pose [22, 3] (every local rotation is the identity), feet on y=0."""
    pos = np.zeros((HUMANML3D.num_joints, 3))
    for j in range(1, HUMANML3D.num_joints):
        p = rep.T2M_PARENTS[j]
        pos[j] = pos[p] + rep.T2M_RAW_OFFSETS[j] * rep.REFERENCE_BONE_LENGTHS[j]
    pos[:, 1] -= pos[:, 1].min()
    return pos


def yaw(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T


def circle_walk(frames: int = 240, turn_rate: float = 1.3) -> np.ndarray:
    """A body walking round a circle (facing its direction of travel) with bobbing and
    swinging arms: its heading crosses 180 degrees several times."""
    base = rep.SMPL_NEUTRAL_REST_JOINTS - [0, rep.SMPL_NEUTRAL_REST_JOINTS[:, 1].min(), 0]
    out = []
    for i in range(frames):
        t = i / FPS
        body = base.copy()
        body[[18, 20], 2] += 0.15 * np.sin(6 * t)  # swing the left arm
        body[:, 1] += 0.03 * np.sin(12 * t)
        a = turn_rate * t
        out.append(yaw(body, a) + [2 - 2 * np.cos(a), 0, 2 * np.sin(a)])
    return np.stack(out)


def sample_clips():
    if not SAMPLE.is_dir():
        pytest.skip("sample data not available")
    from prepare.convert_bvh import bvh_to_joints

    files = sorted(SAMPLE.rglob("*.bvh"))
    return [(f.stem, bvh_to_joints(f)) for f in files]


def test_round_trip_on_sample_clips():
    # joints -> features -> joints equals the canonical joints the features encode, for every
    # real clip of the sample. Measured max error: 1.8e-15 m (float64), 9.9e-7 m (float32 features).
    worst64 = worst32 = 0.0
    for name, joints in sample_clips():
        canon, feats = rep.canonical_joints_and_features(joints)
        worst64 = max(worst64, np.abs(rep.features_to_joints(feats) - canon[:-1]).max())
        rec32 = rep.features_to_joints(feats.astype(np.float32))
        assert rec32.dtype == np.float32
        worst32 = max(worst32, np.abs(rec32 - canon[:-1]).max())
    assert worst64 < 1e-12
    assert worst32 < 1e-5


def test_round_trip_on_turning_walk_through_180_degrees():
    joints = circle_walk()
    canon, feats = rep.canonical_joints_and_features(joints)
    assert feats.shape == (joints.shape[0] - 1, HUMANML3D.feature_dim)
    np.testing.assert_allclose(rep.features_to_joints(feats), canon[:-1], atol=1e-10)
    # away from the ends (smoothing window), the feature is half the yaw change per frame; it
    # is the angle of the heading quaternion that maps forward onto +z, so a body turning from
    # +z towards +x (positive yaw about +y) has a negative value
    rot_vel = feats[60:-60, SL["root_rot_vel"]][:, 0]
    np.testing.assert_allclose(rot_vel, -1.3 / FPS / 2, atol=1e-4)
    # it walks forward at 2 m * 1.3 rad/s
    np.testing.assert_allclose(feats[60:-60, SL["root_lin_vel"]], [[0, 2.6 / FPS]] * 119, atol=3e-3)


def test_canonical_joints_are_retargeted_floored_and_facing_plus_z():
    canon = rep.canonicalize(circle_walk())
    np.testing.assert_allclose(rep.bone_lengths_of(canon)[:, 1:], np.broadcast_to(
        rep.REFERENCE_BONE_LENGTHS[1:], (canon.shape[0], 21)), atol=1e-9)
    assert abs(canon[..., 1].min()) < 1e-12
    np.testing.assert_allclose(canon[0, 0, [0, 2]], 0, atol=1e-12)
    # left joints on +x when facing +z (Y up, right-handed)
    assert canon[0, 1, 0] > 0 > canon[0, 2, 0] and canon[0, 16, 0] > 0 > canon[0, 17, 0]


@pytest.mark.parametrize("speed,contact", [(1.2, 0.0), (0.5, 1.0)])
def test_constant_velocity_straight_walk_known_features(speed, contact):
    # a rigid T-pose gliding along +x at constant speed, facing +x: after canonicalisation it
    # faces and moves along +z, so every velocity feature is (0, 0, speed / fps).
    frames = 30
    body = yaw(t_pose(), np.pi / 2)  # face +x
    joints = np.stack([body + [speed * i / FPS, 0, 0] for i in range(frames)])
    feats = rep.joints_to_features(joints)
    step = speed / FPS
    np.testing.assert_allclose(feats[:, SL["root_rot_vel"]], 0, atol=1e-12)
    np.testing.assert_allclose(feats[:, SL["root_lin_vel"]], [[0, step]] * (frames - 1), atol=1e-12)
    np.testing.assert_allclose(feats[:, SL["root_y"]], t_pose()[0, 1], atol=1e-12)
    local_vel = feats[:, SL["local_vel"]].reshape(frames - 1, 22, 3)
    np.testing.assert_allclose(local_vel, np.broadcast_to([0, 0, step], local_vel.shape), atol=1e-12)
    # T-pose: all local rotations are the identity, 6D = (1, 0, 0, 0, 1, 0)
    rot = feats[:, SL["rot"]].reshape(frames - 1, 21, 6)
    np.testing.assert_allclose(rot, np.broadcast_to([1, 0, 0, 0, 1, 0], rot.shape), atol=1e-12)
    ric = feats[:, SL["ric"]].reshape(frames - 1, 21, 3)
    expected = t_pose()[1:] - t_pose()[0] * [1, 0, 1]
    np.testing.assert_allclose(ric, np.broadcast_to(expected, ric.shape), atol=1e-12)
    # squared displacement 0.0036 (1.2 m/s) > 0.002 > 0.000625 (0.5 m/s)
    np.testing.assert_array_equal(feats[:, SL["foot_contact"]], contact)


def test_recovery_is_batched_and_keeps_the_array_kind():
    feats = np.stack([rep.joints_to_features(circle_walk(41, r)) for r in (0.0, 0.7, -2.0)])
    ref = np.stack([rep.features_to_joints(f) for f in feats])
    out_t = rep.features_to_joints(torch.from_numpy(feats.astype(np.float32)))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    assert out_t.shape == (3, 40, 22, 3)
    np.testing.assert_allclose(out_t.numpy(), ref, atol=1e-5)
    out_n = rep.features_to_joints(feats[None])
    assert isinstance(out_n, np.ndarray) and out_n.shape == (1, 3, 40, 22, 3)
    np.testing.assert_allclose(out_n[0], ref, atol=1e-12)


def test_recover_root_known_values():
    # yaw rate a per frame in features (half-angle), forward step 0.1 along the heading
    feats = np.zeros((5, HUMANML3D.feature_dim))
    feats[:, 0] = np.pi / 4  # each frame turns by 90 degrees
    feats[:, 2] = 0.1
    feats[:, 3] = 0.9
    angle, root = rep.recover_root(feats)
    np.testing.assert_allclose(angle, [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi])
    # step of frame t-1 rotated by the inverse heading of frame t: +z, -x, -z, +x ...
    np.testing.assert_allclose(root[:, [0, 2]], [[0, 0], [-0.1, 0], [-0.1, -0.1], [0, -0.1], [0, 0]], atol=1e-12)
    np.testing.assert_allclose(root[:, 1], 0.9)


def test_mirror_is_an_involution_and_flips_the_turn():
    joints = circle_walk(80)
    np.testing.assert_array_equal(rep.mirror_joints(rep.mirror_joints(joints)), joints)
    # without retargeting (the target skeleton is slightly asymmetric) the pipeline is
    # mirror-equivariant: the turn flips sign, forward speed and height stay
    f = rep.joints_to_features(joints, bone_lengths=None)
    fm = rep.joints_to_features(rep.mirror_joints(joints), bone_lengths=None)
    np.testing.assert_allclose(fm[:, 0], -f[:, 0], atol=1e-9)
    np.testing.assert_allclose(fm[:, 2:4], f[:, 2:4], atol=1e-9)


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ValueError, match=r"expected \[T, 22, 3\]"):
        rep.joints_to_features(np.zeros((10, 21, 3)))
    bad = circle_walk(10)
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rep.joints_to_features(bad)
    coincident = circle_walk(10)
    coincident[:, 13] = coincident[:, 9]
    with pytest.raises(ValueError, match="zero-length bone"):
        rep.joints_to_features(coincident)
    with pytest.raises(ValueError, match=r"\[\.\.\., T, 263\]"):
        rep.features_to_joints(np.zeros((4, 262)))
    with pytest.raises(TypeError):
        rep.features_to_joints([[0.0] * 263])


@pytest.mark.parametrize("shape,axis,sigma", [((240, 3), 0, 20.0), ((7, 3), 0, 20.0), ((1, 3), 0, 20.0),
                                              ((50, 4, 3), 1, 0.7), ((300,), 0, 2.5)])
def test_gaussian_smoothing_matches_scipy(shape, axis, sigma):
    """Our numpy smoothing (representation imports no scipy) gives scipy's numbers, short
    sequences (radius 80 frames > length) included."""
    from scipy.ndimage import gaussian_filter1d

    x = np.random.default_rng(0).normal(size=shape)
    want = gaussian_filter1d(x, sigma, axis=axis, mode="nearest")
    np.testing.assert_allclose(rep.gaussian_filter1d(x, sigma, axis=axis), want, rtol=0, atol=1e-14)
    x32 = x.astype(np.float32)
    got32 = rep.gaussian_filter1d(x32, sigma, axis=axis)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, gaussian_filter1d(x32, sigma, axis=axis, mode="nearest"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(rep.gaussian_filter1d(np.full(shape, 3.0), sigma, axis=axis), 3.0, atol=1e-14)
