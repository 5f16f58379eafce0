"""The sample command: outputs in MDM's format, reproducibility, loops, and one-line errors."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from motion_collage.sample import main  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_outputs_load_back_like_mdm_results(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, _ = run(["--prompts", "a person walks forward", "a person waves the right hand", "a person runs",
                         "--seconds", "2", "1.5", "2", "--num_samples", "2", "--num_repetitions", "2",
                         "--steps", "5", "--model_path", tiny, "--output_dir", out], capsys)
    assert rc == 0 and str(out) in stdout.splitlines()[-1]
    results = np.load(out / "results.npy", allow_pickle=True).item()
    assert results["motion"].shape == (4, 22, 3, 110) and results["motion"].dtype == np.float32
    assert results["num_samples"] == 2 and results["num_repetitions"] == 2
    assert list(results["lengths"]) == [110] * 4
    assert len(results["text"]) == 4
    segs = results["segments"][3]
    assert [(s["text"], s["start"], s["end"]) for s in segs] == [
        ("a person walks forward", 0, 40), ("a person waves the right hand", 40, 70), ("a person runs", 70, 110)]
    assert np.load(out / "features.npy").shape == (4, 110, 263)
    settings = json.loads((out / "args.json").read_text())
    assert settings["overlap_frames"] == 20 and settings["method"] == "collage"
    assert (out / "results.txt").read_text().count("\n") == 4
    assert sorted(p.name for p in out.glob("*.mp4")) == [f"sample{i:02d}_rep{j:02d}.mp4" for i in range(2) for j in range(2)]
    npz = np.load(out / "results.npz")  # the same data without pickle
    np.testing.assert_array_equal(npz["motion"], results["motion"])
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left behind


def test_same_seed_same_results_and_batch_size_does_not_matter(tiny, tmp_path, capsys):
    common = ["--prompts", "a person walks", "a person runs", "--seconds", "1.5", "--steps", "4", "--eta", "0.5",
              "--num_samples", "3", "--render", "none", "--model_path", tiny]
    for name, extra in (("a", []), ("b", []), ("c", ["--batch_size", "1"])):
        assert run(common + extra + ["--output_dir", tmp_path / name], capsys)[0] == 0
    a, b, c = (np.load(tmp_path / n / "results.npy", allow_pickle=True).item()["motion"] for n in "abc")
    np.testing.assert_array_equal(a, b)
    # Per-row generators: the batch size changes only the floating-point order of batched kernels.
    np.testing.assert_allclose(a, c, rtol=0, atol=1e-4)
    assert run(common + ["--seed", "11", "--output_dir", tmp_path / "d"], capsys)[0] == 0
    d = np.load(tmp_path / "d" / "results.npy", allow_pickle=True).item()["motion"]
    assert not np.allclose(a, d)


def _feature_jerk(features: np.ndarray, centre: int, half: int = 4) -> float:
    """Mean |third difference| of the features in a window centred on a frame (wrapping)."""
    idx = (centre + np.arange(-half, half)) % features.shape[1]
    window = features[:, idx]
    return float(np.abs(np.diff(window, n=3, axis=1)).mean())


def test_loop_seam_is_as_smooth_as_interior_boundaries(tiny, tmp_path, capsys):
    common = ["--prompts", "a person walks", "a person runs", "a person waves the right hand", "--seconds", "2",
              "--num_samples", "6", "--steps", "8", "--render", "none", "--model_path", tiny]
    assert run(common + ["--loop", "--output_dir", tmp_path / "loop"], capsys)[0] == 0
    assert run(common + ["--output_dir", tmp_path / "open"], capsys)[0] == 0
    feats = np.load(tmp_path / "loop" / "features.npy")
    seam = _feature_jerk(feats, 0)
    interior = np.mean([_feature_jerk(feats, b) for b in (40, 80)])
    # The same prompts generated open, then played end -> start: the hard cut a loop must avoid.
    cut = _feature_jerk(np.load(tmp_path / "open" / "features.npy"), 0)
    results = np.load(tmp_path / "loop" / "results.npy", allow_pickle=True).item()
    assert results["loop"] is True
    assert seam < 1.5 * interior, (seam, interior)
    assert seam < 0.5 * cut, (seam, cut)


@pytest.mark.parametrize("argv, message", [
    (["--prompts", ""], "empty"),
    (["--prompts", "walk", "--method", "flow"], "invalid choice"),
    (["--prompts", "walk", "--sampler", "plms"], "invalid choice"),
    (["--prompts", "walk", "--seconds", "-1"], "positive"),
    (["--prompts", "walk", "--seconds", "abc"], "numbers"),
    (["--prompts", "walk", "run", "--seconds", "1", "2", "3"], "3 --seconds values for 2 prompts"),
    (["--prompts", "walk", "run", "--seconds", "2", "--overlap", "3s"], "overlap"),
    (["--prompts", "walk", "run", "--seconds", "0.5", "1"], "fewer than the overlap"),
    (["--prompts", "walk", "--device", "cuda"], "CUDA"),
    (["--prompts", "walk", "--overlap", "x"], "overlap must be"),
    (["--input_text", "/nonexistent/prompts.txt"], "does not exist"),
    (["--prompts", "walk", "--method", "replacement", "--loop"], "loop"),
    (["--prompts", "walk", "--guidance_param", "nan"], "finite"),
    (["--prompts", "walk", "--guidance_param", "inf"], "finite"),
    (["--prompts", "walk", "--guidance_param", "1e38"], "between 0 and 100"),
    (["--prompts", "walk", "--eta", "nan"], "finite"),
    (["--prompts", "walk", "--sampler", "edm", "--eta", "0.5"], "--eta applies"),
    (["--prompts", "walk", "--seconds", "1e6"], "limit is 3600 s"),
    (["--prompts", "walk", "--steps", "0"], "between 1 and 1000"),
    (["--prompts", "walk", "--steps", "101"], "1..100"),  # the tiny model has 100 trained steps
    (["--prompts", "walk", "--num_samples", "0"], "between 1 and"),
    (["--prompts", "walk", "--batch_size", "0"], "between 1 and"),
    (["--prompts", "walk", "--stats_dir", "/nonexistent/stats"], "not a folder"),
    (["--prompts", "walk", "--device", "tpu"], "unknown device"),
    (["--prompts", "walk", "--overlap", "nan"], "overlap must be"),
    (["--prompts", "walk", "run", "--method", "collage", "--overlap", "1.5f"], "whole number"),
])
def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, argv, message):
    if "--device" in argv:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    out = tmp_path / "never"
    rc, _, err = run(["--model_path", tiny, "--output_dir", out, "--steps", "2", "--render", "none"] + argv, capsys)
    assert rc == 2
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_prompt_file_errors_and_durations(tiny, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    rc, _, err = run(["--input_text", empty, "--model_path", tiny], capsys)
    assert rc == 2 and "is empty" in err
    good = tmp_path / "prompts.txt"
    good.write_text("a person walks # 1.5\na person runs\n")
    rc, _, _ = run(["--input_text", good, "--steps", "2", "--render", "none", "--model_path", tiny,
                    "--output_dir", tmp_path / "o"], capsys)
    assert rc == 0
    segs = np.load(tmp_path / "o" / "results.npy", allow_pickle=True).item()["segments"][0]
    assert [(s["start"], s["end"]) for s in segs] == [(0, 30), (30, 110)]  # 1.5 s, then the 4 s default


def test_existing_output_dir_needs_overwrite_and_corrupt_model_fails_cleanly(tiny, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    rc, _, err = run(["--prompts", "walk", "--model_path", tiny, "--output_dir", out], capsys)
    assert rc == 2 and "--overwrite" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in Path(tiny).parent.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.safetensors").write_bytes(b"not a checkpoint")
    rc, _, err = run(["--prompts", "walk", "--model_path", bad, "--output_dir", tmp_path / "x"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_output_paths_are_checked_before_sampling(tiny, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = ["--prompts", "walk", "--steps", "2", "--render", "none", "--model_path", tiny]
    for out, extra in ((a_file, []), (a_file, ["--overwrite"]), (a_file / "sub" / "out", [])):
        rc, _, err = run(base + extra + ["--output_dir", out], capsys)
        assert rc == 2 and err.count("\n") == 1 and "is a file" in err, err
    assert a_file.read_text() == "x"
    import motion_collage.pipeline as pipeline
    monkeypatch.setattr(pipeline, "generate_motions", lambda *a, **k: pytest.fail("sampled before the check"))
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    rc, _, err = run(base + ["--output_dir", tmp_path / "ro" / "out"], capsys)
    assert rc == 2 and "Read-only file system" in err and not (tmp_path / "ro").exists()


def test_unreadable_prompt_files_are_one_line(tiny, tmp_path, capsys):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00 walks")
    for path, message in ((binary, "UTF-8"), (tmp_path, "not a file")):
        rc, _, err = run(["--input_text", path, "--model_path", tiny, "--output_dir", tmp_path / "o"], capsys)
        assert rc == 2 and err.count("\n") == 1 and message in err, err


def test_a_prompt_with_a_line_break_is_one_line_of_results(tiny, tmp_path, capsys):
    out = tmp_path / "o"
    rc, _, _ = run(["--prompts", "a person\nwalks", "a person runs", "--seconds", "1.5", "--steps", "2",
                    "--render", "none", "--num_samples", "2", "--model_path", tiny, "--output_dir", out], capsys)
    assert rc == 0
    assert (out / "results.txt").read_text().splitlines() == ["a person walks | a person runs"] * 2


def test_temporaries_of_killed_runs_are_removed_and_failures_leave_nothing(tiny, tmp_path, capsys):
    stale = tmp_path / ".out.abcd1234.tmp"  # a killed run's temporary folder (nobody holds its lock)
    stale.mkdir()
    (stale / "results.npy").write_bytes(b"partial")
    out = tmp_path / "out"
    assert run(["--prompts", "walk", "--steps", "2", "--render", "none", "--model_path", tiny,
                "--output_dir", out], capsys)[0] == 0
    assert not stale.exists() and (out / "results.npy").is_file()
    # A failure after the checks (a model whose output overflows to inf/NaN) leaves no output and
    # no new parent folders behind, and names the sampling step.
    from safetensors.torch import load_file, save_file
    overflow = tmp_path / "overflow"
    overflow.mkdir()
    for f in Path(tiny).parent.iterdir():
        (overflow / f.name).write_bytes(f.read_bytes())
    state = load_file(str(overflow / "model.safetensors"))
    state["output_process.poseFinal.weight"] = state["output_process.poseFinal.weight"] * 1e38
    save_file(state, str(overflow / "model.safetensors"))
    nested = tmp_path / "new" / "deeper" / "out"
    rc, _, err = run(["--prompts", "a person walks", "--steps", "2", "--render", "none",
                      "--model_path", overflow, "--output_dir", nested], capsys)
    assert rc == 2 and "NaN or inf at sampling step 2" in err and not (tmp_path / "new").exists(), err
