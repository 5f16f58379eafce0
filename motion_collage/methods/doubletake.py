"""DoubleTake (PriorMDM, Shafir et al. 2023): cross-faded handshakes, then the transitions
regenerated unconditionally from a partly noised first take.

Sequential calls: 1 per step of the first take + 1 per step of the second take.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from motion_core import defaults
from motion_core.denoiser import PieceConditions, PieceDenoiser

from ..collage import Guidance, LayoutDenoiser, row_guidance
from ..denoiser import CallCounter
from ..graph import FactorGraph
from ..ops import PieceLayout, build_layout, gather_pieces, merge_pieces
from .base import (Duration, Generation, MethodSpec, SamplingSetup, check_noise, finish, register_method,
                   timeline_graphs, to_frames)


@dataclass(frozen=True)
class DoubleTakeOptions:
    """PriorMDM's HumanML3D defaults (method.md section 6): handshake 20 frames, blend 10 at 20 fps.

    overlap: the handshake (frames shared by neighbouring segments in the first take);
    blend: frames softly inpainted on each side of a handshake in the second take;
    second_take: run the second take; second_take_fraction: where on the sigma grid it starts.
    """

    overlap: Duration = defaults.OVERLAP_SECONDS
    blend: Duration = 0.5
    second_take: bool = True
    second_take_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.second_take_fraction <= 1:
            raise ValueError(f"second_take_fraction must be in [0, 1], got {self.second_take_fraction}")

    def frame_kwargs(self, fps: float) -> dict:
        return {"handshake": to_frames(self.overlap, fps), "blend": to_frames(self.blend, fps),
                "second_take": self.second_take, "second_take_fraction": self.second_take_fraction}


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
    check_noise(noise, graphs)
    g_rows = row_guidance(guidance, len(graphs))
    layout = feathered_layout(graphs, handshake)
    g_pieces = None if g_rows is None else g_rows[layout.seq_index]
    first = setup.run(LayoutDenoiser(counter, layout, g_pieces), noise)
    first_calls = counter.calls
    if not second_take or handshake + blend == 0:
        return finish(counter, first, graphs, first_take_calls=first_calls)

    window = handshake + 2 * blend
    windows = boundary_windows(graphs, window)
    if not windows:
        return finish(counter, first, graphs, first_take_calls=first_calls)
    out = _second_take(counter, first, graphs, windows, window, blend, setup, second_take_fraction, generators)
    return finish(counter, out, graphs, first_take_calls=first_calls)


def boundary_windows(graphs: Sequence[FactorGraph], window: int) -> list[tuple[int, int]]:
    """(row, first frame) of a ``window``-frame window centred on every segment boundary of every
    row (and on the seam of a loop); frames wrap modulo the row length."""
    windows: list[tuple[int, int]] = []
    for b, g in enumerate(graphs):
        bounds = [s.end for s in g.segments[:-1]] + ([g.num_frames] if g.loop else [])
        windows += [(b, (e - window // 2) % g.num_frames) for e in bounds if window <= g.num_frames]
    return windows


def _soft_mask(window: int, blend: int, like: Tensor) -> Tensor:
    """``[1, window, 1]``: 1 inside the handshake, linear to 0 across the ``blend`` frames at each end."""
    if blend <= 0:
        return torch.ones(1, window, 1, dtype=like.dtype, device=like.device)
    pos = torch.arange(window, dtype=torch.float64)
    edge = torch.minimum(pos + 0.5, window - pos - 0.5)
    return (edge / blend).clamp(max=1).to(like.dtype)[None, :, None].to(like.device)


def _second_take(counter: CallCounter, first: Tensor, graphs: Sequence[FactorGraph], windows, window: int,
                 blend: int, setup: SamplingSetup, fraction: float, generators) -> Tensor:
    """Re-noise each boundary window of the first take to the sigma at ``fraction`` of the grid and
    denoise it with the null condition, softly inpainting its outer ``blend`` frames."""
    dev = first.device
    w_rows = torch.tensor([b for b, _ in windows], device=dev)[:, None].expand(-1, window)
    w_frames = torch.stack([(s + torch.arange(window)) % graphs[b].num_frames for b, s in windows]).to(dev)
    known = first[w_rows, w_frames]  # [W, window, D]
    soft = _soft_mask(window, blend, first)
    sigmas = setup.sigmas[int(round(fraction * (len(setup.sigmas) - 1))):]
    mask = torch.ones(len(windows), window, dtype=torch.bool, device=dev)
    null = PieceConditions((None,) * len(windows))

    def inpaint(x: Tensor, sigma: Tensor) -> Tensor:
        return soft * counter(x, sigma, mask, null) + (1 - soft) * known

    rows, generator = [b for b, _ in windows], setup.kwargs.get("generator")

    def window_noise(like: Tensor) -> Tensor:  # one draw per window, from its row's generator
        return _window_noise(like.shape, rows, generators, generator, like)

    kwargs = dict(setup.kwargs)
    if "noise" in kwargs:  # stochastic samplers draw their per-step noise per window too
        kwargs["noise"] = window_noise
    redo = setup.sampler(inpaint, known + float(sigmas[0]) * window_noise(known), sigmas, **kwargs)
    out = first.clone()  # the regenerated windows written back with the same soft mask
    out[w_rows, w_frames] = soft * redo + (1 - soft) * known
    return out


def _window_noise(shape: torch.Size, rows: list[int], generators: Optional[Sequence[torch.Generator]],
                  generator: Optional[torch.Generator], like: Tensor) -> Tensor:
    """Standard normal noise ``[W, ...]`` for windows of the given rows, reproducibly seeded."""
    def draw(gen: torch.Generator, size) -> Tensor:
        return torch.randn(size, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)

    if generators is not None:
        return torch.stack([draw(generators[b], shape[1:]) for b in rows])
    return draw(generator or torch.Generator(device=like.device).manual_seed(0), shape)


def doubletake_timeline(rows, max_frames: int, loop: bool, *, handshake: int, **_):
    return timeline_graphs(rows, max_frames, handshake, loop)


register_method(MethodSpec(
    "doubletake", generate_doubletake, DoubleTakeOptions, loops=True, row_generators=True,
    timeline=doubletake_timeline,
    cost="steps + second-take steps",
    summary="PriorMDM's DoubleTake: cross-faded handshakes, then transitions regenerated unconditionally"))
