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
