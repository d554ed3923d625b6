"""What a client trains and evaluates on: its decrypted local store, split, and the catalogue."""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from client.encryption import KdfLimits, Secret
from client.store import LocalStore, StoreMetadata
from common.catalogue import Catalogue
from common.split import Split, leave_last_out

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's users (pseudonymous), their leave-last-out split and the item catalogue."""

    metadata: StoreMetadata
    split: Split
    catalogue: Catalogue

    @property
    def users(self) -> list[str]:
        """Users with training reviews."""
        return self.split.users()

    def eval_users(self, target: str, *, limit: int = 0, seed: int = 0) -> list[str]:
        """Users with a held-out ``target`` item; a seeded subset of ``limit`` when set."""
        held_out = self.split.valid if target == "valid" else self.split.test
        users = sorted(u for u in held_out if held_out[u].item_id in self.catalogue.index)
        if limit and len(users) > limit:
            users = sorted(random.Random(seed).sample(users, limit))
        return users

    @classmethod
    def load(
        cls, store: str | Path, secret: Secret, catalogue: Catalogue, *, kdf_limits: KdfLimits | None = None
    ) -> ClientData:
        """Decrypt ``store`` into memory (cached per file version and catalogue).

        Reviews of items the catalogue does not hold are left out (counted in the log): the
        model cannot rank them, and no later step may fail on one of them.
        """
        path = Path(store)
        stat = path.stat() if path.is_file() else None
        key = (str(path.resolve()), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
        return _load(key, secret, catalogue, kdf_limits)


@functools.lru_cache(maxsize=4)
def _load(key: tuple, secret: Secret, catalogue: Catalogue, kdf_limits: KdfLimits | None) -> ClientData:
    local = LocalStore.open(key[0], secret, kdf_limits=kdf_limits)
    known = [r for r in local.reviews if r.item_id in catalogue.index]
    if len(known) < len(local.reviews):
        log.warning(
            "store %s: %d review(s) of items missing from the catalogue left out",
            key[0],
            len(local.reviews) - len(known),
        )
    split = leave_last_out(known)
    log.info(
        "opened store %s: %d reviews of %d users (%s)", key[0], len(known), len(split.train), local.metadata.anonymiser
    )
    return ClientData(metadata=local.metadata, split=split, catalogue=catalogue)
