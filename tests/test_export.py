"""BVH export: round trip through our reader and Blender's importer, loops, frame rates, units, CLI."""
import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from motion_collage.export import (
    JOINT_NAMES, T_POSE_DIRECTIONS, _yaw_matrix, euler_angles, euler_matrix, export_bvh, export_results,
    fit_skeleton, loop_offset, main, markers_path, resample_joints,
)
from motion_collage.representation import SMPL_NEUTRAL_REST_JOINTS
from prepare.bvh import euler_to_matrix, forward_kinematics, read_bvh, rest_positions

MM = 1e-3


def moving_pose(frames: int, period: float = 40.0, seed: int = 0) -> np.ndarray:
    """A pose ``[T, 22, 3]`` (SMPL rest, feet on the floor) whose joints wobble by a few cm."""
    rng = np.random.default_rng(seed)
    base = SMPL_NEUTRAL_REST_JOINTS - [0.0, SMPL_NEUTRAL_REST_JOINTS[:, 1].min(), 0.0]
    phase, amp = rng.uniform(0, 2 * np.pi, (22, 3)), rng.uniform(0.0, 0.03, (22, 3))
    t = np.arange(frames)[:, None, None]
    return base + amp * np.sin(2 * np.pi * t / period + phase)


def walk(frames: int = 50) -> np.ndarray:
    """A clip that walks forward while turning: wobbling pose, yawing and moving root."""
    pose = moving_pose(frames)
    out = np.stack([pose[t] @ _yaw_matrix(0.02 * t).T for t in range(frames)])
    return out + np.arange(frames)[:, None, None] * np.array([0.02, 0.0, 0.05])


def circle_loop(frames: int = 40, radius: float = 1.5) -> np.ndarray:
    """One period of a loop: a periodic pose carried round a circle by a quarter turn."""
    pose = moving_pose(frames, period=frames) + [0.0, 0.0, radius]
    turn = 0.5 * np.pi / frames
    return np.stack([pose[t] @ _yaw_matrix(turn * t).T for t in range(frames)])


def read_positions(path, scale: float = 1.0) -> np.ndarray:
    """Joint positions ``[F, 22, 3]`` (metres, HumanML3D order) read back with our BVH reader."""
    bvh = read_bvh(path)
    return forward_kinematics(bvh)[:, [bvh.index(n) for n in JOINT_NAMES]] / scale


# --------------------------------------------------------------------------- rotations

@pytest.mark.parametrize("order", ["".join(p) for p in itertools.permutations("XYZ")])
def test_euler_angles_match_the_readers_convention(order):
    rng = np.random.default_rng(1)
    angles = rng.uniform(-170, 170, (200, 3))
    angles[:10, 1] = 90.0  # gimbal lock
    angles[10:20, 1] = -90.0
    rot = euler_matrix(angles, order)
    back = euler_to_matrix(euler_angles(rot, order), order.lower())
    assert np.abs(back - rot).max() < 1e-9


# --------------------------------------------------------------------------- round trip

def test_round_trip_of_a_rigid_skeleton_is_within_1mm_of_the_input(tmp_path):
    joints = fit_skeleton(walk()).positions  # motion our skeleton can hold exactly
    path = export_bvh(joints, tmp_path / "walk.bvh")
    back = read_positions(path)
    assert back.shape == joints.shape
    assert np.abs(back - joints).max() < MM
    assert np.abs(fit_skeleton(joints).positions - joints).max() < 1e-9  # fitting is idempotent


def test_round_trip_of_stretchy_motion_is_the_fitted_skeleton(tmp_path):
    joints = walk()
    fit = fit_skeleton(joints)
    back = read_positions(export_bvh(joints, tmp_path / "walk.bvh"))
    assert np.abs(back - fit.positions).max() < MM
    assert np.abs(back[:, 0] - joints[:, 0]).max() < MM  # the root follows exactly
    error = np.linalg.norm(back - joints, axis=-1)
    assert error.mean() < 0.02 and error.max() < 0.1  # only bone stretch is lost


def test_rest_pose_is_a_t_pose_facing_z(tmp_path):
    bvh = read_bvh(export_bvh(walk(), tmp_path / "walk.bvh"))
    rest = rest_positions(bvh)[[bvh.index(n) for n in JOINT_NAMES]]
    left_arm = rest[20] - rest[16]
    assert left_arm[0] > 0.45 and abs(left_arm[1]) < 1e-9 and abs(left_arm[2]) < 1e-9  # out along +x
    assert rest[15, 1] > rest[12, 1] > rest[9, 1] > rest[0, 1] > rest[4, 1] > rest[7, 1]  # head up, legs down
    assert rest[10, 2] > rest[7, 2] + 0.1  # feet forward
    assert (T_POSE_DIRECTIONS[1:] != 0).any(axis=1).all()


# --------------------------------------------------------------------------- loops, frame rates, units

def test_loop_exports_one_period_without_a_repeated_frame(tmp_path):
    joints = circle_loop(40)
    turn, shift = loop_offset(joints)
    assert abs(np.degrees(turn) - 90.0) < 1.0 and np.linalg.norm(shift) < 0.02
    for fps, frames in ((20, 40), (30, 60), (60, 120)):
        path = export_bvh(joints, tmp_path / f"loop{fps}.bvh", fps_out=fps, loop=True)
        back = read_positions(path)
        assert back.shape[0] == frames and read_bvh(path).fps == fps
        after = back[0] @ _yaw_matrix(turn).T + shift  # the frame after the last, cycled
        steps = np.linalg.norm(np.diff(np.concatenate([back, after[None]]), axis=0), axis=-1).max(-1)
        assert steps.min() > 1e-3  # no frame repeats, the seam included
        assert steps[-1] < 1.5 * steps[:-1].max()  # the seam is an ordinary step
        side = json.loads(markers_path(path).read_text())
        assert side["loop"] and side["frames"] == frames and abs(side["loop_offset"]["yaw_deg"] - 90) < 1


@pytest.mark.parametrize("fps", [20, 30, 60, 24])
def test_resampling_keeps_duration_and_end_frames(tmp_path, fps):
    joints = fit_skeleton(walk(50)).positions
    path = export_bvh(joints, tmp_path / "walk.bvh", fps_out=fps,
                      segments=[{"text": "walk", "start": 0, "end": 20}, {"text": "turn", "start": 20, "end": 50}])
    bvh = read_bvh(path)
    assert abs(bvh.num_frames / bvh.fps - 50 / 20) <= 0.5 / fps
    back = read_positions(path)
    assert np.abs(back[[0, -1]] - joints[[0, -1]]).max() < MM
    side = json.loads(markers_path(path).read_text())
    assert [m["frame"] for m in side["markers"]] == [0, round(20 * fps / 20)]
    assert side["segments"][-1]["end"] == bvh.num_frames and side["fps"] == fps


def test_resampled_clip_follows_the_motion():
    joints = walk(50)
    fine = resample_joints(joints, 20.0, 60.0)
    times = np.arange(150) * 49 / 149  # endpoints kept: 50 frames at 20 fps -> 150 at 60 fps
    flat = joints.reshape(50, -1)
    expected = np.stack([np.interp(times, np.arange(50), flat[:, k]) for k in range(flat.shape[1])], -1)
    assert fine.shape[0] == 150 and np.abs(fine.reshape(150, -1) - expected).max() < 1e-9


def test_centimetres_scale_lengths_not_angles(tmp_path):
    joints = walk()
    m, cm = read_bvh(export_bvh(joints, tmp_path / "m.bvh")), read_bvh(export_bvh(joints, tmp_path / "cm.bvh", units="cm"))
    assert np.allclose(cm.offsets, 100 * m.offsets, atol=1e-4)
    assert np.allclose(cm.motion[:, :3], 100 * m.motion[:, :3], atol=1e-4)
    assert np.allclose(cm.motion[:, 3:], m.motion[:, 3:], atol=1e-6)
    assert np.abs(read_positions(tmp_path / "cm.bvh", scale=100) - read_positions(tmp_path / "m.bvh")).max() < MM


@pytest.mark.parametrize("kwargs,message", [
    (dict(units="mm"), "units 'mm' are not supported; expected one of ['cm', 'm']"),
    (dict(fps_out=0), "fps_out is 0; expected a frame rate in (0, 1000]"),
    (dict(fps_out=float("nan")), "fps_out is nan"),
    (dict(fps_in="fast"), "fps_in is 'fast'; expected a number of frames per second"),
    (dict(joints=np.zeros((5, 21, 3))), "expected [T, 22, 3]"),
    (dict(joints=np.full((5, 22, 3), np.nan)), "joints contain NaN or inf values"),
    (dict(joints=np.zeros((5, 22, 3))), "joint 1 (LeftUpLeg) coincides with its parent Hips"),
    (dict(joints=walk(1), loop=True), "at least 2 are needed"),
    (dict(segments=[{"text": "a", "start": 5, "end": 2}]), "expected 0 <= start < end"),
    (dict(path="x.txt"), "must end in .bvh"),
])
def test_bad_input_raises_one_line_and_writes_nothing(tmp_path, kwargs, message):
    args = dict(joints=walk(), path="x.bvh")
    args.update(kwargs)
    joints, path = args.pop("joints"), tmp_path / args.pop("path")
    with pytest.raises(ValueError) as err:
        export_bvh(joints, path, **args)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- results and CLI

def write_results(path, loop=False, num_samples=2, num_reps=1):
    clip = circle_loop(40) if loop else walk(40)
    motion = np.stack([clip] * (num_samples * num_reps)).transpose(0, 2, 3, 1).astype(np.float32)
    segs = [{"text": "walk", "start": 0, "end": 20}, {"text": "wave", "start": 20, "end": 40}]
    data = {"motion": motion, "text": ["walk | wave"] * (num_samples * num_reps),
            "lengths": np.array([40, 30] * num_reps)[: num_samples * num_reps], "num_samples": num_samples,
            "num_repetitions": num_reps, "segments": [segs] * (num_samples * num_reps), "loop": loop}
    np.save(path, data, allow_pickle=True)
    return path


def test_export_results_writes_every_row(tmp_path):
    from motion_collage.render import load_results

    results = load_results(write_results(tmp_path / "results.npy", num_samples=2, num_reps=2))
    paths = export_results(results, tmp_path / "bvh", fps=30)
    assert [p.name for p in paths] == ["sample00_rep00.bvh", "sample01_rep00.bvh", "sample00_rep01.bvh", "sample01_rep01.bvh"]
    assert [read_bvh(p).num_frames for p in paths] == [60, 45, 60, 45]
    assert [p.name for p in export_results(results, tmp_path / "one", sample=1, rep=0)] == ["sample01_rep00.bvh"]
    with pytest.raises(ValueError, match="unknown export format 'fbx'; expected one of \\['bvh'\\]"):
        export_results(results, tmp_path / "x", fmt="fbx")


def test_cli_exports_one_motion_to_a_file(tmp_path, capsys):
    results = write_results(tmp_path / "results.npy", loop=True)
    out = tmp_path / "clips" / "walk.bvh"
    assert main([str(results), "--sample", "0", "--rep", "0", "--fps", "60", "--units", "cm", "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == ["wrote", str(out), "wrote", str(out.with_name("walk.markers.json"))]
    bvh = read_bvh(out)
    assert bvh.num_frames == 120 and bvh.fps == 60
    assert main([str(results)]) == 0  # default: every motion, beside the results
    assert sorted(p.name for p in tmp_path.glob("*.bvh")) == ["sample00_rep00.bvh", "sample01_rep00.bvh"]


@pytest.mark.parametrize("args,message", [
    (["--fps", "0"], "--fps is 0.0; expected a frame rate in (0, 1000]"),
    (["--fps", "inf"], "--fps is inf"),
    (["--units", "mm"], "argument --units: invalid choice: 'mm'"),
    (["--format", "fbx"], "argument --format: invalid choice: 'fbx'"),
    (["--sample", "2"], "sample 2 is out of range: the results have 2 samples (0..1)"),
    (["--rep", "-1"], "rep -1 is out of range"),
    (["--out", "{dir}/x.txt"], "--out {dir}/x.txt must be a .bvh file (one motion) or a folder"),
    (["--out", "{dir}/x.bvh"], "is one .bvh file but 2 motions are selected; pass --sample I --rep J"),
    (["--out", "{file}"], "is a file; choose a folder, or a .bvh path for one motion"),
    (["--sample", "0", "--out", "{file}/x.bvh"], "is a file, not a folder; choose another output path"),
])
def test_cli_bad_options_one_line_exit_2(tmp_path, capsys, args, message):
    results = write_results(tmp_path / "results.npy")
    (tmp_path / "a_file").write_text("keep")
    argv = [a.format(dir=tmp_path, file=tmp_path / "a_file") for a in args]
    assert main([str(results), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message.format(dir=tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "results.npy"]


def test_cli_bad_results_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.npy")]) == 2
    assert "results file" in capsys.readouterr().err
    kit = {"motion": np.ones((1, 21, 3, 8), np.float32), "text": ["a"], "lengths": np.array([8])}
    np.save(tmp_path / "kit.npy", kit, allow_pickle=True)
    assert main([str(tmp_path / "kit.npy")]) == 2
    assert "21-joint motion; BVH export needs the 22-joint HumanML3D skeleton" in capsys.readouterr().err


def test_a_killed_runs_temporary_is_removed_and_the_export_is_whole(tmp_path):
    leftover = tmp_path / ".walk.bvh.abc123.tmp.bvh"  # what a run killed while writing leaves
    leftover.write_text("HIERARCHY half")
    path = export_bvh(walk(), tmp_path / "walk.bvh")
    assert not leftover.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["walk.bvh"]
    assert read_bvh(path).num_frames == 50


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_in_results_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    holder = np.empty((), object)
    holder[()] = {"motion": _Payload(marker), "text": ["a"], "lengths": np.array([8])}
    np.save(tmp_path / "results.npy", holder, allow_pickle=True)
    assert main([str(tmp_path / "results.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not marker.exists() and not list(tmp_path.glob("*.bvh"))


# --------------------------------------------------------------------------- Blender

BLENDER_SCRIPT = r'''
import builtins, importlib, json, sys
import bpy
# Debian's Blender 3.4 opens BVH files with mode "rU", which its Python 3.11 refuses.
module = importlib.import_module("io_anim_bvh.import_bvh")
module.open = lambda path, mode="r", *a, **k: builtins.open(path, mode.replace("U", ""), *a, **k)
paths = sys.argv[sys.argv.index("--") + 1:]
report = []
for bvh in paths[:-1]:
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    bpy.ops.import_anim.bvh(filepath=bvh)
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    action = arm.animation_data.action
    first, last = (int(round(f)) for f in action.frame_range)
    heads = []
    for frame in range(first, last + 1):
        bpy.context.scene.frame_set(frame)
        heads.append({b.name: list(arm.matrix_world @ b.head) for b in arm.pose.bones})
    keys = max(len(fc.keyframe_points) for fc in action.fcurves)
    report.append({"bvh": bvh, "keys": keys, "heads": heads})
json.dump(report, open(paths[-1], "w"))
'''


def blender_positions(paths, folder):
    """Per BVH file: (keyframe count, bone heads ``[F, 22, 3]`` in the file's axes and units)
    as Blender's own importer (default options: -Z forward, Y up) poses them."""
    script, out = folder / "blender_check.py", folder / "blender_heads.json"
    script.write_text(BLENDER_SCRIPT)
    cmd = ["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
           "--", *map(str, paths), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = []
    for item in json.loads(out.read_text()):
        heads = np.array([[frame[n] for n in JOINT_NAMES] for frame in item["heads"]])
        result.append((item["keys"], heads[..., [0, 2, 1]] * [1.0, 1.0, -1.0]))  # Blender Z up -> Y up
    return result


@pytest.mark.skipif(shutil.which("blender") is None, reason="Blender is not installed (apt-get install blender)")
def test_blender_imports_frames_and_joint_positions(tmp_path):
    clip = export_bvh(walk(50), tmp_path / "walk.bvh", fps_out=30, units="cm")
    loop = export_bvh(circle_loop(40), tmp_path / "loop.bvh", loop=True)
    (clip_keys, clip_heads), (loop_keys, loop_heads) = blender_positions([clip, loop], tmp_path)
    assert clip_keys == clip_heads.shape[0] == read_bvh(clip).num_frames == 75
    assert loop_keys == loop_heads.shape[0] == 40
    assert np.abs(clip_heads / 100 - read_positions(clip, scale=100)).max() < 0.01
    assert np.abs(loop_heads - read_positions(loop)).max() < 0.01


if __name__ == "__main__":  # pragma: no cover - manual check: python tests/test_export.py A.bvh B.bvh ...
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for name, (keys, heads) in zip(sys.argv[1:], blender_positions(sys.argv[1:], Path(tmp))):
            ours = read_positions(name)
            print(f"{name}: BVH frames {read_bvh(name).num_frames}, Blender keyframes {keys}, "
                  f"frames posed {heads.shape[0]}, max |Blender - ours| {np.abs(heads - ours).max():.2e} file units")
