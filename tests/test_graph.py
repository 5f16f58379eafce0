"""Factor graphs: layout of chains and cycles, degrees, weights and validation."""
import numpy as np
import pytest

from motion_collage.graph import FactorGraph, GraphError, MergeRule, Node, chain, cycle, merge_plan, single


def test_chain_layout_centres_overlaps_on_boundaries():
    g = chain([("walk", 80), ("jump", 40), ("sit", 60)], overlap=20, max_frames=196)
    assert g.num_frames == 180
    assert [(f.start, f.length, f.prompt) for f in g.factors] == [(0, 90, "walk"), (70, 60, "jump"), (110, 70, "sit")]
    assert [(v.start, v.length, v.prompt) for v in g.variables] == [(70, 20, None), (110, 20, None)]
    assert g.degrees == (2, 2)
    assert g.weights == (1, 1, 1, -1, -1)
    np.testing.assert_array_equal(g.frame_weights(), np.ones(180))
    assert [(s.prompt, s.start, s.end) for s in g.segments] == [("walk", 0, 80), ("jump", 80, 120), ("sit", 120, 180)]


def test_cycle_has_explicit_seam_variable():
    g = cycle([("walk", 80), ("jump", 40)], overlap=20, max_frames=196)
    assert g.loop and g.num_frames == 120
    seam = [v for v in g.variables if v.start == 110]
    assert len(seam) == 1 and list(seam[0].frames(120)) == list(range(110, 120)) + list(range(10))
    assert g.degrees == (2, 2)
    np.testing.assert_array_equal(g.frame_weights(), np.ones(120))


def test_single_segment_cycle_is_split_in_two():
    g = cycle([("walk", 80)], overlap=20, max_frames=196)
    assert len(g.factors) == 2 and len(g.variables) == 2 and g.degrees == (2, 2)


def test_long_segment_is_split_into_factors_within_the_window():
    g = chain([("walk", 480)], overlap=20, max_frames=196, transition="prompt")
    assert len(g.factors) == 3 and all(f.prompt == "walk" for f in g.factors)
    assert g.max_piece <= 196
    assert all(v.prompt == "walk" for v in g.variables)  # same prompt on both sides


def test_transition_prompt_keeps_null_between_different_prompts():
    g = chain([("walk", 60), ("jump", 60)], overlap=10, max_frames=196, transition="prompt")
    assert g.variables[0].prompt is None


def test_general_graph_degree_counts_containing_factors():
    # Three factors sharing one core [10, 20): the core variable has degree 3 and weight -2.
    g = FactorGraph(30, (Node(0, 20, "a"), Node(10, 10, "b"), Node(10, 20, "c")), (Node(10, 10, None),))
    assert g.degrees == (3,)
    assert g.weights == (1, 1, 1, -2)
    np.testing.assert_array_equal(g.frame_weights(), np.ones(30))


@pytest.mark.parametrize("segments, overlap, match", [
    ([], 10, "no segments"),
    ([("walk", 0)], 10, "non-positive"),
    ([("walk", -5)], 10, "non-positive"),
    ([("  ", 50)], 10, "empty prompt"),
    ([("walk", 50), ("jump", 5)], 10, "fewer than the overlap"),
    ([("walk", 50)], 196, "smaller than a piece"),
    ([("walk", 50)], -1, ">= 0"),
])
def test_invalid_segments_raise_one_line_errors(segments, overlap, match):
    with pytest.raises(GraphError, match=match) as info:
        chain(segments, overlap=overlap, max_frames=196)
    assert "\n" not in str(info.value)


def test_uncovered_frames_and_bad_weights_are_rejected():
    with pytest.raises(GraphError, match="covered by no factor"):
        FactorGraph(30, (Node(0, 10, "a"), Node(20, 10, "b")))
    with pytest.raises(GraphError, match="weights must sum to 1"):
        FactorGraph(30, (Node(0, 20, "a"), Node(10, 20, "b")))  # overlap without a variable node
    with pytest.raises(GraphError, match="only loops may wrap"):
        FactorGraph(30, (Node(25, 10, "a"),))
    with pytest.raises(GraphError, match="contained in no factor"):
        FactorGraph(30, (Node(0, 15, "a"), Node(15, 15, "b")), (Node(10, 10, None),))


def test_single_graph_is_one_factor():
    g = single("walk", 50)
    assert len(g.factors) == 1 and not g.variables and g.num_frames == 50


def _brute_force_degrees(g):
    member = np.zeros((len(g.factors), g.num_frames), dtype=bool)
    for i, f in enumerate(g.factors):
        member[i, f.frames(g.num_frames)] = True
    return tuple(int(member[:, v.frames(g.num_frames)].all(axis=1).sum()) for v in g.variables)


@pytest.mark.parametrize("loop", [False, True])
def test_degrees_equal_the_brute_force_containment_count(loop):
    rng = np.random.default_rng(3)
    for _ in range(20):
        segments = [(f"p{i}", int(rng.integers(20, 300))) for i in range(int(rng.integers(1, 8)))]
        overlap = int(rng.integers(0, 19))
        build = cycle if loop else chain
        try:
            g = build(segments, overlap=overlap, max_frames=int(rng.integers(60, 197)))
        except GraphError:
            continue
        assert g.degrees == _brute_force_degrees(g)
    # hand-made: nested variables, a factor over every frame of a loop, a wrapping factor
    g = FactorGraph(10, (Node(0, 10, "a"), Node(8, 4, "b")), (Node(8, 4, None),), loop=True)
    assert g.degrees == (2,) == _brute_force_degrees(g)


def test_a_chain_of_ten_thousand_segments_builds_in_linear_memory():
    g = chain([("a", 40)] * 10_000, overlap=20, max_frames=196)
    assert len(g.variables) == 9_999 and set(g.degrees) == {2}


@pytest.mark.parametrize("frames", [40, 177, 196])
def test_a_segment_that_fits_the_window_is_one_piece(frames):
    g = chain([("walk", frames)], overlap=20, max_frames=196)
    assert [(f.start, f.length) for f in g.factors] == [(0, frames)] and not g.variables


def test_pieces_reserve_overlap_only_where_there_is_a_neighbour():
    g = chain([("walk", 186), ("run", 80)], overlap=20, max_frames=196)  # 186 + 10 = 196: still one piece
    assert [(f.start, f.length) for f in g.factors] == [(0, 196), (176, 90)]
    g = chain([("walk", 187), ("run", 80)], overlap=20, max_frames=196)  # one frame more: split in two
    assert [f.length for f in g.factors] == [104, 113, 90] and g.max_piece <= 196
    assert [f.length for f in chain([("walk", 197)], 20, 196).factors] == [109, 108]


def test_a_short_single_segment_needs_no_overlap_room():
    g = chain([("walk", 10)], overlap=20, max_frames=196)
    assert len(g.factors) == 1 and not g.variables
    with pytest.raises(GraphError, match="fewer than the overlap"):
        chain([("walk", 10), ("run", 50)], overlap=20, max_frames=196)


def _check_plan(g, rule, max_frames=196):
    plan = merge_plan(g, rule, max_frames)
    total = np.zeros(g.num_frames)
    for n in plan:
        np.add.at(total, n.frames(g.num_frames), n.weights)
        assert n.length <= max_frames and n.weights.shape == (n.length,)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    return plan


@pytest.mark.parametrize("loop", [False, True])
def test_merge_plans_sum_to_one_on_every_frame(loop):
    build = cycle if loop else chain
    for segments in ([("a", 80), ("b", 60), ("c", 80)], [("a", 45), ("b", 30), ("a", 50)], [("a", 400)], [("a", 60)]):
        g = build(segments, overlap=20, max_frames=196)
        for rule in (MergeRule(), MergeRule("taper", taper=10), MergeRule("taper", taper=20),
                     MergeRule("harmonise", window=60, plateau=30), MergeRule("harmonise", window=80, plateau=80),
                     MergeRule("bridge", window=80, plateau=30), MergeRule("bridge", window=60, plateau=60),
                     MergeRule("crossfade")):
            _check_plan(g, rule)


def test_exact_plan_is_the_signed_merge_and_taper_removes_the_switch():
    g = chain([("walk", 80), ("wave", 60)], overlap=20, max_frames=196)
    exact = _check_plan(g, MergeRule())
    assert [float(n.weights[0]) for n in exact] == [1.0, 1.0, -1.0]
    walk, wave, var = _check_plan(g, MergeRule("taper", taper=10))
    # the walk factor fades out over the last 10 frames of the overlap: 10/11 ... 1/11, then absent
    np.testing.assert_allclose(walk.weights[-10:], np.arange(10, 0, -1) / 11)
    np.testing.assert_allclose(wave.weights[:10], np.arange(1, 11) / 11)
    assert walk.weights[:-10].min() == 1
    np.testing.assert_allclose(var.weights, 1 - walk.weights[-20:] - wave.weights[:20])
    full = _check_plan(g, MergeRule("taper", taper=20))  # a taper over the whole overlap: a cross-fade
    assert len(full) == 2


def test_harmonise_window_replaces_the_middle_and_takes_the_shared_prompt():
    g = chain([("walk", 80), ("wave", 60)], overlap=20, max_frames=196)
    plan = _check_plan(g, MergeRule("harmonise", window=60, plateau=30))
    window = plan[-1]
    assert (window.start, window.length, window.prompt) == (50, 60, None)
    assert np.all(window.weights[15:45] == 1) and window.weights[0] == pytest.approx(1 / 16)
    assert all(n.prompt is not None for n in plan[:-1])  # the variable node is covered: not evaluated
    split = _check_plan(chain([("walk", 400)], 20, 196), MergeRule("harmonise", window=60, plateau=30))
    assert [n.prompt for n in split[-2:]] == ["walk", "walk"]  # a split segment keeps its prompt
    with pytest.raises(GraphError, match="unknown merge"):
        MergeRule("soft")


def _prompt_weights(g, plan, prompt):
    w = np.zeros(g.num_frames)
    for n in plan:
        if n.prompt == prompt:
            np.add.at(w, n.frames(g.num_frames), n.weights)
    return w


@pytest.mark.parametrize("loop", [False, True])
def test_bridge_cross_fades_the_two_prompts_linearly_with_no_null_frames(loop):
    g = (cycle if loop else chain)([("walk", 80), ("wave", 60), ("run", 80)], overlap=20, max_frames=120)
    plan = _check_plan(g, MergeRule("bridge", window=80, plateau=30), max_frames=120)
    walk, wave, run = (_prompt_weights(g, plan, p) for p in ("walk", "wave", "run"))
    assert not np.any(_prompt_weights(g, plan, None))  # every frame follows a prompt
    # across the first boundary (frame 80) walk hands over to wave linearly over the 30-frame plateau
    np.testing.assert_allclose(wave[65:95], (np.arange(30) + 0.5) / 30, atol=1e-12)
    np.testing.assert_allclose(walk[65:95] + wave[65:95], 1.0, atol=1e-12)
    assert walk[20:60].min() > 1 - 1e-12 and run[160:200].min() > 1 - 1e-12
    # no weight jumps: at most one step of the cross-fade per frame
    for w in (walk, wave, run):
        d = np.abs(np.diff(np.concatenate([w, w[:1]]) if loop else w))
        assert d.max() <= 1 / 30 + 1e-12
    # the two windows of a boundary cover the same frames with the two sides' prompts
    windows = [n for n in plan if n.length == 80 and n.start in (40, 100)]
    assert sorted((n.start, n.prompt) for n in windows) == [(40, "walk"), (40, "wave"), (100, "run"), (100, "wave")]


@pytest.mark.parametrize("loop", [False, True])
def test_crossfade_is_a_full_taper_without_the_variable_nodes(loop):
    g = (cycle if loop else chain)([("walk", 80), ("wave", 60), ("run", 80)], overlap=20, max_frames=120)
    plan = _check_plan(g, MergeRule("crossfade"), max_frames=120)
    full = _check_plan(g, MergeRule("taper", taper=20), max_frames=120)
    assert [(n.start, n.length, n.prompt) for n in plan] == [(n.start, n.length, n.prompt) for n in full]
    for a, b in zip(plan, full):
        np.testing.assert_array_equal(a.weights, b.weights)
    assert len(plan) == len(g.factors) and all(n.prompt is not None for n in plan)  # no variable node evaluated
    walk, wave = plan[0], plan[1]
    np.testing.assert_allclose(walk.weights[-20:], np.arange(20, 0, -1) / 21)  # falls 1/21 per frame
    np.testing.assert_allclose(wave.weights[:20], np.arange(1, 21) / 21)
    for prompt in ("walk", "wave", "run"):
        w = _prompt_weights(g, plan, prompt)
        d = np.abs(np.diff(np.concatenate([w, w[:1]]) if loop else w))
        assert d.max() <= 1 / 21 + 1e-12
