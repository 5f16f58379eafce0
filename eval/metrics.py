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


# --------------------------------------------------------------------------------------------
# Discontinuities: one-frame snaps and stalls (issue 13)
# --------------------------------------------------------------------------------------------
#
# The *step* of the transition t -> t+1 is the largest move of any joint relative to the root,
# in metres. A snap is a step above what real motion does in one frame (the real data's 99.9th
# percentile) or far above the steps around it (a *jump*); a duplicated frame is a step far below
# the steps around it while the body moves (a *stall*). Both are judged against the median of the
# neighbouring steps, which one bad frame cannot move. A real hand stops for a frame when it turns
# round, too; what tells a duplicate apart is that the motion goes on through it: the frame lies
# far off the cubic through its two neighbours on each side (its *kink*), where a turning hand lies
# on it. A frame far off that cubic while its neighbours move less (a *spike*) is an out-and-back
# outlier even where the body moves too fast for the step ratio to see it. Measured on the converted Bandai Namco clips (6,152 with mirrors, 549,628 transitions):
# 1.8e-5 jumps, 3.8e-5 stalls and no spike per real transition; in 1,185 clips where the body
# moves, one random frame duplicated is a stall 97 % of the time, and one random frame with the
# left wrist 0.2 m out is a jump 42 %, a spike 80 % of the time.

STEP_RATIO_WINDOW = 3     # steps on each side whose median is the local reference of a step
JUMP_RATIO = 3.0          # a step more than 3x its neighbours' median is a jump
STALL_RATIO = 0.3         # a step below 0.3x its neighbours' median ...
KINK_RATIO = 0.3          # ... whose frames lie off the cubic by 0.3x that median is a stall
SPIKE_RATIO = 1.5         # a frame off the cubic by 1.5x the neighbours' median step is a spike
MIN_MOVE = 0.01           # metres per frame: ratios are only judged where the body moves at least this


def frame_steps(positions: np.ndarray, root: int = 0) -> np.ndarray:
    """Per-transition step of joint positions [..., T, J, 3] -> [..., T - 1] (metres).

    Entry t is ``max_j |(p[t+1, j] - p[t+1, root]) - (p[t, j] - p[t, root])|``: the largest move
    of any joint relative to the root between frames t and t+1.
    """
    p = _positions(positions, 2)
    rel = p - p[..., root:root + 1, :]
    return np.linalg.norm(np.diff(rel, axis=-3), axis=-1).max(-1)


def frame_kinks(positions: np.ndarray, root: int = 0) -> np.ndarray:
    """Per-frame kink of joint positions [..., T, J, 3] -> [..., T] (metres).

    Entry t is the largest distance of a joint (relative to the root) at frame t from the cubic
    through frames t-2, t-1, t+1, t+2: ``|p_t - (-p_{t-2} + 4 p_{t-1} + 4 p_{t+1} - p_{t+2}) / 6|``
    (a 4th difference / 6). Smooth motion gives ~0, a one-frame outlier of size d gives d, a
    duplicated frame of a joint moving v per frame gives v. The first and last two frames get 0.
    """
    p = _positions(positions, 1)
    rel = p - p[..., root:root + 1, :]
    out = np.zeros(p.shape[:-2])
    if p.shape[-3] >= 5:
        pred = (-rel[..., :-4, :, :] + 4 * rel[..., 1:-3, :, :] + 4 * rel[..., 3:-1, :, :] - rel[..., 4:, :, :]) / 6
        out[..., 2:-2] = np.linalg.norm(rel[..., 2:-2, :, :] - pred, axis=-1).max(-1)
    return out


def _positions(positions: np.ndarray, min_frames: int) -> np.ndarray:
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim < 3 or p.shape[-1] != 3 or p.shape[-3] < min_frames:
        raise ValueError(f"positions must be [..., T >= {min_frames}, J, 3], got shape {p.shape}")
    return p


def neighbour_median(steps: np.ndarray, window: int = STEP_RATIO_WINDOW) -> np.ndarray:
    """Median of the ``2 * window`` steps nearest to every step (itself excluded), [..., N] -> [..., N].

    Inside, ``window`` on each side; near the ends the window shifts inwards so that it keeps
    ``2 * window`` neighbours (a motion of fewer steps uses all the others).
    """
    s = np.asarray(steps, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1 step on each side, got {window}")
    n = s.shape[-1]
    if n < 2:
        return np.full(s.shape, np.nan)
    width = min(2 * window + 1, n)
    t = np.arange(n)
    lo = np.clip(t - window, 0, n - width)
    cols = lo[:, None] + np.arange(width)[None, :]                     # [N, width], contains t
    keep = cols != t[:, None]
    others = cols[keep].reshape(n, width - 1)                          # [N, width - 1]
    return np.median(s[..., others], axis=-1)


@dataclass(frozen=True)
class StepProfile:
    """Steps of one motion and their tests, all [T - 1] (entry t: frames t -> t+1).

    steps (m), neighbour median (m), ratio (step / median, both floored at min_move / 10),
    kink (m, the larger of frames t and t+1), jump, stall and spike (bool).
    """

    steps: np.ndarray
    median: np.ndarray
    ratio: np.ndarray
    kink: np.ndarray
    jump: np.ndarray
    stall: np.ndarray
    spike: np.ndarray


def step_profile(positions: np.ndarray, window: int = STEP_RATIO_WINDOW, jump_ratio: float = JUMP_RATIO,
                 stall_ratio: float = STALL_RATIO, kink_ratio: float = KINK_RATIO,
                 spike_ratio: float = SPIKE_RATIO, min_move: float = MIN_MOVE) -> StepProfile:
    """Steps, ratios, jumps and stalls of one motion [T, J, 3] (see the section comment).

    A jump: step > ``min_move`` and > ``jump_ratio`` x the neighbours' median. A stall: median >
    ``min_move``, step < ``stall_ratio`` x median and kink > ``kink_ratio`` x median. A spike:
    kink > ``min_move`` and > ``spike_ratio`` x max(median, ``min_move``).
    """
    p = _positions(positions, 2)
    if p.ndim != 3:
        raise ValueError(f"step_profile takes one motion [T, J, 3], got shape {p.shape}")
    s = frame_steps(p)
    med = neighbour_median(s, window)
    floor = min_move / 10
    ratio = np.maximum(s, floor) / np.maximum(np.nan_to_num(med, nan=0.0), floor)
    k = frame_kinks(p)
    kink = np.maximum(k[:-1], k[1:])
    jump = (s > min_move) & (s > jump_ratio * med)
    stall = (med > min_move) & (s < stall_ratio * med) & (kink > kink_ratio * med)
    spike = (kink > min_move) & (kink > spike_ratio * np.maximum(np.nan_to_num(med, nan=0.0), min_move))
    return StepProfile(s, med, ratio, kink, jump, stall, spike)


@dataclass(frozen=True)
class StepSummary:
    """Steps of a set of transitions: their count, the largest step and kink (m), the largest and
    smallest ratio to the neighbours, how many steps exceed the reference, and how many transitions
    are jumps, stalls or spikes."""

    transitions: int
    max_step: float
    max_kink: float
    max_ratio: float
    min_ratio: float
    over_reference: int
    jumps: int
    stalls: int
    spikes: int

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def summarize_steps(profile: StepProfile, transitions: Sequence[int] | np.ndarray, reference: float) -> StepSummary:
    """Summary of a :class:`StepProfile` at the given transition indices (t = frames t -> t+1).

    ``over_reference`` counts steps above ``reference`` (e.g. the real data's 99.9th percentile).
    """
    n = len(profile.steps)
    idx = np.unique(np.asarray(transitions, dtype=np.int64))
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"transition indices must be in 0..{n - 1}, got {idx.min()}..{idx.max()}")
    if idx.size == 0:
        return StepSummary(0, float("nan"), float("nan"), float("nan"), float("nan"), 0, 0, 0, 0)
    sel, ratio = profile.steps[idx], profile.ratio[idx]
    return StepSummary(int(idx.size), float(sel.max()), float(profile.kink[idx].max()), float(ratio.max()),
                       float(ratio.min()), int((sel > reference).sum()), int(profile.jump[idx].sum()),
                       int(profile.stall[idx].sum()), int(profile.spike[idx].sum()))


def transitions_near(frames: Sequence[int] | np.ndarray, num_frames: int, radius: int = 1) -> np.ndarray:
    """Transition indices within ``radius`` of each frame boundary f (between frames f-1 and f).

    The boundary at frame f is transition f-1; ``radius`` r adds f-1-r .. f-1+r. Indices outside
    0..num_frames-2 are dropped. Returns sorted unique indices.
    """
    out = [np.arange(int(f) - 1 - radius, int(f) + radius) for f in frames]
    idx = np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)
    return idx[(idx >= 0) & (idx <= num_frames - 2)].astype(np.int64)


def discontinuities(positions: np.ndarray, frame_sets: dict[str, Sequence[int] | np.ndarray],
                    reference: float, radius: int = 2, interior: bool = True,
                    **kwargs) -> dict[str, StepSummary]:
    """Step summaries of one motion [T, J, 3] at named sets of frame boundaries.

    ``frame_sets`` maps a name (e.g. "boundaries", "seams", "piece_edges") to frame boundaries f
    (between frames f-1 and f); each is widened by ``radius`` transitions (see
    :func:`transitions_near`). With ``interior`` an "interior" entry summarises every transition
    in none of the sets. For a loop of period P, tile its features twice, recover the joints and
    give the seam as frame P. ``kwargs`` go to :func:`step_profile`.
    """
    profile = step_profile(positions, **kwargs)
    n = len(profile.steps)
    out, used = {}, np.zeros(n, dtype=bool)
    for name, frames in frame_sets.items():
        idx = transitions_near(frames, n + 1, radius)
        used[idx] = True
        out[name] = summarize_steps(profile, idx, reference)
    if interior:
        out["interior"] = summarize_steps(profile, np.flatnonzero(~used), reference)
    return out


@dataclass(frozen=True)
class StepReference:
    """Step statistics of real motion: the ``q``-th percentile and the maximum (m), the median,
    and the rates of jumps, stalls and spikes per transition (how often real data trips the tests)."""

    q: float
    quantile: float
    maximum: float
    median: float
    jump_rate: float
    stall_rate: float
    spike_rate: float
    transitions: int


def step_reference(motions: Sequence[np.ndarray], q: float = 99.9, **kwargs) -> StepReference:
    """Step statistics over real motions (each [T, J, 3]); ``kwargs`` go to :func:`step_profile`."""
    profiles = [step_profile(m, **kwargs) for m in motions]
    if not profiles:
        raise ValueError("step_reference needs at least one motion")
    s = np.concatenate([p.steps for p in profiles])
    jumps = sum(int(p.jump.sum()) for p in profiles)
    stalls = sum(int(p.stall.sum()) for p in profiles)
    spikes = sum(int(p.spike.sum()) for p in profiles)
    return StepReference(q, float(np.percentile(s, q)), float(s.max()), float(np.median(s)),
                         jumps / len(s), stalls / len(s), spikes / len(s), int(len(s)))
