"""Host synchronisations of a sampling loop, per step, with their call sites in the toolkit."""
from __future__ import annotations

import os
import sys
from types import FrameType
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .zoo import REPO_ROOT

HOST_READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "nonzero",
              "masked_select", "unique", "unique_consecutive", "argwhere", "nonzero_static"}
HOST_WRITES = {"tensor", "as_tensor", "from_numpy", "asarray"}
DEVICE_MOVES = {"to", "cpu", "cuda"}
TOOLKIT_PACKAGES = ("motion_collage", "mdm_adapter", "motion_core")

CallSite = Callable[[Optional[FrameType]], Optional[str]]


def toolkit_call_site(frame: Optional[FrameType]) -> Optional[str]:
    """``file:line:function`` of the innermost frame (from ``frame`` outwards) in a toolkit package.

    None when the bench itself (``benchmarks``) is reached first: the bench's own calls are not
    the toolkit's. Frames of torch and the standard library are skipped.
    """
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).split(".", 1)[0]
        if package in TOOLKIT_PACKAGES:
            rel = os.path.relpath(frame.f_code.co_filename, REPO_ROOT)
            return f"{rel}:{frame.f_lineno}:{frame.f_code.co_name}"
        if package == "benchmarks":
            return None
        frame = frame.f_back
    return None


class HostSyncAudit(TorchFunctionMode):
    """Records torch calls that would make the host wait for a GPU, per sampling step.

    * host reads: a tensor's value read by Python (``bool``, ``float``, ``int``, ``.item()``,
      ``.tolist()``, ``nonzero``, boolean-mask indexing, ...): a device-to-host copy and a sync;
    * host writes: tensors built from Python data (``torch.tensor``, ``as_tensor``): on a GPU a
      pageable host-to-device copy, which PyTorch completes synchronously;
    * device moves: ``.to(device)`` / ``.cpu()`` with an explicit device (a copy unless the tensor
      is already there; on a CPU-only run this cannot be told apart, so they are listed apart).

    Only calls for which ``call_site`` names a site are recorded (by default: calls made from the
    toolkit's packages); ``step`` is set by the sampler callback.
    """

    def __init__(self, call_site: CallSite = toolkit_call_site) -> None:
        super().__init__()
        self.call_site = call_site
        self.step = -1
        self.events: list[dict] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        kind = _kind(name, args, kwargs)
        if kind is not None:
            site = self.call_site(sys._getframe(1))  # the caller of the torch function
            if site is not None:
                self.events.append({"step": self.step, "kind": kind, "call": name, "site": site})
        return func(*args, **kwargs)

    def per_step(self, kind: str, first: int = 1) -> dict[str, int]:
        """Call sites of ``kind`` events in steps >= ``first`` (after the one-off setup), with counts."""
        out: dict[str, int] = {}
        for e in self.events:
            if e["kind"] == kind and e["step"] >= first:
                key = f"{e['call']} @ {e['site']}"
                out[key] = out.get(key, 0) + 1
        return out


def _kind(name: str, args: tuple, kwargs: dict) -> Optional[str]:
    """``host_read``, ``host_write``, ``device_move`` or None for a torch call."""
    if name in HOST_READS:
        return "host_read"
    if name == "__getitem__" and len(args) > 1 and _has_bool_index(args[1]):
        return "host_read"
    if name in HOST_WRITES:
        return "host_write"
    if name in DEVICE_MOVES and (name != "to" or _moves_device(args[1:], kwargs)):
        return "device_move"
    return None


def _has_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in items)


def _moves_device(args, kwargs) -> bool:
    targets = list(args) + [kwargs.get("device")]
    return any(isinstance(a, (torch.device, str, Tensor)) for a in targets if a is not None)
