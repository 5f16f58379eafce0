"""AtomicFolder and the output-path checks: complete or absent, never half-written."""
import os
import subprocess

import pytest

from motion_collage.output_dir import AtomicFolder, check_output_dir, remove_stale_temporaries
from motion_core.cli import UsageError


def test_success_renames_into_place_and_replaces_only_with_overwrite(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with AtomicFolder(target) as tmp:
        (tmp / "x.txt").write_text("1")
        assert not target.exists()
    assert (target / "x.txt").read_text() == "1"
    with AtomicFolder(target, overwrite=True) as tmp:
        (tmp / "y.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["y.txt"]
    assert [p.name for p in target.parent.iterdir()] == ["out"]  # no temporary or old copy left


def test_failure_leaves_the_old_target_and_no_new_folders(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError):
        with AtomicFolder(target) as tmp:
            (tmp / "x.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with AtomicFolder(kept, overwrite=True):
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and (kept / "old.txt").read_text() == "old"


def test_stale_temporaries_of_dead_processes_only_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}-zz"
    alive = tmp_path / f".out.tmp-{os.getppid()}-zz"
    other = tmp_path / f".other.tmp-{dead.pid}-zz"
    for p in (stale, alive, other):
        p.mkdir()
    assert remove_stale_temporaries(tmp_path / "out") == [stale]
    assert alive.exists() and other.exists() and not stale.exists()


def test_output_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for target, overwrite, message in ((f, True, "is a file"), (f / "sub", False, "is a file"),
                                       (tmp_path, False, "exists")):
        with pytest.raises(UsageError, match=message):
            check_output_dir(target, overwrite)
    check_output_dir(tmp_path / "fresh" / "deep", False)
    assert not (tmp_path / "fresh").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["file"]
