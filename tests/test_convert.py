"""BVH folder -> HumanML3D-layout folder: layout, shapes, labels, reproducibility, skips."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from motion_core.normalization import ModelStats
from motion_collage.representation import features_to_joints
from prepare.convert_bvh import ClipRecord, convert_folder, main

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "bandai-namco-sample"
CLIPS = [
    "dataset-1/data/dataset-1_run_normal_001",
    "dataset-2/data/dataset-2_raise-up-left-hand_normal_001",
    "dataset-2/data/dataset-2_walk-turn-left_normal_001",
]
JOINT_FRAMES = {  # 30 fps BVH frames F -> floor((F - 1) * 2 / 3) + 1 frames at 20 fps
    "dataset-1_run_normal_001": 16,  # 24 frames
    "dataset-2_raise-up-left-hand_normal_001": 37,  # 55 frames
    "dataset-2_walk-turn-left_normal_001": 68,  # 102 frames
}


@pytest.fixture()
def src(tmp_path):
    """A copy of the sample with only the 3 clips of CLIPS (plus the label name files)."""
    if not SAMPLE.is_dir():
        pytest.skip("sample data not available")
    root = tmp_path / "src"
    for clip in CLIPS:
        for ext in (".bvh", ".json"):
            dst = root / (clip + ext)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SAMPLE / (clip + ext), dst)
    for ds in ("dataset-1", "dataset-2"):
        shutil.copytree(SAMPLE / ds / "cfg", root / ds / "cfg")
    return root


def test_layout_shapes_and_records(src, tmp_path):
    out = tmp_path / "out"
    records, skipped = convert_folder(src, out, captions=lambda r: [f"a person does {r.labels['content_name']}#x#0.0#0.0"])
    assert skipped == []
    assert [r.id for r in records] == sorted(JOINT_FRAMES)
    for rec in records:
        assert isinstance(rec, ClipRecord) and Path(rec.source).is_file()
        assert rec.num_frames == JOINT_FRAMES[rec.id]
        feats = np.load(out / "new_joint_vecs" / f"{rec.id}.npy")
        joints = np.load(out / "new_joints" / f"{rec.id}.npy")
        assert feats.dtype == joints.dtype == np.float32
        assert feats.shape == (rec.num_frames - 1, 263) and joints.shape == (rec.num_frames, 22, 3)
        np.testing.assert_allclose(features_to_joints(feats), joints[:-1], atol=1e-5)
        assert (out / "texts" / f"{rec.id}.txt").read_text().startswith("a person does ")
    rec = {r.id: r for r in records}["dataset-2_walk-turn-left_normal_001"]
    assert rec.labels == {"content": 1, "style": 5, "content_name": "walk-turn-left", "style_name": "normal"}
    stats = ModelStats.from_dir(out)
    assert stats.mean.dtype == stats.std.dtype == np.float32 and stats.dim == 263
    all_feats = np.concatenate([np.load(p) for p in sorted((out / "new_joint_vecs").glob("*.npy"))]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, all_feats.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats.std[4:67], all_feats[:, 4:67].std(0).mean(), rtol=1e-4)  # group mean
    manifest = json.loads((out / "conversion.json").read_text())
    assert [c["id"] for c in manifest["clips"]] == sorted(JOINT_FRAMES)
    assert manifest["clips"][0]["source"] == CLIPS[0] + ".bvh"  # relative to the source folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp folder left


def test_rerun_gives_identical_bytes(src, tmp_path):
    convert_folder(src, tmp_path / "a")
    convert_folder(src, tmp_path / "b", workers=2)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 * 2 + 3
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_corrupt_files_are_skipped_and_reported(src, tmp_path):
    (src / "broken.bvh").write_text("HIERARCHY\nROOT x\n{\n  OFFSET 0 0\n}\nMOTION\n")
    (src / "bad_labels.bvh").write_bytes((src / (CLIPS[0] + ".bvh")).read_bytes())
    (src / "bad_labels.json").write_text("{not json")
    records, skipped = convert_folder(src, tmp_path / "out")
    assert len(records) == 3
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {"broken.bvh", "bad_labels.bvh"}
    assert reasons["broken.bvh"].startswith("line 5: expected a number in OFFSET")
    assert "invalid JSON" in reasons["bad_labels.bvh"]
    assert not (tmp_path / "out" / "new_joint_vecs" / "broken.npy").exists()


def test_mirror_adds_m_copies(src, tmp_path):
    records, _ = convert_folder(src, tmp_path / "out", mirror=True)
    ids = [r.id for r in records]
    assert len(ids) == 6 and all(("M" + i) in ids for i in JOINT_FRAMES)
    a = np.load(tmp_path / "out" / "new_joints" / "dataset-2_raise-up-left-hand_normal_001.npy")
    m = np.load(tmp_path / "out" / "new_joints" / "Mdataset-2_raise-up-left-hand_normal_001.npy")
    # the original raises the left wrist (20), the mirror the right one (21)
    assert a[:, 20, 1].max() > a[:, 21, 1].max() + 0.3 and m[:, 21, 1].max() > m[:, 20, 1].max() + 0.3


def test_existing_output_is_protected_and_failures_leave_nothing(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_folder(src, out)
    assert (out / "keep.txt").read_text() == "mine"

    def boom(tmp_dir, records):
        assert (tmp_dir / "Mean.npy").is_file() and len(records) == 3
        raise RuntimeError("split writer failed")

    with pytest.raises(RuntimeError):
        convert_folder(src, tmp_path / "fresh", finalize=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    convert_folder(src, out, overwrite=True, finalize=lambda d, r: (d / "train.txt").write_text("x\n"))
    assert not (out / "keep.txt").exists() and (out / "train.txt").is_file()


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: source folder") and "\n" not in err


# --------------------------------------------------------------------------- hostile and broken input
def deep_chain(depth: int) -> str:
    """A BVH file whose joints nest ``depth`` deep (no known skeleton)."""
    lines = ["HIERARCHY", "ROOT j0", "{", "OFFSET 0 0 0", "CHANNELS 1 Zrotation"]
    for i in range(1, depth):
        lines += [f"JOINT j{i}", "{", "OFFSET 0 1 0", "CHANNELS 1 Zrotation"]
    lines += ["}"] * depth + ["MOTION", "Frames: 2", "Frame Time: 0.0333333", *[" ".join(["0"] * depth)] * 2]
    return "\n".join(lines) + "\n"


def with_header(src: Path, **values) -> str:
    """A good clip's text with some MOTION header values replaced."""
    text = (src / (CLIPS[0] + ".bvh")).read_text()
    for label, value in values.items():
        key = {"frames": "Frames:", "frame_time": "Frame Time:"}[label]
        start = text.index(key)
        text = text[:start] + f"{key} {value}" + text[text.index("\n", start):]
    return text


def leftovers(folder: Path) -> list[str]:
    """Temporaries of any run beside the outputs in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


@pytest.mark.parametrize("payload,reason", [
    (lambda src: deep_chain(3000), "needs joints"),  # used to be RecursionError for the whole folder
    (lambda src: with_header(src, frames="inf"), "frame count inf is not a count"),  # OverflowError
    (lambda src: with_header(src, frame_time="1e300"), "is outside [1e-05, 10] s"),  # huge resampling
    (lambda src: with_header(src, frame_time="nan"), "must be > 0"),
    (lambda src: "HIERARCHY\nROOT x\n{\n" + "JOINT y {\n" * 10, "no MOTION section"),
])
def test_a_hostile_file_is_skipped_and_the_good_clips_convert(src, tmp_path, payload, reason):
    (src / "hostile.bvh").write_text(payload(src))
    records, skipped = convert_folder(src, tmp_path / "out")
    assert [r.id for r in records] == sorted(JOINT_FRAMES)
    assert [Path(s.path).name for s in skipped] == ["hostile.bvh"]
    assert reason in skipped[0].reason and "\n" not in skipped[0].reason and len(skipped[0].reason) < 1200
    manifest = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert [s["path"] for s in manifest["skipped"]] == ["hostile.bvh"]


@pytest.mark.parametrize("option,value,message", [
    ("fps", 0, "fps 0 is not a frame rate in (0, 1000]"),
    ("fps", -20.0, "fps -20.0 is not a frame rate in (0, 1000]"),
    ("fps", float("nan"), "fps nan is not a frame rate"),
    ("fps", float("inf"), "fps inf is not a frame rate"),
    ("fps", 1e9, "fps 1000000000.0 is not a frame rate in (0, 1000]"),
    ("min_frames", 1, "min_frames 1 is not a whole number in [2, 1000000]"),
    ("min_frames", 2.5, "min_frames 2.5 is not a whole number"),
    ("min_frames", 10 ** 7, "min_frames 10000000 is not a whole number in [2, 1000000]"),
    ("workers", 0, "workers must be >= 1 and <= 64, got 0"),
    ("workers", 1000, "workers must be >= 1 and <= 64, got 1000"),
    ("skeleton", "smpl", "unknown skeleton 'smpl'"),
])
def test_bad_options_fail_up_front_and_write_nothing(tmp_path, option, value, message):
    src = tmp_path / "src"  # the options are checked before the folder is even looked at
    src.mkdir()
    with pytest.raises(ValueError) as info:
        convert_folder(src, tmp_path / "out", **{option: value})
    assert str(info.value).startswith(message), str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_clips_too_short_for_min_frames_say_so(src, tmp_path):
    # this used to report another file's "no MOTION section; is this a BVH file?"
    (src / "notes.bvh").write_text("not a bvh file\n")
    with pytest.raises(ValueError) as info:
        convert_folder(src, tmp_path / "out", min_frames=100000)
    message = str(info.value)
    assert message.startswith(f"none of the 4 BVH files under {src} could be converted: 3 too short "
                              f"(lower min_frames), e.g. dataset-1_run_normal_001.bvh: 16 frames at 20 fps, "
                              f"fewer than the minimum 100000; 1 unreadable, e.g. notes.bvh: line 1: no MOTION")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    records, skipped = convert_folder(src, tmp_path / "out", min_frames=20)  # per file, the true reason
    assert len(records) == 2
    assert {Path(s.path).name: s.reason for s in skipped}["dataset-1_run_normal_001.bvh"] == \
        "16 frames at 20 fps, fewer than the minimum 20"


@pytest.mark.parametrize("where,overwrite,error,message", [
    (lambda src, tmp: src, True, ValueError, "holds the source folder"),  # would delete the BVH files
    (lambda src, tmp: tmp, True, ValueError, "holds the source folder"),
    (lambda src, tmp: tmp / "file.txt", True, NotADirectoryError, "is a file"),
    (lambda src, tmp: tmp / "file.txt" / "out", False, NotADirectoryError, "is a file, not a folder"),
])
def test_output_paths_that_would_destroy_inputs_are_refused(src, tmp_path, where, overwrite, error, message):
    (tmp_path / "file.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(error, match=message):
        convert_folder(src, where(src, tmp_path), overwrite=overwrite)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_a_killed_runs_temporary_is_removed_by_the_next_run(src, tmp_path):
    stale = tmp_path / ".out.k1ll3d.tmp"  # what kill -9 left (nobody holds its lock)
    (stale / "new_joints").mkdir(parents=True)
    old_scheme = tmp_path / ".out.abc123.tmp"  # the earlier naming, never locked
    old_scheme.mkdir()
    convert_folder(src, tmp_path / "out")
    assert leftovers(tmp_path) == [] and (tmp_path / "out" / "Mean.npy").is_file()


def test_cli_reports_user_mistakes_in_one_line(src, tmp_path, capsys):
    out = tmp_path / "out"
    for argv, start in [
        ([str(src), str(out), "--fps", "nan"], "error: fps nan is not a frame rate in (0, 1000]"),
        ([str(src), str(out), "--min-frames", "100000"], "error: none of the 3 BVH files"),
        ([str(src), str(out), "--fps", "fast"], "error: argument --fps: invalid float value: 'fast'"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err
        assert not out.exists() and leftovers(tmp_path) == []
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(src), str(out)]) == 2
    assert capsys.readouterr().err == f"error: output folder {out} exists and is not empty; " \
                                      f"choose another folder or pass --overwrite\n"
    assert main([str(src), str(out), "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith("converted 3 clips (121 frames")
