"""The two denoiser contracts of the toolkit.

Noise convention (k-diffusion's "sigma space"): a noisy sample is ``x = x0 + sigma * eps``.
A discrete variance-preserving model (MDM) is wrapped so that it obeys this convention; the
samplers only ever see sigma-space denoisers.

* A **sequence denoiser** maps ``x [B, T, D]`` and ``sigma [B]`` to an x0 prediction
  ``[B, T, D]``. Samplers run on it. The collage is one.
* A **piece denoiser** maps a batch of (zero-padded) pieces ``x [P, L, D]``, their noise
  levels ``sigma [P]``, a frame mask ``mask [P, L]`` (True = real frame) and their
  :class:`PieceConditions` to x0 predictions ``[P, L, D]``. The MDM adapter is one; the collage
  wraps one. Values at masked frames of the output are ignored by callers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class PieceConditions:
    """Per-piece conditions of one batched piece-denoiser call.

    prompts: one entry per piece; ``None`` is the null (unconditional) condition.
    guidance: ``[P]`` classifier-free guidance scale per piece, or ``None`` for the
        denoiser's own default. Pieces with a ``None`` prompt ignore it.
    """

    prompts: tuple[Optional[str], ...]
    guidance: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.guidance is not None and self.guidance.shape != (len(self.prompts),):
            raise ValueError(
                f"guidance must have shape [{len(self.prompts)}], got {tuple(self.guidance.shape)}"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index: Sequence[int]) -> "PieceConditions":
        """Conditions of a subset of the pieces, in the given order."""
        index = list(index)
        guidance = None if self.guidance is None else self.guidance[index]
        return PieceConditions(tuple(self.prompts[i] for i in index), guidance)


class PieceDenoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> Tensor:
        """x [P, L, D], sigma [P], mask [P, L] bool, cond (P entries) -> x0 [P, L, D]."""
        ...


class SequenceDenoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x [B, T, D], sigma [B] -> x0 [B, T, D]."""
        ...


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
