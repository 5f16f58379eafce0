"""The collage (DiffCollage) and the methods that share its one-call-per-step denoiser.

=========== ========================================================= ====================
method      what it does                                              sequential calls
=========== ========================================================= ====================
collage     DiffCollage's factor graph; neighbouring factors cross-  1 per step
            faded over each overlap (merge="exact": the signed
            merge with variable nodes; see CollageOptions)
average     MultiDiffusion: overlapping factors averaged per frame    1 per step
independent each segment alone, concatenated (no overlap)             1 per step
naive       the whole sequence as one model input                     1 per step
=========== ========================================================= ====================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from motion_core import defaults
from motion_core.spec import HUMANML3D
from motion_core.denoiser import PieceDenoiser
from torch import Tensor

from ..collage import CollageDenoiser, Guidance
from ..denoiser import CallCounter
from ..graph import MERGES, FactorGraph, GraphError, MergeRule, Node
from .base import (Duration, Generation, MethodSpec, SamplingSetup, check_noise, finish, register_method,
                   timeline_graphs, to_frames)

TRANSITIONS = ("null", "prompt")


@dataclass(frozen=True)
class CollageOptions:
    """overlap: length of each boundary's variable node; transition: its condition ("null", or
    "prompt": the neighbours' prompt when both sides share it).

    merge: "crossfade" (the neighbouring factors cross-fade linearly over each overlap; no
    variable node), "exact" (DiffCollage's signed merge), "taper" (the factors' weights ramp over
    the first and last ``taper`` of each overlap), "harmonise" (a ``window`` centred on each
    overlap, evaluated in the same network call, replaces the merge over its middle ``plateau`` and
    cross-fades into it over the rest) or "bridge" (that window once per side's prompt, cross-faded
    across the plateau); see :func:`motion_collage.graph.merge_plan`.
    """

    overlap: Duration = defaults.OVERLAP_SECONDS
    transition: str = "null"
    # Chosen by measurement (issue 13; compose suite, default model, DDIM 50, 5 reps): the exact
    # signed merge switches f1 + f2 - v to one factor at each edge of an overlap and snaps there
    # (Peak Jerk 0.34, AUJ 4.0, top-3 0.80, FID 17.9); "crossfade" has no switch (Peak Jerk 0.23,
    # AUJ 3.0, top-3 0.85, FID 15.9, 17 % fewer frames); "harmonise"/"bridge" are smooth but their
    # wide windows cost the segments (FID 50 / 56).
    merge: str = "crossfade"
    taper: Duration = 0.5
    window: Duration = 4.0
    plateau: Duration = 1.5

    def __post_init__(self) -> None:
        if self.transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {list(TRANSITIONS)}, got {self.transition!r}")
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {list(MERGES)}, got {self.merge!r}")

    def merge_rule(self, fps: float) -> MergeRule:
        """The merge in frames at ``fps``."""
        return MergeRule(self.merge, to_frames(self.taper, fps), to_frames(self.window, fps),
                         to_frames(self.plateau, fps))

    def frame_kwargs(self, fps: float) -> dict:
        rule = self.merge_rule(fps)
        return {"overlap": to_frames(self.overlap, fps), "transition": self.transition, "merge": rule.kind,
                "taper": rule.taper, "window": rule.window, "plateau": rule.plateau}


@dataclass(frozen=True)
class AverageOptions:
    """overlap: frames shared by neighbouring factors (averaged there)."""

    overlap: Duration = defaults.OVERLAP_SECONDS

    def frame_kwargs(self, fps: float) -> dict:
        return {"overlap": to_frames(self.overlap, fps)}


# The merge of CollageOptions() in frames at HumanML3D's 20 fps: the defaults of generate_collage.
_MERGE_FRAMES = CollageOptions().merge_rule(HUMANML3D.fps)


def generate_collage(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                     max_frames: int, overlap: int, loop: bool = False, transition: str = "null",
                     guidance: Guidance = None, merge: str = _MERGE_FRAMES.kind, taper: int = _MERGE_FRAMES.taper,
                     window: int = _MERGE_FRAMES.window, plateau: int = _MERGE_FRAMES.plateau,
                     constraint=None) -> Generation:
    """DiffCollage on a chain (or cycle) of the segments, merged by ``merge`` (lengths in frames;
    see :func:`motion_collage.graph.merge_plan`; defaults: :class:`CollageOptions` at 20 fps)."""
    counter = CallCounter(piece_denoiser)
    graphs = timeline_graphs(rows, max_frames, overlap, loop, transition)
    check_noise(noise, graphs)
    rule = MergeRule(merge, taper, window, plateau)
    motion = setup.run(CollageDenoiser(counter, graphs, guidance, merge=rule, max_frames=max_frames,
                                       constraint=constraint), noise)
    return finish(counter, motion, graphs)


def generate_average(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                     max_frames: int, overlap: int, loop: bool = False, guidance: Guidance = None,
                     constraint=None) -> Generation:
    """MultiDiffusion: the same factors as the collage, overlaps averaged, no variable nodes."""
    counter = CallCounter(piece_denoiser)
    graphs = timeline_graphs(rows, max_frames, overlap, loop)
    check_noise(noise, graphs)
    motion = setup.run(CollageDenoiser(counter, graphs, guidance, include_variables=False, constraint=constraint),
                       noise)
    return finish(counter, motion, graphs)


def generate_independent(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                         max_frames: int, guidance: Guidance = None, loop: bool = False,
                         constraint=None) -> Generation:
    """Each segment generated on its own (no overlap), concatenated; all in one batch."""
    if loop:
        raise GraphError("method 'independent' cannot make a loop; use collage, average or doubletake")
    return generate_collage(piece_denoiser, rows, noise, setup, max_frames=max_frames, overlap=0,
                            guidance=guidance, constraint=constraint)


def naive_prompt(segments: Sequence[tuple[str, int]]) -> str:
    """The single prompt of the naive baseline: the segments' prompts in order."""
    prompts: list[str] = []
    for p, _ in segments:
        if not prompts or prompts[-1] != p:
            prompts.append(p)
    return ", then ".join(prompts)


def generate_naive(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                   max_frames: int, guidance: Guidance = None, loop: bool = False) -> Generation:
    """The whole sequence as one model input (beyond the training length when it is long)."""
    if loop:
        raise GraphError("method 'naive' cannot make a loop; use collage, average or doubletake")
    counter = CallCounter(piece_denoiser)
    timelines = timeline_graphs(rows, max_frames=10 ** 9)
    graphs = [FactorGraph(g.num_frames, (Node(0, g.num_frames, naive_prompt(r)),), (), g.segments)
              for g, r in zip(timelines, rows)]
    check_noise(noise, graphs)
    motion = setup.run(CollageDenoiser(counter, graphs, guidance), noise)
    return finish(counter, motion, timelines)


def collage_timeline(rows, max_frames: int, loop: bool, *, overlap: int, transition: str = "null", **_):
    return timeline_graphs(rows, max_frames, overlap, loop, transition)


register_method(MethodSpec(
    "collage", generate_collage, CollageOptions, loops=True, timeline=collage_timeline,
    summary="DiffCollage's factor graph, factors cross-faded over each overlap (merge exact: signed merge)"))
register_method(MethodSpec(
    "average", generate_average, AverageOptions, loops=True, timeline=collage_timeline,
    summary="MultiDiffusion: the same overlapping factors, overlaps averaged, no variable nodes"))
register_method(MethodSpec(
    "independent", generate_independent,
    summary="each segment generated alone, concatenated"))
register_method(MethodSpec(
    "naive", generate_naive,
    summary="the whole sequence as one model input (beyond the training length when long)"))
