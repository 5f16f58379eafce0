"""Device and dtype names as users type them, resolved once for every entry point."""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``0``/``1``... -> ``cuda:N``.

    Raises ValueError (one line) when CUDA is asked for but absent, or the name is unknown.
    """
    text = str(name).strip()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.isdigit():
        text = f"cuda:{text}"
    kind = text.split(":", 1)[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or a GPU index")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {text} was asked for, but no CUDA device is available; use cpu")
    return text


def get_dtype(name: str) -> torch.dtype:
    """Compute dtype by name; an unknown name lists the choices."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {list(DTYPES)}") from None
