"""Text encoders behind one interface: prompts -> the text feature an MDM network consumes.

* :class:`ClipTextEncoder`: CLIP ViT-B/32's text tower exactly as the MDM release uses it (our
  own implementation of the tower and of its byte-level BPE tokeniser; no ``clip`` package, no
  torchvision, no ``transformers``). Tokens are truncated to a 22-token context (start token,
  at most 20 BPE tokens, end token), the tower runs on the zero-padded 77-token input, and the
  feature is the final-LayerNorm output at the end token times ``text_projection``.
  Precision: on CUDA the release's fp16 recipe (Linear / attention / projection weights and
  the residual stream in fp16, embeddings and LayerNorm parameters fp32, LayerNorm computed
  in fp32); on CPU everything in fp32, which gives slightly different features (about 1e-3
  relative). ``precision="fp16"`` applies the release's recipe on CPU too (the release itself
  casts CLIP to fp16 on every device; checked bit for bit against OpenAI's code on CPU, in
  both precisions); ``precision="fp32"`` forces fp32 on CUDA.
  Weights come from OpenAI's ``ViT-B-32.pt`` (what ``clip.load("ViT-B/32")`` downloads to
  ``~/.cache/clip``) or from a Hugging Face ``openai/clip-vit-base-patch32`` folder (or the
  Hugging Face cache); see :func:`find_clip_files`.
* :class:`DistilBertTextEncoder`: ``distilbert-base-uncased`` through ``transformers``
  (imported lazily), the full token sequence and its padding mask.
* :class:`BowTextEncoder`: our default model's bag of word vectors (``mdm_adapter.text_bow``).

Every encoder computes a prompt's feature once and keeps it in an LRU cache keyed by the prompt,
so a sampler that asks for the same prompts at every step runs the tower once per prompt.
Nothing here touches the network at import time.
"""
from __future__ import annotations

import gzip
import html
import json
import os
import re as _re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, Union

import torch
from torch import Tensor, nn

TokenText = tuple[Tensor, Tensor]  # (tokens [n, S, F], padding [n, S] bool, True = padding)
TextFeature = Union[Tensor, TokenText]

CLIP_ENV_VAR = "MOTION_COLLAGE_CLIP_PATH"
BERT_ENV_VAR = "MOTION_COLLAGE_BERT_PATH"
CLIP_HF_REPO = "openai/clip-vit-base-patch32"
BERT_HF_REPO = "distilbert-base-uncased"
MDM_CLIP_CONTEXT = 22  # start + at most 20 BPE tokens + end (the release's HumanML3D/KIT setting)


class MissingDependencyError(ImportError, ValueError):
    """An optional package is not installed: an ImportError that command lines report in one line."""


class TextEncoder(Protocol):
    """prompts -> features: ``[n, F]`` (pooled) or ``(tokens [n, S, F], padding [n, S])``."""

    feature_dim: int
    is_sequence: bool  # True when encode() returns a (tokens, padding) pair

    def encode(self, prompts: Sequence[str]) -> TextFeature:
        ...


class CachedEncoder:
    """Base class: per-prompt LRU cache in front of a batched ``_compute``.

    Subclasses implement ``_compute(prompts) -> list of per-prompt features`` (each ``[F]`` or
    ``[S_i, F]``) for prompts not cached. ``tower_calls`` counts ``_compute`` calls and
    ``prompts_computed`` the prompts they covered (for tests and profiling).
    """

    feature_dim: int
    is_sequence: bool = False

    def __init__(self, cache_size: int = 4096) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.cache_size = cache_size
        self._cache: "OrderedDict[str, Tensor]" = OrderedDict()
        self.tower_calls = 0
        self.prompts_computed = 0

    def _compute(self, prompts: list[str]) -> list[Tensor]:
        raise NotImplementedError

    def clear_cache(self) -> None:
        self._cache.clear()

    def encode(self, prompts: Sequence[str]) -> TextFeature:
        """Features of the prompts, in order: ``[n, F]`` or ``(tokens [n, S, F], padding [n, S])``."""
        if isinstance(prompts, str):
            raise TypeError("encode() takes a sequence of prompts, got a single str; wrap it in a list")
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"prompts must be str, got {type(p).__name__} ({p!r}); use the null condition "
                                f"(zeros) instead of encoding None")
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            self.tower_calls += 1
            self.prompts_computed += len(missing)
            for prompt, feature in zip(missing, self._compute(missing)):
                self._cache[prompt] = feature.detach()
        feats = []
        for p in prompts:
            self._cache.move_to_end(p)
            feats.append(self._cache[p])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if not self.is_sequence:
            if not feats:
                return torch.zeros(0, self.feature_dim)
            return torch.stack(feats)
        return pad_token_features(feats, self.feature_dim)


def pad_token_features(feats: Sequence[Tensor], feature_dim: int) -> TokenText:
    """List of ``[S_i, F]`` -> (tokens ``[n, max S_i, F]`` zero-padded, padding ``[n, S]`` True = pad)."""
    n = len(feats)
    S = max((f.shape[0] for f in feats), default=1)
    like = feats[0] if feats else torch.zeros(0)
    tokens = like.new_zeros(n, S, feature_dim, dtype=torch.float32)
    padding = torch.ones(n, S, dtype=torch.bool, device=like.device)
    for i, f in enumerate(feats):
        tokens[i, : f.shape[0]] = f
        padding[i, : f.shape[0]] = False
    return tokens, padding


# ======================================================================= CLIP BPE tokeniser
def byte_alphabet() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (256 entries).

    The insertion order (printable bytes first, then the others) is the order of the first 256
    vocabulary entries, so it matters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _word_pattern():
    """CLIP's pre-tokenisation pattern (needs the ``regex`` package for \\p{L}; falls back to ``re``)."""
    try:
        import regex
        return regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                             regex.IGNORECASE)
    except ImportError:  # ASCII-equivalent approximation of the letter / number classes
        return _re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""",
                           _re.IGNORECASE)


def clean_prompt(text: str) -> str:
    """CLIP's text normalisation: ftfy (when installed), HTML unescape, whitespace collapse, lower case."""
    try:
        import ftfy
        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return _re.sub(r"\s+", " ", text).strip().lower()


class ClipBPETokenizer:
    """CLIP's byte-level BPE tokeniser (our implementation), from a merges list and a vocabulary."""

    START, END = "<|startoftext|>", "<|endoftext|>"

    def __init__(self, merges: Sequence[tuple[str, str]], vocab: Optional[dict[str, int]] = None) -> None:
        self.bytes = byte_alphabet()
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        if vocab is None:  # CLIP's rule: bytes, bytes + "</w>", merges, then the two specials
            chars = list(self.bytes.values())
            words = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [self.START, self.END]
            vocab = {w: i for i, w in enumerate(words)}
        self.vocab = vocab
        self.start_id, self.end_id = vocab[self.START], vocab[self.END]
        self.pattern = _word_pattern()
        self._bpe_cache: dict[str, list[str]] = {self.START: [self.START], self.END: [self.END]}

    @classmethod
    def from_openai_file(cls, path: str | Path) -> "ClipBPETokenizer":
        """From OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (CLIP keeps its first 48,894 merges)."""
        lines = gzip.open(path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1: 49152 - 256 - 2 + 1]]
        return cls(merges)

    @classmethod
    def from_hf_files(cls, vocab_json: str | Path, merges_txt: str | Path) -> "ClipBPETokenizer":
        """From a Hugging Face CLIP folder's ``vocab.json`` and ``merges.txt``."""
        vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        lines = Path(merges_txt).read_text(encoding="utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        return cls(merges, vocab)

    def _bpe(self, word: str) -> list[str]:
        """Apply the merges to one pre-token (already mapped to the byte alphabet)."""
        if word in self._bpe_cache:
            return self._bpe_cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._bpe_cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """BPE token ids of a prompt (no start/end tokens)."""
        ids = []
        for piece in self.pattern.findall(clean_prompt(text)):
            mapped = "".join(self.bytes[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocab[t] for t in self._bpe(mapped))
        return ids

    def tokenize(self, text: str, context_length: int = MDM_CLIP_CONTEXT) -> list[int]:
        """[start] + BPE ids + [end], truncated to ``context_length`` with the end token kept last."""
        ids = [self.start_id, *self.encode(text), self.end_id]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = self.end_id
        return ids


# ======================================================================= CLIP text tower
# Top-level text-tower weights (OpenAI names) and the dimensions each must have.
CLIP_TEXT_KEYS = {"token_embedding.weight": 2, "positional_embedding": 2, "ln_final.weight": 1,
                  "ln_final.bias": 1, "text_projection": 2}


def check_clip_text_keys(state: dict, source: str) -> None:
    """Refuse a state dict without CLIP's text tower (one line naming ``source`` and the missing keys)."""
    missing = [k for k in CLIP_TEXT_KEYS if k not in state]
    if not any(k.startswith("transformer.resblocks.") for k in state):
        missing.append("transformer.resblocks.*")
    if missing:
        example = f", e.g. {next(iter(state))!r}" if state else ""
        raise ValueError(f"{source} has no CLIP text tower: missing {', '.join(missing)} (it has {len(state)} "
                         f"keys{example}); expected OpenAI's ViT-B-32.pt or Hugging Face's {CLIP_HF_REPO} "
                         f"weights")
    for key, ndim in CLIP_TEXT_KEYS.items():
        value = state[key]
        if not isinstance(value, Tensor) or value.ndim != ndim:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{source}: {key!r} is {shape}, expected a {ndim}-D tensor; not CLIP text weights")


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (output in the input dtype)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


class _MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(1.702 * h))  # QuickGELU


class _Block(nn.Module):
    """Pre-norm residual block with OpenAI's key names (attn, ln_1, mlp.c_fc/c_proj, ln_2)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = FP32LayerNorm(width)
        self.mlp = _MLP(width)
        self.ln_2 = FP32LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Resblocks(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))


class ClipTextTower(nn.Module):
    """CLIP's text transformer with OpenAI's parameter names (``token_embedding``, ``transformer.
    resblocks.{i}``, ``ln_final``, ``text_projection``); ViT-B/32: width 512, 12 layers, 8 heads."""

    def __init__(self, vocab_size: int = 49408, context_length: int = 77, width: int = 512,
                 layers: int = 12, heads: int = 8, embed_dim: int = 512) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.transformer = _Resblocks(width, layers, heads)
        self.ln_final = FP32LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, embed_dim))
        self.compute_dtype = torch.float32

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "ClipTextTower":
        """Build from OpenAI-named weights (sizes inferred as OpenAI's ``build_model`` does)."""
        check_clip_text_keys(state, "CLIP text weights")
        width = state["ln_final.weight"].shape[0]
        layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
        tower = cls(vocab_size=state["token_embedding.weight"].shape[0],
                    context_length=state["positional_embedding"].shape[0], width=width, layers=layers,
                    heads=max(1, width // 64), embed_dim=state["text_projection"].shape[1])
        own = tower.state_dict()
        wanted = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(wanted))
        if missing:
            raise ValueError(f"CLIP text weights lack {len(missing)} keys (first: {missing[0]}); "
                             f"expected OpenAI's ViT-B/32 or Hugging Face's {CLIP_HF_REPO} weights")
        for key, value in wanted.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(f"CLIP text weight {key!r} has shape {tuple(value.shape)}, the tower its other "
                                 f"weights describe needs {tuple(own[key].shape)}; the file is not a CLIP model")
            if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise ValueError(f"CLIP text weight {key!r} is not finite floating point ({value.dtype}); the "
                                 f"file is corrupt")
        tower.load_state_dict({k: v.float() for k, v in wanted.items()})
        return tower

    def half_precision(self) -> "ClipTextTower":
        """The release's GPU recipe: Linear/attention weights and text_projection in fp16."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.half()
            elif isinstance(module, nn.MultiheadAttention):
                module.in_proj_weight.data = module.in_proj_weight.data.half()
                module.in_proj_bias.data = module.in_proj_bias.data.half()
        self.text_projection.data = self.text_projection.data.half()
        self.compute_dtype = torch.float16
        return self

    def forward(self, ids: Tensor, end_index: Tensor) -> Tensor:
        """ids [n, context] long (zero-padded), end_index [n] -> features [n, embed_dim] float32."""
        dtype = self.compute_dtype
        L = ids.shape[1]
        x = self.token_embedding(ids).to(dtype) + self.positional_embedding[:L].to(dtype)
        x = x.permute(1, 0, 2)  # [L, n, width]
        mask = torch.full((L, L), float("-inf"), device=ids.device).triu_(1).to(dtype)
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x.permute(1, 0, 2)).to(dtype)
        pooled = x[torch.arange(x.shape[0], device=ids.device), end_index]
        return (pooled @ self.text_projection).float()


class ClipTextEncoder(CachedEncoder):
    """CLIP text features ``[n, 512]`` for MDM (22-token truncation; fp16 on CUDA, fp32 on CPU)."""

    is_sequence = False

    def __init__(self, tower: ClipTextTower, tokenizer: ClipBPETokenizer, device: str | torch.device = "cpu",
                 precision: str = "auto", context_length: int = MDM_CLIP_CONTEXT, cache_size: int = 4096) -> None:
        super().__init__(cache_size)
        if precision not in ("auto", "fp16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'fp16' or 'fp32', got {precision!r}")
        if not 2 <= context_length <= tower.context_length:
            raise ValueError(f"context_length must be in 2..{tower.context_length}, got {context_length}")
        self.device = torch.device(device)
        use_half = precision == "fp16" or (precision == "auto" and self.device.type == "cuda")
        tower = tower.to(self.device).eval().requires_grad_(False)
        self.tower = tower.half_precision() if use_half else tower
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.feature_dim = tower.text_projection.shape[1]
        self.precision = "fp16" if use_half else "fp32"

    @classmethod
    def from_path(cls, clip_path: Optional[str | Path] = None, device: str | torch.device = "cpu",
                  precision: str = "auto") -> "ClipTextEncoder":
        """Find and load ViT-B/32 text weights and tokeniser (see :func:`find_clip_files`)."""
        files = find_clip_files(clip_path)
        return cls(ClipTextTower.from_state_dict(files.load_weights()), files.load_tokenizer(), device, precision)

    def token_ids(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Zero-padded ids ``[n, 77]`` and end-token positions ``[n]`` (what the release feeds CLIP)."""
        ids = torch.zeros(len(prompts), self.tower.context_length, dtype=torch.long)
        end = torch.zeros(len(prompts), dtype=torch.long)
        for i, p in enumerate(prompts):
            toks = self.tokenizer.tokenize(p, self.context_length)
            ids[i, : len(toks)] = torch.tensor(toks)
            end[i] = len(toks) - 1
        return ids.to(self.device), end.to(self.device)

    @torch.no_grad()
    def _compute(self, prompts: list[str]) -> list[Tensor]:
        return list(self.tower(*self.token_ids(prompts)))


@dataclass(frozen=True)
class ClipFiles:
    """Where the CLIP text weights and tokeniser files were found."""

    weights: Path
    tokenizer: tuple[Path, ...]  # (bpe .txt.gz,) or (vocab.json, merges.txt)

    def load_weights(self) -> dict[str, Tensor]:
        return read_clip_weights(self.weights)

    def load_tokenizer(self) -> ClipBPETokenizer:
        """The BPE tokeniser; an unreadable or malformed file is one ValueError naming it."""
        try:
            if len(self.tokenizer) == 1:
                return ClipBPETokenizer.from_openai_file(self.tokenizer[0])
            return ClipBPETokenizer.from_hf_files(*self.tokenizer)
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as err:
            files = " + ".join(str(p) for p in self.tokenizer)
            detail = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(f"cannot read the CLIP tokeniser from {files} ({type(err).__name__}: {detail}); "
                             f"expected OpenAI's bpe_simple_vocab_16e6.txt.gz or Hugging Face's vocab.json + "
                             f"merges.txt") from None


def _hf_cache_snapshots(repo: str) -> list[Path]:
    """Snapshot folders of a model in the local Hugging Face cache (newest first); no network."""
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    roots.append(hf_home / "hub")
    found = []
    for root in roots:
        snaps = root / f"models--{repo.replace('/', '--')}" / "snapshots"
        if snaps.is_dir():
            found.extend(sorted(snaps.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True))
    return found


def _tokenizer_files(folder: Path) -> Optional[tuple[Path, ...]]:
    if (folder / "merges.txt").is_file() and (folder / "vocab.json").is_file():
        return folder / "vocab.json", folder / "merges.txt"
    if (folder / "bpe_simple_vocab_16e6.txt.gz").is_file():
        return (folder / "bpe_simple_vocab_16e6.txt.gz",)
    return None


def _installed_clip_bpe() -> Optional[tuple[Path, ...]]:
    """The BPE file shipped inside an installed ``clip`` package (found without importing it)."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        files = _tokenizer_files(Path(loc))
        if files:
            return files
    return None


WEIGHT_NAMES = ("ViT-B-32.pt", "model.safetensors", "pytorch_model.bin")


def find_clip_files(clip_path: Optional[str | Path] = None) -> ClipFiles:
    """Locate ViT-B/32 text weights and tokeniser files, offline.

    Looks at ``clip_path`` (a weights file or a folder), else ``$MOTION_COLLAGE_CLIP_PATH``, else
    ``save/clip/`` under the working directory, ``~/.cache/clip/ViT-B-32.pt`` and the Hugging Face
    cache of ``openai/clip-vit-base-patch32``.
    The tokeniser is taken from the same folder (``vocab.json`` + ``merges.txt`` or
    ``bpe_simple_vocab_16e6.txt.gz``), else from an installed ``clip`` package, else from the
    Hugging Face cache.
    """
    candidates: list[Path] = []
    explicit = clip_path or os.environ.get(CLIP_ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            source = "clip_path" if clip_path else f"${CLIP_ENV_VAR}"
            raise FileNotFoundError(f"{source} {path} does not exist; point it to ViT-B-32.pt or to a folder with "
                                    f"{CLIP_HF_REPO}'s model.safetensors, vocab.json and merges.txt")
        candidates.append(path)
    else:
        candidates.append(Path.cwd() / "save" / "clip")  # where prepare/download_official.py puts it
        candidates.append(Path.home() / ".cache" / "clip" / "ViT-B-32.pt")
        candidates.extend(_hf_cache_snapshots(CLIP_HF_REPO))
    weights = None
    for cand in candidates:
        if cand.is_file():
            weights = cand
            break
        if cand.is_dir():
            hit = next((cand / n for n in WEIGHT_NAMES if (cand / n).is_file()), None)
            if hit is not None:
                weights = hit
                break
    tok_dirs = ([weights.parent] if weights else []) + [c for c in candidates if c.is_dir()]
    tokenizer = next((t for t in map(_tokenizer_files, tok_dirs) if t), None) or _installed_clip_bpe()
    if tokenizer is None:
        tokenizer = next((t for t in map(_tokenizer_files, _hf_cache_snapshots(CLIP_HF_REPO)) if t), None)
    if weights is None or tokenizer is None:
        what = "weights" if weights is None else "tokenizer files"
        raise FileNotFoundError(
            f"CLIP ViT-B/32 text {what} not found (looked in {', '.join(str(c) for c in candidates)}): get OpenAI's "
            f"ViT-B-32.pt plus bpe_simple_vocab_16e6.txt.gz, or Hugging Face's {CLIP_HF_REPO} (model.safetensors, "
            f"vocab.json, merges.txt), put them in one folder and pass --clip_path FOLDER or set ${CLIP_ENV_VAR} "
            f"(the Hugging Face cache and ~/.cache/clip are also searched)")
    return ClipFiles(weights, tokenizer)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip file with a ``code/`` folder and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_clip_weights(path: Path) -> dict[str, Tensor]:
    """Text-tower weights with OpenAI's key names, from ViT-B-32.pt (JIT archive or state dict),
    a Hugging Face ``model.safetensors`` or ``pytorch_model.bin``."""
    path = Path(path)
    state = _read_clip_file(path)
    if any(k.startswith("text_model.") for k in state):
        try:
            state = hf_clip_to_openai(state)
        except KeyError as err:
            raise ValueError(f"{path} holds Hugging Face CLIP weights without {err.args[0]!r}; expected the "
                             f"complete {CLIP_HF_REPO} text model") from None
    check_clip_text_keys(state, str(path))
    return state


def _read_clip_file(path: Path) -> dict[str, Tensor]:
    """The raw state dict of a CLIP weights file (safetensors, TorchScript archive or torch.save)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"cannot read {path} as safetensors ({' '.join(str(err).split())}); the file is "
                             f"truncated, corrupt or of another format") from None
    try:
        if _is_torchscript(path):  # OpenAI ships TorchScript archives
            with warnings.catch_warnings():  # torch.jit.load is deprecated, but it is OpenAI's format
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unreadable files
        raise ValueError(f"{path} is neither a CLIP state dict nor a TorchScript archive ({type(err).__name__}); "
                         f"expected OpenAI's ViT-B-32.pt or Hugging Face's {CLIP_HF_REPO} weights") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected CLIP weights (a state dict)")
    return dict(state)


def hf_clip_to_openai(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename Hugging Face CLIP text weights to OpenAI's names (q/k/v joined; projection transposed)."""
    out = {
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": hf["text_model.final_layer_norm.weight"],
        "ln_final.bias": hf["text_model.final_layer_norm.bias"],
        "text_projection": hf["text_projection.weight"].t().contiguous(),
    }
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    layers = sorted({int(k.split(".")[3]) for k in hf if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [hf[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")])
            for a, b in names.items():
                out[dst + f"{b}.{kind}"] = hf[src + f"{a}.{kind}"]
    return out


# ======================================================================= DistilBERT
class DistilBertTextEncoder(CachedEncoder):
    """``distilbert-base-uncased`` token features ``(tokens [n, S, 768], padding [n, S])``.

    ``transformers`` is imported only here. Each prompt's unpadded token features are cached.
    """

    is_sequence = True

    def __init__(self, model: nn.Module, tokenizer: Callable, device: str | torch.device = "cpu",
                 cache_size: int = 4096) -> None:
        super().__init__(cache_size)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.feature_dim = int(model.config.dim)

    @classmethod
    def from_path(cls, bert_path: Optional[str | Path] = None, device: str | torch.device = "cpu") -> "DistilBertTextEncoder":
        """Load from a local folder, ``$MOTION_COLLAGE_BERT_PATH`` or the Hugging Face cache (offline)."""
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise MissingDependencyError("this model's text encoder is DistilBERT (text_encoder_type 'bert'), which "
                                         "needs the 'transformers' package: pip install -e \".[bert]\" (or pip "
                                         "install transformers)") from None
        source = str(bert_path or os.environ.get(BERT_ENV_VAR) or BERT_HF_REPO)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModel.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"DistilBERT weights not found at {source!r} ({type(err).__name__}): get Hugging Face's "
                f"{BERT_HF_REPO} (e.g. `huggingface-cli download {BERT_HF_REPO}` on a machine with internet) and "
                f"pass its folder as bert_path or set ${BERT_ENV_VAR}") from None
        return cls(model, tokenizer, device)

    @torch.no_grad()
    def _compute(self, prompts: list[str]) -> list[Tensor]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        hidden = self.model(**enc).last_hidden_state.float()  # [n, S, 768]
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        return [hidden[i, : int(n)] for i, n in enumerate(lengths)]


# ======================================================================= bag of words
class BowTextEncoder(CachedEncoder):
    """Our default model's bag-of-word-vectors encoder (``mdm_adapter.text_bow``), cached."""

    is_sequence = False

    def __init__(self, inner, device: str | torch.device = "cpu", cache_size: int = 4096) -> None:
        super().__init__(cache_size)
        self.inner = inner
        self.device = torch.device(device)
        self.feature_dim = int(inner.feature_dim)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> "BowTextEncoder":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"bag-of-words text encoder file {path} not found; it ships beside the "
                                    f"default model's weights (args.json key text_encoder_file)")
        from .text_bow import BagOfWordsEncoder
        return cls(BagOfWordsEncoder.from_file(path), device)

    def _compute(self, prompts: list[str]) -> list[Tensor]:
        return list(torch.as_tensor(self.inner.encode(prompts), dtype=torch.float32).to(self.device))
