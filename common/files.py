"""Files written so that a crash at any moment leaves either the old version or the new one, whole.

Every writer of state (run directories, policies, ledger anchors, certificates, the central DP
account, audit reports, caches) goes through :func:`atomic_write`: the data goes to a uniquely
named temporary file beside the target, is flushed to disk, and is renamed over the target (an
atomic step on POSIX file systems); the folder is synced so that the rename survives a power cut.
The encrypted store and ledger stream through the same steps in :mod:`client.encryption`;
folders (checkpoints) are swapped whole by :func:`replace_folder`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str, *, private: bool = False) -> Path:
    """Replace ``path`` with ``data`` (text is UTF-8) in one step; the file is 0600 from the start
    when ``private``. On any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        if not private:
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_folder(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Replace the folder ``target`` with what ``write(folder)`` puts in a fresh folder, so that a crash
    leaves the old folder or the new one, whole (the files are synced before the swap).

    The swap takes two renames: between them only ``.<name>.old`` exists, which
    :func:`current_folder` finds."""
    target = Path(target)
    fresh, old = target.with_name(f".{target.name}.new"), target.with_name(f".{target.name}.old")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    try:
        write(fresh)
        for file in fresh.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as handle:
                    os.fsync(handle.fileno())
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(fresh, target)
    fsync_folder(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def current_folder(target: str | Path) -> Path | None:
    """The folder :func:`replace_folder` last completed at ``target`` (None when there is none)."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    return target if target.is_dir() else old if old.is_dir() else None
