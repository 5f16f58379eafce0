"""Peak memory of a block of work: the CUDA allocator's peak, or on CPU the peak-RSS growth."""
from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path
from typing import Optional

import torch


def _proc_status_kib(key: str) -> Optional[int]:
    """A ``/proc/self/status`` counter in KiB, or None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or on CPU the peak-RSS growth.

    CPU: freed heap is returned to the system (``malloc_trim``), the kernel's peak-RSS counter
    is reset (``/proc/self/clear_refs``), and the result is ``VmHWM - VmRSS before``: what the
    block made resident, allocator slack included. ``bytes`` is None when the counters are
    unavailable.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: Optional[int] = None
        self.method = ("cuda max_memory_allocated - allocated before" if device.type == "cuda"
                       else "peak RSS growth (VmHWM after clear_refs, minus VmRSS before)")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self._base = _proc_status_kib("VmRSS")
            except OSError:
                self._base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._base is not None:
            peak = _proc_status_kib("VmHWM")
            self.bytes = None if peak is None else max(0, peak - self._base) * 1024
