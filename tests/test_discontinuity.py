"""The discontinuity metric (eval.metrics step functions) on motions with known defects."""
from __future__ import annotations

import numpy as np
import pytest

from eval import metrics as M

REFERENCE = 0.32  # the real data's 99.9th percentile step (Bandai Namco, metres)


def swinging(num_frames: int, period: float = 20.0, phase: float = 0.0) -> np.ndarray:
    """A smooth 22-joint motion [T, 22, 3]: the root walks forward, every joint swings in phase
    (amplitude 0.3 m: largest step ~0.09 m; the swing reverses, so steps dip to ~0 smoothly)."""
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    rest = np.linspace(-0.8, 0.8, 22)[None, :]
    p = np.zeros((num_frames, 22, 3))
    p[..., 0] = rest + 0.3 * np.sin(2 * np.pi * t / period + phase) * (np.arange(22) > 0)
    p[..., 1] = 1.0 + 0.5 * rest
    p[..., 2] = 0.07 * t  # root and joints move forward together (cancels relative to the root)
    return p


def test_step_is_the_largest_joint_move_relative_to_the_root():
    p = np.zeros((3, 22, 3))
    p[1, 5] = [0.0, 0.3, 0.4]    # joint 5 moves 0.5 m out and back
    p[:, :, 2] += [[0.0], [2.0], [4.0]]  # a root translation of 2 m per frame does not count
    np.testing.assert_allclose(M.frame_steps(p), [0.5, 0.5])


def test_one_frame_snap_is_caught_and_a_smooth_motion_is_clean():
    clean = swinging(120)
    summary = M.discontinuities(clean, {"edge": [60]}, REFERENCE)
    for s in summary.values():
        assert (s.over_reference, s.jumps, s.stalls, s.spikes) == (0, 0, 0, 0)
    snapped = clean.copy()
    snapped[60, 21] += [0.35, 0.2, 0.0]  # the wrist out for one frame (0.40 m) and back
    summary = M.discontinuities(snapped, {"edge": [60]}, REFERENCE)
    assert summary["edge"].over_reference == 2 and summary["edge"].jumps == 2  # out and back
    assert summary["edge"].spikes >= 2 and summary["edge"].max_kink > 0.35
    assert summary["edge"].max_step > 0.35 and summary["edge"].max_ratio > 3
    assert summary["interior"].jumps == summary["interior"].stalls == summary["interior"].spikes == 0


def test_a_spike_where_the_body_moves_fast_is_caught_by_its_kink():
    fast = swinging(120, period=8)  # steps up to 0.23 m: a 0.25 m outlier is < 3x its neighbours
    assert not M.step_profile(fast).spike.any()
    fast[61, 21] += [0.0, 0.25, 0.0]
    edge = M.discontinuities(fast, {"edge": [61]}, REFERENCE)["edge"]
    assert edge.jumps == 0 and edge.spikes >= 1


def test_duplicated_frame_at_a_loop_seam_is_a_stall_and_a_clean_seam_is_not():
    period = 40  # two swings per loop
    loop = swinging(period)
    tiled = np.concatenate([loop, loop + [0.0, 0.0, 0.07 * period]])  # two periods, root carried on
    clean = M.discontinuities(tiled, {"seam": [period]}, REFERENCE)["seam"]
    assert clean.stalls == clean.jumps == 0 and clean.min_ratio > 0.3

    hitched = loop.copy()
    hitched[-1] = hitched[0] - [0.0, 0.0, 0.07]  # the last frame repeats the first pose
    tiled = np.concatenate([hitched, hitched + [0.0, 0.0, 0.07 * period]])
    seam = M.discontinuities(tiled, {"seam": [period]}, REFERENCE)
    assert seam["seam"].stalls == 1 and seam["seam"].min_ratio < 0.05
    assert seam["seam"].max_step < REFERENCE  # the step count alone would miss it
    assert seam["interior"].stalls == 0


def test_a_hand_turning_round_is_not_a_stall():
    """Steps dip to ~0 at every reversal of the swing; the frame lies on the cubic: no stall."""
    p = swinging(200, period=16)
    profile = M.step_profile(p)
    assert profile.ratio.min() < 0.3  # the step ratio alone would flag the reversals
    assert not profile.stall.any() and not profile.jump.any() and not profile.spike.any()


def test_reference_statistics_and_input_checks():
    ref = M.step_reference([swinging(100), swinging(60, phase=1.0)])
    assert ref.transitions == 158 and 0.08 < ref.maximum < 0.1 and ref.jump_rate == ref.stall_rate == ref.spike_rate == 0
    np.testing.assert_array_equal(M.transitions_near([0, 5, 10], 10, radius=1), [0, 3, 4, 5, 8])
    with pytest.raises(ValueError, match=r"\[\.\.\., T >= 2, J, 3\]"):
        M.frame_steps(np.zeros((1, 22, 3)))
    with pytest.raises(ValueError, match="one motion"):
        M.step_profile(np.zeros((2, 10, 22, 3)))
    profile = M.step_profile(swinging(10))
    with pytest.raises(ValueError, match="transition indices"):
        M.summarize_steps(profile, [9], REFERENCE)


def test_suite_scores_see_a_snap_at_the_edge_of_an_overlap():
    """A collage's snap sits at its variable node's edge, 10 frames after the boundary: the suites'
    radius (half the transition window) sees it, a radius of 2 transitions does not."""
    from types import SimpleNamespace

    from eval.suites.scoring import discontinuity_scores

    snapped = swinging(160)
    snapped[90:, 21] += [0.5, 0.0, 0.0]  # the wrist jumps 0.5 m between frames 89 and 90, and stays
    ref = SimpleNamespace(step_quantile=REFERENCE)
    near = discontinuity_scores([snapped], [[80]], ref, "bd", radius=2)
    window = discontinuity_scores([snapped], [[80]], ref, "bd", radius=30)
    assert near["bd_step"] < 0.1 and near["bd_over"] == 0 and near["in_flags"] > 0
    assert window["bd_step"] > 0.35 and window["bd_over"] == 1 and window["in_flags"] == 0
