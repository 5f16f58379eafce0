"""``compose``: FlowMDM's composition benchmark.

Scenes of consecutive test (caption, length) pairs (:mod:`eval.scenes`; the same scenes in every
replication), one long motion per scene. Each segment is scored like ``single``; each transition
on a window of ``transition_window`` frames centred on the boundary: transition FID and diversity
against random real crops of that length, the mean jerk curve, Peak Jerk and Area Under the Jerk.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from eval.data import random_unit_crop
from eval.scenes import GROUPS, Scene, build_scenes, save_scenes

from .base import MAX_BATCH, Plan, WindowedSuite, check_whole, register_suite, setting
from .flowmdm import flowmdm_scores, scene_file
from .scoring import (METRICS, REAL, STEPS, Reference, Row, Scored, SplitData, check_motions, discontinuity_scores,
                      matching_metrics, motion_joints, real_step_scores, rng_for, transition_scores)


R_PRECISION_RULES = ("batches", "flowmdm")


@register_suite
@dataclass(frozen=True)
class ComposeSuite(WindowedSuite):
    """Scenes of consecutive test captions, segments and transitions scored."""

    segments_per_scene: int = setting(32, "segments per scene (FlowMDM: 32)")
    num_scenes: Optional[int] = setting(None, "scenes per replication (default: all of the group)")
    scene_group: str = setting("all", "scenes of short, medium or long clips, or all (eval.scenes)",
                               choices=GROUPS)
    scenes: Optional[str] = setting(None, "scenes JSON to use instead of building them")
    scenes_per_batch: int = setting(1, "scenes generated together")
    r_precision: str = setting("batches", "R-precision and MM-Dist over full batches (batches) or by FlowMDM's rule: "
                                          "distinct captions per batch, last batch kept (flowmdm)",
                               choices=R_PRECISION_RULES)

    name = "compose"
    summary = "scenes of consecutive test captions; segments as single, transitions: FID, jerk, PJ, AUJ"
    default_methods = ("collage", "replacement", "reconstruction", "average", "doubletake", "naive")
    table_metrics = ("top1", "top3", "fid", "diversity", "mm_dist", "tr_fid", "tr_diversity", "tr_pj", "tr_auj",
                     "bd_step", "bd_over", "bd_flags", "in_flags")
    bar_metrics = ("top3", "fid", "tr_fid", "tr_pj", "tr_auj", "bd_step")
    jerk_curves = ("transition_jerk",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_whole("segments_per_scene", self.segments_per_scene, 1)
        if self.num_scenes is not None:
            check_whole("num_scenes", self.num_scenes, 1)
        if self.scene_group not in GROUPS:
            raise ValueError(f"unknown scene group {self.scene_group!r}; expected one of {list(GROUPS)}")
        check_whole("scenes_per_batch", self.scenes_per_batch, 1, "", MAX_BATCH)
        if self.r_precision not in R_PRECISION_RULES:
            raise ValueError(f"unknown r_precision {self.r_precision!r}; expected one of {list(R_PRECISION_RULES)}")

    @property
    def rows_per_batch(self) -> int:
        return self.scenes_per_batch

    # ---- plan
    def scene_list(self, data: SplitData) -> list[Scene]:
        """The scenes: from the ``scenes`` file (ours or FlowMDM's, :mod:`eval.suites.flowmdm`), or built
        from the test split."""
        if self.scenes is not None:
            scenes = scene_file(self.scenes, data, self.scene_group)[: self.num_scenes]
        else:
            scenes = build_scenes(data.clips, self.segments_per_scene, self.seed, data.fps,
                                  num_scenes=self.num_scenes, groups=(self.scene_group,))[self.scene_group]
        if not scenes:
            raise ValueError(f"scene group {self.scene_group!r} has no scene in the test split")
        return scenes

    def rows(self, data: SplitData, rep: int) -> list[Row]:
        return self.scene_rows(self.scene_list(data), data)

    def scene_rows(self, scenes: Sequence[Scene], data: SplitData) -> list[Row]:
        """One row per scene; every segment's clip must be in the test split."""
        known = data.by_name()
        rows = []
        for sc in scenes:
            missing = [s.clip for s in sc.segments if s.clip not in known]
            if missing:
                raise ValueError(f"scene {sc.name!r} uses clip {missing[0]!r}, which is not in split "
                                 f"{data.split!r} of {data.root}; build the scenes from this data")
            rows.append(Row(tuple(sc.rows), tuple(s.tokens for s in sc.segments), tuple(s.clip for s in sc.segments)))
        self.check_reference(data)
        if not any(self._windows(r) for r in rows):
            raise ValueError(f"no transition window of {self.transition_window} frames fits inside the scenes; "
                             "use a smaller --transition_window or more segments per scene")
        return rows

    def plan(self, data: SplitData, replications: int, out_dir: Optional[Path] = None) -> Plan:
        scenes = self.scene_list(data)
        rows = self.scene_rows(scenes, data)
        per_rep = {rep: list(rows) for rep in range(replications)}
        if self.scenes is not None:
            return Plan(per_rep, notes={"scenes": self.scenes})
        settings = {"data": str(data.root), "split": data.split, "seed": self.seed,
                    "segments_per_scene": self.segments_per_scene, "num_scenes": self.num_scenes}
        files = {"scenes.json": lambda path: save_scenes(path, {self.scene_group: scenes}, settings)}
        where = str(Path(out_dir) / "scenes.json") if out_dir is not None else None
        return Plan(per_rep, files, {"scenes": where})

    def _windows(self, row: Row) -> list[int]:
        """First frame of each boundary's window that fits inside the row."""
        w = self.transition_window
        starts = [b - w // 2 for b in row.boundaries]
        return [lo for lo in starts if lo >= 0 and lo + w <= row.num_frames]

    # ---- scores
    def score(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, rep: int) -> Scored:
        check_motions(rows, motions)
        rng = rng_for(self.seed, rep, METRICS)
        w = self.transition_window
        segs, seg_tokens, win_feats, win_joints, all_joints = [], [], [], [], []
        for r, m in zip(rows, motions):
            bounds = [0] + r.boundaries + [r.num_frames]
            segs += [m[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            seg_tokens += list(r.tokens)
            joints = motion_joints(m, ref.data.spec)
            all_joints.append(joints)
            for lo in self._windows(r):
                win_feats.append(m[lo:lo + w])
                win_joints.append(joints[lo:lo + w])
        out = self.segment_metrics(rows, seg_tokens, ref.embedder.motions(segs), ref, rng)
        if not win_feats:
            raise ValueError(f"no transition window of {w} frames fits inside the scenes")
        tr, curve = transition_scores(win_feats, win_joints, ref, w, self, rng)
        out.update(tr)
        out.update(discontinuity_scores(all_joints, [r.boundaries for r in rows], ref, "bd", radius=w // 2))
        out["transitions"] = float(len(win_feats))
        return Scored(out, {"transition_jerk": curve})

    def score_real(self, rows: Sequence[Row], ref: Reference, rep: int) -> Scored:
        rng = rng_for(self.seed, rep, REAL)
        by_name = ref.data.by_name()
        segs = [random_unit_crop(by_name[c].features, rng) for r in rows for c in r.clips]
        tokens = [t for r in rows for t in r.tokens]
        out = self.segment_metrics(rows, tokens, ref.embedder.motions(segs), ref, rng_for(self.seed, rep, METRICS))
        n = sum(len(r.boundaries) for r in rows)
        feats, joints = ref.window_crops(self.transition_window, max(n, 2), rng)
        tr, curve = transition_scores(list(feats), list(joints), ref, self.transition_window, self, rng)
        out.update(tr)
        out.update(real_step_scores(ref, self.transition_window, max(n, 2), rng_for(self.seed, rep, STEPS), "bd"))
        out["transitions"] = float(len(feats))
        return Scored(out, {"transition_jerk": curve})

    def segment_metrics(self, rows: Sequence[Row], tokens: list, emb, ref: Reference, rng) -> dict[str, float]:
        """Matching scores of every segment (``r_precision`` rule), FID and diversity."""
        text_emb = ref.embedder.texts(tokens)
        out = matching_metrics(text_emb, emb, ref.motion_emb, self, rng)
        if self.r_precision == "flowmdm":
            texts = [p for r in rows for p, _ in r.segments]
            out.update(flowmdm_scores(text_emb, emb, texts, tokens, self.r_precision_batch))
        return out

    def describe(self, notes: Mapping[str, Any]) -> str:
        return (f"Scenes: {notes.get('scenes', '')}, group {self.scene_group}, "
                f"{'/'.join(map(str, notes.get('scene_segments', [])))} segments each; "
                f"transition window {self.transition_window} frames; "
                f"AUJ reference jerk {notes.get('real_jerk', float('nan')):.4f}.")
