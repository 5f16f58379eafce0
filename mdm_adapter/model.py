"""The MDM network (Tevet et al. 2023), with the official state-dict key names.

Layout at this boundary is MDM's own: motion ``[B, D, 1, N]`` (batch, features, 1, frames);
inside, the transformer runs sequence-first ``[S, B, latent]`` as in the release, so that the
PyTorch layers (post-norm, GELU) carry the very key names the released checkpoints use.

The network is the same for the official checkpoints and for our smaller default model; only
the sizes and the text feature differ (see :class:`~mdm_adapter.args.MDMArgs`).

Text enters as a feature computed outside the network (see ``text_encoders``):

* a pooled feature ``[B, F]`` (CLIP, bag of words): one condition token;
* a token sequence ``(tokens [B, S, F], key_padding_mask [B, S])`` (DistilBERT, True = padding):
  the cross-attention memory of ``trans_dec``, with the time token added to every text token.

The unconditional branch of classifier-free guidance is the same forward with the text feature
replaced by zeros (see :func:`null_text` and :func:`drop_text`), exactly as the release does.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .args import MDMArgs
from .packing import Packing, attention_fn

TokenText = tuple[Tensor, Tensor]  # (tokens [B, S, F], key_padding_mask [B, S] bool, True = padding)
TextInput = Union[Tensor, TokenText]


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """MDM's positional table ``[max_len, 1, dim]`` float32 (sin on even, cos on odd columns).

    Computed in float32 in the same order as the release, so that values match bit for bit.
    """
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table[:, None, :]


def _on_meta() -> bool:
    """Whether new tensors are created on the meta device (inside ``with torch.device("meta")``)."""
    return torch.empty(0).device.type == "meta"


class PositionalEncoding(nn.Module):
    """Adds rows 0..S-1 of the table to a sequence-first input, then dropout (train mode only).

    The table is a non-persistent buffer: it is recomputed at construction, never saved.
    """

    def __init__(self, dim: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        # On the meta device (official_state_dict_keys) only the shape is needed: computing the
        # table there runs torch's Python decompositions, 1.7-1.9 s and imports of dynamo/sympy.
        table = torch.empty(max_len, 1, dim) if _on_meta() else sinusoidal_table(max_len, dim)
        self.register_buffer("pe", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x [S, B, dim] -> [S, B, dim]."""
        if x.shape[0] > self.pe.shape[0]:
            raise ValueError(f"sequence of {x.shape[0]} tokens exceeds the positional table "
                             f"({self.pe.shape[0]} rows, pos_embed_max_len); use shorter pieces")
        return self.dropout(x + self.pe[: x.shape[0]])


class TimestepEmbedder(nn.Module):
    """Row t of the positional table, then Linear -> SiLU -> Linear (keys ``time_embed.0/2``)."""

    def __init__(self, dim: int, pos_encoder: PositionalEncoding) -> None:
        super().__init__()
        self.sequence_pos_encoder = pos_encoder  # shared with the model (the release saves it twice)
        self.time_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timesteps: Tensor) -> Tensor:
        """timesteps [B] long -> time token [1, B, dim]."""
        return self.time_embed(self.sequence_pos_encoder.pe[timesteps]).permute(1, 0, 2)


class InputProcess(nn.Module):
    """Per-frame linear embedding of the motion features (key ``poseEmbedding``)."""

    def __init__(self, feature_dim: int, dim: int) -> None:
        super().__init__()
        self.poseEmbedding = nn.Linear(feature_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, D, 1, N] -> [N, B, dim]."""
        B, D, nfeats, N = x.shape
        return self.poseEmbedding(x.permute(3, 0, 1, 2).reshape(N, B, D * nfeats))


class OutputProcess(nn.Module):
    """Per-frame linear read-out to motion features (key ``poseFinal``)."""

    def __init__(self, dim: int, feature_dim: int) -> None:
        super().__init__()
        self.poseFinal = nn.Linear(dim, feature_dim)

    def forward(self, h: Tensor) -> Tensor:
        """h [N, B, dim] -> [B, D, 1, N]."""
        N, B, _ = h.shape
        return self.poseFinal(h).reshape(N, B, -1, 1).permute(1, 2, 3, 0)


def null_text(text: TextInput) -> TextInput:
    """The unconditional text input of the same shape: zeros (the padding mask is kept)."""
    if isinstance(text, tuple):
        tokens, padding = text
        return torch.zeros_like(tokens), padding
    return torch.zeros_like(text)


def drop_text(text: TextInput, drop: Tensor) -> TextInput:
    """Zero the text of the rows where ``drop [B]`` is True (training's condition dropout).

    Returns new tensors; the input is not modified.
    """
    if isinstance(text, tuple):
        tokens, padding = text
        return tokens * (~drop).to(tokens.dtype)[:, None, None], padding
    return text * (~drop).to(text.dtype)[:, None]


class MDM(nn.Module):
    """The MDM denoiser network: (x_t, t, text) -> predicted x0 in normalised feature space.

    Attribute and submodule names follow the release so that ``state_dict()`` keys equal the
    official ones (without the two positional tables, which are recomputed).
    """

    def __init__(self, *, feature_dim: int, text_dim: int, latent_dim: int = 512, ff_size: int = 1024,
                 num_layers: int = 8, num_heads: int = 4, dropout: float = 0.1, arch: str = "trans_enc",
                 emb_trans_dec: bool = False, text_tokens: bool = False, pos_embed_max_len: int = 5000) -> None:
        super().__init__()
        if arch not in ("trans_enc", "trans_dec"):
            raise ValueError(f"unsupported arch {arch!r}; expected 'trans_enc' or 'trans_dec'")
        if text_tokens and arch != "trans_dec":
            raise ValueError("a token-sequence text feature (DistilBERT) needs arch 'trans_dec'")
        self.feature_dim = feature_dim
        self.text_dim = text_dim
        self.latent_dim = latent_dim
        self.arch = arch
        self.emb_trans_dec = emb_trans_dec
        self.text_tokens = text_tokens

        self.input_process = InputProcess(feature_dim, latent_dim)
        self.sequence_pos_encoder = PositionalEncoding(latent_dim, dropout, pos_embed_max_len)
        if arch == "trans_enc":
            layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_size, dropout, activation="gelu")
            self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        else:
            layer = nn.TransformerDecoderLayer(latent_dim, num_heads, ff_size, dropout, activation="gelu")
            self.seqTransDecoder = nn.TransformerDecoder(layer, num_layers)
        self.embed_timestep = TimestepEmbedder(latent_dim, self.sequence_pos_encoder)
        self.embed_text = nn.Linear(text_dim, latent_dim)
        self.output_process = OutputProcess(latent_dim, feature_dim)

    @classmethod
    def from_args(cls, args: MDMArgs) -> "MDM":
        """Build the network an ``args.json`` describes (random weights)."""
        return cls(feature_dim=args.feature_dim, text_dim=args.text_dim, latent_dim=args.latent_dim,
                   ff_size=args.ff_size, num_layers=args.layers, num_heads=args.num_heads,
                   dropout=args.dropout, arch=args.arch, emb_trans_dec=args.emb_trans_dec,
                   text_tokens=args.text_encoder_type == "bert", pos_embed_max_len=args.pos_embed_max_len)

    @property
    def max_timestep_rows(self) -> int:
        return self.sequence_pos_encoder.pe.shape[0]

    def _condition(self, time: Tensor, text: TextInput) -> tuple[Tensor, Optional[Tensor]]:
        """time [1, B, d] + embedded text -> (condition [C, B, d], memory padding mask [B, C] or None)."""
        if self.text_tokens:
            if not isinstance(text, tuple):
                raise TypeError("this model (DistilBERT text) expects text as (tokens [B, S, F], padding [B, S])")
            tokens, padding = text
            return self.embed_text(tokens).permute(1, 0, 2) + time, padding.to(torch.bool)
        if isinstance(text, tuple):
            raise TypeError("this model expects a pooled text feature [B, F], got a (tokens, mask) pair")
        return time + self.embed_text(text)[None], None

    def forward(self, x: Tensor, timesteps: Tensor, text: TextInput,
                frame_mask: Optional[Tensor] = None, packing: Optional[Packing] = None) -> Tensor:
        """Predict x0.

        x: [B, D, 1, N] normalised VP-scaled x_t; timesteps: [B] long; text: [B, F] or
        (tokens [B, S, F], padding [B, S]); frame_mask: [B, N] bool, True = real frame, or None
        (attend to all frames, as the released 2022 models always did). Returns [B, D, 1, N].
        Dropout (positional encoding, attention, feed-forward) is active in train mode.

        packing (``trans_enc`` only): compute only the real frames of ``packing`` (built from the
        frame mask, see :mod:`mdm_adapter.packing`) in one token stream; ``frame_mask`` is then
        not used. The real frames get the same prediction as with the mask (within float
        summation order); the other frames predict 0.
        """
        B, D, _, N = x.shape
        if D != self.feature_dim:
            raise ValueError(f"x has {D} features per frame, the model expects {self.feature_dim}")
        if packing is not None:
            return self._forward_packed(x, timesteps, text, packing)
        time = self.embed_timestep(timesteps)  # [1, B, d]
        cond, memory_padding = self._condition(time, text)  # [C, B, d]
        frames = self.input_process(x)  # [N, B, d]
        padding = None if frame_mask is None else ~frame_mask.to(torch.bool)  # [B, N], True = ignore
        if self.arch == "trans_enc":
            seq = self.sequence_pos_encoder(torch.cat((cond, frames), dim=0))  # [N+1, B, d]
            if padding is not None:
                padding = torch.cat((padding.new_zeros(B, 1), padding), dim=1)
            heads = self.seqTransEncoder.layers[0].self_attn.num_heads
            out = self.seqTransEncoder(seq, mask=_padding_as_attn_mask(padding, heads, seq.dtype))[1:]
        else:
            prefix = self.emb_trans_dec
            if prefix:
                # The released 2022 checkpoint prepends the condition token; a token-sequence
                # text cannot be prepended, so (as in the release) only the time token is.
                token = time if self.text_tokens else cond
                frames = torch.cat((token, frames), dim=0)
                if padding is not None:
                    padding = torch.cat((padding.new_zeros(B, 1), padding), dim=1)
            seq = self.sequence_pos_encoder(frames)
            out = self.seqTransDecoder(seq, cond, tgt_key_padding_mask=padding,
                                       memory_key_padding_mask=memory_padding)
            if prefix:
                out = out[1:]
        return self.output_process(out)  # [B, D, 1, N]

    def _forward_packed(self, x: Tensor, timesteps: Tensor, text: TextInput, packing: Packing) -> Tensor:
        """The encoder on the packed stream: same layers and weights, real tokens only."""
        if self.arch != "trans_enc":
            raise ValueError("packed rows need arch 'trans_enc' (trans_dec cross-attends per row)")
        B, D, _, N = x.shape
        if (packing.rows, packing.frames) != (B, N):
            raise ValueError(f"packing is for {packing.rows} rows x {packing.frames} frames, x has {B} x {N}")
        cond, _ = self._condition(self.embed_timestep(timesteps), text)  # [1, B, d]
        frames = self.input_process.poseEmbedding(x[packing.frame_row, :, 0, packing.frame_pos])  # [Nf, d]
        h = frames.new_empty(packing.tokens, self.latent_dim)
        h[packing.cond_token] = cond[0].to(h.dtype)
        h[packing.frame_token] = frames
        h = self.sequence_pos_encoder.dropout(h + self.sequence_pos_encoder.pe[packing.position, 0])
        attend = attention_fn(packing)
        for layer in self.seqTransEncoder.layers:
            h = _packed_encoder_layer(layer, h, attend)
        out = self.output_process.poseFinal(h[packing.frame_token])  # [Nf, D]
        full = out.new_zeros(B, N, out.shape[-1])
        full[packing.frame_row, packing.frame_pos] = out
        return full.permute(0, 2, 1)[:, :, None, :]  # [B, D, 1, N]


def _packed_encoder_layer(layer: nn.TransformerEncoderLayer, h: Tensor, attend) -> Tensor:
    """One ``nn.TransformerEncoderLayer`` on a packed stream ``h [Nt, d]`` (its own weights and
    order of operations: post-norm or pre-norm, its activation and dropouts)."""
    sa = layer.self_attn
    heads = sa.num_heads

    def block(z: Tensor) -> Tensor:
        qkv = F.linear(z, sa.in_proj_weight, sa.in_proj_bias).unflatten(-1, (3, heads, -1))  # [Nt, 3, H, hd]
        a = attend(qkv, sa.dropout if sa.training else 0.0).flatten(1)
        return layer.dropout1(sa.out_proj(a))

    def feed_forward(z: Tensor) -> Tensor:
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(z)))))

    if layer.norm_first:
        h = h + block(layer.norm1(h))
        return h + feed_forward(layer.norm2(h))
    h = layer.norm1(h + block(h))
    return layer.norm2(h + feed_forward(h))


def _padding_as_attn_mask(padding: Optional[Tensor], heads: int, dtype: torch.dtype) -> Optional[Tensor]:
    """A key padding mask ``[B, S]`` (True = ignore) as the additive attention mask ``[B*heads, S,
    S]`` (0 / -inf; an expanded view of ``[B*heads, 1, S]``, no S x S memory) that
    ``multi_head_attention_forward`` builds from it: the same numbers, without its
    ``torch._check_with`` shape checks, whose first call imports sympy (0.5-1 s of start-up)."""
    if padding is None:
        return None
    B, S = padding.shape
    additive = torch.zeros(B, S, dtype=dtype, device=padding.device).masked_fill_(padding, float("-inf"))
    return additive[:, None, None, :].expand(B, heads, 1, S).reshape(B * heads, 1, S).expand(B * heads, S, S)


def official_state_dict_keys(args: MDMArgs) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict the release saves for these args (incl. the two tables).

    Built on the meta device (no memory); used to check files before copying weights.
    """
    with torch.device("meta"):
        net = MDM.from_args(args)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    table = (args.pos_embed_max_len, 1, args.latent_dim)
    shapes["sequence_pos_encoder.pe"] = table
    shapes["embed_timestep.sequence_pos_encoder.pe"] = table
    return shapes


POSITIONAL_KEYS = ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe")
