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
from typing import Any, Mapping, Sequence

import numpy as np

from eval import metrics as M
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



# --------------------------------------------------------------------------------------------
# FlowMDM's R-precision
# --------------------------------------------------------------------------------------------

def flowmdm_matching(text_emb: np.ndarray, motion_emb: np.ndarray, captions: Sequence[str],
                     caption_lengths: Sequence[int], batch_size: int = 32, top_k: int = 3) -> tuple[np.ndarray, float]:
    """R-precision top-1..k [top_k] and MM-Dist as FlowMDM's ``evaluate_matching_score`` computes them.

    Consecutive batches of ``batch_size`` aligned pairs [N, E], the last one kept even when
    incomplete; each batch in its loader's order (caption length, longest first, ties in order).
    Within a batch the ranking uses one row per distinct caption (the first after that order, the
    captions sorted as ``np.unique`` sorts them) and its counts are scaled by batch size / distinct
    captions; MM-Dist is the mean own-pair distance over every pair.
    """
    text_emb, motion_emb = np.asarray(text_emb, np.float64), np.asarray(motion_emb, np.float64)
    counts, dist_sum, n = np.zeros(top_k), 0.0, len(text_emb)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        idx = idx[np.argsort(-np.asarray(caption_lengths)[idx], kind="stable")]
        dist = M.euclidean_distance_matrix(text_emb[idx], motion_emb[idx])
        dist_sum += float(np.trace(dist))
        unique = np.unique(np.asarray([captions[i] for i in idx], dtype=object), return_index=True)[1]
        sub = dist[unique][:, unique]
        rank = np.argmax(np.argsort(sub, axis=1) == np.arange(len(sub))[:, None], axis=1)
        counts += np.array([(rank < k).sum() for k in range(1, top_k + 1)]) * (len(idx) / len(unique))
    return counts / n, dist_sum / n


def caption_length(tokens: Sequence[str], max_tokens: int = 20) -> int:
    """The evaluator's caption length: tokens (at most ``max_tokens``) plus sos and eos."""
    return min(len(tokens), max_tokens) + 2


def flowmdm_scores(text_emb: np.ndarray, motion_emb: np.ndarray, texts: Sequence[str],
                   tokens: Sequence[Sequence[str]], batch_size: int = 32, prefix: str = "") -> dict[str, float]:
    """``top1..3`` and ``mm_dist`` by FlowMDM's rule (:func:`flowmdm_matching`) for aligned pairs."""
    r_precision, mm_dist = flowmdm_matching(text_emb, motion_emb, texts, [caption_length(t) for t in tokens],
                                            batch_size)
    out = {f"{prefix}top{k + 1}": float(v) for k, v in enumerate(r_precision)}
    out[f"{prefix}mm_dist"] = mm_dist
    return out
