"""Text encoders: CLIP BPE truncation, end-token pooling, caching, weight files, fp16 recipe."""
import gzip
import json
import subprocess
import sys

import pytest
import torch

from mdm_adapter.text_encoders import (ClipBPETokenizer, ClipTextEncoder, ClipTextTower, byte_alphabet,
                                       find_clip_files, hf_clip_to_openai, read_clip_weights)

MERGES = [("w", "a"), ("wa", "l"), ("wal", "k"), ("walk", "s</w>"), ("p", "e"), ("pe", "r"), ("s", "o"),
          ("per", "so"), ("o", "n</w>"), ("perso", "n</w>"), ("j", "u"), ("ju", "m"), ("jum", "p")]


def tiny_tokenizer() -> ClipBPETokenizer:
    return ClipBPETokenizer(MERGES)


def tiny_tower(vocab_size: int, seed: int = 0) -> ClipTextTower:
    torch.manual_seed(seed)
    tower = ClipTextTower(vocab_size=vocab_size, context_length=77, width=64, layers=2, heads=1, embed_dim=48)
    with torch.no_grad():
        for name, p in tower.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                                                  or name == "ln_final.weight" else 0.0))
    return tower


def tiny_encoder(**kw) -> ClipTextEncoder:
    tok = tiny_tokenizer()
    return ClipTextEncoder(tiny_tower(len(tok.vocab)), tok, **kw)


def test_vocabulary_rule_and_bpe():
    tok = tiny_tokenizer()
    assert len(tok.vocab) == 512 + len(MERGES) + 2
    assert (tok.start_id, tok.end_id) == (512 + len(MERGES), 513 + len(MERGES))
    assert list(byte_alphabet().values())[0] == "!"  # printable bytes first
    ids = tok.encode("A Person  walks!")
    inv = {i: w for w, i in tok.vocab.items()}
    assert [inv[i] for i in ids] == ["a</w>", "person</w>", "walks</w>", "!</w>"]
    assert tok.encode("<|endoftext|>") == [tok.end_id]


def test_truncation_to_20_bpe_tokens():
    tok = tiny_tokenizer()
    text = " ".join(["walks", "person", "jump"] * 10)  # 30 words, 30+ BPE tokens
    bpe = tok.encode(text)
    assert len(bpe) > 20
    ids = tok.tokenize(text)
    assert len(ids) == 22 and ids[0] == tok.start_id and ids[-1] == tok.end_id
    assert ids[1:21] == bpe[:20]
    short = tok.tokenize("person walks")
    assert short == [tok.start_id, *tok.encode("person walks"), tok.end_id]


@torch.no_grad()
def test_feature_is_end_token_pooling_and_truncation_shares_features():
    enc = tiny_encoder()
    long_a = " ".join(["walks"] * 20) + " person person"
    long_b = " ".join(["walks"] * 20) + " jump jump jump"
    feats = enc.encode(["person walks", long_a, long_b])
    assert feats.shape == (3, 48) and feats.dtype == torch.float32
    assert torch.equal(feats[1], feats[2])  # identical after truncation to 20 BPE tokens
    # by hand: final LayerNorm output at the end token, times text_projection
    ids, end = enc.token_ids(["person walks"])
    tower = enc.tower
    x = (tower.token_embedding(ids) + tower.positional_embedding).permute(1, 0, 2)
    mask = torch.full((77, 77), float("-inf")).triu_(1)
    for block in tower.transformer.resblocks:
        x = block(x, mask)
    ref = tower.ln_final(x.permute(1, 0, 2))[0, int(end[0])] @ tower.text_projection
    torch.testing.assert_close(feats[0], ref, atol=1e-6, rtol=0)
    assert int(end[0]) == 3 and int(ids[0, 4:].abs().sum()) == 0  # zero padding after the end token


@torch.no_grad()
def test_cache_runs_tower_once_per_distinct_prompt():
    enc = tiny_encoder()
    calls = []
    enc.tower.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    a = enc.encode(["walks", "jump", "walks"])
    b = enc.encode(["jump", "person", "walks"])
    assert calls == [2, 1] and enc.prompts_computed == 3
    assert torch.equal(a[0], b[2]) and torch.equal(a[0], a[2])
    alone = tiny_encoder().encode(["person"])
    torch.testing.assert_close(b[1], alone[0], atol=1e-6, rtol=0)  # batch composition does not matter


def test_cache_is_lru_bounded():
    enc = tiny_encoder(cache_size=2)
    enc.encode(["a", "b"])
    enc.encode(["a"])  # a is now most recent
    enc.encode(["c"])  # evicts b
    assert set(enc._cache) == {"a", "c"}


def test_encode_rejects_bad_input():
    enc = tiny_encoder()
    with pytest.raises(TypeError, match="single str"):
        enc.encode("walks")
    with pytest.raises(TypeError, match="null condition"):
        enc.encode(["walks", None])


@torch.no_grad()
def test_fp16_recipe():
    enc = tiny_encoder(precision="fp16")
    t = enc.tower
    block = t.transformer.resblocks[0]
    assert block.mlp.c_fc.weight.dtype == torch.float16 and block.attn.in_proj_weight.dtype == torch.float16
    assert block.attn.out_proj.weight.dtype == torch.float16 and t.text_projection.dtype == torch.float16
    assert block.ln_1.weight.dtype == torch.float32 and t.token_embedding.weight.dtype == torch.float32
    assert t.positional_embedding.dtype == torch.float32
    half = enc.encode(["person walks"])
    full = tiny_encoder(precision="fp32").encode(["person walks"])
    assert half.dtype == torch.float32 and enc.precision == "fp16"
    assert 0 < (half - full).abs().max() < 0.05 * full.abs().max()
    assert tiny_encoder().precision == "fp32"  # auto on CPU


def _write_openai_layout(folder, tower, tok):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({**tower.state_dict(), "visual.proj": torch.zeros(2, 2), "logit_scale": torch.tensor(1.0)},
               folder / "ViT-B-32.pt")
    lines = ["#version: test"] + [" ".join(m) for m in MERGES]
    (folder / "bpe_simple_vocab_16e6.txt.gz").write_bytes(gzip.compress("\n".join(lines).encode()))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@torch.no_grad()
def test_load_openai_layout(tmp_path):
    tok = tiny_tokenizer()
    tower = tiny_tower(len(tok.vocab))
    _write_openai_layout(tmp_path / "clip", tower, tok)
    enc = ClipTextEncoder.from_path(tmp_path / "clip")
    ref = ClipTextEncoder(tower, tok)
    assert torch.equal(enc.encode(["person walks"]), ref.encode(["person walks"]))
    enc2 = ClipTextEncoder.from_path(tmp_path / "clip" / "ViT-B-32.pt")  # the file itself works too
    assert torch.equal(enc2.encode(["jump"]), ref.encode(["jump"]))
    # OpenAI ships a TorchScript archive, not a pickled state dict
    torch.jit.trace(tower.eval(), ref.token_ids(["jump"])).save(str(tmp_path / "clip" / "ViT-B-32.pt"))
    enc3 = ClipTextEncoder.from_path(tmp_path / "clip")
    assert torch.equal(enc3.encode(["person walks"]), ref.encode(["person walks"]))


def _openai_to_hf(state):
    """Inverse of hf_clip_to_openai (test helper)."""
    hf = {"text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
          "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
          "text_model.final_layer_norm.weight": state["ln_final.weight"],
          "text_model.final_layer_norm.bias": state["ln_final.bias"],
          "text_projection.weight": state["text_projection"].t().contiguous()}
    names = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    layers = {int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks.")}
    for i in layers:
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[src + f"attn.in_proj_{kind}"].chunk(3)
            hf.update({dst + f"self_attn.q_proj.{kind}": q, dst + f"self_attn.k_proj.{kind}": k,
                       dst + f"self_attn.v_proj.{kind}": v})
            for a, b in names.items():
                hf[dst + f"{b}.{kind}"] = state[src + f"{a}.{kind}"]
    return {k: v.contiguous() for k, v in hf.items()}


@torch.no_grad()
def test_load_hf_layout_from_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from safetensors.torch import save_file
    tok = tiny_tokenizer()
    tower = tiny_tower(len(tok.vocab))
    snap = tmp_path / "hf" / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file(_openai_to_hf(tower.state_dict()), str(snap / "model.safetensors"))
    (snap / "vocab.json").write_text(json.dumps(tok.vocab))
    (snap / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("MOTION_COLLAGE_CLIP_PATH", raising=False)
    files = find_clip_files()
    assert files.weights == snap / "model.safetensors"
    enc = ClipTextEncoder.from_path()
    assert torch.equal(enc.encode(["person walks"]), ClipTextEncoder(tower, tok).encode(["person walks"]))


@torch.no_grad()
def test_hf_conversion_matches_transformers():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPTextConfig(vocab_size=600, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=1, max_position_embeddings=77, projection_dim=48,
                                      hidden_act="quick_gelu", eos_token_id=599, bos_token_id=598, pad_token_id=0)
    torch.manual_seed(0)
    hf = transformers.CLIPTextModelWithProjection(cfg).eval()
    tower = ClipTextTower.from_state_dict(hf_clip_to_openai(hf.state_dict())).eval()
    ids = torch.tensor([[598, 5, 17, 300, 599] + [0] * 72])
    ours = tower(ids, torch.tensor([4]))
    theirs = hf(input_ids=ids[:, :5]).text_embeds
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_missing_weights_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("MOTION_COLLAGE_CLIP_PATH", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        find_clip_files()
    msg = str(info.value)
    assert "\n" not in msg and "ViT-B-32.pt" in msg and "--clip_path" in msg and "MOTION_COLLAGE_CLIP_PATH" in msg
    with pytest.raises(FileNotFoundError, match="clip_path .* does not exist"):
        find_clip_files(tmp_path / "nowhere")


def test_bad_weights_file(tmp_path):
    bad = tmp_path / "ViT-B-32.pt"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="neither a CLIP state dict nor a TorchScript archive"):
        read_clip_weights(bad)


def test_import_does_not_load_transformers():
    code = ("import sys, mdm_adapter, mdm_adapter.text_encoders, mdm_adapter.load; "
            "assert 'transformers' not in sys.modules and 'torchvision' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _tiny_bert_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "person", "walks", "jumps", "forward", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.DistilBertTokenizer(str(tmp_path / "vocab.txt"))
    cfg = transformers.DistilBertConfig(vocab_size=len(words), dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    torch.manual_seed(0)
    model = transformers.DistilBertModel(cfg)
    folder = tmp_path / "bert"
    tok.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@torch.no_grad()
def test_distilbert_token_features_and_cache(tmp_path):
    from mdm_adapter.text_encoders import DistilBertTextEncoder
    enc = DistilBertTextEncoder.from_path(_tiny_bert_folder(tmp_path))
    assert enc.is_sequence and enc.feature_dim == 32
    tokens, padding = enc.encode(["a person walks forward .", "jumps"])
    assert tokens.shape == (2, 7, 32) and padding.tolist()[1] == [False] * 3 + [True] * 4
    assert tokens[1, 3:].abs().sum() == 0
    again, _ = enc.encode(["jumps"])
    torch.testing.assert_close(again[0], tokens[1, :3], atol=1e-5, rtol=0)  # same with or without padding
    assert enc.tower_calls == 1


def test_distilbert_missing_message(tmp_path):
    pytest.importorskip("transformers")
    from mdm_adapter.text_encoders import DistilBertTextEncoder
    with pytest.raises(FileNotFoundError, match="DistilBERT weights not found"):
        DistilBertTextEncoder.from_path(tmp_path / "nothing-here")


# ---------------------------------------------------------------- hostile and broken files
def _one_line(kind, match, call):
    with pytest.raises(kind, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 64, b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}"])
def test_broken_hf_safetensors_names_the_file(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    assert str(path) in _one_line(ValueError, "cannot read .* as safetensors", lambda: read_clip_weights(path))


def test_hf_weights_missing_a_layer_key(tmp_path):
    from safetensors.torch import save_file
    tok = tiny_tokenizer()
    hf = _openai_to_hf(tiny_tower(len(tok.vocab)).state_dict())
    del hf["text_model.encoder.layers.1.mlp.fc2.bias"]
    save_file(hf, str(tmp_path / "model.safetensors"))
    _one_line(ValueError, "without 'text_model.encoder.layers.1.mlp.fc2.bias'",
              lambda: read_clip_weights(tmp_path / "model.safetensors"))


def test_state_dict_without_text_tower(tmp_path):
    torch.save({"visual.proj": torch.zeros(2, 2)}, tmp_path / "ViT-B-32.pt")
    message = _one_line(ValueError, "has no CLIP text tower: missing token_embedding.weight",
                        lambda: read_clip_weights(tmp_path / "ViT-B-32.pt"))
    assert str(tmp_path / "ViT-B-32.pt") in message and "transformer.resblocks.*" in message


def test_torchscript_without_text_tower(tmp_path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch.nn.Linear(3, 2)).save(str(tmp_path / "ViT-B-32.pt"))
    _one_line(ValueError, r"ViT-B-32.pt has no CLIP text tower: missing .*ln_final.weight",
              lambda: read_clip_weights(tmp_path / "ViT-B-32.pt"))


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.__setitem__("ln_final.weight", torch.zeros(())), "'ln_final.weight' is \\(\\), expected a 1-D"),
    (lambda s: s.__setitem__("ln_final.bias", torch.zeros(63)), "'ln_final.bias' has shape \\(63,\\)"),
    (lambda s: s["transformer.resblocks.0.ln_1.weight"].fill_(float("nan")), "not finite"),
    (lambda s: s.__setitem__("positional_embedding", torch.zeros(77, 64, dtype=torch.int64)), "not finite floating"),
])
def test_malformed_tower_weights(edit, match):
    tok = tiny_tokenizer()
    state = {k: v.clone() for k, v in tiny_tower(len(tok.vocab)).state_dict().items()}
    edit(state)
    _one_line(ValueError, match, lambda: ClipTextTower.from_state_dict(state))


@pytest.mark.parametrize("files", [("bpe_simple_vocab_16e6.txt.gz",), ("vocab.json", "merges.txt")])
def test_broken_tokeniser_files_name_them(tmp_path, files):
    from mdm_adapter.text_encoders import ClipFiles
    for name in files:
        (tmp_path / name).write_bytes(b"\x1f\x8b\x08garbage" if name.endswith(".gz") else b"{\xff not json")
    clip = ClipFiles(tmp_path / "ViT-B-32.pt", tuple(tmp_path / n for n in files))
    assert str(tmp_path / files[0]) in _one_line(ValueError, "cannot read the CLIP tokeniser", clip.load_tokenizer)


def test_distilbert_without_transformers_says_how_to_install(monkeypatch):
    from mdm_adapter.text_encoders import DistilBertTextEncoder, MissingDependencyError
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError) as info:
        DistilBertTextEncoder.from_path()
    assert isinstance(info.value, ImportError) and isinstance(info.value, ValueError)
    assert 'pip install -e ".[bert]"' in str(info.value) and "\n" not in str(info.value)
