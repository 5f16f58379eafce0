"""Motion-text pairs from a folder in the HumanML3D layout.

    <root>/new_joint_vecs/<id>.npy   features [T, 263] float32 (raw, not normalised)
    <root>/texts/<id>.txt            one caption per line: ``caption#word/POS word/POS ...#from#to``
    <root>/train.txt, val.txt, test.txt   one id per line
    <root>/Mean.npy, Std.npy         the model's normalisation statistics [263]

``from``/``to`` are seconds (``0#0`` = the whole clip); a line with a sub-range becomes its own
clip ``<id>#<from>#<to>`` holding frames ``int(from * fps) : int(to * fps)`` and that one caption,
as in the official loader (which keeps sub-clip captions as separate entries). Clips containing
NaN are skipped with a warning (HumanML3D has one: 007975 and its mirror M007975). Used for the
official HumanML3D and for our converted Bandai Namco dataset (same layout).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from motion_core.spec import HUMANML3D, DatasetSpec

SPLITS = ("train", "val", "test")
OFFICIAL_MAX_SOURCE_FRAMES = 200    # the official loader keeps clips shorter than this


@dataclass(frozen=True)
class Caption:
    """One caption line: the text and its ``word/POS`` tokens."""

    text: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class MotionClip:
    """A clip (or sub-clip) with its captions. features [T, D] float32, raw (not normalised)."""

    name: str
    features: np.ndarray
    captions: tuple[Caption, ...]

    @property
    def length(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class MotionTextItem:
    """One (motion, caption) pair. features [T, D] float32 raw; length = T."""

    name: str
    features: np.ndarray
    caption: str
    tokens: tuple[str, ...]
    length: int


def read_split(root: str | Path, split: str) -> list[str]:
    """Clip ids listed in ``<root>/<split>.txt`` (blank lines ignored)."""
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found; expected one of {[s + '.txt' for s in SPLITS]} "
                                f"in a HumanML3D-layout folder")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _seconds(field: str) -> float:
    try:
        value = float(field)
    except ValueError:
        return 0.0
    return 0.0 if math.isnan(value) else value


def parse_text_file(path: str | Path) -> list[tuple[Caption, float, float]]:
    """Lines ``caption#tokens#from#to`` -> [(Caption, from_seconds, to_seconds)] (NaN/blank -> 0)."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("#")
        if len(parts) < 2:
            raise ValueError(f"{path}:{n}: expected 'caption#tokens#from#to', got {line!r}")
        text, tokens = parts[0], tuple(t for t in parts[1].split(" ") if t)
        start = _seconds(parts[2]) if len(parts) > 2 else 0.0
        end = _seconds(parts[3]) if len(parts) > 3 else 0.0
        out.append((Caption(text, tokens), start, end))
    return out


def load_mean_std(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``Mean.npy`` and ``Std.npy`` of a dataset folder, float32 [D] each."""
    root = Path(root)
    arrays = []
    for name in ("Mean.npy", "Std.npy"):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (the dataset's normalisation statistics)")
        arrays.append(np.load(path, allow_pickle=False).astype(np.float32).reshape(-1))
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f"Mean.npy {arrays[0].shape} and Std.npy {arrays[1].shape} differ in shape")
    return arrays[0], arrays[1]


def load_clips(root: str | Path, split: str, spec: DatasetSpec = HUMANML3D, min_frames: int | None = None,
               max_frames: int | None = None, official_length_rule: bool = False,
               ids: Sequence[str] | None = None) -> list[MotionClip]:
    """Clips of one split with their captions, filtered by length, NaN clips skipped.

    Keeps clips with ``min_frames <= T <= max_frames`` (defaults: the spec's 40 and 196). With
    ``official_length_rule`` the upper bound is the official loader's ``T < 200`` instead (longer
    than 196 is then cropped when a batch is built, see :func:`random_unit_crop`). ``ids``
    overrides the split file. Missing motion or text files are skipped with one warning.
    """
    root = Path(root)
    lo = spec.min_frames if min_frames is None else min_frames
    hi = spec.max_frames if max_frames is None else max_frames
    keep = ((lambda n: lo <= n < OFFICIAL_MAX_SOURCE_FRAMES) if official_length_rule
            else (lambda n: lo <= n <= hi))
    clip_ids = list(ids) if ids is not None else read_split(root, split)
    clips: list[MotionClip] = []
    missing, nan_ids = [], []
    for clip_id in clip_ids:
        motion_path, text_path = root / "new_joint_vecs" / f"{clip_id}.npy", root / "texts" / f"{clip_id}.txt"
        if not (motion_path.is_file() and text_path.is_file()):
            missing.append(clip_id)
            continue
        motion = np.load(motion_path, allow_pickle=False)
        if motion.ndim != 2 or motion.shape[1] != spec.feature_dim:
            raise ValueError(f"{motion_path} has shape {motion.shape}, expected [T, {spec.feature_dim}]")
        if np.isnan(motion).any():
            nan_ids.append(clip_id)
            continue
        motion = motion.astype(np.float32)
        whole: list[Caption] = []
        for caption, start, end in parse_text_file(text_path):
            if start == 0.0 and end == 0.0:
                whole.append(caption)
                continue
            sub = motion[int(start * spec.fps): int(end * spec.fps)]
            if keep(len(sub)):
                clips.append(MotionClip(f"{clip_id}#{start:g}#{end:g}", sub, (caption,)))
        if whole and keep(len(motion)):
            clips.append(MotionClip(clip_id, motion, tuple(whole)))
    if nan_ids:
        warnings.warn(f"skipped {len(nan_ids)} clip(s) containing NaN: {nan_ids[:10]}", stacklevel=2)
    if missing:
        warnings.warn(f"{len(missing)} id(s) of split {split!r} have no motion or text file "
                      f"(e.g. {missing[:5]}); skipped", stacklevel=2)
    return clips


class MotionTextDataset(Dataset):
    """Map-style dataset of clips; item i is clip i with one of its captions.

    Like the official loader, each access picks one of the clip's captions at random (from
    ``seed``); :meth:`pairs` enumerates every (clip, caption) pair deterministically instead.
    """

    def __init__(self, clips: Sequence[MotionClip], seed: int | None = 0) -> None:
        if not clips:
            raise ValueError("MotionTextDataset needs at least one clip (check the folder, split and length filter)")
        self.clips = list(clips)
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_folder(cls, root: str | Path, split: str, spec: DatasetSpec = HUMANML3D, seed: int | None = 0,
                    **filters) -> "MotionTextDataset":
        """Load ``split`` of a HumanML3D-layout folder (``filters`` go to :func:`load_clips`)."""
        return cls(load_clips(root, split, spec, **filters), seed)

    def __len__(self) -> int:
        return len(self.clips)

    def item(self, index: int, caption_index: int) -> MotionTextItem:
        clip = self.clips[index]
        cap = clip.captions[caption_index]
        return MotionTextItem(clip.name, clip.features, cap.text, cap.tokens, clip.length)

    def __getitem__(self, index: int) -> MotionTextItem:
        clip = self.clips[index]
        return self.item(index, int(self._rng.integers(len(clip.captions))))

    def pairs(self) -> Iterator[MotionTextItem]:
        """Every (clip, caption) pair, clips in order, captions in file order."""
        for i, clip in enumerate(self.clips):
            for j in range(len(clip.captions)):
                yield self.item(i, j)


def random_unit_crop(features: np.ndarray, rng: np.random.Generator, unit_length: int = 4,
                     max_frames: int = 196) -> np.ndarray:
    """The official real-motion crop for evaluation batches: [T, D] -> [T', D], T' a multiple of 4.

    T' = (T // 4) * 4 with probability 2/3, else (T // 4 - 1) * 4 (never more than ``max_frames``),
    at a uniformly random start.
    """
    length = min(len(features), max_frames + unit_length - 1)
    units = length // unit_length - int(rng.integers(3) == 2)
    target = min(max(units, 1) * unit_length, max_frames)
    if target > len(features):
        raise ValueError(f"clip of {len(features)} frames is shorter than one unit of {unit_length}")
    start = int(rng.integers(len(features) - target + 1))
    return features[start:start + target]


def write_folder(root: str | Path, motions: dict[str, np.ndarray], texts: dict[str, Sequence[str]],
                 splits: dict[str, Sequence[str]], mean: np.ndarray | None = None,
                 std: np.ndarray | None = None) -> Path:
    """Write a HumanML3D-layout folder: motions id -> [T, D], texts id -> lines
    (``caption#tokens#from#to``), splits name -> ids, optional Mean/Std [D]. Returns ``root``."""
    root = Path(root)
    (root / "new_joint_vecs").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for clip_id, motion in motions.items():
        np.save(root / "new_joint_vecs" / f"{clip_id}.npy", np.asarray(motion, dtype=np.float32))
    for clip_id, lines in texts.items():
        (root / "texts" / f"{clip_id}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    if mean is not None and std is not None:
        np.save(root / "Mean.npy", np.asarray(mean, dtype=np.float32))
        np.save(root / "Std.npy", np.asarray(std, dtype=np.float32))
    return root


def pad_batch(motions: Sequence[np.ndarray | Tensor], max_frames: int | None = None) -> tuple[Tensor, Tensor]:
    """Zero-pad motions [T_i, D] to one tensor [B, max(T_i) or max_frames, D] float32 + lengths [B]."""
    if not motions:
        raise ValueError("pad_batch needs at least one motion")
    lengths = torch.tensor([len(m) for m in motions], dtype=torch.long)
    frames = int(lengths.max()) if max_frames is None else max_frames
    if int(lengths.max()) > frames:
        raise ValueError(f"a motion has {int(lengths.max())} frames, more than max_frames={frames}")
    out = torch.zeros(len(motions), frames, motions[0].shape[-1], dtype=torch.float32)
    for i, m in enumerate(motions):
        out[i, : len(m)] = torch.as_tensor(np.asarray(m), dtype=torch.float32)
    return out, lengths
