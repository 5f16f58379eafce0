"""SMPL loader, forward pass and fitting on a synthetic SMPL-format body file."""
import contextlib
import pickle
import sys
import types

import imageio_ffmpeg
import numpy as np
import pytest
import scipy.sparse
import torch

from motion_collage.representation import SMPL_NEUTRAL_REST_JOINTS
from motion_collage.smpl import find_model_file, load_smpl, smpl_forward
from motion_collage.smpl_fit import FitConfig, export_obj, fit_smpl, render_mesh, save_fit

NUM_V, NUM_F = 6890, 13776  # official SMPL sizes
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def synthetic_smpl(seed: int = 0) -> dict:
    """Random but sane SMPL arrays with the official keys and shapes: the SMPL kinematic tree,
    rest joints near the real ones, vertices around the bones, skinning rows summing to 1."""
    rng = np.random.default_rng(seed)
    joints = np.concatenate([SMPL_NEUTRAL_REST_JOINTS, SMPL_NEUTRAL_REST_JOINTS[[20, 21]] + [[0.08, 0, 0], [-0.08, 0, 0]]])
    verts = np.zeros((NUM_V, 3))
    weights = np.zeros((NUM_V, 24))
    regressor = np.zeros((24, NUM_V))
    ring = np.concatenate([np.eye(3), -np.eye(3)]) * 0.03  # 6 points whose mean is the centre
    for j in range(24):  # vertices 0..143: rings whose means are the joints
        idx = np.arange(6 * j, 6 * j + 6)
        verts[idx] = joints[j] + ring
        weights[idx, j] = 1.0
        regressor[j, idx] = 1.0 / 6
    rest = np.arange(144, NUM_V)
    bone = rng.integers(1, 24, size=rest.size)  # each other vertex hugs the bone parent(j) -> j
    s = rng.uniform(0, 1, size=rest.size)
    parent = np.array(PARENTS)[bone]
    verts[rest] = joints[parent] * (1 - s[:, None]) + joints[bone] * s[:, None] + rng.normal(scale=0.03, size=(rest.size, 3))
    weights[rest, parent] = 1 - 0.5 * s
    weights[rest, bone] += 0.5 * s
    faces = np.sort(rng.integers(0, NUM_V, size=(NUM_F, 3)), axis=1)
    kintree = np.stack([np.array(PARENTS, dtype=np.int64) % 2**32, np.arange(24)])
    return {
        "v_template": verts, "shapedirs": rng.normal(scale=0.01, size=(NUM_V, 3, 10)),
        "posedirs": rng.normal(scale=0.002, size=(NUM_V, 3, 207)).astype(np.float32),
        "J_regressor": regressor, "weights": weights, "kintree_table": kintree.astype(np.uint32),
        "f": faces.astype(np.uint32),
    }


@contextlib.contextmanager
def fake_chumpy():
    """A class pickled as ``chumpy.ch.Ch`` (registered in sys.modules only inside the block)."""
    chumpy = types.ModuleType("chumpy")
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, ch_mod
    try:
        yield Ch
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def write_pkl_with_chumpy(data: dict, path) -> None:
    """Pickle like the official file: Python-2 protocol, shapedirs as a chumpy object and
    J_regressor as a scipy.sparse CSC matrix."""
    with fake_chumpy() as Ch, open(path, "wb") as fh:
        pickle.dump(dict(data, shapedirs=Ch(data["shapedirs"]), J_regressor=scipy.sparse.csc_matrix(data["J_regressor"])),
                    fh, protocol=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("smpl")
    (root / "body_models" / "smpl").mkdir(parents=True)
    write_pkl_with_chumpy(synthetic_smpl(), root / "body_models" / "smpl" / "SMPL_NEUTRAL.pkl")
    return root


def known_motion(model, frames=6, seed=1):
    """Ground truth: smooth random poses, a turn and a walk forward."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(scale=0.25, size=(2, 24, 3))
    w = np.linspace(0, 1, frames)[:, None, None]
    pose = (1 - w) * a + w * b
    pose[:, 0] = [[0.0, 0.8 * t, 0.0] for t in np.linspace(0, 1, frames)]  # yaw
    pose = torch.tensor(pose, dtype=torch.float32)
    betas = torch.tensor(rng.normal(scale=0.5, size=10), dtype=torch.float32)
    transl = torch.tensor([[0.0, 0.9, 0.3 * t] for t in range(frames)], dtype=torch.float32)
    return pose, betas, transl


def test_loader_reads_official_keys_and_chumpy_objects(model_dir):
    model = load_smpl(model_dir)
    data = synthetic_smpl()
    np.testing.assert_allclose(model.shapedirs.numpy(), data["shapedirs"], atol=1e-7)
    assert model.parents.tolist() == PARENTS
    assert model.faces.shape == (NUM_F, 3) and model.weights.shape == (NUM_V, 24)
    out = smpl_forward(model, torch.zeros(24, 3))
    np.testing.assert_allclose(out.joints[:22].numpy(), SMPL_NEUTRAL_REST_JOINTS, atol=1e-6)
    np.testing.assert_allclose(out.vertices.numpy(), data["v_template"], atol=1e-6)  # rest pose


def test_missing_model_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        find_model_file(tmp_path)
    msg = str(info.value)
    assert "https://smpl.is.tue.mpg.de" in msg and "body_models/smpl/SMPL_NEUTRAL.pkl" in msg and "\n" not in msg


def test_forward_matches_smplx(model_dir):
    smplx = pytest.importorskip("smplx")
    ours = load_smpl(model_dir)
    plain = model_dir / "plain.pkl"  # smplx cannot read chumpy objects without chumpy
    with open(plain, "wb") as fh:
        pickle.dump(synthetic_smpl(), fh, protocol=2)
    ref = smplx.SMPL(model_path=str(plain), num_betas=10, batch_size=6)
    pose, betas, transl = known_motion(ours)
    theirs = ref(global_orient=pose[:, 0], body_pose=pose[:, 1:].reshape(6, 69), betas=betas[None].expand(6, -1),
                 transl=transl, return_verts=True)
    mine = smpl_forward(ours, pose, betas, transl)
    np.testing.assert_allclose(mine.vertices.numpy(), theirs.vertices.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(mine.joints.numpy(), theirs.joints[:, :24].detach().numpy(), atol=1e-5)


def test_fit_recovers_known_poses(model_dir, tmp_path):
    model = load_smpl(model_dir)
    pose, betas, transl = known_motion(model)
    targets = smpl_forward(model, pose, betas, transl, with_vertices=False).joints[:, :22].numpy()
    fit = fit_smpl(targets, model, config=FitConfig(iters=150))
    err = fit.joint_error
    # measured: mean 1.5 mm, max 3.6 mm (the priors pull a little); bounds leave room for other builds
    assert err.mean() < 0.003 and err.max() < 0.01, (err.mean(), err.max())
    assert fit.vertices.shape == (6, NUM_V, 3) and fit.pose.shape == (6, 24, 3)

    npz = np.load(save_fit(fit, tmp_path / "fit.npz"))
    assert sorted(npz.files) == ["betas", "faces", "joint_error", "joints", "pose", "targets", "transl", "vertices"]
    np.testing.assert_array_equal(npz["vertices"], fit.vertices)
    paths = export_obj(fit.vertices[:2], fit.faces, tmp_path / "obj")
    lines = paths[1].read_text().splitlines()
    assert sum(ln.startswith("v ") for ln in lines) == NUM_V and sum(ln.startswith("f ") for ln in lines) == NUM_F
    assert [float(v) for v in lines[0].split()[1:]] == pytest.approx(fit.vertices[1, 0].tolist(), abs=2e-6)

    video = render_mesh(fit.vertices[:4], fit.faces, tmp_path / "mesh.mp4", max_faces=800)
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    assert sum(1 for _ in reader) == 4 and meta["fps"] == 20.0


def test_fit_rejects_bad_targets(model_dir):
    with pytest.raises(ValueError, match=r"expected \[T, 22, 3\]"):
        fit_smpl(np.zeros((3, 24, 3)), load_smpl(model_dir))


def test_cli_fits_a_results_row_and_reports_a_missing_model(model_dir, tmp_path, capsys):
    from motion_collage.smpl_fit import main

    model = load_smpl(model_dir)
    pose, betas, transl = known_motion(model)
    joints = smpl_forward(model, pose, betas, transl, with_vertices=False).joints[:, :22].numpy()
    results = {"motion": joints.transpose(1, 2, 0)[None].astype(np.float32), "text": ["a person moves"],
               "lengths": np.array([6]), "num_samples": 1, "num_repetitions": 1}
    np.save(tmp_path / "results.npy", results, allow_pickle=True)
    assert main([str(tmp_path / "results.npy"), "--smpl_dir", str(model_dir), "--no_obj", "--no_video"]) == 0
    fit = np.load(tmp_path / "sample00_rep00_smpl.npz")
    assert fit["vertices"].shape == (6, NUM_V, 3) and fit["joint_error"].mean() < 0.003
    capsys.readouterr()
    assert main([str(tmp_path / "results.npy"), "--smpl_dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "https://smpl.is.tue.mpg.de" in err


def test_missing_model_names_the_paths_really_searched(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        find_model_file(tmp_path / "body_models")  # sample's default --smpl_dir is a body_models folder
    msg = str(info.value)
    assert f"expected {tmp_path / 'body_models' / 'smpl' / 'SMPL_NEUTRAL.pkl'} " in msg
    assert "body_models/body_models" not in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match=r"SMPL body model .*nope\.pkl does not exist"):
        find_model_file(tmp_path / "nope.pkl")
    (tmp_path / "flat").mkdir()
    np.savez(tmp_path / "flat" / "SMPL_NEUTRAL.npz", **synthetic_smpl())
    assert find_model_file(tmp_path / "flat") == tmp_path / "flat" / "SMPL_NEUTRAL.npz"
    assert load_smpl(tmp_path / "flat").faces.shape == (NUM_F, 3)


def dump(path, obj):
    """Pickle ``obj`` to ``path`` (protocol 2, like the official files); returns ``path``."""
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)
    return path


def small_smpl(num_v: int = 200) -> dict:
    """The synthetic model cut to its first ``num_v`` vertices (same keys, consistent shapes)."""
    data = synthetic_smpl()
    cut = {k: data[k][:num_v] for k in ("v_template", "shapedirs", "posedirs", "weights")}
    return dict(data, **cut, J_regressor=data["J_regressor"][:, :num_v], f=data["f"][:50] % num_v)


def test_damaged_model_files_are_one_line_errors(tmp_path):
    data = small_smpl()
    assert load_smpl(dump(tmp_path / "ok.pkl", data)).v_template.shape == (200, 3)
    bad_sparse = scipy.sparse.csc_matrix(data["J_regressor"])
    bad_sparse.indices[5] = 300  # an index outside the matrix: must not reach scipy's C code
    cases = {
        "sparse": (dict(data, J_regressor=bad_sparse), "sparse matrix with inconsistent shape or indices"),
        "faces": (dict(data, f=data["f"] + 200), r"'f' must be whole-number vertex indices"),
        "tree": (dict(data, kintree_table=data["kintree_table"][:, ::-1]), "kintree_table"),
        "strings": (dict(data, weights=["a"] * 3), "not numbers"),
        "list": ([1, 2], "holds list, not a dict"),
        "missing": ({"f": data["f"]}, "lacks SMPL keys"),
    }
    for name, (obj, message) in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            load_smpl(dump(tmp_path / f"{name}.pkl", obj))
        assert "\n" not in str(info.value), name
    with fake_chumpy() as Ch:
        expression = Ch(1.0)
        del expression.x  # an expression (no stored value)
        dump(tmp_path / "expr.pkl", dict(data, shapedirs=expression))
    with pytest.raises(ValueError, match="chumpy expression without a stored value"):
        load_smpl(tmp_path / "expr.pkl")
    (tmp_path / "noise.pkl").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="is not a readable SMPL model file") as info:
        load_smpl(tmp_path / "noise.pkl")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args,message", [
    ([], "the following arguments are required: --smpl_dir"),
    (["--smpl_dir", "{model}", "--iters", "0"], "--iters must be >= 1, got 0"),
    (["--smpl_dir", "{model}", "--iters", "x"], "argument --iters: invalid int value: 'x'"),
    (["--smpl_dir", "{model}", "--out_dir", "{file}/sub"], "is a file, not a folder"),
    (["--smpl_dir", "{model}", "--sample", "3"], "sample 3 is out of range"),
])
def test_cli_mistakes_are_one_line_before_the_fit(model_dir, tmp_path, capsys, monkeypatch, args, message):
    from motion_collage import smpl_fit

    results = {"motion": np.zeros((1, 22, 3, 4), np.float32), "text": ["x"], "lengths": np.array([4])}
    np.save(tmp_path / "results.npy", results, allow_pickle=True)
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(smpl_fit, "fit_smpl", lambda *a, **k: pytest.fail("the fit ran before the error"))
    argv = [a.format(model=model_dir, file=tmp_path / "a_file") for a in args]
    assert smpl_fit.main([str(tmp_path / "results.npy"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_python2_and_numpy1_global_names_load(model_dir, tmp_path):
    """Official files name copy_reg, __builtin__ and numpy.core (Python 2, numpy 1)."""
    data = synthetic_smpl()
    with fake_chumpy() as Ch:
        raw = pickle.dumps(dict(data, shapedirs=Ch(data["shapedirs"]), J_regressor=scipy.sparse.csr_matrix(data["J_regressor"])),
                           protocol=1)  # objects via copy_reg._reconstructor, Python 2 module names
    assert b"copy_reg\n_reconstructor" in raw and b"__builtin__\nobject" in raw
    assert b"numpy._core.multiarray\n" in raw
    (tmp_path / "py2.pkl").write_bytes(raw.replace(b"numpy._core.", b"numpy.core."))
    old, new = load_smpl(tmp_path / "py2.pkl"), load_smpl(model_dir)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "parents", "faces"):
        assert torch.equal(getattr(old, key), getattr(new, key)), key


MDM_KEYS = ["faces", "length", "motion", "root_translation", "text", "thetas", "vertices"]


def test_mdm_smpl_params_layout(model_dir, tmp_path):
    """MDM's sampleII_repJJ_smpl_params.npy: shapes, 6-D rows, pelvis translation, beta = 0 body."""
    from motion_collage.smpl_fit import mdm_smpl_params, save_mdm_params

    model = load_smpl(model_dir)
    pose, betas, transl = known_motion(model)
    targets = smpl_forward(model, pose, betas, transl, with_vertices=False).joints[:, :22].numpy()
    fit = fit_smpl(targets, model, config=FitConfig(iters=30))
    path = save_mdm_params(mdm_smpl_params(fit, model, "a person turns"), tmp_path / "sample00_rep00_smpl_params.npy")
    params = np.load(path, allow_pickle=True).item()
    assert sorted(params) == MDM_KEYS
    assert params["motion"].shape == (25, 6, 6) and params["motion"].dtype == np.float32
    assert params["thetas"].shape == (24, 6, 6) and params["root_translation"].shape == (3, 6)
    assert params["vertices"].shape == (NUM_V, 3, 6) and params["faces"].shape == (NUM_F, 3)
    assert params["text"] == "a person turns" and params["length"] == 6 and type(params["length"]) is int
    np.testing.assert_array_equal(params["motion"][:24], params["thetas"])
    np.testing.assert_array_equal(params["motion"][24, :3], params["root_translation"])
    assert not params["motion"][24, 3:].any()
    np.testing.assert_allclose(params["root_translation"].T, targets[:, 0], atol=1e-6)  # the pelvis, as MDM
    # 6-D = first two rows of each local rotation matrix; rebuilding the third row gives the matrix back
    six = params["thetas"].transpose(2, 0, 1).reshape(6, 24, 2, 3)
    mats = np.concatenate([six, np.cross(six[:, :, 0], six[:, :, 1])[:, :, None]], 2)
    rebuilt = torch.tensor(mats, dtype=torch.float64)
    from motion_collage.smpl import axis_angle_to_matrix
    np.testing.assert_allclose(rebuilt.numpy(), axis_angle_to_matrix(torch.tensor(fit.pose, dtype=torch.float64)),
                               atol=1e-5)
    # vertices: the neutral body (betas = 0) in the fitted pose, moved by the root's motion since frame 0
    zero_shape = smpl_forward(model, torch.tensor(fit.pose)).vertices.numpy()
    moved = params["root_translation"].T - params["root_translation"][:, :1].T
    np.testing.assert_allclose(params["vertices"].transpose(2, 0, 1), zero_shape + moved[:, None], atol=1e-5)
    np.testing.assert_array_equal(params["faces"], model.faces.numpy())


def test_cli_writes_the_mdm_layout_beside_the_fit(model_dir, tmp_path, capsys):
    from motion_collage.smpl_fit import main

    model = load_smpl(model_dir)
    pose, betas, transl = known_motion(model)
    joints = smpl_forward(model, pose, betas, transl, with_vertices=False).joints[:, :22].numpy()
    results = {"motion": np.concatenate([joints.transpose(1, 2, 0)[None]] * 2).astype(np.float32),
               "text": ["a person turns", "a person walks"], "lengths": np.array([6, 5]), "num_samples": 2,
               "num_repetitions": 1}
    np.save(tmp_path / "results.npy", results, allow_pickle=True)
    assert main([str(tmp_path / "results.npy"), "--smpl_dir", str(model_dir), "--sample", "1", "--iters", "20",
                 "--no_obj", "--no_video"]) == 0
    assert "sample01_rep00_smpl_params.npy (MDM's SMPL layout)" in capsys.readouterr().out
    params = np.load(tmp_path / "sample01_rep00_smpl_params.npy", allow_pickle=True).item()
    assert sorted(params) == MDM_KEYS and params["text"] == "a person walks" and params["length"] == 5
    assert params["vertices"].shape == (NUM_V, 3, 5) and params["motion"].shape == (25, 6, 5)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "sample00_rep00_smpl_params.npy").mkdir()  # a folder where the file must go
    assert main([str(tmp_path / "results.npy"), "--smpl_dir", str(model_dir), "--out_dir", str(tmp_path / "taken"),
                 "--no_obj", "--no_video"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an existing folder" in err
    assert not (tmp_path / "taken" / "sample00_rep00_smpl.npz").exists()
