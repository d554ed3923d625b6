"""Tests of assigning users to federated clients."""

from __future__ import annotations

from collections import Counter

import pytest

from common.partition import partition_users, user_labels
from common.schema import Item, Review
from common.split import Split, leave_last_out

CATEGORIES = ["Drums", "Guitars", "Keys", "Mics", "Violins"]
USERS_PER_CATEGORY = 20


@pytest.fixture(scope="module")
def world() -> tuple[Split, dict[str, Item]]:
    """100 users, each reviewing 5 items of one category (3 in train)."""
    items = {f"{c}-{k}": Item(f"{c}-{k}", f"{c} item {k}", (c, "Music")) for c in CATEGORIES for k in range(5)}
    reviews = [Review(f"{c}-u{u:02d}", f"{c}-{k}", 5.0, k, "", "")
               for c in CATEGORIES for u in range(USERS_PER_CATEGORY) for k in range(5)]
    return leave_last_out(reviews), items


def dominant_share(clients: list[list[str]], labels: dict[str, str]) -> float:
    """Mean over clients of the share of its most common label."""
    return sum(Counter(labels[u] for u in c).most_common(1)[0][1] / len(c) for c in clients) / len(clients)


def assert_valid_partition(clients: list[list[str]], split: Split, num_clients: int) -> None:
    """Every user in exactly one non-empty, sorted client."""
    assert len(clients) == num_clients
    assert all(clients) and all(client == sorted(client) for client in clients)
    flat = [user for client in clients for user in client]
    assert sorted(flat) == split.users() and len(flat) == len(set(flat))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
@pytest.mark.parametrize("num_clients", [1, 3, 10, 100])
def test_when_partitioned_then_every_user_in_exactly_one_nonempty_client(world, scheme: str, num_clients: int) -> None:
    split, items = world
    assert_valid_partition(partition_users(split, items, num_clients, scheme=scheme, alpha=0.1), split, num_clients)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_when_same_seed_then_same_partition_and_other_seed_differs(world, scheme: str) -> None:
    split, items = world
    first = partition_users(split, items, 7, scheme=scheme, seed=3)
    assert first == partition_users(split, items, 7, scheme=scheme, seed=3)
    assert first != partition_users(split, items, 7, scheme=scheme, seed=4)


def test_when_iid_then_client_sizes_differ_by_at_most_one(world) -> None:
    split, items = world
    sizes = [len(client) for client in partition_users(split, items, 7)]
    assert max(sizes) - min(sizes) <= 1


def test_when_dirichlet_with_small_alpha_then_labels_skewed(world) -> None:
    split, items = world
    labels = user_labels(split, items)
    iid = dominant_share(partition_users(split, items, 5, scheme="iid"), labels)
    def mean_share(alpha: float) -> float:
        shares = [dominant_share(partition_users(split, items, 5, scheme="dirichlet", alpha=alpha, seed=s), labels)
                  for s in range(10)]
        return sum(shares) / len(shares)

    assert iid < 0.4 and mean_share(1000.0) < 0.4  # ~0.2-0.35: mixed labels
    assert mean_share(0.05) > 0.6  # ~0.7: most clients dominated by one label


def test_when_labels_computed_then_most_frequent_first_category_with_ties_by_name() -> None:
    items = {"a": Item("a", "A", ("Zither",)), "b": Item("b", "B", ("Banjo", "Zither")), "c": Item("c", "C"),
             "d": Item("d", "D", ("Zither",))}
    split = Split(train={"u1": [Review("u1", i, 5.0, 0, "", "") for i in ("a", "b")],
                         "u2": [Review("u2", i, 5.0, 0, "", "") for i in ("a", "b", "d")],
                         "u3": [Review("u3", "c", 5.0, 0, "", "")]})
    assert user_labels(split, items) == {"u1": "Banjo", "u2": "Zither", "u3": "<unknown>"}


@pytest.mark.parametrize("num_clients", [0, -1, 101])
def test_when_num_clients_out_of_range_then_value_error(world, num_clients: int) -> None:
    split, items = world
    with pytest.raises(ValueError, match=rf"num_clients .*number of users \(100\), got {num_clients}"):
        partition_users(split, items, num_clients)


def test_when_unknown_scheme_then_value_error_names_it_and_allowed(world) -> None:
    split, items = world
    with pytest.raises(ValueError, match=r"'random'.*'iid', 'dirichlet'"):
        partition_users(split, items, 2, scheme="random")


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan")])
def test_when_dirichlet_alpha_not_positive_then_value_error(world, alpha: float) -> None:
    split, items = world
    with pytest.raises(ValueError, match="alpha"):
        partition_users(split, items, 2, scheme="dirichlet", alpha=alpha)
