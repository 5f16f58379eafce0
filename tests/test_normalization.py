"""Model vs evaluator statistics: round trips, distinct types, HumanML3D std convention."""
import numpy as np
import pytest
import torch

from motion_core.normalization import (
    EvaluatorStats, ModelStats, RunningMoments, evaluator_to_model, humanml_std, model_to_evaluator,
)
from motion_core.spec import HUMANML3D, feature_slices

D = 263


def stats(cls, seed):
    rng = np.random.default_rng(seed)
    return cls(rng.normal(size=D), rng.uniform(0.1, 2.0, size=D))


def test_normalize_denormalize_round_trip_numpy_and_torch():
    s = stats(ModelStats, 0)
    x = np.random.default_rng(1).normal(size=(2, 7, D))
    np.testing.assert_allclose(s.denormalize(s.normalize(x)), x, atol=1e-12)
    np.testing.assert_allclose(s.normalize(s.mean[None]), 0, atol=1e-12)
    xt = torch.from_numpy(x).float()
    out = s.normalize(xt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), s.normalize(x), atol=1e-5)


def test_model_to_evaluator_known_value_and_inverse():
    m, e = stats(ModelStats, 2), stats(EvaluatorStats, 3)
    x = np.random.default_rng(4).normal(size=(5, D))
    y = model_to_evaluator(x, m, e)
    np.testing.assert_allclose(y, ((x * m.std + m.mean) - e.mean) / e.std, atol=1e-12)
    np.testing.assert_allclose(evaluator_to_model(y, e, m), x, atol=1e-12)


def test_the_two_kinds_of_statistics_cannot_be_swapped():
    m, e = stats(ModelStats, 2), stats(EvaluatorStats, 3)
    x = np.zeros((1, D))
    with pytest.raises(TypeError, match="EvaluatorStats"):
        model_to_evaluator(x, m, m)
    with pytest.raises(TypeError, match="ModelStats"):
        model_to_evaluator(x, e, e)
    with pytest.raises(TypeError):
        model_to_evaluator(x, e, m)
    assert not isinstance(m, EvaluatorStats) and not isinstance(e, ModelStats)


def test_from_dir_loads_the_right_files(tmp_path):
    m = stats(ModelStats, 5)
    m.save(tmp_path)
    loaded = ModelStats.from_dir(tmp_path)
    np.testing.assert_array_equal(loaded.mean, m.mean.astype(np.float32))
    np.save(tmp_path / "t2m_mean.npy", np.full(D, 2.0))
    np.save(tmp_path / "t2m_std.npy", np.full(D, 4.0))
    e = EvaluatorStats.from_dir(tmp_path)
    np.testing.assert_allclose(e.normalize(np.full(D, 6.0)), 1.0)
    with pytest.raises(FileNotFoundError, match="Mean.npy"):
        ModelStats.from_dir(tmp_path / "nowhere")


def test_bad_stats_and_shapes_raise():
    with pytest.raises(ValueError, match="std must be"):
        ModelStats(np.zeros(D), np.zeros(D))
    with pytest.raises(ValueError, match="last dimension 10"):
        stats(ModelStats, 0).normalize(np.zeros((3, 10)))


def test_running_moments_equal_two_pass_statistics():
    rng = np.random.default_rng(6)
    clips = [rng.normal(loc=3.0, size=(n, D)) for n in (5, 40, 1, 17)]
    acc = RunningMoments(D)
    for c in clips:
        acc.add(c)
    data = np.concatenate(clips)
    np.testing.assert_allclose(acc.mean, data.mean(0), atol=1e-12)
    np.testing.assert_allclose(np.sqrt(acc.m2 / acc.count), data.std(0), atol=1e-12)


def test_humanml_std_averages_each_feature_group_and_floors():
    std = np.arange(D, dtype=np.float64)
    out = humanml_std(std, std_floor=0.5)
    assert out.dtype == np.float32
    for name, sl in feature_slices(HUMANML3D).items():
        expected = max(std[sl].mean(), 0.5)
        np.testing.assert_allclose(out[sl], expected, rtol=1e-6, err_msg=name)
    assert out[0] == 0.5  # root angular velocity: the one-element group with std 0 is floored
