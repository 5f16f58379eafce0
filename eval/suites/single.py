"""``single``: one clip per drawn test caption, at the caption's real clip length.

Per replication ``samples_per_rep`` (caption, length) pairs are drawn from the test split (every
clip once before any repeats, one random caption each). Scored: R-precision top-1/2/3 (batches of
32), MM-Dist, FID against the test split, diversity. Control: the same motions scored against a
derangement of their captions (``"<method> (shuffled text)"``).

Settings that reproduce MDM's released evaluation (``eval_humanml``; the ``mdm`` protocol of
:mod:`eval.suites.presets`):

- ``lengths="unit"``: each caption's length is the official evaluation crop of its clip (whole
  units of 4 frames, one unit fewer with probability 1/3), not the clip's full length.
- ``padding="attended"``: every caption is generated at the model's maximum (196 frames) and the
  first ``length`` frames are scored, as the release does for models trained without a frame mask
  (their attention sees the padding); ``"masked"`` generates each clip at its own length, which
  equals the release for models trained with ``mask_frames``; ``"checkpoint"`` is resolved from
  the model's ``args.json`` by the benchmark.
- MultiModality (``mm_batches`` > 0): ``mm_batches`` batches of the replication, chosen at random,
  are generated ``mm_repeats`` times in all (the first time is the replication's own sample);
  MultiModality is the mean distance over ``mm_pairs`` random pairs of generations per caption
  (:func:`eval.metrics.multimodality`). The release: 100 // 32 + 1 = 4 batches (128 captions),
  30 generations, 10 pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from eval import metrics as M
from eval.data import random_unit_crop

from .base import Suite, check_whole, register_suite, setting
from .scoring import (MM_BATCHES, MM_PAIRS, Reference, Row, Scored, SplitData, caption_rows, caption_scores,
                      check_motions, real_caption_scores, rng_for, shuffled_text)

CAPTION_METRICS = ("top1", "top2", "top3", "fid", "mm_dist", "diversity")
CAPTION_BARS = ("top3", "fid", "mm_dist", "diversity")
LENGTHS = ("clip", "unit")
PADDINGS = ("masked", "attended", "checkpoint")


@register_suite
@dataclass(frozen=True)
class SingleSuite(Suite):
    """One clip per test caption at its real length."""

    lengths: str = setting("clip", "caption lengths: the clip's (clip) or the official evaluation crop's (unit)",
                           choices=LENGTHS)
    padding: str = setting("masked", "masked: each clip at its own length; attended: generated at the model's "
                                     "maximum, the first frames scored; checkpoint: from the model's args.json",
                           choices=PADDINGS)
    mm_batches: int = setting(0, "batches generated mm_repeats times for MultiModality (0: none; MDM: 4)")
    mm_repeats: int = setting(30, "generations per MultiModality caption")
    mm_pairs: int = setting(10, "pairs per MultiModality caption")

    name = "single"
    summary = "one clip per test caption at its real length; R-precision, FID, MM-Dist, diversity, MultiModality"
    default_methods = ("collage",)
    table_metrics = CAPTION_METRICS + ("multimodality",)
    bar_metrics = CAPTION_BARS

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, value, choices in (("lengths", self.lengths, LENGTHS), ("padding", self.padding, PADDINGS)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")
        check_whole("mm_batches", self.mm_batches, 0)
        check_whole("mm_repeats", self.mm_repeats, 2, " (MultiModality compares generations)")
        check_whole("mm_pairs", self.mm_pairs, 1, f" and at most mm_repeats ({self.mm_repeats})", self.mm_repeats)
        if self.mm_batches > math.ceil(self.samples_per_rep / self.batch_size):
            raise ValueError(f"mm_batches {self.mm_batches} exceeds the {math.ceil(self.samples_per_rep / self.batch_size)} "
                             "batches of a replication; use a smaller --mm_batches or a larger --samples_per_rep")

    # ---- plan
    def caption_length(self, clip, crops: np.random.Generator, max_frames: int) -> tuple[int, Any]:
        """Generated frames and scored crop of one drawn caption (see the module doc)."""
        if self.padding == "checkpoint":
            raise ValueError("padding 'checkpoint' must be resolved from the model first "
                             "(eval.suites.presets.checkpoint_padding); pass masked or attended")
        frames = len(random_unit_crop(clip.features, crops, max_frames=max_frames)) if self.lengths == "unit" \
            else clip.length
        return (max_frames, (0, frames)) if self.padding == "attended" else (frames, None)

    def rows(self, data: SplitData, rep: int) -> list[Row]:
        """The replication's captions, then (MultiModality) the repeats of the chosen batches."""
        main = caption_rows(data, self.samples_per_rep, self.seed, rep,
                            lambda clip, crops: self.caption_length(clip, crops, data.spec.max_frames))
        size, n = self.batch_size, self.samples_per_rep
        repeats = [main[i] for b in self.mm_chosen(rep) for _ in range(self.mm_repeats - 1)
                   for i in range(b * size, min((b + 1) * size, n))] if self.mm_batches else []
        return main + repeats     # the layout mm_groups indexes

    def mm_chosen(self, rep: int) -> list[int]:
        """The batches generated again for MultiModality (sorted, as the release)."""
        n_batches = math.ceil(self.samples_per_rep / self.batch_size)
        rng = rng_for(self.seed, rep, MM_BATCHES)
        return sorted(int(b) for b in rng.choice(n_batches, self.mm_batches, replace=False))

    def mm_groups(self, rep: int) -> list[list[int]]:
        """Per MultiModality caption, the row indices of its generations (its own row first).

        Rows after the replication's ``samples_per_rep`` hold, per chosen batch, ``mm_repeats - 1``
        copies of that batch, one after the other (each copy one generated batch).
        """
        n, size = self.samples_per_rep, self.batch_size
        groups, extra = [], n
        for b in self.mm_chosen(rep):
            own = list(range(b * size, min((b + 1) * size, n)))
            copies = [extra + k * len(own) for k in range(self.mm_repeats - 1)]
            groups += [[i] + [c + j for c in copies] for j, i in enumerate(own)]
            extra += len(own) * (self.mm_repeats - 1)
        return groups

    # ---- scores
    def score(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, rep: int) -> Scored:
        check_motions(rows, motions)
        n = self.samples_per_rep if self.mm_batches else len(rows)
        scored = caption_scores(rows[:n], motions[:n], ref, self, self.seed, rep)
        if self.mm_batches:
            scored.metrics["multimodality"] = self.multimodality(rows, motions, ref, rep)
        return scored

    def multimodality(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, rep: int) -> float:
        """MultiModality of the chosen batches' generations (their scored crops)."""
        groups = np.array(self.mm_groups(rep))                                  # [C, R]
        flat = [int(i) for i in groups.reshape(-1)]
        crops = [motions[i] if rows[i].crop is None else motions[i][rows[i].crop[0]:sum(rows[i].crop)] for i in flat]
        emb = ref.embedder.motions(crops).reshape(*groups.shape, -1)             # [C, R, E]
        return M.multimodality(emb, self.mm_pairs, rng_for(self.seed, rep, MM_PAIRS))

    def score_real(self, rows: Sequence[Row], ref: Reference, rep: int) -> Scored:
        return real_caption_scores(rows[:self.samples_per_rep], ref, self, self.seed, rep)

    def controls(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference,
                 rep: int) -> dict[str, Scored]:
        n = self.samples_per_rep
        main = shuffled_text(rows[:n], self.seed, rep)
        return {"shuffled text": caption_scores(main, motions[:n], ref, self, self.seed, rep)}

    def describe(self, notes: Mapping[str, Any]) -> str:
        length = "the official evaluation crop length" if self.lengths == "unit" else "its real clip length"
        pad = (", generated at the model's maximum length and scored on the first frames"
               if self.padding == "attended" else "")
        mm = (f"; MultiModality: {self.mm_batches} batches generated {self.mm_repeats} times, {self.mm_pairs} pairs "
              "per caption" if self.mm_batches else "")
        return f"{self.samples_per_rep} test captions per replication, each at {length}{pad}{mm}."
