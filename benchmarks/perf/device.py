"""The accelerator: nominal peaks of the GPUs we may be lent (one table), the measured matmul rate.

The table serves both the measured run (the fraction of the nominal peak a throughput run reaches)
and the analytic estimate (peaks and bandwidth of the target GPU).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class GPU:
    """Nominal dense peaks (no sparsity) from the vendor's data sheet.

    ``match``: the text that identifies the GPU in ``torch.cuda.get_device_name``; ``hbm``: the
    memory bandwidth in bytes/s (None where not tabulated: not an estimate target).
    """

    name: str
    match: str
    bf16_tflops: float  # bf16/fp16 tensor cores
    tf32_tflops: float  # tf32 tensor cores
    fp32_tflops: float  # fp32 without tensor cores
    hbm: Optional[float] = None

    def peak(self, dtype: str, tf32: bool) -> float:
        """Peak FLOP/s for a compute dtype (``bf16``/``fp16``, else fp32 with or without TF32)."""
        tflops = self.bf16_tflops if dtype in ("bf16", "fp16") else self.tf32_tflops if tf32 else self.fp32_tflops
        return 1e12 * tflops


# In matching order: a more specific name first ("H100 PCIe" before "H100").
GPUS = {
    "h100-pcie": GPU("H100 PCIe", "H100 PCIe", 756.0, 378.0, 51.2),
    "h100": GPU("H100 SXM5", "H100", 989.4, 494.7, 66.9, hbm=3.35e12),
    "h200": GPU("H200", "H200", 989.4, 494.7, 66.9, hbm=4.8e12),
    "a100": GPU("A100", "A100", 312.0, 156.0, 19.5),
}


def estimate_targets() -> list[str]:
    """GPUs the analytic estimate can target (those with a tabulated bandwidth)."""
    return sorted(key for key, gpu in GPUS.items() if gpu.hbm is not None)


def gpu_named(device_name: str) -> Optional[GPU]:
    """The table's entry for a CUDA device name, or None when the GPU is not tabulated."""
    return next((gpu for gpu in GPUS.values() if gpu.match in device_name), None)


def nominal_peak(device: torch.device, dtype: str, tf32: bool) -> Optional[float]:
    """Vendor peak FLOP/s for this GPU and dtype, or None when unknown (CPUs included)."""
    if device.type != "cuda":
        return None
    gpu = gpu_named(torch.cuda.get_device_name(device))
    return None if gpu is None else gpu.peak(dtype, tf32)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(device: torch.device, dtype: torch.dtype, m: int = 4096, k: int = 512, n: int = 1024,
              seconds: float = 1.0) -> float:
    """Measured FLOP/s of the model's dominant matmul shape (tokens x 512 -> 1024)."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        count += 10
        sync(device)
    return 2.0 * m * k * n * count / (time.perf_counter() - start)
