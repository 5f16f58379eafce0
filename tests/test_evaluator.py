"""Tests for eval.evaluator (official layout, packed GRUs, files) and eval.train_evaluator (smoke run)."""
from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eval import train_evaluator as T
from eval.data import write_folder
from eval.evaluator import OFFICIAL_HUMANML3D, Evaluator, EvaluatorConfig, load_official_checkpoint, packed_bigru_final
from eval.text_processing import WordVectors
from motion_core.normalization import EvaluatorStats

SMALL = EvaluatorConfig(word_dim=6, text_hidden=8, movement_hidden=8, movement_latent=8, motion_hidden=12,
                        embed_dim=5, tagger="rule")

OFFICIAL_KEYS = {
    "text_encoder": {"hidden": (2, 1, 512), "pos_emb.weight": (300, 15), "pos_emb.bias": (300,),
                     "input_emb.weight": (512, 300), "gru.weight_ih_l0": (1536, 512),
                     "gru.weight_hh_l0_reverse": (1536, 512), "output_net.0.weight": (512, 1024),
                     "output_net.1.weight": (512,), "output_net.3.weight": (512, 512)},
    "movement_encoder": {"main.0.weight": (512, 259, 4), "main.0.bias": (512,), "main.3.weight": (512, 512, 4),
                         "out_net.weight": (512, 512)},
    "motion_encoder": {"hidden": (2, 1, 1024), "input_emb.weight": (1024, 512), "gru.weight_ih_l0": (3072, 1024),
                       "gru.bias_hh_l0_reverse": (3072,), "output_net.0.weight": (1024, 2048),
                       "output_net.3.weight": (512, 1024)},
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small CPU ops run far faster on one thread when the machine is shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _optimiser_states() -> tuple[dict, dict]:
    """Adam state dicts as the official trainer saves them (new-style tensor step and old-style int step)."""
    tiny = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(tiny.parameters(), lr=1e-4)
    tiny(torch.ones(1, 3)).sum().backward()
    opt.step()
    old_style = {"state": {0: {"step": 7, "exp_avg": torch.zeros(2, 3), "exp_avg_sq": torch.zeros(2, 3)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                                   "amsgrad": False, "params": [0, 1]}]}
    return opt.state_dict(), old_style


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = Evaluator(OFFICIAL_HUMANML3D)
    opt_new, opt_old = _optimiser_states()
    state = {"text_encoder": model.text_encoder.state_dict(), "movement_encoder": model.movement_encoder.state_dict(),
             "motion_encoder": model.motion_encoder.state_dict(), "opt_text_encoder": opt_new,
             "opt_motion_encoder": opt_old, "epoch": 12, "iter": 34567}
    path = tmp_path_factory.mktemp("t2m") / "finest.tar"
    torch.save(state, path)
    return path, state


def test_official_layout_key_names_and_shapes():
    model = Evaluator(OFFICIAL_HUMANML3D)
    for part, expected in OFFICIAL_KEYS.items():
        sd = getattr(model, part).state_dict()
        for key, shape in expected.items():
            assert tuple(sd[key].shape) == shape, (part, key)
    assert len(model.text_encoder.state_dict()) == 19 and len(model.motion_encoder.state_dict()) == 17
    assert set(model.movement_encoder.state_dict()) == {"main.0.weight", "main.0.bias", "main.3.weight",
                                                        "main.3.bias", "out_net.weight", "out_net.bias"}


def test_load_official_checkpoint(official_checkpoint, tmp_path):
    path, state = official_checkpoint
    ckpt = load_official_checkpoint(path)                  # weights_only=True accepts optimiser states and ints
    assert ckpt["epoch"] == 12 and ckpt["iter"] == 34567

    glove = tmp_path / "glove"
    glove.mkdir()
    words = ["sos", "eos", "unk", "a", "man", "walk"]
    np.save(glove / "our_vab_data.npy", np.random.default_rng(0).normal(size=(len(words), 300)))
    (glove / "our_vab_words.pkl").write_bytes(pickle.dumps(words))
    (glove / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))

    model = Evaluator.from_official(path, glove)
    assert model.config == OFFICIAL_HUMANML3D and not model.training
    for part in ("text_encoder", "movement_encoder", "motion_encoder"):
        loaded = getattr(model, part).state_dict()
        assert set(loaded) == set(state[part])
        assert all(torch.equal(loaded[k], state[part][k]) for k in loaded)
    with torch.no_grad():
        motion = model.embed_motion(torch.randn(3, 64, 263), torch.tensor([64, 41, 40]))
    text = model.embed_texts(["a/DET man/NOUN walk/VERB", "a/DET man/NOUN"])
    assert motion.shape == (3, 512) and text.shape == (2, 512)


def test_mismatched_checkpoint_is_reported(tmp_path):
    model = Evaluator(SMALL)
    state = {p: getattr(model, p).state_dict() for p in ("text_encoder", "movement_encoder", "motion_encoder")}
    state["text_encoder"] = dict(state["text_encoder"])
    state["text_encoder"]["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected \\['extra.weight'\\]"):
        Evaluator(SMALL).load_parts(state)
    bad = tmp_path / "bad.tar"
    torch.save({"text_encoder": {}, "movement_encoder": {}, "motion_encoder": {}, "args": SimpleNamespace(a=1)}, bad)
    with pytest.raises(RuntimeError, match="weights_only"):
        load_official_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="finest.tar"):
        load_official_checkpoint(tmp_path / "missing.tar")


def test_packed_gru_is_batch_order_invariant():
    torch.manual_seed(1)
    gru = torch.nn.GRU(4, 3, batch_first=True, bidirectional=True)
    hidden = torch.randn(2, 1, 3)
    x, lengths = torch.randn(6, 9, 4), torch.tensor([3, 9, 1, 9, 5, 2])
    out = packed_bigru_final(gru, x, lengths, hidden)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    torch.testing.assert_close(packed_bigru_final(gru, x[perm], lengths[perm], hidden), out[perm])
    for i in range(6):                                    # each row as if alone, without padding
        alone = packed_bigru_final(gru, x[i:i + 1, : lengths[i]], lengths[i:i + 1], hidden)
        torch.testing.assert_close(alone[0], out[i])


def test_embeddings_per_row_and_length_cropping():
    torch.manual_seed(2)
    model = Evaluator(SMALL).eval()
    motions, lengths = torch.randn(5, 48, 263), torch.tensor([48, 40, 13, 23, 8])
    with torch.no_grad():
        ref = model.embed_motion(motions, lengths, mask_padding=True)
        perm = torch.tensor([3, 1, 4, 0, 2])
        torch.testing.assert_close(model.embed_motion(motions[perm], lengths[perm], mask_padding=True), ref[perm])
        # 13 and 12 frames are the same motion to the evaluator (crop to a multiple of 4)
        torch.testing.assert_close(model.embed_motion(motions[2:3], torch.tensor([12]), mask_padding=True), ref[2:3])
        # zero padding is what the official batches hold: masking then changes nothing, and more padding neither
        padded = motions.clone()
        for i, n in enumerate((lengths // 4 * 4).tolist()):
            padded[i, n:] = 0
        torch.testing.assert_close(model.embed_motion(padded, lengths), ref)
        # T is padded to the official 196 frames inside, so the caller's amount of padding does not matter
        for extra in (20, 148, 170):
            longer = torch.cat([padded, torch.zeros(5, extra, 263)], 1)
            torch.testing.assert_close(model.embed_motion(longer, lengths), ref)
        word_embs, pos = torch.randn(4, 22, 6), torch.nn.functional.one_hot(torch.randint(15, (4, 22)), 15).float()
        text_lengths = torch.tensor([5, 22, 3, 12])
        t = model.embed_text(word_embs, pos, text_lengths)
        tp = model.embed_text(word_embs[perm[:4] % 4], pos[perm[:4] % 4], text_lengths[perm[:4] % 4])
        torch.testing.assert_close(tp, t[perm[:4] % 4])
    with pytest.raises(ValueError, match="at least 4"):
        model.embed_motion(motions[:1], torch.tensor([3]))
    with pytest.raises(ValueError, match=r"\[B, T, 263\]"):
        model.embed_motion(torch.randn(2, 8, 10), torch.tensor([8, 8]))


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(3)
    words = ["sos", "eos", "unk", "a", "person", "walk", "hand"]
    vectors = WordVectors.from_words(words, np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32))
    model = Evaluator(SMALL, vectors, stats=EvaluatorStats(np.zeros(263), np.full(263, 2.0))).eval()
    model.save(tmp_path / "ev", {"training": {"lr": 0.1}})
    back = Evaluator.from_file(tmp_path / "ev" / "evaluator.safetensors")
    assert back.config == SMALL and back.word_vectors.words == words
    x, lengths = torch.randn(2, 40, 263), torch.tensor([40, 17])
    with torch.no_grad():
        torch.testing.assert_close(back.embed_motion(x, lengths), model.embed_motion(x, lengths), rtol=0, atol=0)
    captions = ["A person walks", "a/DET hand/NOUN"]
    torch.testing.assert_close(back.embed_texts(captions), model.embed_texts(captions), rtol=0, atol=0)
    np.testing.assert_array_equal(back.normalise(np.ones(263)), np.full(263, 0.5))
    assert json.loads((tmp_path / "ev" / "config.json").read_text())["training"] == {"lr": 0.1}
    with pytest.raises(FileNotFoundError, match="train_evaluator"):
        Evaluator.from_file(tmp_path / "nothing")


def test_part_evaluator_sees_only_its_part(tmp_path):
    from dataclasses import replace
    from motion_collage.constraints import kept_mask
    from motion_core.spec import HUMANML3D
    torch.manual_seed(4)
    whole = Evaluator(SMALL).eval()
    upper = Evaluator(replace(SMALL, part="upper_body")).eval()
    upper.load_state_dict(whole.state_dict())
    seen = torch.as_tensor(kept_mask(HUMANML3D, "upper_body"))
    x, lengths = torch.randn(2, 40, 263), torch.tensor([40, 24])
    other = torch.where(seen, x, torch.randn(2, 40, 263))          # the lower body and velocities changed
    with torch.no_grad():
        e = upper.embed_motion(x, lengths)
        torch.testing.assert_close(upper.embed_motion(other, lengths), e, rtol=0, atol=0)
        torch.testing.assert_close(upper.embed_motion(x * seen, lengths), whole.embed_motion(x * seen, lengths),
                                   rtol=0, atol=0)                  # the same network on the part's dims
        assert not torch.allclose(whole.embed_motion(other, lengths), whole.embed_motion(x, lengths))
        changed = x.clone()
        changed[..., 4 + 3 * 19] += 1.0                             # ric of joint 20 (left wrist): upper body
        assert seen[4 + 3 * 19] and not torch.allclose(upper.embed_motion(changed, lengths), e)
    words = ["sos", "eos", "unk", "a"]
    upper.word_vectors = WordVectors.from_words(words, np.zeros((4, 6), np.float32))
    back = Evaluator.from_file(upper.save(tmp_path / "ev"))
    assert back.config.part == "upper_body"
    with torch.no_grad():
        torch.testing.assert_close(back.embed_motion(other, lengths), e, rtol=0, atol=0)
    with pytest.raises(ValueError, match="part must be"):
        replace(SMALL, part="arms")


# -------------------------------------------------------------------------------- train_evaluator

CLASSES = [("a person walks forward", "a/DET person/NOUN walk/VERB forward/ADV"),
           ("a person jumps up", "a/DET person/NOUN jump/VERB up/ADV"),
           ("someone waves the left hand", "someone/PRON wave/VERB the/DET left/ADJ hand/NOUN")]


def _synthetic_dataset(root, per_class=(12, 3, 2), seed=0):
    rng = np.random.default_rng(seed)
    motions, texts, splits = {}, {}, {"train": [], "val": [], "test": []}
    n = 0
    for split, count in zip(("train", "val", "test"), per_class, strict=True):
        for k, (caption, tokens) in enumerate(CLASSES):
            for _ in range(count):
                frames = int(rng.integers(40, 90))
                t = np.arange(frames)[:, None]
                m = 0.3 * rng.normal(size=(frames, 263))
                m[:, 20 * k: 20 * k + 20] += np.sin(0.3 * (k + 1) * t + rng.uniform(0, 6))
                clip_id = f"{n:06d}"
                motions[clip_id], texts[clip_id] = m, [f"{caption}#{tokens}#0.0#0.0"]
                splits[split].append(clip_id)
                n += 1
    return write_folder(root, motions, texts, splits, np.zeros(263), np.ones(263))


def _tiny_glove(path, dim=8):
    words = "sos eos unk a person walk forward jump up someone wave the left hand".split()
    rng = np.random.default_rng(1)
    path.write_text("".join(w + " " + " ".join(f"{v:.4f}" for v in rng.normal(size=dim)) + "\n" for w in words))
    return path


def test_train_evaluator_smoke(tmp_path, capsys):
    data = _synthetic_dataset(tmp_path / "data")
    glove = _tiny_glove(tmp_path / "glove.txt")
    out = tmp_path / "evaluator"
    args = ["--data", str(data), "--out", str(out), "--glove", str(glove), "--text_hidden", "16",
            "--movement_hidden", "16", "--movement_latent", "16", "--motion_hidden", "16", "--embed_dim", "8",
            "--batch_size", "12", "--iters", "60", "--lr", "0.003", "--log_every", "10", "--eval_every", "30",
            "--checkpoint_every", "30", "--seed", "0", "--threads", "1"]
    T.main(args)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in log if r["phase"] == "train"]
    assert len(train_losses) == 6
    assert np.mean(train_losses[-2:]) < 0.7 * np.mean(train_losses[:2])

    config = json.loads((out / "config.json").read_text())
    assert config["training"]["lr"] == 0.003 and config["training"]["margin"] == 10.0
    assert set(config["training"]) == {f.name for f in T.dataclasses.fields(T.TrainConfig)}
    model = Evaluator.from_file(out)
    assert model.config.embed_dim == 8 and model.config.tagger == "rule"
    assert {"walk", "hand", "unk"} <= set(model.word_vectors.words)
    emb = model.embed_texts([c for c, _ in CLASSES])                   # raw captions via the rule tagger
    assert emb.shape == (3, 8)

    assert T.main(args) == 2  # a rerun without --resume is a one-line user error, nothing replaced
    assert "--resume" in capsys.readouterr().err
    # resume: continues from iteration 60 to 70 with the saved optimiser and RNG states
    T.train(T.TrainConfig(**{**config["training"], "iters": 70}), resume=True)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"phase": "resume", "iter": 60} in log and log[-1]["iter"] == 70
