"""Ranking metrics against hand-computed values."""

import math

import numpy as np
import pytest

from common.metrics import summarise, target_rank


def test_when_target_scores_highest_then_rank_is_one():
    assert target_rank(np.array([0.1, 0.9, 0.3]), 1) == 1


def test_when_items_excluded_then_they_do_not_count():
    scores = np.array([0.9, 0.8, 0.5, 0.1])
    assert target_rank(scores, 2) == 3
    assert target_rank(scores, 2, exclude=[0, 1]) == 1


def test_when_tied_then_ties_count_against_target():
    assert target_rank(np.array([0.5, 0.5, 0.5]), 0) == 3


def test_when_target_is_excluded_then_it_still_ranks():
    assert target_rank(np.array([0.2, 0.9]), 0, exclude=[0]) == 2


def test_when_ranks_given_then_metrics_match_hand_computation():
    metrics = summarise([1, 3, 11, 2], k=10)
    assert metrics["hr@10"] == pytest.approx(3 / 4)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 0 + 1 / math.log2(3)) / 4)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 2) / 4)


def test_when_cutoff_is_small_then_late_hits_are_misses():
    assert summarise([1, 2, 3], k=1)["hr@1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("ranks", [[], [0, 1]])
def test_when_ranks_invalid_then_error(ranks):
    with pytest.raises(ValueError, match="rank"):
        summarise(ranks, k=10)


def test_when_target_out_of_range_then_error():
    with pytest.raises(ValueError, match="outside"):
        target_rank(np.zeros(3), 5)


def test_several_relevant_items_give_binary_ndcg_against_the_ideal_order():
    from common.metrics import relevant_set_metrics

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    perfect = relevant_set_metrics(scores, [0, 1], [], k=3)
    assert perfect == {"hr@3": 1.0, "ndcg@3": 1.0}
    late = relevant_set_metrics(scores, [2, 4], [0], k=3)  # ranks 2 (of 1, 2, 3 after exclusion) and 4
    assert late["hr@3"] == 1.0 and late["ndcg@3"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    assert relevant_set_metrics(scores, [4], [], k=3)["hr@3"] == 0.0
