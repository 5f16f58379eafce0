"""The text-motion matching evaluator of Guo et al. (2022), and our small offline variant.

Three networks, with the official state-dict names (so ``finest.tar`` loads key for key):

    movement_encoder  MovementConvEncoder   [B, T, 259] -> [B, T/4, 512]
                      main.0 Conv1d(259->512, k4 s2 p1), Dropout(0.2), LeakyReLU(0.2),
                      main.3 Conv1d(512->512, k4 s2 p1), Dropout(0.2), LeakyReLU(0.2), out_net Linear
    motion_encoder    MotionEncoderBiGRUCo  [B, T/4, 512] -> [B, 512]
                      input_emb Linear(512->1024), gru BiGRU(1024), learned hidden [2, 1, 1024],
                      output_net.0 Linear(2048->1024), .1 LayerNorm, .2 LeakyReLU(0.2), .3 Linear(->512)
    text_encoder      TextEncoderBiGRUCo    word vectors [B, 22, 300] + POS one-hot [B, 22, 15] -> [B, 512]
                      pos_emb Linear(15->300) added to the word vectors, input_emb Linear(300->512),
                      gru BiGRU(512), learned hidden [2, 1, 512], output_net.0/.1/.3 as above (->512)

The GRUs run on packed sequences; both final states (forward, backward) are concatenated.
Motions enter normalised with the EVALUATOR's statistics (``t2m_mean.npy``/``t2m_std.npy`` for
the official one, not the model's ``Mean.npy``/``Std.npy``), zero-padded, lengths cropped to a
multiple of 4 (the movement encoder downsamples by 4; the GRU sees ``length // 4`` steps).

:class:`Evaluator` is one interface for both the official weights (:meth:`Evaluator.from_official`)
and our own small evaluator trained by ``eval.train_evaluator`` (:meth:`Evaluator.from_file`).
Numbers from our evaluator are NOT comparable with published HumanML3D numbers.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from eval.text_processing import (
    MAX_TEXT_TOKENS,
    NUM_POS,
    RuleBasedTagger,
    SpacyTagger,
    Tagger,
    TextBatch,
    WordVectors,
    encode_tokens,
    to_tokens,
)
from motion_core.normalization import EvaluatorStats

WEIGHTS_FILE = "evaluator.safetensors"
CONFIG_FILE = "config.json"
WORDS_FILE = "word_vectors.npz"
FORMAT = "motion-collage-evaluator-1"
PARTS = ("text_encoder", "movement_encoder", "motion_encoder")


@dataclass(frozen=True)
class EvaluatorConfig:
    """Sizes of the three encoders. Defaults are the official HumanML3D evaluator's.

    ``tagger`` names how raw caption strings are tagged: "spacy" (official rule, needs spaCy and
    en_core_web_sm) or "rule" (our rule-based tagger; see eval.text_processing).
    """

    word_dim: int = 300
    pos_dim: int = NUM_POS
    text_hidden: int = 512
    feature_dim: int = 263
    movement_input: int = 259        # features given to the movement encoder (foot contacts dropped)
    movement_hidden: int = 512
    movement_latent: int = 512
    motion_hidden: int = 1024
    embed_dim: int = 512
    unit_length: int = 4
    max_text_tokens: int = MAX_TEXT_TOKENS
    max_frames: int = 196
    tagger: str = "spacy"
    # "": the whole body (the official evaluator); "upper_body" / "lower_body": the motion encoder
    # sees only what an edit keeping that part reproduces (motion_collage.constraints.kept_mask),
    # every other dimension zeroed after normalisation, so that the other part cannot sway retrieval
    part: str = ""

    def __post_init__(self) -> None:
        if self.tagger not in ("spacy", "rule"):
            raise ValueError(f"tagger must be 'spacy' or 'rule', got {self.tagger!r}")
        if self.part not in ("", "upper_body", "lower_body"):
            raise ValueError(f"part must be '', 'upper_body' or 'lower_body', got {self.part!r}")
        if not 0 < self.movement_input <= self.feature_dim:
            raise ValueError(f"movement_input {self.movement_input} must be in 1..feature_dim {self.feature_dim}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvaluatorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


OFFICIAL_HUMANML3D = EvaluatorConfig()


def _init_weights(module: nn.Module) -> None:
    """Guo et al.'s initialisation: Xavier-normal weights, zero biases (Conv1d and Linear)."""
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def packed_bigru_final(gru: nn.GRU, inputs: Tensor, lengths: Tensor, hidden: Tensor) -> Tensor:
    """Final states of a bidirectional GRU over the first ``lengths[b]`` steps of each row.

    inputs [B, T, H] (batch first), lengths [B] (1..T), hidden the learned initial state
    [2, 1, H] shared by all rows. Returns [B, 2H] = [forward final ; backward final], rows in the
    caller's order: rows are sorted by decreasing length for packing (as the packed GRU requires)
    and un-sorted afterwards.
    """
    batch = inputs.shape[0]
    lengths_cpu = torch.as_tensor(lengths).detach().to("cpu", torch.long)
    if lengths_cpu.shape != (batch,):
        raise ValueError(f"lengths must have shape [{batch}], got {tuple(lengths_cpu.shape)}")
    if int(lengths_cpu.min()) < 1 or int(lengths_cpu.max()) > inputs.shape[1]:
        raise ValueError(f"lengths must lie in 1..{inputs.shape[1]}, got {lengths_cpu.tolist()}")
    order = torch.argsort(lengths_cpu, descending=True, stable=True)
    packed = pack_padded_sequence(inputs[order.to(inputs.device)], lengths_cpu[order], batch_first=True)
    h0 = hidden.expand(-1, batch, -1).contiguous()
    _, h_n = gru(packed, h0)                                   # [2, B, H], sorted order
    final_sorted = torch.cat([h_n[0], h_n[1]], dim=-1)         # [B, 2H]
    final = torch.empty_like(final_sorted)
    final[order.to(final.device)] = final_sorted
    return final


class MovementConvEncoder(nn.Module):
    """[B, T, input] -> [B, T // 4, output]: two stride-2 convolutions, then a per-step Linear."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_net(self.main(x.transpose(1, 2)).transpose(1, 2))


class MovementConvDecoder(nn.Module):
    """[B, T/4, latent] -> [B, T, output]: the autoencoder half used only to pre-train the encoder."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose1d(input_size, hidden_size, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose1d(hidden_size, output_size, 4, 2, 1),
            nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.apply(_init_weights)

    def forward(self, z: Tensor) -> Tensor:
        return self.out_net(self.main(z.transpose(1, 2)).transpose(1, 2))


def _co_head(hidden_size: int, output_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(hidden_size * 2, hidden_size),
        nn.LayerNorm(hidden_size),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_size, output_size),
    )


class TextEncoderBiGRUCo(nn.Module):
    """(word vectors [B, L, W], POS one-hots [B, L, P], lengths [B]) -> text embedding [B, out]."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.pos_emb = nn.Linear(pos_size, word_size)
        self.input_emb = nn.Linear(word_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = _co_head(hidden_size, output_size)
        self.apply(_init_weights)
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))

    def forward(self, word_embs: Tensor, pos_onehot: Tensor, lengths: Tensor) -> Tensor:
        x = self.input_emb(word_embs + self.pos_emb(pos_onehot))
        return self.output_net(packed_bigru_final(self.gru, x, lengths, self.hidden))


class MotionEncoderBiGRUCo(nn.Module):
    """(movement codes [B, T/4, in], step counts [B]) -> motion embedding [B, out]."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = _co_head(hidden_size, output_size)
        self.apply(_init_weights)
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))

    def forward(self, movements: Tensor, steps: Tensor) -> Tensor:
        return self.output_net(packed_bigru_final(self.gru, self.input_emb(movements), steps, self.hidden))


def config_from_official_state(state: Mapping[str, Mapping[str, Tensor]], **overrides: Any) -> EvaluatorConfig:
    """Infer encoder sizes from the three state dicts of a ``finest.tar``-style checkpoint."""
    try:
        text, move, motion = (state[p] for p in PARTS)
        sizes = dict(
            word_dim=text["pos_emb.weight"].shape[0],
            pos_dim=text["pos_emb.weight"].shape[1],
            text_hidden=text["input_emb.weight"].shape[0],
            movement_input=move["main.0.weight"].shape[1],
            movement_hidden=move["main.0.weight"].shape[0],
            movement_latent=move["main.3.weight"].shape[0],
            motion_hidden=motion["input_emb.weight"].shape[0],
            embed_dim=text["output_net.3.weight"].shape[0],
        )
    except KeyError as e:
        raise KeyError(f"evaluator checkpoint lacks {e}; expected the text_encoder / movement_encoder / "
                       f"motion_encoder state dicts of Guo et al.'s text_mot_match model") from None
    sizes = {k: int(v) for k, v in sizes.items()}
    sizes["feature_dim"] = sizes["movement_input"] + 4
    sizes.update(overrides)
    return EvaluatorConfig(**sizes)


def _load_part(module: nn.Module, state: Mapping[str, Tensor], name: str) -> None:
    """Copy a state dict after checking that key sets and shapes match exactly."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"{name} state dict does not match: missing {missing}, unexpected {unexpected}, "
                         f"shape mismatches {wrong}")
    module.load_state_dict(state, strict=True)


def load_official_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a clear error if the file holds arbitrary objects.

    The official ``finest.tar`` is a dict of three state dicts, two Adam optimiser states and two
    ints (``epoch``, ``iter``): all of that is plain tensors, numbers, strings, lists and dicts,
    which the weights-only unpickler accepts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluator checkpoint {path} not found; the official one is "
                                "t2m/text_mot_match/model/finest.tar (or checkpoints/t2m/text_mot_match/model/)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f"{path} contains objects other than tensors and plain Python values, which torch.load("
            f"weights_only=True) refuses to unpickle ({e}). Official finest.tar files do not; if you trust this "
            "file, re-save just its 'text_encoder', 'movement_encoder' and 'motion_encoder' state dicts") from None
    if not isinstance(ckpt, dict) or not all(p in ckpt for p in PARTS):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a text-motion evaluator checkpoint: expected keys {PARTS}, got {keys}")
    return ckpt


class Evaluator(nn.Module):
    """Text and motion embedders in one joint space (official or our small evaluator).

    ``embed_text``/``embed_motion`` take tensors and keep autograd (training uses them); wrap
    them in ``torch.no_grad()`` for evaluation. ``embed_texts`` is the no-grad convenience path
    from caption strings or token lists. The module is put in eval mode by the constructors.
    Optional ``stats`` are the evaluator's own normalisation statistics (``t2m_mean/std.npy`` for
    the official one; our evaluator stores them in its files), used by :meth:`normalise`.
    """

    def __init__(self, config: EvaluatorConfig, word_vectors: WordVectors | None = None,
                 tagger: Tagger | None = None, stats: EvaluatorStats | None = None) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoderBiGRUCo(config.word_dim, config.pos_dim, config.text_hidden, config.embed_dim)
        self.movement_encoder = MovementConvEncoder(config.movement_input, config.movement_hidden,
                                                    config.movement_latent)
        self.motion_encoder = MotionEncoderBiGRUCo(config.movement_latent, config.motion_hidden, config.embed_dim)
        if word_vectors is not None and word_vectors.dim != config.word_dim:
            raise ValueError(f"word vectors have {word_vectors.dim} dims but the text encoder expects "
                             f"{config.word_dim}")
        self.word_vectors = word_vectors
        if tagger is None:
            vocab = word_vectors.index.keys() if word_vectors is not None else None
            tagger = SpacyTagger() if config.tagger == "spacy" else RuleBasedTagger(vocab)
        self.tagger = tagger
        if stats is not None and not isinstance(stats, EvaluatorStats):
            raise TypeError(f"stats must be EvaluatorStats, got {type(stats).__name__}")
        if stats is not None and stats.dim != config.feature_dim:
            raise ValueError(f"evaluator stats have {stats.dim} dims, the evaluator expects {config.feature_dim}")
        self.stats = stats
        self._part_dims: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---------------------------------------------------------------- embeddings

    def embed_text(self, word_embs: Tensor, pos_onehot: Tensor, lengths: Tensor) -> Tensor:
        """word_embs [B, L, word_dim], pos_onehot [B, L, pos_dim], lengths [B] (with sos/eos) -> [B, E]."""
        if word_embs.ndim != 3 or word_embs.shape[-1] != self.config.word_dim:
            raise ValueError(f"word_embs must be [B, L, {self.config.word_dim}], got {tuple(word_embs.shape)}")
        if pos_onehot.shape[:2] != word_embs.shape[:2] or pos_onehot.shape[-1] != self.config.pos_dim:
            raise ValueError(f"pos_onehot must be [B, L, {self.config.pos_dim}] matching word_embs, "
                             f"got {tuple(pos_onehot.shape)}")
        dev = self.device
        return self.text_encoder(word_embs.to(dev, torch.float32), pos_onehot.to(dev, torch.float32), lengths)

    def embed_motion(self, motions: Tensor, lengths: Tensor | Sequence[int],
                     mask_padding: bool = False) -> Tensor:
        """motions [B, T, feature_dim] (evaluator-normalised, zero-padded), lengths [B] frames -> [B, E].

        Lengths are cropped down to a multiple of ``unit_length`` (4) and must be at least 4.
        Padding matters to the movement convolutions at the end of each motion, so it is made the
        official one: T is zero-padded to ``max_frames`` (196); a longer T is cut to ``max_frames``
        (every length must fit). The convolutions also see up to 3 frames past the cropped length:
        the official code leaves them as given (zeros in its real-data batches, model output in
        MDM's generated batches), and so does the default here; ``mask_padding=True`` zeroes every
        frame at or after the cropped length first, making the result independent of them.
        """
        cfg = self.config
        if motions.ndim != 3 or motions.shape[-1] != cfg.feature_dim:
            raise ValueError(f"motions must be [B, T, {cfg.feature_dim}], got {tuple(motions.shape)}")
        batch, frames, _ = motions.shape
        lengths = torch.as_tensor(lengths).detach().to("cpu", torch.long).reshape(-1)
        if lengths.shape[0] != batch:
            raise ValueError(f"got {lengths.shape[0]} lengths for {batch} motions")
        cropped = (lengths // cfg.unit_length) * cfg.unit_length
        if int(cropped.min()) < cfg.unit_length:
            raise ValueError(f"motion lengths must be at least {cfg.unit_length} frames, got {lengths.tolist()}")
        if int(cropped.max()) > min(frames, cfg.max_frames):
            raise ValueError(f"a length ({int(cropped.max())}) exceeds the {frames} frames given or the "
                             f"evaluator's maximum of {cfg.max_frames}")
        x = motions.to(self.device, torch.float32)
        if frames != cfg.max_frames:
            x = torch.nn.functional.pad(x[:, : cfg.max_frames], (0, 0, 0, max(cfg.max_frames - frames, 0)))
            frames = cfg.max_frames
        if mask_padding:
            valid = torch.arange(frames) < cropped[:, None]                          # [B, T]
            x = x * valid.to(x.device, x.dtype)[..., None]
        movements = self.movement_encoder(self.movement_input(x))                 # [B, T // 4, latent]
        return self.motion_encoder(movements, cropped // cfg.unit_length)

    def movement_input(self, motions: Tensor) -> Tensor:
        """What the movement encoder reads of normalised motions [..., feature_dim]: the first
        ``movement_input`` dims, those outside ``config.part`` zeroed."""
        x = motions[..., : self.config.movement_input]
        if not self.config.part:
            return x
        if self._part_dims is None:
            from motion_collage.constraints import kept_mask
            from motion_core.spec import HUMANML3D
            if self.config.feature_dim != HUMANML3D.feature_dim:
                raise ValueError(f"part {self.config.part!r} needs HumanML3D features ({HUMANML3D.feature_dim} dims), "
                                 f"the evaluator has {self.config.feature_dim}")
            self._part_dims = torch.as_tensor(kept_mask(HUMANML3D, self.config.part)[: self.config.movement_input])
        return x * self._part_dims.to(x.device, x.dtype)

    def encode_texts(self, captions: Sequence[str | Sequence[str]]) -> TextBatch:
        """Captions (raw strings, ``"w/POS ..."`` strings or token lists) -> evaluator text input."""
        if self.word_vectors is None:
            raise RuntimeError("this evaluator has no word vectors; build it with from_official(..., glove_dir) "
                               "or from_file(...)")
        tokens = [to_tokens(c, self.tagger) for c in captions]
        return encode_tokens(tokens, self.word_vectors, self.config.max_text_tokens)

    @torch.no_grad()
    def embed_texts(self, captions: Sequence[str | Sequence[str]]) -> Tensor:
        """Captions -> text embeddings [B, E] (no grad), rows in input order."""
        batch = self.encode_texts(captions)
        return self.embed_text(batch.word_embs, batch.pos_onehot, batch.lengths)

    def normalise(self, features: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Raw HumanML3D-style features [..., feature_dim] -> evaluator-normalised ``(f - mean) / std``."""
        if self.stats is None:
            raise RuntimeError("this evaluator carries no normalisation statistics (pass stats=EvaluatorStats "
                               "when building it)")
        return self.stats.normalize(features)

    # ---------------------------------------------------------------- building and saving

    def load_parts(self, state: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Load the three official-layout state dicts, checking keys and shapes first."""
        for part in PARTS:
            _load_part(getattr(self, part), state[part], part)

    @classmethod
    def from_official(cls, checkpoint_path: str | Path, glove_dir: str | Path | None,
                      device: str | torch.device = "cpu", tagger: Tagger | None = None,
                      stats: EvaluatorStats | None = None) -> "Evaluator":
        """Guo et al.'s ``text_mot_match/model/finest.tar`` (+ the ``glove/`` folder for captions).

        ``glove_dir`` None builds an evaluator that can only embed motions and pre-encoded text.
        ``stats``: the evaluator statistics, e.g. ``EvaluatorStats.from_dir("dataset")`` for MDM's
        ``dataset/t2m_mean.npy`` / ``t2m_std.npy`` (optional).
        """
        ckpt = load_official_checkpoint(checkpoint_path, device="cpu")
        config = config_from_official_state(ckpt)
        vectors = WordVectors.from_official(glove_dir) if glove_dir is not None else None
        model = cls(config, vectors, tagger, stats)
        model.load_parts(ckpt)
        return model.to(device).eval()

    def save(self, directory: str | Path, extra_config: Mapping[str, Any] | None = None) -> Path:
        """Write ``evaluator.safetensors`` + ``config.json`` + ``word_vectors.npz`` into ``directory``."""
        from safetensors.torch import save_file

        if self.word_vectors is None:
            raise RuntimeError("cannot save an evaluator without its word vectors (it could not embed captions)")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"{part}.{k}": v.detach().cpu().contiguous()
                   for part in PARTS for k, v in getattr(self, part).state_dict().items()}
        if self.stats is not None:
            tensors["stats.mean"] = torch.from_numpy(np.array(self.stats.mean, dtype=np.float32))
            tensors["stats.std"] = torch.from_numpy(np.array(self.stats.std, dtype=np.float32))
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
        self.word_vectors.save_npz(directory / WORDS_FILE)
        payload = {"format": FORMAT, "evaluator": dataclasses.asdict(self.config)}
        if extra_config:
            payload.update(extra_config)
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu",
                  tagger: Tagger | None = None) -> "Evaluator":
        """Load our evaluator from its directory (or the ``evaluator.safetensors`` inside it)."""
        from safetensors.torch import load_file

        path = Path(path)
        directory = path.parent if path.suffix == ".safetensors" else path
        needed = [directory / n for n in (WEIGHTS_FILE, CONFIG_FILE, WORDS_FILE)]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"evaluator files missing: {missing} (train one with "
                                    f"`python -m eval.train_evaluator --data DIR --out {directory}`)")
        payload = json.loads((directory / CONFIG_FILE).read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(f"{directory / CONFIG_FILE} has format {payload.get('format')!r}, expected {FORMAT!r}")
        config = EvaluatorConfig.from_dict(payload["evaluator"])
        tensors = load_file(str(directory / WEIGHTS_FILE))
        mean = tensors.pop("stats.mean", None)
        std = tensors.pop("stats.std", None)
        stats = None if mean is None or std is None else EvaluatorStats(mean.numpy(), std.numpy())
        model = cls(config, WordVectors.load_npz(directory / WORDS_FILE), tagger, stats)
        state = {part: {k[len(part) + 1:]: v for k, v in tensors.items() if k.startswith(part + ".")}
                 for part in PARTS}
        model.load_parts(state)
        return model.to(device).eval()
