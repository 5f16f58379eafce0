"""Evaluation metrics as pure functions on numpy arrays.

Embedding metrics (HumanML3D protocol of Guo et al. 2022, as used by MDM and DiffCollage):
R-precision, MM-Dist (matching score), FID, Diversity, MultiModality. Motion-quality metrics on
joint positions [..., T, J, 3] (metres, Y up): the jerk curve with Peak Jerk and Area Under the
Jerk (FlowMDM, CVPR 2024), foot skating ratio, and jerk across the seam of a looped motion.
Statistics over replications: :func:`mean_ci`.

Randomised metrics take ``seed`` (an int or a ``numpy.random.Generator``) and draw their indices
from it, so a result is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import linalg
from scipy.ndimage import uniform_filter1d

HUMANML3D_REAL_JERK = 0.0330   # real-data jerk on HumanML3D (method.md §7.2; FlowMDM's code: 0.033031363)
R_PRECISION_BATCH = 32
DIVERSITY_PAIRS = 300
MULTIMODALITY_PAIRS = 10


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {x.shape}")
    return x


# --------------------------------------------------------------------------------------------
# Text-motion matching
# --------------------------------------------------------------------------------------------

def euclidean_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances, a [N, D], b [M, D] -> [N, M] (float64)."""
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    sq = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def r_precision_counts(text_emb: np.ndarray, motion_emb: np.ndarray, top_k: int = 3) -> np.ndarray:
    """For one batch of aligned pairs, how many rows find their own motion among the k nearest.

    text_emb, motion_emb [B, D] (row i of each belong together). Returns int counts [top_k]:
    entry k-1 counts rows whose own motion is among the k closest motions (ties broken by index).
    """
    dist = euclidean_distance_matrix(text_emb, motion_emb)
    if dist.shape[0] != dist.shape[1]:
        raise ValueError(f"need as many texts as motions, got {dist.shape}")
    order = np.argsort(dist, axis=1, kind="stable")
    rank = np.argmax(order == np.arange(len(dist))[:, None], axis=1)        # [B], 0 = nearest
    return np.array([(rank < k).sum() for k in range(1, top_k + 1)], dtype=np.int64)


@dataclass(frozen=True)
class MatchingScores:
    """R-precision [top_k] (fractions), MM-Dist and how many pairs were used."""

    r_precision: np.ndarray
    mm_dist: float
    num_samples: int


def matching_scores(text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = R_PRECISION_BATCH,
                    top_k: int = 3, drop_last: bool = True) -> MatchingScores:
    """R-precision top-1..k and MM-Dist over consecutive batches of ``batch_size`` aligned pairs.

    text_emb, motion_emb [N, D]. Each batch's distance matrix ranks its own ``batch_size``
    motions; counts and diagonal distances are summed over batches and divided by the number
    of pairs used. ``drop_last`` drops an incomplete final batch, as the official data loader does.
    """
    text_emb, motion_emb = _as_2d(text_emb, "text_emb"), _as_2d(motion_emb, "motion_emb")
    if text_emb.shape != motion_emb.shape:
        raise ValueError(f"text and motion embeddings must have the same shape, got {text_emb.shape} "
                         f"and {motion_emb.shape}")
    n = len(text_emb) - (len(text_emb) % batch_size if drop_last else 0)
    if n < 1:
        raise ValueError(f"need at least one full batch of {batch_size} pairs, got {len(text_emb)}")
    counts = np.zeros(top_k, dtype=np.int64)
    dist_sum = 0.0
    for start in range(0, n, batch_size):
        t, m = text_emb[start:start + batch_size], motion_emb[start:start + batch_size]
        counts += r_precision_counts(t, m, top_k)
        dist_sum += float(np.linalg.norm(t - m, axis=1).sum())
    return MatchingScores(r_precision=counts / n, mm_dist=dist_sum / n, num_samples=n)


def r_precision(text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = R_PRECISION_BATCH,
                top_k: int = 3, drop_last: bool = True) -> np.ndarray:
    """R-precision top-1..k [top_k] (see :func:`matching_scores`)."""
    return matching_scores(text_emb, motion_emb, batch_size, top_k, drop_last).r_precision


def mm_dist(text_emb: np.ndarray, motion_emb: np.ndarray) -> float:
    """Multimodal distance: mean Euclidean distance between each text and its own motion, [N, D] each."""
    text_emb, motion_emb = _as_2d(text_emb, "text_emb"), _as_2d(motion_emb, "motion_emb")
    if text_emb.shape != motion_emb.shape:
        raise ValueError(f"shapes differ: {text_emb.shape} vs {motion_emb.shape}")
    return float(np.linalg.norm(text_emb - motion_emb, axis=1).mean())


# --------------------------------------------------------------------------------------------
# Distribution metrics
# --------------------------------------------------------------------------------------------

def activation_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and sample covariance (ddof 1) [D, D] of embeddings x [N, D], N >= 2."""
    x = _as_2d(x, "embeddings")
    if len(x) < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {len(x)}")
    return x.mean(0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     eps: float = 1e-6, imag_tol: float = 1e-3) -> float:
    """``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))`` for two Gaussians.

    The square root is ``scipy.linalg.sqrtm``; if it is not finite, ``eps * I`` is added to both
    covariances and it is recomputed. The real part is kept; an imaginary diagonal larger than
    ``imag_tol`` raises ValueError.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"inconsistent shapes: mu {mu1.shape}/{mu2.shape}, cov {cov1.shape}/{cov2.shape}")
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        worst = float(np.abs(np.diagonal(covmean).imag).max())
        if worst > imag_tol:
            raise ValueError(f"matrix square root has an imaginary diagonal up to {worst:.3g} (> {imag_tol})")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def fid(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits of embeddings x [N, D] and y [M, D]."""
    return frechet_distance(*activation_statistics(x), *activation_statistics(y))


def diversity(x: np.ndarray, num_pairs: int = DIVERSITY_PAIRS, seed: int | np.random.Generator | None = 0) -> float:
    """Mean distance over ``num_pairs`` random pairs of x [N, D].

    Two independent draws of ``num_pairs`` indices, each without replacement (so N >= num_pairs).
    """
    x = _as_2d(x, "embeddings")
    if len(x) < num_pairs:
        raise ValueError(f"diversity needs at least num_pairs={num_pairs} samples, got {len(x)}")
    rng = _rng(seed)
    first = rng.choice(len(x), num_pairs, replace=False)
    second = rng.choice(len(x), num_pairs, replace=False)
    return float(np.linalg.norm(x[first] - x[second], axis=1).mean())


def multimodality(x: np.ndarray, num_pairs: int = MULTIMODALITY_PAIRS,
                  seed: int | np.random.Generator | None = 0) -> float:
    """Mean distance between generations of the same caption, x [C, R, D] (C captions, R each).

    The same ``num_pairs`` (first, second) index draws (without replacement) are used for every
    caption, as in the official code; needs R >= num_pairs.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"multimodality needs [captions, repeats, D], got shape {x.shape}")
    if x.shape[1] < num_pairs:
        raise ValueError(f"multimodality needs at least num_pairs={num_pairs} generations per caption, "
                         f"got {x.shape[1]}")
    rng = _rng(seed)
    first = rng.choice(x.shape[1], num_pairs, replace=False)
    second = rng.choice(x.shape[1], num_pairs, replace=False)
    return float(np.linalg.norm(x[:, first] - x[:, second], axis=2).mean())


def transition_fid(generated_windows: np.ndarray, real_windows: np.ndarray) -> float:
    """FID between embeddings of transition windows [N, D] and of random real crops [M, D]."""
    return fid(generated_windows, real_windows)


def transition_diversity(window_emb: np.ndarray, num_pairs: int = DIVERSITY_PAIRS,
                         seed: int | np.random.Generator | None = 0) -> float:
    """Diversity of transition-window embeddings [N, D]."""
    return diversity(window_emb, num_pairs, seed)


def transition_windows(x: np.ndarray, boundaries: Sequence[int], window: int = 60) -> np.ndarray:
    """Windows of ``window`` frames centred on each boundary: x [T, ...] -> [len(boundaries), window, ...].

    The window for boundary b covers frames ``b - window // 2`` .. ``b + window - window // 2 - 1``.
    """
    x = np.asarray(x)
    half = window // 2
    out = []
    for b in boundaries:
        lo, hi = int(b) - half, int(b) - half + window
        if lo < 0 or hi > len(x):
            raise ValueError(f"transition window [{lo}, {hi}) around frame {b} leaves the {len(x)}-frame motion")
        out.append(x[lo:hi])
    return np.stack(out) if out else np.empty((0, window, *x.shape[1:]), dtype=x.dtype)


# --------------------------------------------------------------------------------------------
# Jerk (FlowMDM) and loops
# --------------------------------------------------------------------------------------------

def frame_jerk(positions: np.ndarray, lengths: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Per-frame jerk of joint positions [..., T, J, 3] -> [..., T - 3].

    3rd finite difference in time (no fps scaling), L1 norm over xyz, max over joints. With
    ``lengths`` ([N] for positions [N, T, J, 3]) values at frames >= length - 3 are set to 0.
    """
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim < 3 or p.shape[-1] != 3 or p.shape[-3] < 4:
        raise ValueError(f"positions must be [..., T >= 4, J, 3], got shape {p.shape}")
    jerk = np.abs(np.diff(p, n=3, axis=-3)).sum(-1).max(-1)
    if lengths is not None:
        lengths = np.asarray(lengths).reshape(-1)
        if jerk.ndim != 2 or len(lengths) != len(jerk):
            raise ValueError(f"lengths need positions [N, T, J, 3] with N = {len(lengths)}, got {p.shape}")
        jerk = np.where(np.arange(jerk.shape[1])[None, :] < (lengths[:, None] - 3), jerk, 0.0)
    return jerk


def jerk_curve(positions: np.ndarray, lengths: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Mean per-frame jerk over motions: positions [N, T, J, 3] (e.g. transition windows) -> [T - 3]."""
    p = np.asarray(positions)
    if p.ndim != 4:
        raise ValueError(f"positions must be [N, T, J, 3], got shape {p.shape}")
    return frame_jerk(p, lengths).mean(0)


def peak_jerk(curve: np.ndarray) -> float:
    """Peak Jerk: maximum of a jerk curve [T']."""
    return float(np.max(curve))


def area_under_jerk(curve: np.ndarray, real_jerk: float = HUMANML3D_REAL_JERK) -> float:
    """Area Under the Jerk: sum over the curve [T'] of ``|curve - real_jerk|``."""
    return float(np.abs(np.asarray(curve, dtype=np.float64) - real_jerk).sum())


@dataclass(frozen=True)
class SeamJerk:
    """Jerk across a seam vs elsewhere: peak and mean over the 3 stencils that cross the seam,
    mean and peak over all other frames."""

    seam_peak: float
    seam_mean: float
    interior_mean: float
    interior_peak: float


def seam_jerk(positions: np.ndarray, seam: int) -> SeamJerk:
    """Jerk of stencils crossing the boundary between frames ``seam - 1`` and ``seam``, vs the rest.

    positions [T, J, 3] or [N, T, J, 3] (averaged over N first). For a loop of period P give at
    least one period and a half unrolled so the seam has frames on both sides: e.g. tile the loop's
    features twice, recover joint positions (which carries the root drift of one period over), and
    use ``seam = P``. For the concatenation baseline, the seam is where the end meets the start.
    """
    p = np.asarray(positions, dtype=np.float64)
    curve = frame_jerk(p)
    if curve.ndim == 2:
        curve = curve.mean(0)
    if not 3 <= seam <= len(curve):
        raise ValueError(f"seam {seam} needs 3 frames on each side: must be in 3..{len(curve)} "
                         f"for {len(curve) + 3} frames")
    crossing = np.zeros(len(curve), dtype=bool)
    crossing[seam - 3:seam] = True                 # stencil t covers frames t..t+3
    rest = curve[~crossing]
    return SeamJerk(seam_peak=float(curve[crossing].max()), seam_mean=float(curve[crossing].mean()),
                    interior_mean=float(rest.mean()) if rest.size else float("nan"),
                    interior_peak=float(rest.max()) if rest.size else float("nan"))


# --------------------------------------------------------------------------------------------
# Foot skating
# --------------------------------------------------------------------------------------------

def foot_skating_ratio(positions: np.ndarray, foot_joints: Sequence[int] = (10, 11), fps: float = 20.0,
                       height_threshold: float = 0.05, speed_threshold: float = 0.5, window: int = 5,
                       up_axis: int = 1) -> np.ndarray:
    """Fraction of frame pairs in which a grounded foot slides, per motion: [..., T, J, 3] -> [...].

    The definition of Guided Motion Diffusion (Karunratanakul et al. 2023): a foot (HumanML3D
    joints 10 and 11, the toes) skates between frames t and t+1 if its height is below
    ``height_threshold`` (5 cm; floor at 0) in both frames and its horizontal speed exceeds
    ``speed_threshold`` (0.5 m/s), both the instantaneous speed and its ``window``-frame moving
    average (zero-padded at the ends). A frame pair counts if either foot skates.
    """
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim < 3 or p.shape[-1] != 3 or p.shape[-3] < 2:
        raise ValueError(f"positions must be [..., T >= 2, J, 3], got shape {p.shape}")
    feet = p[..., list(foot_joints), :]                                     # [..., T, F, 3]
    horizontal = [a for a in range(3) if a != up_axis]
    speed = np.linalg.norm(np.diff(feet[..., horizontal], axis=-3), axis=-1) * fps   # [..., T-1, F]
    speed_avg = uniform_filter1d(speed, size=window, axis=-2, mode="constant")
    height = feet[..., up_axis]                                             # [..., T, F]
    contact = (height[..., :-1, :] < height_threshold) & (height[..., 1:, :] < height_threshold)
    skating = contact & (speed > speed_threshold) & (speed_avg > speed_threshold)
    return skating.any(-1).mean(-1)


# --------------------------------------------------------------------------------------------
# Replications
# --------------------------------------------------------------------------------------------

def mean_ci(values: Sequence[float] | np.ndarray, axis: int = 0) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(mean, 1.96 * std / sqrt(n)) over replications along ``axis``, population std (ddof 0)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value")
    n = v.shape[axis]
    mean = v.mean(axis)
    ci = 1.96 * v.std(axis, ddof=0) / np.sqrt(n)
    if np.ndim(mean) == 0:
        return float(mean), float(ci)
    return mean, ci
