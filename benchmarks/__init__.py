"""Performance lab of the toolkit: not part of the installed library.

Run from the repository root, e.g. ``python -m benchmarks.perf --smoke``. It measures the
installed packages (``motion_collage``, ``mdm_adapter``, ``motion_core``) from the outside: it
builds its own models and piece denoisers and never patches the library's objects.
"""
