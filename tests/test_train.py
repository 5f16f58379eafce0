"""Training loop on a tiny synthetic dataset: loss decreases, resume is exact, export loads."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mdm_adapter.text_bow import BagOfWordsEncoder
from mdm_adapter.train import (TrainConfig, diffusion_loss, export, load_data, make_batch,
                               sampling_weights, train)
from mdm_adapter.schedules import DiscreteSchedule
from prepare.build_default_dataset import write_npz

D = 263
TINY = TrainConfig(latent_dim=32, layers=1, num_heads=2, ff_size=64, dropout=0.0, batch_size=4, max_frames=24,
                   crop_min_frames=8, clip_min_frames=8, lr=1e-3, warmup_steps=2, max_steps=8, log_every=2,
                   val_every=4, val_clips=4, num_threads=1, checkpoint_minutes=100.0)


def make_dataset(root: Path, clips: int = 10) -> Path:
    """Smooth random clips of 10-40 frames, two captions each, a 4-word text encoder."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 41, clips)
    t = [np.arange(n)[:, None] / 10.0 for n in lengths]
    feats = [np.sin(ti * rng.uniform(0.5, 2, D) + rng.uniform(0, 6, D)) for ti in t]
    words = ["walks", "runs", "waves", "bows"]
    caps = [f"a person {words[i % 4]}" for i in range(clips) for _ in range(2)]
    write_npz(root / "train_arrays.npz", {
        "features": np.concatenate(feats).astype(np.float16),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "split": np.array([0] * (clips - 2) + [1, 2], dtype=np.int8),
        "group": np.array([0, 0] + [1] * (clips - 2), dtype=np.int8),
        "captions": np.array(caps, dtype=str),
        "caption_offsets": np.arange(0, 2 * clips + 1, 2, dtype=np.int64),
    })
    np.save(root / "Mean.npy", np.zeros(D, np.float32))
    np.save(root / "Std.npy", np.full(D, 0.7, np.float32))
    vectors = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    BagOfWordsEncoder(words, vectors).save(root / "text_encoder.safetensors")
    return root


def test_batches_are_masked_crops(tmp_path):
    data = load_data(make_dataset(tmp_path), TINY)
    assert data.train.num_clips == 8 and data.val.num_clips == 1 and data.text_features.shape == (20, 12)
    ids = torch.arange(4)
    x0, mask, text = make_batch(data.train, data, TINY, ids, torch.Generator().manual_seed(0))
    assert x0.shape[:3] == (4, D, 1) and mask.shape == (4, x0.shape[3]) and text.shape == (4, 12)
    assert x0.shape[3] <= TINY.max_frames
    assert (mask.sum(1) >= torch.clamp(data.train.lengths()[ids], max=TINY.crop_min_frames)).all()
    assert torch.all(x0[:, :, 0, :][~mask[:, None, :].expand(-1, D, -1)] == 0)
    probs = sampling_weights(torch.tensor([0, 0, 0, 0, 1]), 1.0)
    assert torch.allclose(probs, torch.tensor([0.125] * 4 + [0.5], dtype=torch.float64))


def test_loss_decreases_on_fixed_batch(tmp_path):
    torch.manual_seed(0)
    cfg = TINY
    data = load_data(make_dataset(tmp_path), cfg)
    from mdm_adapter.train import build_state

    state = build_state(cfg, data.text_features.shape[1], torch.device("cpu"))
    x0, mask, text = make_batch(data.train, data, cfg, torch.arange(4), torch.Generator().manual_seed(0))
    abar = DiscreteSchedule.from_name("cosine", 1000).alphas_cumprod
    losses = []
    for _ in range(30):
        loss = diffusion_loss(state.net, x0, mask, text, abar, torch.Generator().manual_seed(1), 0.0)
        state.opt.zero_grad()
        loss.backward()
        state.opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resume_gives_the_same_state(tmp_path):
    data = make_dataset(tmp_path / "data")
    straight = train(TINY, data, tmp_path / "a", progress=False)
    train(TINY, data, tmp_path / "b", until_step=4, progress=False)
    resumed = train(TINY, data, tmp_path / "b", progress=False)
    assert straight.step == resumed.step == TINY.max_steps
    for (k, v), (_, w) in zip(straight.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(v, w), k
    for v, w in zip(straight.net.parameters(), resumed.net.parameters()):
        assert torch.equal(v, w)
    def logged(run: str) -> list[list[str]]:  # step, loss, val_loss (timings differ)
        return [r.split(",")[:3] for r in (tmp_path / run / "loss.csv").read_text().splitlines()]

    assert logged("a") == logged("b")
    assert [r[0] for r in logged("b")[1:]] == ["2", "4", "6", "8"]
    with pytest.raises(ValueError, match="different config"):
        train(replace(TINY, lr=5e-4), data, tmp_path / "b", progress=False)


def test_export_round_trip(tmp_path):
    data = make_dataset(tmp_path / "data")
    state = train(TINY, data, tmp_path / "run", progress=False)
    dest = export(tmp_path / "run", data, tmp_path / "ship")
    for name in ("model.safetensors", "args.json", "Mean.npy", "Std.npy", "text_encoder.safetensors",
                 "loss.csv", "loss_curve.png"):
        assert (dest / name).is_file(), name
    args = json.loads((dest / "args.json").read_text())
    assert args["arch"] == "trans_enc" and args["text_encoder_type"] == "bow" and args["mask_frames"] is True
    assert args["text_feature_dim"] == 12 and args["latent_dim"] == 32 and args["train_steps"] == TINY.max_steps
    from safetensors.torch import load_file

    weights = load_file(str(dest / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values())
    ema = state.ema.state_dict()
    assert set(weights) == set(ema)
    assert all(torch.equal(weights[k], ema[k].half()) for k in ema)
    load = pytest.importorskip("mdm_adapter.load")
    loaded = load.load(dest)
    assert loaded.args.text_encoder_type == "bow" and loaded.args.mask_frames
    net = loaded.network
    assert all(p.dtype == torch.float32 for p in net.parameters())
    state.ema.load_state_dict({k: v.half().float() for k, v in ema.items()})
    x, t = torch.randn(2, D, 1, 12), torch.tensor([3, 700])
    text = loaded.text_encoder.encode(["a person walks", "a person bows"])
    assert torch.allclose(net(x, t, text), state.ema.eval()(x, t, text), atol=1e-5)


def test_warm_start_grows_the_text_projection_with_zero_columns(tmp_path):
    data = make_dataset(tmp_path / "data")
    first = train(TINY, data, tmp_path / "a", progress=False)
    bigger = tmp_path / "data2"
    bigger.mkdir()
    for f in data.iterdir():
        (bigger / f.name).write_bytes(f.read_bytes())
    BagOfWordsEncoder.from_file(data / "text_encoder.safetensors").with_indicators(
        ["walks", "runs", "waves", "bows"]).save(bigger / "text_encoder.safetensors")
    cfg = replace(TINY, init_from=str(tmp_path / "a" / "checkpoint.pt"), max_steps=0)
    warm = train(cfg, bigger, tmp_path / "b", progress=False)
    old_w = first.ema.state_dict()["embed_text.weight"]
    new_w = warm.net.state_dict()["embed_text.weight"]
    assert new_w.shape == (old_w.shape[0], old_w.shape[1] + 4)
    torch.testing.assert_close(new_w[:, : old_w.shape[1]], old_w, rtol=0, atol=0)
    assert new_w[:, old_w.shape[1]:].eq(0).all()
    for key, value in first.ema.state_dict().items():
        if key != "embed_text.weight":
            torch.testing.assert_close(warm.ema.state_dict()[key], value, rtol=0, atol=0)


def test_bf16_loss_matches_fp32_and_precision_is_checked(tmp_path):
    data = load_data(make_dataset(tmp_path), TINY)
    from mdm_adapter.train import build_state

    torch.manual_seed(0)
    state = build_state(TINY, data.text_features.shape[1], torch.device("cpu"))
    state.net.eval()
    x0, mask, text = make_batch(data.train, data, TINY, torch.arange(4), torch.Generator().manual_seed(0))
    abar = DiscreteSchedule.from_name("cosine", 1000).alphas_cumprod
    losses = {p: diffusion_loss(state.net, x0, mask, text, abar, torch.Generator().manual_seed(1), 0.0,
                                precision=p) for p in ("fp32", "bf16")}
    assert losses["bf16"].dtype == torch.float32
    # bfloat16 keeps 8 mantissa bits: the two losses agree to a few per cent, not bit for bit
    assert abs(losses["bf16"].item() - losses["fp32"].item()) < 0.03 * losses["fp32"].item()
    assert losses["bf16"].item() != losses["fp32"].item()
    with pytest.raises(ValueError, match="precision"):
        replace(TINY, precision="fp16")


def test_resume_accepts_a_run_from_before_a_new_config_key(tmp_path):
    data_dir = make_dataset(tmp_path / "data")
    cfg = replace(TINY, max_steps=2)
    train(cfg, data_dir, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["precision"]  # as written before the option existed
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    state = train(replace(cfg, max_steps=4), data_dir, tmp_path / "run", progress=False)
    assert state.step == 4
    with pytest.raises(ValueError, match="precision"):
        train(replace(cfg, max_steps=6, precision="bf16"), data_dir, tmp_path / "run", progress=False)
