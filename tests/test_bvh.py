"""BVH reader and forward kinematics; skeleton maps and resampling."""
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from prepare.bvh import euler_to_matrix, forward_kinematics, parse_bvh, read_bvh, rest_positions
from prepare.skeletons import BANDAI, CMU, SKELETONS, guess_skeleton, resample

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "bandai-namco-sample"

TINY = """HIERARCHY
ROOT root
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT a
  {
    OFFSET 1 0 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    End Site
    {
      OFFSET 0 2 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.05
0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 -90
"""


def sample_files():
    if not SAMPLE.is_dir():
        pytest.skip("sample data not available")
    return sorted(SAMPLE.rglob("*.bvh"))


def test_every_sample_clip_matches_its_header_and_bones_keep_their_length():
    for path in sample_files():
        text = path.read_text()
        frames = int(re.search(r"Frames:\s*(\d+)", text).group(1))
        frame_time = float(re.search(r"Frame Time:\s*([\d.eE+-]+)", text).group(1))
        bvh = read_bvh(path)
        assert bvh.num_frames == frames and bvh.frame_time == frame_time, path.name
        assert bvh.fps == 30.0
        assert bvh.motion.shape == (frames, 6 * len(bvh.joints))
        pos = forward_kinematics(bvh)
        assert pos.shape == (frames, len(bvh.joints), 3)
        # rotations never change bone lengths: every frame's bone equals the offset norm
        # (the position channels of non-root joints repeat the offsets to 1e-5 cm)
        parents = bvh.parents
        for j in range(2, len(bvh.joints)):
            bone = np.linalg.norm(pos[:, j] - pos[:, parents[j]], axis=-1)
            np.testing.assert_allclose(bone, np.linalg.norm(bvh.offsets[j]), atol=1e-3, err_msg=bvh.names[j])


def test_zero_rotation_frame_gives_cumulative_offsets():
    path = sample_files()[0]
    bvh = read_bvh(path)
    motion = bvh.motion[:1].copy()
    for joint, start in zip(bvh.joints, bvh.channel_starts()):
        motion[0, start:start + 3] = joint.offset  # position channels = offsets
        motion[0, start + 3:start + 6] = 0.0  # no rotation
    rest = forward_kinematics(type(bvh)(bvh.joints, bvh.end_sites, bvh.frame_time, motion))[0]
    np.testing.assert_allclose(rest, rest_positions(bvh), atol=1e-12)
    np.testing.assert_allclose(rest[bvh.index("Hips")], bvh.offsets[0] + bvh.offsets[1])


def test_known_pose_of_a_tiny_file():
    bvh = parse_bvh(TINY, "tiny.bvh")
    assert bvh.names == ["root", "a"] and bvh.parents.tolist() == [-1, 0]
    pos = forward_kinematics(bvh, end_sites=True)  # [2 frames, 2 joints + 1 end site, 3]
    np.testing.assert_allclose(pos[0], [[0, 0, 0], [1, 0, 0], [1, 2, 0]], atol=1e-12)
    # frame 1: root at (1,2,3) turned +90 deg about z (x -> y), so joint a sits at
    # (1,2,3) + (0,1,0); a turns -90 about z, cancelling the root's turn: the end site is
    # straight above a.
    np.testing.assert_allclose(pos[1], [[1, 2, 3], [1, 3, 3], [1, 5, 3]], atol=1e-12)


@pytest.mark.parametrize("order", ["zxy", "xyz", "yzx", "zyx"])
def test_euler_order_follows_the_channel_order(order):
    angles = np.array([[30.0, -50.0, 110.0], [5.0, 80.0, -20.0]])
    expected = Rotation.from_euler(order.upper(), angles, degrees=True).as_matrix()  # intrinsic
    np.testing.assert_allclose(euler_to_matrix(angles, order), expected, atol=1e-12)


@pytest.mark.parametrize(
    "mutate,line,what",
    [
        (lambda t: t.replace("OFFSET 1 0 0", "OFFSET 1 zero 0"), 8, "expected a number"),
        (lambda t: t.replace("CHANNELS 3 Xrotation", "CHANNELS 3 Wrotation"), 9, "unknown channel"),
        (lambda t: t.replace("1 2 3 90 0 0 0 0 -90", "1 2 3 90 0 0 0 0"), 20, "8 values, expected 9"),
        (lambda t: t.replace("1 2 3 90 0 0 0 0 -90", "1 2 3 90 0 x 0 0 -90"), 20, "'x' is not a number"),
        (lambda t: t.replace("Frames: 2", "Frames: 3"), 20, "2 motion rows"),
        (lambda t: t.replace("MOTION", "MOTON"), 20, "no MOTION"),
        (lambda t: t.replace("  }\n}\nMOTION", "  }\nMOTION"), 14, "file ends"),
        (lambda t: t.replace("Frame Time: 0.05", "Frame Time: 0"), 18, "must be > 0"),
        # hostile header numbers: each once crashed the caller (OverflowError, huge arrays)
        (lambda t: t.replace("Frames: 2", "Frames: inf"), 17, "frame count inf is not a count"),
        (lambda t: t.replace("Frames: 2", "Frames: nan"), 17, "frame count nan is not a count"),
        (lambda t: t.replace("Frames: 2", "Frames: -1"), 17, "is not a count"),
        (lambda t: t.replace("Frame Time: 0.05", "Frame Time: nan"), 18, "must be > 0"),
        (lambda t: t.replace("Frame Time: 0.05", "Frame Time: inf"), 18, "is outside [1e-05, 10] s"),
        (lambda t: t.replace("Frame Time: 0.05", "Frame Time: 1e300"), 18, "is outside [1e-05, 10] s"),
        (lambda t: t.replace("Frame Time: 0.05", "Frame Time: 1e-320"), 18, "is outside [1e-05, 10] s"),
        (lambda t: t.replace("CHANNELS 3 Xrotation", "CHANNELS 99999999999 Xrotation"), 9, "channel count"),
    ],
)
def test_corrupt_files_raise_one_line_errors_naming_file_and_line(tmp_path, mutate, line, what):
    path = tmp_path / "broken.bvh"
    path.write_text(mutate(TINY))
    with pytest.raises(ValueError) as info:
        read_bvh(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} line {line}: "), message
    assert what in message


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_bvh(tmp_path / "nope.bvh")
    (tmp_path / "bin.bvh").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="line 1: not a text file"):
        read_bvh(tmp_path / "bin.bvh")


def test_skeleton_maps_are_convex_combinations_and_bandai_is_recognised():
    for skel in SKELETONS.values():
        assert len(skel.sources) == 22
        for src in skel.sources:
            assert abs(sum(w for _, w in src) - 1.0) < 1e-12
    bvh = read_bvh(sample_files()[0])
    assert guess_skeleton(bvh) is BANDAI
    assert CMU.missing_joints(bvh)
    with pytest.raises(ValueError, match="pick the matching --skeleton"):
        CMU.joints(bvh)
    joints = BANDAI.joints(bvh)  # metres, Y up
    assert joints.shape == (bvh.num_frames, 22, 3)
    np.testing.assert_allclose(joints[:, 0], forward_kinematics(bvh)[:, bvh.index("Hips")] * 0.01)
    np.testing.assert_allclose(joints[:, 6], (joints[:, 3] + joints[:, 9]) / 2)  # spine2 between
    assert 0.7 < joints[0, 0, 1] < 1.1  # pelvis height of an adult, in metres


def test_resample_30_to_20_fps_interpolates_linearly():
    frames = np.stack([np.arange(31.0), np.arange(31.0) ** 2], axis=-1)  # [31, 2], t = i / 30
    out = resample(frames, 30.0, 20.0)
    assert out.shape == (21, 2)
    src_t = np.arange(21) * 1.5  # source frame index of each output frame
    np.testing.assert_allclose(out[:, 0], src_t, atol=1e-12)
    expected_sq = np.interp(src_t, np.arange(31.0), np.arange(31.0) ** 2)
    np.testing.assert_allclose(out[:, 1], expected_sq, atol=1e-12)
    assert resample(frames[:30], 30.0, 20.0).shape[0] == 20  # 29 / 1.5 = 19.33 -> 20 frames


CMU_BONES = [  # name, parent, offset (ASF units, from the usual CMU BVH conversion); fingers left out
    ("Hips", None, (0, 0, 0)), ("LHipJoint", "Hips", (0, 0, 0)), ("LeftUpLeg", "LHipJoint", (1.8559, -1.73949, 0.84976)),
    ("LeftLeg", "LeftUpLeg", (2.36836, -6.50702, 0)), ("LeftFoot", "LeftLeg", (2.53268, -6.95849, 0)),
    ("LeftToeBase", "LeftFoot", (0.15935, -0.43781, 1.94506)), ("RHipJoint", "Hips", (0, 0, 0)),
    ("RightUpLeg", "RHipJoint", (-1.8559, -1.73949, 0.84976)), ("RightLeg", "RightUpLeg", (-2.36836, -6.50702, 0)),
    ("RightFoot", "RightLeg", (-2.53268, -6.95849, 0)), ("RightToeBase", "RightFoot", (-0.15935, -0.43781, 1.94506)),
    ("LowerBack", "Hips", (0, 0, 0)), ("Spine", "LowerBack", (-0.0156, 2.23971, -0.03712)),
    ("Spine1", "Spine", (0.0549, 2.19225, -0.19086)), ("Neck", "Spine1", (0, 0, 0)),
    ("Neck1", "Neck", (-0.12403, 1.43168, 0.27585)), ("Head", "Neck1", (0.17855, 1.46173, -0.32578)),
    ("LeftShoulder", "Spine1", (0, 0, 0)), ("LeftArm", "LeftShoulder", (3.2765, 0.85634, 0.05396)),
    ("LeftForeArm", "LeftArm", (4.96755, 0, 0)), ("LeftHand", "LeftForeArm", (3.35751, 0, 0)),
    ("RightShoulder", "Spine1", (0, 0, 0)), ("RightArm", "RightShoulder", (-3.24434, 1.02034, 0.34688)),
    ("RightForeArm", "RightArm", (-5.21859, 0, 0)), ("RightHand", "RightForeArm", (-3.36504, 0, 0)),
]


def cmu_like_bvh(frames: int = 8) -> str:
    """A CMU-style file (6 root channels ZYX, 3 rotation channels elsewhere) walking along +z."""
    children = {}
    for name, parent, _ in CMU_BONES:
        children.setdefault(parent, []).append(name)
    offsets = {name: off for name, _, off in CMU_BONES}

    def block(name, depth):
        pad = "  " * depth
        kind = "ROOT" if depth == 0 else "JOINT"
        chans = "6 Xposition Yposition Zposition Zrotation Yrotation Xrotation" if depth == 0 else "3 Zrotation Yrotation Xrotation"
        body = [f"{pad}{kind} {name}", f"{pad}{{", f"{pad}  OFFSET {' '.join(map(str, offsets[name]))}", f"{pad}  CHANNELS {chans}"]
        for child in children.get(name, []):
            body += block(child, depth + 1)
        if not children.get(name):
            body += [f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0 1 0", f"{pad}  }}"]
        return body + [f"{pad}}}"]

    channels = 6 + 3 * (len(CMU_BONES) - 1)
    rows = [" ".join(["0", "17", f"{0.3 * t}"] + ["0"] * (channels - 3)) for t in range(frames)]
    return "\n".join(["HIERARCHY", *block("Hips", 0), "MOTION", f"Frames: {frames}", "Frame Time: 0.0083333", *rows]) + "\n"


def test_cmu_map_gives_a_plausible_body_and_features():
    from motion_collage.representation import canonicalize, joints_to_features

    bvh = parse_bvh(cmu_like_bvh(), "cmu.bvh")
    assert bvh.fps == 120.0 and guess_skeleton(bvh) is CMU
    joints = CMU.joints(bvh)
    leg = np.linalg.norm(joints[0, 1] - joints[0, 4]) + np.linalg.norm(joints[0, 4] - joints[0, 7])
    assert 0.7 < leg < 0.9  # thigh + shin of an adult, metres (5.644 cm per unit)
    assert joints[0, 15, 1] > joints[0, 12, 1] > joints[0, 9, 1] > joints[0, 0, 1]  # head above neck above chest
    feats = joints_to_features(resample(joints, bvh.fps))
    assert np.isfinite(feats).all()
    canon = canonicalize(resample(joints, bvh.fps))
    assert canon[0, 1, 0] > 0 > canon[0, 2, 0]  # left hip on +x: the body faces +z


def chain_bvh(depth: int, frames: int = 2) -> str:
    """A single chain of ``depth`` joints, each nested in the previous one (one rotation each)."""
    lines = ["HIERARCHY", "ROOT j0", "{", "OFFSET 0 0 0", "CHANNELS 1 Zrotation"]
    for i in range(1, depth):
        lines += [f"JOINT j{i}", "{", "OFFSET 0 1 0", "CHANNELS 1 Zrotation"]
    lines += ["End Site", "{", "OFFSET 0 1 0", "}", *["}"] * depth]
    lines += ["MOTION", f"Frames: {frames}", "Frame Time: 0.0333333", *[" ".join(["0"] * depth)] * frames]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("depth", [3000, 20000])
def test_deeply_nested_hierarchy_parses_without_recursion(depth):
    # 3,000 nested joints used to raise RecursionError (and take a whole folder's conversion down)
    bvh = parse_bvh(chain_bvh(depth), "deep.bvh")
    assert len(bvh.joints) == depth and bvh.parents.tolist() == list(range(-1, depth - 1))
    assert bvh.end_sites[0][0] == depth - 1
    np.testing.assert_allclose(rest_positions(bvh)[-1], [0, depth - 1, 0])


def test_skeleton_errors_stay_short_for_files_with_thousands_of_joints():
    bvh = parse_bvh(chain_bvh(3000), "deep.bvh")
    for call in (lambda: guess_skeleton(bvh), lambda: BANDAI.joints(bvh)):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "(3000 joints in all)" in message and "j2999" not in message and len(message) < 1000


def test_select_joints_keeps_ancestors_and_gives_identical_positions():
    from prepare.bvh import select_joints

    bvh = read_bvh(sample_files()[0])
    sub = select_joints(bvh, ["Hand_L", "Head"])
    kept = sub.names
    assert kept[0] == bvh.names[0] and "Hand_L" in kept and "Head" in kept and "Foot_R" not in kept
    assert all(bvh.index(kept[p]) == bvh.parents[bvh.index(n)] for n, p in zip(kept, sub.parents) if p >= 0)
    full = forward_kinematics(bvh)
    np.testing.assert_array_equal(forward_kinematics(sub), full[:, [bvh.index(n) for n in kept]])
    np.testing.assert_array_equal(BANDAI.joints(bvh)[:, 20], full[:, bvh.index("Hand_L")] * 0.01)


@pytest.mark.parametrize("src,dst", [(30.0, float("nan")), (float("inf"), 20.0), (30.0, 0.0), (-30.0, 20.0)])
def test_resample_rejects_rates_that_are_not_positive_and_finite(src, dst):
    with pytest.raises(ValueError, match="finite and > 0"):
        resample(np.zeros((4, 2)), src, dst)
