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
    assert new["collage"]["tr_pj"] != old["collage"]["tr_pj"]           # transitions re-scored
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
