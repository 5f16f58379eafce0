"""The analytic cost model of one network call: FLOPs and memory traffic, from its shapes."""
from __future__ import annotations

import json
from typing import Sequence

import torch

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM


def forward_flops(args: MDMArgs, rows: int, frames: int, attention: bool = True) -> float:
    """Floating-point operations of one network forward on ``rows`` pieces of ``frames`` frames.

    Counts multiply-adds as 2 FLOPs: input/output projections, time and text embeddings, and per
    layer the q/k/v/out projections, the attention scores and their product with V, and the
    feed-forward block (trans_dec adds cross-attention to its one condition token). Padded tokens
    are counted: they are computed. Layer norms, softmax and GELU are left out (< 1%).
    ``attention=False`` leaves out the two attention products (the matmuls with weights only).
    """
    d, ff, D = args.latent_dim, args.ff_size, args.feature_dim
    S = frames + (1 if args.arch == "trans_enc" or args.emb_trans_dec else 0)
    per_layer = 2 * S * (4 * d * d + 2 * d * ff) + (4 * S * S * d if attention else 0)
    if args.arch == "trans_dec":
        # cross-attention: q/out projections, k/v of the one condition token, scores and values
        per_layer += 2 * S * 2 * d * d + 2 * 2 * d * d + (4 * S * d if attention else 0)
    io = 2 * frames * 2 * D * d + 2 * 2 * d * d + 2 * args.text_dim * d
    return float(rows) * (args.layers * per_layer + io)


def recorded_flops(args: MDMArgs, calls: Sequence[tuple[int, int, bool]]) -> float:
    """FLOPs of recorded ``(rows, frames, grad)`` calls; a call under autograd (reconstruction)
    adds its backward (2x)."""
    return sum(forward_flops(args, b, n) * (3 if grad else 1) for b, n, grad in calls)


def bytes_per_call(args: MDMArgs, rows: int, frames: int, dtype_bytes: int) -> float:
    """Memory traffic of one forward: the weights once, and per layer and token the activations
    written and read back once (q/k/v, attention output, projection, residuals, norms, both
    feed-forward tensors and GELU: about ``9 d + 2 ff`` values each way). Attention scores are
    not stored (fused attention)."""
    d, ff = args.latent_dim, args.ff_size
    params = sum(p.numel() for p in _meta_network(args).parameters())
    tokens = rows * (frames + 1)
    return dtype_bytes * (params + 2 * tokens * args.layers * (9 * d + 2 * ff) + 2 * rows * frames * args.feature_dim)


_META_CACHE: dict[str, MDM] = {}


def _meta_network(args: MDMArgs) -> MDM:
    """The network on the meta device (shapes only, no memory), cached per architecture."""
    key = json.dumps(args.to_dict(), sort_keys=True)
    if key not in _META_CACHE:
        with torch.device("meta"):
            _META_CACHE[key] = MDM.from_args(args)
    return _META_CACHE[key]
