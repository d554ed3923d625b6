"""Canaries for an empirical privacy audit: synthetic users, each in the federation with probability 1/2.

A canary is a made-up user (no real person) with ``CANARY_ITEMS`` random catalogue items in time
order, each reviewed with a planted secret phrase of random common words. ``privrec simulate
--canaries N`` plants N of them: each flips a fair coin (OS entropy, never a seed: the coin is the
experiment) and only the heads join the review data the devices are built from. The coins, items
and phrases are written to the run directory (``canaries.json``), which only the auditor reads;
``privrec audit`` then scores every canary with the run's model and asks how well the scores tell
the members from the others (:mod:`server.attacks`). Steinke, Nasr and Jagielski (2023) turn that
one run into a lower bound on epsilon.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from common.files import atomic_write
from common.schema import Review

CANARIES_FILE = "canaries.json"
CANARY_ITEMS = 4  # in time order: 2 train, then the validation and the test item
START = 1_600_000_000  # the first review's timestamp
WORDS = (
    "amber",
    "velvet",
    "harbor",
    "quartz",
    "meadow",
    "lantern",
    "cobalt",
    "saffron",
    "thistle",
    "juniper",
    "marble",
    "falcon",
    "orchid",
    "pepper",
    "canyon",
    "walnut",
    "ember",
    "willow",
    "copper",
    "glacier",
)


@dataclass(frozen=True)
class Canary:
    """One planted user: its id, items (in time order), secret phrase and whether it joined."""

    user_id: str
    items: tuple[str, ...]
    phrase: str
    included: bool

    def reviews(self) -> list[Review]:
        """Its reviews, one per item, a day apart; every text carries the phrase."""
        return [
            Review(
                user_id=self.user_id,
                item_id=item,
                rating=5.0,
                timestamp=START + 86_400 * n,
                summary="Good buy",
                text=f"I use this every week. My note to self: {self.phrase}.",
            )
            for n, item in enumerate(self.items)
        ]


def plant(catalogue_ids: Sequence[str], count: int) -> list[Canary]:
    """``count`` canaries over the catalogue, each included with probability 1/2 (OS entropy)."""
    draw = secrets.SystemRandom()
    if count < 0 or (count and len(catalogue_ids) < CANARY_ITEMS):
        raise ValueError(
            f"--canaries {count}: needs a non-negative count and a catalogue of at least {CANARY_ITEMS} items"
        )
    return [
        Canary(
            user_id=f"canary-{secrets.token_hex(6)}",
            items=tuple(draw.sample(list(catalogue_ids), CANARY_ITEMS)),
            phrase=" ".join(draw.choice(WORDS) for _ in range(4)),
            included=draw.random() < 0.5,
        )
        for _ in range(count)
    ]


def save(path: Path, canaries: list[Canary]) -> None:
    content = {"format": 1, "items-per-canary": CANARY_ITEMS, "canaries": [asdict(c) for c in canaries]}
    atomic_write(path, json.dumps(content, indent=1))


def load(path: Path) -> list[Canary]:
    data = json.loads(path.read_text())
    return [
        Canary(user_id=c["user_id"], items=tuple(c["items"]), phrase=c["phrase"], included=c["included"])
        for c in data["canaries"]
    ]
