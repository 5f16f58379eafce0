"""Constrained collage: body-part masks from the spec, anchored root trajectories, known frames
reproduced exactly (features and joints) for every mode on chains and cycles, one network call
per step, and one-line errors for bad constraints."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from motion_core.normalization import ModelStats  # noqa: E402
from motion_core.spec import HUMANML3D, KIT, feature_slices  # noqa: E402
from motion_collage.constraints import (ConstraintApplier, ConstraintRequest, KnownMotion, KnownPrompt,  # noqa: E402
                                        borders, build_constraint, feature_joints, load_known_motion,
                                        kept_mask, make_constraint, margin_weights, parse_request, part_joints,
                                        part_mask)
from motion_collage.representation import features_to_joints  # noqa: E402
from motion_collage.sample import main  # noqa: E402

BANDAI_WALK = (Path(__file__).resolve().parents[2] / "shared" / "data" / "bandai-namco-sample" / "dataset-2" / "data"
               / "dataset-2_walk-turn-left_normal_001.bvh")


# ----------------------------------------------------------------------------------- body parts

def test_body_parts_partition_every_feature_and_follow_the_chains():
    parts = part_joints(HUMANML3D)
    assert parts["lower_body"] == (0, 1, 2, 4, 5, 7, 8, 10, 11)  # pelvis, hips, knees, ankles, feet
    assert set(parts["upper_body"]) == set(range(22)) - set(parts["lower_body"])
    lower, upper = part_mask(HUMANML3D, "lower_body"), part_mask(HUMANML3D, "upper_body")
    assert not (lower & upper).any() and (lower | upper).all()
    s = feature_slices(HUMANML3D)
    for name in ("root_rot_vel", "root_lin_vel", "root_y", "foot_contact"):
        assert lower[s[name]].all(), name
    # 13 upper joints x (3 ric + 6 rot + 3 velocity); the root 4 + its velocity 3 + 8 leg joints x 12 + 4 contacts
    assert upper.sum() == 13 * 12 and lower.sum() == 4 + 3 + 8 * 12 + 4
    joints = feature_joints(HUMANML3D)
    assert list(joints[s["ric"]][:3]) == [1, 1, 1] and joints[s["rot"].start + 6] == 2
    assert list(joints[s["local_vel"]][-3:]) == [21, 21, 21]
    kit = part_mask(KIT, "lower_body") ^ part_mask(KIT, "upper_body")
    assert kit.all() and kit.shape == (251,)
    with pytest.raises(ValueError, match="unknown body part"):
        part_mask(HUMANML3D, "arms")


def test_a_kept_part_without_the_root_does_not_keep_its_velocities():
    """local_vel are world-frame differences: they carry the root's travel, so keeping a standing
    upper body's would forbid generated legs to walk (measured: 0.03 m of travel in 6.7 s)."""
    s = feature_slices(HUMANML3D)
    upper, lower = kept_mask(HUMANML3D, "upper_body"), kept_mask(HUMANML3D, "lower_body")
    assert not upper[s["local_vel"]].any() and upper.sum() == 13 * 9  # ric + rot of 13 joints
    np.testing.assert_array_equal(lower, part_mask(HUMANML3D, "lower_body"))  # the root is kept: all of it
    assert (upper & part_mask(HUMANML3D, "upper_body") == upper).all()


# ----------------------------------------------------------------------------------- anchoring

def _random_clip(rng, frames: int) -> np.ndarray:
    clip = rng.standard_normal((frames, 263)) * 0.05
    clip[:, 0] = rng.uniform(-0.05, 0.05, frames)  # turning
    clip[:, 2] = 0.07 + 0.01 * rng.standard_normal(frames)  # walking forward
    return clip


def test_anchored_gaps_land_the_known_frames_on_the_given_joints():
    """Any x0 in the gaps: after the constraint the known frames' joints are the clip's."""
    rng = np.random.default_rng(0)
    stats = ModelStats(rng.standard_normal(263) * 0.01, np.full(263, 0.05))
    clip = _random_clip(rng, 90)
    c = make_constraint(clip, [(0, 0, 10), (40, 40, 1), (70, 70, 20)], 90, HUMANML3D)
    assert [(a, b) for a, b, *_ in c.anchors()] == [(10, 40), (41, 70)]
    x0 = torch.randn(2, 90, 263, dtype=torch.float64)
    out = ConstraintApplier([c, None], 90, stats)(x0)
    np.testing.assert_array_equal(out[1].numpy(), x0[1].numpy())  # a row without constraint is untouched
    feats = stats.denormalize(out[0].numpy())
    known = c.mask.any(-1)
    np.testing.assert_allclose(feats[known], clip[known], atol=1e-6)
    j, ref = features_to_joints(feats, HUMANML3D), features_to_joints(clip, HUMANML3D)
    np.testing.assert_allclose(j[known], ref[known], atol=1e-4)
    assert np.abs(j[~known] - ref[~known]).max() > 0.1  # the gaps are the model's, not the clip's
    # a leading gap is anchored at the origin: keyframes only
    c2 = make_constraint(clip, [(30, 30, 1), (60, 60, 1)], 90, HUMANML3D)
    j2 = features_to_joints(stats.denormalize(ConstraintApplier([c2], 90, stats)(x0[:1])[0].numpy()), HUMANML3D)
    np.testing.assert_allclose(j2[[30, 60]], ref[[30, 60]], atol=1e-4)
    assert borders(c) == [10, 40, 41, 70]


def test_a_soft_margin_eases_the_neighbours_and_keeps_the_known_frames_exact():
    rng = np.random.default_rng(1)
    stats = ModelStats(np.zeros(263), np.ones(263))
    clip = _random_clip(rng, 40)
    c = make_constraint(clip, [(20, 20, 1)], 40, HUMANML3D, margin=3)
    weight, source = margin_weights(c, 3)
    np.testing.assert_allclose(weight[17:24], [0.5 * (1 + np.cos(np.pi * d / 4)) if d else 0
                                               for d in (3, 2, 1, 0, 1, 2, 3)])
    assert weight[:17].sum() == weight[24:].sum() == 0 and set(source[[17, 18, 19, 21, 22, 23]]) == {20}
    x0 = torch.randn(1, 40, 263, dtype=torch.float64)
    out = ConstraintApplier([c], 40, stats)(x0)[0].numpy()
    np.testing.assert_allclose(out[20], clip[20], atol=1e-6)
    for d in (1, 2, 3):  # pulled towards the keyframe by the weight (pose dims: not anchored)
        np.testing.assert_allclose(out[20 + d, 3:], x0[0, 20 + d, 3:].numpy() + weight[20 + d] *
                                   (clip[20, 3:] - x0[0, 20 + d, 3:].numpy()), atol=1e-6)
    np.testing.assert_array_equal(out[30, 3:], x0[0, 30, 3:].numpy())


# ----------------------------------------------------------------------------------- the tiny model

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def model(tiny):
    from mdm_adapter import load
    return load(tiny)


@pytest.fixture(scope="module")
def clip(model):
    """A 90-frame de-normalised clip (a tiny-model sample: what matters is that it is given)."""
    from motion_collage.pipeline import generate_motions
    feats = generate_motions(model, [[("a person walks", 90)]], steps=3, seed=5).features[0]
    return model.model_stats.denormalize(feats.astype(np.float64))


MODES = [("prefix", (10, 50), None), ("keep", (5, 6, 7, 40, 41, 62), None), ("keyframes", (1.0, 2.5), None),
         ("in_between", None, None), ("edit", None, "lower_body"), ("edit", None, "upper_body")]


def _check_known(features: np.ndarray, joints: np.ndarray, c, clip: np.ndarray, stats, part, start: int = 0):
    feats = stats.denormalize(features.astype(np.float64))[:c.num_frames]
    assert np.abs(np.where(c.mask, feats - c.known, 0)).max() <= 1e-5
    rows = np.flatnonzero(c.mask.any(-1))
    ref = features_to_joints(clip[start:], HUMANML3D)[c.clip_frame[rows]]
    if part == "upper_body":  # the root is regenerated: the kept joints are exact relative to it (ric)
        s = feature_slices(HUMANML3D)
        upper = [k - 1 for k in part_joints(HUMANML3D)["upper_body"]]
        ric = feats[rows][:, s["ric"]].reshape(len(rows), 21, 3)[:, upper]
        ric_ref = clip[start:][c.clip_frame[rows]][:, s["ric"]].reshape(len(rows), 21, 3)[:, upper]
        np.testing.assert_allclose(ric, ric_ref, atol=1e-5)
        return
    keep = list(range(22)) if part is None else list(part_joints(HUMANML3D)[part])
    assert np.abs(joints[rows][:, keep] - ref[:, keep]).max() <= 1e-4


@pytest.mark.parametrize("loop", [False, True], ids=["chain", "cycle"])
@pytest.mark.parametrize("mode, frames, part", MODES, ids=[m + (f"-{p}" if p else "") for m, _, p in MODES])
def test_known_frames_are_reproduced_in_features_and_joints(model, clip, mode, frames, part, loop):
    from motion_collage.pipeline import generate_motions
    request = ConstraintRequest(mode, Path("clip.npy"), frames, part, margin=3 if loop else 0)
    prompts = [("a person runs", 45), ("a person waves", 45)]
    segments, c = build_constraint(request, KnownMotion(clip, "clip.npy"), prompts, mode == "keep" or
                                   mode == "keyframes", HUMANML3D)
    out = generate_motions(model, [segments], steps=4, constraint=c, loop=loop, seed=1)
    _check_known(out.features[0], out.joints[0], c, clip, model.model_stats, part, 10 if mode == "prefix" else 0)
    if mode == "prefix":  # the timeline opens with the known segment, then the prompts
        assert [str(s.prompt) for s in out.generation.graphs[0].segments][1:] == ["a person runs", "a person waves"]
        assert isinstance(segments[0][0], KnownPrompt) and segments[0][1] == 40


@pytest.mark.parametrize("method, sampler, eta, options", [
    ("average", "ddim", 0.0, None), ("independent", "edm", 0.0, None), ("collage", "euler", 0.0, None),
    ("collage", "ddim", 1.0, None),  # DDPM's ancestral step (sample_ddpm is DDIM with eta 1 over every step)
    ("collage", "ddim", 0.0, {"merge": "harmonise"})])
def test_every_method_and_sampler_reproduces_the_known_frames(model, clip, method, sampler, eta, options):
    from motion_collage.pipeline import generate_motions
    request = ConstraintRequest("in_between", Path("clip.npy"))
    segments, c = build_constraint(request, KnownMotion(clip, "clip.npy"), [("a person runs", 30)], False, HUMANML3D)
    out = generate_motions(model, [segments] * 2, method=method, sampler=sampler, steps=4, eta=eta, constraint=c,
                           method_options=options)
    for b in range(2):
        _check_known(out.features[b], out.joints[b], c, clip, model.model_stats, None)


def test_one_network_call_per_step_with_a_constraint(model, clip):
    from motion_collage.pipeline import generate_motions
    request = ConstraintRequest("keyframes", Path("clip.npy"), (1.0, 2.0, 3.0))
    segments, c = build_constraint(request, KnownMotion(clip, "clip.npy"), [("a person runs", 45)] * 2, True,
                                   HUMANML3D)
    free = generate_motions(model, [segments], steps=6).generation
    kept = generate_motions(model, [segments], steps=6, constraint=c).generation
    assert kept.sequential_calls == free.sequential_calls == 6
    assert kept.frame_evaluations == free.frame_evaluations
    with pytest.raises(ValueError, match="cannot keep known motion"):
        generate_motions(model, [segments], steps=2, constraint=c, method="doubletake")


def test_constraint_changes_only_what_it_must(model, clip):
    """The same seed with and without a constraint: the known frames differ, and so does the rest
    (the model adapts to them), but frames far from any constraint stay a valid sample (finite)."""
    from motion_collage.pipeline import generate_motions
    request = ConstraintRequest("keep", Path("clip.npy"), tuple(range(0, 20)))
    segments, c = build_constraint(request, KnownMotion(clip, "clip.npy"), [("a person runs", 90)], True, HUMANML3D)
    a = generate_motions(model, [segments], steps=4, seed=3).features[0]
    b = generate_motions(model, [segments], steps=4, seed=3, constraint=c).features[0]
    assert np.abs(a[:20] - b[:20]).max() > 0.1 and np.isfinite(b).all()


# ----------------------------------------------------------------------------------- the command line

def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def given(tiny, tmp_path_factory):
    """A results.npy / features.npy pair of the tiny model (4 s), a new_joint_vecs copy and a KIT-sized file."""
    folder = tmp_path_factory.mktemp("given")
    assert main(["--prompts", "a person walks", "--seconds", "4", "--steps", "3", "--render", "none",
                 "--model_path", str(tiny), "--output_dir", str(folder / "run")]) == 0
    stats = ModelStats.from_dir(Path(tiny).parent)
    raw = stats.denormalize(np.load(folder / "run" / "features.npy")[0].astype(np.float64))
    np.save(folder / "vecs.npy", raw.astype(np.float32))
    np.save(folder / "kit.npy", np.zeros((60, 251), np.float32))
    return folder


@pytest.mark.parametrize("loop", [False, True], ids=["chain", "cycle"])
def test_sample_prefix_continues_a_results_file(tiny, given, tmp_path, capsys, loop):
    out = tmp_path / "out"
    rc, _, err = run(["--prompts", "a person runs", "a person waves", "--seconds", "1.5", "--steps", "3",
                      "--render", "none", "--model_path", tiny, "--output_dir", out,
                      "--prefix", f"{given / 'run' / 'results.npy'}:20-60"] + (["--loop"] if loop else []), capsys)
    assert rc == 0, err
    settings = json.loads((out / "args.json").read_text())
    assert settings["constraint"]["mode"] == "prefix" and settings["prefix"].endswith(":20-60")
    assert settings["segments_frames"][0] == ["known motion: results.npy frames 20-60", 40]
    results = np.load(out / "results.npy", allow_pickle=True).item()
    assert results["segments"][0][0]["end"] == 40 and results["motion"].shape[-1] == 100
    stats = ModelStats.from_dir(Path(tiny).parent)
    src = stats.denormalize(np.load(given / "run" / "features.npy")[0].astype(np.float64))
    feats = stats.denormalize(np.load(out / "features.npy")[0].astype(np.float64))
    assert np.abs(feats[:40] - src[20:60]).max() <= 1e-5
    joints = results["motion"][0].transpose(2, 0, 1)
    np.testing.assert_allclose(joints[:40], features_to_joints(src[20:60], HUMANML3D), atol=1e-4)


@pytest.mark.parametrize("flag, value, extra", [
    ("--keyframes", "{vecs}@0.5,2,60f", ["--seconds", "2", "2"]),
    ("--keep", "{vecs}:0-10,30,70-80", ["--seconds", "2", "2"]),
    ("--in_between", "{features}", []),
    ("--edit", ["lower_body", "{vecs}"], []),
])
def test_sample_modes_reproduce_the_given_frames(tiny, given, tmp_path, capsys, flag, value, extra):
    fill = dict(vecs=given / "vecs.npy", features=given / "run" / "features.npy")
    values = [v.format(**fill) for v in (value if isinstance(value, list) else [value])]
    out = tmp_path / "out"
    rc, _, err = run(["--prompts", "a person runs", "a person waves", "--steps", "3", "--render", "none",
                      "--model_path", tiny, "--output_dir", out, flag, *values, *extra], capsys)
    assert rc == 0, err
    settings = json.loads((out / "args.json").read_text())
    src = np.load(given / "vecs.npy").astype(np.float64)
    request = parse_request(**{flag[2:]: values if flag == "--edit" else values[0]})
    prompts = [("a person runs", 40), ("a person waves", 40)]
    segments, c = build_constraint(request, KnownMotion(src, str(request.path)), prompts, bool(extra), HUMANML3D)
    assert [[str(p), n] for p, n in segments] == settings["segments_frames"]
    stats = ModelStats.from_dir(Path(tiny).parent)
    feats = stats.denormalize(np.load(out / "features.npy")[0].astype(np.float64))
    assert np.abs(np.where(c.mask, feats - c.known, 0)).max() <= 1e-5
    joints = np.load(out / "results.npy", allow_pickle=True).item()["motion"][0].transpose(2, 0, 1)
    rows = np.flatnonzero(c.mask.any(-1))
    keep = list(part_joints(HUMANML3D)["lower_body"]) if flag == "--edit" else list(range(22))
    ref = features_to_joints(src, HUMANML3D)[c.clip_frame[rows]]
    assert np.abs(joints[rows][:, keep] - ref[:, keep]).max() <= 1e-4


@pytest.mark.skipif(not BANDAI_WALK.is_file(), reason="sample data not available")
def test_sample_prefix_from_a_bvh_file(tiny, tmp_path, capsys):
    from prepare.convert_bvh import bvh_to_joints
    from motion_collage.representation import canonical_joints_and_features
    out = tmp_path / "out"
    rc, _, err = run(["--prompts", "a person runs", "--seconds", "2", "--steps", "3", "--render", "none",
                      "--model_path", tiny, "--output_dir", out, "--prefix", BANDAI_WALK], capsys)
    assert rc == 0, err
    canon, _ = canonical_joints_and_features(bvh_to_joints(BANDAI_WALK))  # the converter's joints, 68 frames
    joints = np.load(out / "results.npy", allow_pickle=True).item()["motion"][0].transpose(2, 0, 1)
    assert joints.shape[0] == 67 + 40  # T joint frames give T - 1 feature frames
    np.testing.assert_allclose(joints[:67], canon[:67], atol=1e-4)


def test_joint_files_and_results_without_features_become_features(model, given, tmp_path):
    """new_joints [T, 22, 3] and a results.npy alone: through joints_to_features, joints kept."""
    stats = model.model_stats
    results = np.load(given / "run" / "results.npy", allow_pickle=True).item()
    joints = results["motion"][0].transpose(2, 0, 1).astype(np.float64)  # [80, 22, 3]
    np.save(tmp_path / "joints.npy", joints.astype(np.float32))
    alone = tmp_path / "alone"
    alone.mkdir()
    np.save(alone / "results.npy", results, allow_pickle=True)
    for path in (tmp_path / "joints.npy", alone / "results.npy"):
        feats = load_known_motion(path, HUMANML3D, stats).features
        assert feats.shape == (79, 263)  # T joint frames give T - 1 feature frames
        rec = features_to_joints(feats, HUMANML3D)
        # canonicalised (floor, origin, facing +Z at frame 0): the same motion up to a yaw and a shift
        np.testing.assert_allclose(rec[..., 1], joints[:79, :, 1] - joints[..., 1].min(), atol=1e-3)
        dist = lambda j: np.linalg.norm(j[:, :, None] - j[:, None, :], axis=-1)  # noqa: E731
        np.testing.assert_allclose(dist(rec), dist(joints[:79]), atol=1e-3)
        np.testing.assert_allclose(np.linalg.norm(np.diff(rec[:, 0, [0, 2]], axis=0), axis=-1),
                                   np.linalg.norm(np.diff(joints[:79, 0, [0, 2]], axis=0), axis=-1), atol=1e-3)


def test_edit_with_another_source_keeps_that_part_of_those_frames(given):
    request = parse_request(keep=f"{given / 'vecs.npy'}:0-40", edit=["upper_body"], margin="3f")
    assert (request.mode, request.part, request.frames, request.margin) == ("keep", "upper_body", tuple(range(40)), 3)
    src = np.load(given / "vecs.npy").astype(np.float64)
    segments, c = build_constraint(request, KnownMotion(src, "vecs.npy"), [("a person runs", 80)], True, HUMANML3D)
    assert c.margin == 3 and c.settings["margin_frames"] == 3
    np.testing.assert_array_equal(c.mask[:40], np.broadcast_to(kept_mask(HUMANML3D, "upper_body"), (40, 263)))
    assert not c.mask[40:].any() and c.anchors() == []  # the root is not kept: nothing to anchor
    seconds = parse_request(prefix=str(given / "vecs.npy"))
    assert seconds.margin == 0.5  # the default margin, in seconds
    assert build_constraint(seconds, KnownMotion(src, "v"), [("a person runs", 40)], True, HUMANML3D)[1].margin == 10


@pytest.mark.parametrize("argv, message", [
    (["--prefix", "/nonexistent/clip.bvh"], "does not exist"),
    (["--prefix", "{vecs}:0-500"], "outside vecs.npy, which has 80 frames"),
    (["--prefix", "{vecs}:30-10"], "START < END"),
    (["--keyframes", "{vecs}@9"], "beyond the motion"),
    (["--keyframes", "{vecs}@1,x"], "keyframes time"),
    (["--keyframes", "{vecs}"], "FILE@T1,T2"),
    (["--keep", "{vecs}:0-10,95"], "beyond the motion"),
    (["--keep", "{kit}:0-10"], "251-dim features; this model uses 263-dim"),
    (["--edit", "arms", "{vecs}"], "unknown body part 'arms'"),
    (["--edit", "upper_body"], "--edit needs a motion"),
    (["--prefix", "{vecs}", "--keep", "{vecs}:1"], "one motion constraint at a time"),
    (["--prefix", "{vecs}", "--method", "doubletake"], "cannot keep known motion"),
    (["--edit", "upper_body", "{vecs}", "--seconds", "1"], "adding up to it"),
    (["--in_between", "{vecs}:0-3"], "too short"),
    (["--known_margin", "4f"], "needs known motion"),
    (["--prefix", "{vecs}", "--known_margin", "-1"], "--known_margin must be seconds"),
])
def test_bad_constraints_are_one_line_and_exit_2(tiny, given, tmp_path, capsys, argv, message):
    fill = dict(vecs=given / "vecs.npy", kit=given / "kit.npy")
    argv = [a.format(**fill) for a in argv]
    out = tmp_path / "out"
    rc, _, err = run(["--prompts", "a person runs", "--steps", "2", "--render", "none", "--model_path", tiny,
                      "--output_dir", out] + argv, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()
