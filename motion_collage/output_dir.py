"""Output folders that are complete or absent: checked before work starts, written beside the
target under a temporary name, renamed into place when complete.

A run killed with SIGKILL leaves its temporary folder behind (nothing can run then); the next run
for the same target removes every temporary whose process is gone. SIGTERM is turned into the same
clean-up as Ctrl-C by :func:`terminate_as_interrupt`.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Optional

from motion_core.cli import UsageError


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Raise a one-line UsageError now if ``out_dir`` cannot be written later."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output path {out_dir} is a file, not a folder; choose another --output_dir")
    if out_dir.exists() and not overwrite:
        raise UsageError(f"output folder {out_dir} exists; pass --overwrite or choose --output_dir")
    base = out_dir.parent if out_dir.parent.exists() else _existing_ancestor(out_dir)
    if not base.is_dir():
        raise UsageError(f"cannot create {out_dir}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=base)
    except OSError as exc:
        raise UsageError(f"cannot write into {base} ({exc.strerror or exc}); choose another --output_dir") from None
    os.close(fd)
    os.unlink(probe)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove temporaries of ``out_dir`` left by runs whose process no longer exists."""
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.(?:tmp|old)-(\d+)-")
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for entry in out_dir.parent.iterdir():
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


class AtomicFolder:
    """``with AtomicFolder(target) as tmp:`` write into ``tmp``; on success it becomes ``target``.

    On any failure (an exception, Ctrl-C, SIGTERM) the temporary folder and any parent folders
    created for it are removed, and an existing target is left untouched.
    """

    def __init__(self, target: Path, overwrite: bool = False) -> None:
        self.target = Path(target)
        self.overwrite = overwrite
        self.tmp: Optional[Path] = None
        self._created: Optional[Path] = None

    def __enter__(self) -> Path:
        parent = self.target.parent
        if not parent.exists():
            missing = [p for p in [parent, *parent.parents] if not p.exists()]
            self._created = missing[-1]
            parent.mkdir(parents=True)
        remove_stale_temporaries(self.target)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-{os.getpid()}-", dir=parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self._commit()
                return False
            except BaseException:
                self._discard()
                raise
        self._discard()
        return False

    def _commit(self) -> None:
        old = None
        if self.target.exists():
            if not self.overwrite:
                raise UsageError(f"output folder {self.target} appeared while running; nothing was replaced")
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}-{os.urandom(3).hex()}"
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _discard(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self._created is not None:
            _remove_empty_up_to(self.target.parent, self._created)


def _remove_empty_up_to(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    current = folder
    while True:
        try:
            current.rmdir()
        except OSError:
            return
        if current == top:
            return
        current = current.parent


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, so clean-up code runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner's worker)
        pass
