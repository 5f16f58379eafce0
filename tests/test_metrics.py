"""Tests for eval.metrics on hand-computed cases and identities."""
from __future__ import annotations

import numpy as np
import pytest

from eval import metrics as M


def test_distance_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    brute = np.linalg.norm(a[:, None] - b[None], axis=-1)
    np.testing.assert_allclose(M.euclidean_distance_matrix(a, b), brute, atol=1e-12)


def test_r_precision_perfect_alignment_is_one():
    x = np.random.default_rng(1).normal(size=(64, 8))
    scores = M.matching_scores(x, x)
    np.testing.assert_array_equal(scores.r_precision, [1.0, 1.0, 1.0])
    assert scores.mm_dist == pytest.approx(0.0, abs=1e-6) and scores.num_samples == 64


# motions on a line at 0, 1, 5; texts at 0.9, 1, 2.9:
#   t0 -> distances 0.9, 0.1, 4.1: own motion 2nd;  t1 -> 1, 0, 4: 1st;  t2 -> 2.9, 1.9, 2.1: 2nd
HAND_MOTIONS = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
HAND_TEXTS = np.array([[0.9, 0.0], [1.0, 0.0], [2.9, 0.0]])


def test_r_precision_known_3x3_case():
    np.testing.assert_array_equal(M.r_precision_counts(HAND_TEXTS, HAND_MOTIONS), [1, 3, 3])
    scores = M.matching_scores(HAND_TEXTS, HAND_MOTIONS, batch_size=3)
    np.testing.assert_allclose(scores.r_precision, [1 / 3, 1.0, 1.0])
    assert scores.mm_dist == pytest.approx((0.9 + 0.0 + 2.1) / 3)
    assert M.mm_dist(HAND_TEXTS, HAND_MOTIONS) == pytest.approx(1.0)


def test_r_precision_is_per_batch_and_drops_incomplete_batch():
    # Two copies of the hand case far apart: within each batch of 3 the counts are [1, 3, 3].
    texts = np.concatenate([HAND_TEXTS, HAND_TEXTS + 100.0, [[7.0, 7.0]]])
    motions = np.concatenate([HAND_MOTIONS, HAND_MOTIONS + 100.0, [[-50.0, 9.0]]])
    scores = M.matching_scores(texts, motions, batch_size=3)
    assert scores.num_samples == 6
    np.testing.assert_allclose(scores.r_precision, [1 / 3, 1.0, 1.0])
    kept = M.matching_scores(texts, motions, batch_size=3, drop_last=False)
    assert kept.num_samples == 7
    np.testing.assert_allclose(kept.r_precision, [3 / 7, 1.0, 1.0])   # the lone pair is its own top-1
    with pytest.raises(ValueError, match="full batch"):
        M.matching_scores(texts[:2], motions[:2], batch_size=3)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(2).normal(size=(500, 6))
    assert M.fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 4 + 0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()       # diagonal covariances commute
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # Non-diagonal: cov1 = I, cov2 = A  ->  tr(I + A - 2 A^(1/2))
    rng = np.random.default_rng(3)
    q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    eig = np.array([0.5, 1.0, 2.0, 3.0])
    cov2 = q @ np.diag(eig) @ q.T
    expected = 4 + eig.sum() - 2 * np.sqrt(eig).sum()
    assert M.frechet_distance(np.zeros(4), np.eye(4), np.zeros(4), cov2) == pytest.approx(expected, rel=1e-9)


def test_fid_uses_sample_covariance():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 3)), rng.normal(loc=1.0, size=(40, 3)) * 2
    mu, cov = M.activation_statistics(x)
    np.testing.assert_allclose(cov, np.cov(x.T, ddof=1))
    direct = M.frechet_distance(x.mean(0), np.cov(x.T, ddof=1), y.mean(0), np.cov(y.T, ddof=1))
    assert M.fid(x, y) == pytest.approx(direct)
    assert M.transition_fid(x, y) == pytest.approx(direct)


def test_fid_rank_deficient_is_finite():
    x = np.random.default_rng(5).normal(size=(5, 10))      # N < D: singular covariance
    assert np.isfinite(M.fid(x, x + 0.1))


def test_diversity():
    assert M.diversity(np.ones((300, 4))) == 0.0
    x = np.random.default_rng(6).normal(size=(400, 5))
    assert M.diversity(x, seed=1) == M.diversity(x, seed=1)
    assert M.diversity(x, seed=1) != M.diversity(x, seed=2)
    # Two clusters at distance 10 along one axis, no spread: every pair is 0 or 10 apart.
    two = np.zeros((300, 2))
    two[150:, 0] = 10.0
    d = M.diversity(two, seed=0)
    assert d in {10.0 * k / 300 for k in range(301)}
    assert M.transition_diversity(x, seed=1) == M.diversity(x, seed=1)
    with pytest.raises(ValueError, match="at least num_pairs=300"):
        M.diversity(x[:299])


def test_multimodality():
    assert M.multimodality(np.ones((3, 30, 4))) == 0.0
    x = np.zeros((2, 30, 1))
    x[:, :, 0] = np.arange(30)                          # generation j of every caption at position j
    first_second = M.multimodality(x, seed=0)
    assert 0 < first_second < 30
    with pytest.raises(ValueError):
        M.multimodality(np.ones((3, 5, 4)))


def test_jerk_of_constant_velocity_is_zero():
    t = np.arange(20.0)[:, None, None]
    pos = np.ones((20, 22, 3)) * 0.3 + t * np.array([0.01, -0.02, 0.05])
    np.testing.assert_allclose(M.frame_jerk(pos), 0.0, atol=1e-12)


def test_jerk_of_a_cubic_is_constant():
    t = np.arange(12.0)
    pos = np.zeros((12, 2, 3))
    pos[:, 0, :] = 0.01 * t[:, None] ** 3              # third difference of c t^3 is 6c per coordinate
    pos[:, 1, 0] = 0.02 * t ** 3                        # one coordinate, twice the coefficient
    jerk = M.frame_jerk(pos)
    assert jerk.shape == (9,)
    np.testing.assert_allclose(jerk, max(3 * 6 * 0.01, 6 * 0.02))
    curve = M.jerk_curve(np.stack([pos, 2 * pos]))
    np.testing.assert_allclose(curve, 1.5 * 0.18)


def test_jerk_lengths_mask_tail():
    pos = np.cumsum(np.cumsum(np.random.default_rng(7).normal(size=(2, 10, 3, 3)), 1), 1)
    jerk = M.frame_jerk(pos, lengths=[10, 6])
    assert (jerk[1, 3:] == 0).all() and (jerk[1, :3] > 0).all() and (jerk[0] > 0).all()


def test_peak_jerk_and_auj():
    curve = np.array([0.0330, 0.1, 0.0])
    assert M.peak_jerk(curve) == 0.1
    assert M.area_under_jerk(curve) == pytest.approx(0.067 + 0.033)
    assert M.area_under_jerk(curve, real_jerk=0.0) == pytest.approx(0.133)


def test_seam_jerk_smooth_loop_vs_jump():
    period = 40
    t = np.arange(2 * period)
    smooth = np.zeros((2 * period, 2, 3))
    smooth[:, 0, 0] = np.sin(2 * np.pi * t / period)
    s = M.seam_jerk(smooth, seam=period)
    assert s.seam_peak == pytest.approx(s.interior_peak, rel=0.05)
    jumped = smooth.copy()
    jumped[period:, 0, 1] += 0.5                       # a 0.5 m jump where the end meets the start
    j = M.seam_jerk(jumped, seam=period)
    assert j.seam_peak > 10 * s.seam_peak and j.interior_mean == pytest.approx(s.interior_mean)
    with pytest.raises(ValueError):
        M.seam_jerk(smooth, seam=1)


def test_foot_skating_ratio():
    frames = 20
    pos = np.zeros((frames, 22, 3))
    pos[:, [10, 11], 0] = (np.arange(frames) * 0.05)[:, None]      # 0.05 m/frame = 1 m/s at 20 fps
    assert M.foot_skating_ratio(pos) == pytest.approx(1.0)          # sliding on the floor
    lifted = pos.copy()
    lifted[..., 1] = 0.2
    assert M.foot_skating_ratio(lifted) == 0.0                      # moving in the air is not skating
    planted = np.zeros((frames, 22, 3))
    assert M.foot_skating_ratio(planted) == 0.0
    slow = pos.copy()
    slow[..., 0] *= 0.2                                            # 0.2 m/s is under the 0.5 m/s threshold
    assert M.foot_skating_ratio(slow) == 0.0
    half = pos.copy()
    half[10:, :, 1] = 0.2                                          # lifted after frame 10
    assert M.foot_skating_ratio(half) == pytest.approx(9 / 19)
    batch = M.foot_skating_ratio(np.stack([pos, lifted]))
    np.testing.assert_allclose(batch, [1.0, 0.0])


def test_transition_windows():
    x = np.arange(100)
    w = M.transition_windows(x, [30, 70], window=60)
    assert w.shape == (2, 60) and w[0, 0] == 0 and w[0, 30] == 30 and w[1, -1] == 99
    with pytest.raises(ValueError, match="leaves"):
        M.transition_windows(x, [20], window=60)


def test_mean_ci():
    mean, ci = M.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert ci == pytest.approx(1.96 * np.sqrt(1.25) / 2)
    means, cis = M.mean_ci(np.array([[1.0, 10.0], [3.0, 10.0]]))
    np.testing.assert_allclose(means, [2.0, 10.0])
    np.testing.assert_allclose(cis, [1.96 / np.sqrt(2), 0.0])
