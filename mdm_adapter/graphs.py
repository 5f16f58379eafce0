"""CUDA graphs of one piece-denoiser call: the host leaves the sampling loop.

An eager sampling step of the release architecture launches about 164 kernels, and at batch 1 a
GPU finishes them faster than the host can queue them. A CUDA graph records the whole call once
(text rows, guidance rows, packing, the network, the guidance combination) and replays it with
one launch. The call reads inputs from **static buffers** (``x`` and ``sigma`` are copied into
them) and writes its x0 into a static output, which is copied out (a later replay overwrites it).

A graph is valid for one (shapes, dtype, mask values, conditions, guidance, autocast) key: the
mask and the conditions are baked into it (the denoiser reads them on the host once per new
tensor, before the capture, as in eager mode), so the captured step itself reads nothing from
the host, and a new layout with the same mask values (the next sample of the same length)
replays the same graph. That is
required by CUDA (a synchronisation inside a capture is an error) and checked on the CPU with
:class:`HostReadGuard` and :class:`EmulatedGraphs`, which run the same capture logic without a GPU.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

GRAPH_CACHE_SIZE = 4  # graphs kept per denoiser (each holds its activations' memory)
WARMUP_CALLS = 2  # eager calls on a side stream before a capture (lazy initialisation, autotuning)
HOST_READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "nonzero", "cpu",
              "tensor", "as_tensor", "from_numpy"}


class HostReadGuard(TorchFunctionMode):
    """Raise on any torch call that reads a tensor on the host or builds one from host data
    (``.item()``, ``bool(t)``, ``.tolist()``, ``nonzero``, ``.cpu()``, ``torch.tensor``, boolean
    indexing, ``.to("cpu")``): inside a CUDA graph capture each of them is an error or a
    silently frozen value."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        boolean_index = (name == "__getitem__" and len(args) > 1
                         and any(isinstance(i, Tensor) and i.dtype == torch.bool
                                 for i in (args[1] if isinstance(args[1], tuple) else (args[1],))))
        to_host = name == "to" and any(str(a) == "cpu" for a in list(args[1:]) + [kwargs.get("device")]
                                       if isinstance(a, (str, torch.device)))
        if name in HOST_READS or boolean_index or to_host:
            raise RuntimeError(f"host read in a captured step: torch {name}")
        return func(*args, **kwargs)


@dataclass
class _Graph:
    x: Tensor
    sigma: Tensor
    out: Tensor
    replay: Callable[[], None]
    keep: tuple  # the mask, guidance and network the graph reads (kept alive while it may be replayed)
    network_calls: int


class CudaGraphs:
    """Captures with ``torch.cuda.CUDAGraph`` (warm-up on a side stream, autocast cache off)."""

    name = "cuda"

    def check(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device; the inputs are on {device}")

    def capture(self, fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, Callable[[], None]]:
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                fn()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with _autocast_without_cache(device), torch.cuda.graph(graph):
            out = fn()
        return out, graph.replay


class EmulatedGraphs:
    """The capture logic without a GPU (tests): the "graph" is the call itself, run under
    :class:`HostReadGuard` on the static buffers and copied into the static output."""

    name = "emulated"

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def check(self, device: torch.device) -> None:
        pass

    def capture(self, fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, Callable[[], None]]:
        self.captures += 1
        with _autocast_without_cache(device), HostReadGuard():
            out = fn()

        def replay() -> None:
            self.replays += 1
            with _autocast_without_cache(device), HostReadGuard():
                out.copy_(fn())
        return out, replay


def _autocast_without_cache(device: torch.device):
    """The caller's autocast state with the weight-cast cache off (a cached cast made outside a
    capture would be freed under the graph)."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.get_autocast_dtype(kind), cache_enabled=False)


def autocast_key(device: torch.device) -> tuple:
    kind = device.type
    return (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None)


class GraphCache:
    """Graphs of one denoiser by key (least recently used dropped beyond :data:`GRAPH_CACHE_SIZE`)."""

    def __init__(self, backend: Any = None) -> None:
        self.backend = backend or CudaGraphs()
        self._graphs: "OrderedDict[tuple, _Graph]" = OrderedDict()
        self.captures = 0

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        self._graphs.clear()

    def run(self, key: tuple, keep: tuple, x: Tensor, sigma: Tensor,
            call: Callable[[Tensor, Tensor], Tensor], count_calls: Callable[[], int]) -> tuple[Tensor, int]:
        """x0 of ``call(x, sigma)`` through the graph of ``key`` (captured on first use, after one
        eager call that lets the caller read what it needs on the host), and the network calls
        that call stands for (``count_calls`` is read before and after the eager call; the
        caller resets its counter to its value before plus this number)."""
        self.backend.check(x.device)
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            entry.x.copy_(x)
            entry.sigma.copy_(sigma)
            entry.replay()
            return entry.out.clone(), entry.network_calls
        before = count_calls()
        eager = call(x, sigma)  # plans, packings and host facts are built here, outside the capture
        per_call = count_calls() - before
        static_x, static_sigma = x.clone(), sigma.clone()
        out, replay = self.backend.capture(lambda: call(static_x, static_sigma), x.device)
        self._graphs[key] = _Graph(static_x, static_sigma, out, replay, keep, per_call)
        self.captures += 1
        while len(self._graphs) > GRAPH_CACHE_SIZE:
            self._graphs.popitem(last=False)
        return eager, per_call


def graph_key(x: Tensor, sigma: Tensor, mask_content: bytes, extra: tuple) -> tuple:
    """What a graph is valid for: shapes, dtypes, device, the mask's values (a digest), autocast,
    and the caller's conditions and settings in ``extra``."""
    return (tuple(x.shape), x.dtype, x.device, tuple(sigma.shape), sigma.dtype, mask_content,
            autocast_key(x.device)) + extra
