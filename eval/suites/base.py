"""The suite interface and its registry.

A suite is a frozen dataclass whose fields are its settings (their defaults follow the published
protocol) and whose methods say everything the benchmark needs:

==========================  =================================================================
``rows(data, rep)``         the rows replication ``rep`` generates (the same for every method)
``plan(data, reps, out)``   rows of every replication, files to write beside the results
                            (e.g. the compose suite's ``scenes.json``), notes for the header
``rows_per_batch``          rows per generated batch
``method_call(name, opts)`` what a benchmark method name generates with (:class:`MethodCall`)
``score`` / ``score_real``  scores of generated rows / of real test motions (:class:`Scored`)
``controls``                extra rows scored from the same motions (e.g. shuffled text)
``describe(notes)``         one line for the results header
class attributes            ``summary``, ``default_methods``, ``table_metrics``, ``bar_metrics``,
                            ``jerk_curves`` (plotted in ``jerk.png``), ``uses_real_jerk``
==========================  =================================================================

Fields made with :func:`setting` (a help text) are ``--flags`` of ``eval.benchmark``, so a suite
with new settings is still one new module of this package (registered with
:func:`register_suite`).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np

from motion_collage.methods import METHODS, MethodSpec, get_method

from .scoring import Embedder, Reference, Row, Scored, SplitData


def setting(default: Any, help: str, choices: Optional[Sequence[str]] = None) -> Any:
    """A suite setting that is also a command-line flag (``help`` is its help text)."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices) if choices else None})


MAX_ROWS = 100_000          # generated motions per replication
MAX_BATCH = 4096            # rows per generated batch
MAX_SECONDS = 3600.0        # one generated motion at most an hour


def check_whole(name: str, value: Any, low: int, why: str = "", high: Optional[int] = None) -> None:
    """``value`` a whole number in ``[low, high]``, else a ValueError naming the setting."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if not ok or (high is not None and value > high):
        limits = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{name} must be a whole number {limits}{why}, got {value!r}")


def check_seconds(name: str, value: Any, high: float = MAX_SECONDS) -> None:
    """``value`` a finite number of seconds in ``(0, high]``, else a ValueError naming the setting."""
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not (number and math.isfinite(value) and 0 < value <= high):
        raise ValueError(f"{name} must be a number of seconds > 0 and <= {high:g}, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    """``value`` a finite number > 0, else a ValueError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


# --------------------------------------------------------------------------------------------
# What a method name generates with, and a suite's plan
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodCall:
    """A benchmark method: its name in the tables, the registered method it runs, that method's
    options (its options dataclass, user units) and whether the rows are closed into loops."""

    name: str
    method: str
    options: Any
    loop: bool = False

    @property
    def spec(self) -> MethodSpec:
        return get_method(self.method)

    def frame_settings(self, fps: float) -> dict[str, Any]:
        """Method, every option in frames, loop: what the generated content depends on."""
        return {"method": self.method, "options": self.spec.make_options(self.options).frame_kwargs(fps),
                "loop": self.loop}

    def check_rows(self, rows: Sequence[Row], max_frames: int, fps: float) -> None:
        """Build the method's timelines for every distinct row shape now (bad lengths raise)."""
        seen: set[tuple[int, ...]] = set()
        for r in rows:
            shape = tuple(f for _, f in r.segments)
            if shape not in seen:
                seen.add(shape)
                self.spec.check_timeline([list(r.segments)], max_frames, fps, self.options, self.loop)


@dataclass(frozen=True)
class Plan:
    """Rows per replication; files to write into the output folder before generating (name ->
    writer of that path); notes about the plan for the header and ``results.json``."""

    rows: dict[int, list[Row]]
    files: dict[str, Callable[[Path], Any]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Suite:
    """Settings every suite has, and the interface (see the module doc)."""

    samples_per_rep: int = setting(1024, "generated motions per replication (not compose; default 1024 = "
                                         "32 batches of 32)")
    batch_size: int = setting(32, "rows per generated batch (not compose)")
    seed: int = setting(0, "seed of the prompts, crops, metric draws and generation noise")
    diversity_pairs: int = setting(300, "pairs for diversity (capped at the number of samples)")
    r_precision_batch: int = 32          # capped at the number of samples

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_methods: ClassVar[tuple[str, ...]] = ("collage",)
    table_metrics: ClassVar[tuple[str, ...]] = ()
    bar_metrics: ClassVar[tuple[str, ...]] = ()
    jerk_curves: ClassVar[tuple[str, ...]] = ()
    uses_real_jerk: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_whole("samples_per_rep", self.samples_per_rep, 2, " (FID needs two samples)", MAX_ROWS)
        check_whole("batch_size", self.batch_size, 1, "", MAX_BATCH)
        check_whole("seed", self.seed, 0)
        check_whole("diversity_pairs", self.diversity_pairs, 1)
        check_whole("r_precision_batch", self.r_precision_batch, 1)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> "Suite":
        """The suite from a mapping holding (at least) its settings; None values keep the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

    # ---- plan
    def rows(self, data: SplitData, rep: int) -> list[Row]:
        raise NotImplementedError

    def plan(self, data: SplitData, replications: int, out_dir: Optional[Path] = None) -> Plan:
        return Plan({rep: self.rows(data, rep) for rep in range(replications)})

    @property
    def rows_per_batch(self) -> int:
        return self.batch_size

    def batches(self, rows: Sequence[Row]) -> list[tuple[int, list[Row]]]:
        """(global index of the first row, rows) per generated batch."""
        size = self.rows_per_batch
        return [(i, list(rows[i:i + size])) for i in range(0, len(rows), size)]

    # ---- methods
    def method_names(self) -> list[str]:
        """The benchmark method names this suite takes."""
        return list(METHODS)

    def suite_options(self, method: str) -> dict[str, Any]:
        """The protocol's own choices of a method's options (before the user's)."""
        return {}

    def method_call(self, name: str, overrides: Optional[Mapping[str, Any]] = None) -> MethodCall:
        """What method ``name`` generates with; ``overrides`` (user units) replace option values."""
        self.check_method(name)
        options = get_method(name).make_options({**self.suite_options(name), **dict(overrides or {})})
        return MethodCall(name, name, options)

    def check_method(self, name: str) -> None:
        if name not in self.method_names():
            raise ValueError(f"unknown method {name!r} for the {self.name} suite; "
                             f"expected one of {self.method_names()}")

    # ---- scores
    def score(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference, rep: int) -> Scored:
        """Scores of one method's replication. ``motions``: raw features [T_row, D] per row."""
        raise NotImplementedError

    def score_real(self, rows: Sequence[Row], ref: Reference, rep: int) -> Scored:
        """The ``real`` row: the suite's scores on real test motions."""
        raise NotImplementedError

    def controls(self, rows: Sequence[Row], motions: Sequence[np.ndarray], ref: Reference,
                 rep: int) -> dict[str, Scored]:
        """Control rows from the same motions, by label (reported as ``"<method> (<label>)"``)."""
        return {}

    def describe(self, notes: Mapping[str, Any]) -> str:
        """One line for the results header (``notes``: the plan's notes, ``real_jerk``, ...)."""
        raise NotImplementedError

    def reference(self, data: SplitData, embedder: Embedder) -> Reference:
        """The real-data references this suite scores against."""
        return Reference(data, embedder, seed=self.seed)


@dataclass(frozen=True)
class WindowedSuite(Suite):
    """A suite that also scores windows of ``transition_window`` frames against real windows (FID,
    diversity) and their jerk against the real jerk (PJ, AUJ)."""

    transition_window: int = setting(60, "frames per transition window (HumanML3D: 60)")
    real_jerk: Optional[float] = setting(None, "AUJ reference jerk (default: measured on the test split; "
                                               "HumanML3D: 0.0330)")
    real_crops: int = 512                # real windows in the transition reference

    uses_real_jerk = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_whole("transition_window", self.transition_window, 8, " frames")
        if self.real_jerk is not None:
            check_positive("real_jerk", self.real_jerk)
        check_whole("real_crops", self.real_crops, 2)

    def reference(self, data: SplitData, embedder: Embedder) -> Reference:
        return Reference(data, embedder, seed=self.seed, real_crops=self.real_crops,
                         real_jerk_override=self.real_jerk)

    def check_reference(self, data: SplitData) -> None:
        """Real windows of ``transition_window`` frames exist in the test split."""
        if not any(c.length >= self.transition_window for c in data.clips):
            raise ValueError(f"no test clip has {self.transition_window} frames for a transition window; "
                             "use a smaller --transition_window")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

SUITES: dict[str, type[Suite]] = {}


def register_suite(cls: type[Suite]) -> type[Suite]:
    """Class decorator: add a suite (a frozen dataclass subclass of :class:`Suite`) to the registry."""
    if not (isinstance(cls, type) and issubclass(cls, Suite) and dataclasses.is_dataclass(cls) and cls.name):
        raise TypeError(f"{cls!r} is not a named Suite dataclass")
    if cls.name in SUITES:
        raise ValueError(f"suite {cls.name!r} is registered twice")
    SUITES[cls.name] = cls
    return cls


def get_suite(name: str) -> type[Suite]:
    """A suite class by name; an unknown name lists the choices."""
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; expected one of {list(SUITES)}") from None


def make_suite(name: str, settings: Optional[Mapping[str, Any]] = None, **values: Any) -> Suite:
    """Suite ``name`` with its settings taken from ``settings`` and ``values`` (others ignored)."""
    return get_suite(name).from_settings({**dict(settings or {}), **values})


@dataclass(frozen=True)
class SuiteSetting:
    """A setting of one or more suites, as a command-line flag: base type, help, choices, and its
    default in each suite that has it."""

    name: str
    kind: type
    help: str
    choices: Optional[tuple[str, ...]]
    defaults: dict[str, Any]

    @property
    def suites(self) -> list[str]:
        return list(self.defaults)


def suite_settings() -> list[SuiteSetting]:
    """Every flag-making setting of the registered suites (base settings first)."""
    found: dict[str, SuiteSetting] = {}
    for cls in SUITES.values():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("help"):
                continue
            kind = _base_type(hints[f.name])
            old = found.get(f.name)
            if old is not None and old.kind is not kind:
                raise TypeError(f"suite {cls.name!r} redefines setting {f.name!r} as {kind.__name__}, "
                                f"not {old.kind.__name__}")
            defaults = {**(old.defaults if old else {}), cls.name: f.default}
            found[f.name] = SuiteSetting(f.name, kind, f.metadata["help"], f.metadata["choices"], defaults)
    return list(found.values())


def _base_type(hint: Any) -> type:
    """``int`` for ``int`` or ``Optional[int]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint
