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
    assert args["max_piece_frames"] == TINY.max_frames          # trained on crops of at most 24 frames
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


# --------------------------------------------------------------------------- hostile and broken input
import re  # noqa: E402
from dataclasses import asdict  # noqa: E402

from mdm_adapter import train as T  # noqa: E402


@pytest.mark.parametrize("key, value, match", [
    ("lr", -1e-3, "lr must be > 0"), ("lr", float("nan"), "'lr' must be a finite number"),
    ("batch_size", 0, "batch_size must be >= 1"), ("layers", "4", "'layers' must be an integer"),
    ("max_steps", 2.5, "'max_steps' must be an integer"), ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
    ("ema_decay", float("inf"), "'ema_decay' must be a finite number"), ("num_heads", 3, "divisible by num_heads"),
    ("noise_schedule", "sqrt", "unknown noise schedule"), ("dataset", "h36m", "h36m"),
    ("checkpoint_minutes", 0, "checkpoint_minutes must be > 0"), ("init_from", None, "'init_from' must be a string"),
    ("batch_len_quantile", 0.0, r"batch_len_quantile must be in \(0, 1\]"), ("grad_clip", -1, "grad_clip must be >= 0"),
])
def test_config_values_are_checked(key, value, match):
    with pytest.raises(ValueError, match=match):
        replace(TINY, **{key: value})


def _cli(capsys, *argv):
    """Exit status and stderr of ``python -m mdm_adapter.train ARGV`` (run in-process)."""
    rc = T.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _config_file(path, **changes):
    path.write_text(json.dumps({**asdict(TINY), **changes}))
    return path


BAD_CLI = {
    "missing data folder": (lambda t, d: ["--data", t / "nowhere", "--config", _config_file(t / "c.json")],
                            "data folder .*nowhere does not exist"),
    "data is a file": (lambda t, d: ["--data", _config_file(t / "c.json"), "--config", t / "c.json"], "is a file"),
    "config not JSON": (lambda t, d: ["--data", d, "--config", _write(t / "c.json", "{lr: 1")], "is not valid JSON"),
    "config a list": (lambda t, d: ["--data", d, "--config", _write(t / "c.json", "[1]")], "holds a JSON list"),
    "config missing": (lambda t, d: ["--data", d, "--config", t / "none.json"], "training config not found"),
    "unknown key": (lambda t, d: ["--data", d, "--config", _config_file(t / "c.json", lrate=1)],
                    r"unknown keys in .*\['lrate'\]"),
    "negative lr": (lambda t, d: ["--data", d, "--config", _config_file(t / "c.json", lr=-1)], "lr must be > 0"),
    "NaN lr": (lambda t, d: ["--data", d, "--config", _write(t / "c.json", '{"lr": NaN}')], "finite number"),
    "zero steps per log": (lambda t, d: ["--data", d, "--config", _config_file(t / "c.json", log_every=0)],
                           "log_every must be >= 1"),
    "no config for a new run": (lambda t, d: ["--data", d], "--config is required for a new run"),
    "NaN minutes": (lambda t, d: ["--data", d, "--config", _config_file(t / "c.json"), "--max-minutes", "nan"],
                    "--max-minutes must be > 0"),
    "negative minutes": (lambda t, d: ["--data", d, "--config", _config_file(t / "c.json"), "--max-minutes", "-1"],
                         "--max-minutes must be > 0"),
    "unknown device": (lambda t, d: ["--data", d, "--config", _config_file(t / "c.json"), "--device", "tpu"],
                       "unknown device 'tpu'"),
    "unknown flag": (lambda t, d: ["--data", d, "--lr", "1"], "unrecognized arguments: --lr 1 .see --help."),
    "export without a run": (lambda t, d: ["--data", d, "--export", t / "ship"], "no checkpoint.pt in"),
}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("case", list(BAD_CLI))
def test_cli_user_mistakes_are_one_line_and_status_2(tmp_path, tiny_data, capsys, case):
    argv, match = BAD_CLI[case]
    out = tmp_path / "run"
    rc, err = _cli(capsys, "--out", out, *argv(tmp_path, tiny_data))
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(match, err), err
    assert not out.exists()  # nothing created for a mistake found before training


@pytest.mark.parametrize("flag", ["--out", "--export"])
def test_cli_output_path_that_is_a_file(tmp_path, tiny_data, capsys, flag):
    target = _write(tmp_path / "target", "keep me")
    argv = ["--data", tiny_data, "--config", _config_file(tmp_path / "c.json")]
    argv += ["--out", target] if flag == "--out" else ["--out", tmp_path / "run", "--export", target]
    rc, err = _cli(capsys, *argv)
    assert rc == 2 and err.count("\n") == 1 and f"{flag} {target} is a file" in err
    assert target.read_text() == "keep me"


def _pickle_payload(marker):
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


@pytest.mark.parametrize("content", ["garbage", "empty", "pickle payload", "a list"])
def test_cli_broken_checkpoint_on_resume_is_one_line(tmp_path, tiny_data, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "PWNED"
    ckpt = out / "checkpoint.pt"
    if content == "a list":
        torch.save([1, 2], ckpt)
    else:
        ckpt.write_bytes({"garbage": b"not a checkpoint", "empty": b"",
                          "pickle payload": _pickle_payload(marker)}[content])
    rc, err = _cli(capsys, "--data", tiny_data, "--out", out, "--config", _config_file(tmp_path / "c.json"))
    assert rc == 2 and err.count("\n") == 1 and str(ckpt) in err, err
    assert not marker.exists()
    rc, err = _cli(capsys, "--data", tiny_data, "--out", out, "--export", tmp_path / "ship")
    assert rc == 2 and err.count("\n") == 1 and str(ckpt) in err and not (tmp_path / "ship").exists()


def test_init_from_pickle_payload_is_refused(tmp_path, tiny_data):
    marker = tmp_path / "PWNED"
    (tmp_path / "evil.pt").write_bytes(_pickle_payload(marker))
    with pytest.raises(ValueError, match="evil.pt: it holds objects other than tensors|evil.pt: it is"):
        train(replace(TINY, init_from=str(tmp_path / "evil.pt")), tiny_data, tmp_path / "run", progress=False)
    assert not marker.exists()


def _break_arrays(d):
    (d / "train_arrays.npz").write_bytes(np.random.default_rng(0).bytes(999))


def _bad_offsets(d):
    with np.load(d / "train_arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["offsets"] = arrays["offsets"][::-1].copy()
    write_npz(d / "train_arrays.npz", arrays)


@pytest.mark.parametrize("damage, match", [
    (_break_arrays, "cannot read .*train_arrays.npz"),
    (_bad_offsets, "train_arrays.npz: offsets, splits, groups and captions do not fit"),
    (lambda d: np.save(d / "Mean.npy", np.zeros(5, np.float32)), r"Mean.npy holds float32 \(5,\), expected 263"),
    (lambda d: np.save(d / "Std.npy", np.zeros(D, np.float32)), "Std.npy has entries <= 0"),
    (lambda d: (d / "Std.npy").write_bytes(b"\x93NUMPY garbage"), "cannot read .*Std.npy"),
    (lambda d: (d / "text_encoder.safetensors").write_bytes(b""), "cannot read .*text_encoder.safetensors"),
    (lambda d: (d / "Mean.npy").unlink(), "Mean.npy is missing"),
])
def test_broken_data_files_name_the_file(tmp_path, damage, match):
    data = make_dataset(tmp_path / "data")
    damage(data)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        load_data(data, TINY)
    assert "\n" not in str(info.value)


def test_export_is_all_or_nothing_and_cleans_stale_temporaries(tmp_path, tiny_data, monkeypatch):
    train(TINY, tiny_data, tmp_path / "run", progress=False)
    ship = tmp_path / "ship"
    ship.mkdir()
    (ship / "MODEL_CARD.md").write_text("card")
    (ship / "model.safetensors").write_bytes(b"old weights")
    stale = ship / ".model.tmp-999999.safetensors"
    stale.write_bytes(b"half written by a killed export")
    real_copy = T.shutil.copyfile

    def failing_copy(src, dst):
        if Path(src).name == "text_encoder.safetensors":
            raise OSError("disk full")
        return real_copy(src, dst)

    monkeypatch.setattr(T.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        export(tmp_path / "run", tiny_data, ship)
    assert sorted(p.name for p in ship.iterdir()) == ["MODEL_CARD.md", "model.safetensors"]
    assert (ship / "model.safetensors").read_bytes() == b"old weights"
    monkeypatch.setattr(T.shutil, "copyfile", real_copy)
    export(tmp_path / "run", tiny_data, ship)
    assert sorted(p.name for p in ship.iterdir()) == sorted(["MODEL_CARD.md", *T.EXPORTED])
    assert (ship / "MODEL_CARD.md").read_text() == "card"


def test_export_refuses_non_finite_weights(tmp_path, tiny_data):
    train(TINY, tiny_data, tmp_path / "run", progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    ckpt["ema"]["embed_text.weight"][0, 0] = 1e6  # finite in float32, inf in the exported float16
    torch.save(ckpt, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match="tensor 'embed_text.weight' holds 1 NaN or infinite"):
        export(tmp_path / "run", tiny_data, tmp_path / "ship")
    assert not (tmp_path / "ship").exists()


def test_torn_log_row_is_dropped_on_resume(tmp_path, tiny_data):
    train(TINY, tiny_data, tmp_path / "a", progress=False)
    train(TINY, tiny_data, tmp_path / "b", until_step=4, progress=False)
    with (tmp_path / "b" / "loss.csv").open("a") as f:
        f.write("6,1.2")  # killed while appending a row
    train(TINY, tiny_data, tmp_path / "b", progress=False)
    rows = {run: [r.split(",")[:3] for r in (tmp_path / run / "loss.csv").read_text().splitlines()] for run in "ab"}
    assert rows["a"] == rows["b"]


def test_cli_trains_exports_and_restores_signal_handlers(tmp_path, tiny_data, capsys):
    import signal
    before = signal.getsignal(signal.SIGINT)
    rc = T.main(["--data", str(tiny_data), "--out", str(tmp_path / "run"), "--config",
                 str(_config_file(tmp_path / "c.json")), "--device", "cpu"])
    assert rc == 0 and signal.getsignal(signal.SIGINT) is before
    assert "stopped at step 8" in capsys.readouterr().out
    rc, _ = _cli(capsys, "--data", tiny_data, "--out", tmp_path / "run", "--export", tmp_path / "ship")
    assert rc == 0 and sorted(p.name for p in (tmp_path / "ship").iterdir()) == sorted(T.EXPORTED)


# --------------------------------------------------------------------------- v2 options
from motion_collage.representation import canonical_joints_and_features, features_to_joints  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _random_features(T: int = 40, seed: int = 0) -> torch.Tensor:
    """Smooth random features (float64), with a turning, moving root."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None] / 10.0
    f = 0.3 * np.sin(t * rng.uniform(0.5, 2, D) + rng.uniform(0, 6, D))
    f[:, 0] *= 0.2                                     # heading change per frame
    f[:, 3] += 0.9                                     # root height
    f[:, -4:] = (f[:, -4:] > 0).astype(float)          # foot contacts are 0/1
    return torch.from_numpy(f)


def test_speed_factor_one_is_the_identity():
    x = _random_features()
    torch.testing.assert_close(T.resample_features(x, 1.0), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor, picks", [(2.0, slice(0, None, 2)), (3.0, slice(0, None, 3))])
def test_speed_up_shortens_the_clip_and_keeps_the_positions(factor, picks):
    x = _random_features(41)
    fast = T.resample_features(x, factor)
    assert fast.shape == (41 // int(factor), D)
    torch.testing.assert_close(features_to_joints(fast), features_to_joints(x)[picks][:len(fast)], rtol=0, atol=1e-10)
    # the velocity channels are those of the kept frames: the root turns and moves factor frames per frame
    torch.testing.assert_close(fast[:3, 0], x[:9, 0].reshape(-1, int(factor))[:3].sum(1) if factor == 3 else
                               x[:6, 0].reshape(3, 2).sum(1), rtol=0, atol=1e-12)


def test_slow_down_keeps_positions_at_whole_times_and_matches_a_subsampled_clip():
    x = _random_features(30)
    slow = T.resample_features(x, 0.5)
    assert slow.shape == (60, D)
    torch.testing.assert_close(features_to_joints(slow)[::2], features_to_joints(x), rtol=0, atol=1e-10)
    # features of real joints played 2x fast = features of every second frame (foot contacts aside:
    # they threshold per-frame displacement, which doubles)
    t = np.arange(61) / 20.0
    joints = np.zeros((61, 22, 3))
    from motion_collage.representation import REFERENCE_BONE_LENGTHS  # noqa: F401  (the retargeting default)
    rest = np.random.default_rng(0).normal(scale=0.3, size=(22, 3))
    rest[:, 1] = np.abs(rest[:, 1]) + 0.05 * np.arange(22)
    joints[:] = rest
    joints[:, :, 2] += 1.2 * t[:, None]
    joints[:, 21, 1] += 0.2 * np.sin(4 * t)
    _, full = canonical_joints_and_features(joints)
    _, half = canonical_joints_and_features(joints[::2])
    fast = T.resample_features(torch.from_numpy(full), 2.0).numpy()
    n = min(len(fast), len(half))
    keep = [i for i in range(D) if i < D - 4]
    np.testing.assert_allclose(fast[:n - 1, keep], half[:n - 1, keep], atol=2e-3)


def test_batches_with_speed_perturbation_are_resampled_crops(tmp_path):
    data = load_data(make_dataset(tmp_path), TINY)
    cfg = replace(TINY, speed_max=2.0, speed_min=0.5)
    ids = torch.arange(8)
    x0, mask, _ = make_batch(data.train, data, cfg, ids, torch.Generator().manual_seed(0))
    assert x0.shape[:3] == (8, D, 1) and torch.isfinite(x0).all()
    assert (mask.sum(1) <= 2 * data.train.lengths()[ids]).all()            # at most twice as long (speed 0.5)
    fixed = replace(TINY, speed_min=1.0, speed_max=2.0, crop_min_frames=200, full_crop_prob=1.0,
                    batch_len_quantile=1.0, max_frames=200)
    gen = torch.Generator().manual_seed(3)
    expected = T.speed_factors(8, fixed, torch.Generator().manual_seed(3))
    _, mask, _ = make_batch(data.train, data, fixed, ids, gen)
    want = torch.floor(data.train.lengths()[ids].double() / expected + 1e-9).long()
    assert mask.sum(1).tolist() == want.tolist()                        # whole clips at their new length
    assert (T.speed_factors(5, TINY, gen) == 1).all()                    # off: no perturbation


def test_content_balance_draws_every_label_equally():
    arrays = T.MotionArrays(torch.zeros(10, D), torch.arange(11), torch.zeros(10, 2, dtype=torch.long),
                            group=torch.tensor([0] * 5 + [1] * 5), content=torch.tensor([0] * 7 + [1, 2, 2]))
    p = T.clip_probabilities(arrays, replace(TINY, group_balance=0.0, content_balance=1.0))
    per_label = torch.zeros(3, dtype=torch.float64).index_add_(0, arrays.content, p)
    torch.testing.assert_close(per_label, torch.full((3,), 1 / 3, dtype=torch.float64))
    plain = T.clip_probabilities(arrays, replace(TINY, group_balance=0.0))
    torch.testing.assert_close(plain, torch.full((10,), 0.1, dtype=torch.float64))


def test_content_weights_multiply_the_named_labels():
    arrays = T.MotionArrays(torch.zeros(10, D), torch.arange(11), torch.zeros(10, 2, dtype=torch.long),
                            group=torch.zeros(10, dtype=torch.long), content=torch.tensor([0] * 5 + [1] * 4 + [2]),
                            content_names=("walk", "wave", "kick"))
    p = T.clip_probabilities(arrays, replace(TINY, group_balance=0.0, content_weights="wave=2, kick=6"))
    per_label = torch.zeros(3, dtype=torch.float64).index_add_(0, arrays.content, p)
    torch.testing.assert_close(per_label, torch.tensor([5, 8, 6], dtype=torch.float64) / 19)
    assert T.parse_content_weights("") == {} and T.parse_content_weights("a=1.5,b=2") == {"a": 1.5, "b": 2.0}
    for bad in ("wave", "wave=0", "wave=-1", "=2", "wave=x", "wave=nan"):
        with pytest.raises(ValueError, match="content_weights entries"):
            replace(TINY, content_weights=bad)


def test_content_weights_name_known_labels(tmp_path):
    with pytest.raises(ValueError, match="not a content label"):
        load_data(make_dataset(tmp_path), replace(TINY, content_weights="wave=2"))


def test_content_balance_needs_content_labels(tmp_path):
    with pytest.raises(ValueError, match="content_balance needs content labels"):
        load_data(make_dataset(tmp_path), replace(TINY, content_balance=1.0))


def test_geometric_losses_are_known_for_a_sliding_pose():
    mean, std = torch.zeros(D), torch.ones(D)
    geo = T.Geometry(mean, std, lambda_vel=1.0, lambda_fc=1.0)
    target = torch.zeros(2, D, 1, 10)
    target[:, 3] = 0.9                                     # a still pose, feet planted
    target[:, 4:4 + 63] = torch.randn(63, 1, 1)
    target[:, -4:] = 1.0
    mask = torch.ones(2, 10, dtype=torch.bool)
    vel, fc = T.geometric_losses(target, target, mask, geo)
    assert vel.item() == 0.0 and fc.item() == 0.0
    pred = target.clone().requires_grad_(True)
    slide = pred + torch.zeros_like(pred).index_fill_(1, torch.tensor([1]), 0.01)   # root slides 1 cm per frame
    vel, fc = T.geometric_losses(slide, target, mask, geo)
    assert vel.item() == pytest.approx(1e-4 / 3) and fc.item() == pytest.approx(1e-4 / 3)
    (vel + fc).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[:, 1].abs().sum() > 0
    short = mask.clone()
    short[1, 5:] = False                                   # padding frames do not count
    assert T.geometric_losses(slide, target, short, geo)[0].item() == pytest.approx(1e-4 / 3)


def test_training_with_every_v2_option_resumes_exactly(tmp_path, capsys, monkeypatch):
    data_dir = make_dataset(tmp_path / "data")
    with np.load(data_dir / "train_arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["content"] = (np.arange(10) % 3).astype(np.int16)
    write_npz(data_dir / "train_arrays.npz", arrays)
    monkeypatch.setattr(T, "matmul_gflops", lambda dtype, device: {torch.float32: 50.0, torch.bfloat16: 1.0}[dtype])
    cfg = replace(TINY, content_balance=1.0, group_balance=0.0, speed_min=0.8, speed_max=1.25, lambda_vel=1.0,
                  lambda_fc=1.0, precision="auto", max_steps=6)
    straight = train(cfg, data_dir, tmp_path / "a")
    assert "precision auto: fp32 50.0 GFLOP/s, bf16 1.0 GFLOP/s (matmul on cpu) -> fp32" in capsys.readouterr().out
    train(cfg, data_dir, tmp_path / "b", until_step=2, progress=False)
    resumed = train(replace(cfg, init_from="anything: ignored on resume"), data_dir, tmp_path / "b", progress=False)
    for v, w in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(v, w)


def test_choose_precision_by_measurement():
    cpu = torch.device("cpu")
    assert T.choose_precision(cpu, lambda d, _: {torch.float32: 60.0, torch.bfloat16: 1.0}[d])[0] == "fp32"
    assert T.choose_precision(cpu, lambda d, _: {torch.float32: 60.0, torch.bfloat16: 140.0}[d])[0] == "bf16"
    assert T.choose_precision(cpu, lambda d, _: {torch.float32: 60.0, torch.bfloat16: 65.0}[d])[0] == "fp32"
    assert T.matmul_gflops(torch.float32, cpu, size=64, seconds=0.01) > 0
    assert replace(TINY, precision="auto").precision == "auto"


def test_warm_start_from_a_shipped_model_folder(tmp_path, tiny_data, monkeypatch):
    train(TINY, tiny_data, tmp_path / "run", progress=False)
    ship = export(tmp_path / "run", tiny_data, tmp_path / "ship")
    warm = train(replace(TINY, init_from=str(ship), max_steps=0), tiny_data, tmp_path / "warm", progress=False)
    from safetensors.torch import load_file
    shipped = load_file(str(ship / "model.safetensors"))
    for k, v in warm.ema.state_dict().items():
        assert torch.equal(v, shipped[k].float()), k
    monkeypatch.chdir(tmp_path)
    assert T.resolve_init("save/default") == REPO / "save" / "default"          # not in cwd: the repository's
    assert T.resolve_init("ship") == Path("ship")                                # found in the working directory


def test_the_v2_config_warm_starts_from_the_shipped_model():
    cfg = TrainConfig.from_json(REPO / "configs" / "default_model_v2.json")
    assert cfg.init_from == "save/default" and cfg.content_balance > 0 and cfg.speed_max > 1 > cfg.speed_min
    assert cfg.precision == "auto"
    state = T.build_state(cfg, 240, torch.device("cpu"))
    T.warm_start(state, T.resolve_init(cfg.init_from))
    from safetensors.torch import load_file
    shipped = load_file(str(REPO / "save" / "default" / "model.safetensors"))
    assert all(torch.equal(v, shipped[k].float()) for k, v in state.ema.state_dict().items())


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("path", sorted([*(REPO / "configs").glob("*.json"), *(REPO / "save").glob("*/*.json")]),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_settings_carry_no_machine_paths(path):
    for text in _strings(json.loads(path.read_text())):
        assert not re.match(r"^(/|~|[A-Za-z]:[\\/])", text), f"{path.name}: {text!r} is a machine path"
