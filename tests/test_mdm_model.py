"""The MDM network: official key names and sizes, positional table, masking, variants."""
import pytest
import torch

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM, drop_text, null_text, official_state_dict_keys, sinusoidal_table

TINY = dict(latent_dim=32, ff_size=64, layers=2, num_heads=4)
VARIANTS = {
    "trans_enc": dict(arch="trans_enc"),
    "trans_dec": dict(arch="trans_dec"),
    "trans_dec_emb": dict(arch="trans_dec", emb_trans_dec=True),
    "bert": dict(arch="trans_dec", text_encoder_type="bert"),
    "kit": dict(arch="trans_enc", dataset="kit"),
}


def tiny(name: str, seed: int = 0) -> tuple[MDMArgs, MDM]:
    args = MDMArgs(**TINY, **VARIANTS[name])
    torch.manual_seed(seed)
    return args, MDM.from_args(args).eval()


def text_for(args: MDMArgs, B: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    if args.text_encoder_type == "bert":
        tokens = torch.randn(B, 5, args.text_dim, generator=g)
        padding = torch.zeros(B, 5, dtype=torch.bool)
        padding[0, 3:] = True
        return tokens, padding
    return torch.randn(B, args.text_dim, generator=g)


def paper_keys() -> dict[str, tuple[int, ...]]:
    """The 108 keys of the paper model, written out from formats.md section 1.4."""
    keys = {"input_process.poseEmbedding.weight": (512, 263), "input_process.poseEmbedding.bias": (512,),
            "sequence_pos_encoder.pe": (5000, 1, 512), "embed_timestep.sequence_pos_encoder.pe": (5000, 1, 512),
            "embed_timestep.time_embed.0.weight": (512, 512), "embed_timestep.time_embed.0.bias": (512,),
            "embed_timestep.time_embed.2.weight": (512, 512), "embed_timestep.time_embed.2.bias": (512,),
            "embed_text.weight": (512, 512), "embed_text.bias": (512,),
            "output_process.poseFinal.weight": (263, 512), "output_process.poseFinal.bias": (263,)}
    for i in range(8):
        p = f"seqTransEncoder.layers.{i}."
        keys.update({p + "self_attn.in_proj_weight": (1536, 512), p + "self_attn.in_proj_bias": (1536,),
                     p + "self_attn.out_proj.weight": (512, 512), p + "self_attn.out_proj.bias": (512,),
                     p + "linear1.weight": (1024, 512), p + "linear1.bias": (1024,),
                     p + "linear2.weight": (512, 1024), p + "linear2.bias": (512,)})
        for n in ("norm1", "norm2"):
            keys.update({p + n + ".weight": (512,), p + n + ".bias": (512,)})
    return keys


def count(args: MDMArgs) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in MDM.from_args(args).parameters())


def test_paper_config_keys_shapes_and_parameter_count():
    args = MDMArgs()
    assert official_state_dict_keys(args) == paper_keys()
    assert len(paper_keys()) == 108
    assert count(args) == 17_880_327


def test_trans_dec_sizes():
    args = MDMArgs(arch="trans_dec")
    keys = official_state_dict_keys(args)
    assert len(keys) == 156 and count(args) == 26_293_511
    assert keys["seqTransDecoder.layers.7.multihead_attn.in_proj_weight"] == (1536, 512)
    assert keys["seqTransDecoder.layers.0.norm3.weight"] == (512,)
    assert not any(k.startswith("seqTransDecoder.norm") for k in keys)
    assert official_state_dict_keys(MDMArgs(arch="trans_dec", text_encoder_type="bert"))["embed_text.weight"] == (512, 768)
    assert official_state_dict_keys(MDMArgs(dataset="kit"))["output_process.poseFinal.weight"] == (251, 512)


def test_positional_table_check_values():
    pe = sinusoidal_table(5000, 512)
    assert pe.shape == (5000, 1, 512) and pe.dtype == torch.float32
    want1 = torch.tensor([0.84147096, 0.54030234, 0.82185620, 0.56969506, 0.80196178, 0.59737533])
    want999 = torch.tensor([-0.02646075, 0.99964982, 0.69755834, -0.71652800, -0.26667938, 0.96378529])
    torch.testing.assert_close(pe[1, 0, :6], want1, atol=1e-7, rtol=0)
    torch.testing.assert_close(pe[999, 0, :6], want999, atol=1e-7, rtol=0)


def test_meta_build_skips_the_table_and_real_build_keeps_it(monkeypatch):
    """official_state_dict_keys needs shapes only: on the meta device the table is not computed
    (there torch.arange runs Python decompositions: ~1.8 s and dynamo/sympy imports)."""
    import mdm_adapter.model as model

    real = sinusoidal_table(64, 32)

    def refuse(*_):
        raise AssertionError("sinusoidal_table called on the meta device")

    monkeypatch.setattr(model, "sinusoidal_table", refuse)
    keys = official_state_dict_keys(MDMArgs())
    assert keys == paper_keys()
    monkeypatch.undo()
    enc = model.PositionalEncoding(32, 0.0, 64)
    assert enc.pe.device.type == "cpu" and torch.equal(enc.pe, real)


def test_tables_are_not_saved():
    _, net = tiny("trans_enc")
    assert not any(k.endswith(".pe") for k in net.state_dict())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_shape_and_text_effect(name):
    args, net = tiny(name)
    B, N = 3, 9
    x = torch.randn(B, args.feature_dim, 1, N)
    t = torch.tensor([0, 10, 999])
    text = text_for(args, B)
    with torch.no_grad():
        c = net(x, t, text)
        u = net(x, t, null_text(text))
    assert c.shape == x.shape
    assert (c - u).abs().max() > 1e-4  # text matters


@pytest.mark.parametrize("name", ["trans_enc", "trans_dec", "trans_dec_emb", "bert"])
def test_frame_mask_equals_running_alone(name):
    args, net = tiny(name)
    B, N = 3, 10
    x = torch.randn(B, args.feature_dim, 1, N)
    t = torch.tensor([5, 200, 700])
    text = text_for(args, B)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 6:] = False
    with torch.no_grad():
        batched = net(x, t, text, mask)
        one = text[1:2] if isinstance(text, torch.Tensor) else (text[0][1:2], text[1][1:2])
        alone = net(x[1:2, :, :, :6], t[1:2], one)
        unmasked = net(x, t, text)
    torch.testing.assert_close(batched[1:2, :, :, :6], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[0], unmasked[0], atol=1e-5, rtol=0)  # full rows unaffected
    assert (batched[1, :, :, :6] - unmasked[1, :, :, :6]).abs().max() > 1e-5  # padding did matter unmasked


def test_padding_mask_as_attention_mask_gives_the_key_padding_numbers():
    """The encoder gets the frame padding as an additive attention mask (torch's key-padding
    checks import sympy): bit for bit what src_key_padding_mask gives, in eval and train mode."""
    import mdm_adapter.model as model

    args, net = tiny("trans_enc")
    layers = net.seqTransEncoder
    S, B, heads = 11, 4, layers.layers[0].self_attn.num_heads
    seq = torch.randn(S, B, args.latent_dim)
    padding = torch.zeros(B, S, dtype=torch.bool)
    padding[1, 7:], padding[3, 2:] = True, True
    mask = model._padding_as_attn_mask(padding, heads, seq.dtype)
    assert mask.shape == (B * heads, S, S) and mask.stride()[1] == 0  # a view: no S x S memory
    assert model._padding_as_attn_mask(None, heads, seq.dtype) is None
    with torch.no_grad():
        assert torch.equal(layers(seq, mask=mask), layers(seq, src_key_padding_mask=padding))
    layers.train()
    torch.manual_seed(3)
    want = layers(seq, src_key_padding_mask=padding)
    torch.manual_seed(3)
    assert torch.equal(layers(seq, mask=mask), want)


def test_dropout_active_in_train_mode_only():
    args, net = tiny("trans_enc")
    x, t, text = torch.randn(2, 263, 1, 8), torch.tensor([1, 2]), torch.randn(2, 512)
    with torch.no_grad():
        assert torch.equal(net(x, t, text), net(x, t, text))
        net.train()
        assert not torch.equal(net(x, t, text), net(x, t, text))


def test_drop_text_zeroes_rows_without_mutation():
    text = torch.randn(3, 4)
    before = text.clone()
    out = drop_text(text, torch.tensor([False, True, False]))
    assert torch.equal(text, before)
    assert torch.equal(out[1], torch.zeros(4)) and torch.equal(out[0], text[0])
    tokens, padding = drop_text((torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool)), torch.tensor([True, False]))
    assert tokens[0].abs().sum() == 0 and tokens[1].abs().sum() > 0


def test_uncond_text_token_is_embed_text_bias():
    _, net = tiny("trans_enc")
    with torch.no_grad():
        torch.testing.assert_close(net.embed_text(torch.zeros(1, 512))[0], net.embed_text.bias)


@pytest.mark.parametrize("bad, match", [
    (dict(arch="gru"), "unsupported arch 'gru'"),
    (dict(arch="transformer"), "unsupported arch"),
    (dict(dataset="amass"), "unknown dataset"),
    (dict(text_encoder_type="bert"), "needs arch 'trans_dec'"),
    (dict(text_encoder_type="bow"), "text_feature_dim"),
    (dict(context_len=20, pred_len=40), "prefix-completion"),
])
def test_args_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        MDMArgs(**bad)


def test_args_defaults_unknown_keys_and_round_trip(tmp_path):
    import json
    (tmp_path / "args.json").write_text(json.dumps({"arch": "trans_enc", "some_future_key": [1, 2], "lr": 1e-4}))
    args = MDMArgs.from_json(tmp_path / "args.json")
    assert args.layers == 8 and args.cond_mask_prob == 0.1 and args.diffusion_steps == 1000 and not args.use_ema
    assert args.extra == {"some_future_key": [1, 2], "lr": 1e-4}
    assert args.text_dim == 512 and args.feature_dim == 263
    args.to_json(tmp_path / "again.json")
    assert MDMArgs.from_json(tmp_path / "again.json") == args
    assert MDMArgs(text_encoder_type="bow", text_feature_dim=100).text_dim == 100
    assert MDMArgs(arch="trans_dec", text_encoder_type="bert").text_dim == 768
