"""What every generation method shares: its result, its sampler setup and its registry entry.

A method is a function ``generate(piece_denoiser, rows, noise, setup, *, max_frames, loop,
guidance, **frame_options) -> Generation`` plus a :class:`MethodSpec` that names it, carries its
options dataclass (defaults in seconds where they are durations), says whether it can close a
loop and what it costs. Entry points (``sample``, suites, benchmarks) read names, choices,
defaults and capabilities from the registry only, through :func:`get_method`.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ..denoiser import CallCounter
from ..graph import FactorGraph, GraphError, chain, cycle

Sampler = Callable[..., Tensor]  # sampler(denoiser, x, sigmas, **kwargs) -> x
Rows = Sequence[Sequence[tuple[str, int]]]  # per batch row: segments (prompt, frames)


@dataclass
class Generation:
    """Result of a method: padded motions ``[B, T, D]`` and what it cost.

    ``graphs`` describe each row's timeline (segments, loop); ``sequential_calls`` counts piece-
    denoiser calls that had to wait for each other; ``frame_evaluations`` counts real frames
    passed through the piece denoiser (before guidance doubles the conditional ones).
    """

    motion: Tensor
    graphs: list[FactorGraph]
    sequential_calls: int = 0
    frame_evaluations: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> list[int]:
        return [g.num_frames for g in self.graphs]


@dataclass(frozen=True)
class SamplingSetup:
    """The sampler, its sigma grid and its keyword arguments (eta, generator, ...)."""

    sampler: Sampler
    sigmas: Tensor
    kwargs: dict = field(default_factory=dict)

    def run(self, denoiser, x: Tensor, sigmas: Optional[Tensor] = None) -> Tensor:
        return self.sampler(denoiser, x, self.sigmas if sigmas is None else sigmas, **self.kwargs)


# --------------------------------------------------------------------------- durations

class Frames(int):
    """A duration given as a number of frames (a plain float is seconds)."""

    def __repr__(self) -> str:
        return f"{int(self)}f"


Duration = float | Frames


def parse_duration(value: Any, what: str = "duration") -> Duration:
    """Seconds from a number, ``'1.5'`` or ``'1.5s'``; frames from ``'20f'`` or :class:`Frames`."""
    if isinstance(value, (Frames, bool)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return _finite_nonnegative(float(value), what)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|f)?\s*", str(value))
    if not m:
        raise ValueError(f"{what} must be seconds ('1.0', '1s') or frames ('20f'), got {value!r}")
    number, unit = float(m.group(1)), m.group(2) or "s"
    if unit == "f":
        if number != int(number):
            raise ValueError(f"a {what} in frames must be a whole number, got {value!r}")
        return Frames(int(number))
    return _finite_nonnegative(number, what)


def _finite_nonnegative(x: float, what: str) -> float:
    if not x == x or x in (float("inf"), float("-inf")) or x < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {x}")
    return x


def to_frames(duration: Duration, fps: float) -> int:
    """Frames of a duration at ``fps`` (seconds rounded to the nearest frame)."""
    if isinstance(duration, Frames):
        return int(duration)
    return int(round(float(duration) * fps))


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own."""

    def frame_kwargs(self, fps: float) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class MethodSpec:
    """A generation method: the function, its options, whether it loops, what it costs.

    ``options`` is a frozen dataclass whose field defaults are the method's defaults (durations in
    seconds, or :class:`Frames`) and whose ``frame_kwargs(fps)`` turns them into the keyword
    arguments of ``generate`` (frames). ``row_generators``: ``generate`` takes one random generator
    per batch row (for noise it draws itself). ``timeline(rows, max_frames, loop, **frame_kwargs)``
    builds the method's graphs (to check a timeline before sampling).
    """

    name: str
    generate: Callable[..., Generation]
    options: type = NoOptions
    loops: bool = False
    parallel: bool = True
    cost: str = "1 per step"
    summary: str = ""
    row_generators: bool = False
    timeline: Optional[Callable[..., list[FactorGraph]]] = None

    def check_timeline(self, rows: Rows, max_frames: int, fps: float, options: Any = None,
                       loop: bool = False) -> None:
        """Build the method's graphs without sampling: bad lengths raise GraphError now."""
        self.check_loop(loop)
        if self.timeline is not None:
            self.timeline(rows, max_frames, loop, **self.make_options(options).frame_kwargs(fps))

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]

    def make_options(self, values: Any = None, **overrides: Any):
        """Options from an instance, a mapping of user values, or keywords; unknown names are errors."""
        if isinstance(values, self.options) and not overrides:
            return values
        given = dataclasses.asdict(values) if dataclasses.is_dataclass(values) else dict(values or {})
        given.update(overrides)
        unknown = sorted(set(given) - set(self.option_names()))
        if unknown:
            raise ValueError(f"method {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                             f"its options: {self.option_names() or 'none'}")
        for f in dataclasses.fields(self.options):
            if f.name in given and "Duration" in str(f.type):
                given[f.name] = parse_duration(given[f.name], f"{self.name} option {f.name!r}")
        try:
            return self.options(**given)
        except TypeError as exc:
            raise ValueError(f"bad options for method {self.name!r}: {exc}") from None

    @property
    def takes_constraint(self) -> bool:
        """Whether ``generate`` applies known motion (a ``constraint`` argument, see
        :mod:`motion_collage.constraints`)."""
        return "constraint" in inspect.signature(self.generate).parameters

    def check_constraint(self, constraint: Any) -> None:
        if constraint is not None and not self.takes_constraint:
            takers = [n for n, s in METHODS.items() if s.takes_constraint]
            raise ValueError(f"method {self.name!r} cannot keep known motion (--prefix, --keyframes, --keep, "
                             f"--in_between, --edit); use one of {takers}")

    def check_loop(self, loop: bool) -> None:
        if loop and not self.loops:
            raise GraphError(f"method {self.name!r} cannot make a loop; use one of {loop_methods()}")

    def __call__(self, piece_denoiser, rows: Rows, noise: Tensor, setup: SamplingSetup, *, max_frames: int,
                 fps: float, options: Any = None, loop: bool = False, guidance=None,
                 generators: Optional[Sequence[torch.Generator]] = None, constraint: Any = None) -> Generation:
        """Run the method with its options (user units) resolved to frames at ``fps``; ``constraint``
        (methods that take one): a :class:`~motion_collage.constraints.ConstraintApplier`."""
        self.check_loop(loop)
        self.check_constraint(constraint)
        kwargs = self.make_options(options).frame_kwargs(fps)
        if constraint is not None:
            kwargs["constraint"] = constraint
        if self.loops:
            kwargs["loop"] = loop
        if self.row_generators and generators is not None:
            kwargs["generators"] = generators
        return self.generate(piece_denoiser, rows, noise, setup, max_frames=max_frames, guidance=guidance, **kwargs)


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry (called once by the module that defines it)."""
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """Look up a method by name; an unknown name lists the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {list(METHODS)}") from None


def loop_methods() -> list[str]:
    return [n for n, s in METHODS.items() if s.loops]


# --------------------------------------------------------------------------- shared helpers

def timeline_graphs(rows: Rows, max_frames: int, overlap: int = 0, loop: bool = False,
                    transition: str = "null") -> list[FactorGraph]:
    """One chain (or cycle) per batch row."""
    build = cycle if loop else chain
    return [build(list(r), overlap=overlap, max_frames=max_frames, transition=transition) for r in rows]


def check_noise(noise: Tensor, graphs: Sequence[FactorGraph]) -> None:
    expected = (len(graphs), max(g.num_frames for g in graphs))
    if tuple(noise.shape[:2]) != expected:
        raise ValueError(f"initial noise must have shape [{expected[0]}, {expected[1]}, D], got {tuple(noise.shape)}")


def finish(counter: CallCounter, motion: Tensor, graphs: list[FactorGraph], **extra) -> Generation:
    return Generation(motion, graphs, counter.calls, counter.frames, extra)


def total_frames(rows: Rows) -> int:
    """Padded length of a batch of rows (sum of each row's segment frames, maximum over rows)."""
    return max(sum(int(f) for _, f in r) for r in rows)
