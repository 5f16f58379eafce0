"""The model and evaluator shipped in save/: they load offline and work end to end on CPU."""
from pathlib import Path

import numpy as np
import torch

import mdm_adapter
from eval.evaluator import Evaluator
from motion_collage.pipeline import generate_motions

SAVE = Path(__file__).resolve().parent.parent / "save"


def test_default_model_two_step_collage_generation():
    model = mdm_adapter.load(SAVE / "default")
    assert model.args.text_encoder_type == "bow" and model.spec.feature_dim == 263
    assert (SAVE / "default" / "model.safetensors").stat().st_size < 20 * 2 ** 20
    rows = [[("a person walks forward", 40), ("a person waves the right hand", 30)]]
    out = generate_motions(model, rows, method_options={"overlap": "10f"}, steps=2, seed=0)
    assert out.features.shape == (1, 70, 263) and np.isfinite(out.features).all()
    joints = out.joints[0]
    assert joints.shape == (70, 22, 3)
    # the body stands on the floor at human scale (metres): the head is above the pelvis
    assert np.all(joints[:, 15, 1] > joints[:, 0, 1])
    assert 0.5 < float(np.median(joints[:, 15, 1])) < 2.5
    assert [(s.start, s.end) for s in out.generation.graphs[0].segments] == [(0, 40), (40, 70)]


def test_default_model_golden_values():
    """A fixed-seed short collage on CPU: a regression in the shipped model's output fails here.

    Values recorded with 1 thread (default merge "harmonise", max_piece_frames 120); 1 vs 2 threads
    differ by ~2e-6 (summation order).
    """
    model = mdm_adapter.load(SAVE / "default", device="cpu")
    rows = [[("a person walks forward", 30), ("a person waves the right hand", 30)]]
    out = generate_motions(model, rows, steps=10, seed=0)
    features, joints = out.features[0], out.joints[0]
    np.testing.assert_allclose(features[::15, :4], [
        [-0.021555, 0.115191, -0.074601, -0.232175],
        [0.162218, 0.032039, -0.462108, -0.122727],
        [0.269343, -0.127555, -0.131555, -0.407087],
        [0.236867, -0.179830, -0.470577, 0.182302]], atol=1e-4, rtol=0)
    np.testing.assert_allclose(joints[[0, 30, 59]][:, [0, 21]].reshape(3, -1), [
        [0.0, 0.867883, 0.0, -0.134027, 0.927591, 0.288733],
        [-0.037371, 0.863890, 0.589818, -0.221789, 0.803000, 0.465608],
        [-0.121871, 0.869807, 1.010594, -0.338963, 0.850135, 1.101949]], atol=1e-4, rtol=0)
    assert abs(float(features.mean()) + 0.010519) < 1e-4 and abs(float(features.std()) - 0.748928) < 1e-4
    assert out.generation.sequential_calls == 10


def test_default_evaluator_forward_pass():
    evaluator = Evaluator.from_file(SAVE / "evaluator_bandai")
    texts = evaluator.embed_texts(["a person waves the right hand", "someone walks forward happily"])
    motions = torch.zeros(2, 196, 263)
    motions[:, :60] = torch.randn(2, 60, 263, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embedded = evaluator.embed_motion(motions, [60, 48])
    assert texts.shape == embedded.shape == (2, evaluator.config.embed_dim)
    assert torch.isfinite(texts).all() and torch.isfinite(embedded).all()
    assert not torch.allclose(texts[0], texts[1])
