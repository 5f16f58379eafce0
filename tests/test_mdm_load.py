"""mdm_adapter.load: official layouts round trip bit for bit; every bad file fails in one line."""
import json
import zlib

import numpy as np
import pytest
import torch

import mdm_adapter
from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM, sinusoidal_table
from mdm_adapter.text_encoders import CachedEncoder
from motion_core.denoiser import PieceConditions

TINY = dict(latent_dim=32, ff_size=64, layers=2)
VARIANTS = {
    "trans_enc": dict(arch="trans_enc"),
    "trans_dec": dict(arch="trans_dec"),
    "trans_dec_emb": dict(arch="trans_dec", emb_trans_dec=True),
    "bert": dict(arch="trans_dec", text_encoder_type="bert"),
    "kit": dict(dataset="kit"),
}


class HashEncoder(CachedEncoder):
    def __init__(self, dim: int, tokens: bool = False) -> None:
        super().__init__()
        self.feature_dim, self.is_sequence = dim, tokens

    def _compute(self, prompts):
        gens = [torch.Generator().manual_seed(zlib.crc32(p.encode())) for p in prompts]
        if self.is_sequence:
            return [torch.randn(3, self.feature_dim, generator=g) for g in gens]
        return [torch.randn(self.feature_dim, generator=g) for g in gens]


def official_state(net: MDM, args: MDMArgs) -> dict:
    """The state dict as the release saves it: with the two positional tables."""
    state = dict(net.state_dict())
    table = sinusoidal_table(args.pos_embed_max_len, args.latent_dim)
    state["sequence_pos_encoder.pe"] = table
    state["embed_timestep.sequence_pos_encoder.pe"] = table.clone()
    return state


def save_official(folder, name="trans_enc", ema=False, seed=0, step=475000, extra_args=None):
    args = MDMArgs(**TINY, **VARIANTS[name], use_ema=ema, **(extra_args or {}))
    torch.manual_seed(seed)
    net = MDM.from_args(args).eval()
    folder.mkdir(parents=True, exist_ok=True)
    state = official_state(net, args)
    if ema:
        torch.manual_seed(seed + 1)
        avg = MDM.from_args(args).eval()
        state = {"model": state, "model_avg": official_state(avg, args)}
        net = avg
    path = folder / f"model{step:09d}.pt"
    torch.save(state, path)
    args_json = {k: v for k, v in args.to_dict().items()}
    args_json.update({"save_dir": str(folder), "batch_size": 64, "lr": 1e-4})  # keys we ignore
    (folder / "args.json").write_text(json.dumps(args_json, indent=4, sort_keys=True))
    return path, args, net


def encoder_for(args):
    return HashEncoder(args.text_dim, args.text_encoder_type == "bert")


def text_for(args, B):
    g = torch.Generator().manual_seed(5)
    if args.text_encoder_type == "bert":
        return torch.randn(B, 4, args.text_dim, generator=g), torch.zeros(B, 4, dtype=torch.bool)
    return torch.randn(B, args.text_dim, generator=g)


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("ema", [False, True])
@torch.no_grad()
def test_round_trip_bit_for_bit(tmp_path, name, ema):
    path, args, net = save_official(tmp_path / "save" / name, name, ema=ema)
    net.requires_grad_(False)  # as loaded: the CPU attention kernel choice depends on it (~1e-6)
    loaded = mdm_adapter.load(path, text_encoder=encoder_for(args))
    x = torch.randn(2, args.feature_dim, 1, 11)
    t = torch.tensor([3, 900])
    text = text_for(args, 2)
    assert torch.equal(loaded.network(x, t, text), net(x, t, text))
    assert not loaded.network.training
    assert loaded.args == args and loaded.path == path


def test_metadata(tmp_path):
    path, _, _ = save_official(tmp_path / "m", extra_args=dict(diffusion_steps=50))
    loaded = mdm_adapter.load(path, text_encoder=HashEncoder(512))
    assert (loaded.fps, loaded.max_frames, loaded.feature_dim) == (20.0, 196, 263)
    assert loaded.diffusion_steps == 50 and loaded.guidance_scale == 2.5
    assert mdm_adapter.load(path, text_encoder=HashEncoder(512), guidance_scale=4).guidance_scale == 4
    kit_path, _, _ = save_official(tmp_path / "kit", "kit")
    kit = mdm_adapter.load(kit_path, text_encoder=HashEncoder(512))
    assert (kit.fps, kit.feature_dim, kit.spec.num_joints) == (12.5, 251, 21)


def test_no_text_dropout_means_no_guidance(tmp_path):
    path, _, _ = save_official(tmp_path / "m", extra_args=dict(cond_mask_prob=0.0))
    loaded = mdm_adapter.load(path, text_encoder=HashEncoder(512), guidance_scale=2.5)
    assert loaded.guidance_scale == 1.0


@torch.no_grad()
def test_denoiser_runs(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    loaded = mdm_adapter.load(path, text_encoder=HashEncoder(512))
    x = torch.randn(2, 10, 263)
    sigma = loaded.schedule.sigmas[[10, 500]].float()
    out = loaded.denoiser(x, sigma, torch.ones(2, 10, dtype=torch.bool), PieceConditions(("walk", None)))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_folder_picks_newest_step(tmp_path):
    folder = tmp_path / "m"
    save_official(folder, seed=0, step=200000)
    newest, args, _ = save_official(folder, seed=1, step=1000000)
    (folder / "model000000500.pt").write_bytes(newest.read_bytes())  # older step, newer mtime
    assert mdm_adapter.load(folder, text_encoder=HashEncoder(512)).path == newest


def test_clip_keys_are_ignored(tmp_path):
    path, args, net = save_official(tmp_path / "m")
    state = torch.load(path, weights_only=True)
    state["clip_model.token_embedding.weight"] = torch.zeros(3, 4)
    torch.save(state, path)
    mdm_adapter.load(path, text_encoder=HashEncoder(512))


@torch.no_grad()
def test_safetensors_default_model_layout(tmp_path):
    from mdm_adapter.text_bow import BagOfWordsEncoder
    args = MDMArgs(**TINY, text_encoder_type="bow", text_feature_dim=8, mask_frames=True)
    torch.manual_seed(0)
    net = MDM.from_args(args).eval().requires_grad_(False)
    folder = tmp_path / "save" / "default"
    path = mdm_adapter.save_safetensors(net, args, folder)
    BagOfWordsEncoder(["walk", "jump"], torch.randn(2, 4)).save(folder / "text_encoder.safetensors")
    np.save(folder / "Mean.npy", np.zeros(263, np.float32))
    np.save(folder / "Std.npy", np.ones(263, np.float32))
    loaded = mdm_adapter.load(folder)
    assert loaded.path == path and loaded.text_encoder.feature_dim == 8
    x, t, text = torch.randn(2, 263, 1, 6), torch.tensor([1, 2]), torch.randn(2, 8)
    assert torch.equal(loaded.network(x, t, text), net(x, t, text))
    stats = loaded.model_stats
    assert np.array_equal(np.asarray(stats.std), np.ones(263, np.float32))
    # fp16 weights load too (cast to float32)
    mdm_adapter.save_safetensors(net, args, tmp_path / "half", dtype=torch.float16)
    half = mdm_adapter.load(tmp_path / "half" / "model.safetensors", text_encoder=HashEncoder(8))
    assert half.network.embed_text.weight.dtype == torch.float32


def test_stats_lookup_order(tmp_path, monkeypatch):
    path, _, _ = save_official(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    loaded = mdm_adapter.load(path, text_encoder=HashEncoder(512))
    assert loaded.stats_paths is None
    with pytest.raises(FileNotFoundError, match="Mean.npy / Std.npy .* not found .*stats_dir"):
        loaded.model_stats
    data = tmp_path / "dataset" / "HumanML3D"
    data.mkdir(parents=True)
    for n in ("Mean.npy", "Std.npy"):
        np.save(data / n, np.ones(263, np.float32))
    assert mdm_adapter.load(path, text_encoder=HashEncoder(512)).stats_paths[0] == tmp_path / "dataset/HumanML3D/Mean.npy"
    other = tmp_path / "stats"
    other.mkdir()
    for n in ("Mean.npy", "Std.npy"):
        np.save(other / n, np.ones(263, np.float32))
    explicit = mdm_adapter.load(path, text_encoder=HashEncoder(512), stats_dir=other)
    assert explicit.stats_paths[0] == other / "Mean.npy"


# ---------------------------------------------------------------- errors, one line each
def _load(path):
    return mdm_adapter.load(path, text_encoder=HashEncoder(512))


def test_error_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _load(tmp_path / "nope" / "model000475000.pt")


def test_error_args_missing(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    (tmp_path / "m" / "args.json").unlink()
    with pytest.raises(FileNotFoundError, match="args.json not found"):
        _load(path)


def test_error_unknown_arch(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    args = json.loads((tmp_path / "m" / "args.json").read_text())
    args["arch"] = "mamba"
    (tmp_path / "m" / "args.json").write_text(json.dumps(args))
    with pytest.raises(ValueError, match="unsupported arch 'mamba'"):
        _load(path)


def _edit_state(path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def test_error_missing_key(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    _edit_state(path, lambda s: s.pop("embed_text.bias"))
    with pytest.raises(ValueError, match="missing key 'embed_text.bias'"):
        _load(path)


def test_error_unexpected_key(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    _edit_state(path, lambda s: s.__setitem__("seqTransEncoder.layers.9.norm1.weight", torch.zeros(32)))
    with pytest.raises(ValueError, match="unexpected key 'seqTransEncoder.layers.9.norm1.weight'"):
        _load(path)


def test_error_wrong_shape(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    _edit_state(path, lambda s: s.__setitem__("embed_text.weight", torch.zeros(32, 768)))
    with pytest.raises(ValueError, match=r"'embed_text.weight' has shape \(32, 768\), args.json implies \(32, 512\)"):
        _load(path)


def test_error_truncated(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        _load(path)


def test_error_text_file(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    path.write_text("<html>Google Drive: quota exceeded</html>\n")
    with pytest.raises(ValueError, match="text file, not a checkpoint"):
        _load(path)


def test_error_non_tensor_content(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    import argparse
    torch.save({"args": argparse.Namespace(lr=1e-4)}, path)  # refused by weights_only loading
    with pytest.raises(ValueError, match="objects other than tensors"):
        _load(path)


def test_error_corrupt_safetensors(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    MDMArgs(**TINY).to_json(folder / "args.json")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="cannot read .* as safetensors"):
        _load(folder / "model.safetensors")


def test_error_messages_are_one_line(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    _edit_state(path, lambda s: s.pop("embed_text.bias"))
    with pytest.raises(ValueError) as info:
        _load(path)
    assert "\n" not in str(info.value)


def test_missing_clip_weights_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, _, _ = save_official(tmp_path / "m")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("MOTION_COLLAGE_CLIP_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="--clip_path") as info:
        mdm_adapter.load(path)
    assert "MOTION_COLLAGE_CLIP_PATH" in str(info.value) and "\n" not in str(info.value)


@torch.no_grad()
def test_clip_model_loads_its_text_encoder_from_clip_path(tmp_path):
    import gzip
    from mdm_adapter.text_encoders import ClipBPETokenizer, ClipTextEncoder, ClipTextTower
    merges = [("w", "a"), ("wa", "l"), ("wal", "k</w>")]
    tok = ClipBPETokenizer(merges)
    torch.manual_seed(0)
    tower = ClipTextTower(vocab_size=len(tok.vocab), width=64, layers=1, heads=1, embed_dim=16)
    torch.nn.init.normal_(tower.text_projection)
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    torch.save(tower.state_dict(), clip_dir / "ViT-B-32.pt")
    (clip_dir / "bpe_simple_vocab_16e6.txt.gz").write_bytes(
        gzip.compress(("#version\n" + "\n".join(" ".join(m) for m in merges)).encode()))
    path, args, _ = save_official(tmp_path / "m", extra_args=dict(text_feature_dim=16))
    loaded = mdm_adapter.load(path, clip_path=clip_dir)
    assert isinstance(loaded.text_encoder, ClipTextEncoder) and loaded.text_encoder.precision == "fp32"
    assert torch.equal(loaded.text_encoder.encode(["walk"]), ClipTextEncoder(tower, tok).encode(["walk"]))
    x = torch.randn(1, 8, 263)
    out = loaded.denoiser(x, loaded.schedule.sigmas[[40]].float(), torch.ones(1, 8, dtype=torch.bool),
                          PieceConditions(("walk",)))
    assert out.shape == x.shape


# ---------------------------------------------------------------- hostile and broken input
def _bow_model(folder):
    from mdm_adapter.text_bow import BagOfWordsEncoder
    args = MDMArgs(**TINY, text_encoder_type="bow", text_feature_dim=8, mask_frames=True)
    torch.manual_seed(0)
    net = MDM.from_args(args).eval()
    path = mdm_adapter.save_safetensors(net, args, folder)
    BagOfWordsEncoder(["walk", "jump"], torch.randn(2, 4)).save(folder / "text_encoder.safetensors")
    return path


def _one_line_error(kind, match, call):
    with pytest.raises(kind, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_value_error(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    _one_line_error(ValueError, "no CUDA device is available; use cpu",
                    lambda: mdm_adapter.load(path, device="cuda", text_encoder=HashEncoder(512)))


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), -0.5, "2.5", True])
def test_bad_guidance_scale(tmp_path, scale):
    path, _, _ = save_official(tmp_path / "m")
    _one_line_error(ValueError, "guidance_scale must be",
                    lambda: mdm_adapter.load(path, guidance_scale=scale, text_encoder=HashEncoder(512)))


def test_bad_device_name(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    _one_line_error(ValueError, "unknown device 'gpu0'",
                    lambda: mdm_adapter.load(path, device="gpu0", text_encoder=HashEncoder(512)))


def test_missing_path_is_one_line(tmp_path):
    _one_line_error(FileNotFoundError, "does not exist", lambda: mdm_adapter.load(tmp_path / "nope"))


BROKEN_FILES = {
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "text": lambda p: p.write_text("<html>quota exceeded</html>"),
}


@pytest.mark.parametrize("damage", list(BROKEN_FILES))
@pytest.mark.parametrize("name", ["model.safetensors", "text_encoder.safetensors"])
def test_broken_safetensors_name_the_file(tmp_path, name, damage):
    _bow_model(tmp_path / "m")
    BROKEN_FILES[damage](tmp_path / "m" / name)
    message = _one_line_error(ValueError, None, lambda: mdm_adapter.load(tmp_path / "m"))
    assert str(tmp_path / "m" / name) in message


def _poison(state, key="seqTransEncoder.layers.0.linear1.weight", value=float("nan")):
    state[key] = state[key].clone()
    state[key].view(-1)[3] = value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_name_the_first_bad_tensor(tmp_path, value):
    path, _, _ = save_official(tmp_path / "m")
    _edit_state(path, lambda s: _poison(s, value=value))
    _one_line_error(ValueError, r"tensor 'seqTransEncoder.layers.0.linear1.weight' holds 1 NaN or infinite",
                    lambda: _load(path))
    from safetensors.torch import load_file, save_file
    st = _bow_model(tmp_path / "s")
    state = load_file(str(st))
    _poison(state, "embed_text.weight", value)
    save_file(state, str(st))
    _one_line_error(ValueError, r"model.safetensors: tensor 'embed_text.weight'", lambda: mdm_adapter.load(st))


def _pickle_payload(marker):
    """A pickle that runs `touch marker` when unpickled without restrictions."""
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def test_pickle_payload_checkpoint_is_refused_and_never_run(tmp_path):
    path, _, _ = save_official(tmp_path / "m")
    marker = tmp_path / "PWNED"
    path.write_bytes(_pickle_payload(marker))
    _one_line_error(ValueError, "cannot load", lambda: _load(path))
    assert not marker.exists()


@pytest.mark.parametrize("content", ["random", "pickle", "nan", "object"])
def test_broken_stats_files(tmp_path, content):
    path, _, _ = save_official(tmp_path / "m")
    mean = tmp_path / "m" / "Mean.npy"
    np.save(tmp_path / "m" / "Std.npy", np.ones(263, np.float32))
    marker = tmp_path / "PWNED"
    if content == "random":
        mean.write_bytes(np.random.default_rng(0).bytes(500))
    elif content == "pickle":
        mean.write_bytes(_pickle_payload(marker))
    elif content == "nan":
        np.save(mean, np.full(263, np.nan, np.float32))
    else:
        np.save(mean, np.array(["a", "b"]))
    loaded = _load(path)
    message = _one_line_error(ValueError, None, lambda: loaded.model_stats)
    assert str(mean) in message and not marker.exists()


@pytest.mark.parametrize("key, value, match", [
    ("cond_mask_prob", "0.1", "'cond_mask_prob' must be a finite number"),
    ("layers", 2.5, "'layers' must be an integer"),
    ("use_ema", "false", "'use_ema' must be true or false"),
    ("dataset", ["humanml"], "'dataset' must be a string"),
    ("text_encoder_file", "../../../etc/passwd", "text_encoder_file must be a file name beside the weights"),
    ("latent_dim", -32, "latent_dim must be a positive integer"),
])
def test_hostile_args_json(tmp_path, key, value, match):
    path, _, _ = save_official(tmp_path / "m")
    args = json.loads((tmp_path / "m" / "args.json").read_text())
    args[key] = value
    (tmp_path / "m" / "args.json").write_text(json.dumps(args))
    _one_line_error(ValueError, match, lambda: _load(path))


def test_bert_model_without_transformers_is_one_line(tmp_path, monkeypatch, capsys):
    import sys
    from motion_core.cli import OneLineParser, run_cli
    path, _, _ = save_official(tmp_path / "m", "bert")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    message = _one_line_error(ImportError, r'pip install -e "\.\[bert\]"', lambda: mdm_adapter.load(path))
    assert "DistilBERT" in message
    assert run_cli(OneLineParser(), [], lambda a: mdm_adapter.load(path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and ".[bert]" in err


def test_torchscript_clip_without_text_keys_names_file_and_keys(tmp_path):
    import gzip
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    import warnings
    with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's file is still TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch.nn.Linear(3, 2)).save(str(clip_dir / "ViT-B-32.pt"))
    (clip_dir / "bpe_simple_vocab_16e6.txt.gz").write_bytes(gzip.compress(b"#version\nw a\n"))
    path, _, _ = save_official(tmp_path / "m")
    message = _one_line_error(ValueError, "has no CLIP text tower: missing token_embedding.weight",
                              lambda: mdm_adapter.load(path, clip_path=clip_dir))
    assert str(clip_dir / "ViT-B-32.pt") in message and "ln_final.weight" in message


def test_quickstart_start_up_imports_no_scipy_sympy_or_dynamo():
    """Loading the default model, one masked network call and the pipeline's imports stay clear
    of the heavy modules the quickstart used to pay for at start-up (2-3 s on a 2-core CPU)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, torch\n"
        "import mdm_adapter, motion_collage.pipeline\n"
        "m = mdm_adapter.load('save/default')\n"
        "B, N = 2, 12\n"
        "mask = torch.ones(B, N, dtype=torch.bool); mask[1, 8:] = False\n"
        "x = torch.randn(B, m.network.feature_dim, 1, N)\n"
        "with torch.no_grad(): m.network(x, torch.tensor([3, 9]), torch.zeros(B, m.network.text_dim), mask)\n"
        "print(' '.join(k for k in ('scipy', 'sympy', 'torch._dynamo', 'torch._inductor') if k in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
