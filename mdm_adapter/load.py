"""Load an MDM checkpoint (official ``.pt`` or our ``.safetensors``) as a ready piece denoiser.

Layouts understood:

* official: ``save/<name>/model000475000.pt`` + ``save/<name>/args.json``; the ``.pt`` is a plain
  state dict or ``{'model': ..., 'model_avg': ...}`` (``model_avg`` used when ``use_ema``);
* ours: ``save/<name>/model.safetensors`` + ``args.json`` (+ the text encoder file it names).

Every check happens before any weight is copied, and every failure is one line that names the
file, the key or the shapes involved.
"""
from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from motion_core.devices import resolve_device
from motion_core import defaults
from motion_core.normalization import ModelStats
from motion_core.spec import DatasetSpec

from .args import MDMArgs
from .model import MDM, POSITIONAL_KEYS, official_state_dict_keys
from .piece_denoiser import MDMPieceDenoiser
from .schedules import DiscreteSchedule
from .text_encoders import BowTextEncoder, ClipTextEncoder, DistilBertTextEncoder, TextEncoder

IGNORED_PREFIXES = ("clip_model.",)
STATS_DIRS = {"humanml": Path("dataset") / "HumanML3D", "kit": Path("dataset") / "KIT-ML"}


@dataclass
class LoadedModel:
    """Everything needed to sample from one checkpoint."""

    denoiser: MDMPieceDenoiser
    network: MDM
    text_encoder: TextEncoder
    schedule: DiscreteSchedule
    spec: DatasetSpec  # the dataset's constants, with max_frames = the longest piece the model takes
    args: MDMArgs
    path: Path
    stats_paths: Optional[tuple[Path, Path]]  # (Mean.npy, Std.npy), or None when not found
    stats_searched: tuple[Path, ...] = ()
    _stats: Any = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        return self.spec.fps

    @property
    def max_frames(self) -> int:
        """The longest piece the model is given (``args.json`` key ``max_piece_frames``, else the
        dataset's maximum clip length); ``spec.max_frames`` holds the same value."""
        return self.spec.max_frames

    @property
    def max_piece_frames(self) -> int:
        return self.args.piece_frames

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @property
    def diffusion_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def guidance_scale(self) -> float:
        return self.denoiser.guidance_scale

    @property
    def model_stats(self):
        """Normalisation statistics (:class:`ModelStats`), read on first use."""
        if self._stats is None:
            if self.stats_paths is None:
                looked = ", ".join(str(p) for p in self.stats_searched)
                raise FileNotFoundError(f"Mean.npy / Std.npy for {self.path.name} not found (looked in {looked}); "
                                        f"put the dataset's Mean.npy and Std.npy beside the model or pass stats_dir")
            self._stats = ModelStats(*(read_stats_file(p) for p in self.stats_paths))
        return self._stats


def read_stats_file(path: Path) -> np.ndarray:
    """One of ``Mean.npy`` / ``Std.npy``: a finite float vector (never unpickled)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read {path} ({' '.join(str(err).split()) or type(err).__name__}); expected the "
                         f"dataset's {path.name}, a float array saved by numpy") from None
    if array.dtype.kind not in "fiu" or array.ndim != 1:
        raise ValueError(f"{path} holds a {array.dtype} array of shape {array.shape}, expected a 1-D float vector")
    if not np.isfinite(array).all():
        raise ValueError(f"{path} contains NaN or infinite values; use the dataset's original {path.name}")
    return array


def check_guidance_scale(value: Optional[float]) -> float:
    """The CFG scale as a float: None means the release's default; NaN, infinite or negative is refused."""
    if value is None:
        return defaults.GUIDANCE
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"guidance_scale must be a number, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance, the release uses {defaults.GUIDANCE}), "
                         f"got {value}")
    return float(value)


def load(path: str | Path, device: str | torch.device = "cpu", guidance_scale: Optional[float] = None,
         clip_path: Optional[str | Path] = None, stats_dir: Optional[str | Path] = None,
         mask_frames: bool = True, text_encoder: Optional[TextEncoder] = None,
         text_precision: str = "auto") -> LoadedModel:
    """Load a checkpoint as a piece denoiser.

    path: a ``.pt`` / ``.safetensors`` file, or its folder (then the newest ``model*.pt`` by step
    number, else the ``.safetensors`` file). ``args.json`` must be beside it.
    guidance_scale: default CFG scale (None: the release's 2.5; forced to 1 for models trained
    without text dropout). clip_path: CLIP weights (see ``text_encoders.find_clip_files``).
    stats_dir: folder with ``Mean.npy`` / ``Std.npy`` (searched first, then beside the model,
    then ``dataset/HumanML3D`` under the working directory). mask_frames: see
    :class:`MDMPieceDenoiser`. text_encoder: use this encoder instead of building one.
    text_precision: CLIP precision, "auto" (fp16 on CUDA as the release, fp32 on CPU), "fp16"
    (the release's numbers on any device) or "fp32".

    Every failure is one line: FileNotFoundError for a missing file, ValueError for an unknown or
    absent device, a NaN / infinite / negative guidance scale, an unreadable or mismatched file
    (named), weights holding NaN or infinities (the first such tensor named), or a text encoder
    whose optional package is missing (also an ImportError).
    """
    device = resolve_device(device)
    scale = check_guidance_scale(guidance_scale)
    weights_path = resolve_checkpoint(path)
    args = MDMArgs.from_json(weights_path.parent / "args.json")
    state = read_state_dict(weights_path, use_ema=args.use_ema)
    check_state_dict(state, args, weights_path)
    network = MDM.from_args(args)
    wanted = {k: v for k, v in state.items() if k in network.state_dict()}
    check_finite(wanted, weights_path)
    network.load_state_dict(wanted)
    network = network.to(device).eval().requires_grad_(False)

    if text_encoder is None:
        text_encoder = build_text_encoder(args, weights_path.parent, device, clip_path, text_precision)
    schedule = DiscreteSchedule.from_name(args.noise_schedule, args.diffusion_steps)
    denoiser = MDMPieceDenoiser(network, text_encoder, schedule, guidance_scale=scale,
                                supports_guidance=args.guidance_enabled, mask_frames=mask_frames)
    stats_paths, searched = find_stats(weights_path.parent, args.dataset, stats_dir)
    # The model's window: graphs are built with spec.max_frames, so it is the usable piece length.
    spec = replace(args.spec, max_frames=args.piece_frames)
    return LoadedModel(denoiser, network, text_encoder, schedule, spec, args, weights_path,
                       stats_paths, searched)


def _step_number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else -1


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file for a file or folder path (newest ``model*.pt`` in a folder)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist; expected save/<name>/model<step>.pt (official) "
                                f"or save/<name>/model.safetensors, or their folder")
    if path.is_file():
        return path
    pts = sorted(path.glob("model*.pt"), key=lambda p: (_step_number(p), p.stat().st_mtime))
    if pts:
        return pts[-1]
    sts = sorted(path.glob("*.safetensors"))
    sts = [p for p in sts if p.name.startswith("model")] or sts
    if len(sts) == 1 or (sts and sts[0].name == "model.safetensors"):
        return sts[0]
    raise FileNotFoundError(f"no model*.pt or model.safetensors in folder {path}; pass the checkpoint file itself")


def describe_unreadable(path: Path, err: Exception) -> str:
    """Why torch.load failed, in words (empty, truncated zip, text file, non-tensor content)."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        try:
            intact = zipfile.ZipFile(path).testzip() is None
        except (zipfile.BadZipFile, OSError):
            intact = False
        if not intact:
            return "its zip archive is truncated or corrupt (download it again)"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"it holds objects other than tensors, refused by weights_only loading ({first.split('. ')[0]})"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not a PyTorch checkpoint (truncated or corrupt?)"
    return "it is a text file, not a checkpoint"


def read_state_dict(path: Path, use_ema: bool = False) -> dict[str, Tensor]:
    """Tensors of a ``.pt`` (plain or ``{'model', 'model_avg'}``) or ``.safetensors`` file."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"cannot read {path} as safetensors ({err}); the file is truncated, corrupt or of "
                             f"another format") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for unreadable files
        raise ValueError(f"cannot load {path}: {describe_unreadable(path, err)}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected an MDM state dict (or {{'model', 'model_avg'}})")
    if "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model_avg"] if use_ema and isinstance(obj.get("model_avg"), dict) else obj["model"]
    bad = next((k for k, v in obj.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise ValueError(f"{path}: entry {bad!r} is a {type(obj[bad]).__name__}, not a tensor; expected an MDM "
                         f"state dict")
    return obj


def check_state_dict(state: dict[str, Tensor], args: MDMArgs, path: Path) -> None:
    """Strict key and shape check against the network ``args`` describe (tables and CLIP aside)."""
    expected = {k: v for k, v in official_state_dict_keys(args).items() if k not in POSITIONAL_KEYS}
    found = {k: v for k, v in state.items() if k not in POSITIONAL_KEYS and not k.startswith(IGNORED_PREFIXES)}
    missing = [k for k in expected if k not in found]
    if missing:
        raise ValueError(f"{path.name}: missing key {missing[0]!r} ({len(missing)} missing in all); the file does "
                         f"not match args.json (arch={args.arch}, layers={args.layers}, "
                         f"text={args.text_encoder_type})")
    unexpected = [k for k in found if k not in expected]
    if unexpected:
        raise ValueError(f"{path.name}: unexpected key {unexpected[0]!r} ({len(unexpected)} in all); the file does "
                         f"not match args.json (arch={args.arch}, emb_trans_dec={args.emb_trans_dec})")
    for key, shape in expected.items():
        if tuple(found[key].shape) != shape:
            raise ValueError(f"{path.name}: key {key!r} has shape {tuple(found[key].shape)}, args.json implies "
                             f"{shape} (dataset={args.dataset}, latent_dim={args.latent_dim}, "
                             f"text={args.text_encoder_type})")


def check_finite(state: dict[str, Tensor], path: Path) -> None:
    """Refuse weights with NaN or infinite values, naming the first such tensor."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            count = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{path.name}: tensor {key!r} holds {count} NaN or infinite values (of "
                             f"{value.numel()}); the checkpoint is corrupt or training diverged: use another one")


def build_text_encoder(args: MDMArgs, model_dir: Path, device: str | torch.device = "cpu",
                       clip_path: Optional[str | Path] = None, precision: str = "auto") -> TextEncoder:
    """The text encoder ``args.text_encoder_type`` names (weights looked up offline)."""
    if args.text_encoder_type == "clip":
        return ClipTextEncoder.from_path(clip_path, device, precision)
    if args.text_encoder_type == "bert":
        return DistilBertTextEncoder.from_path(None, device)
    encoder = BowTextEncoder.from_file(model_dir / args.text_encoder_file, device)
    if encoder.feature_dim != args.text_dim:
        raise ValueError(f"{args.text_encoder_file} gives {encoder.feature_dim}-dim features, args.json says "
                         f"text_feature_dim={args.text_dim}")
    return encoder


def find_stats(model_dir: Path, dataset: str,
               stats_dir: Optional[str | Path] = None) -> tuple[Optional[tuple[Path, Path]], tuple[Path, ...]]:
    """(Mean.npy, Std.npy) paths: ``stats_dir``, beside the model, then ``dataset/<name>`` under cwd."""
    folders = ([Path(stats_dir)] if stats_dir is not None else []) + [model_dir, Path.cwd() / STATS_DIRS[dataset]]
    for folder in folders:
        if (folder / "Mean.npy").is_file() and (folder / "Std.npy").is_file():
            return (folder / "Mean.npy", folder / "Std.npy"), tuple(folders)
    return None, tuple(folders)


def save_safetensors(network: MDM, args: MDMArgs, folder: str | Path, name: str = "model.safetensors",
                     dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``folder/name`` (the network's state dict, optionally cast) and ``folder/args.json``."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v if dtype is None else v.to(dtype)).detach().cpu().contiguous()
             for k, v in network.state_dict().items()}
    save_file(state, str(folder / name))
    args.to_json(folder / "args.json")
    return folder / name
