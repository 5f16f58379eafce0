"""Factor graphs: layout of chains and cycles, degrees, weights and validation."""
import numpy as np
import pytest

from motion_collage.graph import FactorGraph, GraphError, Node, chain, cycle, single


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
