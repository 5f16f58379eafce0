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

from .graph import FactorGraph, WeightedNode


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

    Vectorised over pieces and frames (no Python loop per frame): a batch of 1,000 motions of
    24 s builds in milliseconds.
    """
    seq, starts, lengths, wrap, weight_list, prompts = [], [], [], [], [], []
    for b, g in enumerate(graphs):
        nodes = g.nodes if include_variables else g.factors
        node_weights = weights[b] if weights is not None else (g.weights if include_variables else (1.0,) * len(nodes))
        for node, w in zip(nodes, node_weights):
            if w != 0:
                seq.append(b)
                starts.append(node.start)
                lengths.append(node.length)
                wrap.append(g.num_frames)
                weight_list.append(float(w))
                prompts.append(node.prompt)
    B, T = len(graphs), max(g.num_frames for g in graphs)
    seq_index = np.asarray(seq, dtype=np.int64)
    length = np.asarray(lengths, dtype=np.int64)
    weight = np.asarray(weight_list, dtype=np.float64)
    L = int(length.max())
    pos = np.arange(L, dtype=np.int64)[None, :]
    mask = pos < length[:, None]  # [P, L]
    frame_index = np.where(mask, (np.asarray(starts, dtype=np.int64)[:, None] + pos) % np.asarray(wrap)[:, None], 0)

    piece, position = np.nonzero(mask)  # row-major: by piece, then position
    merge_index, merge_weight = _merge_tables(seq_index[piece] * T + frame_index[piece, position],
                                              piece * L + position, weight[piece], B * T)
    return PieceLayout(
        seq_index=torch.from_numpy(seq_index),
        frame_index=torch.from_numpy(frame_index),
        mask=torch.from_numpy(mask),
        weight=torch.from_numpy(weight),
        prompts=tuple(prompts),
        merge_index=torch.from_numpy(merge_index.reshape(B, T, -1)),
        merge_weight=torch.from_numpy(merge_weight.reshape(B, T, -1)),
        num_frames=torch.tensor([g.num_frames for g in graphs], dtype=torch.long),
    )


def build_weighted_layout(plans: Sequence[tuple[int, Sequence[WeightedNode]]]) -> PieceLayout:
    """Tensor layout of per-frame weighted pieces, one ``(num_frames, nodes)`` plan per batch row.

    Each node's prediction at its k-th frame is added with ``node.weights[k]`` (see
    :func:`motion_collage.graph.merge_plan`); frames of weight 0 are read (context) but not
    merged. ``weight`` holds each piece's largest-magnitude frame weight.
    """
    seq, starts, wraps, prompts, rows = [], [], [], [], []
    for b, (num_frames, nodes) in enumerate(plans):
        for node in nodes:
            seq.append(b)
            starts.append(node.start)
            wraps.append(num_frames)
            prompts.append(node.prompt)
            rows.append(np.asarray(node.weights, dtype=np.float64))
    if not rows:
        raise ValueError("a layout needs at least one piece")
    B, T = len(plans), max(n for n, _ in plans)
    length = np.array([len(w) for w in rows], dtype=np.int64)
    P, L = len(rows), int(length.max())
    pos = np.arange(L, dtype=np.int64)[None, :]
    mask = pos < length[:, None]
    frame_index = np.where(mask, (np.asarray(starts)[:, None] + pos) % np.asarray(wraps)[:, None], 0)
    w = np.zeros((P, L))
    w[mask] = np.concatenate(rows)
    seq_index = np.asarray(seq, dtype=np.int64)
    piece, position = np.nonzero(mask & (w != 0))
    merge_index, merge_weight = _merge_tables(seq_index[piece] * T + frame_index[piece, position],
                                              piece * L + position, w[piece, position], B * T)
    return PieceLayout(
        seq_index=torch.from_numpy(seq_index), frame_index=torch.from_numpy(frame_index),
        mask=torch.from_numpy(mask), weight=torch.from_numpy(w[np.arange(P), np.abs(w).argmax(1)]),
        prompts=tuple(prompts), merge_index=torch.from_numpy(merge_index.reshape(B, T, -1)),
        merge_weight=torch.from_numpy(merge_weight.reshape(B, T, -1)),
        num_frames=torch.tensor([n for n, _ in plans], dtype=torch.long))


def _merge_tables(target: np.ndarray, flat: np.ndarray, weight: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse tables ``[size, K]``: for each (row * T + frame), the flat piece positions merged into
    it and their weights, in increasing piece order (a stable sort keeps enumeration order)."""
    order = np.argsort(target, kind="stable")
    target, flat, weight = target[order], flat[order], weight[order]
    counts = np.bincount(target, minlength=size)
    first = np.cumsum(counts) - counts
    slot = np.arange(target.shape[0]) - first[target]
    K = max(int(counts.max()), 1)
    merge_index = np.zeros((size, K), dtype=np.int64)
    merge_weight = np.zeros((size, K), dtype=np.float64)
    merge_index[target, slot] = flat
    merge_weight[target, slot] = weight
    return merge_index, merge_weight


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
