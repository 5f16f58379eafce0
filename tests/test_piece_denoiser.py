"""MDMPieceDenoiser: sigma-space wrapping, guidance, one network call, batch independence."""
import zlib

import pytest
import torch

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM
from mdm_adapter.piece_denoiser import MDMPieceDenoiser
from mdm_adapter.schedules import DiscreteSchedule
from mdm_adapter.text_encoders import CachedEncoder
from motion_core.denoiser import PieceConditions

D = 263
BATCH_TOLERANCE = 1e-5  # batched vs alone (float32, tiny random model); measured about 1e-6


class HashEncoder(CachedEncoder):
    """Deterministic stand-in text encoder: a fixed random feature per prompt."""

    def __init__(self, dim: int = 512, tokens: bool = False) -> None:
        super().__init__()
        self.feature_dim, self.is_sequence = dim, tokens

    def _compute(self, prompts):
        out = []
        for p in prompts:
            g = torch.Generator().manual_seed(zlib.crc32(p.encode()))
            n = 2 + len(p.split()) if self.is_sequence else None
            out.append(torch.randn(n, self.feature_dim, generator=g) if n else torch.randn(self.feature_dim, generator=g))
        return out


class CountingNet(torch.nn.Module):
    """Records every forward call's batch size."""

    def __init__(self, net: MDM) -> None:
        super().__init__()
        self.net = net
        self.batch_sizes = []
        for name in ("feature_dim", "text_dim", "text_tokens", "max_timestep_rows", "arch"):
            setattr(self, name, getattr(net, name))

    def forward(self, *args):
        self.batch_sizes.append(args[0].shape[0])
        return self.net(*args)


def make(arch="trans_enc", tokens=False, steps=1000, **kw):
    args = MDMArgs(latent_dim=32, ff_size=64, layers=2, arch=arch, diffusion_steps=steps,
                   text_encoder_type="bert" if tokens else "clip")
    torch.manual_seed(0)
    net = CountingNet(MDM.from_args(args).eval())
    enc = HashEncoder(args.text_dim, tokens)
    sched = DiscreteSchedule.from_name("cosine", steps)
    return MDMPieceDenoiser(net, enc, sched, **kw), net


def inputs(P=4, L=12, seed=0, t=(0, 100, 500, 999)):
    g = torch.Generator().manual_seed(seed)
    sched = DiscreteSchedule.from_name("cosine", 1000)
    sigma = sched.t_to_sigma(torch.tensor(t[:P])).float()
    x = torch.randn(P, L, D, generator=g) * (1 + sigma[:, None, None])
    return x, sigma, torch.ones(P, L, dtype=torch.bool)


def direct(den, x, sigma, text, mask=None):
    """The network called by hand in VP space: reference for the wrapper."""
    t = den.schedule.sigma_to_t(sigma)
    c_in = (1 + sigma.double() ** 2).rsqrt().float()  # x_vp = x * sqrt(abar) = x / sqrt(1 + sigma^2)
    x_vp = (x * c_in[:, None, None]).permute(0, 2, 1)[:, :, None, :]
    return den.network.net(x_vp, t, text, mask)[:, :, 0, :].permute(0, 2, 1)


@torch.no_grad()
def test_guided_prediction_matches_formula():
    den, _ = make()
    x, sigma, mask = inputs(P=1)
    out = den(x, sigma, mask, PieceConditions(("a person walks",)))
    feat = den.text_encoder.encode(["a person walks"])
    both = direct(den, torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([feat, torch.zeros_like(feat)]))
    c, u = both[:1], both[1:]
    torch.testing.assert_close(out, u + 2.5 * (c - u), atol=0, rtol=0)


@torch.no_grad()
def test_guidance_one_is_conditional_and_zero_unconditional():
    den, net = make()
    x, sigma, mask = inputs()
    prompts = ("walk", "jump", "sit down", "walk")
    feats = den.text_encoder.encode(list(prompts))
    out1 = den(x, sigma, mask, PieceConditions(prompts, torch.ones(4)))
    assert net.batch_sizes[-1] == 4  # no unconditional rows needed at scale 1
    torch.testing.assert_close(out1, direct(den, x, sigma, feats), atol=0, rtol=0)
    out0 = den(x, sigma, mask, PieceConditions(prompts, torch.zeros(4)))
    torch.testing.assert_close(out0, direct(den, x, sigma, torch.zeros_like(feats)), atol=BATCH_TOLERANCE, rtol=0)


@pytest.mark.parametrize("prompts, guidance, rows", [
    ((None, None, None), None, 3),                        # null pieces run once
    (("walk", "jump", "walk"), None, 6),                  # each prompted piece gets an uncond row
    (("walk", None, "run"), None, 5),
    (("walk", None, "run"), torch.tensor([1.0, 3.0, 2.0]), 4),  # scale 1 needs no uncond row
])
@torch.no_grad()
def test_one_network_call_per_denoiser_call(prompts, guidance, rows):
    den, net = make()
    x, sigma, mask = inputs(P=3)
    den(x, sigma, mask, PieceConditions(prompts, guidance))
    assert net.batch_sizes == [rows] and den.network_calls == 1


@torch.no_grad()
def test_null_piece_is_unconditional_prediction():
    den, _ = make()
    x, sigma, mask = inputs(P=2)
    out = den(x, sigma, mask, PieceConditions((None, "walk")))
    ref = direct(den, x[:1], sigma[:1], torch.zeros(1, 512))
    torch.testing.assert_close(out[:1], ref, atol=BATCH_TOLERANCE, rtol=0)


@pytest.mark.parametrize("arch, tokens", [("trans_enc", False), ("trans_dec", False), ("trans_dec", True)])
@torch.no_grad()
def test_piece_prediction_does_not_depend_on_batch(arch, tokens):
    den, _ = make(arch, tokens)
    lengths = [12, 7, 9, 4]
    x, sigma, _ = inputs(P=4, L=12, seed=3)
    mask = torch.arange(12)[None, :] < torch.tensor(lengths)[:, None]
    x = x * mask[:, :, None]  # zero padding
    prompts = ("a person walks forward", None, "jumps", "a person walks forward")
    batched = den(x, sigma, mask, PieceConditions(prompts, torch.tensor([2.5, 1.0, 4.0, 0.5])))
    worst = 0.0
    for i, n in enumerate(lengths):
        alone = den(x[i:i + 1, :n], sigma[i:i + 1], mask[i:i + 1, :n],
                    PieceConditions(prompts[i:i + 1], torch.tensor([[2.5, 1.0, 4.0, 0.5][i]])))
        worst = max(worst, float((batched[i, :n] - alone[0]).abs().max()))
    assert worst < BATCH_TOLERANCE, worst


@torch.no_grad()
def test_each_distinct_prompt_encoded_once_and_inputs_untouched():
    den, _ = make()
    x, sigma, mask = inputs()
    guidance = torch.tensor([1.0, 2.0, 3.0, 4.0])
    copies = [t.clone() for t in (x, sigma, mask, guidance)]
    cond = PieceConditions(("walk", "walk", None, "run"), guidance)
    for _ in range(3):
        den(x, sigma, mask, cond)
    assert den.text_encoder.prompts_computed == 2 and den.text_encoder.tower_calls == 1
    for a, b in zip((x, sigma, mask, guidance), copies):
        assert torch.equal(a, b)


@torch.no_grad()
def test_sigma_rounding_and_range():
    den, _ = make(steps=50)
    s = den.sigmas
    assert den.sigma_min == float(s[0]) and den.sigma_max == float(s[-1])
    off = s[[3, 30]] * torch.tensor([1.01, 0.99], dtype=torch.float64)
    assert torch.equal(den.round_sigma(off), s[[3, 30]])


@torch.no_grad()
def test_model_without_text_dropout_ignores_guidance():
    den, net = make(supports_guidance=False, guidance_scale=2.5)
    x, sigma, mask = inputs(P=2)
    feats = den.text_encoder.encode(["walk"])
    out = den(x, sigma, mask, PieceConditions(("walk", "walk"), torch.tensor([3.0, 0.0])))
    assert net.batch_sizes == [2] and den.guidance_scale == 1.0
    torch.testing.assert_close(out, direct(den, x, sigma, feats.expand(2, -1)), atol=0, rtol=0)


@pytest.mark.parametrize("change, match", [
    (lambda x, s, m, c: (x[..., :10], s, m, c), "features per frame"),
    (lambda x, s, m, c: (x, s[:1], m, c), "sigma must have shape"),
    (lambda x, s, m, c: (x, s, m[:, :3], c), "mask must have shape"),
    (lambda x, s, m, c: (x, s, m, PieceConditions(("a",))), "cond has 1 entries for 2 pieces"),
    (lambda x, s, m, c: (x, s, torch.zeros_like(m), c), "piece 0 has no real frame"),
])
def test_errors(change, match):
    den, _ = make()
    x, sigma, mask = inputs(P=2)
    with pytest.raises(ValueError, match=match):
        den(*change(x, sigma, mask, PieceConditions(("a", None))))


# ------------------------------------------------------------------ the CUDA-graph path (emulated on CPU)

def graphed(**kw):
    from mdm_adapter.graphs import EmulatedGraphs

    den, net = make(**kw)
    den.cuda_graph, den.graph_backend = True, EmulatedGraphs()
    return den, net


@torch.no_grad()
def test_graph_path_equals_eager_with_static_buffers():
    den, net = graphed()
    x, sigma, _ = inputs(P=4, L=12)
    mask = torch.arange(12)[None, :] < torch.tensor([12, 7, 3, 12])[:, None]
    cond = PieceConditions(("walk", None, "run", "walk"), torch.tensor([2.5, 1.0, 3.0, 1.0]))
    eager = [den._eager(x * s, sigma * s, mask, cond) for s in (1.0, 0.5, 0.25)]
    outs = [den(x * s, sigma * s, mask, cond) for s in (1.0, 0.5, 0.25)]  # 1st eager + capture, then replays
    for a, b in zip(outs, eager):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    (entry,) = den._graphs._graphs.values()
    pointers = (entry.x.data_ptr(), entry.sigma.data_ptr(), entry.out.data_ptr())
    out = den(x, sigma, mask, cond)
    assert (entry.x.data_ptr(), entry.sigma.data_ptr(), entry.out.data_ptr()) == pointers  # static buffers
    assert out.data_ptr() != entry.out.data_ptr()  # the caller gets a copy, not the buffer a replay overwrites
    assert den.graph_backend.captures == 1 and den.graph_backend.replays == 3
    assert den.network_calls == 3 + 4  # eager calls above, then one network call per denoiser call
    den(x, sigma, mask.clone(), cond)  # a new tensor with the same values: the same graph
    assert den.graph_backend.captures == 1 and den.graph_backend.replays == 4
    den(x, sigma, mask & (torch.arange(12) < 11), cond)  # other values: a new graph
    assert den.graph_backend.captures == 2


@torch.no_grad()
def test_captured_step_reads_nothing_from_the_host():
    from mdm_adapter.graphs import HostReadGuard

    den, _ = graphed()
    x, sigma, mask = inputs(P=2)
    cond = PieceConditions(("walk", None))
    den(x, sigma, mask, cond)  # captured under the guard: no host read in the step
    with pytest.raises(RuntimeError, match="host read in a captured step: torch item"):
        with HostReadGuard():
            sigma.sum().item()
    with pytest.raises(RuntimeError, match="host read"):
        with HostReadGuard():
            torch.tensor([1.0])


def test_cuda_graph_on_cpu_is_a_one_line_error():
    den, _ = make(cuda_graph=True)
    x, sigma, mask = inputs(P=2)
    with pytest.raises(ValueError, match=r"^cuda_graph needs a CUDA device; the inputs are on cpu$"):
        den(x, sigma, mask, PieceConditions(("walk", None)))


def test_sample_cuda_graph_on_cpu_is_a_one_line_usage_error(tmp_path, capsys):
    from motion_collage import sample

    code = sample.main(["--prompts", "a person walks forward", "--cuda_graph", "--device", "cpu",
                        "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: --cuda_graph needs a CUDA device; --device cpu resolved to cpu\n"
    assert not (tmp_path / "out").exists()
