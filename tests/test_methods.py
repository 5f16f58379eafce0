"""Long-motion methods: the collage and the baselines, on the analytic Gaussian model."""
import pytest
import torch

from eval.analytic_baselines import run_study
from motion_collage.analytic import GaussianPieceDenoiser, ar_autocovariance
from motion_collage.collage import CollageDenoiser
from motion_collage.denoiser import as_sequence_denoiser
from motion_collage.methods import (METHODS, Frames, SamplingSetup, autoregressive_windows, generate_average,
                                    generate_collage, generate_doubletake, generate_independent,
                                    generate_naive, generate_reconstruction, generate_replacement,
                                    get_method, timeline_graphs)
from motion_collage.methods.autoregressive import segment_windows, window_plan
from motion_collage.samplers import karras_sigmas, sample_ddim

DEN = GaussianPieceDenoiser(ar_autocovariance([0.9], 256))
SETUP = SamplingSetup(sample_ddim, karras_sigmas(12, 0.01, 20.0))

pytestmark = pytest.mark.usefixtures("float64")


def noise_for(rows, channels=3, seed=0):
    T = max(sum(f for _, f in r) for r in rows)
    return torch.randn(len(rows), T, channels, generator=torch.Generator().manual_seed(seed)) * 20


@pytest.mark.parametrize("plan, prefix", [("sliding", [("a", 30), ("b", 2)]), ("segments", [("a", 30), ("b", 30)])])
def test_replacement_never_changes_already_generated_frames(plan, prefix):
    rows = [[("a", 30), ("b", 30), ("c", 30)]]
    noise = noise_for(rows)
    n = sum(f for _, f in prefix)
    full = generate_replacement(DEN, rows, noise, SETUP, max_frames=32, plan=plan)
    first = generate_replacement(DEN, [prefix], noise[:, :n], SETUP, max_frames=32, plan=plan)
    torch.testing.assert_close(full.motion[:, :n], first.motion, rtol=0, atol=0)


def test_segment_windows_follow_the_prompts_and_auto_picks_by_prompt_count():
    graphs = timeline_graphs([[("walk", 80), ("wave", 60), ("run", 120)]], max_frames=10 ** 9)
    wins = segment_windows(graphs, 196, 0.5)[0]
    assert [(w.start, w.length, w.known, w.prompt) for w in wins] == [
        (0, 80, 0, "walk"), (0, 140, 80, "wave"), (42, 196, 98, "run"), (140, 120, 98, "run")]
    assert all(w.length <= 196 for w in wins)
    assert window_plan(graphs, 196, 0.5, "auto") == [wins]
    single = timeline_graphs([[("walk", 240), ("walk", 240)]], max_frames=10 ** 9)
    assert window_plan(single, 196, 0.5, "auto") == autoregressive_windows(single, 196, 0.5)


@pytest.mark.parametrize("plan", ["sliding", "segments"])
def test_replacement_window_sees_known_frames_as_its_x0(plan):
    rows = [[("a", 40), ("b", 40)]]
    seen = []
    setup = SamplingSetup(sample_ddim, SETUP.sigmas, {"callback": lambda i, s, x, x0: seen.append(x0.clone())})
    out = generate_replacement(DEN, rows, noise_for(rows), setup, max_frames=32, plan=plan)
    windows = window_plan(out.graphs, 32, 0.5, plan)[0]
    second = windows[1]
    x0_second = seen[len(SETUP.sigmas) - 1]  # first step of the second window
    torch.testing.assert_close(x0_second[0, :second.known], out.motion[0, second.start:second.start + second.known])


@pytest.mark.parametrize("plan", ["sliding", "segments"])
def test_reconstruction_with_weight_zero_is_independent_windows(plan):
    rows = [[("a", 40), ("b", 40)]]
    noise = noise_for(rows)
    out = generate_reconstruction(DEN, rows, noise, SETUP, max_frames=32, weight=0.0, plan=plan)
    expected = torch.zeros_like(noise)
    for w in window_plan(out.graphs, 32, 0.5, plan)[0]:
        alone = SETUP.run(as_sequence_denoiser(DEN, [w.prompt]), noise[:, w.start:w.start + w.length])
        expected[:, w.start + w.known:w.start + w.length] = alone[:, w.known:]
    torch.testing.assert_close(out.motion, expected)


def test_reconstruction_guidance_pulls_towards_known_frames():
    """A positive weight moves each window's prediction of its known frames towards them."""
    rows = [[("a", 40), ("b", 40)]]
    noise = noise_for(rows)
    plain = generate_reconstruction(DEN, rows, noise, SETUP, max_frames=32, weight=0.0, plan="sliding")
    guided = generate_reconstruction(DEN, rows, noise, SETUP, max_frames=32, weight=1.0, plan="sliding")
    torch.testing.assert_close(plain.motion[:, :32], guided.motion[:, :32])  # first window unguided
    assert not torch.allclose(plain.motion[:, 32:], guided.motion[:, 32:])


def test_average_equals_per_frame_mean_of_factor_predictions():
    rows = [[("a", 30), ("b", 20), ("c", 30)]]
    graphs = timeline_graphs(rows, 64, overlap=10)
    x = noise_for(rows)
    sigma = torch.tensor([1.5])
    got = CollageDenoiser(DEN, graphs, include_variables=False)(x, sigma)
    total, count = torch.zeros_like(x), torch.zeros(x.shape[1])
    for f in graphs[0].factors:
        frames = torch.as_tensor(f.frames(graphs[0].num_frames))
        piece = DEN(x[:, frames], sigma, torch.ones(1, len(frames), dtype=torch.bool), None)
        total[:, frames] += piece
        count[frames] += 1
    torch.testing.assert_close(got, total / count[None, :, None])
    # and generate_average samples with exactly that denoiser
    via_method = generate_average(DEN, rows, x, SETUP, max_frames=64, overlap=10)
    torch.testing.assert_close(via_method.motion, SETUP.run(CollageDenoiser(DEN, graphs, include_variables=False), x))


def test_doubletake_without_handshake_or_second_take_is_independent():
    rows = [[("a", 30), ("b", 20)], [("c", 25), ("d", 25)]]
    noise = noise_for(rows)
    dt = generate_doubletake(DEN, rows, noise, SETUP, max_frames=64, handshake=0, blend=0, second_take=False)
    ind = generate_independent(DEN, rows, noise, SETUP, max_frames=64)
    torch.testing.assert_close(dt.motion, ind.motion)


def test_doubletake_second_take_changes_only_frames_near_boundaries():
    rows = [[("a", 60), ("b", 60)]]
    noise = noise_for(rows)
    one = generate_doubletake(DEN, rows, noise, SETUP, max_frames=96, handshake=10, blend=5, second_take=False)
    two = generate_doubletake(DEN, rows, noise, SETUP, max_frames=96, handshake=10, blend=5)
    changed = (one.motion - two.motion).abs().amax(dim=(0, 2)) > 1e-12
    assert changed.nonzero().min() >= 60 - 10 and changed.nonzero().max() < 60 + 10
    assert two.sequential_calls == len(SETUP.sigmas) - 1 + (len(SETUP.sigmas) - 1 - round(0.5 * (len(SETUP.sigmas) - 1)))


def test_naive_within_the_window_equals_plain_sampling():
    rows = [[("walk", 50)]]
    noise = noise_for(rows)
    out = generate_naive(DEN, rows, noise, SETUP, max_frames=64)
    torch.testing.assert_close(out.motion, SETUP.run(as_sequence_denoiser(DEN, ["walk"]), noise))


def test_collage_is_closest_to_the_exact_reference():
    stats = run_study(channels=0, steps=30)
    err = {k: v["boundary_cov_error"] for k, v in stats.items()}
    # The reference (naive: one window over everything) is not the truth by decree: its error
    # against the true AR(1) covariance is the sampler's discretisation, which shrinks with steps.
    finer = run_study(channels=0, steps=100)["naive"]["true_boundary_cov_error"]
    assert 0 < finer < 0.05 < stats["naive"]["true_boundary_cov_error"]
    exact = err["collage[exact]"]  # DiffCollage's signed merge: the factorisation is exact here
    assert exact < err["average"] and exact < err["independent"]
    assert exact < err["replacement"] and exact < err["reconstruction"]
    # the default cross-fade is MultiDiffusion with ramps: no better than the plain average here,
    # which is why analytic_baselines prints it next to the exact merge
    assert err["collage"] > exact


@pytest.mark.parametrize("n_segments", [2, 4, 8])
def test_sequential_calls_parallel_vs_autoregressive(n_segments):
    rows = [[("a", 24)] * n_segments]
    noise = noise_for(rows)
    steps = len(SETUP.sigmas) - 1
    for name in ("collage", "average", "independent", "naive"):
        opts = {"overlap": Frames(8)} if name in ("collage", "average") else {}
        assert METHODS[name](DEN, rows, noise, SETUP, max_frames=32, fps=20, options=opts).sequential_calls == steps
    for name in ("replacement", "reconstruction"):
        out = METHODS[name](DEN, rows, noise, SETUP, max_frames=32, fps=20, options={"window": Frames(24)})
        windows = 1 + -(-(24 * n_segments - 24) // 12)
        assert out.sequential_calls == steps * windows


def test_methods_support_batches_of_different_lengths():
    rows = [[("a", 30), ("b", 30)], [("c", 20), ("d", 25), ("e", 20)]]
    noise = noise_for(rows)
    for name in METHODS:
        opts = {"collage": {"overlap": "6f"}, "average": {"overlap": "6f"}, "doubletake": {"overlap": "6f", "blend": "3f"}}
        out = get_method(name)(DEN, rows, noise, SETUP, max_frames=40, fps=20, options=opts.get(name))
        assert out.motion.shape == noise.shape and out.num_frames == [60, 65]
        assert torch.isfinite(out.motion).all()


def test_loops_are_refused_by_methods_that_cannot_make_them():
    rows = [[("a", 30), ("b", 30)]]
    for name in ("naive", "independent", "replacement", "reconstruction"):
        assert not get_method(name).loops
        with pytest.raises(ValueError, match="loop"):
            get_method(name)(DEN, rows, noise_for(rows), SETUP, max_frames=40, fps=20, loop=True)
        with pytest.raises(ValueError, match="loop"):  # the function itself refuses too
            get_method(name).generate(DEN, rows, noise_for(rows), SETUP, max_frames=40, loop=True)
    with pytest.raises(ValueError, match="unknown method"):
        get_method("flowmdm")


def test_doubletake_second_take_noise_is_per_row_and_never_global():
    rows = [[("a", 40), ("b", 40)], [("c", 40), ("d", 40)]]
    noise = noise_for(rows)
    gens = lambda: [torch.Generator().manual_seed(100 + r) for r in range(2)]  # noqa: E731
    both = generate_doubletake(DEN, rows, noise, SETUP, max_frames=64, handshake=8, blend=4, generators=gens())
    torch.manual_seed(123)  # the global generator must not matter
    alone = generate_doubletake(DEN, rows[1:], noise[1:], SETUP, max_frames=64, handshake=8, blend=4,
                                generators=gens()[1:])
    torch.testing.assert_close(both.motion[1:], alone.motion)
    torch.manual_seed(0)
    a = generate_doubletake(DEN, rows, noise, SETUP, max_frames=64, handshake=8, blend=4)
    torch.manual_seed(1)
    b = generate_doubletake(DEN, rows, noise, SETUP, max_frames=64, handshake=8, blend=4)
    torch.testing.assert_close(a.motion, b.motion, rtol=0, atol=0)


def test_doubletake_second_take_with_eta_draws_step_noise_per_window_from_its_row():
    # more boundary windows (4) than rows (2): the second take's per-step noise must be drawn per
    # window, from the window's row generator, so that a row's result does not depend on its batch
    from motion_collage.pipeline import row_noise_fn
    rows = [[("a", 30), ("b", 30), ("c", 30)], [("d", 30), ("e", 30), ("f", 30)]]
    noise = noise_for(rows)

    def run(r):
        gens = [torch.Generator().manual_seed(100 + i) for i in r]
        setup = SamplingSetup(sample_ddim, SETUP.sigmas, {"eta": 1.0, "noise": row_noise_fn(gens)})
        return generate_doubletake(DEN, [rows[i] for i in r], noise[list(r)], setup, max_frames=64, handshake=8,
                                   blend=4, generators=gens).motion

    both, alone = run([0, 1]), run([1])
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=0)
    assert not torch.equal(both[1:], run([0]))  # rows differ (their own noise), so the check has teeth


def test_options_are_in_seconds_by_default_and_frames_on_request():
    spec = get_method("doubletake")
    at20 = spec.make_options().frame_kwargs(20.0)
    assert (at20["handshake"], at20["blend"]) == (20, 10)  # PriorMDM's HumanML3D defaults
    assert spec.make_options().frame_kwargs(12.5)["handshake"] == 12  # 1 s at KIT's frame rate (rounded)
    assert spec.make_options({"overlap": "30f"}).frame_kwargs(12.5)["handshake"] == 30
    assert get_method("collage").make_options({"overlap": "1.5s"}).frame_kwargs(20.0)["overlap"] == 30
    with pytest.raises(ValueError, match="no option 'handshake'"):
        spec.make_options({"handshake": 20})
    with pytest.raises(ValueError, match="finite"):
        get_method("collage").make_options({"overlap": float("nan")})


def test_a_method_called_through_its_spec_equals_the_function_with_frames():
    rows = [[("a", 30), ("b", 30)]]
    noise = noise_for(rows)
    via_spec = get_method("collage")(DEN, rows, noise, SETUP, max_frames=40, fps=20, options={"overlap": 0.3})
    direct = generate_collage(DEN, rows, noise, SETUP, max_frames=40, overlap=6)
    torch.testing.assert_close(via_spec.motion, direct.motion, rtol=0, atol=0)
