"""Templated captions for the Bandai Namco motion dataset, in HumanML3D text-file format.

Each clip has a content label (walk, wave-left-hand, ...) and a style label (happy, elderly,
...). A caption is ``subject + content phrase + style phrase`` (or the style phrase fronted),
with several phrasings of each part so the text encoder sees variety:

    "a person walks forward happily", "someone waves the left hand in an elderly way"

Lines are written as HumanML3D does: ``caption#word/POS word/POS ...#0.0#0.0``. The POS tags are
from a small rule-based tagger over the closed template vocabulary (lexicon lookup, then
"-ly" -> ADV, else NOUN), not spaCy; nouns and verbs are lemmatised as in HumanML3D except
"left", which HumanML3D keeps as is. Choices are seeded by the clip name, so the same clip
always gets the same captions.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Sequence

SUBJECTS = ("a person", "someone", "the person", "a human")

# Content phrases, keyed by the label name without its "dataset-N_" prefix.
CONTENT_PHRASES: dict[str, tuple[str, ...]] = {
    "walk": ("walks forward", "walks straight ahead", "is walking forward", "takes a few steps forward"),
    "run": ("runs forward", "jogs forward", "is running ahead", "runs"),
    "dash": ("dashes forward", "sprints forward", "runs fast", "is sprinting ahead"),
    "walk-back": ("walks backward", "walks backwards", "steps back", "is walking backwards"),
    "walk-left": ("walks to the left", "walks sideways to the left", "steps to the left side", "sidesteps left"),
    "walk-right": ("walks to the right", "walks sideways to the right", "steps to the right side", "sidesteps right"),
    "bow": ("bows", "bows forward", "takes a bow", "bends forward in a bow"),
    "bye": ("waves goodbye", "says bye with a wave", "waves a hand to say goodbye", "waves bye"),
    "guide": ("guides someone with a gesture", "shows the way with an arm", "points the way", "gestures to guide"),
    "byebye": ("waves bye bye", "keeps waving goodbye", "waves goodbye again and again", "says bye bye with big waves"),
    "respond": ("responds with a gesture", "reacts and answers", "gives a reply", "responds to someone"),
    "call": ("calls someone over", "calls out to someone", "beckons someone", "calls to a friend"),
    "punch": ("punches", "throws a punch", "punches forward", "strikes with a fist"),
    "kick": ("kicks", "does a kick", "kicks forward", "kicks with a leg"),
    "slash": ("slashes with a sword", "makes a slashing motion", "swings a sword", "cuts with a blade"),
    "dance-long": ("dances", "performs a long dance", "dances for a while", "does a dance routine"),
    "dance-short": ("dances", "does a short dance", "performs a quick dance", "dances briefly"),
    "walk-turn-left": ("walks and turns left", "walks forward then turns to the left", "turns left while walking", "walks in a left turn"),
    "walk-turn-right": ("walks and turns right", "walks forward then turns to the right", "turns right while walking", "walks in a right turn"),
    "wave-both-hands": ("waves both hands", "waves with both hands", "waves both arms", "is waving both hands"),
    "wave-left-hand": ("waves the left hand", "waves with the left hand", "waves the left arm", "is waving the left hand"),
    "wave-right-hand": ("waves the right hand", "waves with the right hand", "waves the right arm", "is waving the right hand"),
    "raise-up-both-hands": ("raises both hands", "raises both hands up", "lifts both arms up", "puts both hands up"),
    "raise-up-left-hand": ("raises the left hand", "raises the left hand up", "lifts the left arm up", "puts the left hand up"),
    "raise-up-right-hand": ("raises the right hand", "raises the right hand up", "lifts the right arm up", "puts the right hand up"),
}

# Style phrases appended after the content phrase; "" means no style words.
STYLE_PHRASES: dict[str, tuple[str, ...]] = {
    "normal": ("", "normally", "in a normal way", "casually"),
    "happy": ("happily", "in a happy way", "cheerfully", "joyfully"),
    "sad": ("sadly", "in a sad way", "gloomily", "sorrowfully"),
    "angry": ("angrily", "in an angry way", "furiously", "in anger"),
    "proud": ("proudly", "in a proud way", "with pride", "confidently"),
    "not-confident": ("timidly", "without confidence", "in an unconfident way", "shyly"),
    "masculinity": ("in a masculine way", "in a manly way", "like a tough man", "with masculine energy"),
    "masculine": ("in a masculine way", "in a manly way", "like a tough man", "with masculine energy"),
    "feminine": ("in a feminine way", "gracefully", "in a ladylike way", "with feminine elegance"),
    "childish": ("like a child", "in a childish way", "playfully like a kid", "childishly"),
    "old": ("like an old person", "in an elderly way", "slowly like an old man", "like an elderly person"),
    "elderly": ("in an elderly way", "like an old person", "like an elderly person", "slowly like an old man"),
    "tired": ("tiredly", "in a tired way", "wearily", "as if exhausted"),
    "exhausted": ("in an exhausted way", "wearily", "tiredly", "as if exhausted"),
    "active": ("actively", "energetically", "in an active way", "with energy"),
    "youthful": ("in a youthful way", "youthfully", "like a young person", "with youthful energy"),
    "musical": ("rhythmically", "in a musical way", "like in a musical", "theatrically"),
    "giant": ("like a giant", "heavily like a giant", "with huge heavy steps", "in a giant way"),
    "chimpira": ("like a thug", "like a street punk", "in a thuggish way", "with a swagger"),
}

# Rule-based tagger lexicon: surface word -> (lemma, universal POS tag).
_DET = {w: (w, "DET") for w in ("a", "an", "the")}
_ADP = {w: (w, "ADP") for w in ("to", "with", "without", "in", "like", "for", "of", "as", "up")}
_PRON = {w: (w, "PRON") for w in ("someone",)}
_CCONJ = {w: (w, "CCONJ") for w in ("and",)}
_SCONJ = {w: (w, "SCONJ") for w in ("if", "while")}
_ADV = {w: (w, "ADV") for w in ("forward", "ahead", "straight", "backward", "backwards", "back", "then", "again",
                                 "over", "out", "briefly", "fast", "sideways")}
_ADJ = {w: (w, "ADJ") for w in ("few", "both", "big", "short", "long", "quick", "normal", "happy", "sad", "angry",
                                 "proud", "unconfident", "masculine", "manly", "tough", "feminine", "ladylike",
                                 "childish", "old", "elderly", "tired", "exhausted", "active", "young", "youthful",
                                 "musical", "huge", "heavy", "thuggish", "giant", "street", "left",
                                 "right", "bye")}
_NOUN = {
    "person": "person", "human": "human", "steps": "step", "way": "way", "bow": "bow", "gesture": "gesture",
    "arm": "arm", "arms": "arm", "hand": "hand", "hands": "hand", "wave": "wave", "waves": "wave",
    "reply": "reply", "friend": "friend", "punch": "punch", "fist": "fist", "kick": "kick", "leg": "leg",
    "sword": "sword", "blade": "blade", "motion": "motion", "dance": "dance", "routine": "routine",
    "turn": "turn", "side": "side", "man": "man", "child": "child", "kid": "kid", "anger": "anger",
    "pride": "pride", "confidence": "confidence", "energy": "energy", "elegance": "elegance", "musical": "musical",
    "giant": "giant", "thug": "thug", "punk": "punk", "swagger": "swagger", "goodbye": "goodbye",
}
_VERB = {
    "walks": "walk", "walking": "walk", "is": "be", "takes": "take", "runs": "run", "jogs": "jog",
    "running": "run", "dashes": "dash", "sprints": "sprint", "sprinting": "sprint", "steps": "step",
    "sidesteps": "sidestep", "bows": "bow", "bends": "bend", "waves": "wave", "says": "say", "guides": "guide",
    "shows": "show", "points": "point", "gestures": "gesture", "keeps": "keep", "waving": "wave",
    "responds": "respond", "reacts": "react", "answers": "answer", "gives": "give", "calls": "call",
    "beckons": "beckon", "punches": "punch", "throws": "throw", "strikes": "strike", "does": "do",
    "kicks": "kick", "slashes": "slash", "makes": "make", "swings": "swing", "cuts": "cut", "dances": "dance",
    "performs": "perform", "turns": "turn", "raises": "raise", "lifts": "lift", "puts": "put",
    "slashing": "slash", "guide": "guide", "say": "say",
}


def _lexicon() -> dict[str, tuple[str, str]]:
    lex: dict[str, tuple[str, str]] = {}
    for table in (_ADJ, _ADV, _ADP, _DET, _PRON, _CCONJ, _SCONJ):
        lex.update(table)
    lex.update({w: (lemma, "NOUN") for w, lemma in _NOUN.items() if w not in lex})
    lex.update({w: (lemma, "VERB") for w, lemma in _VERB.items()})
    return lex


LEXICON = _lexicon()
# Words whose tag depends on the previous word (determiner/adjective before -> noun).
_NOUN_AFTER = {"a", "an", "the", "big", "both", "huge", "heavy", "short", "long", "quick", "few", "masculine",
               "feminine", "youthful", "left", "right", "in", "with", "street", "tough", "old", "young", "elderly"}


def tag(caption: str) -> list[tuple[str, str]]:
    """(lemma-or-word, POS) per word of a template caption, by lexicon lookup and simple rules.

    Nouns and verbs are lemmatised (HumanML3D convention), other words kept as written; a word
    after a determiner, adjective or preposition that can be a noun is tagged NOUN; "left" and
    "right" right after a verb are adverbs ("turns left"), otherwise adjectives.
    """
    out: list[tuple[str, str]] = []
    prev = ""
    for word in caption.lower().replace(",", " ").split():
        if word in _NOUN and prev in _NOUN_AFTER:
            out.append((_NOUN[word], "NOUN"))
        elif word in ("left", "right") and out and out[-1][1] == "VERB":
            out.append((word, "ADV"))
        elif word in LEXICON:
            lemma, pos = LEXICON[word]
            out.append((word if word == "left" else lemma, pos))
        elif word.endswith("ly"):
            out.append((word, "ADV"))
        else:
            out.append((word, "NOUN"))
        prev = word
    return out


def format_line(caption: str) -> str:
    """One HumanML3D text line: ``caption#word/POS ...#0.0#0.0`` (whole clip)."""
    tokens = " ".join(f"{w}/{p}" for w, p in tag(caption))
    return f"{caption}#{tokens}#0.0#0.0"


def strip_dataset_prefix(label: str) -> str:
    """"dataset-1_walk-back" -> "walk-back" (label files prefix every name with the dataset)."""
    head, sep, rest = label.partition("_")
    return rest if sep and head.startswith("dataset-") else label


def all_captions(content: str, style: str) -> list[str]:
    """Every template caption for a (content, style) pair, in a fixed order."""
    content, style = strip_dataset_prefix(content), strip_dataset_prefix(style)
    if content not in CONTENT_PHRASES:
        raise KeyError(f"no caption templates for content {content!r}; known: {sorted(CONTENT_PHRASES)}")
    if style not in STYLE_PHRASES:
        raise KeyError(f"no caption templates for style {style!r}; known: {sorted(STYLE_PHRASES)}")
    captions = []
    for subject in SUBJECTS:
        for verb in CONTENT_PHRASES[content]:
            for adv in STYLE_PHRASES[style]:
                captions.append(" ".join(p for p in (subject, verb, adv) if p))
                if adv and subject in ("someone", "a person"):
                    captions.append(f"{adv}, {subject} {verb}")
    return list(dict.fromkeys(captions))


def captions_for_clip(clip_id: str, content: str, style: str, count: int = 4, seed: int = 0) -> list[str]:
    """`count` distinct captions for one clip, chosen reproducibly from its name and `seed`.

    """
    pool = all_captions(content, style)
    digest = hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    return rng.sample(pool, min(count, len(pool)))


def write_text_file(path: Path, captions: Sequence[str]) -> None:
    """Write captions as a HumanML3D ``texts/<id>.txt`` file (one line each, '\\n' endings)."""
    path.write_text("".join(format_line(c) + "\n" for c in captions), encoding="utf-8")


def template_words() -> set[str]:
    """Every word any template can produce (for the text encoder's vocabulary)."""
    words: set[str] = set()
    for phrases in (SUBJECTS, *CONTENT_PHRASES.values(), *STYLE_PHRASES.values()):
        for p in phrases:
            words.update(p.replace(",", " ").split())
    return words
