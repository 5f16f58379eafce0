"""motion_core.atomic: outputs complete or absent, checked before work (locks: test_prepare_cli.py)."""
import pytest

from motion_core.atomic import check_output_file, check_output_folder, remove_stale_temporaries, staged_dir


def test_success_renames_into_place_and_replaces_only_with_overwrite(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with staged_dir(target) as tmp:
        (tmp / "x.txt").write_text("1")
        assert not target.exists()
    assert (target / "x.txt").read_text() == "1"
    with pytest.raises(FileExistsError):
        with staged_dir(target) as tmp:
            (tmp / "y.txt").write_text("2")
    with staged_dir(target, overwrite=True) as tmp:
        (tmp / "y.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["y.txt"]
    assert [p.name for p in target.parent.iterdir()] == ["out"]  # no temporary or old copy left


def test_failure_leaves_the_old_target_and_no_new_folders(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(target) as tmp:
            (tmp / "x.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(kept, overwrite=True):
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and (kept / "old.txt").read_text() == "old"


def test_an_unlocked_leftover_is_removed_and_others_are_kept(tmp_path):
    leftover = tmp_path / ".out.k3j4.tmp"  # a killed run's temporary: nobody holds its lock
    leftover.mkdir()
    (leftover / "results.npy").write_bytes(b"partial")
    other = tmp_path / ".other.k3j4.tmp"
    other.mkdir()
    assert remove_stale_temporaries(tmp_path / "out") == [leftover]
    assert other.exists()


def test_output_checks_create_nothing(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for target, overwrite, message in ((f, True, "is a file"), (f / "sub", False, "is a file"),
                                       (tmp_path, False, "exists")):
        with pytest.raises(ValueError, match=message):
            check_output_folder(target, overwrite)
    check_output_folder(tmp_path / "fresh" / "deep", False)
    for target, suffixes, message in ((tmp_path, None, "existing folder"), (f / "a.mp4", None, "is a file"),
                                      (tmp_path / "a.avi", (".mp4", ".gif"), "must end in")):
        with pytest.raises(ValueError, match=message):
            check_output_file(target, suffixes)
    check_output_file(tmp_path / "fresh" / "v.mp4", (".mp4",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
