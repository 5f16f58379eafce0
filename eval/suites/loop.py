"""``loop``: seamless loops of ``loop_seconds``, one per drawn test caption.

Scored: the window across the seam (the last frames followed by the first) against a window inside
the loop (centred half a period away): jerk curves, PJ, AUJ, window FID and diversity; the peak
jerk at the seam and inside; plus R-precision, MM-Dist and FID of the whole loop. Methods: those
that can close a loop (``MethodSpec.loops``) and the baseline ``concat``, an open collage whose
end is joined to its start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from eval import metrics as M
from motion_collage.methods import METHODS, get_method, loop_methods

from .base import MethodCall, WindowedSuite, check_seconds, register_suite, setting
from .scoring import (METRICS, REAL, STEPS, Reference, Row, Scored, SplitData, caption_rows, check_motions,
                      discontinuity_scores, matching_metrics, motion_joints, real_step_scores, rng_for,
                      transition_scores)

CONCAT = "concat"
CONCAT_METHOD = "collage"       # what the concat baseline generates (open), joined end to start when scored


@register_suite
@dataclass(frozen=True)
class LoopSuite(WindowedSuite):
    """Loops: the seam window against a window inside the loop."""

    loop_seconds: float = setting(6.0, "period of each loop in seconds")

    name = "loop"
    summary = "loops of 6 s; the window across the seam against a window inside the loop"
    table_metrics = ("top3", "fid", "mm_dist", "seam_pj", "interior_pj", "seam_auj", "interior_auj", "seam_fid",
                     "interior_fid", "seam_jerk_peak", "interior_jerk_peak", "seam_step", "seam_over",
                     "seam_flags", "in_flags")
    bar_metrics = ("seam_pj", "interior_pj", "seam_auj", "interior_auj", "seam_fid", "seam_step")
    jerk_curves = ("seam_jerk", "interior_jerk")

    default_methods = ("collage", "average", "doubletake", CONCAT)     # the published comparison

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seconds("loop_seconds", self.loop_seconds)

    def loop_frames(self, fps: float) -> int:
        return int(round(self.loop_seconds * fps))

    def rows(self, data: SplitData, rep: int) -> list[Row]:
        period = self.loop_frames(data.fps)
        if self.transition_window > period:
            raise ValueError(f"transition window ({self.transition_window} frames) longer than the loop "
                             f"({period} frames); use a smaller --transition_window or a longer --loop_seconds")
        self.check_reference(data)
        return caption_rows(data, self.samples_per_rep, self.seed, rep, lambda clip, _: (period, None))

    # ---- methods
    def method_names(self) -> list[str]:
        return loop_methods() + [CONCAT]

    def method_call(self, name: str, overrides: Optional[Mapping[str, Any]] = None) -> MethodCall:
        if name == CONCAT:
            return MethodCall(CONCAT, CONCAT_METHOD, get_method(CONCAT_METHOD).make_options(overrides or {}))
        if name in METHODS and not METHODS[name].loops:
            raise ValueError(f"method {name!r} cannot make a loop; the loop suite takes {self.method_names()}")
        self.check_method(name)
        return MethodCall(name, name, get_method(name).make_options(dict(overrides or {})), loop=True)

    # ---- scores
    def score(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, rep: int) -> Scored:
        """Each loop unrolled over two periods (the root drift of one period carries over), seam at frame P."""
        check_motions(rows, motions)
        period, w = rows[0].num_frames, self.transition_window
        if w > period:
            raise ValueError(f"transition window ({w}) longer than the loop ({period} frames)")
        seam_f, seam_j, mid_f, mid_j, tiled_joints = [], [], [], [], []
        for m in motions:
            tiled = np.concatenate([m, m])
            joints = motion_joints(tiled, ref.data.spec)
            tiled_joints.append(joints)
            for lo, feats, js in ((period - w // 2, seam_f, seam_j), (period // 2 - w // 2, mid_f, mid_j)):
                feats.append(tiled[lo:lo + w])
                js.append(joints[lo:lo + w])
        rng = rng_for(self.seed, rep, METRICS)
        out = matching_metrics(ref.embedder.texts([r.tokens[0] for r in rows]), ref.embedder.motions(list(motions)),
                               ref.motion_emb, self, rng)
        seam, seam_curve = transition_scores(seam_f, seam_j, ref, w, self, rng, "seam_")
        inner, inner_curve = transition_scores(mid_f, mid_j, ref, w, self, rng, "interior_")
        sj = M.seam_jerk(np.stack(tiled_joints), period)
        out.update(seam)
        out.update(inner)
        out["seam_jerk_peak"], out["interior_jerk_peak"] = sj.seam_peak, sj.interior_peak
        out.update(discontinuity_scores(tiled_joints, [[period]] * len(tiled_joints), ref, "seam", radius=w // 2))
        return Scored(out, {"seam_jerk": seam_curve, "interior_jerk": inner_curve})

    def score_real(self, rows: Sequence[Row], ref: Reference, rep: int) -> Scored:
        """Real windows stand for both the seam and the interior."""
        rng = rng_for(self.seed, rep, REAL)
        feats, joints = ref.window_crops(self.transition_window, max(len(rows), 2), rng)
        out: dict[str, float] = {}
        curves = {}
        for prefix in ("seam_", "interior_"):
            tr, curve = transition_scores(list(feats), list(joints), ref, self.transition_window, self, rng, prefix)
            out.update(tr)
            curves[prefix + "jerk"] = curve
        out.update(real_step_scores(ref, self.transition_window, max(len(rows), 2), rng_for(self.seed, rep, STEPS),
                                    "seam"))
        return Scored(out, curves)

    def describe(self, notes: Mapping[str, Any]) -> str:
        return (f"{self.samples_per_rep} loops of {self.loop_seconds:g} s per replication; seam and interior "
                f"windows of {self.transition_window} frames; "
                f"AUJ reference jerk {notes.get('real_jerk', float('nan')):.4f}; "
                "`concat` = an open motion joined end to start.")
