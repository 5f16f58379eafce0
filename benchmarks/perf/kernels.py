"""Kernel-launching ATen operations of a block of eager PyTorch work.

This is the only module of the bench on a private torch API: ``TorchDispatchMode`` lives in
``torch.utils._python_dispatch`` and has no public home. It is needed because the count must be
taken below autograd and the Python API, where each call is one ATen operation, i.e. one device
kernel on a GPU (the public ``TorchFunctionMode`` sees Python-level calls, one of which may
launch several kernels, or none). Used by the analytic GPU estimate only.
"""
from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode

# ATen operations that allocate, alias or read a scalar but launch no device kernel.
NON_KERNEL_OPS = {"empty", "empty_like", "empty_strided", "detach", "alias", "lift_fresh", "_local_scalar_dense",
                  "set_", "resize_", "zeros", "new_empty", "new_empty_strided"}


class KernelCounter(TorchDispatchMode):
    """Counts ATen operations that would launch a device kernel (views and allocations excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in NON_KERNEL_OPS:
            self.kernels += 1
        return func(*args, **(kwargs or {}))
