"""Reference recommenders on the same split and protocol: popularity, EASE, centralised training."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from common.catalogue import Catalogue
from common.config import RunConfig
from common.metrics import NDCG, summarise
from common.recommender import Recommender, ranks_from_scores
from common.run_data import RunData
from common.split import Split

log = logging.getLogger(__name__)

EASE_LAMBDAS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)


def _interactions(split: Split, users: Sequence[str], catalogue: Catalogue) -> np.ndarray:
    return catalogue.interactions([split.train.get(user, []) for user in users])


def popularity_scores(split: Split, catalogue: Catalogue) -> np.ndarray:
    """Training-review count per item; ties broken by item id (earlier id first)."""
    counts = _interactions(split, split.users(), catalogue).sum(0)
    return counts - np.arange(len(catalogue)) * 1e-9


def recent_popularity_scores(split: Split, catalogue: Catalogue, recent: int) -> np.ndarray:
    """Popularity over each user's ``recent`` latest training items (what is popular now; the
    statistic the federation releases under distributed DP, here exact); ties by item id."""
    counts = catalogue.interactions([split.train.get(u, [])[-recent:] for u in split.users()]).sum(0)
    return counts - np.arange(len(catalogue)) * 1e-9


def item_knn_weights(interactions: np.ndarray) -> np.ndarray:
    """Item-kNN over all neighbours: the cosine of items' user vectors, zero diagonal."""
    gram = interactions.T @ interactions
    norm = np.sqrt(np.maximum(np.diag(gram), 1.0))
    weights = gram / norm[:, None] / norm[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def ease_weights(interactions: np.ndarray, lam: float) -> np.ndarray:
    """EASE item-item weights (Steck, WWW 2019) of a [users, items] 0/1 matrix."""
    return ease_from_gram(interactions.T @ interactions, lam)


def ease_from_gram(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's closed form from a Gram matrix X^T X: B = -P / diag(P), P = (G + lam I)^-1,
    zero diagonal (the server uses it on a DP-noised Gram, see ``server/secure_release.py``)."""
    inverse = np.linalg.inv(gram + lam * np.eye(gram.shape[0]))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def evaluate_scores(
    scores: np.ndarray, users: Sequence[str], split: Split, catalogue: Catalogue, *, target: str, k: int
) -> dict[str, float]:
    """Full-ranking metrics of a precomputed [users, items] score matrix."""
    return summarise(ranks_from_scores(scores, users, split, catalogue, target=target), k=k)


def popularity(data: RunData, *, k: int) -> dict[str, float]:
    """Test metrics of ranking every user's unseen items by popularity."""
    users = sorted(data.split.test)
    scores = np.tile(popularity_scores(data.split, data.catalogue), (len(users), 1))
    return evaluate_scores(scores, users, data.split, data.catalogue, target="test", k=k)


def ease(data: RunData, *, k: int) -> tuple[dict[str, float], float]:
    """Test metrics of EASE with the L2 weight picked on validation NDCG; returns (metrics, lambda)."""
    users = sorted(data.split.test)
    interactions = _interactions(data.split, users, data.catalogue)
    valid_users = [u for u in users if u in data.split.valid]
    valid_rows = [users.index(u) for u in valid_users]
    best = (float("-inf"), EASE_LAMBDAS[0])
    for lam in EASE_LAMBDAS:
        scores = interactions[valid_rows] @ ease_weights(interactions, lam)
        score = evaluate_scores(scores, valid_users, data.split, data.catalogue, target="valid", k=k)[f"{NDCG}@{k}"]
        best = max(best, (score, lam))
    scores = interactions @ ease_weights(interactions, best[1])
    return evaluate_scores(scores, users, data.split, data.catalogue, target="test", k=k), best[1]


@dataclass
class CentralisedResult:
    """Centralised training of the same model: per-epoch validation and the best epoch on test."""

    epochs: int
    examples_seen: int
    best_epoch: int
    test: dict[str, float]
    valid_history: list[float] = field(default_factory=list)
    seconds_per_epoch: float = 0.0


def centralised(cfg: RunConfig, data: RunData, *, epochs: int, progress: bool = False) -> CentralisedResult:
    """Train the federated model's architecture on all users at once (no federation, no DP).

    Each epoch is one pass over every user, as one federated round with every client taking
    part for one local epoch; ``epochs`` is the budget, early stopping on validation NDCG uses
    ``patience`` as the federation does, and the best epoch is evaluated on test.
    """
    recommender = Recommender(cfg, data.catalogue)
    users = data.split.users()
    valid_users = data.eval_users(cfg, "valid")
    key = f"{NDCG}@{cfg.eval_k}"
    rng = random.Random(f"{cfg.seed}-centralised")
    torch.manual_seed(cfg.seed)
    steps = math.ceil(len(users) / cfg.batch_size)
    best_score, best_epoch, best_state, history = float("-inf"), 0, recommender.state(), []
    examples, seconds = 0, []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        result = recommender.train(users, data.split, rng=rng, steps=steps, progress=progress)
        seconds.append(time.perf_counter() - started)
        examples += result.examples_seen
        score = recommender.evaluate(valid_users, data.split)[key]
        history.append(score)
        log.info("centralised epoch %d: valid %s=%.4f", epoch, key, score)
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, recommender.state()
        elif cfg.patience and epoch - best_epoch >= cfg.patience:
            log.info("centralised: early stopping after epoch %d (best epoch %d)", epoch, best_epoch)
            break
    recommender.load_state(best_state)
    test = recommender.evaluate(data.eval_users(cfg, "test"), data.split, target="test")
    return CentralisedResult(
        epochs=epochs,
        examples_seen=examples,
        best_epoch=best_epoch,
        test=test,
        valid_history=history,
        seconds_per_epoch=float(np.median(seconds)),
    )
