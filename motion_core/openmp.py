"""How idle OpenMP threads wait, chosen from what else is running before torch is imported.

libgomp reads ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` once, when torch loads it. The small
default model makes many short parallel regions per sampling step, so the choice matters
(median of 3, the README quickstart's 50 steps, 2-core CPU, docs/performance.md):

===========================  ==============  ===========================
idle threads                 quiet machine   another 2-thread job running
===========================  ==============  ===========================
spin (libgomp's default)     0.92 s          16.6 s
spin 10,000 (used if quiet)  0.84 s          3.0 s
sleep (PASSIVE, if busy)     1.36 s          1.64 s
===========================  ==============  ===========================

"Busy" is read from the kernel's count of runnable threads (``/proc/loadavg``), not from the load
average: the 1-minute average still counts a previous run of this command for a minute after it
ended, which made back-to-back runs on a quiet machine sleep.
"""
from __future__ import annotations

import os
import time
from typing import Mapping, MutableMapping, Optional

QUIET_SPINCOUNT = "10000"
_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def wait_settings(other_runnable: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set: none if the user set either one; sleep (``PASSIVE``) when another
    thread wants a core (torch starts one thread per core, so any other runnable thread means a
    shared core); otherwise a short spin."""
    if any(name in environ for name in _USER_SETTINGS):
        return {}
    if other_runnable >= 1:
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {"GOMP_SPINCOUNT": QUIET_SPINCOUNT}


def other_runnable_threads(path: str = "/proc/loadavg", reads: int = 5) -> Optional[int]:
    """Runnable threads besides this one: the fewest of ``reads`` readings 2 ms apart (a thread
    that is busy stays runnable; a short-lived one drops out). None where the file is missing."""
    counts = []
    for i in range(reads):
        try:
            with open(path, encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < reads:
            time.sleep(0.002)
    return max(min(counts) - 1, 0)


def configure_openmp_waiting(environ: Optional[MutableMapping[str, str]] = None,
                             other_runnable: Optional[int] = None) -> dict[str, str]:
    """Set :func:`wait_settings` in ``environ`` (default ``os.environ``); call before importing torch.

    ``other_runnable`` defaults to :func:`other_runnable_threads`; where that cannot be read
    (no ``/proc``), nothing is set. Returns what was set.
    """
    environ = os.environ if environ is None else environ
    if other_runnable is None:
        other_runnable = other_runnable_threads()
        if other_runnable is None:
            return {}
    settings = wait_settings(other_runnable, environ)
    environ.update(settings)
    return settings
