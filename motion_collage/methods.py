"""Long-motion generation methods on one piece denoiser: the collage and the baselines.

Every method takes the same inputs — a piece denoiser, one list of segments ``(prompt, frames)``
per batch row, a sampler with its sigma grid, and the initial noise of the whole long sequence —
and returns a :class:`Generation`. The noise is drawn once for the long sequence; methods that
work window by window use its slices, so all methods start from the same noise.

=============== ======================================================= ==========================
method          what it does                                            sequential network calls
=============== ======================================================= ==========================
collage         DiffCollage: factors + variable nodes, signed merge     1 per step
average         MultiDiffusion: overlapping factors averaged per frame  1 per step
independent     each segment alone, concatenated (no overlap)           1 per step
naive           the whole sequence as one model input                   1 per step
replacement     autoregressive windows, known part replaces x0          windows x steps
reconstruction  autoregressive windows, guided by d|known - x0|^2/dx    windows x steps (+ backward)
doubletake      handshakes cross-faded each step, then transitions      1 per step + 1 per step
                regenerated unconditionally from a partly noised take     of the second take
=============== ======================================================= ==========================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .collage import CollageDenoiser, Guidance, LayoutDenoiser
from motion_core.denoiser import PieceConditions, PieceDenoiser

from .denoiser import CallCounter
from .graph import FactorGraph, GraphError, Node, Segment, chain, cycle
from .ops import PieceLayout, build_layout, gather_pieces, merge_pieces

Sampler = Callable[..., Tensor]  # sampler(denoiser, x, sigmas, **kwargs) -> x


@dataclass
class Generation:
    """Result of a method: padded motions ``[B, T, D]`` and what it cost.

    ``graphs`` describe each row's timeline (segments, loop); ``sequential_calls`` counts piece-
    denoiser calls that had to wait for each other; ``frame_evaluations`` counts real frames
    passed through the piece denoiser (before guidance doubles the conditional ones).
    """

    motion: Tensor
    graphs: list[FactorGraph]
    sequential_calls: int = 0
    frame_evaluations: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> list[int]:
        return [g.num_frames for g in self.graphs]


@dataclass(frozen=True)
class SamplingSetup:
    """The sampler, its sigma grid and its keyword arguments (eta, generator, ...)."""

    sampler: Sampler
    sigmas: Tensor
    kwargs: dict = field(default_factory=dict)

    def run(self, denoiser, x: Tensor, sigmas: Optional[Tensor] = None) -> Tensor:
        return self.sampler(denoiser, x, self.sigmas if sigmas is None else sigmas, **self.kwargs)


def timeline_graphs(rows: Sequence[Sequence[tuple[str, int]]], max_frames: int, overlap: int = 0,
                    loop: bool = False, transition: str = "null") -> list[FactorGraph]:
    """One chain (or cycle) per batch row."""
    build = cycle if loop else chain
    return [build(list(r), overlap=overlap, max_frames=max_frames, transition=transition) for r in rows]


def _padded_length(graphs: Sequence[FactorGraph]) -> int:
    return max(g.num_frames for g in graphs)


def _check_noise(noise: Tensor, graphs: Sequence[FactorGraph]) -> None:
    expected = (len(graphs), _padded_length(graphs))
    if tuple(noise.shape[:2]) != expected:
        raise ValueError(f"initial noise must have shape [{expected[0]}, {expected[1]}, D], got {tuple(noise.shape)}")


def _finish(counter: CallCounter, motion: Tensor, graphs: list[FactorGraph], **extra) -> Generation:
    return Generation(motion, graphs, counter.calls, counter.frames, extra)


# --------------------------------------------------------------------------- parallel methods

def generate_collage(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                     max_frames: int, overlap: int, loop: bool = False, transition: str = "null",
                     guidance: Guidance = None) -> Generation:
    """DiffCollage on a chain (or cycle) of the segments."""
    counter = CallCounter(piece_denoiser)
    graphs = timeline_graphs(rows, max_frames, overlap, loop, transition)
    _check_noise(noise, graphs)
    motion = setup.run(CollageDenoiser(counter, graphs, guidance), noise)
    return _finish(counter, motion, graphs)


def generate_average(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                     max_frames: int, overlap: int, loop: bool = False, guidance: Guidance = None) -> Generation:
    """MultiDiffusion: the same factors as the collage, overlaps averaged, no variable nodes."""
    counter = CallCounter(piece_denoiser)
    graphs = timeline_graphs(rows, max_frames, overlap, loop)
    _check_noise(noise, graphs)
    motion = setup.run(CollageDenoiser(counter, graphs, guidance, include_variables=False), noise)
    return _finish(counter, motion, graphs)


def generate_independent(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                         max_frames: int, guidance: Guidance = None, loop: bool = False) -> Generation:
    """Each segment generated on its own (no overlap), concatenated; all in one batch."""
    if loop:
        raise GraphError("method 'independent' cannot make a loop; use collage, average or doubletake")
    return generate_collage(piece_denoiser, rows, noise, setup, max_frames=max_frames, overlap=0,
                            guidance=guidance)


def naive_prompt(segments: Sequence[tuple[str, int]]) -> str:
    """The single prompt of the naive baseline: the segments' prompts in order."""
    prompts = []
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
    _check_noise(noise, graphs)
    motion = setup.run(CollageDenoiser(counter, graphs, guidance), noise)
    return _finish(counter, motion, timelines)


def feathered_layout(graphs: Sequence[FactorGraph], ramp: int) -> PieceLayout:
    """Factors only, each frame a cross-fade of the factors covering it.

    A factor's weight rises linearly over its first ``ramp`` frames where it overlaps a
    predecessor and falls over its last ``ramp`` frames where it overlaps a successor; weights
    are normalised per frame, so two factors sharing ``ramp`` frames cross-fade linearly.
    """
    layout = build_layout(graphs, include_variables=False)
    L = layout.mask.shape[1]
    lengths = layout.mask.sum(1)
    pos = torch.arange(L, dtype=torch.float64)[None, :]
    w = torch.ones(layout.num_pieces, L, dtype=torch.float64)
    if ramp > 0:
        head = ((pos + 0.5) / ramp).clamp(max=1)
        tail = ((lengths[:, None] - pos - 0.5) / ramp).clamp(max=1)
        cover = merge_pieces(torch.ones(layout.num_pieces, L, 1, dtype=torch.float64), layout)[..., 0]
        # Only ramp where the frame is actually shared with another factor.
        shared = gather_pieces(cover[..., None], layout)[..., 0] > 1
        w = torch.where(shared, torch.minimum(head, tail).expand_as(w), w)
    w = w * layout.mask
    contribution = w.reshape(-1)[layout.merge_index] * (layout.merge_weight != 0)
    total = contribution.sum(-1, keepdim=True)
    merge_weight = torch.where(total > 0, contribution / total.clamp_min(1e-12), contribution)
    return PieceLayout(**{**layout.__dict__, "merge_weight": merge_weight})


def _row_guidance(guidance: Guidance, batch: int) -> Optional[Tensor]:
    if guidance is None:
        return None
    g = torch.as_tensor(guidance, dtype=torch.float32)
    return g.expand(batch).clone() if g.ndim == 0 else g


def generate_doubletake(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                        max_frames: int, handshake: int = 20, blend: int = 10, second_take: bool = True,
                        second_take_fraction: float = 0.5, loop: bool = False,
                        guidance: Guidance = None,
                        generators: Optional[Sequence[torch.Generator]] = None) -> Generation:
    """DoubleTake (PriorMDM): cross-faded handshakes, then transitions regenerated unconditionally.

    First take: the segments, extended to share ``handshake`` frames at each boundary, are denoised
    in one batch; after every step the shared frames are a linear cross-fade of the two segments.
    Second take: a window of ``handshake + 2 * blend`` frames around each boundary is re-noised to
    the sigma at ``second_take_fraction`` of the grid and denoised again with the null condition,
    the outer ``blend`` frames on each side softly inpainted from the first take. The re-noising
    of a row's windows is drawn from ``generators[row]`` (one generator per batch row, so a row
    does not depend on its batch), else from the sampler's ``generator``, else from a generator
    seeded with 0 — never from torch's global generator.
    """
    counter = CallCounter(piece_denoiser)
    graphs = timeline_graphs(rows, max_frames, handshake, loop)
    _check_noise(noise, graphs)
    g_rows = _row_guidance(guidance, len(graphs))
    layout = feathered_layout(graphs, handshake)
    g_pieces = None if g_rows is None else g_rows[layout.seq_index]
    first = setup.run(LayoutDenoiser(counter, layout, g_pieces), noise)
    first_calls = counter.calls
    if not second_take or handshake + blend == 0:
        return _finish(counter, first, graphs, first_take_calls=first_calls)

    # Windows around every segment boundary of every row.
    window = handshake + 2 * blend
    windows: list[tuple[int, int]] = []  # (row, first frame), frames wrap modulo the row length
    for b, g in enumerate(graphs):
        bounds = [s.end for s in g.segments[:-1]] + ([g.num_frames] if g.loop else [])
        windows += [(b, (e - window // 2) % g.num_frames) for e in bounds if window <= g.num_frames]
    if not windows:
        return _finish(counter, first, graphs, first_take_calls=first_calls)
    dev = first.device
    w_rows = torch.tensor([b for b, _ in windows], device=dev)[:, None].expand(-1, window)
    w_frames = torch.stack([(s + torch.arange(window)) % graphs[b].num_frames for b, s in windows]).to(dev)
    known = first[w_rows, w_frames]  # [W, window, D]
    pos = torch.arange(window, dtype=torch.float64)
    # Soft inpainting mask: 1 inside the handshake, linear to 0 across the blend frames.
    edge = torch.minimum(pos + 0.5, window - pos - 0.5)
    soft = (edge / max(blend, 1)).clamp(max=1).to(first.dtype)[None, :, None] if blend > 0 else torch.ones(1, window, 1, dtype=first.dtype)

    start = int(round(second_take_fraction * (len(setup.sigmas) - 1)))
    sigmas = setup.sigmas[start:]
    sigma0 = float(sigmas[0])
    mask = torch.ones(len(windows), window, dtype=torch.bool, device=first.device)
    soft = soft.to(first.device)
    null = PieceConditions((None,) * len(windows))

    def inpaint(x: Tensor, sigma: Tensor) -> Tensor:
        x0 = counter(x, sigma, mask, null)
        return soft * x0 + (1 - soft) * known

    renoise = _window_noise(known.shape, [b for b, _ in windows], generators, setup.kwargs.get("generator"),
                            first)
    redo = setup.run(inpaint, known + sigma0 * renoise, sigmas)
    # Write the regenerated windows back with the same soft mask.
    out = first.clone()
    out[w_rows, w_frames] = soft * redo + (1 - soft) * known
    return _finish(counter, out, graphs, first_take_calls=first_calls)


def _window_noise(shape: torch.Size, rows: list[int], generators: Optional[Sequence[torch.Generator]],
                  generator: Optional[torch.Generator], like: Tensor) -> Tensor:
    """Standard normal noise ``[W, ...]`` for windows of the given rows, reproducibly seeded."""
    def draw(gen: torch.Generator, size) -> Tensor:
        return torch.randn(size, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)

    if generators is not None:
        return torch.stack([draw(generators[b], shape[1:]) for b in rows])
    return draw(generator or torch.Generator(device=like.device).manual_seed(0), shape)


# --------------------------------------------------------------------------- autoregressive methods

@dataclass(frozen=True)
class Window:
    row: int
    start: int
    length: int
    known: int  # frames at the start of the window already generated
    prompt: str


def autoregressive_windows(graphs: Sequence[FactorGraph], window: int, overlap_ratio: float) -> list[list[Window]]:
    """Sliding windows per row: the first generates ``window`` frames, each next one keeps
    ``round(window * overlap_ratio)`` known frames and adds the rest; the last is aligned to the end.

    A window's prompt is the segment covering the middle of its new frames.
    """
    if not 0 <= overlap_ratio < 1:
        raise ValueError(f"overlap ratio must be in [0, 1), got {overlap_ratio}")
    per_row = []
    for b, g in enumerate(graphs):
        W = min(window, g.num_frames)
        keep = int(round(W * overlap_ratio))
        stride = W - keep
        starts = [0]
        while starts[-1] + W < g.num_frames:
            starts.append(min(starts[-1] + stride, g.num_frames - W))
        wins = []
        for k, s in enumerate(starts):
            known = 0 if k == 0 else starts[k - 1] + W - s
            middle = s + known + (W - known) // 2
            prompt = next(seg.prompt for seg in g.segments if seg.start <= middle < seg.end)
            wins.append(Window(b, s, W, known, prompt))
        per_row.append(wins)
    return per_row


def _generate_autoregressive(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                             max_frames: int, window: Optional[int], overlap_ratio: float,
                             reconstruction_weight: Optional[float], guidance: Guidance,
                             loop: bool) -> Generation:
    if loop:
        raise GraphError("autoregressive methods cannot make a loop; use collage, average or doubletake")
    counter = CallCounter(piece_denoiser)
    graphs = timeline_graphs(rows, max_frames=10 ** 9)
    _check_noise(noise, graphs)
    g_rows = _row_guidance(guidance, len(graphs))
    plan = autoregressive_windows(graphs, window or max_frames, overlap_ratio)
    out = torch.zeros_like(noise)
    for k in range(max(len(p) for p in plan)):
        wins = [p[k] for p in plan if k < len(p)]
        L = max(w.length for w in wins)
        rows_idx = torch.tensor([w.row for w in wins], device=noise.device)
        frames = torch.stack([torch.arange(L) + w.start for w in wins]).to(noise.device)
        mask = torch.stack([torch.arange(L) < w.length for w in wins]).to(noise.device)
        frames = torch.where(mask, frames, torch.zeros_like(frames))
        known_mask = torch.stack([torch.arange(L) < w.known for w in wins]).to(noise.device)[..., None]
        known = out[rows_idx[:, None], frames] * known_mask
        cond = PieceConditions(tuple(w.prompt for w in wins),
                               None if g_rows is None else g_rows[[w.row for w in wins]])
        denoise = _known_part_denoiser(counter, mask, cond, known, known_mask, reconstruction_weight)
        x_init = noise[rows_idx[:, None], frames] * mask[..., None]
        result = setup.run(denoise, x_init)
        new = mask & ~known_mask[..., 0]  # each (row, frame) at most once: no duplicate writes
        out[rows_idx[:, None].expand_as(frames)[new], frames[new]] = result[new]
    return _finish(counter, out, graphs, windows=[len(p) for p in plan])


def _known_part_denoiser(counter, mask, cond, known, known_mask, weight):
    """Window denoiser: the known frames either replace x0 (weight None) or guide it by gradient."""
    if weight is None:
        def replace(x: Tensor, sigma: Tensor) -> Tensor:
            return torch.where(known_mask, known, counter(x, sigma, mask, cond))
        return replace

    def reconstruct(x: Tensor, sigma: Tensor) -> Tensor:
        if weight == 0:
            return counter(x, sigma, mask, cond)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = counter(x_in, sigma, mask, cond)
            loss = ((x0 - known) ** 2 * known_mask).sum()
            (grad,) = torch.autograd.grad(loss, x_in)
        # Reconstruction guidance (Ho et al. 2022): x0 - (w / 2) d|known - x0_known|^2 / dx.
        return x0.detach() - (weight / 2) * grad
    return reconstruct


def generate_replacement(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                         max_frames: int, window: Optional[int] = None, overlap_ratio: float = 0.5,
                         guidance: Guidance = None, loop: bool = False) -> Generation:
    """Autoregressive outpainting: each window's known part replaces the predicted x0 at every step."""
    return _generate_autoregressive(piece_denoiser, rows, noise, setup, max_frames=max_frames, window=window,
                                    overlap_ratio=overlap_ratio, reconstruction_weight=None,
                                    guidance=guidance, loop=loop)


def generate_reconstruction(piece_denoiser: PieceDenoiser, rows, noise: Tensor, setup: SamplingSetup, *,
                            max_frames: int, window: Optional[int] = None, overlap_ratio: float = 0.5,
                            weight: float = 1.0, guidance: Guidance = None, loop: bool = False) -> Generation:
    """Autoregressive windows guided by the gradient of the known part's reconstruction error."""
    if weight < 0:
        raise ValueError(f"reconstruction weight must be >= 0, got {weight}")
    return _generate_autoregressive(piece_denoiser, rows, noise, setup, max_frames=max_frames, window=window,
                                    overlap_ratio=overlap_ratio, reconstruction_weight=weight,
                                    guidance=guidance, loop=loop)


METHODS: dict[str, Callable[..., Generation]] = {
    "collage": generate_collage,
    "naive": generate_naive,
    "independent": generate_independent,
    "replacement": generate_replacement,
    "reconstruction": generate_reconstruction,
    "average": generate_average,
    "doubletake": generate_doubletake,
}


def get_method(name: str) -> Callable[..., Generation]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {list(METHODS)}") from None


def total_frames(rows: Sequence[Sequence[tuple[str, int]]]) -> int:
    """Padded length of a batch of rows (sum of each row's segment frames, maximum over rows)."""
    return max(sum(int(f) for _, f in r) for r in rows)
