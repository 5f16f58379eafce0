"""The analytic cost model of one network call: FLOPs and memory traffic, from its shapes."""
from __future__ import annotations

import json
from typing import NamedTuple, Optional, Sequence

import torch

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM


class Call(NamedTuple):
    """One recorded network call: ``rows`` x ``frames`` in, under autograd or not; a packed call
    (:mod:`mdm_adapter.packing`) also has the tokens it computes and its attention (query, key)
    pairs."""

    rows: int
    frames: int
    grad: bool
    tokens: Optional[int] = None
    attention_pairs: Optional[int] = None

    @property
    def computed_tokens(self) -> int:
        return self.rows * (self.frames + 1) if self.tokens is None else self.tokens


def forward_flops(args: MDMArgs, rows: int, frames: int, attention: bool = True, tokens: Optional[int] = None,
                  attention_pairs: Optional[int] = None) -> float:
    """Floating-point operations of one network forward on ``rows`` pieces of ``frames`` frames.

    Counts multiply-adds as 2 FLOPs: input/output projections, time and text embeddings, and per
    layer the q/k/v/out projections, the attention scores and their product with V, and the
    feed-forward block (trans_dec adds cross-attention to its one condition token). Padded tokens
    are counted: they are computed. Layer norms, softmax and GELU are left out (< 1%).
    ``attention=False`` leaves out the two attention products (the matmuls with weights only).
    A packed call gives the ``tokens`` it computes (condition tokens included) and its attention
    ``attention_pairs`` (default: every row padded, ``rows x (frames + 1)`` and its square).
    """
    d, ff, D = args.latent_dim, args.ff_size, args.feature_dim
    prefix = 1 if args.arch == "trans_enc" or args.emb_trans_dec else 0
    S = frames + prefix
    tokens = rows * S if tokens is None else tokens
    pairs = rows * S * S if attention_pairs is None else attention_pairs
    per_layer = 2 * tokens * (4 * d * d + 2 * d * ff) + (4 * pairs * d if attention else 0)
    if args.arch == "trans_dec":
        # cross-attention: q/out projections, k/v of the one condition token, scores and values
        per_layer += 2 * tokens * 2 * d * d + rows * 2 * 2 * d * d + (4 * tokens * d if attention else 0)
    io = 2 * (tokens - rows * prefix) * 2 * D * d + rows * (2 * 2 * d * d + 2 * args.text_dim * d)
    return float(args.layers * per_layer + io)


def call_flops(args: MDMArgs, call: Call) -> float:
    """FLOPs of one recorded call; under autograd (reconstruction) its backward adds 2x."""
    return forward_flops(args, call.rows, call.frames, tokens=call.tokens,
                         attention_pairs=call.attention_pairs) * (3 if call.grad else 1)


def recorded_flops(args: MDMArgs, calls: Sequence[Call]) -> float:
    """FLOPs of recorded calls (:func:`call_flops` summed)."""
    return sum(call_flops(args, Call(*c)) for c in calls)


def bytes_per_call(args: MDMArgs, rows: int, frames: int, dtype_bytes: int, tokens: Optional[int] = None) -> float:
    """Memory traffic of one forward: the weights once, and per layer and token the activations
    written and read back once (q/k/v, attention output, projection, residuals, norms, both
    feed-forward tensors and GELU: about ``9 d + 2 ff`` values each way). Attention scores are
    not stored (fused attention)."""
    d, ff = args.latent_dim, args.ff_size
    params = sum(p.numel() for p in _meta_network(args).parameters())
    tokens = rows * (frames + 1) if tokens is None else tokens
    return dtype_bytes * (params + 2 * tokens * args.layers * (9 * d + 2 * ff) + 2 * (tokens - rows) * args.feature_dim)


_META_CACHE: dict[str, MDM] = {}


def _meta_network(args: MDMArgs) -> MDM:
    """The network on the meta device (shapes only, no memory), cached per architecture."""
    key = json.dumps(args.to_dict(), sort_keys=True)
    if key not in _META_CACHE:
        with torch.device("meta"):
            _META_CACHE[key] = MDM.from_args(args)
    return _META_CACHE[key]
