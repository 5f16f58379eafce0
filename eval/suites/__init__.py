"""Evaluation suites: what to generate, and how to score what was generated.

=========  ==========================================================================================
suite      per replication
=========  ==========================================================================================
single     ``samples_per_rep`` (caption, length) pairs drawn from the test split; one clip each, of
           the caption's real clip length. R-precision top-1/2/3 (batches of 32), MM-Dist, FID
           against the test split, diversity. Plus a shuffled-text control: the same motions scored
           against a derangement of their captions. Optionally (``mm_batches``) MultiModality, and MDM's
           evaluation lengths and padding (``lengths``, ``padding``; the ``mdm`` protocol).
long       the paper's long-motion benchmark: per drawn test caption a ``long_seconds`` (24 s) motion,
           every node on the same prompt (``transition="prompt"`` for the collage); a random crop of
           the caption's real clip length is scored like ``single``.
compose    FlowMDM's composition benchmark on scenes of consecutive test (caption, length) pairs
           (:mod:`eval.scenes`): each segment scored like ``single``; each transition on a window of
           ``transition_window`` frames centred on the boundary: transition FID and diversity against
           random real crops of that length, the mean jerk curve, Peak Jerk and Area Under the Jerk.
loop       looped motions of ``loop_seconds``: the window across the seam (last frames followed by
           the first) against a window inside the loop (centred half a period away): jerk curves,
           PJ, AUJ, transition FID; plus R-precision/MM-Dist/FID of the whole loop. The baseline
           ``concat`` generates a plain (open) motion and joins its end to its start.
=========  ==========================================================================================

Protocol presets (the settings of each published table, with sources): :mod:`eval.suites.presets`;
FlowMDM's scene files: :mod:`eval.suites.flowmdm`.

Every suite also gets a ``real`` row: the same scores computed on real test motions. Numbers from
our Bandai Namco evaluator are NOT comparable with published HumanML3D numbers.

One module per suite; every module of this package is imported here and registers its suite
(:func:`register_suite`), so adding a suite is one new module. The interface is
:class:`~eval.suites.base.Suite`; shared data and metric code is in :mod:`eval.suites.scoring`.
Generation seeds are per row (``row_offset``), see ``motion_collage.pipeline``.
"""
import importlib
import pkgutil

from .base import (SUITES, MethodCall, Plan, Suite, SuiteSetting, WindowedSuite, get_suite, make_suite,
                   register_suite, setting, suite_settings)
from .scoring import (Embedder, Reference, Row, Scored, SplitData, derangement, draw_items, matching_metrics,
                      motion_joints, rng_for, shuffled_text, transition_scores)

_PUBLISHED = ("single", "long", "compose", "loop")     # registered first, in this order
_SHARED = ("base", "scoring")

for _name in _PUBLISHED:
    importlib.import_module(f"{__name__}.{_name}")
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name not in _PUBLISHED + _SHARED and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SUITES", "MethodCall", "Plan", "Suite", "SuiteSetting", "WindowedSuite", "get_suite", "make_suite",
           "register_suite", "setting", "suite_settings", "Embedder", "Reference", "Row", "Scored", "SplitData",
           "derangement", "draw_items", "matching_metrics", "motion_joints", "rng_for", "shuffled_text",
           "transition_scores"]
