"""Engine helpers over the denoiser contracts of :mod:`motion_core.denoiser`.

* :class:`CallCounter` wraps a piece denoiser and counts sequential calls and evaluated frames.
* :func:`as_sequence_denoiser` uses a piece denoiser directly on whole sequences (plain sampling).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from motion_core.denoiser import PieceConditions, PieceDenoiser, SequenceDenoiser

__all__ = ["CallCounter", "as_sequence_denoiser", "PieceConditions", "PieceDenoiser", "SequenceDenoiser"]


class CallCounter:
    """Wraps a piece denoiser and counts its sequential calls and evaluated frames.

    ``calls`` counts invocations (each one is a network call that must wait for the previous
    one); ``frames`` counts real (unmasked) frames evaluated over all calls. Frame counts are
    accumulated on the device and read only when asked for, so counting never synchronises the
    host with the GPU inside a sampling loop.
    """

    def __init__(self, denoiser: PieceDenoiser) -> None:
        self.denoiser = denoiser
        self.calls = 0
        self.pieces = 0
        self._frames: list[Tensor] = []

    def __call__(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> Tensor:
        self.calls += 1
        self.pieces += x.shape[0]
        self._frames.append(mask.sum())
        return self.denoiser(x, sigma, mask, cond)

    @property
    def frames(self) -> int:
        return int(sum(int(f) for f in self._frames))


def as_sequence_denoiser(piece_denoiser: PieceDenoiser, prompts: Sequence[Optional[str]],
                         guidance: Optional[Tensor] = None) -> SequenceDenoiser:
    """Use a piece denoiser directly on whole sequences (one piece per sequence, no mask).

    ``prompts`` has one entry per batch row. This is plain (non-collage) sampling.
    """
    cond = PieceConditions(tuple(prompts), guidance)

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return piece_denoiser(x, sigma, mask, cond)

    return denoise
