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
