"""How idle OpenMP threads wait, chosen from the machine's load before torch is imported.

libgomp reads ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` once, when torch loads it. The small
default model makes many short parallel regions per sampling step, so the choice matters
(median of 3, the README quickstart's 50 steps, 2-core CPU, docs/performance.md):

===========================  ==============  ===========================
idle threads                 quiet machine   another 2-thread job running
===========================  ==============  ===========================
spin (libgomp's default)     0.92 s          16.6 s
spin 10,000 (used if quiet)  0.84 s          3.0 s
sleep (PASSIVE, if loaded)   1.36 s          1.64 s
===========================  ==============  ===========================
"""
from __future__ import annotations

import os
from typing import Mapping, MutableMapping, Optional

QUIET_SPINCOUNT = "10000"
_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def wait_settings(load: float, cores: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set: none if the user set either one; sleep (``PASSIVE``) when the
    1-minute load average leaves less than one idle core; otherwise a short spin."""
    if any(name in environ for name in _USER_SETTINGS):
        return {}
    if load + 1.0 > cores:
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {"GOMP_SPINCOUNT": QUIET_SPINCOUNT}


def configure_openmp_waiting(environ: Optional[MutableMapping[str, str]] = None) -> dict[str, str]:
    """Set :func:`wait_settings` in ``environ`` (default ``os.environ``); call before importing torch.

    Returns what was set. Without a load average (not every OS has one) nothing is set.
    """
    environ = os.environ if environ is None else environ
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return {}
    settings = wait_settings(load, os.cpu_count() or 1, environ)
    environ.update(settings)
    return settings
