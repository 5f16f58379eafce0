"""Train (and export) an MDM text-to-motion model with MDM's objective, on CPU or GPU.

    python -m mdm_adapter.train --config configs/default_model.json --data data/bandai_hml \
        --out runs/default                             # trains; resumes if --out has a checkpoint
    python -m mdm_adapter.train --out runs/default --data data/bandai_hml \
        --export save/default                          # writes the shipped files, no training

A user mistake (missing data folder, bad config file or value, an output path that is a file)
is one line on stderr and exit status 2. Exports and logs are written under temporary names and
renamed into place, so a killed run never leaves a half-written file at an output path.

Objective (as in MDM): x0 prediction under a discrete cosine VP schedule, t uniform in
[0, T), MSE on the real (unpadded) frames, the text feature replaced by zeros with probability
``cond_mask_prob`` (the exact null condition used by classifier-free guidance). Clips are
randomly cropped (length in [crop_min_frames, max_frames]), batches padded to their longest
crop with a key-padding frame mask. AdamW with linear warm-up then cosine decay; EMA weights
are the exported ones.

Options (all off by default, so older configs train as before):

- ``content_balance``: clip sampling weight also ~ (clips of the clip's content label) ** -balance;
  1 draws every content label about equally (needs the ``content`` array of train_arrays.npz).
- ``speed_min`` / ``speed_max``: speed perturbation; each training crop is resampled in time by a
  factor drawn log-uniformly from the range (2 = twice as fast, half the frames), velocity
  features recomputed from the resampled positions and heading (:func:`resample_features`).
- ``lambda_vel`` / ``lambda_fc``: MDM's geometric losses on the joints recovered from the
  predicted x0 (:func:`geometric_losses`): joint velocity error and foot velocity where the data's
  feet are in contact. The validation loss stays the plain x0 MSE, comparable across runs.
- ``precision: "auto"``: a short fp32 vs bf16 matmul measurement at the start of every call picks
  the faster (:func:`choose_precision`, printed); bf16 only when clearly faster.
- ``init_from``: another run's ``checkpoint.pt`` or a shipped model folder (``save/default``); a
  relative path is taken from the working directory, else from the repository root.

Data: ``<data>/train_arrays.npz`` (see :mod:`prepare.build_default_dataset`), ``Mean.npy``,
``Std.npy`` and ``text_encoder.safetensors`` in the same folder.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mdm_adapter.args import MDMArgs, check_field_types, check_range
from mdm_adapter.model import MDM, drop_text
from mdm_adapter.schedules import DiscreteSchedule
from mdm_adapter.text_bow import BagOfWordsEncoder
from motion_collage.representation import _rotate_y_inverse, features_to_joints
from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.devices import resolve_device
from motion_core.spec import HUMANML3D, DatasetSpec, feature_slices

CHECKPOINT = "checkpoint.pt"
LOSS_LOG = "loss.csv"
LOSS_FIELDS = ("step", "loss", "val_loss", "lr", "elapsed_s", "steps_per_s")
SPLITS = {"train": 0, "val": 1, "test": 2}
# Settings a resumed run may change: bookkeeping, and max_steps (to extend or shorten a run; the
# cosine decay is then recomputed for the new end, visible in the lr column of loss.csv).
RESUMABLE_CHANGES = frozenset({"num_threads", "checkpoint_minutes", "log_every", "max_steps", "init_from"})
REPO_ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16", "auto")
BF16_MIN_SPEEDUP = 1.2  # "auto" takes bf16 only when its matmuls are this much faster than fp32
POSITIVE_INTS = ("latent_dim", "layers", "num_heads", "ff_size", "diffusion_steps", "max_frames", "crop_min_frames",
                 "clip_min_frames", "batch_size", "num_threads", "log_every", "val_every", "val_clips")
EXPORTED = ("model.safetensors", "args.json", "Mean.npy", "Std.npy", "text_encoder.safetensors", LOSS_LOG,
            "loss_curve.png")
DATA_FILES = ("train_arrays.npz", "Mean.npy", "Std.npy", "text_encoder.safetensors")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a run; stored as ``config.json`` next to the checkpoints."""

    # network (MDM trans_enc, HumanML3D features)
    dataset: str = "humanml"
    latent_dim: int = 256
    layers: int = 4
    num_heads: int = 4
    ff_size: int = 512
    dropout: float = 0.1
    # diffusion
    diffusion_steps: int = 1000
    noise_schedule: str = "cosine"
    cond_mask_prob: float = 0.1
    # data
    max_frames: int = 196  # crop window (model's maximum)
    crop_min_frames: int = 40  # shortest random crop (shorter clips are used whole)
    clip_min_frames: int = 20  # clips shorter than this are not used
    full_crop_prob: float = 0.5  # probability of the longest possible crop
    batch_len_quantile: float = 0.75  # crops are cut to this quantile of the batch's crops (less padding)
    group_balance: float = 0.5  # clip sampling weight ~ (source dataset size) ** -group_balance
    content_balance: float = 0.0  # ... times (clips of the same content label) ** -content_balance
    content_weights: str = ""  # "label=w,label=w": those labels' clip weights times w, after balancing
    speed_min: float = 1.0  # speed perturbation: factor log-uniform in [speed_min, speed_max]
    speed_max: float = 1.0
    lambda_vel: float = 0.0  # MDM's joint-velocity loss weight
    lambda_fc: float = 0.0  # MDM's foot-contact loss weight
    # optimisation
    batch_size: int = 32
    lr: float = 4e-4
    lr_min_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = 1.0
    # "bf16": forward pass under bfloat16 autocast (about 2.3x faster on a CPU with AVX512-BF16,
    # also on recent GPUs); weights, optimiser, EMA and the loss stay float32. "auto": measured
    # at the start of each call (an AVX2-only CPU runs bf16 matmuls ~50x slower than fp32)
    precision: str = "fp32"
    max_steps: int = 4000
    ema_decay: float = 0.999
    seed: int = 0
    # warm start: another run's checkpoint.pt (its EMA weights) or a shipped model folder such as
    # "save/default" initialise this run ("" = none); relative: from the working directory, else
    # the repository root. A text feature that grew (new indicator words) gets zero new columns
    init_from: str = ""
    # bookkeeping
    num_threads: int = 2
    log_every: int = 10
    val_every: int = 250
    val_clips: int = 64
    checkpoint_minutes: float = 3.0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in POSITIVE_INTS:
            check_range(name, getattr(self, name), 1)
        for name in ("warmup_steps", "max_steps", "seed", "weight_decay", "grad_clip", "group_balance",
                     "content_balance", "lambda_vel", "lambda_fc"):
            check_range(name, getattr(self, name), 0)
        for name in ("dropout", "cond_mask_prob", "adam_beta1", "adam_beta2", "ema_decay"):
            check_range(name, getattr(self, name), 0, 1, high_open=True)
        for name in ("full_crop_prob", "lr_min_ratio"):
            check_range(name, getattr(self, name), 0, 1)
        check_range("batch_len_quantile", self.batch_len_quantile, 0, 1, low_open=True)
        check_range("lr", self.lr, 0, low_open=True)
        check_range("speed_min", self.speed_min, 0.25, 1)
        check_range("speed_max", self.speed_max, 1, 4)
        check_range("checkpoint_minutes", self.checkpoint_minutes, 0, low_open=True)
        parse_content_weights(self.content_weights)  # raises on a malformed entry
        DiscreteSchedule.from_name(self.noise_schedule, self.diffusion_steps)  # raises on an unknown name
        self.mdm_args(1)  # the network settings (dataset, heads dividing the width) are checked there

    @classmethod
    def from_dict(cls, values: Any, source: str) -> "TrainConfig":
        """Build from parsed JSON; ``source`` names where it came from in every error."""
        if not isinstance(values, dict):
            raise ValueError(f"{source} holds a JSON {type(values).__name__}, expected an object of settings")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown keys in {source}: {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        """Read a config file (a JSON object of settings; absent keys take their defaults)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path} (expected a JSON file such as "
                                    f"configs/default_model.json)")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); expected an object of training settings") from None
        return cls.from_dict(values, str(path))

    def to_json(self, path: str | Path) -> None:
        write_text_atomic(Path(path), json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    def mdm_args(self, text_feature_dim: int) -> MDMArgs:
        """The ``args.json`` settings of the trained network (MDM's key names)."""
        return MDMArgs(
            dataset=self.dataset, arch="trans_enc", layers=self.layers, latent_dim=self.latent_dim,
            ff_size=self.ff_size, num_heads=self.num_heads, dropout=self.dropout,
            cond_mask_prob=self.cond_mask_prob, noise_schedule=self.noise_schedule,
            diffusion_steps=self.diffusion_steps, text_encoder_type="bow", text_feature_dim=text_feature_dim,
            mask_frames=True,
        )


# --------------------------------------------------------------------------- data
@dataclass
class MotionArrays:
    """Clips of one split: features [sum L, D] (raw, float16 or float32), offsets [n + 1]."""

    features: Tensor
    offsets: Tensor  # int64
    caption_offsets: Tensor  # int64 [n + 1], into the caption feature table
    group: Tensor  # int64 [n], source dataset of each clip
    content: Optional[Tensor] = None  # int64 [n], content label of each clip (absent in older datasets)
    content_names: tuple[str, ...] = ()  # name of each content index (absent in older datasets)

    @property
    def num_clips(self) -> int:
        return self.offsets.shape[0] - 1

    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]


@dataclass
class TrainData:
    train: MotionArrays
    val: MotionArrays
    text_features: Tensor  # [num_captions, F] float32
    mean: Tensor  # [D]
    std: Tensor  # [D]


def load_data(data_dir: str | Path, cfg: TrainConfig) -> TrainData:
    """Read the compact arrays, normalisation statistics and text features of a dataset folder."""
    data_dir = check_data_dir(data_dir)
    npz_path = data_dir / "train_arrays.npz"
    arrays = read_arrays(npz_path)
    mean, std = (read_vector(data_dir / name, arrays["features"].shape[1]) for name in ("Mean.npy", "Std.npy"))
    if not (std > 0).all():
        raise ValueError(f"{data_dir / 'Std.npy'} has entries <= 0 (first at dim {int(np.argmax(~(std > 0)))}); "
                         f"rebuild the dataset statistics")
    encoder = BagOfWordsEncoder.from_file(data_dir / "text_encoder.safetensors")
    text_features = encoder.encode([str(c) for c in arrays["captions"]])
    lengths = np.diff(arrays["offsets"])
    keep = lengths >= cfg.clip_min_frames

    def subset(split: int) -> MotionArrays:
        ids = np.flatnonzero((arrays["split"] == split) & keep)
        lens = lengths[ids]
        feats = np.concatenate([arrays["features"][arrays["offsets"][i]:arrays["offsets"][i + 1]] for i in ids]) \
            if len(ids) else np.zeros((0, arrays["features"].shape[1]), np.float16)
        cap = arrays["caption_offsets"]
        return MotionArrays(
            features=torch.from_numpy(feats),
            offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)),
            caption_offsets=torch.from_numpy(np.stack([cap[ids], cap[ids + 1]], 1).astype(np.int64)),
            group=torch.from_numpy(arrays["group"][ids].astype(np.int64)),
            content=torch.from_numpy(arrays["content"][ids].astype(np.int64)) if "content" in arrays else None,
            content_names=tuple(str(n) for n in arrays.get("content_names", ())),
        )

    train, val = subset(SPLITS["train"]), subset(SPLITS["val"])
    if train.num_clips == 0:
        raise ValueError(f"no training clip of at least {cfg.clip_min_frames} frames in {npz_path}")
    if cfg.content_balance > 0 and train.content is None:
        raise ValueError(f"content_balance needs content labels, but {npz_path} has no 'content' array; rebuild it "
                         f"with python -m prepare.build_default_dataset or set content_balance to 0")
    unknown = sorted(set(parse_content_weights(cfg.content_weights)) - set(train.content_names))
    if unknown:
        known = ", ".join(train.content_names) or "none: the dataset has no content_names"
        raise ValueError(f"content_weights names {', '.join(unknown)}, not a content label of {npz_path} ({known})")
    return TrainData(train, val, text_features, torch.from_numpy(mean), torch.from_numpy(std))


def check_data_dir(data_dir: str | Path, names: Sequence[str] = DATA_FILES) -> Path:
    """The dataset folder, holding ``names`` (FileNotFoundError naming what is missing)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is a file" if data_dir.exists() else "does not exist"
        raise FileNotFoundError(f"data folder {data_dir} {what}; build it with python -m "
                                f"prepare.build_default_dataset --src <dataset checkout> --out {data_dir}")
    for name in names:
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} is missing; build the dataset with python -m "
                                    f"prepare.build_default_dataset")
    return data_dir


ARRAY_KINDS = {"features": "f", "offsets": "iu", "split": "iu", "group": "iu", "captions": "U", "caption_offsets": "iu"}
OPTIONAL_ARRAYS = {"content": "iu", "content_names": "U"}  # read when present (datasets built before it lack it)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``train_arrays.npz``, checked for kind and consistency (ValueError naming the file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in (*ARRAY_KINDS, *OPTIONAL_ARRAYS) if k in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"cannot read {path} ({type(err).__name__}: {' '.join(str(err).split())}); rebuild it "
                         f"with python -m prepare.build_default_dataset") from None
    bad = [k for k, kinds in ARRAY_KINDS.items() if k not in arrays or arrays[k].dtype.kind not in kinds]
    if bad:
        raise ValueError(f"{path}: array {bad[0]!r} is missing or of the wrong type; rebuild it with python -m "
                         f"prepare.build_default_dataset")
    n, offsets, feats = len(arrays["split"]), arrays["offsets"], arrays["features"]
    consistent = (feats.ndim == 2 and offsets.shape == (n + 1,) and arrays["group"].shape == (n,)
                  and arrays["caption_offsets"].shape == (n + 1,) and offsets[0] == 0 and offsets[-1] == len(feats)
                  and (np.diff(offsets) >= 0).all() and arrays["caption_offsets"][-1] == len(arrays["captions"])
                  and (np.diff(arrays["caption_offsets"]) > 0).all() and (arrays["group"] >= 0).all())
    if "content" in arrays and (arrays["content"].dtype.kind not in "iu" or arrays["content"].shape != (n,)
                                or (arrays["content"] < 0).any()):
        consistent = False
    if not consistent:
        raise ValueError(f"{path}: offsets, splits, groups and captions do not fit together; rebuild it with "
                         f"python -m prepare.build_default_dataset")
    if not np.isfinite(feats).all():
        raise ValueError(f"{path}: features contain NaN or infinite values; rebuild the dataset")
    return arrays


def read_vector(path: Path, size: int) -> np.ndarray:
    """``Mean.npy`` / ``Std.npy`` as finite float32 ``[size]`` (ValueError naming the file)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"cannot read {path} ({' '.join(str(err).split())}); expected a float array saved by "
                         f"numpy") from None
    if array.dtype.kind not in "fiu" or array.shape != (size,) or not np.isfinite(array).all():
        raise ValueError(f"{path} holds {array.dtype} {array.shape}, expected {size} finite numbers (one per "
                         f"feature of train_arrays.npz)")
    return array.astype(np.float32)


def sampling_weights(group: Tensor, balance: float) -> Tensor:
    """Per-clip probabilities ~ (size of the clip's group) ** -balance, normalised."""
    counts = torch.bincount(group).to(torch.float64)
    w = counts[group] ** -balance
    return w / w.sum()


def parse_content_weights(text: str) -> dict[str, float]:
    """``"wave-left-hand=3,bow=2"`` -> {label: weight}; "" -> {}. ValueError on a malformed entry."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep and name.strip() else math.nan
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"content_weights entries must be label=positive number, got {item!r}")
        weights[name.strip()] = weight
    return weights


def clip_probabilities(arrays: MotionArrays, cfg: TrainConfig) -> Tensor:
    """Per-clip sampling probabilities: ~ group size ** -group_balance * content count ** -content_balance,
    times ``content_weights`` of the clip's label.

    With group_balance 0 and content_balance 1 every content label is drawn equally often.
    """
    probs = sampling_weights(arrays.group, cfg.group_balance)
    if cfg.content_balance > 0 and arrays.content is not None:
        probs = probs * sampling_weights(arrays.content, cfg.content_balance)
    for name, weight in parse_content_weights(cfg.content_weights).items():
        probs = torch.where(arrays.content == arrays.content_names.index(name), probs * weight, probs)
    return probs / probs.sum()


def _interp(values: Tensor, times: Tensor) -> Tensor:
    """Linear interpolation of ``values [S, ...]`` at fractional indices ``times [n]`` in [0, S - 1]."""
    lo = times.floor().long().clamp(0, values.shape[0] - 1)
    hi = (lo + 1).clamp(max=values.shape[0] - 1)
    w = (times - lo.to(times.dtype)).reshape(-1, *([1] * (values.ndim - 1))).to(values.dtype)
    return values[lo] * (1 - w) + values[hi] * w


def resample_features(features: Tensor, factor: float, offset: float = 0.0, frames: Optional[int] = None,
                      spec: DatasetSpec = HUMANML3D) -> Tensor:
    """A clip's raw HumanML3D features ``[T, D]`` played ``factor`` times as fast -> ``[frames, D]``.

    New frame i shows the clip at time ``offset + i * factor`` (frames). Per-frame channels (root
    height, root-relative joints, rotations, foot contacts rounded to 0/1) are interpolated
    linearly; the velocity channels are recomputed so that the recovered motion is the resampled
    one: heading angle, root path and joint paths are integrated from their velocities (as
    :func:`motion_collage.representation.features_to_joints` does), interpolated, and
    differentiated again in the new frames' headings. At whole-number times the recovered joints
    equal the original joints at those frames (a factor of 2 keeps every second frame); a factor of 1
    returns the input (to rounding). ``frames`` defaults to the most that fit in the clip,
    ``floor((T - offset) / factor)``.
    """
    T, D = features.shape
    if frames is None:
        frames = int(math.floor((T - offset) / factor + 1e-9))
    if frames < 1 or offset < 0 or offset + frames * factor > T + 1e-6:
        raise ValueError(f"cannot take {frames} frames at speed {factor} from {offset} in a clip of {T} frames")
    sl = feature_slices(spec)
    x = features.double()
    J = spec.num_joints
    angle = torch.cat([x.new_zeros(1), torch.cumsum(x[:, 0], 0)])                      # [T + 1], a_t = sum_{i<t}
    step = torch.zeros(T, 3, dtype=x.dtype)
    step[:, 0], step[:, 2] = x[:, 1], x[:, 2]
    root = torch.cat([x.new_zeros(1, 3), torch.cumsum(_rotate_y_inverse(step, angle[1:]), 0)])  # [T + 1, 3] world
    local = x[:, sl["local_vel"]].reshape(T, J, 3)
    paths = torch.cat([x.new_zeros(1, J, 3), torch.cumsum(_rotate_y_inverse(local, angle[:-1, None]), 0)])
    times = (offset + factor * torch.arange(frames + 1, dtype=x.dtype)).clamp(max=T)
    new_angle = _interp(angle, times)                                                  # [frames + 1]
    new_step = _rotate_y_inverse(torch.diff(_interp(root, times), dim=0), -new_angle[1:])
    new_local = _rotate_y_inverse(torch.diff(_interp(paths, times), dim=0), -new_angle[:-1, None])
    out = _interp(x, times[:-1].clamp(max=T - 1))                                      # per-frame channels
    out[:, 0] = torch.diff(new_angle)
    out[:, 1], out[:, 2] = new_step[:, 0], new_step[:, 2]
    out[:, sl["local_vel"]] = new_local.reshape(frames, J * 3)
    out[:, sl["foot_contact"]] = out[:, sl["foot_contact"]].round()
    return out.to(features.dtype if features.is_floating_point() else torch.float32)


def speed_factors(count: int, cfg: TrainConfig, gen: torch.Generator) -> Tensor:
    """Speed factors of ``count`` crops: log-uniform in [speed_min, speed_max] (all 1 when off; no draw)."""
    if cfg.speed_min == cfg.speed_max == 1.0:
        return torch.ones(count, dtype=torch.float64)
    lo, hi = math.log(cfg.speed_min), math.log(cfg.speed_max)
    return torch.exp(lo + (hi - lo) * torch.rand(count, generator=gen, dtype=torch.float64))


def make_batch(arrays: MotionArrays, data: TrainData, cfg: TrainConfig, clip_ids: Tensor,
               gen: torch.Generator, full: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Random crops of the given clips -> (x0 [B, D, 1, N] normalised, frame_mask [B, N], text [B, F]).

    Each crop is the longest possible (probability ``full_crop_prob``) or of a uniform length in
    [crop_min_frames, max_frames] (clips shorter than that are used whole); then every crop is
    cut to the ``batch_len_quantile`` quantile of the batch's crop lengths, so that little of
    the padded batch is padding. With speed perturbation each clip is first played at a random
    speed (:func:`speed_factors`, :func:`resample_features`): its length is then
    ``floor(L / factor)`` and the crop is taken from the resampled clip. ``full`` takes the longest
    crop from the clip start at the clip's own speed (deterministic; used for validation).
    """
    speed = torch.ones(len(clip_ids), dtype=torch.float64) if full else speed_factors(len(clip_ids), cfg, gen)
    source = arrays.lengths()[clip_ids]
    lengths = torch.floor(source.to(torch.float64) / speed + 1e-9).long().clamp(min=1)
    top = lengths.clamp(max=cfg.max_frames)
    low = torch.minimum(top, torch.full_like(top, cfg.crop_min_frames))
    u = torch.rand(len(clip_ids), 3, generator=gen)
    if full:
        crop = top
    else:
        crop = low + (u[:, 0] * (top - low + 1).to(u.dtype)).long().clamp(max=top - low)
        crop = torch.where(u[:, 1] < cfg.full_crop_prob, top, crop)
        cap = torch.quantile(crop.to(torch.float64), cfg.batch_len_quantile, interpolation="higher").long()
        crop = crop.clamp(max=int(cap))
    start = torch.zeros_like(crop) if full else (u[:, 2] * (lengths - crop + 1).to(u.dtype)).long()
    start = torch.minimum(start, lengths - crop)
    n = int(crop.max())
    D = arrays.features.shape[1]
    x = torch.zeros(len(clip_ids), n, D)
    mask = torch.arange(n)[None, :] < crop[:, None]  # [B, N]
    for b, (c, s, L, f) in enumerate(zip(clip_ids.tolist(), start.tolist(), crop.tolist(), speed.tolist())):
        if f == 1.0:
            o = int(arrays.offsets[c]) + s
            x[b, :L] = arrays.features[o:o + L].float()
            continue
        first = int(math.floor(s * f))            # source frames covering the crop, and its offset in them
        stop = min(int(source[b]), int(math.floor((s + L) * f)) + 2)
        o = int(arrays.offsets[c])
        x[b, :L] = resample_features(arrays.features[o + first:o + stop].float(), f, s * f - first, L).float()
    x = (x - data.mean) / data.std * mask[..., None]
    first, last = arrays.caption_offsets[clip_ids, 0], arrays.caption_offsets[clip_ids, 1]
    pick = first + (torch.rand(len(clip_ids), generator=gen) * (last - first).to(torch.float32)).long()
    pick = torch.minimum(pick, last - 1)
    text = data.text_features[pick]
    return x.permute(0, 2, 1)[:, :, None, :].contiguous(), mask, text


# --------------------------------------------------------------------------- objective
def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over real frames: pred/target [B, D, 1, N], mask [B, N] bool."""
    m = mask[:, None, None, :].to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[1])


@dataclass(frozen=True)
class Geometry:
    """MDM's geometric loss terms: weights and the statistics that de-normalise x0."""

    mean: Tensor  # [D]
    std: Tensor  # [D]
    lambda_vel: float = 0.0
    lambda_fc: float = 0.0
    spec: DatasetSpec = HUMANML3D

    @property
    def active(self) -> bool:
        return self.lambda_vel > 0 or self.lambda_fc > 0


def geometric_losses(pred: Tensor, target: Tensor, mask: Tensor, geo: Geometry) -> tuple[Tensor, Tensor]:
    """MDM's velocity and foot-contact losses on joints recovered from x0 [B, D, 1, N] (normalised).

    Joints [B, N, J, 3] come from :func:`features_to_joints` of the de-normalised features
    (differentiable). velocity: mean squared error of the per-frame joint displacements over pairs
    of real frames; foot contact: mean squared per-frame displacement of the predicted foot joints
    where the data's foot-contact channels say the foot is planted (MDM's ``fc`` term).
    """
    def joints(x: Tensor) -> Tensor:
        feats = x[:, :, 0, :].permute(0, 2, 1) * geo.std.to(x) + geo.mean.to(x)       # [B, N, D]
        return features_to_joints(feats, geo.spec)

    jp, jt = joints(pred), joints(target)
    vp, vt = jp[:, 1:] - jp[:, :-1], jt[:, 1:] - jt[:, :-1]                          # [B, N-1, J, 3]
    pair = (mask[:, 1:] & mask[:, :-1]).to(pred.dtype)                               # [B, N-1]
    vel = (((vp - vt) ** 2).sum(-1).mean(-1) * pair).sum() / (pair.sum() * 3).clamp(min=1)
    feet = [j for side in geo.spec.foot_joints for j in side]
    contact_slice = feature_slices(geo.spec)["foot_contact"]
    raw = target[:, contact_slice, 0, :-1].permute(0, 2, 1) * geo.std[contact_slice].to(pred) \
        + geo.mean[contact_slice].to(pred)                                             # [B, N-1, 4]
    contact = (raw > 0.5).to(pred.dtype) * pair[..., None]
    fc = ((vp[:, :, feet] ** 2).sum(-1) * contact).sum() / (contact.sum() * 3).clamp(min=1)
    return vel, fc


def diffusion_loss(net: nn.Module, x0: Tensor, mask: Tensor, text: Tensor, abar: Tensor,
                   gen: torch.Generator, cond_mask_prob: float, t: Optional[Tensor] = None,
                   precision: str = "fp32", geometry: Optional[Geometry] = None) -> Tensor:
    """MDM's simple loss: noise x0 to a random t, predict x0, masked MSE. abar: [T] float64.
    ``precision="bf16"`` runs the network under bfloat16 autocast; the loss is float32.
    ``geometry`` adds ``lambda_vel * velocity + lambda_fc * foot contact`` (:func:`geometric_losses`)."""
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, abar.shape[0], (B,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    drop = torch.rand(B, generator=gen) < cond_mask_prob
    a = abar[t].to(torch.float32)[:, None, None, None]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    device = next(net.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        pred = net(x_t.to(device), t.to(device), drop_text(text, drop).to(device), mask.to(device))
    pred, x0, mask = pred.float(), x0.to(device), mask.to(device)
    loss = masked_mse(pred, x0, mask)
    if geometry is not None and geometry.active:
        vel, fc = geometric_losses(pred, x0, mask, geometry)
        loss = loss + geometry.lambda_vel * vel + geometry.lambda_fc * fc
    return loss


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * lr_min_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1 - decay)


@torch.no_grad()
def validation_loss(net: nn.Module, data: TrainData, cfg: TrainConfig, abar: Tensor) -> float:
    """Loss of `net` on the first val clips at fixed t and noise (comparable across steps)."""
    arrays = data.val if data.val.num_clips else data.train
    ids = torch.arange(min(cfg.val_clips, arrays.num_clips))
    gen = torch.Generator().manual_seed(12345)
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    for chunk in ids.split(cfg.batch_size):
        x0, mask, text = make_batch(arrays, data, cfg, chunk, gen, full=True)
        t = torch.linspace(0, abar.shape[0] - 1, len(chunk)).long()
        total += diffusion_loss(net, x0, mask, text, abar, gen, 0.0, t).item() * len(chunk)
        count += len(chunk)
    net.train(was_training)
    return total / count


# --------------------------------------------------------------------------- precision
def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 384, seconds: float = 0.25) -> float:
    """Measured GFLOP/s of ``size`` x ``size`` matrix products in ``dtype`` (at least 3, for ~``seconds``)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device=device, dtype=dtype) for _ in range(2))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    (a @ b).sum().item()  # warm-up
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * size ** 3 * reps / (time.perf_counter() - start) / 1e9


def choose_precision(device: torch.device, measure: Optional[Callable[[torch.dtype, torch.device], float]] = None
                     ) -> tuple[str, dict[str, float]]:
    """"bf16" when bfloat16 matmuls run at least BF16_MIN_SPEEDUP times faster than fp32 here, else
    "fp32"; and the measured GFLOP/s of both (``measure``: default :func:`matmul_gflops`)."""
    measure = measure or matmul_gflops
    speeds = {"fp32": measure(torch.float32, device), "bf16": measure(torch.bfloat16, device)}
    return ("bf16" if speeds["bf16"] >= BF16_MIN_SPEEDUP * speeds["fp32"] else "fp32"), speeds


# --------------------------------------------------------------------------- state
@dataclass
class TrainState:
    net: MDM
    ema: MDM
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    elapsed_s: float = 0.0


def build_state(cfg: TrainConfig, text_dim: int, device: torch.device) -> TrainState:
    torch.manual_seed(cfg.seed)
    net = MDM.from_args(cfg.mdm_args(text_dim)).to(device)
    ema = MDM.from_args(cfg.mdm_args(text_dim)).to(device)
    ema.load_state_dict(net.state_dict())
    ema.eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            weight_decay=cfg.weight_decay)
    return TrainState(net, ema, opt, torch.Generator().manual_seed(cfg.seed))


def save_checkpoint(state: TrainState, cfg: TrainConfig, out: Path) -> None:
    """Atomically write model, EMA, optimiser and RNG states to ``out/checkpoint.pt``."""
    payload = {
        "model": state.net.state_dict(), "ema": state.ema.state_dict(), "opt": state.opt.state_dict(),
        "gen": state.gen.get_state(), "torch_rng": torch.get_rng_state(), "step": state.step,
        "elapsed_s": state.elapsed_s, "config": asdict(cfg),
    }
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out / CHECKPOINT)


def read_checkpoint(path: Path, needs: Sequence[str], fix: str) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors only: ``weights_only``), with ``needs``.

    An unreadable file, or one without those entries, is one ValueError naming it and ``fix``.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for unreadable or hostile files
        from mdm_adapter.load import describe_unreadable
        raise ValueError(f"cannot read {path}: {describe_unreadable(path, err)}; {fix}") from None
    missing = [k for k in needs if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a checkpoint of mdm_adapter.train (no {missing[0]!r}): {fix}")
    return ckpt


RESUME_FIX = "delete it (and loss.csv) to start the run again, or use another --out"


def load_checkpoint(state: TrainState, path: Path) -> None:
    """Restore a run's exact state (weights, optimiser, both random generators, step)."""
    ckpt = read_checkpoint(path, ("model", "ema", "opt", "gen", "torch_rng", "step", "elapsed_s"), RESUME_FIX)
    try:
        state.net.load_state_dict(ckpt["model"])
        state.ema.load_state_dict(ckpt["ema"])
        state.opt.load_state_dict(ckpt["opt"])
        state.gen.set_state(ckpt["gen"])
        torch.set_rng_state(ckpt["torch_rng"])
        state.step, state.elapsed_s = int(ckpt["step"]), float(ckpt["elapsed_s"])
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} does not fit this run's network ({first}): {RESUME_FIX}") from None


def resolve_init(init_from: str) -> Path:
    """``init_from`` as a path: absolute as given; relative from the working directory when it exists
    there, else from the repository root (so "save/default" works from anywhere)."""
    path = Path(init_from).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def warm_start(state: TrainState, path: Path) -> None:
    """Copy another run's EMA weights (its ``checkpoint.pt``), or a shipped model's weights (its folder
    or ``.safetensors`` file, e.g. ``save/default``), into net and EMA (fresh optimiser and step count).

    Shapes must match except ``embed_text.weight``, whose extra input columns (a text feature
    that gained dimensions at its end) start at zero, so the warm-started model first behaves
    exactly like the old one.
    """
    if not path.exists():
        raise FileNotFoundError(f"init_from {path} does not exist; set init_from in the config to another run's "
                                f"checkpoint.pt or a model folder such as save/default, or to \"\" to start from "
                                f"scratch")
    if path.is_dir() or path.suffix == ".safetensors":
        from mdm_adapter.load import read_state_dict, resolve_checkpoint

        old = {k: v.float() for k, v in read_state_dict(resolve_checkpoint(path)).items()}
    else:
        old = read_checkpoint(path, ("ema",), "fix init_from in the config")["ema"]
    new = state.net.state_dict()
    for key, value in new.items():
        if key not in old:
            raise ValueError(f"init_from {path}: key {key!r} missing")
        src = old[key]
        if not isinstance(src, Tensor):
            raise ValueError(f"init_from {path}: {key!r} is a {type(src).__name__}, not a tensor")
        if src.shape == value.shape:
            new[key] = src.clone()
        elif key == "embed_text.weight" and src.shape[0] == value.shape[0] and src.shape[1] < value.shape[1]:
            grown = torch.zeros_like(value)
            grown[:, : src.shape[1]] = src
            new[key] = grown
        else:
            raise ValueError(f"init_from {path}: {key!r} has shape {tuple(src.shape)}, this run needs {tuple(value.shape)}")
    state.net.load_state_dict(new)
    state.ema.load_state_dict(new)


def _trim_log(path: Path, step: int) -> None:
    """Drop log rows after `step` (work lost since the last checkpoint) and any torn last row."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if None not in r.values() and r["step"].isdigit()
                and int(r["step"]) <= step]
    tmp = temporary_path(path)
    try:
        _write_log(tmp, rows, mode="w")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_log(path: Path, rows: list[dict[str, Any]], mode: str = "a") -> None:
    new = mode == "w" or not path.is_file()
    with path.open(mode, newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOSS_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------- files
def temporary_path(path: Path) -> Path:
    """A hidden name beside ``path`` to write it under (the suffix is kept: writers infer formats from it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def remove_stale_temporaries(folder: Path, names: Sequence[str]) -> None:
    """Delete the temporaries of ``names`` that an earlier, killed run left in ``folder``."""
    for name in names:
        for tmp in folder.glob(f".{Path(name).stem}.tmp-*{Path(name).suffix}"):
            tmp.unlink(missing_ok=True)
    (folder / (CHECKPOINT + ".tmp")).unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file under a temporary name, then rename it into place."""
    tmp = temporary_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged(paths: Sequence[Path]) -> Iterator[dict[Path, Path]]:
    """``{final: temporary}`` for several outputs; the temporaries written in the block are renamed
    into place together when it succeeds, and removed whatever happens."""
    tmps = {p: temporary_path(p) for p in paths}
    try:
        yield tmps
        for final, tmp in tmps.items():
            if tmp.exists():
                os.replace(tmp, final)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def check_output_dir(path: Path, flag: str) -> Path:
    """An output folder path that is not an existing file."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; expected a folder (it is created if absent)")
    return path


# --------------------------------------------------------------------------- loop
def _resume_or_start(state: TrainState, cfg: TrainConfig, out: Path, progress: bool) -> None:
    """Continue the run in ``out`` (same config but for RESUMABLE_CHANGES), or warm-start a new one."""
    if (out / CHECKPOINT).is_file():
        saved = _saved_config(out / "config.json")
        # a key missing from an older run's config.json had its default value then
        defaults = asdict(TrainConfig())
        changed = sorted(k for k, v in asdict(cfg).items()
                         if saved is not None and k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != v)
        if changed:
            raise ValueError(f"{out} holds a run with a different config ({', '.join(changed)}); "
                             f"use another --out or the same config")
        load_checkpoint(state, out / CHECKPOINT)
        _trim_log(out / LOSS_LOG, state.step)
        if progress:
            print(f"resumed from {out / CHECKPOINT} at step {state.step}")
            if saved is not None and saved.get("max_steps") != cfg.max_steps:
                print(f"max_steps changed from {saved.get('max_steps')} to {cfg.max_steps} at step {state.step}")
    elif cfg.init_from:
        warm_start(state, resolve_init(cfg.init_from))
        if progress:
            print(f"initialised from {resolve_init(cfg.init_from)}")


def _saved_config(path: Path) -> Optional[dict[str, Any]]:
    """A run's config.json as a dict (None when absent); damaged is one ValueError."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it or delete the run folder") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a JSON {type(saved).__name__}, expected the run's settings")
    return saved


def train(cfg: TrainConfig, data_dir: str | Path, out: str | Path, device: str = "cpu",
          max_minutes: Optional[float] = None, until_step: Optional[int] = None,
          progress: bool = True, should_stop: Optional[Callable[[], bool]] = None) -> TrainState:
    """Train until cfg.max_steps (or `until_step`, `max_minutes` of this call, or `should_stop()`
    returning True), resuming from ``out`` if it holds a checkpoint; always checkpoints before
    returning."""
    out = check_output_dir(Path(out), "--out")
    if max_minutes is not None:
        check_range("max_minutes", max_minutes, 0, low_open=True)
    dev = torch.device(resolve_device(device))
    torch.set_num_threads(cfg.num_threads)
    data = load_data(data_dir, cfg)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, ("config.json", LOSS_LOG))
    state = build_state(cfg, data.text_features.shape[1], dev)
    _resume_or_start(state, cfg, out, progress)
    cfg.to_json(out / "config.json")
    abar = DiscreteSchedule.from_name(cfg.noise_schedule, cfg.diffusion_steps).alphas_cumprod
    probs = clip_probabilities(data.train, cfg)
    precision = cfg.precision
    if precision == "auto":
        precision, speeds = choose_precision(dev)
        if progress:
            print(f"precision auto: fp32 {speeds['fp32']:.1f} GFLOP/s, bf16 {speeds['bf16']:.1f} GFLOP/s "
                  f"(matmul on {dev.type}) -> {precision}", flush=True)
    geometry = Geometry(data.mean.to(dev), data.std.to(dev), cfg.lambda_vel, cfg.lambda_fc)
    state.net.train()
    start = time.monotonic()
    base_elapsed, last_ckpt, last_log = state.elapsed_s, start, start
    losses: list[float] = []
    log_step = state.step
    last = cfg.max_steps if until_step is None else min(until_step, cfg.max_steps)
    while state.step < last:
        if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
            break
        if should_stop is not None and should_stop():
            break
        lr, loss = _train_step(state, data, cfg, abar, probs, precision, geometry)
        state.elapsed_s = base_elapsed + time.monotonic() - start
        losses.append(loss)
        if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
            now = time.monotonic()
            row = _log_row(state, data, cfg, abar, lr, losses, (state.step - log_step) / max(now - last_log, 1e-9))
            if progress:
                print(" ".join(f"{k}={v}" for k, v in row.items() if v != ""), flush=True)
            losses, last_log, log_step = [], now, state.step
            _write_log(out / LOSS_LOG, [row])
        if time.monotonic() - last_ckpt > 60 * cfg.checkpoint_minutes:
            save_checkpoint(state, cfg, out)
            last_ckpt = time.monotonic()
    save_checkpoint(state, cfg, out)
    return state


def _train_step(state: TrainState, data: TrainData, cfg: TrainConfig, abar: Tensor, probs: Tensor,
                precision: str, geometry: Optional[Geometry] = None) -> tuple[float, float]:
    """One optimiser step and EMA update; returns (learning rate, loss)."""
    lr = learning_rate(state.step, cfg)
    for group in state.opt.param_groups:
        group["lr"] = lr
    ids = torch.multinomial(probs, cfg.batch_size, replacement=True, generator=state.gen)
    x0, mask, text = make_batch(data.train, data, cfg, ids, state.gen)
    loss = diffusion_loss(state.net, x0, mask, text, abar, state.gen, cfg.cond_mask_prob, precision=precision,
                          geometry=geometry)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(state.net.parameters(), cfg.grad_clip)
    state.opt.step()
    decay = min(cfg.ema_decay, (1 + state.step) / (10 + state.step))
    ema_update(state.ema, state.net, decay)
    state.step += 1
    return lr, loss.item()


def _log_row(state: TrainState, data: TrainData, cfg: TrainConfig, abar: Tensor, lr: float,
             losses: list[float], steps_per_s: float) -> dict[str, str]:
    """One loss.csv row (validation loss of the EMA weights every ``val_every`` steps)."""
    val = validation_loss(state.ema, data, cfg, abar) if state.step % cfg.val_every == 0 else None
    return {"step": state.step, "loss": f"{np.mean(losses):.6f}", "val_loss": "" if val is None else f"{val:.6f}",
            "lr": f"{lr:.3e}", "elapsed_s": f"{state.elapsed_s:.1f}", "steps_per_s": f"{steps_per_s:.3f}"}


# --------------------------------------------------------------------------- export
def export(run_dir: str | Path, data_dir: str | Path, dest: str | Path) -> Path:
    """Write the shipped model from a run's checkpoint: EMA weights (fp16 safetensors),
    args.json, Mean/Std, text encoder, loss log and loss-curve PNG. Returns ``dest``.

    Every file is written under a temporary name in ``dest`` and all are renamed into place at
    the end, so an interrupted export leaves the previous files (other files in ``dest``, such
    as a model card, are not touched)."""
    from safetensors.torch import save_file

    from mdm_adapter.load import check_finite

    run_dir, data_dir, dest = Path(run_dir), Path(data_dir), check_output_dir(Path(dest), "--export")
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {run_dir}; train first")
    check_data_dir(data_dir, DATA_FILES[1:])
    ckpt = read_checkpoint(run_dir / CHECKPOINT, ("ema", "config", "step"), "export another run")
    cfg = TrainConfig.from_dict(ckpt["config"], f"the config stored in {run_dir / CHECKPOINT}")
    weights = {k: v.to(torch.float16).contiguous() for k, v in ckpt["ema"].items()}
    check_finite(weights, run_dir / CHECKPOINT)
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest, EXPORTED)
    with staged([dest / name for name in EXPORTED]) as tmp:
        save_file(weights, str(tmp[dest / "model.safetensors"]),
                  metadata={"step": str(ckpt["step"]), "weights": "ema", "dtype": "float16"})
        args = cfg.mdm_args(weights["embed_text.weight"].shape[1])
        extra = {"train_steps": int(ckpt["step"]), "train_config": asdict(cfg)}
        if cfg.max_frames < args.spec.max_frames:  # trained on shorter crops: the model's piece length
            extra["max_piece_frames"] = cfg.max_frames
        MDMArgs.from_dict({**args.to_dict(), **extra}).to_json(tmp[dest / "args.json"])
        for name in ("Mean.npy", "Std.npy", "text_encoder.safetensors"):
            shutil.copyfile(data_dir / name, tmp[dest / name])
        if (run_dir / LOSS_LOG).is_file():
            shutil.copyfile(run_dir / LOSS_LOG, tmp[dest / LOSS_LOG])
            plot_loss(run_dir / LOSS_LOG, tmp[dest / "loss_curve.png"])
    return dest


def plot_loss(log_path: Path, png_path: Path) -> None:
    """Training (moving average) and validation loss against step, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_path.open() as f:
        rows = list(csv.DictReader(f))
    step = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(step, loss, lw=0.6, alpha=0.4, label="train (per log interval)")
    k = max(1, len(loss) // 50)
    if len(loss) >= k:
        ax.plot(step[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.5, label=f"train ({k}-pt mean)")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="val (EMA, fixed t and noise)")
    ax.set_xlabel("step")
    ax.set_ylabel("masked MSE (normalised x0)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m mdm_adapter.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TrainConfig JSON (required unless --out has config.json)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with train_arrays.npz")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, config.json, loss.csv)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument("--max-minutes", type=float, help="stop this call after so many minutes (checkpointed)")
    p.add_argument("--export", type=Path, help="write the shipped model from --out's checkpoint and exit")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(a: argparse.Namespace) -> str:
    """parse -> build -> run -> save; user mistakes raise ValueError / FileNotFoundError / UsageError."""
    if a.export is not None:
        return f"exported to {export(a.out, a.data, a.export)}"
    check_output_dir(a.out, "--out")
    if a.max_minutes is not None:
        check_range("--max-minutes", a.max_minutes, 0, low_open=True)
    if a.config is not None:
        cfg = TrainConfig.from_json(a.config)
    elif (a.out / "config.json").is_file():
        cfg = TrainConfig.from_json(a.out / "config.json")
    else:
        raise UsageError(f"--config is required for a new run (no config.json in {a.out})")
    device = resolve_device(a.device)
    check_data_dir(a.data)
    stop = []  # SIGTERM / SIGINT: finish the step, checkpoint, exit
    previous = {sig: signal.signal(sig, lambda *_: stop.append(True)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = train(cfg, a.data, a.out, device, a.max_minutes, should_stop=lambda: bool(stop))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return f"stopped at step {state.step} after {state.elapsed_s / 60:.1f} min; checkpoint in {a.out / CHECKPOINT}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
