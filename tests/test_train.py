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
