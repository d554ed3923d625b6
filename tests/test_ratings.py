"""Star predictions: the released item offsets on the device's user mean, and the release's bound."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from client.secure_release import item_counts, sensitivity
from common import records
from common.catalogue import Catalogue
from common.config import RunConfig
from common.ratings import errors, item_offsets, predict, rating_value, user_mean
from common.schema import Item, Review
from common.split import Split


def test_rating_values_span_minus_one_to_one():
    assert [rating_value(s) for s in (1, 2, 3, 4, 5, 7)] == [-1.0, -0.5, 0.0, 0.5, 1.0, 1.0]


def test_item_offsets_shrink_rare_items_to_the_mean_and_keep_frequent_ones():
    counts = np.array([100.0, 1.0, 100.0, -3.0])  # noised counts may go negative
    sums = np.array([100.0, 1.0, -50.0, 2.0])     # 5 stars, one 5-star rater, 2 stars on average, noise
    offsets, mean = item_offsets(counts, sums, shrinkage=5.0)
    assert mean == pytest.approx(3 + 2 * 53 / 201)  # the negative count clipped to 0
    assert offsets[0] > offsets[1] > 0 > offsets[2]
    assert offsets[0] == pytest.approx(2 * ((100 + 5 * 53 / 201) / 105 - 53 / 201))
    assert np.isfinite(offsets).all() and (np.abs(offsets) <= 4).all()


def test_a_user_level_is_their_own_mean_pulled_to_the_global_one_and_predictions_stay_in_range():
    mine = [Review("u", "a", 5.0, 0, "", ""), Review("u", "b", 5.0, 1, "", "")]
    assert user_mean(mine, 4.0, 2.0) == pytest.approx(4.5)
    assert user_mean([], 4.0, 2.0) == 4.0
    assert predict(4.5, np.array([1.0, -4.0, 0.2])).tolist() == [5.0, 1.0, pytest.approx(4.7)]
    assert errors(np.array([4.0, 2.0]), np.array([5.0, 2.0])) == {"rmse": pytest.approx(math.sqrt(0.5)), "mae": 0.5}


def test_no_user_moves_the_released_vector_by_more_than_the_sensitivity():
    """The curious server's view: one user's whole effect on the counts-and-ratings vector, however
    they rated and however many reviews they wrote, stays within sqrt(2k)."""
    catalogue = Catalogue({i: Item(i, f"item {i}") for i in "abcdef"})
    cfg = RunConfig(release_recent_items=3)
    extreme = [Review("x", i, stars, t, "", "") for t, (i, stars) in enumerate(zip("abcdef", [1, 5, 1, 5, 1, 1]))]
    others = {"y": [Review("y", "a", 4.0, 0, "", "")]}
    with_user = SimpleNamespace(users=["x", "y"], split=Split(train={"x": extreme, **others}), catalogue=catalogue)
    without = SimpleNamespace(users=["y"], split=Split(train=others), catalogue=catalogue)
    difference = item_counts(with_user, 3, True) - item_counts(without, 3, True)
    assert np.linalg.norm(difference) <= sensitivity(records.RELEASE_ITEM_COUNTS, cfg, catalogue.ids) + 1e-12
    assert sensitivity(records.RELEASE_ITEM_COUNTS, cfg, catalogue.ids) == pytest.approx(math.sqrt(6))
    assert difference[:6].tolist() == [0, 0, 0, 1, 1, 1] and difference[6:].tolist() == [0, 0, 0, 1, -1, -1]
    assert sensitivity(records.RELEASE_ITEM_COUNTS, cfg.replace(release_ratings=False), catalogue.ids) == pytest.approx(math.sqrt(3))
    assert item_counts(with_user, 3).shape == (6,)


def test_past_the_release_width_the_vector_is_a_sketch_of_fixed_size_that_reads_items_back():
    from common.sketch import ReleaseLayout

    ids = tuple(f"item-{n:06d}" for n in range(20_000))
    layout = ReleaseLayout(ids, 600)
    assert layout.sketched and layout.length == 600 and layout.rows == 3
    truth = np.zeros(len(ids))
    truth[[5, 50, 500, 5000]] = [40.0, 25.0, 10.0, 3.0]  # a few items that users picked
    vector = sum(layout.encode([row], [1.0], bound=100.0) * value for row, value in
                 zip([5, 50, 500, 5000], [40.0, 25.0, 10.0, 3.0]))
    decoded = layout.decode(vector)
    np.testing.assert_allclose(decoded[[5, 50, 500, 5000]], [40.0, 25.0, 10.0, 3.0])
    assert np.abs(decoded).max() <= 40.0 and np.median(np.abs(decoded)) == 0.0  # the others read back 0
    exact = ReleaseLayout(ids[:500], 600)
    assert not exact.sketched and exact.length == 500 and exact.decode(np.arange(500.0)).tolist() == list(range(500))


def test_a_sketched_users_contribution_is_clipped_to_the_sensitivity_whatever_collides():
    """The curious server's view: however a user's items collide in the sketch's buckets, their
    vector stays within sqrt(rows) x sqrt(k), the bound the noise is calibrated for."""
    from common.sketch import ReleaseLayout

    layout = ReleaseLayout(tuple(f"i{n}" for n in range(1000)), 6)  # 2 buckets per row: everything collides
    index, sign = layout.slots
    same = [r for r in range(1000) if (index[r] == index[0]).all() and (sign[r] == sign[0]).all()][:3]
    assert len(same) == 3  # three items in the same buckets with the same signs: norm 3 sqrt(3) unclipped
    vector = layout.encode(same, [1.0, 1.0, 1.0], bound=math.sqrt(3))
    assert np.linalg.norm(vector) == pytest.approx(math.sqrt(3) * math.sqrt(3))
    cfg = RunConfig(release_recent_items=3, release_width=6)
    assert sensitivity(records.RELEASE_ITEM_COUNTS, cfg, layout.item_ids) == pytest.approx(math.sqrt(2 * 3 * 3))
