"""Evaluation protocols: what to generate for a suite, and how to score what was generated.

Four suites (method.md §7, formats.md §5), each a plan of rows per replication plus a scorer:

=========  ==========================================================================================
suite      per replication
=========  ==========================================================================================
single     ``samples_per_rep`` (caption, length) pairs drawn from the test split; one clip each, of
           the caption's real clip length. R-precision top-1/2/3 (batches of 32), MM-Dist, FID
           against the test split, diversity. Plus a shuffled-text control: the same motions scored
           against a derangement of their captions.
long       the paper's long-motion benchmark: per drawn test caption a ``long_seconds`` (24 s) motion,
           every node on the same prompt (``transition="prompt"`` for the collage); a random crop of
           the caption's real clip length is scored like ``single``.
compose    FlowMDM's composition benchmark on scenes of consecutive test (caption, length) pairs
           (:mod:`eval.scenes`): each segment scored like ``single``; each transition on a window of
           ``transition_window`` frames centred on the boundary: transition FID and diversity against
           random real crops of that length, the mean jerk curve, Peak Jerk and Area Under the Jerk.
loop       looped motions of ``loop_seconds``: the window across the seam (last frames followed by
           the first) against a window inside the loop (centred half a period away): jerk curves,
           PJ, AUJ, transition FID; plus R-precision/MM-Dist/FID of the whole loop. The baseline
           ``concat`` generates a plain (open) motion and joins its end to its start.
=========  ==========================================================================================

Every suite also gets a ``real`` row: the same scores computed on real test motions.

Randomness: all draws come from generators seeded by ``(seed, replication, purpose)``, so a
replication's prompts, crops and metric draws do not depend on the method, the batch size or the
number of processes. Generation seeds are per row (``row_offset``), see ``motion_collage.pipeline``.
Numbers from our Bandai Namco evaluator are NOT comparable with published HumanML3D numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from eval import metrics as M
from eval.data import MotionClip, load_clips, pad_batch, random_unit_crop
from eval.scenes import Scene, build_scenes
from motion_collage.representation import features_to_joints
from motion_core.spec import HUMANML3D, DatasetSpec

SUITES = ("single", "long", "compose", "loop")
REAL = "real"
CONCAT = "concat"
SHUFFLED_SUFFIX = " (shuffled text)"
LOOP_METHODS = ("collage", "average", "doubletake", CONCAT)
DEFAULT_OVERLAP_SECONDS = 1.0
DEFAULT_HANDSHAKE = 20            # DoubleTake's HumanML3D defaults (method.md §6)
DEFAULT_BLEND = 10

# Salts naming what a generator draws (so two purposes never share a stream).
_PROMPTS, _CROPS, _REAL, _SHUFFLE, _METRICS, _REFERENCE, _WINDOWS = range(1, 8)


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of a suite. Defaults follow the published protocols; shrink them for CPU runs."""

    suite: str
    samples_per_rep: int = 1024          # single/long/loop: rows per replication (32 batches of 32)
    batch_size: int = 32                 # rows per generated batch
    seed: int = 0
    long_seconds: float = 24.0           # long: generated length
    loop_seconds: float = 6.0            # loop: period
    transition_window: int = 60          # compose/loop: frames per transition window (HumanML3D: 60)
    segments_per_scene: int = 32         # compose: FlowMDM uses 32
    num_scenes: int | None = None        # compose: scenes per replication (None: all of the group)
    scene_group: str = "all"             # compose: short / medium / long / all (eval.scenes)
    scenes_per_batch: int = 1            # compose: scenes generated together
    diversity_pairs: int = 300           # capped at the number of samples
    r_precision_batch: int = 32          # capped at the number of samples
    real_crops: int = 512                # compose/loop: real windows in the transition reference
    real_jerk: float | None = None       # AUJ reference; None: measured on the test split

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r}; expected one of {list(SUITES)}")
        if self.samples_per_rep < 2:
            raise ValueError(f"samples_per_rep must be >= 2 (FID needs two samples), got {self.samples_per_rep}")
        if self.transition_window < 8:
            raise ValueError(f"transition_window must be >= 8 frames, got {self.transition_window}")

    def long_frames(self, fps: float) -> int:
        return int(round(self.long_seconds * fps))

    def loop_frames(self, fps: float) -> int:
        return int(round(self.loop_seconds * fps))


def rng_for(seed: int, rep: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, rep, purpose])


# --------------------------------------------------------------------------------------------
# Test data and plans
# --------------------------------------------------------------------------------------------

@dataclass
class SplitData:
    """The test clips (raw features [T, D]) and the representation they use."""

    clips: list[MotionClip]
    spec: DatasetSpec = HUMANML3D
    root: str = ""

    @classmethod
    def load(cls, root: str | Path, split: str = "test", spec: DatasetSpec = HUMANML3D) -> "SplitData":
        clips = load_clips(root, split, spec)
        if not clips:
            raise ValueError(f"no usable clip in split {split!r} of {root} (lengths {spec.min_frames}.."
                             f"{spec.max_frames} frames)")
        return cls(clips, spec, str(root))

    @property
    def fps(self) -> float:
        return self.spec.fps


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


def compose_scenes(config: ProtocolConfig, data: SplitData) -> list[Scene]:
    scenes = build_scenes(data.clips, config.segments_per_scene, config.seed, data.fps,
                          num_scenes=config.num_scenes, groups=(config.scene_group,))[config.scene_group]
    if not scenes:
        raise ValueError(f"scene group {config.scene_group!r} has no clip in the test split")
    return scenes


def plan_rows(config: ProtocolConfig, data: SplitData, rep: int, scenes: Sequence[Scene] | None = None) -> list[Row]:
    """The rows replication ``rep`` generates (identical for every method)."""
    if config.suite == "compose":
        scenes = compose_scenes(config, data) if scenes is None else scenes
        return [Row(tuple(sc.rows), tuple(s.tokens for s in sc.segments), tuple(s.clip for s in sc.segments))
                for sc in scenes]
    rng = rng_for(config.seed, rep, _PROMPTS)
    items = draw_items(data, config.samples_per_rep, rng)
    crops = rng_for(config.seed, rep, _CROPS)
    rows = []
    for ci, ki in items:
        clip, cap = data.clips[ci], data.clips[ci].captions[ki]
        if config.suite == "single":
            frames, crop = clip.length, None
        elif config.suite == "long":
            frames = config.long_frames(data.fps)
            length = min(clip.length, frames, data.spec.max_frames)
            crop = (int(crops.integers(frames - length + 1)), length)
        else:
            frames, crop = config.loop_frames(data.fps), None
        rows.append(Row(((cap.text, frames),), (tuple(cap.tokens),), (clip.name,), crop))
    return rows


def row_batches(rows: Sequence[Row], config: ProtocolConfig) -> list[tuple[int, list[Row]]]:
    """(global index of the first row, rows) per generated batch."""
    size = config.scenes_per_batch if config.suite == "compose" else config.batch_size
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [(i, list(rows[i:i + size])) for i in range(0, len(rows), size)]


def method_call(suite: str, method: str, fps: float,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """(generation method, its options) for a benchmark method name in a suite.

    collage/average: ``overlap`` 1 s (+ ``transition="prompt"`` in the long suite, ``loop`` in the
    loop suite); doubletake: handshake 20, blend 10; autoregressive methods: their defaults (window
    = the model maximum, 50 % overlap). ``concat`` (loop suite only) is an open collage whose end is
    joined to its start. ``overrides`` maps a method name to options that replace these.
    """
    overlap = int(round(DEFAULT_OVERLAP_SECONDS * fps))
    base = CONCAT if method == CONCAT else method
    if suite == "loop" and method not in LOOP_METHODS:
        raise ValueError(f"method {method!r} cannot make a loop; the loop suite takes {list(LOOP_METHODS)}")
    if method == CONCAT and suite != "loop":
        raise ValueError("method 'concat' is the loop suite's baseline only")
    if base in ("collage", "average", CONCAT):
        options: dict[str, Any] = {"overlap": overlap}
        if base == "collage" and suite == "long":
            options["transition"] = "prompt"
    elif base == "doubletake":
        options = {"handshake": DEFAULT_HANDSHAKE, "blend": DEFAULT_BLEND}
    else:
        options = {}
    if suite == "loop" and base != CONCAT:
        options["loop"] = True
    options.update((overrides or {}).get(method, {}))
    return ("collage" if base == CONCAT else base), options


# --------------------------------------------------------------------------------------------
# Embeddings
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
    _windows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def motion_emb(self) -> np.ndarray:
        if self._motion_emb is None:
            rng = rng_for(self.seed, 0, _REFERENCE)
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
            feats, joints = self.window_crops(window, self.real_crops, rng_for(self.seed, window, _WINDOWS))
            self._windows[window] = (self.embedder.motions(list(feats)), joints)
        return self._windows[window]


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

def matching_metrics(text_emb: np.ndarray, motion_emb: np.ndarray, reference: np.ndarray, config: ProtocolConfig,
                     rng: np.random.Generator, prefix: str = "") -> dict[str, float]:
    """top1/2/3, mm_dist, fid (vs ``reference`` embeddings), diversity of aligned pairs [N, E]."""
    n = len(motion_emb)
    scores = M.matching_scores(text_emb, motion_emb, batch_size=min(config.r_precision_batch, n))
    out = {f"{prefix}top{k + 1}": float(v) for k, v in enumerate(scores.r_precision)}
    out[f"{prefix}mm_dist"] = scores.mm_dist
    out[f"{prefix}fid"] = M.fid(motion_emb, reference)
    out[f"{prefix}diversity"] = M.diversity(motion_emb, min(config.diversity_pairs, n), rng)
    return out


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (n >= 2)."""
    while True:
        p = rng.permutation(n)
        if n < 2 or not (p == np.arange(n)).any():
            return p


@dataclass
class Scored:
    """Metrics of one (method, replication) and optional curves (e.g. the mean jerk curve)."""

    metrics: dict[str, float]
    curves: dict[str, np.ndarray] = field(default_factory=dict)


def _transition_scores(windows_feats: list[np.ndarray], windows_joints: list[np.ndarray], ref: Reference,
                       window: int, config: ProtocolConfig, rng: np.random.Generator,
                       prefix: str = "tr_") -> tuple[dict[str, float], np.ndarray]:
    ref_emb, _ = ref.window_reference(window)
    emb = ref.embedder.motions(windows_feats)
    curve = M.jerk_curve(np.stack(windows_joints))
    n = len(emb)
    out = {f"{prefix}fid": M.fid(emb, ref_emb) if n >= 2 else float("nan"),
           f"{prefix}diversity": M.diversity(emb, min(config.diversity_pairs, n), rng) if n >= 2 else float("nan"),
           f"{prefix}pj": M.peak_jerk(curve), f"{prefix}auj": M.area_under_jerk(curve, ref.real_jerk)}
    return out, curve


def score_rows(config: ProtocolConfig, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference,
               rep: int) -> Scored:
    """Scores of one method's replication. ``motions``: raw features [T_row, D] per row."""
    if len(rows) != len(motions):
        raise ValueError(f"{len(rows)} rows but {len(motions)} motions")
    for r, m in zip(rows, motions):
        if len(m) != r.num_frames:
            raise ValueError(f"a motion has {len(m)} frames, its row {r.num_frames}")
    rng = rng_for(config.seed, rep, _METRICS)
    emb = ref.embedder
    spec = ref.data.spec
    if config.suite in ("single", "long"):
        clips = [m if r.crop is None else m[r.crop[0]:r.crop[0] + r.crop[1]] for r, m in zip(rows, motions)]
        text_emb = emb.texts([r.tokens[0] for r in rows])
        return Scored(matching_metrics(text_emb, emb.motions(clips), ref.motion_emb, config, rng))
    window = config.transition_window
    if config.suite == "compose":
        segs, seg_tokens, win_feats, win_joints = [], [], [], []
        for r, m in zip(rows, motions):
            bounds = [0] + r.boundaries + [r.num_frames]
            segs += [m[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            seg_tokens += list(r.tokens)
            joints = motion_joints(m, spec)
            for b in r.boundaries:
                lo = b - window // 2
                if lo >= 0 and lo + window <= len(m):
                    win_feats.append(m[lo:lo + window])
                    win_joints.append(joints[lo:lo + window])
        out = matching_metrics(emb.texts(seg_tokens), emb.motions(segs), ref.motion_emb, config, rng)
        if not win_feats:
            raise ValueError(f"no transition window of {window} frames fits inside the scenes")
        tr, curve = _transition_scores(win_feats, win_joints, ref, window, config, rng)
        out.update(tr)
        out["transitions"] = float(len(win_feats))
        return Scored(out, {"transition_jerk": curve})
    # loop: unroll two periods (the root drift of one period carries over), seam at frame P.
    period = rows[0].num_frames
    if window > period:
        raise ValueError(f"transition window ({window}) longer than the loop ({period} frames)")
    seam_f, seam_j, mid_f, mid_j, tiled_joints = [], [], [], [], []
    for m in motions:
        tiled = np.concatenate([m, m])
        joints = motion_joints(tiled, spec)
        tiled_joints.append(joints)
        lo = period - window // 2
        seam_f.append(tiled[lo:lo + window])
        seam_j.append(joints[lo:lo + window])
        lo = period // 2 - window // 2
        mid_f.append(tiled[lo:lo + window])
        mid_j.append(joints[lo:lo + window])
    out = matching_metrics(emb.texts([r.tokens[0] for r in rows]), emb.motions(list(motions)), ref.motion_emb,
                           config, rng)
    seam, seam_curve = _transition_scores(seam_f, seam_j, ref, window, config, rng, "seam_")
    inner, inner_curve = _transition_scores(mid_f, mid_j, ref, window, config, rng, "interior_")
    sj = M.seam_jerk(np.stack(tiled_joints), period)
    out.update(seam)
    out.update(inner)
    out["seam_jerk_peak"], out["interior_jerk_peak"] = sj.seam_peak, sj.interior_peak
    return Scored(out, {"seam_jerk": seam_curve, "interior_jerk": inner_curve})


def score_shuffled(config: ProtocolConfig, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference,
                   rep: int) -> Scored:
    """Single/long suites: the same motions scored against a derangement of their captions."""
    if config.suite not in ("single", "long"):
        raise ValueError("the shuffled-text control is defined for the single and long suites")
    perm = derangement(len(rows), rng_for(config.seed, rep, _SHUFFLE))
    shuffled = [Row(rows[i].segments, rows[p].tokens, rows[i].clips, rows[i].crop) for i, p in enumerate(perm)]
    return score_rows(config, shuffled, motions, ref, rep)


def score_real(config: ProtocolConfig, rows: Sequence[Row], ref: Reference, rep: int) -> Scored:
    """The ``real`` row: the suite's scores on real test motions."""
    rng = rng_for(config.seed, rep, _REAL)
    by_name = {c.name: c for c in ref.data.clips}
    if config.suite in ("single", "long"):
        clips = [random_unit_crop(by_name[r.clips[0]].features, rng) for r in rows]
        text_emb = ref.embedder.texts([r.tokens[0] for r in rows])
        return Scored(matching_metrics(text_emb, ref.embedder.motions(clips), ref.motion_emb, config,
                                       rng_for(config.seed, rep, _METRICS)))
    window = config.transition_window
    if config.suite == "compose":
        segs = [random_unit_crop(by_name[c].features, rng) for r in rows for c in r.clips]
        tokens = [t for r in rows for t in r.tokens]
        out = matching_metrics(ref.embedder.texts(tokens), ref.embedder.motions(segs), ref.motion_emb, config,
                               rng_for(config.seed, rep, _METRICS))
        n = sum(len(r.boundaries) for r in rows)
        feats, joints = ref.window_crops(window, max(n, 2), rng)
        tr, curve = _transition_scores(list(feats), list(joints), ref, window, config, rng)
        out.update(tr)
        out["transitions"] = float(len(feats))
        return Scored(out, {"transition_jerk": curve})
    feats, joints = ref.window_crops(window, max(len(rows), 2), rng)
    out = {}
    curves = {}
    for prefix in ("seam_", "interior_"):
        tr, curve = _transition_scores(list(feats), list(joints), ref, window, config, rng, prefix)
        out.update(tr)
        curves[prefix + "jerk"] = curve
    return Scored(out, curves)
