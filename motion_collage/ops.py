"""Pure tensor operations of the collage: cutting pieces out of sequences and merging them back.

A :class:`PieceLayout` is the tensor form of a list of factor graphs (one per batch row): which
frames of which sequence each piece reads, and with which weight each piece's prediction is added
back into each frame. :func:`gather_pieces` and :func:`merge_pieces` are the two halves of one
collage step; neither loops over pieces in Python.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .graph import FactorGraph


@dataclass(frozen=True)
class PieceLayout:
    """Index tables of P pieces cut from B sequences of at most T frames.

    seq_index:    [P] long, the batch row each piece is cut from
    frame_index:  [P, L] long, frame of that row read by each piece position (0 where masked)
    mask:         [P, L] bool, True for real frames of the piece
    weight:       [P] float64, signed weight of each piece in the merge
    prompts:      P conditions (None = null)
    merge_index:  [B, T, K] long, flat index (piece * L + position) of each contribution to a frame
    merge_weight: [B, T, K] float64, weight of each contribution (0 for unused slots and padding)
    num_frames:   [B] long, real length of each sequence
    """

    seq_index: Tensor
    frame_index: Tensor
    mask: Tensor
    weight: Tensor
    prompts: tuple[Optional[str], ...]
    merge_index: Tensor
    merge_weight: Tensor
    num_frames: Tensor

    @property
    def num_pieces(self) -> int:
        return self.seq_index.shape[0]

    def to(self, device: torch.device | str) -> "PieceLayout":
        """The same layout with its tensors on `device`."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return PieceLayout(**moved)


def build_layout(graphs: Sequence[FactorGraph], include_variables: bool = True,
                 weights: Optional[Sequence[Sequence[float]]] = None) -> PieceLayout:
    """Tensor layout of the nodes of one graph per batch row.

    By default each node has its collage weight (+1 factor, 1 - d variable) and nodes of weight 0
    are left out (they would be evaluated for nothing). ``include_variables=False`` keeps factors
    only with weight 1 each (for averaging). ``weights`` overrides the per-node weights
    (in ``graph.nodes`` order).
    """
    rows: list[tuple[int, np.ndarray, float, Optional[str]]] = []
    for b, g in enumerate(graphs):
        nodes = g.nodes if include_variables else g.factors
        node_weights = weights[b] if weights is not None else (g.weights if include_variables else (1.0,) * len(nodes))
        for node, w in zip(nodes, node_weights):
            if w != 0:
                rows.append((b, node.frames(g.num_frames), float(w), node.prompt))
    B, T = len(graphs), max(g.num_frames for g in graphs)
    P, L = len(rows), max(len(r[1]) for r in rows)
    frame_index = np.zeros((P, L), dtype=np.int64)
    mask = np.zeros((P, L), dtype=bool)
    for p, (_, frames, _, _) in enumerate(rows):
        frame_index[p, : len(frames)] = frames
        mask[p, : len(frames)] = True
    seq_index = np.array([r[0] for r in rows], dtype=np.int64)
    weight = np.array([r[2] for r in rows], dtype=np.float64)

    # Inverse table: for each (row, frame), the flat positions of the pieces covering it.
    contributions: list[list[tuple[int, float]]] = [[] for _ in range(B * T)]
    for p in range(P):
        for pos in range(int(mask[p].sum())):
            contributions[seq_index[p] * T + frame_index[p, pos]].append((p * L + pos, weight[p]))
    K = max(len(c) for c in contributions)
    merge_index = np.zeros((B * T, K), dtype=np.int64)
    merge_weight = np.zeros((B * T, K), dtype=np.float64)
    for i, c in enumerate(contributions):
        for k, (flat, w) in enumerate(c):
            merge_index[i, k], merge_weight[i, k] = flat, w
    return PieceLayout(
        seq_index=torch.from_numpy(seq_index),
        frame_index=torch.from_numpy(frame_index),
        mask=torch.from_numpy(mask),
        weight=torch.from_numpy(weight),
        prompts=tuple(r[3] for r in rows),
        merge_index=torch.from_numpy(merge_index.reshape(B, T, K)),
        merge_weight=torch.from_numpy(merge_weight.reshape(B, T, K)),
        num_frames=torch.tensor([g.num_frames for g in graphs], dtype=torch.long),
    )


def gather_pieces(x: Tensor, layout: PieceLayout) -> Tensor:
    """Cut the pieces out of ``x [B, T, D]``: returns ``[P, L, D]`` with zeros at masked frames."""
    pieces = x[layout.seq_index[:, None], layout.frame_index]
    return pieces * layout.mask[..., None].to(x.dtype)


def merge_pieces(pieces: Tensor, layout: PieceLayout) -> Tensor:
    """Signed sum of piece predictions ``[P, L, D]`` into sequences ``[B, T, D]``.

    Each frame receives ``sum_k weight_k * pieces[k]`` over the pieces covering it, summed in a
    fixed order (a gather, not an atomic scatter), so the result is deterministic on every device.
    """
    flat = pieces.reshape(-1, pieces.shape[-1])
    picked = flat[layout.merge_index]  # [B, T, K, D]
    return (picked * layout.merge_weight[..., None].to(pieces.dtype)).sum(dim=2)
