"""Deterministic composition scenes from a test split (the FlowMDM composition benchmark).

A scene is a list of consecutive (caption, length) segments generated as one long motion, with one
transition per boundary. Scenes are built from the test clips of a HumanML3D-layout folder:

1. each usable clip (``min_frames <= T <= max_frames``) contributes one (caption, length) pair:
   its length in frames and one of its captions, picked by a seeded generator;
2. the clips of a **group** are put in a seeded random order and cut into consecutive runs of
   ``segments_per_scene`` pairs; a final incomplete run is dropped (unless the group has no
   complete scene, then it is kept as one shorter scene).

Groups, by the real length of the segments' clips (``bounds_seconds``, default 4 s and 7 s):

=========  ================================================  =================================
group      clips it takes                                     at 20 fps with the defaults
=========  ================================================  =================================
short      length <  4 s                                      40 .. 79 frames
medium     4 s <= length < 7 s                                80 .. 139 frames
long       length >= 7 s                                      140 .. 196 frames
all        every usable clip                                  40 .. 196 frames
=========  ================================================  =================================

Each group has its own order (seeded by ``seed`` and the group's position in :data:`GROUPS`), so a
group's scenes do not change when another group's bounds do. Scenes are written to JSON with
:func:`save_scenes` so that a benchmark run names the exact scenes it used.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from eval.data import MotionClip
from motion_core.atomic import staged_file

GROUPS = ("short", "medium", "long", "all")
DEFAULT_BOUNDS_SECONDS = (4.0, 7.0)
SCENES_FORMAT = "motion-collage-scenes-1"


@dataclass(frozen=True)
class SceneSegment:
    """One segment: the caption (raw text for the model, ``word/POS`` tokens for the evaluator),
    its length in frames and the clip it comes from."""

    text: str
    tokens: tuple[str, ...]
    frames: int
    clip: str


@dataclass(frozen=True)
class Scene:
    name: str
    group: str
    segments: tuple[SceneSegment, ...]

    @property
    def rows(self) -> list[tuple[str, int]]:
        """The scene as generation segments ``[(prompt, frames), ...]``."""
        return [(s.text, s.frames) for s in self.segments]

    @property
    def boundaries(self) -> list[int]:
        """Frame index of each transition (start of segments 2..n)."""
        return [int(b) for b in np.cumsum([s.frames for s in self.segments])[:-1]]

    @property
    def num_frames(self) -> int:
        return int(sum(s.frames for s in self.segments))


def clip_pairs(clips: Sequence[MotionClip], seed: int = 0) -> list[SceneSegment]:
    """One (caption, length) pair per clip, in clip order; the caption is drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7919])
    out = []
    for clip in clips:
        cap = clip.captions[int(rng.integers(len(clip.captions)))]
        out.append(SceneSegment(cap.text, tuple(cap.tokens), clip.length, clip.name))
    return out


def group_of(frames: int, fps: float, bounds_seconds: Sequence[float] = DEFAULT_BOUNDS_SECONDS) -> str:
    """"short", "medium" or "long" for a clip length in frames."""
    short_max, medium_max = (b * fps for b in bounds_seconds)
    if frames < short_max:
        return "short"
    return "medium" if frames < medium_max else "long"


def build_scenes(clips: Sequence[MotionClip], segments_per_scene: int = 32, seed: int = 0,
                 fps: float = 20.0, bounds_seconds: Sequence[float] = DEFAULT_BOUNDS_SECONDS,
                 num_scenes: int | None = None, groups: Sequence[str] = GROUPS) -> dict[str, list[Scene]]:
    """Scenes per group (see the module doc). ``num_scenes`` keeps only the first scenes of each group."""
    if segments_per_scene < 1:
        raise ValueError(f"segments_per_scene must be >= 1, got {segments_per_scene}")
    if len(bounds_seconds) != 2 or not 0 < bounds_seconds[0] < bounds_seconds[1]:
        raise ValueError(f"bounds_seconds must be two increasing positive values, got {tuple(bounds_seconds)}")
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown scene group(s) {unknown}; expected some of {list(GROUPS)}")
    pairs = clip_pairs(clips, seed)
    out: dict[str, list[Scene]] = {}
    for group in groups:
        members = [p for p in pairs if group == "all" or group_of(p.frames, fps, bounds_seconds) == group]
        order = np.random.default_rng([seed, GROUPS.index(group)]).permutation(len(members))
        members = [members[i] for i in order]
        chunks = [members[i:i + segments_per_scene] for i in range(0, len(members), segments_per_scene)]
        if len(chunks) > 1 and len(chunks[-1]) < segments_per_scene:
            chunks.pop()
        if num_scenes is not None:
            chunks = chunks[:num_scenes]
        out[group] = [Scene(f"{group}-{i:03d}", group, tuple(c)) for i, c in enumerate(chunks) if c]
    return out


def save_scenes(path: str | Path, scenes: Mapping[str, Sequence[Scene]], settings: Mapping | None = None) -> Path:
    """Write scenes (and the settings that built them) to JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": SCENES_FORMAT, "settings": dict(settings or {}),
               "groups": {g: [{"name": s.name, "segments": [asdict(seg) for seg in s.segments]} for s in lst]
                          for g, lst in scenes.items()}}
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def load_scenes(path: str | Path) -> tuple[dict[str, list[Scene]], dict]:
    """Scenes per group and the settings stored with them.

    A file that is missing, not JSON, of another format or malformed (a segment without text,
    tokens, a whole number of frames >= 1 or a clip name) is a one-line ValueError or
    FileNotFoundError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scenes file {path} not found; build one with eval.scenes.save_scenes or omit "
                                "--scenes to build the scenes from the test split")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"scenes file {path} is not JSON ({' '.join(str(e).split())})") from None
    if not isinstance(payload, dict) or payload.get("format") != SCENES_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} has format {found!r}, expected {SCENES_FORMAT!r}")
    try:
        scenes = {str(g): [_scene(s, str(g)) for s in lst] for g, lst in payload["groups"].items()}
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"scenes file {path} is malformed ({type(e).__name__}: {' '.join(str(e).split())})") from None
    settings = payload.get("settings", {})
    return scenes, settings if isinstance(settings, dict) else {}


def _scene(entry: Mapping, group: str) -> Scene:
    """One scene from its JSON object (raises KeyError/TypeError/ValueError when malformed)."""
    segments = []
    for d in entry["segments"]:
        frames = d["frames"]
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"segment frames must be a whole number >= 1, got {frames!r}")
        if not isinstance(d["text"], str) or not isinstance(d["clip"], str) or isinstance(d["tokens"], str):
            raise TypeError("segment text and clip must be strings, tokens a list of strings")
        segments.append(SceneSegment(d["text"], tuple(str(t) for t in d["tokens"]), frames, d["clip"]))
    if not segments:
        raise ValueError(f"scene {entry.get('name')!r} has no segment")
    return Scene(str(entry["name"]), group, tuple(segments))
