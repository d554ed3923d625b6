"""Per-user leave-last-out split of reviews into train, validation and test."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.schema import Review

MIN_REVIEWS_FOR_EVAL = 3


@dataclass
class Split:
    """Train reviews per user (chronological) and at most one valid and one test review per user."""

    train: dict[str, list[Review]] = field(default_factory=dict)
    valid: dict[str, Review] = field(default_factory=dict)
    test: dict[str, Review] = field(default_factory=dict)

    def users(self) -> list[str]:
        """Sorted ids of users that have train data."""
        return sorted(user for user, reviews in self.train.items() if reviews)

    def train_items(self, user: str) -> set[str]:
        """Ids of the items the user reviewed in train (empty for an unknown user)."""
        return {review.item_id for review in self.train.get(user, [])}


def _chronological(review: Review) -> tuple[int, str]:
    return review.timestamp, review.item_id


def _latest_per_item(reviews: list[Review]) -> list[Review]:
    """Keep only the latest review of each item (input order breaks timestamp ties), sorted."""
    latest: dict[str, Review] = {}
    for review in sorted(reviews, key=lambda r: r.timestamp):  # stable: later input wins ties
        latest[review.item_id] = review
    return sorted(latest.values(), key=_chronological)


def leave_last_out(reviews: Iterable[Review]) -> Split:
    """Per user sorted by (timestamp, item_id): last -> test, second last -> valid, rest -> train."""
    by_user: dict[str, list[Review]] = defaultdict(list)
    for review in reviews:
        by_user[review.user_id].append(review)
    split = Split()
    for user in sorted(by_user):
        history = _latest_per_item(by_user[user])
        if len(history) < MIN_REVIEWS_FOR_EVAL:
            split.train[user] = history
            continue
        split.train[user] = history[:-2]
        split.valid[user] = history[-2]
        split.test[user] = history[-1]
    return split
