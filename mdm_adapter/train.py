"""Train (and export) an MDM text-to-motion model with MDM's objective, on CPU or GPU.

    python -m mdm_adapter.train --config configs/default_model.json --data /work/data/bandai_hml \
        --out /work/runs/default                       # trains; resumes if --out has a checkpoint
    python -m mdm_adapter.train --out /work/runs/default --data /work/data/bandai_hml \
        --export save/default                          # writes the shipped files, no training

Objective (as in MDM): x0 prediction under a discrete cosine VP schedule, t uniform in
[0, T), MSE on the real (unpadded) frames, the text feature replaced by zeros with probability
``cond_mask_prob`` (the exact null condition used by classifier-free guidance). Clips are
randomly cropped (length in [crop_min_frames, max_frames]), batches padded to their longest
crop with a key-padding frame mask. AdamW with linear warm-up then cosine decay; EMA weights
are the exported ones. Geometric losses of MDM are not implemented (all weights would be 0).

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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM, drop_text
from mdm_adapter.schedules import DiscreteSchedule
from mdm_adapter.text_bow import BagOfWordsEncoder

CHECKPOINT = "checkpoint.pt"
LOSS_LOG = "loss.csv"
LOSS_FIELDS = ("step", "loss", "val_loss", "lr", "elapsed_s", "steps_per_s")
SPLITS = {"train": 0, "val": 1, "test": 2}
# Settings a resumed run may change: bookkeeping, and max_steps (to extend or shorten a run; the
# cosine decay is then recomputed for the new end, visible in the lr column of loss.csv).
RESUMABLE_CHANGES = frozenset({"num_threads", "checkpoint_minutes", "log_every", "max_steps"})


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
    # also on recent GPUs); weights, optimiser, EMA and the loss stay float32
    precision: str = "fp32"
    max_steps: int = 4000
    ema_decay: float = 0.999
    seed: int = 0
    # warm start: another run's checkpoint.pt whose EMA weights initialise this run ("" = none);
    # a text feature that grew (new indicator words) gets zero weights for its new columns
    init_from: str = ""
    # bookkeeping
    num_threads: int = 2
    log_every: int = 10
    val_every: int = 250
    val_clips: int = 64
    checkpoint_minutes: float = 3.0

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        values = json.loads(path.read_text())
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown keys in {path}: {sorted(unknown)}; known: {sorted(f.name for f in fields(cls))}")
        return cls(**values)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

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
    data_dir = Path(data_dir)
    npz_path = data_dir / "train_arrays.npz"
    for p in (npz_path, data_dir / "Mean.npy", data_dir / "Std.npy", data_dir / "text_encoder.safetensors"):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing; build the dataset with python -m prepare.build_default_dataset")
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("features", "offsets", "split", "group", "captions", "caption_offsets")}
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
        )

    train, val = subset(SPLITS["train"]), subset(SPLITS["val"])
    if train.num_clips == 0:
        raise ValueError(f"no training clip of at least {cfg.clip_min_frames} frames in {npz_path}")
    mean = torch.from_numpy(np.load(data_dir / "Mean.npy").astype(np.float32))
    std = torch.from_numpy(np.load(data_dir / "Std.npy").astype(np.float32))
    return TrainData(train, val, text_features, mean, std)


def sampling_weights(group: Tensor, balance: float) -> Tensor:
    """Per-clip probabilities ~ (size of the clip's group) ** -balance, normalised."""
    counts = torch.bincount(group).to(torch.float64)
    w = counts[group] ** -balance
    return w / w.sum()


def make_batch(arrays: MotionArrays, data: TrainData, cfg: TrainConfig, clip_ids: Tensor,
               gen: torch.Generator, full: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Random crops of the given clips -> (x0 [B, D, 1, N] normalised, frame_mask [B, N], text [B, F]).

    Each crop is the longest possible (probability ``full_crop_prob``) or of a uniform length in
    [crop_min_frames, max_frames] (clips shorter than that are used whole); then every crop is
    cut to the ``batch_len_quantile`` quantile of the batch's crop lengths, so that little of
    the padded batch is padding. ``full`` takes the longest crop from the clip start
    (deterministic; used for validation).
    """
    lengths = arrays.lengths()[clip_ids]
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
    for b, (c, s, L) in enumerate(zip(clip_ids.tolist(), start.tolist(), crop.tolist())):
        o = int(arrays.offsets[c]) + s
        x[b, :L] = arrays.features[o:o + L].float()
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


def diffusion_loss(net: nn.Module, x0: Tensor, mask: Tensor, text: Tensor, abar: Tensor,
                   gen: torch.Generator, cond_mask_prob: float, t: Optional[Tensor] = None,
                   precision: str = "fp32") -> Tensor:
    """MDM's simple loss: noise x0 to a random t, predict x0, masked MSE. abar: [T] float64.
    ``precision="bf16"`` runs the network under bfloat16 autocast; the loss is float32."""
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
    return masked_mse(pred.float(), x0.to(device), mask.to(device))


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


def load_checkpoint(state: TrainState, path: Path) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state.net.load_state_dict(ckpt["model"])
    state.ema.load_state_dict(ckpt["ema"])
    state.opt.load_state_dict(ckpt["opt"])
    state.gen.set_state(ckpt["gen"])
    torch.set_rng_state(ckpt["torch_rng"])
    state.step, state.elapsed_s = int(ckpt["step"]), float(ckpt["elapsed_s"])


def warm_start(state: TrainState, path: Path) -> None:
    """Copy another run's EMA weights into net and EMA (fresh optimiser and step count).

    Shapes must match except ``embed_text.weight``, whose extra input columns (a text feature
    that gained dimensions at its end) start at zero, so the warm-started model first behaves
    exactly like the old one.
    """
    if not path.is_file():
        raise FileNotFoundError(f"init_from checkpoint {path} does not exist")
    old = torch.load(path, map_location="cpu", weights_only=True)["ema"]
    new = state.net.state_dict()
    for key, value in new.items():
        if key not in old:
            raise ValueError(f"init_from {path}: key {key!r} missing")
        src = old[key]
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
    """Drop log rows after `step` (they belong to work lost since the last checkpoint)."""
    if not path.is_file():
        return
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    _write_log(path, rows, mode="w")


def _write_log(path: Path, rows: list[dict[str, Any]], mode: str = "a") -> None:
    new = mode == "w" or not path.is_file()
    with path.open(mode, newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOSS_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------- loop
def train(cfg: TrainConfig, data_dir: str | Path, out: str | Path, device: str = "cpu",
          max_minutes: Optional[float] = None, until_step: Optional[int] = None,
          progress: bool = True, should_stop: Optional[Callable[[], bool]] = None) -> TrainState:
    """Train until cfg.max_steps (or `until_step`, `max_minutes` of this call, or `should_stop()`
    returning True), resuming from ``out`` if it holds a checkpoint; always checkpoints before
    returning."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    dev = torch.device(device)
    data = load_data(data_dir, cfg)
    state = build_state(cfg, data.text_features.shape[1], dev)
    if (out / CHECKPOINT).is_file():
        saved = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None
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
        warm_start(state, Path(cfg.init_from))
        if progress:
            print(f"initialised from {cfg.init_from}")
    cfg.to_json(out / "config.json")
    abar = DiscreteSchedule.from_name(cfg.noise_schedule, cfg.diffusion_steps).alphas_cumprod
    probs = sampling_weights(data.train.group, cfg.group_balance)
    state.net.train()
    start = time.monotonic()
    base_elapsed, last_ckpt, last_log = state.elapsed_s, start, start
    pending: list[dict[str, Any]] = []
    losses: list[float] = []
    log_step = state.step
    last = cfg.max_steps if until_step is None else min(until_step, cfg.max_steps)
    while state.step < last:
        if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
            break
        if should_stop is not None and should_stop():
            break
        lr = learning_rate(state.step, cfg)
        for group in state.opt.param_groups:
            group["lr"] = lr
        ids = torch.multinomial(probs, cfg.batch_size, replacement=True, generator=state.gen)
        x0, mask, text = make_batch(data.train, data, cfg, ids, state.gen)
        loss = diffusion_loss(state.net, x0, mask, text, abar, state.gen, cfg.cond_mask_prob,
                              precision=cfg.precision)
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(state.net.parameters(), cfg.grad_clip)
        state.opt.step()
        decay = min(cfg.ema_decay, (1 + state.step) / (10 + state.step))
        ema_update(state.ema, state.net, decay)
        state.step += 1
        state.elapsed_s = base_elapsed + time.monotonic() - start
        losses.append(loss.item())
        if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
            now = time.monotonic()
            val = validation_loss(state.ema, data, cfg, abar) if state.step % cfg.val_every == 0 else None
            pending.append({"step": state.step, "loss": f"{np.mean(losses):.6f}",
                            "val_loss": "" if val is None else f"{val:.6f}", "lr": f"{lr:.3e}",
                            "elapsed_s": f"{state.elapsed_s:.1f}",
                            "steps_per_s": f"{(state.step - log_step) / max(now - last_log, 1e-9):.3f}"})
            if progress:
                print(" ".join(f"{k}={v}" for k, v in pending[-1].items() if v != ""), flush=True)
            losses, last_log, log_step = [], now, state.step
            _write_log(out / LOSS_LOG, pending)
            pending = []
        if time.monotonic() - last_ckpt > 60 * cfg.checkpoint_minutes:
            save_checkpoint(state, cfg, out)
            last_ckpt = time.monotonic()
    save_checkpoint(state, cfg, out)
    return state


# --------------------------------------------------------------------------- export
def export(run_dir: str | Path, data_dir: str | Path, dest: str | Path) -> Path:
    """Write the shipped model from a run's checkpoint: EMA weights (fp16 safetensors),
    args.json, Mean/Std, text encoder, loss log and loss-curve PNG. Returns ``dest``."""
    from safetensors.torch import save_file

    run_dir, data_dir, dest = Path(run_dir), Path(data_dir), Path(dest)
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {run_dir}; train first")
    ckpt = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    cfg = TrainConfig(**ckpt["config"])
    dest.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(torch.float16).contiguous() for k, v in ckpt["ema"].items()}
    text_dim = weights["embed_text.weight"].shape[1]
    save_file(weights, str(dest / "model.safetensors"),
              metadata={"step": str(ckpt["step"]), "weights": "ema", "dtype": "float16"})
    args = cfg.mdm_args(text_dim)
    extra = {"train_steps": int(ckpt["step"]), "train_config": asdict(cfg)}
    MDMArgs.from_dict({**args.to_dict(), **extra}).to_json(dest / "args.json")
    for name in ("Mean.npy", "Std.npy", "text_encoder.safetensors"):
        shutil.copyfile(data_dir / name, dest / name)
    if (run_dir / LOSS_LOG).is_file():
        shutil.copyfile(run_dir / LOSS_LOG, dest / LOSS_LOG)
        plot_loss(dest / LOSS_LOG, dest / "loss_curve.png")
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
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TrainConfig JSON (required unless --out has config.json)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with train_arrays.npz")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, config.json, loss.csv)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-minutes", type=float, help="stop this call after so many minutes (checkpointed)")
    p.add_argument("--export", type=Path, help="write the shipped model from --out's checkpoint and exit")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    a = parse_args(argv)
    if a.export is not None:
        print(f"exported to {export(a.out, a.data, a.export)}")
        return
    if a.config is not None:
        cfg = TrainConfig.from_json(a.config)
    elif (a.out / "config.json").is_file():
        cfg = TrainConfig.from_json(a.out / "config.json")
    else:
        raise SystemExit("error: --config is required for a new run (no config.json in --out)")
    stop = []  # SIGTERM / SIGINT: finish the step, checkpoint, exit
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    state = train(cfg, a.data, a.out, a.device, a.max_minutes, should_stop=lambda: bool(stop))
    print(f"stopped at step {state.step} after {state.elapsed_s / 60:.1f} min; checkpoint in {a.out / CHECKPOINT}")


if __name__ == "__main__":
    main()
