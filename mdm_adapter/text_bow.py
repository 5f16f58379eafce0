"""Bag-of-words text encoder of the embedded default model.

CLIP is not obtainable offline, so the default model conditions on a fixed sentence feature
built from frozen GloVe 6B 50-d word vectors (a vocabulary subset stored beside the weights):

    tokens  = lower-cased runs of letters or digits ("walk-turn-left" -> walk, turn, left)
    content = tokens with a vector, minus a short stop-word list (all known tokens if that
              leaves nothing)
    feature = [ l2n(mean(v_w)) , l2n(max(v_w)) ] / sqrt(2)        # [2 * 50] = [100], unit norm

Mean pooling carries the overall meaning, max pooling keeps a salient word (a style adverb)
from being averaged away. GloVe puts antonyms that occur in the same contexts close together
("left"/"right": the two prompts "waves the left/right hand" have cosine 0.95), so an encoder
may also carry **indicator words** (the content words of the training captions, stemmed):
then the feature gains ``l2n(counts of indicator words)`` and all three parts are scaled by
``1/sqrt(3)``. Words outside the indicators still reach the model through the GloVe part. A prompt with no known word encodes to the zero
vector, which is exactly the null condition used for classifier-free guidance (the model then
samples unconditionally); a warning says so.

The vectors are saved as float16 safetensors with the vocabulary as JSON metadata, so the
shipped model needs neither the GloVe package nor any download at run time.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

FORMAT = "motion-collage-bow-1"
TOKEN_RE = re.compile(r"[a-z]+|[0-9]+")
DEFAULT_STOPWORDS = (
    "a", "an", "the", "person", "someone", "somebody", "human", "man", "woman", "is", "are",
    "and", "then", "of", "with", "in", "to", "his", "her", "their", "its", "it", "way", "s",
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (letters or digits); punctuation and hyphens split words."""
    return TOKEN_RE.findall(text.lower())


def stem(word: str) -> str:
    """A crude suffix stripper so "waves"/"waving"/"waved" share an indicator ("wav")."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _write_safetensors(path: Path, name: str, tensor: Tensor, metadata: dict[str, str]) -> None:
    """Write one float16 tensor as safetensors with a sorted header (byte-reproducible output).

    The library writer orders metadata keys arbitrarily; this one sorts them, so the same
    encoder always gives the same bytes.
    """
    data = tensor.numpy().astype("<f2").tobytes()
    header = {"__metadata__": metadata,
              name: {"dtype": "F16", "shape": list(tensor.shape), "data_offsets": [0, len(data)]}}
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


class BagOfWordsEncoder:
    """Frozen mean+max pooled word-vector sentence encoder, ``encode(prompts) -> [n, 2 * E]``.

    ``vectors`` is [V, E] (any float dtype, kept as given; features are computed in float32).
    ``known_words`` (optional) is the vocabulary of the training captions: a prompt sharing no
    content word with it gets a warning, since the model never saw anything like it.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        vectors: Tensor,
        stopwords: Iterable[str] = DEFAULT_STOPWORDS,
        known_words: Iterable[str] | None = None,
        indicator_words: Sequence[str] | None = None,
    ) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(vocabulary):
            raise ValueError(
                f"vectors must be [V, E] with V = len(vocabulary) = {len(vocabulary)}, got {tuple(vectors.shape)}"
            )
        self.vocabulary = list(vocabulary)
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        if len(self.index) != len(self.vocabulary):
            raise ValueError("vocabulary contains duplicate words")
        self.vectors = vectors
        self.stopwords = frozenset(stopwords)
        self.known_words = frozenset(known_words) if known_words is not None else None
        self.indicator_words = list(indicator_words) if indicator_words else []
        self._indicator_index = {w: i for i, w in enumerate(self.indicator_words)}
        if len(self._indicator_index) != len(self.indicator_words):
            raise ValueError("indicator words contain duplicates")
        self._cache: dict[str, Tensor] = {}

    @property
    def embed_dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def feature_dim(self) -> int:
        return 2 * self.embed_dim + len(self.indicator_words)

    def with_indicators(self, words: Iterable[str]) -> "BagOfWordsEncoder":
        """The same encoder with indicator words (stemmed, stop words dropped, sorted)."""
        stems = sorted({stem(w) for w in words if w not in self.stopwords})
        return BagOfWordsEncoder(self.vocabulary, self.vectors, self.stopwords, self.known_words, stems)

    def _encode_one(self, prompt: str) -> Tensor:
        tokens = tokenize(prompt)
        known = [t for t in tokens if t in self.index]
        content = [t for t in known if t not in self.stopwords] or known
        if not content:
            warnings.warn(
                f"no known word in prompt {prompt!r}: using the null (unconditional) text feature",
                stacklevel=3,
            )
            return torch.zeros(self.feature_dim)
        unknown = sorted({t for t in tokens if t not in self.index and t not in self.stopwords})
        if unknown:
            warnings.warn(f"unknown words ignored in prompt {prompt!r}: {unknown}", stacklevel=3)
        if self.known_words is not None and not any(t in self.known_words for t in content):
            warnings.warn(
                f"prompt {prompt!r} shares no word with the training captions; expect a generic motion",
                stacklevel=3,
            )
        vecs = self.vectors[[self.index[t] for t in content]].float()  # [n, E]
        mean = torch.nn.functional.normalize(vecs.mean(0), dim=0)
        peak = torch.nn.functional.normalize(vecs.max(0).values, dim=0)
        if not self.indicator_words:
            return torch.cat([mean, peak]) / 2**0.5  # [2E], unit norm
        counts = torch.zeros(len(self.indicator_words))
        for t in tokens:
            i = self._indicator_index.get(stem(t))
            if i is not None and t not in self.stopwords:
                counts[i] += 1
        return torch.cat([mean, peak, torch.nn.functional.normalize(counts, dim=0)]) / 3**0.5

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Features of the prompts, [n, feature_dim] float32; cached per distinct prompt."""
        if isinstance(prompts, str):
            raise TypeError("encode expects a sequence of prompts, got a single string; wrap it in a list")
        out = []
        for p in prompts:
            if p not in self._cache:
                self._cache[p] = self._encode_one(p)
            out.append(self._cache[p])
        if not out:
            return torch.zeros(0, self.feature_dim)
        return torch.stack(out).clone()

    __call__ = encode

    def save(self, path: str | Path) -> None:
        """Write vectors (float16) and vocabulary/stop words (JSON metadata) as safetensors."""
        meta = {
            "format": FORMAT,
            "vocabulary": json.dumps(self.vocabulary, ensure_ascii=False),
            "stopwords": json.dumps(sorted(self.stopwords)),
            "pooling": "concat(l2n(mean), l2n(max)) / sqrt(2)",
        }
        if self.known_words is not None:
            meta["known_words"] = json.dumps(sorted(self.known_words))
        if self.indicator_words:
            meta["indicator_words"] = json.dumps(self.indicator_words)
            meta["pooling"] = "concat(l2n(mean), l2n(max), l2n(indicator counts)) / sqrt(3)"
        _write_safetensors(Path(path), "vectors", self.vectors.to(torch.float16).contiguous(), meta)

    @classmethod
    def from_file(cls, path: str | Path) -> "BagOfWordsEncoder":
        """Load an encoder written by :meth:`save`; a damaged file is one ValueError naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"text encoder file not found: {path} (expected a bag-of-words .safetensors)")
        meta, vectors = _read_file(path)
        if meta.get("format") != FORMAT or "vocabulary" not in meta:
            raise ValueError(f"{path} is not a bag-of-words text encoder (format {meta.get('format')!r}, expected {FORMAT!r})")
        words = {name: _word_list(path, meta, name) for name in ("vocabulary", "stopwords", "known_words",
                                                                   "indicator_words")}
        if words["stopwords"] is None:
            raise ValueError(f"{path}: metadata lacks 'stopwords'; the file is damaged, export the encoder again")
        if vectors is None:
            raise ValueError(f"{path} holds no 'vectors' tensor; the file is damaged, export the encoder again")
        if vectors.ndim != 2 or not vectors.is_floating_point() or not bool(torch.isfinite(vectors).all()):
            raise ValueError(f"{path}: 'vectors' must be a finite float [V, E] tensor, got {vectors.dtype} "
                             f"{tuple(vectors.shape)}; the file is damaged")
        try:
            return cls(words["vocabulary"], vectors, words["stopwords"], words["known_words"],
                       words["indicator_words"])
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _read_file(path: Path) -> tuple[dict[str, str], Tensor | None]:
    """(metadata, vectors or None) of a safetensors file; anything unreadable is a ValueError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            vectors = f.get_tensor("vectors") if "vectors" in f.keys() else None
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read {path} as safetensors ({' '.join(str(err).split())}); the text encoder "
                         f"file is truncated, corrupt or of another format") from None
    return meta, vectors


def _word_list(path: Path, meta: dict[str, str], name: str) -> list[str] | None:
    """A JSON list of words stored in the metadata (None when absent)."""
    if name not in meta:
        return None
    try:
        words = json.loads(meta[name])
    except ValueError as err:
        raise ValueError(f"{path}: metadata {name!r} is not JSON ({err}); the file is damaged") from None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"{path}: metadata {name!r} must be a JSON list of words, got {type(words).__name__}")
    return words
