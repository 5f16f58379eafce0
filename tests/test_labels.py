"""eval.labels: label grouping, retrieval with a label-aware evaluator, amplitude, batching, the CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_fixtures import CAPTIONS, build_dataset, build_evaluator  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

from eval import labels as L  # noqa: E402
from eval.data import load_clips  # noqa: E402

# bench_fixtures gives clip n the sinusoid band k = n % 5 (dims 20k .. 20k + 20)
BAND_LABELS = ["walk", "run", "wave-right-hand", "kick", "bow"]
assert len(BAND_LABELS) == len(CAPTIONS)


def labelled_dataset(root: Path, test_clips: int = 10) -> Path:
    """The benchmark fixture plus a labels.tsv naming each clip's band by a content label."""
    data = build_dataset(root, test_clips=test_clips)
    ids = sorted(p.stem for p in (data / "new_joint_vecs").glob("*.npy"))
    rows = [f"{i}\tdataset-x\t{BAND_LABELS[int(i) % 5]}\tnormal\n" for i in ids]
    (data / "labels.tsv").write_text("clip\tdataset\tcontent\tstyle\n" + "".join(rows))
    return data


class BandEmbedder:
    """A label-aware fake evaluator: a motion embeds as the one-hot of its most varying band, a
    caption as the one-hot of its label (so real clips are retrieved perfectly)."""

    def __init__(self, captions: dict[str, str]) -> None:
        self.index = {caption: BAND_LABELS.index(label) for label, caption in captions.items()}

    def motions(self, motions):
        out = np.zeros((len(motions), 5))
        for n, m in enumerate(motions):
            energy = [np.var(m[:, 20 * k:20 * k + 20], axis=0).sum() for k in range(5)]
            out[n, int(np.argmax(energy))] = 1.0
        return out

    def texts(self, captions):
        return np.eye(5)[[self.index[c] for c in captions]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return labelled_dataset(tmp_path_factory.mktemp("data"))


def test_labels_group_the_test_clips(data):
    clip_labels = L.read_labels(data)
    captions = L.label_captions(sorted(set(clip_labels.values())))
    assert list(captions) == ["walk", "run", "bow", "kick", "wave-right-hand"]        # template order
    assert captions["kick"] == "a person kicks" and captions["walk"] == "a person walks forward"
    groups = L.group_clips(load_clips(data, "test", min_frames=L.REAL_MIN_FRAMES), clip_labels, list(captions))
    assert {k: sorted(c.name for c in v) for k, v in groups.items()} == {
        "walk": ["000000", "000005"], "run": ["000001", "000006"], "wave-right-hand": ["000002", "000007"],
        "kick": ["000003", "000008"], "bow": ["000004", "000009"]}
    assert L.choose_labels(list(captions), ["kick", "kick", "run"]) == ["kick", "run"]
    with pytest.raises(L.UsageError, match="unknown label 'jump'; the data's labels are: walk, run, bow"):
        L.choose_labels(list(captions), ["jump"])


def test_real_clips_are_retrieved_by_a_label_aware_evaluator(data):
    clip_labels = L.read_labels(data)
    captions = L.label_captions(sorted(set(clip_labels.values())))
    real = L.group_clips(load_clips(data, "test", min_frames=L.REAL_MIN_FRAMES), clip_labels, list(captions))
    # "generated" = the real clips of the next band: never its own caption first, and with
    # one-hot distances every other caption ties, so top-3 still counts it
    shifted = {label: [c.features for c in real[BAND_LABELS[(BAND_LABELS.index(label) + 1) % 5]]]
               for label in captions}
    results = {r.label: r for r in L.score_labels(BandEmbedder(captions), captions, real, shifted)}
    for label, r in results.items():
        assert (r.real_clips, r.samples) == (2, 2)
        assert r.real["top1"] == r.real["top3"] == 1.0, label
        assert r.generated["top1"] == 0.0 and r.generated["top3"] == 1.0, label
        assert r.verdict == "ok"
    # same motions as the real clips of their own label: every figure's ratio is 1
    same = {label: [c.features for c in real[label]] for label in captions}
    for r in L.score_labels(BandEmbedder(captions), captions, real, same):
        assert r.generated == r.real and r.ratio("amplitude") == pytest.approx(1.0)


def test_caption_ranks_count_strictly_closer_captions():
    motion = np.array([[0.0, 0.0], [1.0, 0.0]])
    caps = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.5]])
    assert L.caption_ranks(motion, caps, [2, 1]).tolist() == [3, 0]


def test_local_joint_speed_is_speed_relative_to_the_root():
    fps, T = 20.0, 30
    t = np.arange(T) / fps
    joints = np.zeros((T, 22, 3))
    joints[:, :, 2] += 1.4 * t[:, None]                 # everything walks forward at 1.4 m/s ...
    assert L.local_joint_speed(joints, fps) == pytest.approx(0.0, abs=1e-12)
    joints[:, 21, 1] += 0.42 * t                        # ... and one hand rises at 0.42 m/s
    assert L.local_joint_speed(joints, fps) == pytest.approx(0.42 / 21)
    figures = L.motion_figures([joints])
    assert figures["amplitude"] == pytest.approx(0.02) and figures["jerk"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"joints must be \[T >= 2, J, 3\]"):
        L.local_joint_speed(joints[:1], fps)


def test_generation_is_batched_and_rows_do_not_depend_on_the_batch(tmp_path):
    import mdm_adapter

    model = mdm_adapter.load(build_tiny_model(tmp_path / "model"))
    prompts = {"walk": "a person walks forward", "bow": "a person bows"}
    calls = []
    one = L.generate_labels(model, prompts, 3, 10, steps=2, batch_size=64, on_batch=calls.append)
    small = L.generate_labels(model, prompts, 3, 10, steps=2, batch_size=4)
    assert calls == [6] and [len(v) for v in one.values()] == [3, 3]
    assert all(m.shape == (10, 263) for v in one.values() for m in v)
    for label in prompts:
        for a, b in zip(one[label], small[label]):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(one["walk"][0], one["walk"][1])         # each row its own noise


def test_edit_rows_keep_the_part_and_take_the_clip_length(tmp_path):
    import mdm_adapter
    from motion_collage.constraints import ConstraintRequest, KnownMotion, kept_mask

    model = mdm_adapter.load(build_tiny_model(tmp_path / "model"))
    rng = np.random.default_rng(3)
    clip = model.model_stats.denormalize(rng.normal(size=(14, 263)))
    request = ConstraintRequest("edit", Path("clip.npy"), None, "lower_body", 0)
    out = L.generate_labels(model, {"walk": "a person walks forward", "bow": "a person bows"}, 2, 10, steps=2,
                            edit=(request, KnownMotion(clip, "clip.npy")))
    keep = kept_mask(model.spec, "lower_body")
    for motions in out.values():
        for m in motions:
            assert m.shape == (14, 263)
            np.testing.assert_allclose(m[:, keep], clip[:, keep], atol=1e-4, rtol=1e-5)
            assert not np.allclose(m[:, ~keep], clip[:, ~keep], atol=1e-2)
    assert not np.allclose(out["walk"][0][:, ~keep], out["bow"][0][:, ~keep])


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("cli")
    return {"data": data, "model": build_tiny_model(root / "model").parent,
            "evaluator": build_evaluator(root / "evaluator", data)}


def _argv(setup, out, *extra):
    return ["--out", str(out), "--model_path", str(setup["model"]), "--evaluator", str(setup["evaluator"]),
            "--data", str(setup["data"]), "--samples", "2", "--steps", "1", "--frames", "2", "--sheet_samples", "1",
            "--sheet_real", "1", "--seconds", "1", "--threads", "1", "--no_progress", *extra]


def test_cli_writes_table_json_and_sheets(tmp_path, setup, capsys):
    out = tmp_path / "out"
    assert L.main(_argv(setup, out, "--labels", "walk", "kick")) == 0
    assert "2 labels checked" in capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    assert list(payload["labels"]) == ["walk", "kick"] and len(payload["settings"]["captions"]) == 5
    walk = payload["labels"]["walk"]
    assert walk["real_clips"] == 2 and walk["samples"] == 2 and 0 <= walk["generated"]["top3"] <= 1
    assert walk["real"]["amplitude"] > 0 and walk["ratios"]["amplitude"] > 0
    md = (out / "results.md").read_text()
    assert "| walk | 2 |" in md and "| kick | 2 |" in md and "among the 5 label captions" in md
    from PIL import Image
    for label in ("walk", "kick"):
        w, h = Image.open(out / "sheets" / f"{label}.png").size
        assert w == 2 * 256 and h > 2 * 192                   # 2 frames of 256 px, a real and a generated row
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]          # no temporary left


def test_cli_edit_keeps_the_clip_part(tmp_path, setup, capsys):
    clip = np.random.default_rng(5).normal(size=(24, 263)).astype(np.float32)
    np.save(tmp_path / "features.npy", clip)
    out = tmp_path / "out"
    assert L.main(_argv(setup, out, "--labels", "walk", "--edit", "lower_body", f"{tmp_path / 'features.npy'}:2-22")) == 0
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["frames"] == 20 and settings["edit"]["part"] == "lower_body" and settings["edit"]["frames"] == [2, 22]
    assert "keeps the lower body of `features.npy`" in (out / "results.md").read_text()


@pytest.mark.parametrize("case, match", [
    ("missing data", "--data .*nowhere is not a folder"),
    ("unknown label", "unknown label 'jump'; the data's labels are: walk, run, bow, kick, wave-right-hand"),
    ("no labels.tsv", "labels.tsv not found; the data folder must be built by python -m prepare"),
    ("out exists", "output folder .* exists; pass --overwrite"),
    ("samples 0", "--samples 0 is out of range; expected 1 to 1000"),
    ("edit part", "--edit: unknown body part 'arms'"),
    ("edit file", "nothing.npy"),
])
def test_cli_mistakes_are_one_line(tmp_path, setup, capsys, case, match):
    import re
    import shutil
    out = tmp_path / "out"
    argv = _argv(setup, out)
    if case == "missing data":
        argv[argv.index("--data") + 1] = str(tmp_path / "nowhere")
    elif case == "unknown label":
        argv += ["--labels", "walk", "jump"]
    elif case == "no labels.tsv":
        copy = tmp_path / "data"
        shutil.copytree(setup["data"], copy)
        (copy / "labels.tsv").unlink()
        argv[argv.index("--data") + 1] = str(copy)
    elif case == "out exists":
        out.mkdir()
    elif case == "samples 0":
        argv[argv.index("--samples") + 1] = "0"
    elif case == "edit part":
        argv += ["--edit", "arms", str(tmp_path / "nothing.npy")]
    elif case == "edit file":
        argv += ["--edit", "upper_body", str(tmp_path / "nothing.npy")]
    assert L.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and re.search(match, err), err
    assert not out.exists() or case == "out exists"
