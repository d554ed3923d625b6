"""Ranking metrics over a full catalogue: HR@K, NDCG@K and MRR from the target's rank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HIT_RATE = "hr"
NDCG = "ndcg"
MRR = "mrr"


def target_rank(scores: np.ndarray, target: int, exclude: np.ndarray | Sequence[int] = ()) -> int:
    """1-based rank of ``target`` among all items except ``exclude`` (ties count against it).

    Full ranking: every catalogue item the user has not interacted with is a candidate, so
    numbers are comparable to published full-ranking results (sampled negatives overstate them).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 <= target < scores.shape[0]:
        raise ValueError(f"target index {target} is outside the {scores.shape[0]} scores.")
    excluded = np.zeros(scores.shape[0], dtype=bool)
    excluded[np.asarray(exclude, dtype=int)] = True
    excluded[target] = False
    beats = (scores >= scores[target]) & ~excluded
    beats[target] = False
    return int(beats.sum()) + 1


def metric_sums(ranks: np.ndarray | list[int], *, k: int) -> dict[str, float]:
    """Sums over users of HR@k, NDCG@k (one relevant item) and MRR of 1-based ranks.

    Each user adds at most 1 to every sum: a client releases these (noised or not) beside its
    user count, and the server divides the totals.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based; got a rank below 1.")
    hit = ranks <= k
    return {
        f"{HIT_RATE}@{k}": float(hit.sum()),
        f"{NDCG}@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).sum()),
        MRR: float((1.0 / ranks).sum()),
    }


def summarise(ranks: np.ndarray | list[int], *, k: int) -> dict[str, float]:
    """Mean HR@k, NDCG@k (one relevant item) and MRR of 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to summarise: the evaluation set is empty.")
    return {name: total / ranks.size for name, total in metric_sums(ranks, k=k).items()}


def relevant_set_metrics(scores: np.ndarray, relevant: list[int], exclude: list[int], *, k: int) -> dict[str, float]:
    """HR@k (any relevant item in the top k) and NDCG@k (binary relevance, ideal = all relevant
    first) of one user with several held-out items, ``exclude`` left out of the ranking."""
    scores = np.array(scores, dtype=np.float64)
    scores[np.asarray(exclude, dtype=int)] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    gains = np.isin(top, relevant) / np.log2(np.arange(2, len(top) + 2))
    ideal = (1.0 / np.log2(np.arange(2, min(k, len(relevant)) + 2))).sum()
    return {f"{HIT_RATE}@{k}": float(gains.any()), f"{NDCG}@{k}": float(gains.sum() / ideal) if ideal else 0.0}
