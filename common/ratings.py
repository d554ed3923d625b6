"""Star-rating prediction beside ranking: the federation's released item offsets plus the user's own
mean, computed on the device.

Under distributed DP (``release-ratings``) every user adds, for each of their ``release-recent-items``
latest training items, v = (stars - 3) / 2 in [-1, 1] to that item's rating sum, in the same vector as
the counts (one user's L2 contribution grows from sqrt(k) to sqrt(2k); one release, one accounting).
From the noised counts c and sums s the server derives, with ``rating-shrinkage`` lambda:

    global mean  mu  = 3 + 2 sum(s) / sum(c+)
    item mean    m_i = 3 + 2 (s_i + lambda v_bar) / (c_i+ + lambda),   v_bar = (mu - 3) / 2

and sends the offsets m_i - mu and mu with the model. A device predicts for its user u

    r_ui = clip(mu_u + (m_i - mu), 1, 5),   mu_u = (sum of u's stars + beta mu) / (n_u + beta)

with beta = ``user-rating-shrinkage``: the user's side is exact and never leaves the device (joint DP).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.schema import Review

MIDDLE, HALF_RANGE = 3.0, 2.0  # stars 1..5 -> v = (stars - 3) / 2 in [-1, 1]
LOWEST, HIGHEST = 1.0, 5.0


def rating_value(stars: float) -> float:
    """A rating as the released statistic counts it: (stars - 3) / 2, clipped to [-1, 1]."""
    return float(np.clip((stars - MIDDLE) / HALF_RANGE, -1.0, 1.0))


def item_offsets(counts: np.ndarray, sums: np.ndarray, shrinkage: float) -> tuple[np.ndarray, float]:
    """(per-item offsets in stars from the global mean, the global mean) from noised counts and
    rating sums (post-processing of the release)."""
    counts = np.clip(counts, 0.0, None)
    total = counts.sum()
    mean_value = float(np.clip(sums.sum() / total, -1.0, 1.0)) if total > 0 else 0.0
    item_value = np.clip((sums + shrinkage * mean_value) / (counts + shrinkage), -1.0, 1.0)
    return HALF_RANGE * (item_value - mean_value), MIDDLE + HALF_RANGE * mean_value


def user_mean(reviews: Sequence[Review], global_mean: float, shrinkage: float) -> float:
    """The user's own mean rating, pulled towards ``global_mean`` by ``shrinkage`` pseudo-ratings."""
    stars = [r.rating for r in reviews]
    return (sum(stars) + shrinkage * global_mean) / (len(stars) + shrinkage)


def predict(user_level: float, offsets: np.ndarray) -> np.ndarray:
    """Predicted stars of every item for a user at ``user_level``."""
    return np.clip(user_level + offsets, LOWEST, HIGHEST)


def errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """RMSE and MAE."""
    diff = np.asarray(predicted, dtype=float) - np.asarray(actual, dtype=float)
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff)))}
