"""Files written so that a crash at any moment leaves either the old version or the new one, whole.

Every writer of state (run directories, policies, ledger anchors, certificates, the central DP
account, audit reports, caches) goes through :func:`atomic_write`: the data goes to a uniquely
named temporary file beside the target, is flushed to disk, and is renamed over the target (an
atomic step on POSIX file systems); the folder is synced so that the rename survives a power cut.
The encrypted store and ledger stream through the same steps in :mod:`client.encryption`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
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
