"""Packed rows: the real frames of many network rows in one token stream, no padding.

A collage batch pads every row to the longest piece: at 24 s, 10 rows of 181 tokens where the
four overlap rows hold 21 real tokens. :class:`Packing` lays out only the real tokens of every
row, each row as one contiguous block ``[condition token, its real frames]``, so that the
network's linear layers (projections and feed-forward, the bulk of the FLOPs) run on real tokens
only, in one call. Attention stays within a row (block-diagonal); the backends:

* ``rows`` (default, every device): the stream is scattered back into ``[rows, longest, ...]``
  for attention only (with a key-padding mask), and gathered again. The attention products are
  computed as in the padded call; everything else is not.
* ``nested``: PyTorch's jagged nested tensors with ``scaled_dot_product_attention`` (varlen
  kernels on CUDA; no CPU backend in torch 2.13, measured).
* ``flex``: FlexAttention with a block mask from the row of each token (compiled; on CPU it
  measured 1.7x slower than the padded call after a 40 s compile, so CUDA only in practice).

Built once per (rows, mask) on the host from the mask's values and kept on the device: a
sampling step indexes with it and reads nothing back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_BACKENDS = ("rows", "nested", "flex")


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of ``rows`` network rows of ``frames`` frames lie in one stream.

    frame_row, frame_pos: [Nf] long, row and frame of each real frame (row-major order)
    frame_token:          [Nf] long, its place in the stream
    cond_token:           [R] long, place of each row's condition token (first of its block)
    position:             [Nt] long, positional-table row of each token (0 condition, 1 + frame)
    offsets:              [R + 1] long, first token of each row's block (and the total)
    slot_token:           [R, C] long, token at each (row, slot) of the attention rows (clamped)
    slot_valid:           [R, C] bool, slots holding a token of the row
    token_slot:           [Nt] long, flat slot (row * C + j) of each token
    longest:              C, the longest block (1 + the row's real frames)
    attention:            backend name (see the module docstring)
    """

    rows: int
    frames: int
    tokens: int
    longest: int
    frame_row: Tensor
    frame_pos: Tensor
    frame_token: Tensor
    cond_token: Tensor
    position: Tensor
    offsets: Tensor
    slot_token: Tensor
    slot_valid: Tensor
    token_slot: Tensor
    attention: str = "rows"
    lengths: tuple[int, ...] = ()  # tokens per row (host)

    @property
    def real_frames(self) -> int:
        return self.tokens - self.rows


def build_packing(mask: Tensor, device: torch.device | str, attention: str = "rows") -> Packing:
    """The packing of rows with real frames ``mask [R, L]`` (bool, read on the host once).

    Frames need not be a prefix: each real frame keeps its own positional row (1 + its index),
    exactly as in the padded call where masked frames are hidden from attention.
    """
    if attention not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {attention!r}")
    if attention == "nested" and torch.device(device).type == "cpu":
        raise ValueError("the nested attention backend has no CPU kernel (torch 2.13: SDPA on jagged tensors "
                         "finds no viable backend); use packing='rows' on the CPU")
    mask = mask.detach().to("cpu", torch.bool)
    R, L = mask.shape
    frame_row, frame_pos = mask.nonzero(as_tuple=True)
    counts = mask.sum(dim=1)
    lengths = counts + 1
    offsets = torch.zeros(R + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    tokens = int(offsets[-1])
    first_frame = counts.cumsum(0) - counts  # index of each row's first real frame in frame order
    rank = torch.arange(frame_row.numel()) - first_frame[frame_row]
    frame_token = offsets[frame_row] + 1 + rank
    position = torch.zeros(tokens, dtype=torch.long)
    position[frame_token] = frame_pos + 1
    C = int(lengths.max()) if R else 1
    j = torch.arange(C)
    slot_valid = j[None, :] < lengths[:, None]
    slot_token = (offsets[:-1, None] + j[None, :]).clamp_max(max(tokens - 1, 0))
    token_slot = (torch.arange(R)[:, None] * C + j[None, :])[slot_valid]
    to = {"device": device}
    return Packing(rows=R, frames=L, tokens=tokens, longest=C, frame_row=frame_row.to(**to),
                   frame_pos=frame_pos.to(**to), frame_token=frame_token.to(**to),
                   cond_token=offsets[:-1].to(**to), position=position.to(**to), offsets=offsets.to(**to),
                   slot_token=slot_token.to(**to), slot_valid=slot_valid.to(**to), token_slot=token_slot.to(**to),
                   attention=attention, lengths=tuple(lengths.tolist()))


Attend = Callable[[Tensor, float], Tensor]  # qkv [Nt, 3, H, hd], dropout p -> [Nt, H, hd]


def attention_fn(packing: Packing) -> Attend:
    """Block-diagonal self-attention over the packed stream with the packing's backend."""
    if packing.attention == "nested":
        return lambda qkv, p: _nested(packing, *qkv.unbind(1), p)
    if packing.attention == "flex":
        return lambda qkv, p: _flex(packing, *qkv.unbind(1), p)
    return lambda qkv, p: _rows(packing, qkv, p)


def _rows(packing: Packing, qkv: Tensor, dropout_p: float) -> Tensor:
    """One gather to ``[R, C, 3, H, hd]``, SDPA with the key-padding mask, the real tokens back."""
    _, _, heads, hd = qkv.shape
    Q, K, V = qkv[packing.slot_token].permute(2, 0, 3, 1, 4).unbind(0)  # [R, H, C, hd] each
    out = F.scaled_dot_product_attention(Q, K, V, attn_mask=packing.slot_valid[:, None, None, :],
                                         dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(-1, heads, hd)[packing.token_slot]


def _nested(packing: Packing, q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """Jagged nested tensors (one component per row) through SDPA."""
    offsets = packing.offsets
    Q, K, V = (torch.nested.nested_tensor_from_jagged(z.contiguous(), offsets).transpose(1, 2) for z in (q, k, v))
    out = F.scaled_dot_product_attention(Q, K, V, dropout_p=dropout_p)
    return out.transpose(1, 2).values()


_FLEX_FN: list = []  # the compiled flex_attention, built on first use
_FLEX_BLOCKS: "dict[int, tuple[Packing, object]]" = {}  # block masks of the last few packings


def _flex(packing: Packing, q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """FlexAttention on ``[1, H, Nt, hd]`` with a block mask: a token attends to its own row."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if dropout_p:
        raise ValueError("the flex attention backend has no attention dropout; use it in eval mode")
    if not _FLEX_FN:
        _FLEX_FN.append(torch.compile(flex_attention))
    entry = _FLEX_BLOCKS.get(id(packing))
    if entry is None or entry[0] is not packing:
        lengths = torch.tensor(packing.lengths, device=q.device)
        row = torch.repeat_interleave(torch.arange(packing.rows, device=q.device), lengths)

        def same_row(b, h, i, j):
            return row[i] == row[j]

        block = create_block_mask(same_row, None, None, packing.tokens, packing.tokens, device=q.device)
        while len(_FLEX_BLOCKS) >= 4:
            _FLEX_BLOCKS.pop(next(iter(_FLEX_BLOCKS)))
        entry = _FLEX_BLOCKS[id(packing)] = (packing, block)
    out = _FLEX_FN[0](*(z.transpose(0, 1)[None] for z in (q, k, v)), block_mask=entry[1])
    return out[0].transpose(0, 1)
