"""Assign users to federated clients: IID or label-skewed (Dirichlet over item categories)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from common.schema import Item
from common.split import Split

PARTITION_SCHEMES = ("iid", "dirichlet")
UNKNOWN_LABEL = "<unknown>"


def user_labels(split: Split, items: dict[str, Item]) -> dict[str, str]:
    """Each user's most frequent first category among their train items (ties by name)."""
    labels: dict[str, str] = {}
    for user in split.users():
        counts = Counter(
            items[review.item_id].categories[0]
            for review in split.train[user]
            if review.item_id in items and items[review.item_id].categories
        )
        labels[user] = min(counts, key=lambda name: (-counts[name], name)) if counts else UNKNOWN_LABEL
    return labels


def _iid(users: list[str], num_clients: int, rng: np.random.Generator) -> list[list[str]]:
    shuffled = [users[i] for i in rng.permutation(len(users))]
    return [shuffled[client::num_clients] for client in range(num_clients)]


def _dirichlet(labels: dict[str, str], num_clients: int, alpha: float, rng: np.random.Generator) -> list[list[str]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    for user in sorted(labels):
        by_label[labels[user]].append(user)
    clients: list[list[str]] = [[] for _ in range(num_clients)]
    for label in sorted(by_label):
        members = [by_label[label][i] for i in rng.permutation(len(by_label[label]))]
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for index, part in enumerate(np.split(np.array(members, dtype=object), cuts)):
            clients[index].extend(part.tolist())
    for client in clients:  # repair: no client may be empty
        if not client:
            largest = max(clients, key=len)  # first of the largest on ties
            moved = max(largest)
            largest.remove(moved)
            client.append(moved)
    return clients


def partition_users(
    split: Split,
    items: dict[str, Item],
    num_clients: int,
    *,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> list[list[str]]:
    """Split the users with train data into ``num_clients`` non-empty, disjoint, sorted client lists."""
    if scheme not in PARTITION_SCHEMES:
        allowed = ", ".join(repr(s) for s in PARTITION_SCHEMES)
        raise ValueError(f"unknown partition scheme {scheme!r}; allowed: {allowed}")
    users = split.users()
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or not 1 <= num_clients <= len(users):
        raise ValueError(
            f"num_clients must be an integer between 1 and the number of users ({len(users)}), got {num_clients!r}"
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        clients = _iid(users, num_clients, rng)
    else:
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0 for the 'dirichlet' scheme, got {alpha!r}")
        clients = _dirichlet(user_labels(split, items), num_clients, float(alpha), rng)
    return [sorted(client) for client in clients]
