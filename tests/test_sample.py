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
    assert settings["max_piece_frames"] == 196  # the tiny model's args.json has no max_piece_frames: the dataset's
    assert (out / "results.txt").read_text().count("\n") == 4
    assert sorted(p.name for p in out.glob("*.mp4")) == [f"sample{i:02d}_rep{j:02d}.mp4" for i in range(2) for j in range(2)]
    npz = np.load(out / "results.npz")  # the same data without pickle
    np.testing.assert_array_equal(npz["motion"], results["motion"])
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left behind


def test_merge_option_reaches_the_collage_and_args_json(tiny, tmp_path, capsys):
    common = ["--prompts", "a person walks", "a person runs", "--seconds", "2", "--steps", "3", "--render", "none",
              "--model_path", tiny]
    feats = {}
    for merge in ("exact", "bridge"):
        assert run(common + ["--merge", merge, "--output_dir", tmp_path / merge], capsys)[0] == 0
        assert json.loads((tmp_path / merge / "args.json").read_text())["method_options"]["merge"] == merge
        feats[merge] = np.load(tmp_path / merge / "features.npy")
    # the same noise, another merge: the frames around the boundary differ
    assert not np.allclose(feats["exact"][:, 30:50], feats["bridge"][:, 30:50], atol=1e-3)


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
    (["--prompts", "walk", "run", "--method", "doubletake", "--merge", "exact"], "--merge applies"),
    (["--prompts", "walk", "run", "--merge", "soft"], "invalid choice"),
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


# ------------------------------------------------------------------ MDM's habits and scene files

def _segments(folder):
    results = np.load(folder / "results.npy", allow_pickle=True).item()
    return [(s["text"], s["start"], s["end"]) for s in results["segments"][0]]


FAST = ["--steps", "2", "--render", "none"]


def test_priormdm_csv_and_flowmdm_json_scenes_are_frames_at_the_model_fps(tiny, tmp_path, capsys):
    csv_file = tmp_path / "dt_csv_example.csv"  # PriorMDM's layout: header, then prompt,frames
    csv_file.write_text('text,length\na person walks,30\n"a person waves, then bows",50\n')
    json_file = tmp_path / "composition.json"  # FlowMDM's layout
    json_file.write_text(json.dumps({"lengths": [40, 25], "text": ["a person runs", "a person jumps"]}))
    for name, path in (("csv", csv_file), ("json", json_file)):
        rc, _, err = run(["--input_text", path, *FAST, "--model_path", tiny, "--output_dir", tmp_path / name], capsys)
        assert rc == 0, err
    assert _segments(tmp_path / "csv") == [("a person walks", 0, 30), ("a person waves, then bows", 30, 80)]
    assert _segments(tmp_path / "json") == [("a person runs", 0, 40), ("a person jumps", 40, 65)]
    settings = json.loads((tmp_path / "csv" / "args.json").read_text())
    assert settings["segments_frames"] == [["a person walks", 30], ["a person waves, then bows", 50]]


@pytest.mark.parametrize("content, message", [
    ("text,seconds\nwalk,4\n", "expected PriorMDM's header 'text,length'"),
    ("a person walks,100\na person runs,80\n", "without a header"),
    ('{"text": ["walk"], "lengths": ["40"]}', "lengths[0] is '40'"),
    ("text,length\na person walks,80000\n", "limit is 3600 s"),  # frames are checked at the model's fps
])
def test_bad_scene_files_are_one_line_before_sampling(tiny, tmp_path, capsys, monkeypatch, content, message):
    import motion_collage.pipeline as pipeline
    monkeypatch.setattr(pipeline, "generate_motions", lambda *a, **k: pytest.fail("sampled a bad scene"))
    path = tmp_path / "scene.txt"
    path.write_text(content)
    rc, _, err = run(["--input_text", path, *FAST, "--model_path", tiny, "--output_dir", tmp_path / "o"], capsys)
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_text_prompt_and_motion_length_are_mdm_aliases(tiny, tmp_path, capsys):
    rc, _, err = run(["--text_prompt", "a person walks", "--motion_length", "2.5", *FAST, "--num_samples", "2",
                      "--model_path", tiny, "--output_dir", tmp_path / "mdm"], capsys)
    assert rc == 0, err
    assert run(["--prompts", "a person walks", "--seconds", "2.5", *FAST, "--num_samples", "2",
                "--model_path", tiny, "--output_dir", tmp_path / "ours"], capsys)[0] == 0
    mdm, ours = (np.load(tmp_path / n / "results.npy", allow_pickle=True).item() for n in ("mdm", "ours"))
    assert mdm["motion"].shape == (2, 22, 3, 50) and mdm["text"] == ["a person walks"] * 2
    np.testing.assert_array_equal(mdm["motion"], ours["motion"])
    # --motion_length is one duration for every prompt, like a single --seconds value
    assert run(["--prompts", "a person walks", "a person runs", "--motion_length", "1.5", *FAST,
                "--model_path", tiny, "--output_dir", tmp_path / "two"], capsys)[0] == 0
    assert [s[1:] for s in _segments(tmp_path / "two")] == [(0, 30), (30, 60)]


@pytest.mark.parametrize("argv, message", [
    (["--text_prompt", "walk", "--prompts", "run"], "not allowed with argument"),
    (["--text_prompt", "walk", "--seconds", "2", "--motion_length", "2"], "not allowed with argument"),
    (["--text_prompt", "walk", "--motion_length", "abc"], "--motion_length must be numbers, got 'abc'"),
    (["--text_prompt", "walk", "--motion_length", "0"], "--motion_length must be positive"),
    (["--text_prompt", " "], "prompt 1 is empty"),
    (["--text_prompt", "walk", "--motion_length", "2", "3"], "unrecognized arguments: 3"),
])
def test_alias_mistakes_are_one_line(tiny, tmp_path, capsys, argv, message):
    rc, _, err = run([*argv, *FAST, "--model_path", tiny, "--output_dir", tmp_path / "o"], capsys)
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_device_0_is_the_first_gpu(tmp_path, monkeypatch, capsys):
    import torch

    from motion_collage.sample import build_parser, parse
    argv = ["--text_prompt", "walk", "--device", "0", "--output_dir", str(tmp_path / "o")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parse(build_parser().parse_args(argv)).device == "cuda:0"
    assert parse(build_parser().parse_args(argv[:-3] + ["1", *argv[-2:]])).device == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, _, err = run(argv, capsys)
    assert rc == 2 and err == "error: device cuda:0 was asked for, but no CUDA device is available; use cpu\n"


# ------------------------------------------------------------------ three messages: one line, exit 2

def test_render_smpl_without_a_body_model_names_the_path_searched(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --smpl_dir is ./body_models
    for extra, expected in (([], "body_models/smpl/SMPL_NEUTRAL.pkl"),
                            (["--smpl_dir", tmp_path / "models" / "body_models"],
                             f"{tmp_path}/models/body_models/smpl/SMPL_NEUTRAL.pkl")):
        rc, _, err = run(["--prompts", "walk", "--render", "smpl", *extra, "--model_path", tiny,
                          "--output_dir", tmp_path / "o"], capsys)
        assert rc == 2 and err.count("\n") == 1 and f"expected {expected} " in err, err
        assert "body_models/body_models" not in err and "https://smpl.is.tue.mpg.de" in err
    assert not (tmp_path / "o").exists()


def test_bert_checkpoint_without_transformers_is_one_line(tmp_path, capsys, monkeypatch):
    from test_mdm_load import save_official
    path, _, _ = save_official(tmp_path / "bert", "bert")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    rc, _, err = run(["--prompts", "walk", "--model_path", path, "--output_dir", tmp_path / "o"], capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and "DistilBERT" in err, err
    assert 'pip install -e ".[bert]"' in err and not (tmp_path / "o").exists()


def test_torchscript_clip_without_text_keys_is_one_line(tmp_path, capsys):
    import gzip
    import warnings

    import torch
    from test_mdm_load import save_official
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch.nn.Linear(3, 2)).save(str(clip_dir / "ViT-B-32.pt"))  # TorchScript, no text tower
    (clip_dir / "bpe_simple_vocab_16e6.txt.gz").write_bytes(gzip.compress(b"#version\nw a\n"))
    path, _, _ = save_official(tmp_path / "clip_model")
    rc, _, err = run(["--prompts", "walk", "--model_path", path, "--clip_path", clip_dir,
                      "--output_dir", tmp_path / "o"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "has no CLIP text tower: missing token_embedding.weight" in err, err
    assert "ln_final.weight" in err and "KeyError" not in err and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ SMPL for Blender, BVH export

def test_render_smpl_writes_mdm_smpl_params(tiny, tmp_path, capsys, monkeypatch):
    from test_smpl_fit import NUM_F, NUM_V, synthetic_smpl, write_pkl_with_chumpy

    import motion_collage.smpl_fit as smpl_fit
    (tmp_path / "body_models" / "smpl").mkdir(parents=True)
    write_pkl_with_chumpy(synthetic_smpl(), tmp_path / "body_models" / "smpl" / "SMPL_NEUTRAL.pkl")
    monkeypatch.setattr(smpl_fit, "render_mesh", lambda *a, **k: None)  # meshes and videos have their own tests
    objs = []
    monkeypatch.setattr(smpl_fit, "export_obj", lambda vertices, faces, folder: objs.append((vertices.shape, folder)))
    out = tmp_path / "out"
    rc, _, err = run(["--text_prompt", "a person walks", "--motion_length", "0.5", "--overlap", "5f", "--steps", "2", "--render", "smpl",
                      "--smpl_dir", tmp_path / "body_models", "--model_path", tiny, "--output_dir", out], capsys)
    assert rc == 0, err
    params = np.load(out / "sample00_rep00_smpl_params.npy", allow_pickle=True).item()
    assert params["motion"].shape == (25, 6, 10) and params["thetas"].shape == (24, 6, 10)
    assert params["root_translation"].shape == (3, 10) and params["vertices"].shape == (NUM_V, 3, 10)
    assert params["faces"].shape == (NUM_F, 3) and params["text"] == "a person walks" and params["length"] == 10
    joints = np.load(out / "results.npy", allow_pickle=True).item()["motion"][0]  # [22, 3, T]
    np.testing.assert_allclose(params["root_translation"], joints[0], atol=1e-6)  # the pelvis, as MDM
    assert (out / "sample00_rep00_smpl.npz").is_file() and objs[0][0] == (10, NUM_V, 3)
    fit = np.load(out / "sample00_rep00_smpl.npz")
    np.testing.assert_allclose(params["thetas"][:, :, 3].reshape(24, 2, 3),
                               _rotation_rows(fit["pose"][3]), atol=1e-5)  # 6-D = the matrix's first two rows


def _rotation_rows(pose):
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(pose).as_matrix()[:, :2, :]


def test_export_bvh_runs_in_the_staged_folder(tiny, tmp_path, capsys, monkeypatch):
    import types
    calls = []

    def export_results(results, folder, fmt):
        calls.append((results["motion"].shape, Path(folder).name, fmt))
        (Path(folder) / "sample00_rep00.bvh").write_text("HIERARCHY\n")
        return [Path(folder) / "sample00_rep00.bvh"]
    monkeypatch.setitem(sys.modules, "motion_collage.export", types.SimpleNamespace(export_results=export_results))
    out = tmp_path / "out"
    rc, _, err = run(["--text_prompt", "a person walks", *FAST, "--export", "bvh", "--model_path", tiny,
                      "--output_dir", out], capsys)
    assert rc == 0, err
    assert calls == [((1, 22, 3, 80), calls[0][1], "bvh")] and calls[0][1] != "out"  # the temporary folder
    assert (out / "sample00_rep00.bvh").read_text() == "HIERARCHY\n"
    rc, _, err = run(["--text_prompt", "walk", *FAST, "--export", "fbx", "--model_path", tiny,
                      "--output_dir", tmp_path / "o"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "invalid choice: 'fbx'" in err


def test_export_bvh_with_the_real_exporter(tiny, tmp_path, capsys):
    pytest.importorskip("motion_collage.export")
    out = tmp_path / "out"
    rc, _, err = run(["--prompts", "a person walks", "a person runs", "--seconds", "1.5", *FAST, "--loop",
                      "--export", "bvh", "--model_path", tiny, "--output_dir", out], capsys)
    assert rc == 0, err
    bvh = (out / "sample00_rep00.bvh").read_text()
    assert bvh.startswith("HIERARCHY") and "MOTION" in bvh
    assert not list(tmp_path.glob(".out.*"))


def test_smpl_and_bvh_need_the_humanml3d_skeleton_before_sampling():
    import argparse

    from motion_collage.sample import check_skeleton
    from motion_core.spec import HUMANML3D
    kit = argparse.Namespace(num_joints=21, name="kit")
    for render, export, named in (("smpl", None, "--render smpl needs"), ("skeleton", "bvh", "--export bvh needs"),
                                  ("smpl", "bvh", "--render smpl and --export bvh need")):
        args = argparse.Namespace(render=render, export=export)
        with pytest.raises(ValueError, match=f"{named} the 22-joint HumanML3D skeleton; this model makes 21-joint kit"):
            check_skeleton(args, kit)
        check_skeleton(args, HUMANML3D)  # HumanML3D passes
    check_skeleton(argparse.Namespace(render="skeleton", export=None), kit)
