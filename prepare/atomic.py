"""Outputs that appear complete or not at all: a temporary beside the target, renamed into place.

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


def init_worker(parent_pid: int) -> None:
    """Initializer of a run's forked worker processes: SIGTERM back to its default action,
    no copies of the parent's locks, and (Linux) killed when the parent dies, so that a
    ``kill -9`` of the run leaves no orphan worker blocked on a pipe for ever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    close_inherited_locks()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


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


def _prepare_folder(target: Path) -> None:
    parent = target.parent
    for p in [parent, *parent.parents]:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"cannot write {target}: {p} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def staged_dir(target: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` that becomes ``target`` when the block ends
    without error (replacing an existing one only with ``overwrite``); removed otherwise."""
    target = Path(target)
    _prepare_folder(target)
    remove_stale_temporaries(target)
    tmp, fd = _new_temporary(target, is_dir=True)
    try:
        yield tmp
        _publish_modes(tmp)
        _replace(tmp, target, overwrite)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _release(fd)


@contextlib.contextmanager
def staged_file(target: PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file path beside ``target`` (same suffix) that becomes ``target``
    when the block ends without error; removed otherwise."""
    target = Path(target)
    _prepare_folder(target)
    remove_stale_temporaries(target)
    tmp, fd = _new_temporary(target, is_dir=False)
    try:
        yield tmp
        _publish_modes(tmp)
        _replace(tmp, target, overwrite)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _release(fd)


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
