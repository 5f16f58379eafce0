"""What every suite shares: the test data, the rows it generates, evaluator embeddings, the real
references and the metric blocks (matching scores, transition windows, the shuffled-text control).

Randomness: every draw comes from a generator seeded by ``(seed, replication, purpose)``
(:func:`rng_for`, one salt per purpose below), so a replication's prompts, crops and metric draws
do not depend on the method, the batch size or the number of processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from eval import metrics as M
from eval.data import MotionClip, load_clips, pad_batch, random_unit_crop
from motion_collage.representation import features_to_joints
from motion_core.spec import HUMANML3D, DatasetSpec

# Salts naming what a generator draws (so two purposes never share a stream).
PROMPTS, CROPS, REAL, SHUFFLE, METRICS, REFERENCE, WINDOWS, MM_BATCHES, MM_PAIRS, STEPS = range(1, 11)


def rng_for(seed: int, rep: int, purpose: int) -> np.random.Generator:
    """The generator of one purpose (a salt above) in replication ``rep``."""
    return np.random.default_rng([seed, rep, purpose])


class MetricSettings(Protocol):
    """The settings the metric blocks read (every suite has them)."""

    diversity_pairs: int
    r_precision_batch: int


# --------------------------------------------------------------------------------------------
# Test data and rows
# --------------------------------------------------------------------------------------------

@dataclass
class SplitData:
    """The test clips (raw features [T, D]) and the representation they use."""

    clips: list[MotionClip]
    spec: DatasetSpec = HUMANML3D
    root: str = ""
    split: str = "test"

    @classmethod
    def load(cls, root: str | Path, split: str = "test", spec: DatasetSpec = HUMANML3D) -> "SplitData":
        """The usable clips of ``split``; a split without any is a ValueError."""
        clips = load_clips(root, split, spec)
        if not clips:
            raise ValueError(f"no usable clip in split {split!r} of {root} (lengths {spec.min_frames}.."
                             f"{spec.max_frames} frames)")
        return cls(clips, spec, str(root), split)

    @property
    def fps(self) -> float:
        return self.spec.fps

    def by_name(self) -> dict[str, MotionClip]:
        """The clips by name."""
        return {c.name: c for c in self.clips}


@dataclass(frozen=True)
class Row:
    """One generated motion: its segments ``(prompt, frames)``, the evaluator tokens and source clip
    of each segment, and for the long suite the scored crop ``(start, frames)``."""

    segments: tuple[tuple[str, int], ...]
    tokens: tuple[tuple[str, ...], ...]
    clips: tuple[str, ...]
    crop: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return int(sum(f for _, f in self.segments))

    @property
    def boundaries(self) -> list[int]:
        return [int(b) for b in np.cumsum([f for _, f in self.segments])[:-1]]


def draw_items(data: SplitData, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` (clip index, caption index) pairs: clips in successive random permutations (every clip
    once before any repeats), one random caption each."""
    order: list[int] = []
    while len(order) < n:
        order += rng.permutation(len(data.clips)).tolist()
    return [(i, int(rng.integers(len(data.clips[i].captions)))) for i in order[:n]]


def caption_rows(data: SplitData, n: int, seed: int, rep: int,
                 length: Callable[[MotionClip, np.random.Generator], tuple[int, Optional[tuple[int, int]]]]
                 ) -> list[Row]:
    """``n`` one-segment rows on drawn test captions; ``length(clip, crop_rng)`` gives each row's
    frames and scored crop."""
    items = draw_items(data, n, rng_for(seed, rep, PROMPTS))
    crops = rng_for(seed, rep, CROPS)
    rows = []
    for ci, ki in items:
        clip = data.clips[ci]
        cap = clip.captions[ki]
        frames, crop = length(clip, crops)
        rows.append(Row(((cap.text, frames),), (tuple(cap.tokens),), (clip.name,), crop))
    return rows


def check_motions(rows: Sequence[Row], motions: Sequence[np.ndarray]) -> None:
    """One motion per row, each as long as its row."""
    if len(rows) != len(motions):
        raise ValueError(f"{len(rows)} rows but {len(motions)} motions")
    for r, m in zip(rows, motions):
        if len(m) != r.num_frames:
            raise ValueError(f"a motion has {len(m)} frames, its row {r.num_frames}")


# --------------------------------------------------------------------------------------------
# Embeddings and references
# --------------------------------------------------------------------------------------------

class Embedder:
    """Evaluator embeddings of raw (de-normalised) features and of token lists, with a text cache."""

    def __init__(self, evaluator, batch_size: int = 64) -> None:
        if evaluator.stats is None:
            raise ValueError("the evaluator carries no normalisation statistics; give it EvaluatorStats")
        self.evaluator = evaluator
        self.batch_size = batch_size
        self._texts: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def max_frames(self) -> int:
        return int(self.evaluator.config.max_frames)

    @torch.no_grad()
    def motions(self, motions: Sequence[np.ndarray]) -> np.ndarray:
        """Raw features [T_i, D] (4 <= T_i; longer than the evaluator's maximum is cut) -> [N, E]."""
        out = []
        for start in range(0, len(motions), self.batch_size):
            chunk = [np.asarray(m[: self.max_frames], dtype=np.float32) for m in motions[start:start + self.batch_size]]
            x, lengths = pad_batch([self.evaluator.normalise(m) for m in chunk], self.max_frames)
            out.append(self.evaluator.embed_motion(x, lengths).cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, self.evaluator.config.embed_dim))

    def texts(self, captions: Sequence[Sequence[str] | str]) -> np.ndarray:
        """Token lists (``word/POS``, as in the dataset files) or raw caption strings -> [N, E]."""
        keys = [c if isinstance(c, str) else tuple(c) for c in captions]
        missing = list(dict.fromkeys(k for k in keys if k not in self._texts))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            emb = self.evaluator.embed_texts([k if isinstance(k, str) else list(k) for k in chunk])
            for k, e in zip(chunk, emb.cpu().numpy().astype(np.float64)):
                self._texts[k] = e
        if not keys:
            return np.zeros((0, self.evaluator.config.embed_dim))
        return np.stack([self._texts[k] for k in keys])


def motion_joints(features: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Raw features [T, D] -> joint positions [T, J, 3] (float64)."""
    return np.asarray(features_to_joints(np.asarray(features, dtype=np.float64), spec))


@dataclass
class Reference:
    """Real-data references: embeddings of the test split (one official crop per clip), the real
    per-frame jerk, and real transition-window crops per window length."""

    data: SplitData
    embedder: Embedder
    seed: int = 0
    real_crops: int = 512
    real_jerk_override: float | None = None
    _motion_emb: np.ndarray | None = None
    _real_jerk: float | None = None
    _step_quantile: float | None = None
    _windows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def step_quantile(self) -> float:
        """99.9th percentile of the single-frame step (largest joint move relative to the root) over
        the real test clips: the reference of the discontinuity counts."""
        if self._step_quantile is None:
            joints = [motion_joints(c.features, self.data.spec) for c in self.data.clips]
            self._step_quantile = M.step_reference(joints).quantile
        return self._step_quantile

    @property
    def motion_emb(self) -> np.ndarray:
        if self._motion_emb is None:
            rng = rng_for(self.seed, 0, REFERENCE)
            self._motion_emb = self.embedder.motions([random_unit_crop(c.features, rng) for c in self.data.clips])
        return self._motion_emb

    @property
    def real_jerk(self) -> float:
        """Mean per-frame jerk of the real test clips (the AUJ reference), unless overridden."""
        if self.real_jerk_override is not None:
            return float(self.real_jerk_override)
        if self._real_jerk is None:
            total, count = 0.0, 0
            for c in self.data.clips:
                j = M.frame_jerk(motion_joints(c.features, self.data.spec))
                total, count = total + float(j.sum()), count + j.size
            self._real_jerk = total / max(count, 1)
        return self._real_jerk

    def window_crops(self, window: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``count`` random real crops of ``window`` frames: features [count, W, D], joints [count, W, J, 3]."""
        long_enough = [c for c in self.data.clips if c.length >= window]
        if not long_enough:
            raise ValueError(f"no test clip has {window} frames for a transition window; use a smaller window")
        feats, joints = [], []
        for _ in range(count):
            clip = long_enough[int(rng.integers(len(long_enough)))]
            start = int(rng.integers(clip.length - window + 1))
            f = clip.features[start:start + window]
            feats.append(f)
            joints.append(motion_joints(f, self.data.spec))
        return np.stack(feats), np.stack(joints)

    def window_reference(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings [N, E] and joints of the fixed reference set of real windows."""
        if window not in self._windows:
            feats, joints = self.window_crops(window, self.real_crops, rng_for(self.seed, window, WINDOWS))
            self._windows[window] = (self.embedder.motions(list(feats)), joints)
        return self._windows[window]


# --------------------------------------------------------------------------------------------
# Metric blocks
# --------------------------------------------------------------------------------------------

@dataclass
class Scored:
    """Metrics of one (method, replication) and optional curves (e.g. the mean jerk curve)."""

    metrics: dict[str, float]
    curves: dict[str, np.ndarray] = field(default_factory=dict)


def matching_metrics(text_emb: np.ndarray, motion_emb: np.ndarray, reference: np.ndarray,
                     settings: MetricSettings, rng: np.random.Generator, prefix: str = "") -> dict[str, float]:
    """top1/2/3, mm_dist, fid (vs ``reference`` embeddings), diversity of aligned pairs [N, E]."""
    n = len(motion_emb)
    scores = M.matching_scores(text_emb, motion_emb, batch_size=min(settings.r_precision_batch, n))
    out = {f"{prefix}top{k + 1}": float(v) for k, v in enumerate(scores.r_precision)}
    out[f"{prefix}mm_dist"] = scores.mm_dist
    out[f"{prefix}fid"] = M.fid(motion_emb, reference)
    out[f"{prefix}diversity"] = M.diversity(motion_emb, min(settings.diversity_pairs, n), rng)
    return out


def transition_scores(windows_feats: list[np.ndarray], windows_joints: list[np.ndarray], ref: Reference,
                      window: int, settings: MetricSettings, rng: np.random.Generator,
                      prefix: str = "tr_") -> tuple[dict[str, float], np.ndarray]:
    """FID and diversity of windows [W, D] against real windows, their mean jerk curve, PJ and AUJ."""
    ref_emb, _ = ref.window_reference(window)
    emb = ref.embedder.motions(windows_feats)
    curve = M.jerk_curve(np.stack(windows_joints))
    n = len(emb)
    out = {f"{prefix}fid": M.fid(emb, ref_emb) if n >= 2 else float("nan"),
           f"{prefix}diversity": M.diversity(emb, min(settings.diversity_pairs, n), rng) if n >= 2 else float("nan"),
           f"{prefix}pj": M.peak_jerk(curve), f"{prefix}auj": M.area_under_jerk(curve, ref.real_jerk)}
    return out, curve


def discontinuity_scores(joints: Sequence[np.ndarray], marks: Sequence[Sequence[int]], ref: Reference,
                         name: str, radius: int = 2) -> dict[str, float]:
    """Single-frame steps (eval.metrics.discontinuities) within ``radius`` transitions of the marked
    frame boundaries of each motion [T, J, 3] and everywhere else: ``{name}_step`` the largest step
    near a mark (m), ``{name}_over`` steps above the real 99.9th percentile per mark, ``{name}_flags``
    jumps + stalls + spikes per mark, ``in_flags`` the same per 100 transitions away from the marks.
    The suites use the half transition window as ``radius``: a collage's snaps sit at the edges of
    its overlaps, several frames from the boundary itself."""
    big, over, flags, n_marks, in_flags, in_n = 0.0, 0, 0, 0, 0, 0
    for j, m in zip(joints, marks):
        found = M.discontinuities(j, {name: list(m)}, ref.step_quantile, radius=radius)
        at, rest = found[name], found["interior"]
        if at.transitions:
            big = max(big, at.max_step)
        over, flags, n_marks = over + at.over_reference, flags + at.jumps + at.stalls + at.spikes, n_marks + len(m)
        in_flags, in_n = in_flags + rest.jumps + rest.stalls + rest.spikes, in_n + rest.transitions
    per = max(n_marks, 1)
    return {f"{name}_step": big, f"{name}_over": over / per, f"{name}_flags": flags / per,
            "in_flags": 100.0 * in_flags / max(in_n, 1)}


def real_step_scores(ref: Reference, window: int, count: int, rng: np.random.Generator, name: str) -> dict[str, float]:
    """:func:`discontinuity_scores` of real motion: crops of two windows (one where no clip is that
    long) whose middle stands for a mark, scored with the half window as radius like generated rows."""
    span = 2 * window if any(c.length >= 2 * window for c in ref.data.clips) else window
    _, joints = ref.window_crops(span, count, rng)
    return discontinuity_scores(list(joints), [[span // 2]] * len(joints), ref, name, radius=window // 2)


def caption_scores(rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, settings: MetricSettings,
                   seed: int, rep: int) -> Scored:
    """One-segment rows: matching metrics of each motion (its crop when the row has one)."""
    check_motions(rows, motions)
    clips = [m if r.crop is None else m[r.crop[0]:r.crop[0] + r.crop[1]] for r, m in zip(rows, motions)]
    text_emb = ref.embedder.texts([r.tokens[0] for r in rows])
    return Scored(matching_metrics(text_emb, ref.embedder.motions(clips), ref.motion_emb, settings,
                                   rng_for(seed, rep, METRICS)))


def real_caption_scores(rows: Sequence[Row], ref: Reference, settings: MetricSettings, seed: int,
                        rep: int) -> Scored:
    """One-segment rows: the same scores on an official random crop of each row's real clip."""
    rng = rng_for(seed, rep, REAL)
    by_name = ref.data.by_name()
    clips = [random_unit_crop(by_name[r.clips[0]].features, rng) for r in rows]
    text_emb = ref.embedder.texts([r.tokens[0] for r in rows])
    return Scored(matching_metrics(text_emb, ref.embedder.motions(clips), ref.motion_emb, settings,
                                   rng_for(seed, rep, METRICS)))


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (n >= 2)."""
    while True:
        p = rng.permutation(n)
        if n < 2 or not (p == np.arange(n)).any():
            return p


def shuffled_text(rows: Sequence[Row], seed: int, rep: int) -> list[Row]:
    """The rows with their captions deranged (each motion keeps its frames, gets another row's text)."""
    perm = derangement(len(rows), rng_for(seed, rep, SHUFFLE))
    return [Row(rows[i].segments, rows[p].tokens, rows[i].clips, rows[i].crop) for i, p in enumerate(perm)]
