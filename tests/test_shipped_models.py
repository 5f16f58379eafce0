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
    out = generate_motions(model, rows, method_options={"overlap": 10}, steps=2, seed=0)
    assert out.features.shape == (1, 70, 263) and np.isfinite(out.features).all()
    joints = out.joints[0]
    assert joints.shape == (70, 22, 3)
    # the body stands on the floor at human scale (metres): the head is above the pelvis
    assert np.all(joints[:, 15, 1] > joints[:, 0, 1])
    assert 0.5 < float(np.median(joints[:, 15, 1])) < 2.5
    assert [(s.start, s.end) for s in out.generation.graphs[0].segments] == [(0, 40), (40, 70)]


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
