"""Captions -> (word vectors, POS one-hots, lengths), the text input of the HumanML3D evaluator.

The evaluator of Guo et al. (2022) reads a caption as a list of ``word/POS`` tokens:

    caption  "a man kicks something or someone with his left leg."
    tokens   a/DET man/NOUN kick/VERB something/PRON or/CCONJ someone/PRON with/ADP his/DET left/ADJ leg/NOUN
    padded   sos/OTHER + (at most 20 tokens) + eos/OTHER, then unk/OTHER up to 22 tokens
    length   number of tokens including sos and eos (12 above)

Each token becomes a word vector (``unk``'s vector and POS OTHER when the word is unknown) and a
15-way POS one-hot in which the VIP word lists override the tagger's POS.

Where tokens come from, in order of preference:

1. The dataset's caption files (``texts/<id>.txt``) already hold the official tokens: use them.
2. :class:`SpacyTagger` reproduces the official rule for new prompts (remove '-', spaCy
   ``en_core_web_sm``, alphabetic tokens only, lemma for NOUN/VERB except "left"). Needs
   ``pip install spacy`` and an ``en_core_web_sm`` model (not on PyPI: spaCy distributes it
   through its own releases). spaCy 3.x tags a few words differently from the spaCy 2 release
   that tagged HumanML3D (e.g. "his" PRON instead of DET).
3. :class:`RuleBasedTagger` is OUR OWN small lexicon-and-suffix tagger, NOT the official
   pipeline: it exists so that our offline evaluator works without spaCy. Do not use it for
   numbers meant to be compared with published HumanML3D results.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

# --------------------------------------------------------------------------------------------
# Official constants
# --------------------------------------------------------------------------------------------

POS_IDS: dict[str, int] = {
    "VERB": 0, "NOUN": 1, "DET": 2, "ADP": 3, "NUM": 4, "AUX": 5, "PRON": 6, "ADJ": 7, "ADV": 8,
    "Loc_VIP": 9, "Body_VIP": 10, "Obj_VIP": 11, "Act_VIP": 12, "Desc_VIP": 13, "OTHER": 14,
}
NUM_POS = len(POS_IDS)  # 15
OTHER = "OTHER"

# Checked in this order; the first list that holds the word wins.
VIP_WORDS: dict[str, frozenset[str]] = {
    "Loc_VIP": frozenset("left right clockwise counterclockwise anticlockwise forward back backward up "
                         "down straight curve".split()),
    "Body_VIP": frozenset("arm chin foot feet face hand mouth leg waist eye knee shoulder thigh".split()),
    "Obj_VIP": frozenset("stair dumbbell chair window floor car ball handrail baseball basketball".split()),
    "Act_VIP": frozenset("walk run swing pick bring kick put squat throw hop dance jump turn stumble stop "
                         "sit lift lower raise wash stand kneel stroll rub bend balance flap jog shuffle "
                         "lean rotate spin spread climb".split()),
    "Desc_VIP": frozenset("slowly carefully fast careful slow quickly happy angry sad happily angrily "
                          "sadly".split()),
}

MAX_TEXT_TOKENS = 20          # caption tokens kept, before sos/eos
SOS, EOS, UNK = "sos", "eos", "unk"
OFFICIAL_GLOVE_FILES = ("our_vab_data.npy", "our_vab_words.pkl", "our_vab_idx.pkl")


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

def split_token(token: str) -> tuple[str, str]:
    """``"kick/VERB" -> ("kick", "VERB")``; a token without '/' gets POS OTHER."""
    word, sep, pos = token.rpartition("/")
    if not sep:
        return token, OTHER
    return word, pos


def pos_id(word: str, pos: str) -> int:
    """POS index of a known word: its VIP class if listed, else its tag (unknown tags -> OTHER)."""
    for vip, words in VIP_WORDS.items():
        if word in words:
            return POS_IDS[vip]
    return POS_IDS.get(pos, POS_IDS[OTHER])


def pad_tokens(tokens: Sequence[str], max_tokens: int = MAX_TEXT_TOKENS) -> tuple[list[str], int]:
    """Official padding: keep ``max_tokens``, wrap in sos/eos, pad with unk to ``max_tokens + 2``.

    Returns (padded tokens [max_tokens + 2], length counting sos and eos).
    """
    kept = [f"{SOS}/{OTHER}", *tokens[:max_tokens], f"{EOS}/{OTHER}"]
    length = len(kept)
    kept += [f"{UNK}/{OTHER}"] * (max_tokens + 2 - length)
    return kept, length


_TAGGED_RE = re.compile(r"^\S+/[A-Za-z_]+$")


def looks_tagged(text: str) -> bool:
    """True if every whitespace-separated piece is ``word/POS`` (a caption-file token string)."""
    pieces = text.split()
    return bool(pieces) and all(_TAGGED_RE.match(p) for p in pieces)


# --------------------------------------------------------------------------------------------
# Word vectors
# --------------------------------------------------------------------------------------------

class _PlainUnpickler(pickle.Unpickler):
    """Unpickler for the official vocabulary files: builtins containers and scalars only."""

    _ALLOWED = {("builtins", n) for n in ("dict", "list", "str", "int", "tuple", "set", "frozenset")}

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a vocabulary pickle")


def _load_plain_pickle(path: Path):
    with open(path, "rb") as f:
        return _PlainUnpickler(f).load()


@dataclass(frozen=True)
class WordVectors:
    """A word -> vector table. ``vectors`` is [V, D] float32; ``index`` maps word -> row.

    Must contain ``unk`` (used for unknown words and padding); the official table also has
    ``sos`` (row 0) and ``eos`` (row 1).
    """

    vectors: np.ndarray
    index: Mapping[str, int]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"word vectors must be [V, D], got shape {self.vectors.shape}")
        if UNK not in self.index:
            raise ValueError("word vector table has no 'unk' entry (needed for unknown words and padding)")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def words(self) -> list[str]:
        """Words in row order."""
        by_row = sorted(self.index.items(), key=lambda kv: kv[1])
        return [w for w, _ in by_row]

    def __contains__(self, word: str) -> bool:
        return word in self.index

    @classmethod
    def from_official(cls, glove_dir: str | Path) -> "WordVectors":
        """Load ``our_vab_data.npy`` / ``our_vab_words.pkl`` / ``our_vab_idx.pkl`` (4199 x 300).

        The pickles are read with an unpickler that only allows builtin containers.
        """
        glove_dir = Path(glove_dir)
        missing = [n for n in OFFICIAL_GLOVE_FILES if not (glove_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"official GloVe files {missing} not found in {glove_dir}; expected the 'glove/' folder "
                f"of the text-to-motion evaluator release ({', '.join(OFFICIAL_GLOVE_FILES)})")
        vectors = np.load(glove_dir / "our_vab_data.npy", allow_pickle=False).astype(np.float32)
        words = _load_plain_pickle(glove_dir / "our_vab_words.pkl")
        index = _load_plain_pickle(glove_dir / "our_vab_idx.pkl")
        if not isinstance(index, dict):
            raise ValueError(f"{glove_dir / 'our_vab_idx.pkl'} should hold a dict word -> row, got {type(index)}")
        # The official vectoriser only knows the words of our_vab_words.pkl, looked up through the index.
        table = {w: int(index[w]) for w in words if w in index}
        bad = [w for w, r in table.items() if not 0 <= r < len(vectors)]
        if bad:
            raise ValueError(f"{len(bad)} words of our_vab_idx.pkl point outside the {len(vectors)}-row table")
        return cls(vectors=vectors, index=table)

    @classmethod
    def from_words(cls, words: Sequence[str], vectors: np.ndarray) -> "WordVectors":
        """Table from a word list and its [V, D] rows (same order)."""
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words but {len(vectors)} vectors")
        return cls(vectors=np.asarray(vectors, dtype=np.float32), index={w: i for i, w in enumerate(words)})

    def save_npz(self, path: str | Path) -> None:
        """Save as ``.npz`` (arrays ``words`` (unicode) and ``vectors``), loadable without pickle."""
        np.savez(path, words=np.array(self.words, dtype=str), vectors=self.vectors.astype(np.float32))

    @classmethod
    def load_npz(cls, path: str | Path) -> "WordVectors":
        with np.load(path, allow_pickle=False) as z:
            return cls.from_words([str(w) for w in z["words"]], z["vectors"])


# --------------------------------------------------------------------------------------------
# Encoding token lists
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextBatch:
    """Evaluator text input. word_embs [B, L, D] float32, pos_onehot [B, L, 15], lengths [B] int64.

    L = max_tokens + 2 (22 for the official evaluator); rows are in the caller's order.
    """

    word_embs: Tensor
    pos_onehot: Tensor
    lengths: Tensor


def encode_token_list(tokens: Sequence[str], vectors: WordVectors,
                      max_tokens: int = MAX_TEXT_TOKENS) -> tuple[np.ndarray, np.ndarray, int]:
    """One caption's tokens -> (word vectors [L, D], POS one-hot [L, 15], length), L = max_tokens + 2."""
    padded, length = pad_tokens(tokens, max_tokens)
    embs = np.empty((len(padded), vectors.dim), dtype=np.float32)
    onehot = np.zeros((len(padded), NUM_POS), dtype=np.float32)
    unk_row = vectors.index[UNK]
    for i, token in enumerate(padded):
        word, pos = split_token(token)
        row = vectors.index.get(word)
        if row is None:
            embs[i] = vectors.vectors[unk_row]
            onehot[i, POS_IDS[OTHER]] = 1.0
        else:
            embs[i] = vectors.vectors[row]
            onehot[i, pos_id(word, pos)] = 1.0
    return embs, onehot, length


def encode_tokens(token_lists: Sequence[Sequence[str]], vectors: WordVectors,
                  max_tokens: int = MAX_TEXT_TOKENS) -> TextBatch:
    """Batch of ``word/POS`` token lists -> :class:`TextBatch` (rows in input order)."""
    if len(token_lists) == 0:
        raise ValueError("encode_tokens needs at least one caption")
    encoded = [encode_token_list(t, vectors, max_tokens) for t in token_lists]
    return TextBatch(
        word_embs=torch.from_numpy(np.stack([e[0] for e in encoded])),
        pos_onehot=torch.from_numpy(np.stack([e[1] for e in encoded])),
        lengths=torch.tensor([e[2] for e in encoded], dtype=torch.long),
    )


# --------------------------------------------------------------------------------------------
# Taggers: caption string -> list of "word/POS"
# --------------------------------------------------------------------------------------------

class Tagger(Protocol):
    def __call__(self, caption: str) -> list[str]:
        """Caption -> ``word/POS`` tokens."""


class SpacyTagger:
    """The official HumanML3D rule on top of spaCy (``en_core_web_sm`` by default).

    ``nlp`` may be any callable returning spaCy-like tokens (``.text``, ``.pos_``, ``.lemma_``);
    by default the model named ``model`` is loaded on first use.
    """

    def __init__(self, model: str = "en_core_web_sm", nlp: Callable | None = None) -> None:
        self.model = model
        self._nlp = nlp

    def _load(self) -> Callable:
        if self._nlp is None:
            try:
                import spacy
            except ImportError:
                raise ImportError("SpacyTagger needs spaCy: `pip install spacy` (plus an en_core_web_sm model); "
                                  "or pass pre-tagged 'word/POS' tokens, as in the dataset caption files") from None
            try:
                self._nlp = spacy.load(self.model)
            except OSError:
                raise OSError(f"spaCy model {self.model!r} is not installed; it is not on PyPI: install it from "
                              "spaCy's model releases (`python -m spacy download en_core_web_sm` where the "
                              "network allows), or pass pre-tagged 'word/POS' tokens") from None
        return self._nlp

    def __call__(self, caption: str) -> list[str]:
        doc = self._load()(caption.replace("-", ""))
        out = []
        for tok in doc:
            word = tok.text
            if not word.isalpha():
                continue
            if tok.pos_ in ("NOUN", "VERB") and word != "left":
                word = tok.lemma_
            out.append(f"{word}/{tok.pos_}")
        return out


def spacy_available(model: str = "en_core_web_sm") -> bool:
    """True if spaCy and the named model can be imported here."""
    try:
        import spacy.util
    except ImportError:
        return False
    return bool(spacy.util.is_package(model))


_CLOSED_CLASS: dict[str, str] = {
    **{w: "DET" for w in "a an the this that these those his her their its my your our some any each every "
                         "another both either".split()},
    **{w: "ADP" for w in "to with in on at of from by into onto over under around through across along "
                         "behind before after toward towards like as about above below between near off "
                         "against upon within without out".split()},
    **{w: "PRON" for w in "he she it they them him himself herself themselves someone somebody something "
                          "anyone one i you we me us itself".split()},
    **{w: "AUX" for w in "is are was were be been being am has have had do does did can could will would "
                         "should may might must".split()},
    **{w: "CCONJ" for w in "and or but".split()},
    **{w: "SCONJ" for w in "while if then because until when though although".split()},
    **{w: "NUM" for w in "one two three four five six seven eight nine ten twice once several".split()},
    **{w: "ADV" for w in "forward forwards backward backwards back up down around away again then still "
                         "also very too fast straight ahead sideways together here there slightly almost "
                         "just only quite".split()},
    **{w: "ADJ" for w in "left right other few big small short long quick slow happy sad angry old young "
                         "tired heavy light high low large little normal same elderly friendly lively silly "
                         "early".split()},
}

# Motion verbs (base forms), so that inflections are lemmatised and tagged VERB.
_VERBS = frozenset(
    "walk run jog jump hop skip kick punch throw catch wave raise lift lower put pick bring swing turn spin "
    "rotate bend lean squat sit stand kneel crawl climb step stumble stop stroll dance march shuffle sway "
    "stretch reach push pull grab hold shake clap bow nod look move go come take make do hit slash strike "
    "rub wash flap balance spread dash sprint sidestep guide show point gesture call beckon respond react "
    "answer give say keep perform cut carry drop fall rise roll slide tiptoe limp skate swim fly".split())
_IRREGULAR = {
    "ran": "run", "running": "run", "sat": "sit", "sitting": "sit", "stood": "stand", "took": "take",
    "went": "go", "came": "come", "made": "make", "did": "do", "does": "do", "threw": "throw",
    "thrown": "throw", "held": "hold", "swung": "swing", "fell": "fall", "caught": "catch", "brought": "bring",
    "feet": "foot", "knelt": "kneel", "spun": "spin", "hopping": "hop", "stepping": "step", "jogging": "jog",
    "shaking": "shake", "waving": "wave", "dancing": "dance", "says": "say",
}


def _lemma_candidates(word: str) -> list[str]:
    """Possible base forms of an inflected English word, most specific first."""
    cands: list[str] = []
    if word.endswith("ies") and len(word) > 4:
        cands.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        cands.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        cands.append(word[:-1])
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)]
            if len(stem) > 2 and stem[-1] == stem[-2]:
                cands.append(stem[:-1])       # stepping -> step
            cands.append(stem + "e")          # waving -> wave
            cands.append(stem)                # walking -> walk
    return cands


def _singular(word: str) -> str:
    """Regular English plural -> singular (hands -> hand, stairs -> stair, boxes -> box)."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    return word[:-1]


class RuleBasedTagger:
    """OUR OWN lexicon + suffix tagger (NOT the official spaCy pipeline; see the module doc).

    Lower-cases, drops '-', keeps alphabetic words; closed-class words from a small lexicon;
    "-ly" -> ADV; inflected forms of known motion verbs -> VERB with their lemma; plural nouns
    are singularised when the singular is in ``vocabulary`` (if given); everything else NOUN.
    "left" is never lemmatised. VIP overrides happen later, in :func:`pos_id`.
    """

    def __init__(self, vocabulary: Iterable[str] | None = None) -> None:
        self.vocabulary = frozenset(vocabulary) if vocabulary is not None else None

    def tag_word(self, word: str) -> tuple[str, str]:
        """One lower-case alphabetic word -> (lemma or word, POS)."""
        if word in _CLOSED_CLASS:
            return word, _CLOSED_CLASS[word]
        if word in _VERBS:
            return word, "VERB"
        if word in _IRREGULAR:
            lemma = _IRREGULAR[word]
            return lemma, "VERB" if lemma in _VERBS else "NOUN"
        if word.endswith("ly") and len(word) > 4:
            return word, "ADV"
        for cand in _lemma_candidates(word):
            if cand in _VERBS:
                return cand, "VERB"
        if word.endswith("s") and not word.endswith(("ss", "us", "is")):
            singular = _singular(word)
            if self.vocabulary is None or singular in self.vocabulary:
                return singular, "NOUN"
        return word, "NOUN"

    def __call__(self, caption: str) -> list[str]:
        words = re.findall(r"[a-z]+", caption.lower().replace("-", ""))
        return [f"{lemma}/{pos}" for lemma, pos in map(self.tag_word, words)]


def to_tokens(caption: str | Sequence[str], tagger: Tagger) -> list[str]:
    """Accept a token list, a pre-tagged ``"w/POS w/POS"`` string, or a raw caption (tagged)."""
    if not isinstance(caption, str):
        return list(caption)
    if looks_tagged(caption):
        return caption.split()
    return tagger(caption)
