"""MDM as a sigma-space piece denoiser (the contract of :mod:`motion_collage.denoiser`).

One call = one batched network call, whatever the mix of prompts and null conditions:

* row i < P: piece i with its own text (its prompt's feature, or zeros for a ``None`` prompt);
* one extra row per piece that has a prompt and a guidance scale other than 1: the same piece
  with zero text (the unconditional branch of classifier-free guidance).

Then per piece ``x0 = u + s * (c - u)`` (the release's formula and order of operations).

Noise convention: sigma-space ``x = x0 + sigma * eps`` outside, MDM's VP space inside:
``x_vp = x / sqrt(1 + sigma^2)``, and the network is called with the trained timestep whose
sigma is nearest in log-space (``schedule.sigma_to_t``). MDM predicts x0, which is the same in
both spaces, so the output needs no rescaling.

Variable lengths (``mask_frames``): by default padded frames are hidden from attention with a
key-padding mask (the condition token is never masked). Then a piece's prediction equals the
prediction for that piece run alone at its own length, which is what the release computes when
it generates a clip of that length (its 2022 models never saw a mask, but at generation time
they ran on unpadded clips of the requested length). ``mask_frames=False`` lets padded frames
be attended to, as in the release's training; only use it with equal-length pieces.
Measured: batched vs alone agree to about 2e-6 absolute (outputs of order 1, guidance up to 4)
on random tiny models in float32; ``tests/test_piece_denoiser.py`` asserts 1e-5. The residual
comes from floating-point summation order in batched kernels, not from the other pieces.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from motion_collage.denoiser import PieceConditions

from .model import MDM, TextInput
from .schedules import DiscreteSchedule
from .text_encoders import TextEncoder


class MDMPieceDenoiser:
    """Wrap an MDM network, a text encoder and its schedule as a piece denoiser.

    network: the MDM (in eval mode for sampling). text_encoder: features for prompts.
    schedule: the model's discrete schedule (gives the trained sigmas and the rounding).
    guidance_scale: default classifier-free guidance scale (the release's 2.5).
    supports_guidance: False for models trained without text dropout (cond_mask_prob 0):
        guidance is then 1 whatever is asked, and no unconditional rows are run.
    mask_frames: hide padded frames from attention (see the module docstring).
    """

    def __init__(self, network: MDM, text_encoder: TextEncoder, schedule: DiscreteSchedule,
                 guidance_scale: float = 2.5, supports_guidance: bool = True, mask_frames: bool = True) -> None:
        if getattr(text_encoder, "feature_dim", None) != network.text_dim:
            raise ValueError(f"text encoder gives {getattr(text_encoder, 'feature_dim', None)}-dim features, the "
                             f"network's embed_text expects {network.text_dim}; use the encoder the model was trained with")
        if bool(getattr(text_encoder, "is_sequence", False)) != network.text_tokens:
            raise ValueError("text encoder and network disagree on pooled vs token-sequence text features")
        if schedule.num_steps > network.max_timestep_rows:
            raise ValueError(f"schedule has {schedule.num_steps} steps but the timestep table has "
                             f"{network.max_timestep_rows} rows")
        self.network = network
        self.text_encoder = text_encoder
        self.schedule = schedule
        self.guidance_scale = float(guidance_scale) if supports_guidance else 1.0
        self.supports_guidance = supports_guidance
        self.mask_frames = mask_frames
        self.feature_dim = network.feature_dim
        self.network_calls = 0

    # ------------------------------------------------------------- the sigma range
    @property
    def sigmas(self) -> Tensor:
        """Trained sigmas ``[T]`` float64, increasing."""
        return self.schedule.sigmas

    @property
    def sigma_min(self) -> float:
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.schedule.sigma_max

    def round_sigma(self, sigma: Tensor) -> Tensor:
        """The trained sigma nearest (in log) to each sigma, same shape, float64."""
        return self.schedule.t_to_sigma(self.schedule.sigma_to_t(sigma))

    # ------------------------------------------------------------- text rows
    def _text_rows(self, prompts: tuple[Optional[str], ...], rows: list[int], null: list[bool],
                   device: torch.device) -> TextInput:
        """Text input for each network row: prompt feature, or zeros where ``null``."""
        distinct = list(dict.fromkeys(p for p in prompts if p is not None))
        slot = {p: j + 1 for j, p in enumerate(distinct)}  # slot 0 = the null condition
        index = torch.tensor([0 if null[r] else slot[prompts[i]] for r, i in enumerate(rows)], device=device)
        if self.network.text_tokens:
            if distinct:
                tokens, padding = self.text_encoder.encode(distinct)
                tokens, padding = tokens.to(device), padding.to(device)
            else:
                tokens = torch.zeros(0, 1, self.network.text_dim, device=device)
                padding = torch.zeros(0, 1, dtype=torch.bool, device=device)
            S = tokens.shape[1]
            null_tokens = tokens.new_zeros(1, S, tokens.shape[2])
            null_padding = torch.ones(1, S, dtype=torch.bool, device=device)
            null_padding[0, 0] = False  # one zero token (all-zero tokens attend alike, so one is enough)
            return torch.cat([null_tokens, tokens])[index], torch.cat([null_padding, padding])[index]
        feats = (self.text_encoder.encode(distinct).to(device) if distinct
                 else torch.zeros(0, self.network.text_dim, device=device))
        return torch.cat([feats.new_zeros(1, feats.shape[1]), feats])[index]

    # ------------------------------------------------------------- the contract
    def __call__(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> Tensor:
        """x [P, L, D] sigma-space, sigma [P], mask [P, L] bool (True = real), cond -> x0 [P, L, D]."""
        P, L, D = self._check(x, sigma, mask, cond)
        device = x.device
        scales = self._scales(cond, P, device)  # [P] float32
        has_prompt = [p is not None for p in cond.prompts]
        extra = [i for i in range(P) if has_prompt[i] and float(scales[i]) != 1.0]
        rows = list(range(P)) + extra
        null = [not h for h in has_prompt] + [True] * len(extra)

        c_in = (1.0 + sigma.to(torch.float64) ** 2).rsqrt().to(x.dtype)  # [P]
        x_vp = (x * c_in[:, None, None]).permute(0, 2, 1)[:, :, None, :]  # [P, D, 1, L]
        t = self.schedule.sigma_to_t(sigma).to(device)  # [P] long
        frame_mask = mask.to(torch.bool) if (self.mask_frames and not bool(mask.all())) else None

        index = torch.tensor(rows, device=device)
        text = self._text_rows(cond.prompts, rows, null, device)
        out = self.network(x_vp[index], t[index], text, None if frame_mask is None else frame_mask[index])
        self.network_calls += 1
        out = out[:, :, 0, :].permute(0, 2, 1)  # [R, L, D]

        x0 = out[:P]
        if extra:
            pick = torch.tensor(extra, device=device)
            c, u = out[pick], out[P:]
            s = scales[pick].to(out.dtype)[:, None, None]
            x0 = x0.index_copy(0, pick, u + s * (c - u))
        return x0

    def _scales(self, cond: PieceConditions, P: int, device: torch.device) -> Tensor:
        if not self.supports_guidance:
            return torch.ones(P, device=device)
        if cond.guidance is None:
            return torch.full((P,), self.guidance_scale, device=device)
        return cond.guidance.to(device=device, dtype=torch.float32)

    def _check(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> tuple[int, int, int]:
        if x.dim() != 3:
            raise ValueError(f"x must be [P, L, D], got shape {tuple(x.shape)}")
        P, L, D = x.shape
        if D != self.feature_dim:
            raise ValueError(f"x has {D} features per frame, this model expects {self.feature_dim}")
        if sigma.shape != (P,):
            raise ValueError(f"sigma must have shape [{P}], got {tuple(sigma.shape)}")
        if mask.shape != (P, L):
            raise ValueError(f"mask must have shape [{P}, {L}], got {tuple(mask.shape)}")
        if len(cond) != P:
            raise ValueError(f"cond has {len(cond)} entries for {P} pieces; give one prompt (or None) per piece")
        if P and not bool(mask.any(dim=1).all()):
            empty = int((~mask.any(dim=1)).nonzero()[0])
            raise ValueError(f"piece {empty} has no real frame (mask all False); drop empty pieces before the call")
        return P, L, D
