"""``single``: one clip per drawn test caption, at the caption's real clip length.

Per replication ``samples_per_rep`` (caption, length) pairs are drawn from the test split (every
clip once before any repeats, one random caption each). Scored: R-precision top-1/2/3 (batches of
32), MM-Dist, FID against the test split, diversity. Control: the same motions scored against a
derangement of their captions (``"<method> (shuffled text)"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .base import Suite, register_suite
from .scoring import (Reference, Row, Scored, SplitData, caption_rows, caption_scores, real_caption_scores,
                      shuffled_text)

CAPTION_METRICS = ("top1", "top2", "top3", "fid", "mm_dist", "diversity")
CAPTION_BARS = ("top3", "fid", "mm_dist", "diversity")


@register_suite
@dataclass(frozen=True)
class SingleSuite(Suite):
    """One clip per test caption at its real length."""

    name = "single"
    summary = "one clip per test caption at its real length; R-precision, FID, MM-Dist, diversity"
    default_methods = ("collage",)
    table_metrics = CAPTION_METRICS
    bar_metrics = CAPTION_BARS

    def rows(self, data: SplitData, rep: int) -> list[Row]:
        return caption_rows(data, self.samples_per_rep, self.seed, rep, lambda clip, _: (clip.length, None))

    def score(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, rep: int) -> Scored:
        return caption_scores(rows, motions, ref, self, self.seed, rep)

    def score_real(self, rows: Sequence[Row], ref: Reference, rep: int) -> Scored:
        return real_caption_scores(rows, ref, self, self.seed, rep)

    def controls(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference,
                 rep: int) -> dict[str, Scored]:
        return {"shuffled text": self.score(shuffled_text(rows, self.seed, rep), motions, ref, rep)}

    def describe(self, notes: Mapping[str, Any]) -> str:
        return f"{self.samples_per_rep} test captions per replication, each at its real clip length."
