"""FlowMDM's scene files, read as composition scenes.

FlowMDM's evaluation (``runners/eval.py``) reads its scenes from a JSON file it publishes
(``dataset/humanml_test_set.json`` for HumanML3D, ``dataset/babel_val_set.json`` for Babel): a
list of scenes, each an object with ``text`` (one caption per segment), ``lengths`` (frames per
segment, whole numbers or their decimal strings), and optionally ``id`` and ``scenario`` (the
group: ``short``, ``medium``, ``long``; without ``--scenario`` every scene is evaluated). Its
generation examples (``runners/jsons/composition_humanml.json``) are one such object on its own;
both forms are read.

The evaluator reads a caption as ``word/POS`` tokens; FlowMDM tags the text with spaCy. Here each
caption is matched to a caption of the test split (exactly, then ignoring case and spacing) and
takes that caption's tokens and clip (the clip also gives the ``real`` row its crop). A caption
that is not in the split is a ValueError naming the scene: FlowMDM's HumanML3D scenes come from
the HumanML3D test split, so pass that split's folder as ``--data``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from eval.scenes import SCENES_FORMAT, Scene, SceneSegment, load_scenes

from .scoring import SplitData

SCENARIO = "scenario"


def is_flowmdm_file(payload: Any) -> bool:
    """A FlowMDM scene file's JSON: one ``{"text", "lengths"}`` object or a list of them."""
    items = payload if isinstance(payload, list) else [payload]
    return bool(items) and all(isinstance(s, dict) and "text" in s and "lengths" in s for s in items)


def _key(text: str) -> str:
    return " ".join(text.lower().split())


Match = tuple[str, tuple[str, ...]]          # (clip name, tokens)


class CaptionIndex:
    """The test split's captions: text -> (clip name, tokens), exact first, then ignoring case and
    spacing (the first clip holding a caption wins)."""

    def __init__(self, data: SplitData) -> None:
        self.exact: dict[str, Match] = {}
        self.loose: dict[str, Match] = {}
        for clip in data.clips:
            for cap in clip.captions:
                self.exact.setdefault(cap.text.strip(), (clip.name, tuple(cap.tokens)))
                self.loose.setdefault(_key(cap.text), (clip.name, tuple(cap.tokens)))

    def find(self, text: str) -> Match | None:
        return self.exact.get(text.strip()) or self.loose.get(_key(text))


def _lengths(values: Any, where: str) -> list[int]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: lengths must be a non-empty list of frame counts, got {values!r}")
    out = []
    for v in values:
        ok_int = isinstance(v, int) and not isinstance(v, bool)
        ok_str = isinstance(v, str) and v.strip().isdigit()
        if not (ok_int or ok_str) or int(v) < 1:
            raise ValueError(f"{where}: every length must be a whole number of frames >= 1, got {v!r}")
        out.append(int(v))
    return out


def flowmdm_scene(entry: Mapping[str, Any], index: int, captions: CaptionIndex, path: Path) -> Scene:
    """One FlowMDM scene object -> a :class:`Scene` (its group: ``scenario``, else ``all``)."""
    name = str(entry.get("id", index))
    where = f"scene {name!r} of {path}"
    texts = entry["text"]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"{where}: text must be a non-empty list of captions, got {texts!r}")
    lengths = _lengths(entry["lengths"], where)
    if len(lengths) != len(texts):
        raise ValueError(f"{where} has {len(texts)} captions but {len(lengths)} lengths; give one length per caption")
    group = str(entry.get(SCENARIO, "all"))
    segments = []
    for k, (text, frames) in enumerate(zip(texts, lengths)):
        found = captions.find(text)
        if found is None:
            raise ValueError(f"{where}: segment {k} caption {text!r} is not a caption of the test split; FlowMDM's "
                             "HumanML3D scenes come from the HumanML3D test split: pass that folder as --data")
        segments.append(SceneSegment(text, found[1], frames, found[0]))
    return Scene(f"{group}-{name}", group, tuple(segments))


def load_flowmdm_scenes(path: str | Path, data: SplitData, group: str = "all") -> list[Scene]:
    """The scenes of a FlowMDM scene file in ``group`` (``all``: every scene, as FlowMDM without
    ``--scenario``). Missing file: FileNotFoundError; malformed or unmatched: one-line ValueError."""
    path = Path(path)
    payload = _read(path)
    if not is_flowmdm_file(payload):
        raise ValueError(f"{path} is not a FlowMDM scene file (a list of {{\"text\": [...], \"lengths\": [...]}} "
                         "objects)")
    items = payload if isinstance(payload, list) else [payload]
    captions = CaptionIndex(data)
    scenes = [flowmdm_scene(s, i, captions, path) for i, s in enumerate(items)]
    chosen = [s for s in scenes if group == "all" or s.group == group]
    if not chosen:
        found = sorted({s.group for s in scenes})
        raise ValueError(f"FlowMDM scene file {path} has no scene of scenario {group!r}; its scenarios: {found}")
    return chosen


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"scenes file {path} not found; pass FlowMDM's dataset/humanml_test_set.json or a "
                                "file written by eval.scenes.save_scenes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"scenes file {path} is not JSON ({' '.join(str(e).split())})") from None


def scene_file(path: str | Path, data: SplitData, group: str) -> list[Scene]:
    """Scenes of ``group`` from our scenes JSON (``eval.scenes``) or from a FlowMDM scene file."""
    payload = _read(Path(path))
    if isinstance(payload, dict) and payload.get("format") == SCENES_FORMAT:
        groups, _ = load_scenes(path)
        if group not in groups:
            raise ValueError(f"scenes file {path} has no group {group!r}; it has {sorted(groups)}")
        return groups[group]
    if is_flowmdm_file(payload):
        return load_flowmdm_scenes(path, data, group)
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    raise ValueError(f"{path} has format {found!r}, expected {SCENES_FORMAT!r} or a FlowMDM scene file "
                     "(a list of {\"text\": [...], \"lengths\": [...]} objects)")

