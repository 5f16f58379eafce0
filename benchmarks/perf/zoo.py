"""The models the bench runs: random-weight architectures or a loaded checkpoint.

Every model's network is wrapped in a :class:`ShapeRecorder` (optionally around a
``torch.compile``d copy) and given to a piece denoiser built by the bench. A loaded model is not
modified: the bench builds its own denoiser around the recorder and keeps a copy of the loaded
model that points at it.
"""
from __future__ import annotations

import dataclasses
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM
from mdm_adapter.piece_denoiser import MDMPieceDenoiser
from mdm_adapter.schedules import DiscreteSchedule
from mdm_adapter.text_encoders import CachedEncoder
from motion_core import defaults

from .flops import Call
from .settings import MAX_FRAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
# torch.compile at fixed shapes compiles one graph per distinct call shape; dynamo's default limit
# (8 per function) silently falls back to eager beyond it, and the bench's own sweep has 15 shapes.
COMPILE_SHAPE_LIMIT = 64


class StandInTextEncoder(CachedEncoder):
    """A fixed random feature per prompt, in place of CLIP (whose weights are not available).

    Text is encoded once per prompt before sampling; its cost is not part of the sampling loop.
    """

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.feature_dim = dim

    def _compute(self, prompts):
        return [torch.randn(self.feature_dim, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
                for p in prompts]


class ShapeRecorder(nn.Module):
    """Wraps the network (possibly compiled) and records every call (:class:`~benchmarks.perf.flops.Call`).

    It publishes the sizes a piece denoiser reads from its network (``feature_dim``, ``text_dim``,
    ``text_tokens``, ``max_timestep_rows``, ``arch``), taken from the uncompiled ``base``.
    """

    def __init__(self, net: nn.Module, base: MDM, compiled: bool = False) -> None:
        super().__init__()
        self.net = net
        self.compiled = compiled
        self.calls: list[Call] = []
        self.shapes: set = set()  # distinct call shapes (one compiled graph each when compiled)
        for name in ("feature_dim", "text_dim", "text_tokens", "max_timestep_rows", "arch"):
            setattr(self, name, getattr(base, name))

    def forward(self, x: Tensor, *rest) -> Tensor:
        packing = rest[3] if len(rest) > 3 else None
        shape = (tuple(x.shape), None if packing is None else packing.lengths)
        if shape not in self.shapes:
            self.shapes.add(shape)
            if self.compiled and len(self.shapes) == COMPILE_SHAPE_LIMIT + 1:
                print(f"[bench] compile: more than {COMPILE_SHAPE_LIMIT} call shapes; torch.compile runs the "
                      f"further shapes eagerly (reported as fell_back_to_eager)", file=sys.stderr, flush=True)
        if packing is None:
            self.calls.append(Call(x.shape[0], x.shape[-1], torch.is_grad_enabled()))
        else:  # a packed call: its real tokens, and the attention it computes
            pairs = (packing.rows * packing.longest ** 2 if packing.attention == "rows"
                     else sum(n * n for n in packing.lengths))
            self.calls.append(Call(x.shape[0], x.shape[-1], torch.is_grad_enabled(), packing.tokens, pairs))
        return self.net(x, *rest)


def compile_status(recorder: "ShapeRecorder") -> dict:
    """How many call shapes a compiled network saw, and whether some ran eagerly (over the limit)."""
    return {"compiled": recorder.compiled, "call_shapes": len(recorder.shapes), "shape_limit": COMPILE_SHAPE_LIMIT,
            "fell_back_to_eager": recorder.compiled and len(recorder.shapes) > COMPILE_SHAPE_LIMIT}


@dataclass
class BenchModel:
    """What the bench needs from a model: its piece denoiser and the architecture's sizes.

    ``loaded``: for a checkpoint, a copy of the ``mdm_adapter.load`` result whose ``denoiser`` is
    the bench's (recording) one; the original loaded model is left as it was.
    """

    name: str
    denoiser: MDMPieceDenoiser
    recorder: ShapeRecorder
    args: MDMArgs
    parameters: int
    max_frames: int = MAX_FRAMES
    loaded: Any = None

    @property
    def schedule(self) -> DiscreteSchedule:
        return self.denoiser.schedule


def tiny_args() -> MDMArgs:
    """A one-layer, 16-wide MDM for smoke runs (seconds on a CPU)."""
    return MDMArgs(latent_dim=16, layers=1, ff_size=32, num_heads=2, diffusion_steps=100)


def default_arch_args() -> MDMArgs:
    """The shipped default model's sizes (latent 256, 4 layers, ff 512, 100-dim bag-of-words text)."""
    return MDMArgs(latent_dim=256, layers=4, ff_size=512, num_heads=4, text_encoder_type="bow",
                   text_feature_dim=100, mask_frames=True)


def skeleton_args() -> MDMArgs:
    """The release's op graph (8 layers, 4 heads, trans_enc) with 8-wide layers: arithmetic is
    negligible, so a step's time is the host's dispatch overhead, and its calls have the real shapes."""
    return MDMArgs(latent_dim=8, ff_size=8, layers=8, num_heads=4)


RANDOM_MODELS = {"official": MDMArgs, "default-arch": default_arch_args, "tiny": tiny_args,
                 "skeleton": skeleton_args}


def _recording_denoiser(network: MDM, encoder, schedule: DiscreteSchedule, compile_mode: Optional[str],
                        **options: Any) -> tuple[MDMPieceDenoiser, ShapeRecorder]:
    """A piece denoiser of the bench's own whose network is a recorder around ``network``
    (compiled with ``compile_mode`` when given)."""
    compiled = network
    if compile_mode:
        # One graph per call shape (fixed shapes: CUDA graphs under reduce-overhead), with room
        # for every shape of a run; beyond the limit the recorder says so (see compile_status).
        import torch._dynamo.config as dynamo_config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILE_SHAPE_LIMIT)
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit,
                                                        4 * COMPILE_SHAPE_LIMIT)
        compiled = torch.compile(network, mode=compile_mode, dynamic=False)
    recorder = ShapeRecorder(compiled, network, compiled=bool(compile_mode))
    return MDMPieceDenoiser(recorder, encoder, schedule, **options), recorder


def random_model(spec: str, device: torch.device, compile_mode: Optional[str] = None,
                 max_rows_per_call: Optional[int] = None, seed: int = 0, length_buckets: int = 1) -> BenchModel:
    """A model of :data:`RANDOM_MODELS` with random weights (seeded) and the stand-in text encoder."""
    args = RANDOM_MODELS[spec]()
    torch.manual_seed(seed)
    network = MDM.from_args(args).to(device).eval().requires_grad_(False)
    schedule = DiscreteSchedule.from_name(args.noise_schedule, args.diffusion_steps)
    denoiser, recorder = _recording_denoiser(network, StandInTextEncoder(args.text_dim), schedule, compile_mode,
                                             guidance_scale=defaults.GUIDANCE, max_rows_per_call=max_rows_per_call,
                                             length_buckets=length_buckets)
    return BenchModel(spec, denoiser, recorder, args, sum(p.numel() for p in network.parameters()))


def wrap_loaded(loaded: Any, name: str, compile_mode: Optional[str] = None, max_rows_per_call: Optional[int] = None,
                length_buckets: int = 1) -> BenchModel:
    """A loaded model (``mdm_adapter.load``) for the bench, without modifying it: a new piece
    denoiser with the loaded one's settings around a recorder of its network, and a copy of the
    loaded model that points at that denoiser."""
    own = loaded.denoiser
    denoiser, recorder = _recording_denoiser(
        loaded.network, loaded.text_encoder, loaded.schedule, compile_mode, guidance_scale=own.guidance_scale,
        supports_guidance=own.supports_guidance, mask_frames=own.mask_frames, max_rows_per_call=max_rows_per_call,
        length_buckets=length_buckets)
    params = sum(p.numel() for p in loaded.network.parameters())
    return BenchModel(name, denoiser, recorder, loaded.args, params,
                      loaded=dataclasses.replace(loaded, denoiser=denoiser))


def build_model(spec: str, device: torch.device, compile_mode: Optional[str] = None,
                max_rows_per_call: Optional[int] = None, seed: int = 0, length_buckets: int = 1) -> BenchModel:
    """A model with random weights (``official``: the release's architecture; ``default-arch``: the
    default model's sizes; ``tiny``; ``skeleton``), or ``default`` (save/default) or a checkpoint path.

    Raises FileNotFoundError / ValueError (one line) for a missing or bad checkpoint.
    """
    if spec in RANDOM_MODELS:
        return random_model(spec, device, compile_mode, max_rows_per_call, seed, length_buckets)
    import mdm_adapter
    loaded = mdm_adapter.load(REPO_ROOT / "save" / "default" if spec == "default" else Path(spec), device=device)
    return wrap_loaded(loaded, spec, compile_mode, max_rows_per_call, length_buckets)
