"""Tests of the leave-last-out split."""

from __future__ import annotations

from common.schema import Review
from common.split import Split, leave_last_out


def review(user: str, item: str, timestamp: int, rating: float = 5.0) -> Review:
    """A review with only the fields the split looks at."""
    return Review(user, item, rating, timestamp, "", "")


def test_when_user_has_history_then_last_is_test_second_last_valid_rest_train() -> None:
    split = leave_last_out([review("A", "i3", 30), review("A", "i1", 10), review("A", "i4", 40),
                            review("A", "i2", 20)])
    assert [r.item_id for r in split.train["A"]] == ["i1", "i2"]
    assert split.valid["A"].item_id == "i3" and split.test["A"].item_id == "i4"


def test_when_timestamps_tie_then_item_id_breaks_the_tie() -> None:
    split = leave_last_out([review("A", "b", 5), review("A", "z", 9), review("A", "a", 9), review("A", "c", 5)])
    assert [r.item_id for r in split.train["A"]] == ["b", "c"]
    assert split.valid["A"].item_id == "a" and split.test["A"].item_id == "z"


def test_when_user_has_fewer_than_three_reviews_then_all_in_train() -> None:
    split = leave_last_out([review("S", "x", 2), review("S", "w", 1), review("T", "y", 1)])
    assert [r.item_id for r in split.train["S"]] == ["w", "x"] and [r.item_id for r in split.train["T"]] == ["y"]
    assert split.valid == {} and split.test == {}


def test_when_item_reviewed_twice_then_only_latest_review_kept() -> None:
    reviews = [review("A", "i1", 10, 1.0), review("A", "i2", 20), review("A", "i1", 50, 4.0), review("A", "i3", 30)]
    split = leave_last_out(reviews)
    assert [r.item_id for r in split.train["A"]] == ["i2"]
    assert split.valid["A"].item_id == "i3"
    assert split.test["A"] == review("A", "i1", 50, 4.0)


def test_when_duplicates_make_user_short_then_all_in_train() -> None:
    split = leave_last_out([review("A", "i1", 1), review("A", "i1", 2), review("A", "i2", 3)])
    assert [(r.item_id, r.timestamp) for r in split.train["A"]] == [("i1", 2), ("i2", 3)]
    assert "A" not in split.test


def test_when_duplicate_has_same_timestamp_then_later_input_wins() -> None:
    split = leave_last_out([review("A", "i1", 1, 2.0), review("A", "i1", 1, 3.0)])
    assert [r.rating for r in split.train["A"]] == [3.0]


def test_when_several_users_then_users_sorted_and_train_items_known() -> None:
    reviews = [review(u, f"{u}{k}", k) for u in ("C", "A", "B") for k in range(4)] + [review("D", "d", 1)]
    split = leave_last_out(reviews)
    assert split.users() == ["A", "B", "C", "D"]
    assert split.train_items("B") == {"B0", "B1"} and split.train_items("nobody") == set()
    assert sorted(split.test) == ["A", "B", "C"] and split.test["C"].item_id == "C3"
    for user, history in split.train.items():
        assert history == sorted(history, key=lambda r: (r.timestamp, r.item_id)), user


def test_when_no_reviews_then_empty_split() -> None:
    assert leave_last_out([]) == Split()
