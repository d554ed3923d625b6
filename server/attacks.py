"""Empirical attacks on a run's final global model, with the canaries planted in it.

Every canary (:mod:`common.canaries`) joined the federation on a fair coin. Two membership
inference attacks score each canary from the model alone, as an adversary holding the canary's
reviews would:

* **threshold**: the model's mean score of the canary's training items given its own profile (the
  loss-threshold attack: members' items are scored higher);
* **calibrated**: the same minus the score under the public zero-shot model, a reference model
  that saw no one (RMIA/offline-LiRA style: it removes how likely the items were anyway).

Both give an ROC curve (AUC, TPR at 1% and 0.1% FPR) against the coins, and the canaries'
exposure (log2 catalogue size - log2 mean rank of their items). The one-run audit of Steinke, Nasr
and Jagielski (2023) guesses IN for the k highest calibrated scores and OUT for the k lowest; if the
run were epsilon-DP, the correct guesses would be dominated by Binomial(2k, e^eps / (1 + e^eps)).
The largest epsilon that this rejects at confidence 95% (Bonferroni over the k tried; delta taken
as 0, which the run's delta of 1e-5 changes negligibly at these sizes) is the lower bound printed
beside the claimed epsilon: above it, the claim is wrong.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from common.canaries import Canary
from common.config import RunConfig

CONFIDENCE = 0.05  # beta: the chance that a lower bound is above the true epsilon
GUESS_FRACTIONS = (0.05, 0.1, 0.2, 0.3)  # k / canaries, each side


def canary_attack(run_dir: Path, cfg: RunConfig, canaries: list[Canary], claimed: float | None) -> dict:
    """Both attacks, the exposure and the one-run lower bound for the run's last global model."""
    scores = canary_scores(run_dir, cfg, canaries)
    labels = np.array([c.included for c in canaries])
    attacks = {name: roc(values, labels) for name, values in scores.items() if name != "exposure"}
    bound = one_run_lower_bound(scores["calibrated"], labels)
    return {
        "status": "run",
        "canaries": len(canaries),
        "included": int(labels.sum()),
        "attacks": attacks,
        "lower-bound": bound,
        "claimed-epsilon": claimed,
        "exposure": {
            "in": float(np.mean(scores["exposure"][labels])) if labels.any() else None,
            "out": float(np.mean(scores["exposure"][~labels])) if (~labels).any() else None,
        },
        "scores": {name: [float(v) for v in values] for name, values in scores.items()},
        "labels": [bool(v) for v in labels],
    }


def canary_scores(run_dir: Path, cfg: RunConfig, canaries: list[Canary]) -> dict[str, np.ndarray]:
    """Per canary: the final model's score of its training items, minus the zero-shot model's, and exposure."""
    from common.recommender import Recommender
    from common.run_data import load_catalogue
    from common.split import Split, leave_last_out

    cfg = cfg.replace(personal_weight=0.0)  # the released model only: nothing fitted on a device
    catalogue = load_catalogue(cfg)
    reference = Recommender(cfg, catalogue)  # the seeded initial state: the public zero-shot model
    final = Recommender(cfg, catalogue)
    final.load_checkpoint(run_dir / "checkpoints" / "last")
    reviews = [r for c in canaries for r in c.reviews()]
    split = leave_last_out(reviews)
    users = [c.user_id for c in canaries]
    split = Split(train={u: split.train.get(u, []) for u in users})
    rows = [catalogue.rows(r.item_id for r in split.train[u]) for u in users]
    trained, base = final.scores(users, split), reference.scores(users, split)
    raw = np.array([trained[i, r].mean() for i, r in enumerate(rows)])
    calibrated = raw - np.array([base[i, r].mean() for i, r in enumerate(rows)])
    ranks = np.array([(trained[i][None, :] >= trained[i, r][:, None]).sum(axis=1).mean() for i, r in enumerate(rows)])
    return {"threshold": raw, "calibrated": calibrated, "exposure": math.log2(len(catalogue)) - np.log2(ranks)}


def roc(scores: np.ndarray, labels: np.ndarray) -> dict:
    """ROC of 'higher score = member': AUC (ties count half), TPR at 1% and 0.1% FPR, the curve."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    positives, negatives = scores[labels], scores[~labels]
    if not len(positives) or not len(negatives):
        return {"auc": None, "tpr@1%fpr": None, "tpr@0.1%fpr": None, "fpr": [], "tpr": []}
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    thresholds = np.unique(scores)[::-1]
    tpr = np.array([0.0] + [(positives >= t).mean() for t in thresholds])
    fpr = np.array([0.0] + [(negatives >= t).mean() for t in thresholds])
    at = {f: float(tpr[fpr <= f].max()) for f in (0.01, 0.001)}
    return {
        "auc": float(greater + ties / 2),
        "tpr@1%fpr": at[0.01],
        "tpr@0.1%fpr": at[0.001],
        "fpr": fpr.round(4).tolist(),
        "tpr": tpr.round(4).tolist(),
        "negatives": int(len(negatives)),
    }


def one_run_lower_bound(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Steinke et al. (2023): the best epsilon lower bound over the guess sizes tried (k IN, k OUT)."""
    order = np.argsort(scores)
    labels = np.asarray(labels, dtype=bool)[order]
    best = {"epsilon": 0.0, "guesses": 0, "correct": 0}
    tries = sorted(
        {max(1, int(f * len(labels))) for f in GUESS_FRACTIONS if 2 * max(1, int(f * len(labels))) <= len(labels)}
    )
    for k in tries:
        correct = int(labels[-k:].sum() + (~labels[:k]).sum())
        eps = _largest_rejected(2 * k, correct, CONFIDENCE / max(len(tries), 1))
        if eps > best["epsilon"]:
            best = {"epsilon": eps, "guesses": 2 * k, "correct": correct}
    return {**best, "confidence": 1 - CONFIDENCE}


def _largest_rejected(guesses: int, correct: int, beta: float) -> float:
    """The largest epsilon for which P[Binomial(guesses, e^eps/(1+e^eps)) >= correct] <= beta."""
    from scipy.stats import binom

    def tail(eps: float) -> float:
        return float(binom.sf(correct - 1, guesses, 1 / (1 + math.exp(-eps))))

    if tail(0.0) > beta:
        return 0.0
    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if tail(mid) <= beta else (low, mid)
    return low
