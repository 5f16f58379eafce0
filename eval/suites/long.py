"""``long``: DiffCollage's long-motion benchmark.

Per drawn test caption (drawn as in ``single``) a ``long_seconds`` (24 s) motion with every node on
that prompt (the collage's overlaps conditioned on it too: ``transition="prompt"``); a random crop
of the caption's real clip length is scored like ``single``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .base import Suite, check_seconds, register_suite, setting
from .scoring import Reference, Row, Scored, SplitData, caption_rows, caption_scores, real_caption_scores
from .single import CAPTION_BARS, CAPTION_METRICS


@register_suite
@dataclass(frozen=True)
class LongSuite(Suite):
    """24 s per test caption, scored on a crop of the caption's real length."""

    long_seconds: float = setting(24.0, "generated length in seconds")

    name = "long"
    summary = "24 s per test caption, one prompt on every node, scored on a crop of the real clip length"
    default_methods = ("collage", "replacement", "reconstruction", "average", "doubletake", "naive")
    table_metrics = CAPTION_METRICS
    bar_metrics = CAPTION_BARS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seconds("long_seconds", self.long_seconds)

    def long_frames(self, fps: float) -> int:
        return int(round(self.long_seconds * fps))

    def rows(self, data: SplitData, rep: int) -> list[Row]:
        frames = self.long_frames(data.fps)
        if frames < 1:
            raise ValueError(f"long_seconds {self.long_seconds:g} is shorter than one frame at {data.fps:g} fps")

        def length(clip, crops: np.random.Generator):
            scored = min(clip.length, frames, data.spec.max_frames)
            return frames, (int(crops.integers(frames - scored + 1)), scored)
        return caption_rows(data, self.samples_per_rep, self.seed, rep, length)

    def suite_options(self, method: str) -> dict[str, Any]:
        return {"transition": "prompt"} if method == "collage" else {}

    def score(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, rep: int) -> Scored:
        return caption_scores(rows, motions, ref, self, self.seed, rep)

    def score_real(self, rows: Sequence[Row], ref: Reference, rep: int) -> Scored:
        return real_caption_scores(rows, ref, self, self.seed, rep)

    def describe(self, notes: Mapping[str, Any]) -> str:
        return (f"{self.samples_per_rep} test captions per replication, {self.long_seconds:g} s each "
                "(one prompt for all nodes), scored on a random crop of the caption's real clip length.")
