"""The collage denoiser, checked on a Gaussian AR model whose exact answers are known."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from motion_collage.analytic import GaussianPieceDenoiser, ar_autocovariance, toeplitz_covariance
from motion_collage.collage import CollageDenoiser, LayoutDenoiser
from motion_collage.denoiser import CallCounter, PieceConditions, as_sequence_denoiser
from motion_collage.graph import FactorGraph, MergeRule, Node, chain, cycle, merge_plan
from motion_collage.ops import build_layout, build_weighted_layout, gather_pieces, merge_pieces
from motion_collage.samplers import karras_sigmas, sample_ddim


pytestmark = pytest.mark.usefixtures("float64")


def window_graph(num_frames: int, window: int, overlap: int) -> FactorGraph:
    """Equal windows with a stride of window - overlap; the overlaps are null variable nodes."""
    starts = range(0, num_frames - window + 1, window - overlap)
    factors = tuple(Node(s, window, "p") for s in starts)
    variables = tuple(Node(s + window - overlap, overlap, None) for s in list(starts)[:-1])
    return FactorGraph(num_frames, factors, variables)


@pytest.fixture(scope="module")
def ar1():
    gamma = ar_autocovariance([0.9], 256)
    return gamma, GaussianPieceDenoiser(gamma)


def test_ar1_autocovariance_is_geometric():
    np.testing.assert_allclose(ar_autocovariance([0.9], 10), 0.9 ** np.arange(10), rtol=1e-10)


@pytest.mark.parametrize("segments, overlap", [
    ([("a", 30), ("b", 30)], 4),                  # equal pieces
    ([("a", 17), ("b", 41), ("c", 9), ("d", 23)], 6),  # unequal pieces
])
def test_collage_score_converges_to_exact_clean_score(ar1, segments, overlap):
    """(a): (x0_collage - x) / sigma^2 -> -Sigma^-1 x as sigma -> 0, relative error ~ sigma^2."""
    gamma, den = ar1
    g = chain(segments, overlap=overlap, max_frames=256)
    T = g.num_frames
    Sigma = toeplitz_covariance(gamma, T)
    x = torch.from_numpy(np.linalg.cholesky(Sigma) @ np.random.default_rng(0).standard_normal(T))[None, :, None]
    exact = -np.linalg.solve(Sigma, x[0, :, 0].numpy())
    collage = CollageDenoiser(den, [g])
    errors = []
    for sigma in (1e-1, 1e-2, 1e-3):
        x0 = collage(x, torch.tensor([sigma]))
        score = ((x0 - x) / sigma ** 2)[0, :, 0].numpy()
        errors.append(np.linalg.norm(score - exact) / np.linalg.norm(exact))
    assert errors[-1] < 1e-4
    # falls like sigma^2: two decades of sigma give about four decades of error
    assert errors[0] / errors[1] > 50 and errors[1] / errors[2] > 50


def _propagated_covariance(make_denoiser, num_frames, sigmas, init_cov):
    """Exact output covariance of deterministic sampling with a linear denoiser.

    Sampling is a linear map M of the initial sample; running the sampler on the identity
    (one basis vector per batch row) yields M's columns. Output covariance = M C0 M^T.
    """
    basis = torch.eye(num_frames)[:, :, None]
    out = sample_ddim(make_denoiser(num_frames), basis, sigmas)
    M = out[:, :, 0].T.numpy()
    return M @ init_cov @ M.T


def _lag_correlation(C, lag):
    i = np.arange(C.shape[0] - lag)
    return float(np.mean(C[i, i + lag] / np.sqrt(C[i, i] * C[i + lag, i + lag])))


def test_sampled_covariance_collage_vs_averaging(ar1):
    """(b): AR(1) 0.9, 64 frames, windows 16 overlapping by 8, 200 DDIM steps on EDM sigmas."""
    gamma, den = ar1
    T = 64
    Sigma = toeplitz_covariance(gamma, T)
    sigmas = karras_sigmas(200, 0.002, 80.0)
    init = Sigma + 80.0 ** 2 * np.eye(T)
    g = window_graph(T, 16, 8)
    covs = {
        "exact": _propagated_covariance(lambda B: as_sequence_denoiser(den, [None] * B), T, sigmas, init),
        "collage": _propagated_covariance(lambda B: CollageDenoiser(den, [g] * B), T, sigmas, init),
        "average": _propagated_covariance(lambda B: CollageDenoiser(den, [g] * B, include_variables=False), T, sigmas, init),
    }
    err = {k: np.abs(C - Sigma).max() for k, C in covs.items()}
    lag8 = {k: _lag_correlation(C, 8) for k, C in covs.items()}
    print("\nmax |cov - true|:", {k: round(v, 3) for k, v in err.items()},
          "lag-8 corr:", {k: round(v, 3) for k, v in lag8.items()}, "true", round(0.9 ** 8, 3))
    assert err["exact"] < 0.04            # discretisation only (measured 0.024)
    assert err["collage"] < 0.15          # measured 0.093
    assert err["collage"] * 3 < err["average"]  # measured 0.388
    assert abs(lag8["collage"] - 0.9 ** 8) < 0.04 and lag8["average"] < 0.3


def test_cycle_is_shift_equivariant_by_piece_spacing(ar1):
    """(c): evenly spaced identical pieces on a loop: rolling the input rolls the output, seam included."""
    _, den = ar1
    g = cycle([("walk", 16)] * 4, overlap=6, max_frames=64)
    collage = CollageDenoiser(den, [g])
    x = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.7])
    y = collage(x, sigma)
    for shift in (16, 32, 48, -16):
        torch.testing.assert_close(collage(x.roll(shift, 1), sigma), y.roll(shift, 1), rtol=1e-10, atol=1e-12)


def test_dense_cycle_is_equivariant_to_every_shift(ar1):
    """(c'): with a factor at every frame of the loop, equivariance holds for any shift."""
    _, den = ar1
    T, L = 24, 6
    factors = tuple(Node(s, L, "p") for s in range(T))
    variables = tuple(Node(s + 1, L - 1, None) for s in range(T))
    collage = CollageDenoiser(den, [FactorGraph(T, factors, variables, loop=True)])
    x = torch.randn(1, T, 1, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.5])
    y = collage(x, sigma)
    for shift in range(1, T):
        torch.testing.assert_close(collage(x.roll(shift, 1), sigma), y.roll(shift, 1), rtol=1e-10, atol=1e-12)


def test_one_piece_denoiser_call_per_step_whatever_the_pieces(ar1):
    """(d): a batch of graphs with 2 and 9 pieces: one piece-denoiser call per sampler step."""
    _, den = ar1
    counter = CallCounter(den)
    graphs = [chain([("a", 30), ("b", 30)], 8, 64), chain([("a", 20)] * 5, 8, 64)]
    collage = CollageDenoiser(counter, graphs, guidance=[2.5, 1.0])
    T = collage.num_frames
    sample_ddim(collage, torch.randn(2, T, 3), karras_sigmas(7, 0.01, 10.0))
    assert counter.calls == 7
    assert counter.pieces == 7 * (3 + 9)  # (2 factors + 1 variable) + (5 factors + 4 variables)


def test_one_piece_collage_equals_plain_denoiser(ar1):
    _, den = ar1
    x = torch.randn(2, 40, 3)
    sigma = torch.tensor([0.3, 2.0])
    graph = FactorGraph(40, (Node(0, 40, "p"),))
    torch.testing.assert_close(CollageDenoiser(den, [graph] * 2)(x, sigma),
                               as_sequence_denoiser(den, ["p", "p"])(x, sigma))


def test_merge_of_identical_pieces_is_identity():
    """If every piece predicts the sequence itself, the signed merge returns it (weights sum to 1)."""
    graphs = [cycle([("a", 20), ("b", 13)], 6, 64), chain([("a", 9), ("b", 30), ("c", 11)], 4, 64)]
    layout = build_layout(graphs)
    x = torch.randn(2, 50, 5)
    x[0, 33:] = 0  # padding of the shorter sequence
    torch.testing.assert_close(merge_pieces(gather_pieces(x, layout), layout), x)


def test_signed_merge_weights_follow_degrees():
    """A frame in an overlap gets piece_a + piece_b - variable."""
    g = chain([("a", 10), ("b", 10)], overlap=4, max_frames=64)
    layout = build_layout([g])
    pieces = torch.zeros(layout.num_pieces, layout.mask.shape[1], 1)
    values = {"a": 1.0, "b": 10.0, None: 100.0}
    for p, prompt in enumerate(layout.prompts):
        pieces[p] = values[prompt]
    merged = merge_pieces(pieces, layout)[0, :, 0]
    assert merged[:8].eq(1).all() and merged[12:].eq(10).all()
    assert merged[8:12].eq(1 + 10 - 100).all()


def test_guidance_and_prompts_reach_the_piece_denoiser():
    seen = {}

    def spy(x, sigma, mask, cond: PieceConditions):
        seen["prompts"], seen["guidance"] = cond.prompts, cond.guidance
        return x

    g = chain([("walk", 20), ("run", 20)], overlap=4, max_frames=64)
    CollageDenoiser(spy, [g, g], guidance=[2.0, 3.0])(torch.zeros(2, 40, 1), torch.ones(2))
    assert seen["prompts"] == ("walk", "run", None, "walk", "run", None)
    assert seen["guidance"].tolist() == [2.0, 2.0, 2.0, 3.0, 3.0, 3.0]


def test_collage_does_not_mutate_inputs(ar1):
    _, den = ar1
    g = chain([("a", 20), ("b", 20)], 6, 64)
    x = torch.randn(1, 40, 2)
    x_copy = x.clone()
    CollageDenoiser(den, [g])(x, torch.tensor([1.0]))
    torch.testing.assert_close(x, x_copy, rtol=0, atol=0)


def test_one_segment_chain_that_fits_is_plain_sampling(ar1):
    """A segment that fits the window is one piece: the collage is the plain sampler, bit for bit."""
    _, den = ar1
    g = chain([("walk", 60)], overlap=8, max_frames=64)
    x = torch.randn(1, 60, 2, generator=torch.Generator().manual_seed(4))
    sigmas = karras_sigmas(12, 0.01, 10.0)
    plain = sample_ddim(as_sequence_denoiser(den, ["walk"]), x, sigmas)
    torch.testing.assert_close(sample_ddim(CollageDenoiser(den, [g]), x, sigmas), plain, rtol=0, atol=0)


def test_one_segment_collage_equals_plain_sampling_with_mdm(tmp_path):
    """Through the pipeline with a (tiny) MDM: collage of one 150-frame prompt == naive sampling."""
    import mdm_adapter
    from motion_collage.pipeline import generate_motions
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_model import build_tiny_model

    torch.set_default_dtype(torch.float32)  # the float64 fixture restores its own default afterwards
    model = mdm_adapter.load(build_tiny_model(tmp_path / "tiny"))
    rows = [[("a person walks forward", 150)]]
    out = {m: generate_motions(model, rows, method=m, steps=5, seed=3) for m in ("collage", "naive")}
    np.testing.assert_array_equal(out["collage"].features, out["naive"].features)
    assert out["collage"].generation.frame_evaluations == 5 * 150  # one piece, no overlap


@pytest.mark.parametrize("rule", [MergeRule("taper", taper=5), MergeRule("harmonise", window=24, plateau=8)])
def test_every_merge_rule_is_the_identity_on_identical_pieces(ar1, rule):
    """Weights sum to 1 on every frame, so pieces that all predict the sequence return it."""
    graphs = [cycle([("a", 20), ("b", 13)], 6, 64), chain([("a", 9), ("b", 30), ("c", 11)], 4, 64)]
    layout = build_weighted_layout([(g.num_frames, merge_plan(g, rule, 64)) for g in graphs])
    x = torch.randn(2, 50, 5)
    x[0, 33:] = 0
    torch.testing.assert_close(merge_pieces(gather_pieces(x, layout), layout), x)


def test_harmonised_collage_still_makes_one_call_per_step(ar1):
    _, den = ar1
    counter = CallCounter(den)
    graphs = [chain([("a", 30), ("b", 30)], 8, 64), chain([("a", 20)] * 5, 8, 64)]
    collage = CollageDenoiser(counter, graphs, merge=MergeRule("harmonise", window=20, plateau=8), max_frames=64)
    sample_ddim(collage, torch.randn(2, collage.num_frames, 3), karras_sigmas(7, 0.01, 10.0))
    assert counter.calls == 7
    assert counter.pieces == 7 * ((2 + 1) + (5 + 4))  # each covered variable node replaced by its window


def test_exact_merge_rule_is_the_signed_merge(ar1):
    _, den = ar1
    g = cycle([("a", 20), ("b", 28)], 6, 64)
    x, sigma = torch.randn(1, 48, 2), torch.tensor([0.4])
    plan = merge_plan(g, MergeRule(), 64)
    weighted = LayoutDenoiser(den, build_weighted_layout([(g.num_frames, plan)]))
    torch.testing.assert_close(weighted(x, sigma), CollageDenoiser(den, [g])(x, sigma), rtol=0, atol=1e-12)


def test_max_piece_frames_of_args_json_sets_the_window_of_every_graph(tmp_path):
    import json

    import mdm_adapter
    from motion_collage.pipeline import generate_motions
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_model import build_tiny_model

    torch.set_default_dtype(torch.float32)
    path = build_tiny_model(tmp_path / "tiny")
    args_file = path.parent / "args.json"
    values = json.loads(args_file.read_text())
    assert mdm_adapter.load(path).max_frames == 196  # no key: the dataset's maximum
    args_file.write_text(json.dumps({**values, "max_piece_frames": 100}))
    model = mdm_adapter.load(path)
    assert model.max_frames == model.spec.max_frames == model.max_piece_frames == 100
    out = generate_motions(model, [[("a person walks forward", 150)]], steps=2, seed=0)
    graph = out.generation.graphs[0]
    assert graph.max_piece <= 100 and len(graph.factors) == 2
    for bad in (0, 197, 1.5, True):
        args_file.write_text(json.dumps({**values, "max_piece_frames": bad}))
        with pytest.raises(ValueError, match="max_piece_frames") as info:
            mdm_adapter.load(path)
        assert "\n" not in str(info.value)


def test_analytic_baselines_cli_reports_the_exact_merge_beside_the_default(capsys):
    from eval import analytic_baselines as A
    from motion_collage.methods.collage import CollageOptions

    assert A.main(["--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --steps must be >= 1, got 0\n"
    if CollageOptions.merge != "exact":
        assert "collage[exact]" in A.METHOD_OPTIONS and A.METHOD_OPTIONS["collage[exact]"]["merge"] == "exact"
