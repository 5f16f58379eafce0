"""Protocol presets (eval.suites.presets), MultiModality in the single suite, FlowMDM's scene files."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_fixtures import CAPTIONS, build_dataset, build_evaluator  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

from eval import benchmark as B  # noqa: E402
from eval import metrics as M  # noqa: E402
from eval.evaluator import Evaluator  # noqa: E402
from eval.suites import Embedder, Reference, SplitData, make_suite  # noqa: E402
from eval.suites.flowmdm import load_flowmdm_scenes  # noqa: E402
from eval.suites.presets import PRESETS, checkpoint_padding, resolve  # noqa: E402
from eval.suites.scoring import MM_PAIRS, rng_for  # noqa: E402
from motion_core import defaults  # noqa: E402

# The published protocols, as documented in eval/suites/presets.py and the README (source of each
# value in the comment). A change to a preset must change this table and the documentation.
DOCUMENTED = {
    "mdm": {   # MDM eval/eval_humanml.py (+ model_motion_loaders, comp_v6_model_dataset)
        "suite": "single", "replications": 20, "sampler": "ddpm", "guidance_param": 2.5,
        "samples_per_rep": 1024, "batch_size": 32, "r_precision_batch": 32, "diversity_pairs": 300,
        "lengths": "unit", "padding": "checkpoint", "mm_batches": 4, "mm_repeats": 30, "mm_pairs": 10},
    "diffcollage": {   # DiffCollage Table 3
        "suite": "long", "replications": 20, "sampler": "ddim", "steps": 50, "eta": 0.0, "guidance_param": 2.5,
        "long_seconds": 24.0, "samples_per_rep": 1024, "batch_size": 32, "diversity_pairs": 300},
    "flowmdm": {   # FlowMDM runners/eval.py --eval_mode final, utils/metrics.py
        "suite": "compose", "replications": 10, "sampler": "ddpm", "guidance_param": 2.5,
        "transition_window": 60, "real_jerk": 0.033031363, "diversity_pairs": 300, "segments_per_scene": 32},
    "ours": {"suite": None, "replications": 5, "sampler": defaults.SAMPLER, "steps": defaults.STEPS,
             "eta": defaults.ETA, "guidance_param": defaults.GUIDANCE},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    data = build_dataset(root / "data", test_clips=24)
    evaluator = build_evaluator(root / "evaluator", data)
    return {"root": root, "data": data, "evaluator": evaluator, "model": build_tiny_model(root / "model")}


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_each_preset_holds_its_documented_settings(name):
    preset = PRESETS[name]
    documented = dict(DOCUMENTED[name])
    assert preset.suite == documented.pop("suite")
    values = preset.values()
    assert {k: values[k] for k in documented} == documented
    if preset.suite is not None:
        make_suite(preset.suite, values)                    # every value is a valid setting of its suite
    assert preset.source                                   # a source is stated


def test_the_mdm_preset_pads_to_196_frames_and_repeats_four_batches(env):
    data = SplitData.load(env["data"])
    values = resolve("mdm", None, {}).values
    suite = make_suite("single", {**values, "padding": "attended"})
    rows = suite.rows(data, rep=0)
    assert len(rows) == 1024 + 4 * 32 * 29                  # captions + MultiModality repeats
    assert {r.num_frames for r in rows} == {196}
    crops = [r.crop for r in rows[:1024]]
    assert all(c[0] == 0 and c[1] % 4 == 0 and 4 <= c[1] <= 196 for c in crops)
    by_name = data.by_name()
    assert all(c[1] <= by_name[r.clips[0]].length for r, c in zip(rows, crops))
    groups = suite.mm_groups(0)
    assert np.array(groups).shape == (128, 30)
    assert all(rows[g[0]] == rows[i] for g in groups for i in g)      # every generation of a caption is its row
    assert [len(b) for _, b in suite.batches(rows)] == [32] * (32 + 4 * 29)


def test_explicit_flags_win_and_the_run_is_named_modified():
    r = resolve("mdm", "single", {"replications": 5, "steps": None})
    assert r.values["replications"] == 5 and r.values["steps"] == 1000
    assert r.label() == "mdm (modified: replications 5)"
    assert resolve("mdm", None, {"replications": 20}).label() == "mdm"
    assert resolve(None, "long", {"replications": 3}).label() == "ours"


@pytest.mark.parametrize("protocol, suite, given, message", [
    ("mdm", "long", {}, "protocol 'mdm' is defined for the single suite, not long; use --suite single"),
    ("ours", None, {}, "protocol 'ours' runs any suite; pass --suite (one of ['single', "),
    ("flowmdm", None, {}, "protocol 'flowmdm' needs --scenes FILE: FlowMDM's scene file"),
    ("paper", None, {}, "unknown protocol 'paper'; expected one of ['mdm', 'diffcollage', 'flowmdm', 'ours']"),
])
def test_a_wrong_protocol_is_a_value_error(protocol, suite, given, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        resolve(protocol, suite, given)


def test_flowmdm_diversity_follows_its_scene_groups():
    assert resolve("flowmdm", None, {"scenes": "x", "scene_group": "short"}).values["diversity_pairs"] == 175
    assert resolve("flowmdm", None, {"scenes": "x", "scene_group": "medium"}).values["diversity_pairs"] == 275
    assert resolve("flowmdm", None, {"scenes": "x"}).values["diversity_pairs"] == 300


def test_checkpoint_padding_reads_mask_frames(env, tmp_path):
    assert checkpoint_padding(env["model"]) == "masked"            # the tiny model is trained with a mask
    old = tmp_path / "old"
    shutil.copytree(Path(env["model"]).parent if Path(env["model"]).is_file() else env["model"], old)
    args = json.loads((old / "args.json").read_text())
    (old / "args.json").write_text(json.dumps({**args, "mask_frames": False}))
    assert checkpoint_padding(old) == "attended"                   # MDM's 2022 models


# --------------------------------------------------------------------------------------------
# MultiModality
# --------------------------------------------------------------------------------------------

def _reference(env):
    data = SplitData.load(env["data"])
    return data, Reference(data, Embedder(Evaluator.from_file(env["evaluator"])))


def test_multimodality_is_the_release_definition_on_the_repeats(env):
    data, ref = _reference(env)
    suite = make_suite("single", samples_per_rep=16, batch_size=4, diversity_pairs=8, mm_batches=2, mm_repeats=3,
                       mm_pairs=2)
    rows = suite.rows(data, rep=1)
    assert len(rows) == 16 + 2 * 4 * 2
    rng = np.random.default_rng(5)
    motions = [0.05 * rng.normal(size=(r.num_frames, 263)) for r in rows]
    scored = suite.score(rows, motions, ref, rep=1)
    groups = np.array(suite.mm_groups(1))
    emb = ref.embedder.motions([motions[i] for i in groups.reshape(-1)]).reshape(8, 3, -1)
    from eval.suites.scoring import MM_PAIRS, rng_for
    assert scored.metrics["multimodality"] == pytest.approx(M.multimodality(emb, 2, rng_for(suite.seed, 1, MM_PAIRS)))
    assert scored.metrics["multimodality"] > 0
    same = list(motions)
    for g in groups:
        for i in g[1:]:
            same[i] = motions[g[0]]
    assert suite.score(rows, same, ref, rep=1).metrics["multimodality"] == pytest.approx(0.0, abs=1e-6)   # float32 batches
    plain = make_suite("single", samples_per_rep=16, batch_size=4, diversity_pairs=8)
    assert scored.metrics["top3"] == plain.score(rows[:16], motions[:16], ref, rep=1).metrics["top3"]


@pytest.mark.parametrize("settings, message", [
    ({"mm_batches": 9, "samples_per_rep": 32, "batch_size": 4}, "mm_batches 9 exceeds the 8 batches"),
    ({"mm_repeats": 1}, "mm_repeats must be a whole number >= 2"),
    ({"mm_pairs": 31}, "mm_pairs must be a whole number from 1 to 30"),
    ({"padding": "zeros"}, "unknown padding 'zeros'"),
])
def test_bad_multimodality_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        make_suite("single", settings)


# --------------------------------------------------------------------------------------------
# FlowMDM's scene files
# --------------------------------------------------------------------------------------------

def _flowmdm_file(path, scenes):
    path.write_text(json.dumps(scenes, indent=1))
    return path


def test_flowmdm_scene_file_is_read(env, tmp_path):
    data = SplitData.load(env["data"])
    texts = [c for c, _ in CAPTIONS]
    path = _flowmdm_file(tmp_path / "humanml_test_set.json", [
        {"id": 0, "text": texts[:3], "lengths": [40, "52", 61], "scenario": "short"},
        {"id": 1, "text": [texts[3], "  A person   RUNS "], "lengths": [70, 80], "scenario": "medium"},
    ])
    scenes = load_flowmdm_scenes(path, data)
    assert [s.name for s in scenes] == ["short-0", "medium-1"]
    assert scenes[0].rows == [(texts[0], 40), (texts[1], 52), (texts[2], 61)]
    assert scenes[1].segments[1].tokens == tuple(CAPTIONS[1][1].split())      # matched ignoring case/spaces
    assert all(s.clip in data.by_name() for sc in scenes for s in sc.segments)
    assert [s.name for s in load_flowmdm_scenes(path, data, "medium")] == ["medium-1"]
    single = _flowmdm_file(tmp_path / "composition_humanml.json", {"text": texts[:2], "lengths": [45, 50]})
    assert load_flowmdm_scenes(single, data)[0].rows == [(texts[0], 45), (texts[1], 50)]

    suite = make_suite("compose", scenes=str(path), transition_window=20, diversity_pairs=4)
    plan = suite.plan(data, replications=2)
    assert [r.segments for r in plan.rows[0]] == [tuple(s.rows) for s in scenes]
    assert plan.rows[0][0].boundaries == [40, 92]


@pytest.mark.parametrize("scenes, message", [
    ([{"id": 3, "text": ["a person swims"], "lengths": [50]}], "scene '3' of .*: segment 0 caption 'a person swims' "
                                                                "is not a caption of the test split"),
    ([{"text": ["a person runs"], "lengths": [50, 60]}], "has 1 captions but 2 lengths"),
    ([{"text": ["a person runs"], "lengths": [0]}], "every length must be a whole number of frames >= 1, got 0"),
    ([{"text": ["a person runs"], "lengths": [True]}], "got True"),
    ([{"text": [], "lengths": []}], "text must be a non-empty list of captions"),
    ([{"text": ["a person runs"], "lengths": [50], "scenario": "long"}], "has no scene of scenario 'short'"),
])
def test_bad_flowmdm_files_are_one_line(env, tmp_path, scenes, message):
    data = SplitData.load(env["data"])
    path = _flowmdm_file(tmp_path / "s.json", scenes)
    group = "short" if "scenario" in scenes[0] else "all"
    with pytest.raises(ValueError, match=message) as e:
        load_flowmdm_scenes(path, data, group)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# The benchmark names its protocol
# --------------------------------------------------------------------------------------------

def test_a_protocol_run_names_its_protocol(env, tmp_path):
    out = tmp_path / "mdm"
    argv = ["--protocol", "mdm", "--model_path", str(env["model"]), "--evaluator", str(env["evaluator"]),
            "--replications", "1", "--samples_per_rep", "8", "--batch_size", "4", "--diversity_pairs", "4",
            "--mm_batches", "1", "--mm_repeats", "2", "--mm_pairs", "2", "--sampler", "ddim", "--steps", "2",
            "--threads", "1", "--device", "cpu", "--no_progress", "--no_controls", "--output_dir", str(out)]
    assert B.main(argv) == 0
    md, log = (out / "results.md").read_text(), (out / "run.log").read_text()
    label = ("mdm (modified: replications 1, sampler ddim, steps 2, samples_per_rep 8, batch_size 4, "
             "diversity_pairs 4, mm_batches 1, mm_repeats 2, mm_pairs 2)")
    assert f"Protocol `{label}`" in md and f"protocol: {label}" in log
    assert "| multimodality |" in md
    payload = json.loads((out / "results.json").read_text())
    assert payload["preset"]["name"] == "mdm" and payload["preset"]["modified"]["replications"]["preset"] == 20
    assert payload["protocol"]["padding"] == "masked" and payload["protocol"]["lengths"] == "unit"
    assert np.isfinite(payload["results"]["collage"]["multimodality"]["mean"])
    assert "multimodality" not in payload["results"]["real"]


def test_a_protocol_for_another_suite_is_one_line(env, tmp_path, capsys):
    out = tmp_path / "x"
    code = B.main(["--protocol", "mdm", "--suite", "long", "--model_path", str(env["model"]), "--evaluator",
                   str(env["evaluator"]), "--output_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("error: protocol 'mdm' is defined for the single suite, not long; use --suite single "
                                 "or drop --protocol")
    assert not out.exists()


def test_flowmdm_r_precision_rule():
    from eval.suites.flowmdm import flowmdm_matching
    rng = np.random.default_rng(0)
    text, motion = rng.normal(size=(64, 5)), rng.normal(size=(64, 5))
    names = [f"caption {i}" for i in range(64)]
    r, mm = flowmdm_matching(text, motion, names, [5] * 64, 32)
    plain = M.matching_scores(text, motion, 32)
    assert np.allclose(r, plain.r_precision) and mm == pytest.approx(plain.mm_dist)   # distinct, full batches
    r, mm = flowmdm_matching(text[:40], motion[:40], names[:40], [5] * 40, 32)
    assert mm == pytest.approx(M.mm_dist(text[:40], motion[:40]))                     # the last 8 pairs count
    tail = M.r_precision_counts(text[32:40], motion[32:40])
    assert np.allclose(r * 40, M.r_precision_counts(text[:32], motion[:32]) + tail)
    dup = ["a", "a", "b", "c"]                  # one "a" is ranked; counts scaled by 4 / 3
    r, _ = flowmdm_matching(text[:4], motion[:4], dup, [5] * 4, 4)
    keep = [0, 2, 3]
    assert np.allclose(r * 4, M.r_precision_counts(text[keep], motion[keep]) * 4 / 3)


def test_the_flowmdm_preset_scores_segments_by_its_rule(env, tmp_path):
    data, ref = _reference(env)
    texts = [c for c, _ in CAPTIONS]
    path = _flowmdm_file(tmp_path / "s.json", [{"id": i, "text": texts, "lengths": [40, 44, 48, 52, 56]}
                                                for i in range(3)])
    values = resolve("flowmdm", None, {"scenes": str(path), "transition_window": 20, "diversity_pairs": 6}).values
    suite = make_suite("compose", values)
    assert suite.r_precision == "flowmdm" and suite.real_jerk == 0.033031363
    rows = suite.rows(data, 0)
    rng = np.random.default_rng(1)
    motions = [0.05 * rng.normal(size=(r.num_frames, 263)) for r in rows]
    out = suite.score(rows, motions, ref, 0).metrics
    plain = make_suite("compose", {**values, "r_precision": "batches"}).score(rows, motions, ref, 0).metrics
    assert out["fid"] == plain["fid"] and out["tr_fid"] == plain["tr_fid"]
    assert out["top1"] != plain["top1"] or out["mm_dist"] != plain["mm_dist"]   # 15 segments, 5 distinct captions


def test_a_flowmdm_run_reads_its_scene_file(env, tmp_path):
    texts = [c for c, _ in CAPTIONS]
    path = _flowmdm_file(tmp_path / "humanml_test_set.json",
                         [{"id": i, "text": texts[i:i + 3], "lengths": [40, 48, 44], "scenario": "short"}
                          for i in range(2)])
    out = tmp_path / "flowmdm"
    argv = ["--protocol", "flowmdm", "--scenes", str(path), "--methods", "collage", "--model_path", str(env["model"]),
            "--evaluator", str(env["evaluator"]), "--replications", "1", "--sampler", "ddim", "--steps", "2",
            "--transition_window", "20", "--diversity_pairs", "4", "--threads", "1", "--device", "cpu",
            "--no_progress", "--output_dir", str(out)]
    assert B.main(argv) == 0
    md = (out / "results.md").read_text()
    assert "Protocol `flowmdm (modified: replications 1, sampler ddim, steps 2, transition_window 20, " \
           "diversity_pairs 4)`" in md
    assert "AUJ reference jerk 0.0330" in md and "| collage |" in md
    payload = json.loads((out / "results.json").read_text())
    assert payload["protocol"]["r_precision"] == "flowmdm" and payload["protocol"]["real_jerk"] == 0.033031363
    assert payload["results"]["collage"]["transitions"]["values"] == [4.0]          # 2 scenes x 2 boundaries
