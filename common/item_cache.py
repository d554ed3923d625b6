"""The catalogue's pooled vectors, kept on disk between processes.

The item tower reads the frozen base model's pooled vectors of every item text. They depend only on
public inputs (the base checkpoint, the catalogue, ``max-item-tokens``, the compute device), so a
fresh process (in deployment every message starts a new ClientApp) reads them from
``$PRIVREC_CACHE_DIR`` (default ``~/.cache/privrec``) instead of running the base model over the
whole catalogue again. No user data is written. A file that does not match its key, or does not
read, is recomputed and replaced; a cache that cannot be written is only a slower run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from common.files import atomic_write

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "PRIVREC_CACHE_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")


def cache_dir() -> Path:
    """``$PRIVREC_CACHE_DIR``, else ``~/.cache/privrec``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "privrec")


def cache_key(model_dir: Path, max_tokens: int, ids: Sequence[str], texts: Sequence[str], device: str) -> str:
    """A digest of everything the pooled vectors depend on: the checkpoint's files (name, size,
    modification time), the token budget, the device type, torch's version and every item's id and text."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    header = [
        str(Path(model_dir).resolve()),
        max_tokens,
        torch.device(device).type,
        torch.__version__,
        [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
        len(ids),
    ]
    digest.update(json.dumps(header).encode())
    for item_id, text in zip(ids, texts, strict=True):
        digest.update(json.dumps([item_id, text]).encode())
    return digest.hexdigest()[:32]


def cached_pooled(key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The pooled vectors stored under ``key``, or ``compute()`` stored there for the next process."""
    path = cache_dir() / "item-vectors" / f"{key}.safetensors"
    try:
        return load_file(path)["pooled"]
    except FileNotFoundError:
        pass
    except (OSError, KeyError, SafetensorError) as err:
        log.info("item-vector cache %s unreadable (%s); recomputing it", path, type(err).__name__)
    pooled = compute()
    try:
        atomic_write(path, save({"pooled": pooled.detach().cpu().contiguous()}))
    except OSError as err:
        log.info(
            "item-vector cache not written (%s: %s); set %s to a writable folder",
            path.parent,
            err.strerror or err,
            CACHE_DIR_ENV,
        )
    return pooled
