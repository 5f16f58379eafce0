"""The benchmark command: outputs, resume after a kill, re-scoring from the cache, torchrun sharding."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_fixtures import build_dataset, build_evaluator  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

from eval import benchmark as B  # noqa: E402
from eval.cache import BatchCache  # noqa: E402
from eval.scenes import build_scenes, save_scenes  # noqa: E402
from eval.suites import SplitData  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = build_dataset(root / "data", test_clips=24)
    evaluator = build_evaluator(root / "evaluator", data)
    model = build_tiny_model(root / "model")
    scenes = save_scenes(root / "scenes.json", build_scenes(SplitData.load(data).clips, 4, seed=0, num_scenes=4))
    return {"root": root, "data": data, "evaluator": evaluator, "model": model, "scenes": scenes}


def _args(env, out, *extra):
    return ["--suite", "compose", "--methods", "collage", "doubletake",
            "--model_path", str(env["model"]), "--evaluator", str(env["evaluator"]),
            "--scenes", str(env["scenes"]), "--num_scenes", "4", "--scenes_per_batch", "2",
            "--replications", "2", "--steps", "2", "--transition_window", "20", "--diversity_pairs", "8",
            "--threads", "1", "--device", "cpu", "--no_progress", "--output_dir", str(out), *extra]


def _tables(out):
    return (Path(out) / "results.md").read_text(), (Path(out) / "results.csv").read_text()


@pytest.fixture(scope="module")
def reference_run(env):
    out = env["root"] / "reference"
    assert B.main(_args(env, out)) == 0
    torch.set_num_threads(1)
    return out


def test_outputs(env, reference_run):
    out = reference_run
    for name in ("results.md", "results.csv", "results.json", "metrics.png", "jerk.png", "run.log"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "results.json").read_text())
    assert list(payload["results"]) == ["real", "collage", "doubletake"]
    for method in payload["results"]:
        for metric in ("top3", "fid", "tr_fid", "tr_pj", "tr_auj"):
            assert payload["results"][method][metric]["n"] == 2
    assert len(payload["curves"]["collage"]["transition_jerk"]) == 17
    assert payload["provenance"]["model_sha256"] and payload["provenance"]["evaluator_sha256"]
    log = (out / "run.log").read_text()
    assert "git:" in log and "sha256" in log and "total wall time" in log
    assert len(BatchCache(out / "cache").entries()) == 2 * 2 * 2        # methods x reps x batches
    md = (out / "results.md").read_text()
    assert "| collage |" in md and "NOT comparable" in md


def test_changing_the_window_rescores_from_the_cache(env, reference_run, tmp_path, monkeypatch):
    out = tmp_path / "window"
    shutil.copytree(reference_run / "cache", out / "cache")

    def no_generation(*a, **k):
        raise AssertionError("generation must not run when everything is cached")
    monkeypatch.setattr(B, "generate_job", no_generation)
    args = _args(env, out)
    args[args.index("--transition_window") + 1] = "24"
    assert B.main(args) == 0
    new = json.loads((out / "results.json").read_text())["results"]
    old = json.loads((reference_run / "results.json").read_text())["results"]
    assert new["collage"]["fid"] == old["collage"]["fid"]               # segments unchanged
    assert new["collage"]["tr_auj"] != old["collage"]["tr_auj"]         # transitions re-scored
    assert len(json.loads((out / "results.json").read_text())["curves"]["collage"]["transition_jerk"]) == 21


def _cli(env, out, *extra):
    cmd = [sys.executable, "-m", "eval.benchmark", *_args(env, out, *extra)]
    envvars = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return cmd, envvars


def test_resume_after_kill_gives_identical_tables(env, reference_run, tmp_path, capfd):
    out = tmp_path / "killed"
    cmd, envvars = _cli(env, out, "--throttle", "0.3")
    proc = subprocess.Popen(cmd, cwd=REPO, env=envvars, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cache = BatchCache(out / "cache")
    deadline = time.monotonic() + 60
    while not cache.entries() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(cache.entries())
    assert 1 <= done < 8, f"the run was not interrupted mid-way ({done} entries)"
    assert not (out / "results.md").exists()
    capfd.readouterr()
    assert B.main(cmd[3:]) == 0                                  # the same arguments, run again
    assert f"{done} cached, {8 - done} to generate" in capfd.readouterr().err
    assert _tables(out) == _tables(reference_run)


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_equal_one(env, reference_run, tmp_path):
    out = tmp_path / "sharded"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd, envvars = _cli(env, out)
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "eval.benchmark", *cmd[3:]]
    result = subprocess.run(cmd, cwd=REPO, env=envvars, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "run.log").read_text()
    assert "processes: 2" in log and "rank 1/2: 4 batches" in result.stderr
    assert _tables(out) == _tables(reference_run)


def test_official_evaluator_layout_is_accepted(env, tmp_path):
    """finest.tar + glove/ + t2m_mean/std (official layout; small sizes, inferred from the weights)."""
    import pickle

    import numpy as np

    from bench_fixtures import WORDS
    from eval.evaluator import Evaluator, EvaluatorConfig

    torch.manual_seed(0)
    small = EvaluatorConfig(word_dim=6, text_hidden=8, movement_hidden=8, movement_latent=8, motion_hidden=12,
                            embed_dim=5)
    model = Evaluator(small)
    ckpt = tmp_path / "t2m" / "text_mot_match" / "model" / "finest.tar"
    ckpt.parent.mkdir(parents=True)
    torch.save({p: getattr(model, p).state_dict() for p in ("text_encoder", "movement_encoder", "motion_encoder")},
               ckpt)
    glove = tmp_path / "glove"
    glove.mkdir()
    np.save(glove / "our_vab_data.npy", np.random.default_rng(0).normal(size=(len(WORDS), 6)))
    (glove / "our_vab_words.pkl").write_bytes(pickle.dumps(WORDS))
    (glove / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(WORDS)}))
    stats = tmp_path / "dataset"
    stats.mkdir()
    np.save(stats / "t2m_mean.npy", np.zeros(263))
    np.save(stats / "t2m_std.npy", np.full(263, 0.05))
    out = tmp_path / "official"
    args = ["--suite", "single", "--model_path", str(env["model"]), "--evaluator", str(ckpt),
            "--glove_dir", str(glove), "--evaluator_stats", str(stats), "--data", str(env["data"]),
            "--replications", "1", "--samples_per_rep", "8", "--batch_size", "8", "--steps", "2",
            "--diversity_pairs", "8", "--threads", "1", "--device", "cpu", "--no_progress", "--output_dir", str(out)]
    assert B.main(args) == 0
    md = (out / "results.md").read_text()
    assert "Official HumanML3D evaluator" in md and "| collage (shuffled text) |" in md
    args[args.index("--glove_dir"):args.index("--glove_dir") + 2] = []
    assert B.main(args) == 2                                        # captions need the official glove/


# --------------------------------------------------------------------------------------------
# Hostile input: one line on stderr, exit status 2, nothing written
# --------------------------------------------------------------------------------------------

def _small(env, out, *extra):
    """A small single-suite run (if a bad value slipped through, it would still end quickly)."""
    return ["--suite", "single", "--model_path", str(env["model"]), "--evaluator", str(env["evaluator"]),
            "--data", str(env["data"]), "--replications", "1", "--samples_per_rep", "4", "--batch_size", "4",
            "--steps", "1", "--diversity_pairs", "4", "--threads", "1", "--device", "cpu", "--no_progress",
            "--output_dir", str(out), *extra]


BAD_INPUT = [
    (["--methods", "bogus"], "unknown method 'bogus' for the single suite; expected one of ['collage'"),
    (["--methods", "collage", "collage"], "lists a method twice"),
    (["--methods", "real"], "'real' is always reported"),
    (["--data", "{tmp}/missing"], "is not a folder"),
    (["--data", "{tmp}"], "has no test.txt"),
    (["--model_path", "{tmp}/missing"], "model path {tmp}/missing does not exist"),
    (["--evaluator", "{tmp}/missing"], "evaluator {tmp}/missing not found"),
    (["--samples_per_rep", "0"], "samples_per_rep must be a whole number from 2 to 100000 (FID needs two samples)"),
    (["--samples_per_rep", "100000000"], "samples_per_rep must be a whole number from 2 to 100000"),
    (["--batch_size", "0"], "batch_size must be a whole number from 1 to 4096, got 0"),
    (["--guidance_param", "nan"], "argument --guidance_param: must be a finite number, got 'nan'"),
    (["--eta", "inf"], "argument --eta: must be a finite number, got 'inf'"),
    (["--eta", "-1"], "eta must be a finite number >= 0"),
    (["--eta", "0.5", "--sampler", "edm"], "eta applies to samplers ['ddim'], not to 'edm'"),
    (["--steps", "0"], "steps must be a whole number from 1 to 1000"),
    (["--steps", "5000"], "steps must be a whole number from 1 to 1000"),
    (["--replications", "0"], "--replications must be a whole number from 1 to 1000"),
    (["--replications", "x"], "argument --replications: invalid int value: 'x'"),
    (["--threads", "-1"], "--threads must be a whole number from 0 to 1024"),
    (["--throttle", "-1"], "--throttle must be from 0 to 3600 seconds"),
    (["--seed", "-1"], "seed must be a whole number >= 0, got -1"),
    (["--diversity_pairs", "0"], "diversity_pairs must be a whole number >= 1"),
    (["--sampler", "bogus"], "argument --sampler: invalid choice: 'bogus'"),
    (["--suite", "huge"], "argument --suite: invalid choice: 'huge'"),
    (["--bogus_flag", "1"], "unrecognized arguments: --bogus_flag 1"),
    (["--real_jerk", "1"], "--real_jerk is a setting of the compose/loop suites, not of single"),
    (["--suite", "long", "--long_seconds", "-1"], "long_seconds must be a number of seconds > 0 and <= 3600"),
    (["--suite", "long", "--long_seconds", "1e9"], "long_seconds must be a number of seconds > 0 and <= 3600"),
    (["--suite", "loop", "--loop_seconds", "nan"], "argument --loop_seconds: must be a finite number"),
    (["--suite", "loop", "--loop_seconds", "2"], "transition window (60 frames) longer than the loop (40 frames)"),
    (["--suite", "loop", "--methods", "replacement"], "method 'replacement' cannot make a loop"),
    (["--suite", "compose", "--transition_window", "4"], "transition_window must be a whole number >= 8 frames"),
    (["--suite", "compose", "--transition_window", "500"], "no test clip has 500 frames"),
    (["--suite", "compose", "--real_jerk", "-1"], "real_jerk must be a finite number > 0"),
    (["--suite", "compose", "--num_scenes", "0"], "num_scenes must be a whole number >= 1"),
    (["--suite", "compose", "--scenes_per_batch", "0"], "scenes_per_batch must be a whole number from 1 to 4096"),
    (["--suite", "compose", "--scene_group", "huge"], "argument --scene_group: invalid choice: 'huge'"),
    (["--suite", "compose", "--scenes", "{tmp}/none.json"], "scenes file {tmp}/none.json not found"),
    (["--suite", "compose", "--scenes", "{tmp}/garbage.json"], "is not JSON"),
    (["--suite", "compose", "--scenes", "{tmp}/bad_frames.json"], "segment frames must be a whole number >= 1"),
    (["--method_options", "{"], "--method_options is not valid JSON"),
    (["--method_options", "[1]"], "--method_options must map methods to objects"),
    (["--method_options", '{"collage": {"overlap": NaN}}'], "--method_options holds NaN"),
    (["--method_options", '{"naive": {}}'], "--method_options names 'naive', which is not in --methods ['collage']"),
    (["--method_options", '{"collage": {"handshake": 20}}'],
     "method 'collage' has no option 'handshake'; its options: ['overlap', 'transition'"),
    (["--method_options", '{"collage": {"overlap": "20x"}}'], "must be seconds ('1.0', '1s') or frames ('20f')"),
    (["--method_options", '{"collage": {"overlap": 30}}'], "overlap (600 frames) must be smaller than a piece"),
    (["--output_dir", "{tmp}/a_file"], "is a file, not a folder"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUT, ids=[" ".join(a)[:40] for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_writes_nothing(env, tmp_path, capsys, extra, message):
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "bad_frames.json").write_text(json.dumps(
        {"format": "motion-collage-scenes-1", "groups": {"all": [
            {"name": "s", "segments": [{"text": "a person runs", "tokens": [], "frames": -5, "clip": "000000"}]}]}}))
    (tmp_path / "a_file").write_text("keep")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in _small(env, out, *extra)]
    if "--output_dir" in extra:                       # the later --output_dir wins
        args = args[:args.index("--output_dir")] + args[args.index("--output_dir") + 2:]
    assert B.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before          # nothing written, no output folder
    assert (tmp_path / "a_file").read_text() == "keep"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_one_line(env, tmp_path, capsys):
    assert B.main(_small(env, tmp_path / "out", "--device", "cuda")) == 2
    assert capsys.readouterr().err == "error: device cuda was asked for, but no CUDA device is available; use cpu\n"
    assert not (tmp_path / "out").exists()


def test_method_options_in_seconds_and_frames(env):
    """--method_options: seconds or 'Nf' strings, on top of the suite's own choices."""
    options = '{"collage": {"overlap": "10f"}, "doubletake": {"blend": 0.25}}'
    config = B.parse(B.build_parser().parse_args(_args(env, "unused", "--method_options", options)))
    collage, doubletake = (c.frame_settings(20.0) for c in config.calls)
    assert (collage["method"], collage["loop"]) == ("collage", False)
    assert {k: collage["options"][k] for k in ("overlap", "transition")} == {"overlap": 10, "transition": "null"}
    assert (doubletake["options"]["handshake"], doubletake["options"]["blend"]) == (20, 5)
    assert config.sampling == B.Sampling(steps=2) and config.suite.transition_window == 20
    with pytest.raises(Exception):
        config.replications = 3                                     # frozen


# --------------------------------------------------------------------------------------------
# Outputs appear together: a kill while writing them leaves none, the rerun writes them all
# --------------------------------------------------------------------------------------------

KILL_IN_PLOT = ("import os, signal, sys\n"
                "import eval.benchmark as B\n"
                "def plot_jerk(*a, **k):\n"
                "    os.kill(os.getpid(), getattr(signal, sys.argv[1]))\n"
                "B.plot_jerk = plot_jerk\n"
                "sys.exit(B.main(sys.argv[2:]))\n")


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_kill_while_writing_outputs_leaves_none(env, reference_run, tmp_path, sig):
    """The tables and metrics.png are staged when the jerk plot is drawn; a kill then writes none."""
    out = tmp_path / "outputs"
    shutil.copytree(reference_run / "cache", out / "cache")          # scoring only, no generation
    cmd, envvars = _cli(env, out)
    result = subprocess.run([sys.executable, "-c", KILL_IN_PLOT, sig, *cmd[3:]], cwd=REPO, env=envvars,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == (-signal.SIGKILL if sig == "SIGKILL" else 128 + signal.SIGTERM), result.stderr[-2000:]
    assert not any((out / name).exists() for name in B.OUTPUTS)
    leftovers = sorted(p.name for p in out.glob(".*tmp*"))
    assert bool(leftovers) == (sig == "SIGKILL"), leftovers        # SIGTERM cleans up at once
    assert B.main(cmd[3:]) == 0
    assert _tables(out) == _tables(reference_run)
    assert not list(out.glob(".*tmp*"))                             # the killed run's temporaries are gone


def test_cache_keys_cover_every_generation_setting(env):
    """Keys hold every option in frames (all of them, defaults included) and the loop flag, so an
    entry written under another layout or other options is never read for this one."""
    def keys(*extra):
        bench = B.build(B.parse(B.build_parser().parse_args(_args(env, "unused", *extra))))
        return {(j.method, j.rep, j.batch): B.job_key(j, bench) for j in bench.jobs}, bench

    base, bench = keys()
    assert keys("--method_options", '{"doubletake": {"blend": "10f"}}')[0] == base      # 0.5 s = 10 frames
    changed = keys("--method_options", '{"doubletake": {"second_take_fraction": 0.25}}')[0]
    assert {k for k in base if base[k] != changed[k]} == {k for k in base if k[0] == "doubletake"}
    job = next(j for j in bench.jobs if j.method == "collage")
    settings = B.job_settings(job, bench.config.sampling, 0, bench.model_sha)
    assert {k: settings["options"][k] for k in ("overlap", "transition")} == {"overlap": 20, "transition": "null"}
    assert settings["loop"] is False
    older = {**settings, "options": {"overlap": 20}}                 # the previous layout's key of this batch
    del older["loop"]
    assert B.settings_key(older) != B.job_key(job, bench)
