"""On-disk cache of generated motion batches, so that no generation is ever lost.

One ``.npz`` file (no pickle) per generated batch, named by the SHA-256 of every setting that
determines its content (model and its hash, method and options, sampler, steps, eta, guidance,
seed, the rows' prompts and lengths, the first row's global index, dtype). Files are written to
a temporary name in the same folder and renamed, so a run killed at any moment leaves either a
complete entry or none; a rerun with the same settings finds the entries and skips their
generation. Evaluation settings (evaluator, transition window, ...) are not part of the key:
changing them re-evaluates from the cache.

The cache does not trust its files: every entry stores its own key and a SHA-256 of its arrays,
both checked on every read. A truncated, emptied or otherwise unreadable entry, or one copied over
another key's file, is reported in one warning line and treated as missing (so it is generated
again and never scored). Temporaries left by a killed writer are removed on the next use.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

CACHE_FORMAT = 1        # part of every key: changing it invalidates every cache
ENTRY_FORMAT = 2        # 2: entries carry "key" and "checksum" (1: the bare arrays, read when still valid)
ARRAYS = ("features", "frames", "meta")
TMP_SUFFIX = ".tmp.npz"
# A temporary written on another host is removed only when older than this (its writer may live).
FOREIGN_TMP_SECONDS = 24 * 3600
# What numpy / zipfile / zlib / json raise for a damaged file.
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


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


def entry_checksum(key: str, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the key and each array's name, dtype, shape and bytes (``ARRAYS`` order)."""
    h = hashlib.sha256(f"motion-collage-cache-entry:{key}".encode())
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class DamagedEntry(ValueError):
    """A cache file that cannot be trusted (unreadable, wrong key, wrong checksum)."""


def _print_warning(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _host() -> str:
    return "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _temporary_is_stale(path: Path, now: float) -> bool:
    """``.<key>.<host>.<pid>.tmp.npz`` (or the older ``.<key>.<pid>.tmp.npz``) whose writer is gone."""
    parts = path.name[: -len(TMP_SUFFIX)].split(".")
    pid_text = parts[-1] if len(parts) >= 3 else ""
    host = parts[-2] if len(parts) >= 4 else _host()
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > FOREIGN_TMP_SECONDS:  # no write takes a day; the pid may have been reused since
        return True
    if host != _host() or not pid_text.isdigit():
        return False
    return int(pid_text) != os.getpid() and not _pid_alive(int(pid_text))


class BatchCache:
    """Generated batches under ``root/<group>/<key>.npz`` (``group`` is only for browsing).

    An entry holds ``features`` ``[B, T, D]`` float32 (raw, de-normalised features, zero past
    each row's length), ``frames`` ``[B]`` int64, ``meta`` (a JSON string: the settings and the
    generation's costs), ``key`` and ``checksum`` (:func:`entry_checksum`).
    ``warn``: receives the one-line warning about each damaged entry (default: printed on stderr
    as ``warning: ...``).
    """

    def __init__(self, root: str | Path, warn: Optional[Callable[[str], None]] = None) -> None:
        self.root = Path(root)
        self._warn = warn
        self._warned: set[Path] = set()
        self._swept = False

    def path(self, key: str, group: str = "") -> Path:
        return self.root / group / f"{key}.npz"

    def has(self, key: str, group: str = "") -> bool:
        """True when a complete, verified entry exists (a damaged one counts as absent)."""
        return self.load(key, group) is not None

    def load(self, key: str, group: str = "") -> dict[str, Any] | None:
        """The entry as ``{"features", "frames", "meta"}``, or None if absent or damaged (warned)."""
        self.remove_stale_temporaries()
        path = self.path(key, group)
        if not path.is_file():
            return None
        try:
            return self._read(path, key)
        except DamagedEntry as err:
            self._report(path, str(err))
            return None

    def _read(self, path: Path, key: str) -> dict[str, Any]:
        """Read and verify one entry; raises DamagedEntry with the reason."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except READ_ERRORS as err:  # first sentence only: numpy's would suggest unpickling the file
            raise DamagedEntry(f"unreadable ({type(err).__name__}: {str(err).split('. ')[0]})") from None
        if any(name not in arrays for name in ARRAYS):
            raise DamagedEntry(f"it lacks {[n for n in ARRAYS if n not in arrays]}")
        if "key" in arrays or "checksum" in arrays:
            stored = str(arrays.get("key", ""))
            if stored != key:
                raise DamagedEntry(f"it holds the entry of key {stored[:16]}..., not of its file name")
            if str(arrays.get("checksum", "")) != entry_checksum(key, arrays):
                raise DamagedEntry("its checksum does not match its arrays")
        meta = self._parse_meta(arrays["meta"])
        if "key" not in arrays and not self._legacy_key_ok(meta, key):
            raise DamagedEntry("an old-format entry whose settings do not hash to its file name")
        features, frames = arrays["features"], arrays["frames"]
        if features.ndim != 3 or frames.shape != (features.shape[0],):
            raise DamagedEntry(f"features {features.shape} and frames {frames.shape} do not fit together")
        return {"features": features, "frames": frames, "meta": meta}

    @staticmethod
    def _parse_meta(raw: np.ndarray) -> dict[str, Any]:
        try:
            meta = json.loads(str(raw))
        except ValueError as err:
            raise DamagedEntry(f"its meta is not JSON ({err})") from None
        if not isinstance(meta, dict):
            raise DamagedEntry(f"its meta is a {type(meta).__name__}, not a JSON object")
        return meta

    @staticmethod
    def _legacy_key_ok(meta: Mapping[str, Any], key: str) -> bool:
        """An entry written before keys were stored is kept only if its settings give its key."""
        settings = meta.get("settings")
        return isinstance(settings, dict) and settings_key(settings) == key

    def _report(self, path: Path, reason: str) -> None:
        if path in self._warned:
            return
        self._warned.add(path)
        line = f"cache entry {path} is damaged ({reason}); treating it as missing, it will be generated again"
        (self._warn or _print_warning)(" ".join(line.split()))

    def save(self, key: str, features: np.ndarray, frames: np.ndarray, meta: Mapping[str, Any],
             group: str = "") -> Path:
        """Write an entry atomically (temporary file in the same folder, then rename)."""
        self.remove_stale_temporaries()
        path = self.path(key, group)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"features": np.asarray(features, dtype=np.float32),
                  "frames": np.asarray(frames, dtype=np.int64),
                  "meta": np.array(json.dumps(dict(meta), sort_keys=True, default=str))}
        tmp = path.with_name(f".{path.stem}.{_host()}.{os.getpid()}{TMP_SUFFIX}")
        try:
            np.savez_compressed(tmp, **arrays, key=np.array(key), checksum=np.array(entry_checksum(key, arrays)),
                                entry_format=np.array(ENTRY_FORMAT))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._warned.discard(path)
        return path

    def remove_stale_temporaries(self, force: bool = False) -> list[Path]:
        """Delete temporaries whose writer is gone (once per cache object unless ``force``)."""
        if self._swept and not force:
            return []
        self._swept = True
        if not self.root.is_dir():
            return []
        now, removed = time.time(), []
        for tmp in self.root.rglob(f".*{TMP_SUFFIX}"):
            if _temporary_is_stale(tmp, now):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    def entries(self, verify: bool = False) -> list[Path]:
        """Complete entries (temporary files excluded); ``verify`` also drops damaged ones (warned)."""
        self.remove_stale_temporaries()
        paths = sorted(p for p in self.root.rglob("*.npz") if not p.name.startswith("."))
        if not verify:
            return paths
        return [p for p in paths if self.load(p.stem, str(p.parent.relative_to(self.root))) is not None]
