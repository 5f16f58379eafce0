"""On-disk cache of generated motion batches, so that no generation is ever lost.

One ``.npz`` file (no pickle) per generated batch, named by the SHA-256 of every setting that
determines its content (model and its hash, method and options, sampler, steps, eta, guidance,
seed, the rows' prompts and lengths, the first row's global index, dtype). Files are written to
a temporary name in the same folder and renamed, so a run killed at any moment leaves either a
complete entry or none; a rerun with the same settings finds the entries and skips their
generation. Evaluation settings (evaluator, transition window, ...) are not part of the key:
changing them re-evaluates from the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

CACHE_FORMAT = 1


def settings_key(settings: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of JSON-serialisable settings (key order does not matter)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **settings}, sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class BatchCache:
    """Generated batches under ``root/<group>/<key>.npz`` (``group`` is only for browsing).

    An entry holds ``features`` ``[B, T, D]`` float32 (raw, de-normalised features, zero past
    each row's length), ``frames`` ``[B]`` int64 and ``meta`` (a JSON string: the settings and
    the generation's costs).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str, group: str = "") -> Path:
        return self.root / group / f"{key}.npz"

    def has(self, key: str, group: str = "") -> bool:
        return self.path(key, group).is_file()

    def load(self, key: str, group: str = "") -> dict[str, Any] | None:
        """The entry as ``{"features", "frames", "meta"}``, or None if absent."""
        path = self.path(key, group)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {"features": data["features"], "frames": data["frames"],
                    "meta": json.loads(str(data["meta"]))}

    def save(self, key: str, features: np.ndarray, frames: np.ndarray, meta: Mapping[str, Any],
             group: str = "") -> Path:
        """Write an entry atomically (temporary file in the same folder, then rename)."""
        path = self.path(key, group)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            np.savez_compressed(tmp, features=np.asarray(features, dtype=np.float32),
                                frames=np.asarray(frames, dtype=np.int64),
                                meta=np.array(json.dumps(dict(meta), sort_keys=True, default=str)))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def entries(self) -> list[Path]:
        """Complete entries (temporary files excluded)."""
        return sorted(p for p in self.root.rglob("*.npz") if not p.name.startswith("."))
