"""Server-side evaluation of the global recommender, early stopping and the best checkpoint."""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ArrayRecord, MetricRecord

from common.config import RunConfig
from common.metrics import NDCG
from common.recommender import Recommender
from common.run_data import RunData
from server.checkpoints import BEST, LAST, RunDirectory

log = logging.getLogger(__name__)


class CentralEvaluator:
    """Ranks the validation items (of every user, or ``max-eval-users`` of them) after every
    round over the whole catalogue; remembers the best round.

    ``evaluate`` is the ``evaluate_fn`` handed to ``strategy.start``. After ``patience``
    rounds without a better validation NDCG@K, :attr:`should_stop` turns true and the
    strategy stops sending work.
    """

    def __init__(self, cfg: RunConfig, data: RunData, run: RunDirectory) -> None:
        self.cfg = cfg
        self.data = data
        self.run = run
        self.key = f"{NDCG}@{cfg.eval_k}"
        self.recommender = Recommender(cfg, data.catalogue)
        self.users = data.eval_users(cfg, "valid")
        self.best_score = float("-inf")
        self.best_round = -1
        self.rounds_without_gain = 0
        self.stopped_at: int | None = None
        self._best_arrays: ArrayRecord | None = None

    @property
    def should_stop(self) -> bool:
        """True once validation NDCG has not improved for ``patience`` rounds."""
        return self.stopped_at is not None

    def metrics(self, arrays: ArrayRecord, target: str) -> dict[str, float]:
        """HR@K, NDCG@K, MRR of ``arrays`` on the validation or test items."""
        self.recommender.load_state(arrays.to_torch_state_dict())
        users = self.users if target == "valid" else self.data.eval_users(self.cfg, "test")
        return self.recommender.evaluate(users, self.data.split, target=target)

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Validation metrics of the global model; saves ``best`` and ``last`` checkpoints."""
        if self.should_stop:
            return None
        metrics = self.metrics(arrays, "valid")
        score = metrics[self.key]
        meta = {"round": server_round, "valid": metrics, "config": self.cfg.to_dict()}
        self.run.save(LAST, self.recommender.model, meta=meta)
        if score > self.best_score:
            self.best_score, self.best_round, self.rounds_without_gain = score, server_round, 0
            self.run.save(BEST, self.recommender.model, meta=meta)
            self._best_arrays = ArrayRecord(self.recommender.state())
        elif server_round > 0:
            self.rounds_without_gain += 1
            if self.cfg.patience and self.rounds_without_gain >= self.cfg.patience:
                self.stopped_at = server_round
                log.info("early stopping after round %d: no %s gain for %d rounds (best %.4f "
                         "in round %d)", server_round, self.key, self.rounds_without_gain,
                         self.best_score, self.best_round)
        log.info("round %d validation: %s", server_round, _fmt(metrics))
        return MetricRecord({f"valid-{k}": float(v) for k, v in metrics.items()})

    def best_arrays(self) -> ArrayRecord:
        """The trainable tensors of the best round (also saved under ``checkpoints/best``)."""
        if self._best_arrays is None:
            raise RuntimeError("no round has been evaluated yet; there is no best adapter.")
        return self._best_arrays


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())

