"""Outputs that appear complete or not at all: a temporary beside the target, renamed into place.

Used by every command that writes (sample, render, smpl_fit, prepare, benchmarks).

The temporary of a target ``T`` (folder or file) is ``.T.<random>.tmp`` in T's folder (plus
T's suffix, e.g. ``.out.npy.<random>.tmp.npy``, so tools that pick a format by suffix work). While
the run that made it lives, it holds an exclusive ``flock`` on it; the kernel drops the lock
when the process dies, however it dies (``kill -9`` included). So a later run tells a killed
run's leftover (unlocked) from a live run's (locked) and removes only the former, before it
makes its own. A temporary is created under a ``.new`` name and renamed to ``.tmp`` once
locked, so a ``.tmp`` name is never seen unlocked while its run lives.

    with staged_dir(out_dir, overwrite=False) as tmp:
        ...write into tmp...              # on success tmp becomes out_dir; on error it is removed
    with staged_file(path) as tmp:
        np.save(tmp, array)               # tmp has path's suffix, so format-by-suffix tools work
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows): leftovers are kept
    fcntl = None

PathLike = Union[str, Path]
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
NEW_GRACE_S = 60.0  # a ".new" temporary younger than this may still be about to be locked
_HELD: set[int] = set()  # lock descriptors of this process (closed in forked workers)


def temporary_names(target: Path) -> list[Path]:
    """Temporaries of ``target`` in its folder (of any run, live or dead), sorted."""
    folder = target.parent
    if not folder.is_dir():
        return []
    prefix = f".{target.name}."
    ends = tuple(kind + tail for kind in (".tmp", ".new") for tail in {"", target.suffix})
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(ends))


def _try_lock(path: Path) -> Optional[int]:
    """A descriptor holding the exclusive lock of ``path``, or None if a live run holds it
    (or it cannot be opened: a symlink or a FIFO under a temporary's name is left alone)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(target: PathLike) -> list[Path]:
    """Remove the temporaries of ``target`` left by killed runs; returns what was removed.

    Without ``fcntl`` (Windows) nothing is removed: a live run cannot be told from a dead one.
    """
    removed = []
    if fcntl is None:  # pragma: no cover
        return removed
    target = Path(target)
    new_ends = (".new", ".new" + target.suffix)
    for path in temporary_names(target):
        try:
            if path.name.endswith(new_ends) and time.time() - path.lstat().st_mtime < NEW_GRACE_S:
                continue
        except FileNotFoundError:  # another run removed it meanwhile
            continue
        fd = _try_lock(path)
        if fd is None:
            continue
        try:
            _remove(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD.add(fd)
    return fd


def _release(fd: int) -> None:
    _HELD.discard(fd)
    os.close(fd)


def close_inherited_locks() -> None:
    """Close this process's copies of its parent's lock descriptors (a forked worker's
    initializer), so that the locks die with the parent and not with the last worker."""
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


def die_with_parent(parent_pid: int) -> None:
    """In a child process: ask Linux to SIGKILL it when its parent dies (a no-op elsewhere);
    exit at once if the parent already died before the request took effect."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def init_worker(parent_pid: int) -> None:
    """Initializer of a run's forked worker processes: SIGTERM back to its default action,
    no copies of the parent's locks, and (Linux) killed when the parent dies, so that a
    ``kill -9`` of the run leaves no orphan worker blocked on a pipe for ever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    close_inherited_locks()
    die_with_parent(parent_pid)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_modes(root: Path) -> None:
    """Give a temporary (made 0700/0600) the modes a plain mkdir/open would have given."""
    mask = _umask()
    for p in [root, *(root.rglob("*") if root.is_dir() else [])]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def _replace(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move ``tmp`` onto ``target``; an existing target (an empty folder, or anything with
    ``overwrite``) goes first to a temporary name and is removed after."""
    if not (target.exists() or target.is_symlink()):
        os.replace(tmp, target)
        return
    if not overwrite and not (target.is_dir() and not any(target.iterdir())):
        raise FileExistsError(f"{target} appeared while it was being written; nothing was replaced")
    old = target.with_name(f".{target.name}.old-{os.getpid()}.tmp{target.suffix}")
    os.replace(target, old)
    os.replace(tmp, target)
    _remove(old)


def _new_temporary(target: Path, is_dir: bool) -> tuple[Path, int]:
    """A locked temporary beside ``target`` under its ``.tmp`` name, and its lock descriptor."""
    prefix, tail = f".{target.name}.", target.suffix
    if is_dir:
        fresh = Path(tempfile.mkdtemp(prefix=prefix, suffix=".new" + tail, dir=target.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=".new" + tail, dir=target.parent)
        os.close(handle)
        fresh = Path(name)
    try:
        fd = _lock(fresh)
    except BaseException:
        _remove(fresh)
        raise
    tmp = fresh.with_name(fresh.name[:-len(".new" + tail)] + ".tmp" + tail)
    os.replace(fresh, tmp)
    return tmp, fd


def _prepare_folder(target: Path) -> Optional[Path]:
    """Create ``target``'s folder if needed; returns the top-most folder created (or None)."""
    parent = target.parent
    for p in [parent, *parent.parents]:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"cannot write {target}: {p} is a file, not a folder")
    missing = [p for p in [parent, *parent.parents] if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _remove_created(folder: Path, top: Optional[Path]) -> None:
    """Remove the folders made for a failed output (``folder`` up to ``top``) while empty."""
    if top is None:
        return
    current = folder
    while True:
        try:
            current.rmdir()
        except OSError:
            return
        if current == top:
            return
        current = current.parent


@contextlib.contextmanager
def _staged(target: PathLike, overwrite: bool, is_dir: bool) -> Iterator[Path]:
    target = Path(target)
    created = _prepare_folder(target)
    remove_stale_temporaries(target)
    tmp, fd = _new_temporary(target, is_dir=is_dir)
    try:
        yield tmp
        _publish_modes(tmp)
        _replace(tmp, target, overwrite)
    except BaseException:
        _remove(tmp)
        _remove_created(target.parent, created)
        raise
    finally:
        _release(fd)


def staged_dir(target: PathLike, *, overwrite: bool = False):
    """Context manager: an empty folder beside ``target`` that becomes ``target`` when the block
    ends without error (replacing an existing one only with ``overwrite``); removed otherwise,
    with any parent folders made for it."""
    return _staged(target, overwrite, is_dir=True)


def staged_file(target: PathLike, *, overwrite: bool = True):
    """Context manager: a temporary file path beside ``target`` (same suffix) that becomes
    ``target`` when the block ends without error; removed otherwise."""
    return _staged(target, overwrite, is_dir=False)


# --------------------------------------------------------------------------- output checks

def _probe_writable(folder: Path, target: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
    except OSError as exc:
        raise ValueError(f"cannot write {target}: {exc.strerror or exc} in {folder}; "
                         f"choose a writable output folder") from None
    os.close(fd)
    os.unlink(probe)


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.anchor or "/")


def check_output_folder(folder: PathLike, overwrite: bool) -> Path:
    """Before any work: a folder can be written at ``folder`` (ValueError, one line, otherwise).
    Nothing is created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output path {folder} is a file, not a folder; choose another output folder")
    if folder.exists() and not overwrite:
        raise ValueError(f"output folder {folder} exists; pass --overwrite or choose another output folder")
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise ValueError(f"cannot create {folder}: {base} is a file, not a folder")
    _probe_writable(base, folder)
    return folder


def check_output_file(path: PathLike, suffixes: Optional[tuple[str, ...]] = None) -> Path:
    """Before any work: a file can be written at ``path`` — the suffix, not a folder, no file
    where a parent folder must go, a writable folder (ValueError, one line, otherwise).
    Nothing is created."""
    path = Path(path)
    if path.is_dir():
        example = path / ("out" + (suffixes[0] if suffixes else ".png"))
        raise ValueError(f"output {path} is an existing folder; give a file path instead, e.g. {example}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"output {path} must end in {' or '.join(suffixes)}")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise ValueError(f"cannot write {path}: {base} is a file, not a folder; choose another output path")
    _probe_writable(base, path)
    return path


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` so that cleanup code runs (the
    default action kills at once). Only in the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
