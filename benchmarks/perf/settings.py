"""The bench's own choices, written once: what it times and with which method settings.

Method names, option types and defaults come from the method registry
(:func:`motion_collage.methods.get_method`); only the bench's departures from those defaults are
here. Defaults shared with the rest of the toolkit (guidance, DDIM eta, dtypes) come from
``motion_core``.
"""
from __future__ import annotations

from typing import Any

from motion_collage.methods import get_method
from motion_core.spec import HUMANML3D

PROMPT = "a person walks forward"  # one prompt per motion, as in the paper's 24 s benchmark
FPS = HUMANML3D.fps
MAX_FRAMES = HUMANML3D.max_frames
SAMPLER = "ddim"
# Methods timed when --methods is not given ("independent" is left out: it has no transitions).
TIMED_METHODS = ("collage", "average", "replacement", "reconstruction", "doubletake", "naive")
# Departures from the registry defaults (overlaps and DoubleTake's handshake 1 s, blend 0.5 s,
# 50 % autoregressive windows, reconstruction weight 1): with one prompt per motion the collage's
# overlaps carry that prompt.
METHOD_CHOICES: dict[str, dict[str, Any]] = {"collage": {"transition": "prompt"}}
# The README quickstart's generation: 3 prompts x 4 s, the collage with its default options.
QUICKSTART = (("a person walks forward", 80), ("a person waves the right hand", 80), ("a person runs", 80))


def method_options(method: str) -> Any:
    """The options dataclass of ``method`` as the bench runs it."""
    return get_method(method).make_options(METHOD_CHOICES.get(method, {}))


def frames(duration_s: float) -> int:
    """Frames of a duration in seconds at the bench's frame rate."""
    return round(duration_s * FPS)
