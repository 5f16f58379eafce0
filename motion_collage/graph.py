"""Factor graphs of a long motion: which frame ranges are denoised with which condition.

A :class:`FactorGraph` holds factor nodes (pieces denoised with a prompt) and variable nodes
(the overlaps between factors), each a :class:`Node`: a frame range of the long sequence that
may wrap around its end (for loops) and a condition (a prompt, or ``None`` for the null
condition). The degree of a variable node is the number of factors containing it. The collage
weight of a frame is ``+1`` per covering factor and ``-(d_i - 1)`` per covering variable i.

:func:`chain` and :func:`cycle` build the graphs of a multi-action sequence and of a loop from
a list of segments ``(prompt, frames)``; the segments tile the timeline and each boundary gets a
variable node of ``overlap`` frames centred on it. A segment is split into several factors only
when its piece would not fit the model's window.

:func:`merge_plan` turns a graph and a :class:`MergeRule` into the pieces one collage step
evaluates and the per-frame weight of each (the exact signed merge, a taper, or a harmonisation
window over each overlap).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Optional, Sequence

import numpy as np

Transition = Literal["null", "prompt"]
TRANSITIONS = ("null", "prompt")


class GraphError(ValueError):
    """A factor graph or its construction arguments are invalid."""


@dataclass(frozen=True)
class Node:
    """A frame range ``[start, start + length)`` modulo the sequence length, with a condition."""

    start: int
    length: int
    prompt: Optional[str]

    def frames(self, num_frames: int) -> np.ndarray:
        """Frame indices covered, in order (wrapping around ``num_frames``)."""
        return (self.start + np.arange(self.length)) % num_frames


@dataclass(frozen=True)
class Segment:
    """A user-level segment of the timeline: one prompt on ``[start, end)``."""

    prompt: str
    start: int
    end: int


@dataclass(frozen=True)
class FactorGraph:
    """Factor and variable nodes over a sequence of ``num_frames`` frames.

    ``segments`` describes the timeline for captions and metrics; ``loop`` marks a cycle.
    Construction validates the graph; use :func:`chain`, :func:`cycle` or build one by hand.
    """

    num_frames: int
    factors: tuple[Node, ...]
    variables: tuple[Node, ...] = ()
    segments: tuple[Segment, ...] = ()
    loop: bool = False

    def __post_init__(self) -> None:
        if self.num_frames <= 0:
            raise GraphError(f"a graph needs a positive number of frames, got {self.num_frames}")
        if not self.factors:
            raise GraphError("a graph needs at least one factor node")
        for kind, nodes in (("factor", self.factors), ("variable", self.variables)):
            for node in nodes:
                if node.length <= 0:
                    raise GraphError(f"{kind} node at frame {node.start} has non-positive length {node.length}")
                if node.length > self.num_frames:
                    raise GraphError(
                        f"{kind} node at frame {node.start} is longer ({node.length}) than the sequence ({self.num_frames})")
                if not self.loop and not 0 <= node.start <= self.num_frames - node.length:
                    raise GraphError(
                        f"{kind} node [{node.start}, {node.start + node.length}) leaves the sequence of "
                        f"{self.num_frames} frames (only loops may wrap around)")
        for i, d in enumerate(self.degrees):
            if d == 0:
                v = self.variables[i]
                raise GraphError(f"variable node [{v.start}, {v.start + v.length}) is contained in no factor")
        weights = self.frame_weights()
        uncovered = np.flatnonzero(self._factor_cover() == 0)
        if uncovered.size:
            raise GraphError(f"frames {_ranges(uncovered)} are covered by no factor")
        bad = np.flatnonzero(np.abs(weights - 1) > 1e-9)
        if bad.size:
            raise GraphError(
                f"frame weights must sum to 1, but frames {_ranges(bad)} get {weights[bad[0]]:g} "
                "(check that every overlap of factors has exactly one variable node)")

    def _factor_cover(self) -> np.ndarray:
        cover = np.zeros(self.num_frames)
        for f in self.factors:
            np.add.at(cover, f.frames(self.num_frames), 1)
        return cover

    @cached_property
    def degrees(self) -> tuple[int, ...]:
        """Degree of each variable node: the number of factors containing all of its frames.

        Linear in the number of nodes (after a sort): only factors starting at most
        ``max factor length - variable length`` frames before a variable can contain it.
        """
        N = self.num_frames
        starts = np.array([f.start % N for f in self.factors], dtype=np.int64)
        lengths = np.array([f.length for f in self.factors], dtype=np.int64)
        full = int((lengths >= N).sum())  # a factor over every frame contains every variable
        part = lengths < N
        starts, lengths = starts[part], lengths[part]
        if self.loop:  # copies one period earlier and later cover wrap-around containment
            starts = np.concatenate([starts - N, starts, starts + N])
            lengths = np.tile(lengths, 3)
        order = np.argsort(starts, kind="stable")
        starts, lengths = starts[order], lengths[order]
        longest = int(lengths.max()) if lengths.size else 0
        out = []
        for v in self.variables:
            vs = v.start % N
            lo = np.searchsorted(starts, vs - (longest - v.length), "left")
            hi = np.searchsorted(starts, vs, "right")
            inside = vs - starts[lo:hi] + v.length <= lengths[lo:hi]
            out.append(full + int(inside.sum()))
        return tuple(out)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Factors then variables."""
        return self.factors + self.variables

    @property
    def weights(self) -> tuple[float, ...]:
        """Signed collage weight of each node in :attr:`nodes` order: +1, or 1 - d_i."""
        return (1.0,) * len(self.factors) + tuple(1.0 - d for d in self.degrees)

    def frame_weights(self) -> np.ndarray:
        """Sum of node weights covering each frame, ``[num_frames]`` (1 for a valid collage)."""
        total = np.zeros(self.num_frames)
        for node, w in zip(self.nodes, self.weights):
            np.add.at(total, node.frames(self.num_frames), w)
        return total

    @property
    def max_piece(self) -> int:
        return max(n.length for n in self.nodes)


def _ranges(frames: np.ndarray) -> str:
    """Short text for a sorted array of frame indices, e.g. '3-7, 12'."""
    parts, start, prev = [], None, None
    for f in frames.tolist():
        if start is None:
            start = prev = f
        elif f == prev + 1:
            prev = f
        else:
            parts.append(f"{start}-{prev}" if prev > start else str(start))
            start = prev = f
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ", ".join(parts[:5]) + (" ..." if len(parts) > 5 else "")


def _validate_segments(segments: Sequence[tuple[str, int]], overlap: int, max_frames: int,
                       transition: str) -> None:
    if not segments:
        raise GraphError("no segments given: pass at least one (prompt, frames) pair")
    if transition not in TRANSITIONS:
        raise GraphError(f"unknown transition {transition!r}; expected one of {list(TRANSITIONS)}")
    if overlap < 0:
        raise GraphError(f"overlap must be >= 0 frames, got {overlap}")
    if overlap >= max_frames:
        raise GraphError(f"overlap ({overlap} frames) must be smaller than a piece (at most {max_frames} frames)")
    for i, (prompt, frames) in enumerate(segments):
        if not isinstance(prompt, str) or not prompt.strip():
            raise GraphError(f"segment {i + 1} has an empty prompt")
        if int(frames) != frames or frames <= 0:
            raise GraphError(f"segment {i + 1} ({prompt!r}) has a non-positive or fractional length: {frames} frames")
        if frames < overlap and len(segments) > 1:
            raise GraphError(
                f"segment {i + 1} ({prompt!r}) has {frames} frames, fewer than the overlap ({overlap} frames); "
                "lengthen it or reduce the overlap")


def _split_segment(length: int, overlap: int, max_frames: int, head: int = 0, tail: int = 0) -> list[int]:
    """Split a segment into the fewest near-equal parts whose pieces fit the window.

    A part's piece is the part plus half an overlap on each side that has a neighbour: ``head``
    (``tail``) frames before the first (after the last) part, where the segment meets another
    one, and ``overlap // 2`` / ``overlap - overlap // 2`` between two parts of the segment. A
    segment whose piece fits is one part: no overlap is reserved where there is no neighbour.
    """
    left, right = overlap // 2, overlap - overlap // 2
    if max_frames - overlap <= 0:
        raise GraphError(f"overlap ({overlap}) leaves no room in a {max_frames}-frame piece")
    parts = 1
    while True:
        sizes = [length // parts + (1 if i < length % parts else 0) for i in range(parts)]
        before = [head] + [left] * (parts - 1)
        after = [right] * (parts - 1) + [tail]
        if all(s + b + a <= max_frames for s, b, a in zip(sizes, before, after)) and (parts == 1 or min(sizes) >= overlap):
            return sizes
        if parts > 1 and min(sizes) < overlap:
            raise GraphError(
                f"a {length}-frame segment cannot be split into pieces of at most {max_frames} frames "
                f"with an overlap of {overlap}; reduce the overlap")
        parts += 1


def _collage_nodes(segments: Sequence[tuple[str, int]], overlap: int, max_frames: int,
                   transition: str, loop: bool) -> FactorGraph:
    _validate_segments(segments, overlap, max_frames, transition)
    # Timeline parts: each user segment may become several factors with the same prompt.
    parts: list[tuple[str, int]] = []
    timeline: list[Segment] = []
    start = 0
    left, right = overlap // 2, overlap - overlap // 2  # a boundary's overlap: `left` before, `right` after
    for i, (prompt, frames) in enumerate(segments):
        frames = int(frames)
        timeline.append(Segment(prompt, start, start + frames))
        start += frames
        head = left if (loop or i > 0) else 0
        tail = right if (loop or i < len(segments) - 1) else 0
        for size in _split_segment(frames, overlap, max_frames, head, tail):
            parts.append((prompt, size))
    total = start
    if loop and len(parts) == 1:
        # A cycle needs two factors: one factor would contain the seam twice.
        prompt, size = parts[0]
        if size // 2 < max(overlap, 1):
            raise GraphError(f"a loop of {size} frames is too short for an overlap of {overlap} frames "
                             f"(it needs at least {2 * max(overlap, 1)})")
        parts = [(prompt, size // 2), (prompt, size - size // 2)]
    n = len(parts)

    bounds = np.cumsum([0] + [size for _, size in parts])
    factors, variables = [], []
    for j, (prompt, size) in enumerate(parts):
        has_prev = loop or j > 0
        has_next = loop or j < n - 1
        lo = bounds[j] - (left if has_prev else 0)
        hi = bounds[j + 1] + (right if has_next else 0)
        if hi - lo > max_frames:
            raise GraphError(
                f"a piece of {hi - lo} frames for {prompt!r} exceeds the model maximum of {max_frames} frames")
        factors.append(Node(int(lo) % total, int(hi - lo), prompt))
    boundaries = range(n) if loop else range(n - 1)
    if overlap > 0:
        for j in boundaries:
            k = (j + 1) % n
            same = parts[j][0] == parts[k][0]
            prompt = parts[j][0] if transition == "prompt" and same else None
            variables.append(Node(int(bounds[j + 1] - left) % total, overlap, prompt))
    return FactorGraph(total, tuple(factors), tuple(variables), tuple(timeline), loop)


def chain(segments: Sequence[tuple[str, int]], overlap: int, max_frames: int,
          transition: Transition = "null") -> FactorGraph:
    """Graph of consecutive segments ``[(prompt, frames), ...]``: a chain of factors.

    The segments tile ``sum(frames)`` frames; each boundary gets a variable node of ``overlap``
    frames centred on it, shared by the two neighbouring factors. Variable nodes carry the null
    condition, or with ``transition="prompt"`` the neighbours' prompt when both share it (the
    single-prompt long-motion benchmark). A segment whose piece would exceed ``max_frames`` is
    split into several factors with the same prompt.
    """
    return _collage_nodes(segments, overlap, max_frames, transition, loop=False)


def cycle(segments: Sequence[tuple[str, int]], overlap: int, max_frames: int,
          transition: Transition = "null") -> FactorGraph:
    """Like :func:`chain`, closed into a loop: the last segment flows into the first.

    The seam (end → start) is an explicit variable node, treated like every other overlap.
    """
    return _collage_nodes(segments, overlap, max_frames, transition, loop=True)


def single(prompt: Optional[str], num_frames: int) -> FactorGraph:
    """The trivial graph: one factor over the whole sequence (plain sampling)."""
    return FactorGraph(num_frames, (Node(0, num_frames, prompt),),
                       segments=(Segment(prompt or "", 0, num_frames),))


# --------------------------------------------------------------------------- merge plans

MERGES = ("exact", "crossfade", "taper", "harmonise", "bridge")


@dataclass(frozen=True)
class WeightedNode:
    """A piece to evaluate: frames ``[start, start + length)`` modulo the sequence length, its
    condition, and the weight ``weights[k]`` with which its prediction at its k-th frame enters
    the merge (``[length]`` float64; 0 = evaluated for context only)."""

    start: int
    length: int
    prompt: Optional[str]
    weights: np.ndarray

    def frames(self, num_frames: int) -> np.ndarray:
        return (self.start + np.arange(self.length)) % num_frames


@dataclass(frozen=True)
class MergeRule:
    """How a collage step merges its pieces (see :func:`merge_plan`); lengths in frames."""

    kind: str = "exact"
    taper: int = 0
    window: int = 0
    plateau: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MERGES:
            raise GraphError(f"unknown merge {self.kind!r}; expected one of {list(MERGES)}")
        for name in ("taper", "window", "plateau"):
            if getattr(self, name) < 0:
                raise GraphError(f"merge {name} must be >= 0 frames, got {getattr(self, name)}")


EXACT = MergeRule()


def merge_plan(graph: FactorGraph, rule: MergeRule = EXACT, max_frames: Optional[int] = None) -> tuple[WeightedNode, ...]:
    """The pieces of one collage step and their per-frame weights (summing to 1 on every frame).

    ``"exact"``: DiffCollage's signed merge, +1 per factor and 1 - d_i per variable node.
    ``"crossfade"``: across each overlap the left factor's weight falls linearly from 1 to 0 and
    the right factor's rises (``"taper"`` over the whole overlap): the weights sum to 1 without the
    variable node, which is not evaluated; no weight changes by more than 1 / (overlap + 1) from one
    frame to the next.
    ``"taper"``: like exact, but across the last (first) ``rule.taper`` frames of each variable
    node the left (right) factor's weight falls (rises) linearly, and the variable's weight with
    it, so that at each edge of an overlap the merge is one factor alone, without a switch.
    ``"harmonise"``: the exact merge, then one more piece per variable node, ``rule.window``
    frames centred on it (at most ``max_frames``), whose prediction replaces the merge over its
    middle ``rule.plateau`` frames and cross-fades linearly into it over the rest; its condition
    is the variable's, or the neighbours' prompt when both sides share one (a split segment, a
    one-prompt loop), else null.
    ``"bridge"``: like ``"harmonise"``, but where the two sides have different prompts the window
    is evaluated twice, once with each side's prompt, and the two predictions cross-fade linearly
    from the left prompt's to the right prompt's across the window's middle ``rule.plateau`` frames:
    every frame follows a prompt (no null-conditioned plateau), and no weight changes by more than
    about ``1 / rule.plateau`` (or one over the ramp) from one frame to the next.
    Nodes left with no weight are dropped.
    Variable nodes that are not the tail of one factor and the head of another (general graphs)
    keep their exact weights under ``"taper"``.
    """
    merge, taper, window, plateau = rule.kind, rule.taper, rule.window, rule.plateau
    weights = [np.full(n.length, w, dtype=np.float64) for n, w in zip(graph.nodes, graph.weights)]
    if merge == "taper" and taper > 0:
        _taper_weights(graph, weights, taper)
    if merge == "crossfade" and graph.variables:
        _taper_weights(graph, weights, max(v.length for v in graph.variables))
    nodes = [WeightedNode(n.start, n.length, n.prompt, w) for n, w in zip(graph.nodes, weights)]
    if merge in ("harmonise", "bridge") and window > 0 and graph.variables:
        nodes = _harmonised(graph, nodes, window, plateau, max_frames or graph.num_frames, bridge=merge == "bridge")
    return tuple(n for n in nodes if np.any(n.weights != 0))


def _neighbours(graph: FactorGraph, v: Node) -> tuple[Optional[int], Optional[int]]:
    """Indices of the factor whose tail is variable ``v`` and of the factor whose head it is."""
    N = graph.num_frames
    end = (v.start + v.length) % N
    left = [j for j, f in enumerate(graph.factors) if (f.start + f.length) % N == end and f.length > v.length]
    right = [j for j, f in enumerate(graph.factors) if f.start % N == v.start % N and f.length > v.length]
    return (left[0] if len(left) == 1 else None), (right[0] if len(right) == 1 else None)


def _taper_weights(graph: FactorGraph, weights: list[np.ndarray], taper: int) -> None:
    """Ramp the factor weights across the edges of each degree-2 variable node (in place)."""
    nf = len(graph.factors)
    for i, (v, d) in enumerate(zip(graph.variables, graph.degrees)):
        left, right = _neighbours(graph, v)
        if d != 2 or left is None or right is None:
            continue
        L, m = v.length, min(taper, v.length)
        q = np.arange(L)
        a = np.minimum(1.0, (L - q) / (m + 1))  # left factor: 1 inside, falling over the last m frames
        b = np.minimum(1.0, (q + 1) / (m + 1))  # right factor: rising over the first m frames
        weights[left][-L:] = a
        weights[right][:L] = b
        rest = 1.0 - a - b
        weights[nf + i][:] = np.where(np.abs(rest) < 1e-12, 0.0, rest)  # a full taper leaves no variable


def _harmonised(graph: FactorGraph, nodes: list[WeightedNode], window: int, plateau: int,
                max_frames: int, bridge: bool = False) -> list[WeightedNode]:
    """Add one harmonisation window per variable node (two with ``bridge`` where the sides'
    prompts differ) and blend it over the merge."""
    N = graph.num_frames
    windows, profiles = [], []  # per variable: [(node, share of the window's frames)], its profile
    for v in graph.variables:
        length = min(window, max_frames, N)
        lo = v.start % N + v.length // 2 - length // 2
        if not graph.loop:
            lo = min(max(lo, 0), N - length)
        flat = min(max(plateau, 0), length)
        ramp = (length - flat) / 2
        q = np.arange(length)
        profile = np.clip(np.minimum(q + 1, length - q) / (ramp + 1), 0.0, 1.0) if ramp > 0 else np.ones(length)
        sides = _side_prompts(graph, v) if bridge else None
        if sides is None:
            parts = [(Node(int(lo) % N, length, _window_prompt(graph, v)), np.ones(length))]
        else:
            # the left prompt's share falls linearly across the plateau, centred on the overlap
            centre = v.start % N + v.length / 2 - lo
            right = np.clip((q + 0.5 - (centre - flat / 2)) / max(flat, 1), 0.0, 1.0)
            parts = [(Node(int(lo) % N, length, sides[0]), 1.0 - right), (Node(int(lo) % N, length, sides[1]), right)]
        windows.append(parts)
        profiles.append(profile)
    total = np.zeros(N)   # sum of the window profiles covering each frame
    blend = np.zeros(N)   # their maximum: how much of the frame the windows take over
    for parts, p in zip(windows, profiles):
        f = parts[0][0].frames(N)
        np.add.at(total, f, p)
        np.maximum.at(blend, f, p)
    out = [WeightedNode(n.start, n.length, n.prompt, n.weights * (1 - blend[n.frames(N)])) for n in nodes]
    for parts, p in zip(windows, profiles):
        f = parts[0][0].frames(N)
        for w, share in parts:
            out.append(WeightedNode(w.start, w.length, w.prompt, share * blend[f] * p / np.maximum(total[f], 1e-12)))
    return out


def _side_prompts(graph: FactorGraph, v: Node) -> Optional[tuple[str, str]]:
    """The prompts of the factors left and right of ``v`` when they differ (else None)."""
    left, right = _neighbours(graph, v)
    if v.prompt is not None or left is None or right is None:
        return None
    a, b = graph.factors[left].prompt, graph.factors[right].prompt
    return None if a == b or a is None or b is None else (a, b)


def _window_prompt(graph: FactorGraph, v: Node) -> Optional[str]:
    if v.prompt is not None:
        return v.prompt
    left, right = _neighbours(graph, v)
    if left is not None and right is not None and graph.factors[left].prompt == graph.factors[right].prompt:
        return graph.factors[left].prompt
    return None
