"""Tests for eval.data on a synthetic HumanML3D-layout folder."""
from __future__ import annotations

import numpy as np
import pytest

from eval.data import (
    MotionTextDataset,
    load_clips,
    load_mean_std,
    pad_batch,
    parse_text_file,
    random_unit_crop,
    read_split,
    write_folder,
)

D = 263


def _motion(frames: int, value: float) -> np.ndarray:
    m = np.full((frames, D), value, dtype=np.float32)
    m[:, 0] = np.arange(frames)                       # frame index in feature 0, to check slicing
    return m


@pytest.fixture()
def folder(tmp_path):
    nan_clip = _motion(60, 2.0)
    nan_clip[5, 7] = np.nan
    motions = {"000001": _motion(60, 1.0), "000002": nan_clip, "000003": _motion(20, 3.0),
               "000004": _motion(100, 4.0), "000005": _motion(250, 5.0)}
    texts = {
        "000001": ["a man walks.#a/DET man/NOUN walk/VERB#0.0#0.0",
                   "he jumps.#he/PRON jump/VERB#0.5#3.0",          # frames 10..60 -> 50 frames
                   "too short.#too/ADV short/ADJ#0.0#1.0"],        # 20 frames: filtered out
        "000002": ["broken.#broken/ADJ#0.0#0.0"],
        "000003": ["short clip.#short/ADJ clip/NOUN#0.0#0.0"],
        "000004": ["first.#first/ADJ#0.0#0.0", "second.#second/ADJ#nan#nan"],
        "000005": ["long.#long/ADJ#0.0#0.0", "part.#part/NOUN#1.0#6.0"],
    }
    splits = {"train": ["000001", "000002", "000003", "000004", "000005", "999999"], "test": ["000004"]}
    return write_folder(tmp_path / "ds", motions, texts, splits, np.zeros(D), np.ones(D))


def test_parse_text_file(folder):
    lines = parse_text_file(folder / "texts" / "000001.txt")
    assert lines[0][0].text == "a man walks." and lines[0][0].tokens == ("a/DET", "man/NOUN", "walk/VERB")
    assert lines[1][1:] == (0.5, 3.0)
    assert parse_text_file(folder / "texts" / "000004.txt")[1][1:] == (0.0, 0.0)     # nan -> whole clip


def test_load_clips_filters_nan_subclips_and_lengths(folder):
    with pytest.warns(UserWarning) as record:
        clips = load_clips(folder, "train")
    messages = " ".join(str(w.message) for w in record)
    assert "NaN" in messages and "000002" in messages and "999999" in messages
    by_name = {c.name: c for c in clips}
    assert set(by_name) == {"000001", "000001#0.5#3", "000004", "000005#1#6"}
    sub = by_name["000001#0.5#3"]
    assert sub.length == 50 and sub.features[0, 0] == 10 and sub.features[-1, 0] == 59
    assert sub.captions[0].text == "he jumps."
    assert [c.text for c in by_name["000001"].captions] == ["a man walks."]
    assert [c.text for c in by_name["000004"].captions] == ["first.", "second."]
    assert by_name["000005#1#6"].length == 100
    assert by_name["000004"].features.dtype == np.float32


def test_length_rules(folder):
    with pytest.warns(UserWarning):
        wide = load_clips(folder, "train", min_frames=10, max_frames=300)
    assert {"000003", "000005", "000001#0#1"} <= {c.name for c in wide}
    with pytest.warns(UserWarning):
        official = load_clips(folder, "train", official_length_rule=True)
    assert "000005" not in {c.name for c in official}                # 250 >= 200 frames


def test_dataset_items(folder):
    ds = MotionTextDataset.from_folder(folder, "test", seed=0)
    assert len(ds) == 1
    item = ds[0]
    assert item.length == 100 and item.features.shape == (100, D) and item.caption in ("first.", "second.")
    seen = {ds[0].caption for _ in range(20)}
    assert seen == {"first.", "second."}
    pairs = list(ds.pairs())
    assert [p.caption for p in pairs] == ["first.", "second."] and pairs[1].tokens == ("second/ADJ",)


def test_split_and_stats(folder):
    assert read_split(folder, "test") == ["000004"]
    mean, std = load_mean_std(folder)
    assert mean.shape == (D,) and std.dtype == np.float32
    with pytest.raises(FileNotFoundError, match="val.txt"):
        read_split(folder, "val")


def test_random_unit_crop_and_pad():
    rng = np.random.default_rng(0)
    feats = _motion(199, 0.0)
    lengths = {len(random_unit_crop(feats, rng)) for _ in range(60)}
    assert lengths == {196, 192}
    crop = random_unit_crop(_motion(45, 0.0), rng)
    assert len(crop) in (44, 40) and crop[1, 0] - crop[0, 0] == 1
    x, lens = pad_batch([np.ones((5, 3)), np.ones((8, 3))], max_frames=10)
    assert x.shape == (2, 10, 3) and lens.tolist() == [5, 8] and x[0, 5:].abs().sum() == 0
    with pytest.raises(ValueError, match="max_frames"):
        pad_batch([np.ones((12, 3))], max_frames=10)
