"""The collage denoiser: a denoiser on long sequences built from a denoiser on pieces.

At each call every piece of every sequence (factors with their prompts, variable nodes with
theirs, usually the null condition) goes through the piece denoiser in **one** batched call; the
piece denoiser applies classifier-free guidance per piece; the x0 predictions are merged with
signed weights (+1 per factor, -(d_i - 1) per variable node i of degree d_i). A
:class:`~motion_collage.graph.MergeRule` other than the exact one cross-fades the factors over
each overlap (the ``collage`` method's default, see
:class:`~motion_collage.methods.collage.CollageOptions`), tapers those weights at the edges of the
overlaps or blends a harmonisation window over each of them (same single call). Built directly,
this denoiser merges exactly unless told otherwise.
A ``constraint`` (:class:`~motion_collage.constraints.ConstraintApplier`) then replaces the merged
x0 on the known frames and dimensions (MDM's editing choice), still in that one call per step.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from motion_core.denoiser import PieceConditions, PieceDenoiser

from .graph import EXACT, FactorGraph, MergeRule, merge_plan
from .ops import PieceLayout, build_layout, build_weighted_layout, gather_pieces, merge_pieces

Guidance = Union[None, float, Sequence[float], Tensor]


class LayoutDenoiser:
    """Sequence denoiser over a :class:`PieceLayout`: one batched piece call, then the merge.

    ``guidance`` is ``[P]`` per piece or ``None`` (the piece denoiser's default); ``constraint``
    maps the merged x0 ``[B, T, D]`` and the noise levels ``[B]`` to the constrained x0 (None:
    unconstrained).
    """

    def __init__(self, piece_denoiser: PieceDenoiser, layout: PieceLayout, guidance: Optional[Tensor] = None,
                 constraint: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> None:
        self.piece_denoiser = piece_denoiser
        self.constraint = constraint
        self._layouts: dict[torch.device, PieceLayout] = {layout.seq_index.device: layout}
        self.layout = layout
        self._guidance = guidance
        self._guidance_on: dict[torch.device, Optional[Tensor]] = {}

    @property
    def num_frames(self) -> int:
        """Padded sequence length T of the batch."""
        return self.layout.merge_index.shape[1]

    def _layout_on(self, device: torch.device) -> PieceLayout:
        if device not in self._layouts:
            self._layouts[device] = self.layout.to(device)
        return self._layouts[device]

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        layout = self._layout_on(x.device)
        batch = layout.merge_index.shape[0]
        if x.shape[:2] != (batch, self.num_frames):
            raise ValueError(f"expected x of shape [{batch}, {self.num_frames}, D], got {tuple(x.shape)}")
        if x.device not in self._guidance_on:  # copied once per device, not at every step
            self._guidance_on[x.device] = None if self._guidance is None else self._guidance.to(x.device)
        cond = PieceConditions(layout.prompts, self._guidance_on[x.device])
        x0_pieces = self.piece_denoiser(gather_pieces(x, layout), sigma[layout.seq_index], layout.mask, cond)
        x0 = merge_pieces(x0_pieces, layout)
        return x0 if self.constraint is None else self.constraint(x0, sigma)


class CollageDenoiser(LayoutDenoiser):
    """Sequence denoiser ``(x [B, T, D], sigma [B]) -> x0 [B, T, D]`` over one graph per batch row.

    Args:
        piece_denoiser: the model on pieces (see :mod:`motion_core.denoiser`).
        graphs: one :class:`FactorGraph` per batch row (lengths may differ; rows are padded to
            the longest and padding frames predict 0).
        guidance: classifier-free guidance scale, one value or one per batch row; ``None`` uses
            the piece denoiser's default.
        include_variables: ``False`` drops the variable nodes and averages overlapping factors
            instead (MultiDiffusion); kept here because it is the same machinery.
        merge: how the pieces are merged (default: the exact signed merge); see
            :func:`motion_collage.graph.merge_plan`. Not with ``include_variables=False``.
        max_frames: the longest piece the model takes (bounds harmonisation windows).
        constraint: known motion applied to the merged x0 at every call
            (:class:`~motion_collage.constraints.ConstraintApplier`); the factors of known segments
            are denoised with the null condition (:func:`~motion_collage.constraints.null_known`).
    """

    def __init__(self, piece_denoiser: PieceDenoiser, graphs: Sequence[FactorGraph],
                 guidance: Guidance = None, include_variables: bool = True, merge: MergeRule = EXACT,
                 max_frames: Optional[int] = None,
                 constraint: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> None:
        if not graphs:
            raise ValueError("CollageDenoiser needs at least one graph")
        if constraint is not None:
            from .constraints import null_known
            graphs = [null_known(g) for g in graphs]
        self.graphs = tuple(graphs)
        self.merge = merge
        if merge == EXACT or not include_variables:
            layout = build_layout(self.graphs, include_variables=include_variables)
        else:
            layout = build_weighted_layout([(g.num_frames, merge_plan(g, merge, max_frames)) for g in self.graphs])
        if not include_variables:
            layout = _normalise_average(layout)
        super().__init__(piece_denoiser, layout, per_piece_guidance(guidance, layout, len(self.graphs)), constraint)


def _normalise_average(layout: PieceLayout) -> PieceLayout:
    """Turn unit weights into per-frame averages: each contribution weighs 1 / (frame's cover)."""
    cover = layout.merge_weight.sum(dim=-1, keepdim=True)
    merge_weight = torch.where(cover > 0, layout.merge_weight / cover.clamp_min(1e-12), layout.merge_weight)
    return PieceLayout(**{**layout.__dict__, "merge_weight": merge_weight})


def row_guidance(guidance: Guidance, batch: int) -> Optional[Tensor]:
    """A scalar or per-row guidance scale as ``[batch]`` float32 (None stays None)."""
    if guidance is None:
        return None
    g = torch.as_tensor(guidance, dtype=torch.float32)
    if g.ndim == 0:
        g = g.expand(batch)
    if g.shape != (batch,):
        raise ValueError(f"guidance must be one value or one per sequence ({batch}), got shape {tuple(g.shape)}")
    return g.clone()


def per_piece_guidance(guidance: Guidance, layout: PieceLayout, batch: int) -> Optional[Tensor]:
    """Expand a scalar or per-row guidance scale to one value per piece of `layout`."""
    g = row_guidance(guidance, batch)
    return None if g is None else g[layout.seq_index]
