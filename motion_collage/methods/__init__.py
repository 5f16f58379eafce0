"""Long-motion generation methods on one piece denoiser: the collage and the baselines.

Every method takes the same inputs — a piece denoiser, one list of segments ``(prompt, frames)``
per batch row, a sampler with its sigma grid, and the initial noise of the whole long sequence —
and returns a :class:`Generation`. The noise is drawn once for the long sequence; methods that
work window by window use its slices, so all methods start from the same noise.

Each module of this package registers its methods (:func:`register_method`); adding a method is
one new module here. Look methods up with :func:`get_method`; ``METHODS`` maps names to
:class:`MethodSpec` (function, options dataclass with defaults, loop capability, cost).
"""
import importlib
import pkgutil

from .base import (METHODS, Duration, Frames, Generation, MethodSpec, NoOptions, SamplingSetup, get_method,
                   loop_methods, parse_duration, register_method, timeline_graphs, to_frames, total_frames)
from . import collage  # noqa: F401  (registered first: the default method heads the list)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

from .autoregressive import (Window, autoregressive_windows, generate_reconstruction,  # noqa: E402
                             generate_replacement)
from .collage import generate_average, generate_collage, generate_independent, generate_naive, naive_prompt  # noqa: E402
from .doubletake import feathered_layout, generate_doubletake  # noqa: E402

__all__ = ["METHODS", "Duration", "Frames", "Generation", "MethodSpec", "NoOptions", "SamplingSetup",
           "get_method", "loop_methods", "parse_duration", "register_method", "timeline_graphs", "to_frames",
           "total_frames", "Window", "autoregressive_windows", "generate_collage", "generate_average",
           "generate_independent", "generate_naive", "naive_prompt", "generate_doubletake", "feathered_layout",
           "generate_replacement", "generate_reconstruction"]
