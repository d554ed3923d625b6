"""Reference recommenders on hand-made data."""

import numpy as np
import pytest

from common import baselines
from common.catalogue import Catalogue
from common.config import RunConfig
from common.run_data import RunData
from common.schema import Item, Review
from common.split import leave_last_out
from common.data import ReviewData


def _data(histories: dict[str, list[str]]) -> RunData:
    reviews = [Review(user_id=u, item_id=i, rating=5.0, timestamp=t, summary="", text="")
               for u, items in histories.items() for t, i in enumerate(items)]
    items = {i: Item(item_id=i, title=f"item {i}") for i in sorted({"a", "b", "c", "d", "e", "f"}.union(*histories.values()))}
    return RunData(data=ReviewData(reviews=reviews, items=items), split=leave_last_out(reviews),
                   catalogue=Catalogue(items))


def test_when_items_popular_then_popularity_ranks_them_first():
    data = _data({"u1": ["a", "b", "c", "d"], "u2": ["a", "e", "b", "f"], "u3": ["a", "f", "b", "c"]})
    scores = baselines.popularity_scores(data.split, data.catalogue)
    assert np.argmax(scores) == data.catalogue.index["a"]


def test_when_ties_then_popularity_prefers_earlier_id():
    data = _data({"u1": ["a", "b", "c"], "u2": ["b", "a", "d"]})
    scores = baselines.popularity_scores(data.split, data.catalogue)
    assert scores[data.catalogue.index["a"]] > scores[data.catalogue.index["b"]]


def test_when_items_co_occur_then_ease_weights_link_them():
    interactions = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 1]], dtype=float)
    weights = baselines.ease_weights(interactions, 1.0)
    assert np.allclose(np.diag(weights), 0.0)
    assert weights[0, 1] > weights[0, 2]  # a user who has item 0 is sent to item 1, not item 2


def test_when_ease_runs_then_lambda_is_picked_from_the_grid():
    histories = {f"u{n}": ["a", "b", "c", "d"] if n % 2 else ["c", "d", "a", "b"] for n in range(20)}
    metrics, lam = baselines.ease(_data(histories), k=2)
    assert lam in baselines.EASE_LAMBDAS
    assert 0 <= metrics["ndcg@2"] <= metrics["hr@2"] <= 1


def test_when_demo_data_then_ease_beats_popularity():
    data = RunData.load(RunConfig())
    assert baselines.ease(data, k=10)[0]["ndcg@10"] > baselines.popularity(data, k=10)["ndcg@10"]


def test_when_centralised_trained_then_it_reports_best_epoch(tiny_config):
    cfg = tiny_config.replace(max_eval_users=40, patience=0)
    result = baselines.centralised(cfg, RunData.load(cfg), epochs=2)
    assert result.epochs == 2 and len(result.valid_history) == 2
    assert result.best_epoch in (1, 2)
    assert result.examples_seen >= 2 * 300
    assert result.test["num-users"] == 300


def test_recency_popularity_counts_only_each_users_latest_items():
    data = _data({"u1": ["a", "b", "c", "d", "e"], "u2": ["a", "c", "d", "e", "f"], "u3": ["a", "b", "c", "e", "f"]})
    scores = baselines.recent_popularity_scores(data.split, data.catalogue, 1)  # train: first 3 of each
    index = data.catalogue.index
    assert scores[index["c"]] > scores[index["a"]] and round(scores[index["a"]]) == 0
    assert np.argmax(baselines.popularity_scores(data.split, data.catalogue)) == index["a"]


def test_item_knn_links_items_that_share_users():
    interactions = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=float)
    weights = baselines.item_knn_weights(interactions)
    assert np.allclose(np.diag(weights), 0.0) and weights[0, 1] == pytest.approx(1.0) and weights[0, 2] == 0.0


def _clusters() -> RunData:
    """Two tastes: users buy 5 of the 6 items of their own cluster, in a random order."""
    rng = np.random.default_rng(0)
    clusters = ("abcdef", "ghijkl")
    return _data({f"u{n}": list(rng.permutation(list(clusters[n % 2]))[:5]) for n in range(96)})


def test_bpr_and_sasrec_learn_the_tastes_better_than_chance():
    from common.learned_baselines import bpr_mf, sasrec

    data = _clusters()
    users = sorted(data.split.test)
    for fit, extra in ((bpr_mf, {"batch": 32, "lr": 0.02}), (sasrec, {"batch": 16, "lr": 5e-3})):
        scores = fit(data.split, users, data.catalogue, seed=0, epochs=40, k=3, **extra)
        metrics = baselines.evaluate_scores(scores, users, data.split, data.catalogue, target="test", k=3)
        assert scores.shape == (len(users), 12) and np.isfinite(scores).all()
        assert metrics["hr@3"] > 0.7, (fit.__name__, metrics)  # chance: 3 of the 9 unseen items, 0.33
