"""Feature normalisation statistics, with the model's and the evaluator's kept apart.

The diffusion model works on ``(f - Mean) / Std`` with the dataset's ``Mean.npy`` /
``Std.npy``; the HumanML3D evaluator uses different statistics (``t2m_mean.npy`` /
``t2m_std.npy``). Mixing them up silently ruins every metric, so they are two distinct types
and the only way from one space to the other is :func:`model_to_evaluator`, which checks the
types of its arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TypeVar, Union

import numpy as np
import torch

from motion_core.spec import HUMANML3D, DatasetSpec, feature_slices

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)
PathLike = Union[str, Path]

# Floor applied to every std value after the HumanML3D group averaging (ours: the reference
# has none). It only matters when a whole feature group is constant, e.g. a tiny dataset in
# which the feet never leave the floor; real groups have std well above it.
STD_FLOOR = 1e-3


@dataclass(frozen=True, eq=False)
class _FeatureStats:
    """Per-dimension mean and std ``[D]`` of features (float arrays)."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(
                f"{type(self).__name__}: mean {mean.shape} and std {std.shape} must be two "
                f"vectors of the same length [D]"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std <= 0).any():
            raise ValueError(f"{type(self).__name__}: std must be finite and > 0, mean finite")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(self.mean.shape[0])

    def normalize(self, x: ArrayLike) -> ArrayLike:
        """``(x - mean) / std`` for features ``[..., D]``; numpy or torch in, same kind out."""
        mean, std = self._like(x)
        return (x - mean) / std

    def denormalize(self, x: ArrayLike) -> ArrayLike:
        """``x * std + mean`` for normalised features ``[..., D]``; same kind out."""
        mean, std = self._like(x)
        return x * std + mean

    def _like(self, x):
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"features have last dimension {x.shape[-1]}; these {type(self).__name__} "
                f"have {self.dim} dims"
            )
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.std, dtype=x.dtype, device=x.device),
            )
        dtype = x.dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float64
        return self.mean.astype(dtype, copy=False), self.std.astype(dtype, copy=False)

    @classmethod
    def _load(cls, directory: PathLike, candidates: list[tuple[str, str]]):
        directory = Path(directory)
        for mean_name, std_name in candidates:
            mean_path, std_path = directory / mean_name, directory / std_name
            if mean_path.is_file() and std_path.is_file():
                return cls(np.load(mean_path), np.load(std_path))
        tried = ", ".join(f"{m} + {s}" for m, s in candidates)
        raise FileNotFoundError(
            f"no {cls.__name__} files in {directory}: looked for {tried}; "
            f"pass the folder that holds them"
        )


class ModelStats(_FeatureStats):
    """The diffusion model's statistics (dataset ``Mean.npy`` / ``Std.npy``, float32)."""

    @classmethod
    def from_dir(cls, directory: PathLike) -> "ModelStats":
        """Load ``Mean.npy`` and ``Std.npy`` from a HumanML3D-layout folder."""
        return cls._load(directory, [("Mean.npy", "Std.npy")])

    @classmethod
    def from_features(
        cls, clips: Iterable[np.ndarray], *, spec: DatasetSpec = HUMANML3D, std_floor: float = STD_FLOOR
    ) -> "ModelStats":
        """Statistics of feature clips ``[T_i, D]`` with the HumanML3D convention (see
        :func:`humanml_std`)."""
        acc = RunningMoments(spec.feature_dim)
        for clip in clips:
            acc.add(clip)
        return cls(*acc.humanml_stats(spec=spec, std_floor=std_floor))

    def save(self, directory: PathLike) -> None:
        """Write ``Mean.npy`` and ``Std.npy`` (float32) into ``directory``."""
        directory = Path(directory)
        np.save(directory / "Mean.npy", self.mean.astype(np.float32))
        np.save(directory / "Std.npy", self.std.astype(np.float32))


class EvaluatorStats(_FeatureStats):
    """The text-motion evaluator's statistics (``t2m_mean.npy`` / ``t2m_std.npy``, float64)."""

    @classmethod
    def from_dir(cls, directory: PathLike, dataset: str = "t2m") -> "EvaluatorStats":
        """Load ``<dataset>_mean.npy`` / ``<dataset>_std.npy`` (MDM's ``dataset/`` folder) or
        ``meta/mean.npy`` / ``meta/std.npy`` (the evaluator checkpoint folder)."""
        return cls._load(
            directory,
            [(f"{dataset}_mean.npy", f"{dataset}_std.npy"), ("meta/mean.npy", "meta/std.npy"),
             ("mean.npy", "std.npy")],
        )


def model_to_evaluator(x: ArrayLike, model_stats: ModelStats, eval_stats: EvaluatorStats) -> ArrayLike:
    """Re-normalise model-space features ``[..., D]`` into the evaluator's space."""
    if not isinstance(model_stats, ModelStats):
        raise TypeError(f"model_stats must be ModelStats, got {type(model_stats).__name__}")
    if not isinstance(eval_stats, EvaluatorStats):
        raise TypeError(
            f"eval_stats must be EvaluatorStats, got {type(eval_stats).__name__}; load it with "
            f"EvaluatorStats.from_dir (t2m_mean.npy / t2m_std.npy)"
        )
    return eval_stats.normalize(model_stats.denormalize(x))


def evaluator_to_model(x: ArrayLike, eval_stats: EvaluatorStats, model_stats: ModelStats) -> ArrayLike:
    """Re-normalise evaluator-space features ``[..., D]`` into the model's space."""
    if not isinstance(eval_stats, EvaluatorStats):
        raise TypeError(f"eval_stats must be EvaluatorStats, got {type(eval_stats).__name__}")
    if not isinstance(model_stats, ModelStats):
        raise TypeError(f"model_stats must be ModelStats, got {type(model_stats).__name__}")
    return model_stats.normalize(eval_stats.denormalize(x))


class RunningMoments:
    """Exact per-dimension mean and variance accumulated clip by clip (Chan et al.'s pairwise
    update, float64). The result depends only on the order of :meth:`add` calls."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def add(self, clip: np.ndarray) -> None:
        """Add the frames of one clip ``[T, D]``."""
        clip = np.asarray(clip, dtype=np.float64)
        if clip.ndim != 2 or clip.shape[1] != self.mean.shape[0]:
            raise ValueError(f"clip has shape {clip.shape}; expected [T, {self.mean.shape[0]}]")
        if clip.shape[0] == 0:
            return
        mean = clip.mean(0)
        self.add_moments(clip.shape[0], mean, ((clip - mean) ** 2).sum(0))

    def add_moments(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Add a group of ``n`` frames given its mean ``[D]`` and sum of squared deviations
        ``[D]`` (for accumulating results computed elsewhere, e.g. in worker processes)."""
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def humanml_stats(self, *, spec: DatasetSpec = HUMANML3D, std_floor: float = STD_FLOOR):
        """(mean, std) float32 with the HumanML3D convention of :func:`humanml_std`."""
        if self.count == 0:
            raise ValueError("no frames were added; cannot compute statistics of an empty dataset")
        std = np.sqrt(self.m2 / self.count)
        return self.mean.astype(np.float32), humanml_std(std, spec=spec, std_floor=std_floor)


def humanml_std(std: np.ndarray, *, spec: DatasetSpec = HUMANML3D, std_floor: float = STD_FLOOR) -> np.ndarray:
    """The HumanML3D convention for ``Std.npy`` (float32): every feature group (root angular
    velocity, root linear velocity, root height, relative joints, rotations, local velocities,
    foot contacts) gets the mean of its per-dimension stds, so no single dimension has a
    near-zero std; then values below ``std_floor`` are raised to it (ours)."""
    out = np.asarray(std, dtype=np.float64).copy()
    for sl in feature_slices(spec).values():
        out[sl] = out[sl].mean()
    return np.maximum(out, std_floor).astype(np.float32)
