"""The data one run works on: loaded once per process, split, and cut into client partitions."""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass

from common.catalogue import Catalogue
from common.config import RunConfig
from common.data import ReviewData, load_dataset, load_items
from common.partition import partition_users
from common.split import Split, leave_last_out

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # identity hash: one object per loaded data set
class RunData:
    """Reviews, their leave-last-out split and the catalogue the model ranks."""

    data: ReviewData
    split: Split
    catalogue: Catalogue

    @classmethod
    def load(cls, cfg: RunConfig) -> RunData:
        """Load and split the configured files (cached per process)."""
        return _load(str(cfg.reviews_file), str(cfg.items_file), cfg.on_bad_record)

    def client_users(self, cfg: RunConfig, partition_id: int) -> list[str]:
        """Users held by client ``partition_id`` under the configured partition scheme."""
        parts = _partitions(self, cfg.num_clients, cfg.partition, cfg.dirichlet_alpha, cfg.seed)
        if not 0 <= partition_id < len(parts):
            raise ValueError(
                f"partition-id {partition_id} is outside 0..{len(parts) - 1}; `num-clients` is {cfg.num_clients}."
            )
        return parts[partition_id]

    def eval_users(self, cfg: RunConfig, target: str) -> list[str]:
        """Users with a held-out item; for validation a fixed random subset when ``max-eval-users`` is set.

        Test metrics always use every user, so they are comparable across runs and settings.
        """
        held_out = self.split.valid if target == "valid" else self.split.test
        users = sorted(held_out)
        if target == "valid" and cfg.max_eval_users and len(users) > cfg.max_eval_users:
            users = sorted(random.Random(cfg.seed).sample(users, cfg.max_eval_users))
        return users


def load_catalogue(cfg: RunConfig) -> Catalogue:
    """The public item catalogue alone (what the server needs to build and rank with the model)."""
    return _catalogue(str(cfg.items_file), cfg.on_bad_record)


@functools.lru_cache(maxsize=4)
def _catalogue(items: str, on_bad: str) -> Catalogue:
    return Catalogue(load_items(items, on_bad=on_bad)[0])


@functools.lru_cache(maxsize=4)
def _load(reviews: str, items: str, on_bad: str) -> RunData:
    data = load_dataset(reviews, items, on_bad=on_bad)
    split = leave_last_out(data.reviews)
    log.info(
        "loaded %d reviews, %d users, %d items from %s", len(data.reviews), len(split.train), len(data.items), reviews
    )
    return RunData(data=data, split=split, catalogue=Catalogue(data.items))


@functools.lru_cache(maxsize=8)
def _partitions(run_data: RunData, num_clients: int, scheme: str, alpha: float, seed: int) -> list[list[str]]:
    return partition_users(run_data.split, run_data.data.items, num_clients, scheme=scheme, alpha=alpha, seed=seed)
