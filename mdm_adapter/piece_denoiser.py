"""MDM as a sigma-space piece denoiser (the contract of :mod:`motion_core.denoiser`).

One call = one batched network call, whatever the mix of prompts and null conditions:

* row i < P: piece i with its own text (its prompt's feature, or zeros for a ``None`` prompt);
* one extra row per piece that has a prompt and a guidance scale other than 1: the same piece
  with zero text (the unconditional branch of classifier-free guidance).

Then per piece ``x0 = u + s * (c - u)`` (the release's formula and order of operations).
(With ``max_rows_per_call`` the rows go through the network in consecutive chunks instead: same
result, bounded memory.)

Per-step cost: what depends only on the conditions (the row plan, the text features, index
tensors) is built once per distinct conditions and kept on the device, and a layout's mask is
read on the host once; so, after the first step, a call reads nothing back from the device and
copies nothing to it (a sampling loop on a GPU never waits for it). A guidance tensor that is
already on the GPU is not read either: every prompted piece then gets an unconditional row.

Noise convention: sigma-space ``x = x0 + sigma * eps`` outside, MDM's VP space inside:
``x_vp = x / sqrt(1 + sigma^2)``, and the network is called with the trained timestep whose
sigma is nearest in log-space (``schedule.sigma_to_t``). MDM predicts x0, which is the same in
both spaces, so the output needs no rescaling.

Padding: by default (``packing="rows"``) the real frames of all rows are packed into one token
stream and only they are computed, in one network call (:mod:`mdm_adapter.packing`); with
``cuda_graph`` a call is one CUDA-graph replay (:mod:`mdm_adapter.graphs`).

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

import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from motion_core import defaults
from motion_core.denoiser import PieceConditions

from .graphs import GraphCache, graph_key
from .model import MDM, TextInput
from .packing import ATTENTION_BACKENDS, Packing, build_packing
from .schedules import DiscreteSchedule
from .text_encoders import TextEncoder


PLAN_CACHE_SIZE = 16  # conditions (and masks) remembered; a sampling run uses one or two
DEFAULT_PACKING = "rows"  # padded rows packed into one stream (faster on CPU, measured; see the class)


@dataclass(frozen=True)
class _Plan:
    """The per-condition part of a call, identical at every step (kept on the device).

    index: [R] long, the piece each network row reads (P pieces, then the unconditional rows)
    text: R rows of text input (prompt features, zeros for the null condition)
    pick: [E] long, the pieces that have an unconditional row (rows P..P+E-1), or None
    scales: [E, 1, 1] float32 guidance scales of those pieces when known on the host, else None
    """

    index: Tensor
    text: TextInput
    pick: Optional[Tensor]
    scales: Optional[Tensor]
    rows: tuple[int, ...] = ()  # plan.index on the host
    groups: dict = field(default_factory=dict, compare=False)  # network calls per mask (see _row_groups)


@dataclass(frozen=True)
class _MaskInfo:
    """Host facts about a mask: all real, first empty piece (or None), real extent of each piece."""

    all_real: bool
    empty: Optional[int]
    extents: tuple[int, ...]
    serial: int
    host: Optional[Tensor] = field(default=None, compare=False)  # the mask's values on the CPU
    content: bytes = field(default=b"", compare=False)  # digest of the values (graphs are keyed by it)


def _take(text: TextInput, pos: Tensor) -> TextInput:
    return tuple(v[pos] for v in text) if isinstance(text, tuple) else text[pos]


def _bucket_bounds(sorted_lengths: list[int], buckets: int) -> list[tuple[int, int]]:
    """Split sorted lengths into at most ``buckets`` contiguous groups, fewest padded tokens.

    Each group costs ``size x (its longest + 1)`` tokens. Dynamic programming over the distinct
    lengths (few in a collage: factor and overlap sizes).
    """
    n = len(sorted_lengths)
    if buckets <= 1 or n == 0:
        return [(0, n)]
    ends = [i + 1 for i in range(n) if i + 1 == n or sorted_lengths[i + 1] != sorted_lengths[i]]
    m = len(ends)
    INF = float("inf")
    # best[k][j]: cost of the first ends[j] rows in k groups; groups end at distinct-length boundaries
    best = [[INF] * m for _ in range(buckets + 1)]
    back = [[-1] * m for _ in range(buckets + 1)]
    for j in range(m):
        best[1][j] = ends[j] * (sorted_lengths[ends[j] - 1] + 1)
    for k in range(2, buckets + 1):
        for j in range(m):
            for i in range(j):
                cost = best[k - 1][i] + (ends[j] - ends[i]) * (sorted_lengths[ends[j] - 1] + 1)
                if cost < best[k][j]:
                    best[k][j], back[k][j] = cost, i
    k = min(range(1, buckets + 1), key=lambda q: (best[q][m - 1], q))
    bounds, j = [], m - 1
    while k >= 1:
        i = back[k][j] if k > 1 else -1
        bounds.append((ends[i] if i >= 0 else 0, ends[j]))
        j, k = i, k - 1
    return bounds[::-1]


class MDMPieceDenoiser:
    """Wrap an MDM network, a text encoder and its schedule as a piece denoiser.

    network: the MDM (in eval mode for sampling). text_encoder: features for prompts.
    schedule: the model's discrete schedule (gives the trained sigmas and the rounding).
    guidance_scale: default classifier-free guidance scale (the release's 2.5).
    supports_guidance: False for models trained without text dropout (cond_mask_prob 0):
        guidance is then 1 whatever is asked, and no unconditional rows are run.
    mask_frames: hide padded frames from attention (see the module docstring).
    max_rows_per_call: run the network on at most this many rows (pieces and their unconditional
        copies) at a time, to bound activation memory for very long motions; ``None`` = all rows
        in one network call. Chunks run one after the other without reading anything back, and
        give the same x0 as one call (each row is computed independently). The attribute may be
        changed between calls.
    length_buckets: with ``mask_frames``, sort the rows by real length and run up to this many
        groups of similar length, each cut to its longest row, instead of padding every row to
        the longest piece (a collage's 20-frame overlaps otherwise compute as 196-frame rows).
        Fewer FLOPs (a compute-bound CPU gains), more network calls per step (a launch-bound
        GPU at small batch loses); 1 (default) = one call. Same x0: masked pieces do not see
        their padding. A value above 1 takes precedence over ``packing``.
    packing: with ``mask_frames`` and a ``trans_enc`` network, run only the real frames of all
        rows in one network call, packed in one token stream with block-diagonal attention
        (:mod:`mdm_adapter.packing`): ``"rows"`` (default; attention re-padded per row, every
        device), ``"nested"`` (jagged nested tensors, CUDA), ``"flex"`` (FlexAttention, compiled),
        or ``"off"`` (every row padded to the longest piece). Same x0 at real frames within 1e-5
        (float32); masked frames predict 0. Measured on one CPU core, release architecture:
        0.60-0.71x the time of the padded call at 24 s and 60 s (docs/performance.md).
    cuda_graph: on CUDA, capture each call (after a first eager one with the same shapes, mask
        and conditions) as a CUDA graph and replay it, so that the host launches one graph per
        step instead of ~164 kernels (:mod:`mdm_adapter.graphs`). A ``ValueError`` (one line)
        on other devices. The attribute may be changed between calls.
    """

    def __init__(self, network: MDM, text_encoder: TextEncoder, schedule: DiscreteSchedule,
                 guidance_scale: float = defaults.GUIDANCE, supports_guidance: bool = True, mask_frames: bool = True,
                 max_rows_per_call: Optional[int] = None, length_buckets: int = 1,
                 packing: str = DEFAULT_PACKING, cuda_graph: bool = False) -> None:
        if packing not in ATTENTION_BACKENDS + ("off",):
            raise ValueError(f"packing must be one of {ATTENTION_BACKENDS + ('off',)}, got {packing!r}")
        if not isinstance(length_buckets, int) or length_buckets < 1:
            raise ValueError(f"length_buckets must be a positive integer, got {length_buckets!r}")
        if max_rows_per_call is not None and (not isinstance(max_rows_per_call, int) or max_rows_per_call < 1):
            raise ValueError(f"max_rows_per_call must be a positive integer or None, got {max_rows_per_call!r}")
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
        self.max_rows_per_call = max_rows_per_call
        self.length_buckets = length_buckets
        self.packing = packing
        self.cuda_graph = cuda_graph
        self.graph_backend = None  # None: CUDA graphs; tests set graphs.EmulatedGraphs()
        self._graphs: Optional[GraphCache] = None
        self._serial = 0
        self.network_calls = 0
        self._plans: "OrderedDict[tuple, _Plan]" = OrderedDict()
        self._masks: "OrderedDict[int, tuple]" = OrderedDict()
        self._guidance_values: "OrderedDict[int, tuple]" = OrderedDict()
        self._log_sigmas: dict[torch.device, Tensor] = {}

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

    # ------------------------------------------------------------- per-condition plan
    def _plan(self, cond: PieceConditions, device: torch.device) -> _Plan:
        """Network rows and text inputs for these conditions, built once and reused at every step.

        Which pieces need an unconditional row is decided on the host: from the guidance values
        when they are on the CPU (reading them costs nothing), otherwise every prompted piece gets
        one and a scale of exactly 1 selects the conditional row (so a guidance tensor on the GPU
        is never read back).
        """
        P = len(cond)
        g = cond.guidance
        if not self.supports_guidance:
            values: Optional[tuple[float, ...]] = (1.0,) * P
        elif g is None:
            values = (self.guidance_scale,) * P
        elif g.device.type == "cpu":
            values = self._host_values(g)
        else:
            values = None  # on the device: never read back
        key = (cond.prompts, values, device)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        prompted = [i for i, p in enumerate(cond.prompts) if p is not None]
        extra = prompted if values is None else [i for i in prompted if values[i] != 1.0]
        rows = list(range(P)) + extra
        null = [p is None for p in cond.prompts] + [True] * len(extra)
        scales = None
        if values is not None and extra:
            scales = torch.tensor([values[i] for i in extra], dtype=torch.float32, device=device)[:, None, None]
        plan = _Plan(index=torch.tensor(rows, device=device),
                     text=self._text_rows(cond.prompts, rows, null, device),
                     pick=torch.tensor(extra, dtype=torch.long, device=device) if extra else None,
                     scales=scales, rows=tuple(rows))
        self._plans[key] = plan
        while len(self._plans) > PLAN_CACHE_SIZE:
            self._plans.popitem(last=False)
        return plan

    def _host_values(self, guidance: Tensor) -> tuple[float, ...]:
        """A CPU guidance tensor's values, read once per tensor (identity and version counter)."""
        entry = self._guidance_values.get(id(guidance))
        if entry is not None and entry[0]() is guidance and entry[1] == guidance._version:
            return entry[2]
        values = tuple(guidance.tolist())
        self._guidance_values[id(guidance)] = (weakref.ref(guidance), guidance._version, values)
        while len(self._guidance_values) > PLAN_CACHE_SIZE:
            self._guidance_values.popitem(last=False)
        return values

    def _mask_info(self, mask: Tensor) -> "_MaskInfo":
        """What the host needs to know about a mask, read once per mask tensor.

        Layouts pass the same mask tensor at every step, so the host reads it once; a new or
        modified tensor (by identity and version counter) is read again.
        """
        entry = self._masks.get(id(mask))
        if entry is not None and entry[0]() is mask and entry[1] == mask._version:
            return entry[2]
        real = mask.any(dim=1)
        empty = None if bool(real.all()) else int((~real).nonzero()[0])
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        extents = tuple((mask.to(torch.long) * positions).amax(dim=1).tolist()) if mask.shape[0] else ()
        self._serial += 1
        host = mask.detach().to("cpu", torch.bool)
        digest = hashlib.blake2b(host.numpy().tobytes(), digest_size=16).digest() + repr(tuple(host.shape)).encode()
        info = _MaskInfo(bool(mask.all()), empty, extents, self._serial, host, digest)
        self._masks[id(mask)] = (weakref.ref(mask), mask._version, info)
        while len(self._masks) > PLAN_CACHE_SIZE:
            self._masks.popitem(last=False)
        return info

    def _row_groups(self, plan: "_Plan", info: "_MaskInfo", L: int) -> list[tuple[Tensor, Tensor, int]]:
        """Network calls of one step: (row positions, pieces, frames) for each call.

        Rows are sorted by their real extent and split into at most ``length_buckets`` groups of
        similar length (the split that computes the fewest padded tokens), each cut to its
        longest row; then each group into chunks of at most ``max_rows_per_call`` rows.
        Built once per (conditions, mask) and kept on the device.
        """
        key = (info.serial, L, self.length_buckets, self.max_rows_per_call)
        groups = plan.groups.get(key)
        if groups is not None:
            return groups
        device = plan.index.device
        extent = [max(1, info.extents[i]) for i in plan.rows]
        order = sorted(range(len(extent)), key=lambda r: extent[r])
        bounds = _bucket_bounds([extent[r] for r in order], self.length_buckets)
        step = self.max_rows_per_call or len(order)
        groups = []
        for lo, hi in bounds:
            rows = order[lo:hi]
            for c in range(0, len(rows), step):
                chunk = rows[c:c + step]
                pos = torch.tensor(chunk, dtype=torch.long, device=device)
                groups.append((pos, plan.index[pos], max(extent[r] for r in chunk)))
        if len(plan.groups) >= PLAN_CACHE_SIZE:
            plan.groups.clear()
        plan.groups[key] = groups
        return groups

    def _packs(self, frame_mask: Optional[Tensor]) -> bool:
        """Whether this call runs packed: padding to remove, a trans_enc network, no buckets asked."""
        return (frame_mask is not None and self.packing != "off" and self.length_buckets == 1
                and getattr(self.network, "arch", None) == "trans_enc")

    def _packed_groups(self, plan: "_Plan", info: "_MaskInfo", L: int) -> list[tuple[Tensor, Tensor, Packing]]:
        """Network calls of a packed step: (row positions, pieces, packing) per chunk of at most
        ``max_rows_per_call`` rows (one call without it). Built once per (conditions, mask)."""
        key = ("packed", info.serial, L, self.packing, self.max_rows_per_call)
        groups = plan.groups.get(key)
        if groups is not None:
            return groups
        device = plan.index.device
        R = len(plan.rows)
        step = self.max_rows_per_call or R
        groups = []
        for lo in range(0, R, step):
            rows = list(range(lo, min(R, lo + step)))
            pos = torch.tensor(rows, dtype=torch.long, device=device)
            host_rows = info.host[[plan.rows[r] for r in rows]]
            groups.append((pos, plan.index[pos], build_packing(host_rows, device, self.packing)))
        if len(plan.groups) >= PLAN_CACHE_SIZE:
            plan.groups.clear()
        plan.groups[key] = groups
        return groups

    def _timesteps(self, sigma: Tensor) -> Tensor:
        """Nearest trained timestep of each sigma (as ``schedule.sigma_to_t``), table cached per device."""
        table = self._log_sigmas.get(sigma.device)
        if table is None:
            table = self._log_sigmas[sigma.device] = self.schedule.sigmas.log().to(sigma.device)
        return (sigma.to(torch.float64).clamp_min(1e-30).log()[..., None] - table).abs().argmin(dim=-1)

    # ------------------------------------------------------------- the contract
    def __call__(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> Tensor:
        """x [P, L, D] sigma-space, sigma [P], mask [P, L] bool (True = real), cond -> x0 [P, L, D].

        Nothing here reads a device tensor back to the host once a layout's mask and conditions
        have been seen (the sampling loop stays asynchronous on a GPU). With ``cuda_graph`` the
        call after the first one for the same shapes, mask values and conditions is one graph
        replay (a mask or guidance tensor seen for the first time is read on the host once, as
        in eager mode).
        """
        if self.cuda_graph:
            return self._graphed(x, sigma, mask, cond)
        return self._eager(x, sigma, mask, cond)

    def _graphed(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> Tensor:
        """The call through a CUDA graph (:mod:`mdm_adapter.graphs`): x and sigma copied into
        static buffers, one replay, the static x0 copied out."""
        if self._graphs is None or (self.graph_backend is not None and self._graphs.backend is not self.graph_backend):
            self._graphs = GraphCache(self.graph_backend)
        g = cond.guidance
        # by content: a new layout with the same mask and guidance values reuses the graph
        guidance = None if g is None else self._host_values(g) if g.device.type == "cpu" else (id(g), g._version)
        settings = (cond.prompts, guidance, self.packing, self.length_buckets, self.max_rows_per_call,
                    self.mask_frames, self.guidance_scale, id(self.network))
        key = graph_key(x, sigma, self._mask_info(mask).content, settings)
        before = self.network_calls
        out, calls = self._graphs.run(key, (mask, cond.guidance, self.network), x, sigma,
                                      lambda xs, ss: self._eager(xs, ss, mask, cond), lambda: self.network_calls)
        self.network_calls = before + calls
        return out

    def release_graphs(self) -> None:
        """Drop the captured graphs (and the memory they hold)."""
        if self._graphs is not None:
            self._graphs.clear()

    def _eager(self, x: Tensor, sigma: Tensor, mask: Tensor, cond: PieceConditions) -> Tensor:
        P, L, D = self._check(x, sigma, mask, cond)
        device = x.device
        info = self._mask_info(mask)
        plan = self._plan(cond, device)

        c_in = (1.0 + sigma.to(torch.float64) ** 2).rsqrt().to(x.dtype)  # [P]
        x_vp = (x * c_in[:, None, None]).permute(0, 2, 1)[:, :, None, :]  # [P, D, 1, L]
        t = self._timesteps(sigma)  # [P] long
        frame_mask = mask.to(torch.bool) if (self.mask_frames and not info.all_real) else None
        out = self._run_network(x_vp, t, frame_mask, plan, info)  # [R, D, 1, L]
        out = out[:, :, 0, :].permute(0, 2, 1)  # [R, L, D]

        x0 = out[:P]
        if plan.pick is not None:
            c, u = out[plan.pick], out[P:]
            if plan.scales is not None:
                guided = u + plan.scales.to(out.dtype) * (c - u)
            else:  # guidance on the device: a scale of exactly 1 keeps the conditional row
                s = cond.guidance.to(out.dtype)[plan.pick][:, None, None]
                guided = torch.where(s == 1, c, u + s * (c - u))
            x0 = x0.index_copy(0, plan.pick, guided)
        return x0

    def _run_network(self, x_vp: Tensor, t: Tensor, frame_mask: Optional[Tensor], plan: _Plan,
                     info: "_MaskInfo") -> Tensor:
        """The network on rows ``plan.index``: one call, or chunks / length buckets (see the class)."""
        R, L = plan.index.shape[0], x_vp.shape[-1]
        if self._packs(frame_mask):
            outs = []
            for pos, idx, packing in self._packed_groups(plan, info, L):
                outs.append(self.network(x_vp[idx], t[idx], _take(plan.text, pos), None, packing))
                self.network_calls += 1
            return outs[0] if len(outs) == 1 else torch.cat(outs)
        if self.length_buckets > 1 and frame_mask is not None:
            out = None
            for pos, idx, n in self._row_groups(plan, info, L):
                part = self.network(x_vp[idx][..., :n], t[idx], _take(plan.text, pos), frame_mask[idx][:, :n])
                self.network_calls += 1
                if out is None:
                    out = part.new_zeros(R, *part.shape[1:-1], L)
                out[pos, ..., :n] = part
            return out
        step = self.max_rows_per_call or R
        outs = []
        for lo in range(0, R, step):
            idx = plan.index[lo:lo + step]
            text = (tuple(v[lo:lo + step] for v in plan.text) if isinstance(plan.text, tuple)
                    else plan.text[lo:lo + step])
            outs.append(self.network(x_vp[idx], t[idx], text, None if frame_mask is None else frame_mask[idx]))
            self.network_calls += 1
        return outs[0] if len(outs) == 1 else torch.cat(outs)

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
        if P:
            empty = self._mask_info(mask).empty
            if empty is not None:
                raise ValueError(f"piece {empty} has no real frame (mask all False); drop empty pieces before the call")
        return P, L, D
