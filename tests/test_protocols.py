"""Scenes, plans and scores of the evaluation suites (no generation: real clips stand in for it)."""
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_fixtures import build_dataset, build_evaluator  # noqa: E402

from eval import suites as S  # noqa: E402
from eval.cache import BatchCache, settings_key  # noqa: E402
from eval.evaluator import Evaluator  # noqa: E402
from eval.scenes import GROUPS, build_scenes, group_of, load_scenes, save_scenes  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("protocols")
    data = build_dataset(root / "data")
    ev = build_evaluator(root / "evaluator", data)
    test = S.SplitData.load(data)
    ref = S.Reference(test, S.Embedder(Evaluator.from_file(ev)), real_crops=16)
    return test, ref


def test_scenes_are_deterministic_and_grouped(env, tmp_path):
    test, _ = env
    a = build_scenes(test.clips, segments_per_scene=4, seed=3)
    b = build_scenes(test.clips, segments_per_scene=4, seed=3)
    c = build_scenes(test.clips, segments_per_scene=4, seed=4)
    assert a == b and a["all"] != c["all"]
    assert set(a) == set(GROUPS)
    assert len(a["all"]) == len(test.clips) // 4 and all(len(s.segments) == 4 for s in a["all"])
    for group in ("short", "medium", "long"):
        for scene in a[group]:
            assert all(group_of(seg.frames, 20.0) == group for seg in scene.segments)
    scene = a["all"][0]
    assert scene.boundaries == list(np.cumsum([s.frames for s in scene.segments])[:-1])
    path = save_scenes(tmp_path / "scenes.json", a, {"seed": 3})
    loaded, settings = load_scenes(path)
    assert loaded == a and settings == {"seed": 3}
    assert build_scenes(test.clips, 4, seed=3, num_scenes=2)["all"] == a["all"][:2]
    with pytest.raises(ValueError, match="unknown scene group"):
        build_scenes(test.clips, 4, groups=("huge",))


def test_plans_are_deterministic_and_method_independent(env):
    test, _ = env
    cfg = S.make_suite("long", samples_per_rep=50, batch_size=16, long_seconds=12)
    rows = cfg.rows(test, rep=0)
    assert rows == cfg.rows(test, rep=0) and rows != cfg.rows(test, rep=1)
    assert len(rows) == 50 and all(r.num_frames == 240 for r in rows)
    names = {c.name: c for c in test.clips}
    for r in rows:
        start, length = r.crop
        assert length == names[r.clips[0]].length and 0 <= start <= 240 - length
    assert len({r.clips[0] for r in rows[:len(test.clips)]}) == len(test.clips)   # every clip before repeats
    batches = cfg.batches(rows)
    assert [o for o, _ in batches] == [0, 16, 32, 48] and sum(len(b) for _, b in batches) == 50
    single = S.make_suite("single", samples_per_rep=8).rows(test, 0)
    assert all(r.num_frames == names[r.clips[0]].length and r.crop is None for r in single)
    compose = S.make_suite("compose", segments_per_scene=5, num_scenes=3, scenes_per_batch=2)
    scenes = compose.rows(test, 0)
    assert len(scenes) == 3 and all(len(r.segments) == 5 for r in scenes)
    assert scenes == compose.rows(test, 1)                   # same scenes in every replication
    assert [o for o, _ in compose.batches(scenes)] == [0, 2]   # scenes_per_batch rows per batch
    plan = compose.plan(test, 2)
    assert plan.rows == {0: scenes, 1: scenes} and set(plan.files) == {"scenes.json"}


def _frames(suite, method, options=None):
    return S.make_suite(suite).method_call(method, options).frame_settings(20.0)


def test_method_options():
    """The suites' protocol choices on top of each method's own defaults (1 s = 20 frames at 20 fps)."""
    def picked(call, keys=("overlap", "transition")):  # the options these suites set (the collage has more)
        return {k: v for k, v in call["options"].items() if k in keys}

    long_collage = _frames("long", "collage")
    assert (long_collage["method"], long_collage["loop"]) == ("collage", False)
    assert picked(long_collage) == {"overlap": 20, "transition": "prompt"}
    assert picked(_frames("compose", "collage")) == {"overlap": 20, "transition": "null"}
    assert _frames("loop", "average") == {"method": "average", "options": {"overlap": 20}, "loop": True}
    concat = _frames("loop", "concat")
    assert (concat["method"], concat["loop"], picked(concat)) == ("collage", False, {"overlap": 20, "transition": "null"})
    dt = _frames("compose", "doubletake")["options"]
    assert (dt["handshake"], dt["blend"]) == (20, 10)
    assert _frames("compose", "replacement", {"window": "100f"})["options"]["window"] == 100
    assert picked(_frames("long", "collage", {"overlap": 1.5})) == {"overlap": 30, "transition": "prompt"}
    assert S.make_suite("loop").default_methods == ("collage", "average", "doubletake", "concat")
    with pytest.raises(ValueError, match="cannot make a loop"):
        S.make_suite("loop").method_call("replacement")
    with pytest.raises(ValueError, match="unknown method 'concat' for the long suite"):
        S.make_suite("long").method_call("concat")
    with pytest.raises(ValueError, match="has no option 'handshake'"):
        S.make_suite("compose").method_call("doubletake", {"handshake": 20})
    with pytest.raises(ValueError, match="unknown suite"):
        S.make_suite("huge")


def _stand_in(rows, test):
    """Real features standing in for generated motions: each segment filled from its own clip."""
    names = {c.name: c for c in test.clips}
    out = []
    for r in rows:
        parts = [np.resize(names[c].features, (f, 263)) for c, (_, f) in zip(r.clips, r.segments)]
        out.append(np.concatenate(parts).astype(np.float32))
    return out


SETTINGS = dict(samples_per_rep=12, segments_per_scene=4, num_scenes=4, transition_window=20, loop_seconds=3,
                long_seconds=12, diversity_pairs=10)


@pytest.mark.parametrize("suite", ["single", "long", "compose", "loop"])
def test_scores_have_the_expected_keys(env, suite):
    test, ref = env
    cfg = S.make_suite(suite, SETTINGS)
    rows = cfg.rows(test, 0)
    scored = cfg.score(rows, _stand_in(rows, test), ref, 0)
    real = cfg.score_real(rows, ref, 0)
    base = {"top1", "top2", "top3", "mm_dist", "fid", "diversity"}
    if suite in ("single", "long"):
        assert set(scored.metrics) == base and set(real.metrics) == base and not scored.curves
        shuffled = cfg.score(S.shuffled_text(rows, cfg.seed, 0), _stand_in(rows, test), ref, 0)
        assert shuffled.metrics["fid"] == scored.metrics["fid"]
        assert shuffled.metrics["mm_dist"] != scored.metrics["mm_dist"]
        controls = cfg.controls(rows, _stand_in(rows, test), ref, 0)
        assert list(controls) == (["shuffled text"] if suite == "single" else [])
    elif suite == "compose":
        steps = {"bd_step", "bd_over", "bd_flags", "in_flags"}
        assert base | {"tr_fid", "tr_diversity", "tr_pj", "tr_auj", "transitions"} | steps == set(scored.metrics)
        assert steps <= set(real.metrics)
        assert scored.metrics["transitions"] == 4 * 3
        # a known snap: every joint moves 0.5 m along x (relative to the root) at each first boundary
        snapped = [m.copy() for m in _stand_in(rows, test)]
        for m, r in zip(snapped, rows):
            m[r.boundaries[0]:, 4:67:3] += 0.5
        snap = cfg.score(rows, snapped, ref, 0).metrics
        assert snap["bd_step"] > 0.5 > scored.metrics["bd_step"]
        assert snap["bd_over"] > scored.metrics["bd_over"]
        assert scored.curves["transition_jerk"].shape == (17,) and real.curves["transition_jerk"].shape == (17,)
    else:
        assert {"seam_pj", "interior_pj", "seam_auj", "interior_fid", "seam_jerk_peak"} <= set(scored.metrics)
        assert scored.curves["seam_jerk"].shape == (17,)
    assert all(np.isfinite(v) for v in scored.metrics.values())
    again = cfg.score(rows, _stand_in(rows, test), ref, 0)
    assert again.metrics == scored.metrics


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")       # identical motions: singular covariance
def test_loop_seam_of_a_real_loop_is_smooth(env):
    """A periodic motion has no seam; a plain end-to-start join of an open motion does."""
    test, ref = env
    cfg = S.make_suite("loop", samples_per_rep=4, transition_window=20, loop_seconds=3, diversity_pairs=4)
    rows = cfg.rows(test, 0)
    t = np.arange(60)
    smooth = np.zeros((60, 263), np.float32)
    smooth[:, 3] = 0.9
    smooth[:, 4:67] = 0.1 * np.sin(2 * np.pi * t / 60)[:, None]
    jump = smooth.copy()
    jump[:, 4:67] = 0.1 * (t / 60.0)[:, None]                   # ramps up, then snaps back at the seam
    s = cfg.score(rows, [smooth] * 4, ref, 0).metrics
    j = cfg.score(rows, [jump] * 4, ref, 0).metrics
    assert j["seam_pj"] > 10 * j["interior_pj"]
    assert s["seam_pj"] < 2 * s["interior_pj"] + 1e-9
    assert j["seam_step"] > 5 * s["seam_step"]  # the 0.17 m snap back at the seam vs a smooth 0.02 m


def test_derangement_and_cache(tmp_path):
    rng = np.random.default_rng(0)
    for n in (2, 3, 10):
        p = S.derangement(n, rng)
        assert sorted(p) == list(range(n)) and not (p == np.arange(n)).any()
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1}) != settings_key({"a": 2})
    cache = BatchCache(tmp_path)
    key = settings_key({"x": 1})
    assert cache.load(key) is None
    cache.save(key, np.ones((2, 5, 3)), [5, 4], {"k": "v"})
    e = cache.load(key)
    assert e["features"].shape == (2, 5, 3) and e["frames"].tolist() == [5, 4] and e["meta"] == {"k": "v"}
    assert cache.entries() == [cache.path(key)] and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("content, error, message", [
    (None, FileNotFoundError, "not found"),
    ("{oops", ValueError, "is not JSON"),
    ('[1, 2]', ValueError, "has format 'list'"),
    ('{"format": "other"}', ValueError, "has format 'other'"),
    ('{"format": "motion-collage-scenes-1"}', ValueError, "malformed (KeyError"),
    ('{"format": "motion-collage-scenes-1", "groups": {"all": [{"name": "s", "segments": []}]}}', ValueError,
     "has no segment"),
    ('{"format": "motion-collage-scenes-1", "groups": {"all": [{"name": "s", "segments": '
     '[{"text": "a", "tokens": [], "frames": true, "clip": "c"}]}]}}', ValueError, "frames must be a whole number"),
    ('{"format": "motion-collage-scenes-1", "groups": {"all": [{"name": "s", "segments": '
     '[{"text": 3, "tokens": [], "frames": 40, "clip": "c"}]}]}}', ValueError, "must be strings"),
])
def test_bad_scene_files_are_one_line_errors(tmp_path, content, error, message):
    path = tmp_path / "scenes.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error) as err:
        load_scenes(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_compose_checks_its_scenes_before_generating(env, tmp_path):
    test, _ = env
    scenes = build_scenes(test.clips, 3, seed=0, num_scenes=2)
    good = save_scenes(tmp_path / "good.json", scenes)
    suite = S.make_suite("compose", scenes=str(good), num_scenes=2, transition_window=20)
    plan = suite.plan(test, 2)
    assert plan.files == {} and plan.notes == {"scenes": str(good)} and len(plan.rows[1]) == 2
    with pytest.raises(ValueError, match="has no group 'short'"):
        S.make_suite("compose", scenes=str(save_scenes(tmp_path / "all.json", {"all": scenes["all"]})),
                     scene_group="short").plan(test, 1)
    other = S.SplitData([c for c in test.clips if c.name != scenes["all"][0].segments[0].clip], test.spec, "x")
    with pytest.raises(ValueError, match="which is not in split 'test' of x"):
        suite.plan(other, 1)
    long_clip = dataclasses.replace(test.clips[0], name="long", features=np.zeros((200, 263), np.float32))
    with pytest.raises(ValueError, match="no transition window of 200 frames fits"):
        S.make_suite("compose", scenes=str(good), transition_window=200).plan(S.SplitData(test.clips + [long_clip]), 1)
