"""Packed rows (mdm_adapter.packing): one network call on real tokens only, same x0 as padding."""
import pytest
import torch

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM
from mdm_adapter.packing import build_packing
from mdm_adapter.piece_denoiser import MDMPieceDenoiser
from mdm_adapter.schedules import DiscreteSchedule
from motion_collage.collage import CollageDenoiser
from motion_collage.graph import chain
from motion_collage.samplers import ddim_sigmas, prior_noise, sample_ddim
from motion_core.denoiser import PieceConditions
from tests.test_piece_denoiser import CountingNet, HashEncoder

TOLERANCE = 1e-5  # packed vs padded, float32 (measured about 2e-6)
ARCHS = {
    # the tiny model of tests/tiny_model.py (1 layer, latent 16, 2 heads)
    "tiny": MDMArgs(latent_dim=16, layers=1, ff_size=32, num_heads=2, diffusion_steps=100),
    # the release's layout (trans_enc, CLIP-sized text, 4 heads, post-norm GELU) at a small width
    "official-layout": MDMArgs(latent_dim=64, layers=3, ff_size=128, num_heads=4, diffusion_steps=1000),
}


def make(name: str, **kw) -> tuple[MDMPieceDenoiser, CountingNet]:
    args = ARCHS[name]
    torch.manual_seed(0)
    net = CountingNet(MDM.from_args(args).eval())
    sched = DiscreteSchedule.from_name("cosine", args.diffusion_steps)
    return MDMPieceDenoiser(net, HashEncoder(args.text_dim), sched, **kw), net


def pieces(lengths, L, seed=0, hole=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    if hole:
        mask[0, 2] = False  # a masked frame inside a piece: it keeps its neighbours' positions
    sigma = torch.logspace(-1.5, 1.7, len(lengths))
    x = torch.randn(len(lengths), L, 263, generator=g) * (1 + sigma[:, None, None]) * mask[..., None]
    return x, sigma, mask


def test_layout_counts_positions_and_slots():
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    p = build_packing(mask, "cpu")
    assert (p.rows, p.tokens, p.longest, p.lengths) == (3, 3 + 8, 5, (4, 2, 5))
    assert p.offsets.tolist() == [0, 4, 6, 11] and p.cond_token.tolist() == [0, 4, 6]
    assert p.position.tolist() == [0, 1, 2, 4, 0, 1, 0, 1, 2, 3, 4]  # 1 + frame index, 0 for the condition
    assert sorted(p.frame_token.tolist() + p.cond_token.tolist()) == list(range(11))
    # every token has one slot, and slot -> token -> slot is the identity
    assert torch.equal(p.slot_token.flatten()[p.token_slot], torch.arange(11))
    assert int(p.slot_valid.sum()) == 11


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("chunk", [None, 3])
@torch.no_grad()
def test_packed_equals_padded_with_guidance_and_masks(name, chunk):
    den, net = make(name, max_rows_per_call=chunk)
    x, sigma, mask = pieces([30, 12, 5, 30, 1], 30)
    cond = PieceConditions(("walk", None, "run", "walk", "jump"), torch.tensor([2.5, 1.0, 3.0, 1.0, 2.0]))
    den.packing = "off"
    padded = den(x, sigma, mask, cond)
    den.packing = "rows"
    packed = den(x, sigma, mask, cond)
    real = mask[..., None]
    assert float(((packed - padded) * real).abs().max()) < TOLERANCE
    assert torch.equal(packed * ~real, torch.zeros_like(packed))  # masked frames predict 0
    # 8 rows (5 pieces, 3 unconditional), one call (or chunks of 3 rows)
    assert net.batch_sizes[-(1 if chunk is None else 3):] == ([8] if chunk is None else [3, 3, 2])


@torch.no_grad()
def test_packed_call_runs_only_real_tokens():
    den, net = make("official-layout")
    seen = []
    net.net.seqTransEncoder.layers[0].linear1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    x, sigma, mask = pieces([30, 4, 4], 30, hole=False)
    den(x, sigma, mask, PieceConditions((None, None, None)))
    assert seen == [torch.Size([3 + 38, 64])]  # 3 condition tokens + 38 real frames, not 3 x 31


@torch.no_grad()
def test_trans_dec_and_unmasked_calls_stay_padded():
    args = MDMArgs(latent_dim=32, ff_size=64, layers=1, arch="trans_dec", diffusion_steps=100)
    net = MDM.from_args(args).eval()
    den = MDMPieceDenoiser(net, HashEncoder(512), DiscreteSchedule.from_name("cosine", 100))
    x, sigma, mask = pieces([8, 3], 8)
    assert not den._packs(mask) and den(x, sigma, mask, PieceConditions((None, None))).shape == x.shape
    with pytest.raises(ValueError, match="trans_enc"):
        net(x.permute(0, 2, 1)[:, :, None], torch.zeros(2, dtype=torch.long), torch.zeros(2, 512), None,
            build_packing(mask, "cpu"))
    with pytest.raises(ValueError, match="packing must be one of"):
        MDMPieceDenoiser(net, HashEncoder(512), DiscreteSchedule.from_name("cosine", 100), packing="jagged")


@torch.no_grad()
def test_collage_sample_packed_equals_padded():
    """A 3-segment collage (pieces of 3 lengths, overlaps of 6 frames), 4 DDIM steps, guidance 2.5."""
    den, net = make("official-layout")
    graph = chain([("walk", 40), ("run", 25), ("jump", 30)], overlap=6, max_frames=40)
    sigmas = ddim_sigmas(den.schedule, 4)
    noise = prior_noise((1, graph.num_frames, 263), float(sigmas[0]), torch.Generator().manual_seed(1))
    out = {}
    for mode in ("off", "rows"):
        den.packing = mode
        out[mode] = sample_ddim(CollageDenoiser(den, [graph], guidance=2.5), noise, sigmas)
    assert float((out["rows"] - out["off"]).abs().max()) < TOLERANCE


def test_nested_backend_on_cpu_is_a_one_line_error():
    with pytest.raises(ValueError, match="^the nested attention backend has no CPU kernel"):
        build_packing(torch.ones(2, 3, dtype=torch.bool), "cpu", attention="nested")
