"""python -m eval.train_evaluator: every user mistake is one line and status 2; saves are atomic."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from eval import train_evaluator as T
from eval.data import write_folder

CAPTIONS = [("a person walks forward", "a/DET person/NOUN walk/VERB forward/ADV"),
            ("a person jumps up", "a/DET person/NOUN jump/VERB up/ADV")]


def tiny_dataset(root: Path, train_clips: int = 6) -> Path:
    """Random clips of 40-60 frames with one of two captions; train / val / test splits."""
    rng = np.random.default_rng(0)
    motions, texts, splits = {}, {}, {"train": [], "val": [], "test": []}
    for n in range(train_clips + 4):
        clip_id = f"{n:04d}"
        motions[clip_id] = rng.normal(size=(int(rng.integers(40, 61)), 263))
        caption, tokens = CAPTIONS[n % 2]
        texts[clip_id] = [f"{caption}#{tokens}#0.0#0.0"]
        splits["train" if n < train_clips else "val" if n < train_clips + 2 else "test"].append(clip_id)
    return write_folder(root, motions, texts, splits, np.zeros(263), np.ones(263))


def tiny_glove(path: Path, dim: int = 4) -> Path:
    words = "sos eos unk a person walk forward jump up".split()
    rng = np.random.default_rng(1)
    path.write_text("".join(w + " " + " ".join(f"{v:.3f}" for v in rng.normal(size=dim)) + "\n" for w in words))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("evaluator_data"))


@pytest.fixture(scope="module")
def glove(tmp_path_factory) -> Path:
    return tiny_glove(tmp_path_factory.mktemp("glove") / "glove.txt")


SIZES = ["--text_hidden", "8", "--movement_hidden", "8", "--movement_latent", "8", "--motion_hidden", "8",
         "--embed_dim", "4", "--batch_size", "4", "--iters", "4", "--log_every", "2", "--eval_every", "2",
         "--checkpoint_every", "2", "--threads", "1"]


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = T.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


BAD = {
    "missing data folder": (lambda t, d, g: ["--data", t / "nowhere"], "data folder .*nowhere does not exist"),
    "data is a file": (lambda t, d, g: ["--data", g], "data folder .* is a file"),
    "NaN lr": (lambda t, d, g: ["--data", d, "--lr", "nan"], "'lr' must be a finite number, got nan"),
    "negative lr": (lambda t, d, g: ["--data", d, "--lr", "-0.1"], "lr must be > 0"),
    "infinite margin": (lambda t, d, g: ["--data", d, "--margin", "inf"], "'margin' must be a finite number"),
    "batch of one": (lambda t, d, g: ["--data", d, "--batch_size", "1"], "batch_size must be >= 2"),
    "zero iterations": (lambda t, d, g: ["--data", d, "--iters", "0"], "iters must be >= 1"),
    "NaN minutes": (lambda t, d, g: ["--data", d, "--max_minutes", "nan"], "'max_minutes' must be a finite number"),
    "negative minutes": (lambda t, d, g: ["--data", d, "--max_minutes", "-2"], "max_minutes must be > 0"),
    "negative threads": (lambda t, d, g: ["--data", d, "--threads", "-1"], "threads must be >= 0"),
    "max below min frames": (lambda t, d, g: ["--data", d, "--max_frames", "10"], "max_frames must be >= 40"),
    "unknown device": (lambda t, d, g: ["--data", d, "--device", "tpu"], "unknown device 'tpu'"),
    "missing glove file": (lambda t, d, g: ["--data", d, "--glove", t / "none.txt"], "GloVe file .* not found"),
    "glove not numbers": (lambda t, d, g: ["--data", d, "--glove", _write(t / "g.txt", "walk 0.1 x 0.3\n")],
                          "line 1: .* is not a list of numbers"),
    "glove ragged": (lambda t, d, g: ["--data", d, "--glove", _write(t / "g.txt", "a 0.1 0.2\nwalk 0.1\n")],
                     "line 2: 1 values, expected 2"),
    "glove NaN": (lambda t, d, g: ["--data", d, "--glove", _write(t / "g.txt", "walk nan 0.2\n")],
                  "line 1: the vector holds NaN"),
    "glove not text": (lambda t, d, g: ["--data", d, "--glove", _write(t / "g.txt", b"walk \xff\xfe\n")],
                       "is not UTF-8 text"),
    "integer flag given a float": (lambda t, d, g: ["--data", d, "--iters", "2.5"], "invalid int value: '2.5'"),
    "unknown flag": (lambda t, d, g: ["--data", d, "--epochs", "3"], "unrecognized arguments: --epochs 3"),
    "missing --data": (lambda t, d, g: [], "the following arguments are required: --data"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_user_mistakes_are_one_line_and_status_2(tmp_path, data, glove, capsys, case):
    argv, match = BAD[case]
    extra = argv(tmp_path, data, glove)
    if "--glove" not in extra:
        extra += ["--glove", glove]
    out = tmp_path / "ev"
    rc, err = _cli(capsys, "--out", out, *SIZES, *extra)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(match, err), err
    assert not out.exists()  # nothing is created for a mistake


def test_too_few_training_clips(tmp_path, glove, capsys):
    one = tiny_dataset(tmp_path / "one", train_clips=1)
    rc, err = _cli(capsys, "--data", one, "--out", tmp_path / "ev", "--glove", glove, *SIZES)
    assert rc == 2 and err.count("\n") == 1 and "1 usable training clips" in err and "at least 2" in err


def test_output_path_that_is_a_file(tmp_path, data, glove, capsys):
    target = _write(tmp_path / "ev", "keep me")
    rc, err = _cli(capsys, "--data", data, "--out", target, "--glove", glove, *SIZES)
    assert rc == 2 and err.count("\n") == 1 and f"--out {target} is a file" in err
    assert target.read_text() == "keep me"


def _pickle_payload(marker: Path) -> bytes:
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def test_existing_run_and_broken_checkpoints(tmp_path, data, glove, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    marker = tmp_path / "PWNED"
    argv = ["--data", data, "--out", out, "--glove", glove, *SIZES]
    for content in (b"", b"not a checkpoint", _pickle_payload(marker)):
        (out / "checkpoint.pt").write_bytes(content)
        rc, err = _cli(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and "already holds a training run" in err and "--resume" in err
        rc, err = _cli(capsys, *argv, "--resume")
        assert rc == 2 and err.count("\n") == 1 and f"cannot read {out / 'checkpoint.pt'}" in err, err
        assert not marker.exists()
    torch.save({"model": {}}, out / "checkpoint.pt")
    rc, err = _cli(capsys, *argv, "--resume")
    assert rc == 2 and "is not a checkpoint of eval.train_evaluator (no 'optimiser')" in err


def test_training_removes_stale_temporaries_and_saves_whole_files(tmp_path, data, glove, capsys):
    out = tmp_path / "ev"
    stale = out / f"{T.SAVE_TMP_PREFIX}999999-abc"
    stale.mkdir(parents=True)
    (stale / "evaluator.safetensors").write_bytes(b"half")
    (out / "checkpoint.tmp").write_bytes(b"half")
    rc, _ = _cli(capsys, "--data", data, "--out", out, "--glove", glove, *SIZES)
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "evaluator.safetensors",
                                                     "train_log.jsonl", "word_vectors.npz"]
    from eval.evaluator import Evaluator
    assert Evaluator.from_file(out).config.embed_dim == 4


def test_interrupted_save_leaves_the_previous_files(tmp_path, monkeypatch):
    from eval.evaluator import Evaluator
    out = tmp_path / "ev"
    out.mkdir()
    (out / "evaluator.safetensors").write_bytes(b"previous")

    def half_save(self, directory, extra=None):
        (Path(directory) / "evaluator.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluator, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        T.save_evaluator(Evaluator.__new__(Evaluator), out, {})
    assert [p.name for p in out.iterdir()] == ["evaluator.safetensors"]
    assert (out / "evaluator.safetensors").read_bytes() == b"previous"
